//! `GET /v1/events`: Server-Sent Events for one device, replayable by `Last-Event-ID`.
//!
//! Events live in the store; the stream reads everything after the last id it sent,
//! then waits for a notice that the device has more. Replay and live delivery are the
//! same code path, so a reconnecting host misses nothing kept (seven days).

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream};
use refreshd_store::KeyKind;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;

/// Counts a connected client for as long as its stream lives.
struct ClientGauge;

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!("refreshd_sse_clients").decrement(1.0);
    }
}

struct Cursor {
    _gauge: ClientGauge,
    state: AppState,
    device_id: String,
    last_id: i64,
    notices: broadcast::Receiver<String>,
    pending: std::collections::VecDeque<Event>,
}

pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let device_id = caller.require(KeyKind::Device)?.to_string();
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    metrics::gauge!("refreshd_sse_clients").increment(1.0);
    let cursor = Cursor {
        _gauge: ClientGauge,
        notices: state.engine.subscribe_host_events(),
        state,
        device_id,
        last_id,
        pending: Default::default(),
    };
    let stream = stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.pop_front() {
                return Some((Ok(event), cursor));
            }
            match cursor
                .state
                .engine
                .store()
                .events_after(&cursor.device_id, cursor.last_id, 100)
                .await
            {
                Ok(rows) if !rows.is_empty() => {
                    for row in rows {
                        cursor.last_id = row.event_id;
                        cursor.pending.push_back(
                            Event::default()
                                .id(row.event_id.to_string())
                                .event(row.kind)
                                .data(row.payload),
                        );
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
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
