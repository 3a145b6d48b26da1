//! `GET /v1/events`: Server-Sent Events for one device, replayable by `Last-Event-ID`.
//!
//! Events live in the store; the stream reads everything after the last id it sent,
//! then waits for a notice that the device has more. Replay and live delivery are the
//! same code path, so a reconnecting host misses nothing kept (seven days). A connect
//! without a `Last-Event-ID` the device still has starts with the latest event of each
//! form and app (`EventCommands::stream_start`), never the whole history.
//!
//! A stream ends when its key is rotated (at once on this node; on other nodes of a
//! fleet at its next wake, when the key is looked up again) and when the service shuts
//! down, so that shutdown never waits for a client that would listen forever.

use crate::error::{ApiError, ApiResult};
use crate::streams::StreamTicket;
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream};
use refreshd_engine::commands::HostEvent;
use refreshd_engine::{Caller, KeyKind};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;

/// What the stream carries, for the OpenAPI document.
pub const STREAM_DESCRIPTION: &str = "Server-Sent Events for the calling device. `event: form_data` carries \
`{\"form_id\", \"data\", \"updated_at\", \"trigger\"}`; `event: form_removed` carries the removed form; \
`event: fetched_data` carries `{\"appid\", \"fetched_data\", \"time_stamp\"}` after a fetch changed the user's \
cached data (sent to every device of the user; only the latest per app is kept). Every event has an `id`: \
reconnecting with a `Last-Event-ID` the device still has replays what came after it (kept seven days); without \
one, or with one that is malformed or unknown, the stream starts with the latest event of each form and app, never \
the whole history. Comment lines are keep-alives. The stream ends when the key is rotated, the device deleted or \
the service shuts down; reconnect with backoff.";

/// The kinds of event a device's stream carries, with the schema of each one's `data`
/// (a JSON text). The document describes each event of the stream from this list.
fn event_kinds() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let date_time = json!({"type": ["string", "null"], "format": "date-time"});
    vec![
        (
            "form_data",
            json!({
                "type": "object",
                "required": ["form_id", "data", "updated_at", "trigger"],
                "properties": {
                    "form_id": {"type": "string"},
                    "data": {"description": "the provider's JSON"},
                    "updated_at": date_time,
                    "trigger": {"type": "string"},
                }
            }),
        ),
        (
            "form_removed",
            json!({
                "type": "object",
                "required": ["form_id"],
                "properties": {"form_id": {"type": "string"}}
            }),
        ),
        (
            "fetched_data",
            json!({
                "type": "object",
                "required": ["appid", "fetched_data", "time_stamp"],
                "properties": {
                    "appid": {"type": "string"},
                    "fetched_data": {"type": "string", "maxLength": 262_144},
                    "time_stamp": {"type": "integer", "description": "epoch milliseconds"},
                }
            }),
        ),
    ]
}

/// The schema of one event of the stream (`event`, `id`, and `data` holding JSON).
pub fn event_schema() -> serde_json::Value {
    use serde_json::json;
    let kinds = event_kinds();
    let names: Vec<&str> = kinds.iter().map(|(name, _)| *name).collect();
    let variants: Vec<serde_json::Value> = kinds
        .into_iter()
        .map(|(name, data)| {
            json!({
                "properties": {
                    "event": {"const": name},
                    "data": {"contentMediaType": "application/json", "contentSchema": data},
                }
            })
        })
        .collect();
    json!({
        "type": "object",
        "required": ["event", "id", "data"],
        "properties": {
            "event": {"type": "string", "enum": names},
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "give it back as Last-Event-ID"},
            "data": {"type": "string", "contentMediaType": "application/json"},
        },
        "oneOf": variants,
    })
}

/// Counts a connected client for as long as its stream lives.
struct ClientGauge;

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!("refreshd_sse_clients").decrement(1.0);
    }
}

struct Cursor {
    _gauge: ClientGauge,
    ticket: StreamTicket,
    caller: Caller,
    state: AppState,
    device_id: String,
    last_id: i64,
    notices: broadcast::Receiver<String>,
    pending: std::collections::VecDeque<Event>,
}

fn to_sse(event: HostEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind)
        .data(event.payload)
}

pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let device_id = caller.require(KeyKind::Device)?.to_string();
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let start = state
        .engine
        .events()
        .stream_start(&caller, last_event_id)
        .await?;
    let ticket = state
        .streams
        .open(KeyKind::Device, &device_id, &caller.key_hash)
        .map_err(|refused| {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "this key already has {} open event streams; close one first",
                    refused.max_per_key
                ),
            );
            error.retry_after_seconds = Some(5);
            error
        })?;
    metrics::gauge!("refreshd_sse_clients").increment(1.0);
    let cursor = Cursor {
        _gauge: ClientGauge,
        ticket,
        notices: state.engine.events().subscribe(),
        caller,
        state,
        device_id,
        last_id: start.after_id,
        pending: start.first.into_iter().map(to_sse).collect(),
    };
    let stream = stream::unfold(cursor, |mut cursor| async move {
        loop {
            if cursor.ticket.end.is_cancelled() {
                return None;
            }
            if let Some(event) = cursor.pending.pop_front() {
                return Some((Ok(event), cursor));
            }
            match cursor
                .state
                .engine
                .events()
                .read(&cursor.caller, cursor.last_id, 100)
                .await
            {
                Ok(rows) if !rows.is_empty() => {
                    for row in rows {
                        cursor.last_id = row.id;
                        cursor.pending.push_back(to_sse(row));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "reading events failed"),
            }
            // Wait for news about this device (or re-check now and then).
            let wait = async {
                loop {
                    match cursor.notices.recv().await {
                        Ok(id) if id == cursor.device_id => return,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            };
            let end = cursor.ticket.end.clone();
            tokio::select! {
                _ = end.cancelled() => return None,
                _ = tokio::time::timeout(Duration::from_secs(5), wait) => {}
            }
            // A key rotated through another node of a fleet is noticed here. A store
            // error keeps the stream: the next wake looks again.
            if let Ok(false) = cursor
                .state
                .engine
                .access()
                .key_is_current(&cursor.caller)
                .await
            {
                return None;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
