//! One periodic data fetch (P12–P14): the GET, and what its response means.

use crate::client::{FetchFailure, Fetcher, Outbound};
use refreshd_rules::periodic::{classify_response, FetchOutcome};
use reqwest::header::{HeaderMap, HeaderValue, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::Method;
use std::time::{Duration, SystemTime};

/// The result of a periodic fetch, ready for the rules (P9) and the cache (P13).
#[derive(Debug, PartialEq, Eq)]
pub struct FetchResult {
    pub outcome: FetchOutcome,
    pub http_status: Option<u16>,
    /// The new data, for `ok` only.
    pub body: Option<String>,
    pub etag: Option<String>,
    /// `Retry-After`, when a response carried one (P9 decides whether it counts).
    pub retry_after: Option<Duration>,
    pub bytes: usize,
}

impl FetchResult {
    fn failed(outcome: FetchOutcome) -> Self {
        FetchResult {
            outcome,
            http_status: None,
            body: None,
            etag: None,
            retry_after: None,
            bytes: 0,
        }
    }
}

/// GETs `url` (which already carries the P12 query) and classifies the answer.
/// `now` is used to read a `Retry-After` given as an HTTP date.
pub async fn fetch_periodic(
    fetcher: &Fetcher,
    url: &str,
    if_none_match: Option<&str>,
    now: SystemTime,
) -> FetchResult {
    fetch_periodic_signed(fetcher, url, if_none_match, None, now).await
}

/// The request target (path and query) exactly as a GET of `url` sends it: what a
/// periodic fetch's signature covers, so the developer's server can check it against
/// the request line it received.
pub fn request_target(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let mut target = parsed.path().to_string();
    if let Some(query) = parsed.query() {
        target.push('?');
        target.push_str(query);
    }
    Some(target)
}

/// Like [`fetch_periodic`], with a `refreshd-signature` header when one is given.
pub async fn fetch_periodic_signed(
    fetcher: &Fetcher,
    url: &str,
    if_none_match: Option<&str>,
    signature: Option<&str>,
    now: SystemTime,
) -> FetchResult {
    let mut headers = Vec::new();
    if let Some(etag) = if_none_match.and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.push((IF_NONE_MATCH, etag));
    }
    if let Some(signature) = signature.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.push((
            reqwest::header::HeaderName::from_static("refreshd-signature"),
            signature,
        ));
    }
    let request = Outbound {
        method: Method::GET,
        url,
        headers,
        body: None,
    };
    let response = match fetcher.send(request).await {
        Ok(response) => response,
        Err(failure) => {
            let outcome = match failure {
                FetchFailure::Blocked(_) | FetchFailure::PlainHttpNotTrusted => {
                    FetchOutcome::BlockedAddress
                }
                FetchFailure::InvalidUrl(_) | FetchFailure::Connect => FetchOutcome::Connect,
                FetchFailure::Timeout => FetchOutcome::Timeout,
                FetchFailure::InvalidResponse => FetchOutcome::InvalidResponse,
                FetchFailure::TooLarge { status } => {
                    let mut result = FetchResult::failed(FetchOutcome::TooLarge);
                    result.http_status = Some(status);
                    result.bytes = fetcher.limits().max_body_bytes + 1;
                    return result;
                }
            };
            return FetchResult::failed(outcome);
        }
    };
    let text = String::from_utf8(response.body);
    let (body_len, is_utf8) = match &text {
        Ok(s) => (s.len(), true),
        Err(e) => (e.as_bytes().len(), false),
    };
    let outcome = classify_response(response.status, body_len, is_utf8);
    FetchResult {
        outcome,
        http_status: Some(response.status),
        body: if outcome == FetchOutcome::Ok {
            text.ok()
        } else {
            None
        },
        etag: header_text(&response.headers, ETAG),
        retry_after: retry_after(&response.headers, now),
        bytes: body_len,
    }
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = header_text(headers, RETRY_AFTER)?;
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}
