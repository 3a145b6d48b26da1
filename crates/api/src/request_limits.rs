//! Limits on what one request and one key may hold, so that no caller can keep the
//! node's connections: a body must arrive within a deadline, and a key has a bounded
//! number of requests in progress. Both run after authentication (a key is checked
//! before any body is read) and before the handler.

use crate::error::ApiError;
use crate::MAX_REQUEST_BYTES;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use refreshd_engine::Caller as Principal;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests one key may have in progress at once by default; SSE streams have their
/// own cap (`--max-streams-per-key`) and are counted there, not here.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT_PER_KEY: usize = 32;

/// Independent parts of the in-flight counts, chosen by key, so that requests of
/// different keys on different cores do not wait for one lock.
const SHARDS: usize = 32;

#[derive(Clone)]
pub struct RequestLimits {
    body_deadline: Duration,
    max_in_flight_per_key: usize,
    in_flight: Arc<InFlightCounts>,
}

/// Requests in progress by key hash.
type Counts = HashMap<Vec<u8>, usize>;

struct InFlightCounts {
    shards: Box<[Mutex<Counts>]>,
    hasher: RandomState,
}

impl InFlightCounts {
    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Counts> {
        self.shards[self.hasher.hash_one(key) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl RequestLimits {
    pub fn new(body_deadline: Duration, max_in_flight_per_key: usize) -> Self {
        RequestLimits {
            body_deadline,
            max_in_flight_per_key: max_in_flight_per_key.max(1),
            in_flight: Arc::new(InFlightCounts {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: RandomState::new(),
            }),
        }
    }

    /// Keys with a request in progress (entries go when their last request ends).
    pub fn keys_tracked(&self) -> usize {
        self.in_flight
            .shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Holds one of a key's places until the response is ready.
struct InFlight {
    limits: RequestLimits,
    key: Vec<u8>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.limits.in_flight.shard(&self.key);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// 429 `rate_limited` when the caller's key already has its most requests in progress
/// (a client trickling bodies on many connections holds only its own share); then the
/// body is read whole within the deadline, or 408 `request_timeout`.
pub async fn limit_request(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    let key = request
        .extensions()
        .get::<Principal>()
        .map(|caller| caller.key_hash.clone());
    let _place = match key {
        Some(key) => {
            let mut map = limits.in_flight.shard(&key);
            // The key is copied into the map only when it is not there yet.
            if !map.contains_key(&key) {
                map.insert(key.clone(), 0);
            }
            let n = map.get_mut(&key).expect("inserted above");
            if *n >= limits.max_in_flight_per_key {
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "this key already has {} requests in progress; wait for one to finish",
                        limits.max_in_flight_per_key
                    ),
                );
                error.retry_after_seconds = Some(1);
                return error.into_response();
            }
            *n += 1;
            drop(map);
            Some(InFlight {
                limits: limits.clone(),
                key,
            })
        }
        None => None,
    };
    let (parts, body) = request.into_parts();
    // Past the largest body the API takes, reading stops; the handler's own limit
    // answers 413 from what was read.
    let read = axum::body::to_bytes(body, MAX_REQUEST_BYTES + 1);
    let bytes = match tokio::time::timeout(limits.body_deadline, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return ApiError::too_large(format!(
                "request bodies are limited to {MAX_REQUEST_BYTES} bytes"
            ))
            .into_response()
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    limits.body_deadline.as_secs()
                ),
            )
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_its_places_until_its_requests_end() {
        let limits = RequestLimits::new(Duration::from_secs(1), 2);
        let place = |key: &[u8]| {
            let mut map = limits.in_flight.shard(key);
            *map.entry(key.to_vec()).or_insert(0) += 1;
            InFlight {
                limits: limits.clone(),
                key: key.to_vec(),
            }
        };
        let a = place(b"k1");
        let b = place(b"k1");
        assert_eq!(limits.in_flight.shard(b"k1")[&b"k1".to_vec()], 2);
        drop(a);
        drop(b);
        assert_eq!(limits.keys_tracked(), 0, "an idle key is forgotten");
    }
}
