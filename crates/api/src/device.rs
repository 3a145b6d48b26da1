//! Device settings: network reports (F16) and time zone (F23a), through
//! `engine.device()`.

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use refreshd_engine::Caller;
use refreshd_rules::Instant;
use serde::Deserialize;

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
