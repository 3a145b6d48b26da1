//! Authentication: `Authorization: Bearer <key>`, checked before a body is read. The
//! key's prefix must name a kind the route accepts; the engine then looks the key up
//! (`access().authenticate`) and the [`refreshd_engine::Caller`] it answers is what handlers pass to
//! commands.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use refreshd_engine::secrets::kind_of_key;
use refreshd_engine::KeyKind;
use std::num::NonZeroU32;

/// How a kind of key is named to callers, with its prefix.
pub fn key_kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Operator => "an operator key (rfdo_…)",
        KeyKind::App => "an app developer key (rfda_…)",
        KeyKind::Provider => "a widget provider key (rfdp_…)",
        KeyKind::Device => "a device key (rfdd_…)",
    }
}

/// "this endpoint needs a device key (rfdd_…)", for 401 answers.
pub fn needs_message(kinds: &[KeyKind]) -> String {
    let names: Vec<&str> = kinds.iter().copied().map(key_kind_name).collect();
    format!("this endpoint needs {}", names.join(" or "))
}

/// Requests per second and burst for each key.
pub fn rate_limiter(per_second: u32, burst: u32) -> DefaultKeyedRateLimiter<Vec<u8>> {
    let per_second = NonZeroU32::new(per_second.max(1)).expect("at least one");
    let burst = NonZeroU32::new(burst.max(1)).expect("at least one");
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}

/// Runs before the route's extractors, so no body is read for a caller without a valid
/// key of a kind the route accepts (`Routes::add` declares the kinds).
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let accepted = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| state.callers.kinds(request.method(), path.as_str()));
    let refuse = |problem: &str| {
        let mut error = ApiError::unauthorized();
        if let Some(kinds) = accepted {
            error.message = format!("{problem}: {}", needs_message(kinds));
        }
        error
    };
    let key = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| refuse("send Authorization: Bearer <key>"))?;
    let claimed_kind = kind_of_key(key).ok_or_else(|| refuse("the key is not valid"))?;
    // The prefix names the kind; a key of the wrong kind is refused before anything else
    // is looked at (api.md: 401 for a wrong kind of key, whatever the body).
    if let Some(kinds) = accepted {
        if !kinds.contains(&claimed_kind) {
            return Err(refuse(&format!(
                "wrong kind of key ({} was sent)",
                key_kind_name(claimed_kind)
            )));
        }
    }
    let caller = state
        .engine
        .access()
        .authenticate(key)
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is unavailable",
            )
        })?
        .ok_or_else(|| refuse("the key is not valid"))?;
    if let Err(not_until) = state.rate_limiter.check_key(&caller.key_hash) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let mut error = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this key",
        );
        error.retry_after_seconds = Some(wait.as_secs_f64().ceil() as i64);
        return Err(error);
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
