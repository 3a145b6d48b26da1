//! The last line of api.md's error shape: any 4xx or 5xx that leaves the router without
//! a JSON body (an axum rejection this crate did not wrap, an empty 405) is given
//! `{"error": {"code", "message", "details"}}`, keeping its status and headers (`Allow`,
//! `Retry-After`).

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Plain-text error bodies are short; anything longer is cut to this.
const MAX_TEXT_BYTES: usize = 4096;

/// The api.md code for an error status that reached the client without one.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

pub async fn json_error_shape(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        metrics::counter!("refreshd_rate_limited_requests_total").increment(1);
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_TEXT_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let shaped = ApiError::new(status, code_for_status(status), message).into_response();
    parts.headers.remove(CONTENT_LENGTH);
    let (shaped_parts, shaped_body) = shaped.into_parts();
    for (name, value) in shaped_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, Body::new(shaped_body))
}
