//! The client's error type. An error never carries a key, a token or a signing
//! secret: API errors hold only what the server said, and transport errors are
//! stripped of their URL before they are kept.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One item of an API error's `details` (also the shape of a form-config warning).
/// refreshd always sends the first four; they read as empty if a body leaves one out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    /// Where: a JSON path such as `$.forms[0].updateDuration`, `query.NAME` or `path`.
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// How to fix it.
    #[serde(default)]
    pub hint: String,
    /// The rule a form-config issue comes from, when the server names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A form-config issue's severity: `error` or `warning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// Everything a call of this crate can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with the API's error shape
    /// `{"error": {"code", "message", "details"}}`.
    #[error("refreshd answered {status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error code, e.g. `unauthorized`, `no_cached_data`, `invalid_cursor`.
        code: String,
        /// The server's message, for humans.
        message: String,
        /// Every problem, when there are several.
        details: Vec<ErrorDetail>,
        /// From `Retry-After` (429, 503), when present.
        retry_after: Option<Duration>,
    },
    /// A non-success status whose body is not the API's error shape (a proxy's page,
    /// a truncated answer).
    #[error("unexpected HTTP status {status} without an API error body")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or the answer not read (connection refused,
    /// timeout, reset).
    #[error("transport error: {0}")]
    Transport(String),
    /// A success answer whose body does not have the documented shape.
    #[error("could not decode the answer of {operation}: {reason}")]
    Decode {
        operation: &'static str,
        reason: String,
    },
    /// The client was given something it cannot use (a base URL that does not parse,
    /// a key that cannot be a header value).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status, for errors that have one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code, for errors in the API's shape.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } | ClientError::Status { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Whether trying the same request again later may succeed: transport failures,
    /// 408, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } | ClientError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            _ => false,
        }
    }

    pub(crate) fn transport(error: reqwest::Error) -> Self {
        // The URL may carry a cursor or a user id; keys travel only in headers, but
        // keep errors free of request targets all the same.
        ClientError::Transport(error.without_url().to_string())
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

/// Builds the error for a non-success answer from its status, headers and body.
pub(crate) fn from_response_parts(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ClientError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => ClientError::Api {
            status,
            code: envelope.error.code,
            message: envelope.error.message,
            details: envelope.error.details,
            retry_after,
        },
        Err(_) => ClientError::Status {
            status,
            retry_after,
        },
    }
}

/// `Retry-After` as seconds (the only form refreshd sends; an HTTP date is ignored).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_shape_is_read_whole() {
        let body = br#"{"error":{"code":"invalid_config","message":"2 problems","details":[
            {"path":"$.forms[0].name","code":"missing","message":"name is required","hint":"add one"},
            {"path":"$.forms[1]","code":"x","message":"y","rule":"F3","severity":"error"}]}}"#;
        let error = from_response_parts(400, None, body);
        assert_eq!(error.status(), Some(400));
        assert_eq!(error.code(), Some("invalid_config"));
        match &error {
            ClientError::Api { details, .. } => {
                assert_eq!(details.len(), 2);
                assert_eq!(details[0].hint, "add one");
                assert_eq!(details[1].hint, "");
                assert_eq!(details[1].rule.as_deref(), Some("F3"));
            }
            other => panic!("expected Api, got {other:?}"),
        }
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "refreshd answered 400 invalid_config: 2 problems"
        );
    }

    #[test]
    fn other_bodies_keep_the_status() {
        let error = from_response_parts(502, Some(Duration::from_secs(3)), b"<html>bad gateway");
        assert!(matches!(error, ClientError::Status { status: 502, .. }));
        assert_eq!(error.code(), None);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
        assert!(error.is_retryable());
    }
}
