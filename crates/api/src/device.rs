//! Device settings: network reports (F16) and time zone (F23a), through
//! `engine.device()`; and the device's one-request catch-up, `GET /v1/device/sync`.

use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Query};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::wire::rfc3339;
use refreshd_engine::Caller;
use refreshd_rules::Instant;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkBody {
    online: bool,
    #[serde(default)]
    since: Option<String>,
}

/// F16: a device reports an outage after it ends, so `since` says when it went offline.
pub async fn report_network(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NetworkBody>,
) -> ApiResult<StatusCode> {
    let since = match body.since {
        None => None,
        Some(text) => {
            let ts: jiff::Timestamp = text
                .parse()
                .map_err(|_| ApiError::invalid_request("since must be an RFC 3339 instant"))?;
            Some(Instant::from_timestamp(ts))
        }
    };
    state
        .engine
        .device()
        .report_network(&caller, body.online, since)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneBody {
    zone: String,
}

/// F23a.
pub async fn set_zone(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<ZoneBody>,
) -> ApiResult<StatusCode> {
    state.engine.device().set_zone(&caller, &body.zone).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    #[serde(default)]
    cursor: Option<String>,
}

/// Everything that changed for this device and its user after `cursor` (all of it
/// without one), in one answer; compressed when the client accepts it.
pub async fn sync(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<SyncQuery>,
) -> ApiResult<Json<Value>> {
    let view = state
        .engine
        .events()
        .sync(&caller, query.cursor.as_deref())
        .await?;
    let apps: Vec<Value> = view
        .apps
        .iter()
        .map(|a| json!({"appid": a.appid, "fetched_data": a.fetched_data, "time_stamp": a.time_stamp}))
        .collect();
    let forms: Vec<Value> = view
        .forms
        .iter()
        .map(|f| {
            let data = f
                .data
                .as_deref()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .unwrap_or(Value::Null);
            json!({
                "form_id": f.form_id,
                "provider": f.provider,
                "form_name": f.form_name,
                "data": data,
                "updated_at": f.updated_at.and_then(rfc3339),
                "trigger": f.trigger,
            })
        })
        .collect();
    Ok(Json(json!({
        "cursor": view.cursor,
        "reset": view.reset,
        "apps": apps,
        "forms": forms,
        "removed_forms": view.removed_forms,
    })))
}
