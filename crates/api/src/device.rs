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
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkBody {
    online: bool,
    /// When the device went offline (RFC 3339); now unless given. Not in the future,
    /// nor before the previous report.
    #[serde(default)]
    #[schemars(with = "Option<crate::openapi::DateTime>")]
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
    zone: crate::openapi::Zone,
}

/// F23a.
pub async fn set_zone(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<ZoneBody>,
) -> ApiResult<StatusCode> {
    state
        .engine
        .device()
        .set_zone(&caller, &body.zone.0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    /// The `cursor` of the previous answer; without it the answer is the whole state.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9]{1,18}\.[0-9]{1,18}$"))]
    cursor: Option<String>,
}

/// A user's cached periodic data for one app.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SyncedAppView {
    appid: String,
    /// The developer's whole answer, as `GET /v1/apps/{appid}/background-fetch` reads it.
    fetched_data: String,
    /// Epoch milliseconds of the fetch.
    time_stamp: i64,
}

/// A placed form and the data its host may show.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SyncedFormView {
    form_id: String,
    provider: String,
    form_name: String,
    /// The provider's JSON; `null` before the form has data its host may see (data for
    /// a hidden form waits until it is shown).
    data: Value,
    /// RFC 3339, or `null` without data.
    #[schemars(with = "Option<crate::openapi::DateTime>")]
    updated_at: Option<String>,
    trigger: Option<String>,
}

/// Everything that changed for the device and its user after the cursor.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SyncView {
    /// Opaque; pass it as `cursor` next time.
    cursor: String,
    /// True when this is the whole current state (no cursor, or one older than the
    /// seven days events are kept): drop forms and apps not listed.
    reset: bool,
    apps: Vec<SyncedAppView>,
    forms: Vec<SyncedFormView>,
    /// Forms removed after the cursor (always empty when `reset`).
    removed_forms: Vec<String>,
}

/// Everything that changed for this device and its user after `cursor` (all of it
/// without one), in one answer; compressed when the client accepts it.
pub async fn sync(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<SyncQuery>,
) -> ApiResult<Json<SyncView>> {
    let view = state
        .engine
        .events()
        .sync(&caller, query.cursor.as_deref())
        .await?;
    Ok(Json(SyncView {
        cursor: view.cursor,
        reset: view.reset,
        apps: view
            .apps
            .into_iter()
            .map(|a| SyncedAppView {
                appid: a.appid,
                fetched_data: a.fetched_data,
                time_stamp: a.time_stamp,
            })
            .collect(),
        forms: view
            .forms
            .into_iter()
            .map(|f| SyncedFormView {
                data: f
                    .data
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok())
                    .unwrap_or(Value::Null),
                form_id: f.form_id,
                provider: f.provider,
                form_name: f.form_name,
                updated_at: f.updated_at.and_then(rfc3339),
                trigger: f.trigger,
            })
            .collect(),
        removed_forms: view.removed_forms,
    }))
}
