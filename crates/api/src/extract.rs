//! Extractors whose rejections use the API's error shape (api.md): JSON bodies, raw
//! bodies, path parameters and query strings. axum's own extractors answer plain text;
//! every problem here becomes `invalid_request` (or `payload_too_large`) with a
//! `details` item naming where the problem is and how to fix it.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Like `axum::Json`, but a body that is not JSON, has the wrong shape or types, or
/// unknown fields answers 400 `invalid_request` with the JSON path of the problem and a
/// hint, and one over the limit 413.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::invalid_request(
                "send Content-Type: application/json",
            ));
        }
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        parse_json(&bytes).map(Body)
    }
}

fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads `bytes` as a `T`; every failure names its JSON path (`$.source.url`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = match serde_path_to_error::deserialize(&mut deserializer) {
        // Trailing characters after the document are an error too, as in axum::Json.
        Ok(value) => deserializer
            .end()
            .map(|()| value)
            .map_err(|e| ("$".to_string(), e)),
        Err(error) => Err((json_path("$", error.path()), error.into_inner())),
    };
    parsed.map_err(|(path, inner)| {
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let message = inner.to_string();
        let message = message.strip_suffix(&position).unwrap_or(&message);
        let detail = match inner.classify() {
            serde_json::error::Category::Data => data_problem(&path, message),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => json!({
                "path": "$",
                "code": "invalid_json",
                "message": format!("{message} (line {}, column {})", inner.line(), inner.column()),
                "hint": "send one JSON document; check quotes, commas and brackets",
            }),
            serde_json::error::Category::Io => json!({
                "path": "$", "code": "invalid_json", "message": message, "hint": "send the body again",
            }),
        };
        invalid_with_detail(detail)
    })
}

fn invalid_with_detail(detail: Value) -> ApiError {
    let summary = match (detail["path"].as_str(), detail["message"].as_str()) {
        (Some(path), Some(message)) => format!("{path}: {message}"),
        _ => "the request is not valid".to_string(),
    };
    ApiError {
        details: vec![detail],
        ..ApiError::invalid_request(summary)
    }
}

/// `$` followed by `.key` and `[index]` segments.
fn json_path(root: &str, path: &serde_path_to_error::Path) -> String {
    let mut out = root.to_string();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                out.push('.');
                out.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// A detail item for a value of the wrong type or an unknown or missing field, from
/// serde's message (whose wording serde keeps stable: "unknown field `x`, expected one
/// of `a`, `b`", "missing field `x`", "invalid type: …, expected …").
fn data_problem(path: &str, message: &str) -> Value {
    let quoted = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = quoted(rest);
        let field = names.first().cloned().unwrap_or_default();
        let expected: Vec<String> = names.into_iter().skip(1).collect();
        let hint = if expected.is_empty() {
            "this object takes no fields".to_string()
        } else {
            format!("expected one of: {}", expected.join(", "))
        };
        // The path already ends at the unknown key (serde_path_to_error records it).
        let suffix = format!(".{field}");
        let path = if path.ends_with(&suffix) {
            path.to_string()
        } else {
            format!("{path}{suffix}")
        };
        return json!({
            "path": path,
            "code": "unknown_field",
            "message": format!("\"{field}\" is not a field here"),
            "hint": hint,
        });
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = quoted(rest).into_iter().next().unwrap_or_default();
        return json!({
            "path": format!("{path}.{field}"),
            "code": "missing_field",
            "message": format!("\"{field}\" is required"),
            "hint": format!("add \"{field}\""),
        });
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.split(", expected ").nth(1).unwrap_or("another type");
        return json!({
            "path": path,
            "code": "wrong_type",
            "message": format!("wrong type: {rest}"),
            "hint": format!("send {expected}"),
        });
    }
    let hint = message
        .split(", expected ")
        .nth(1)
        .map(|expected| format!("send {expected}"))
        .unwrap_or_else(|| "see the request schema in /v1/openapi.json".to_string());
    json!({"path": path, "code": "invalid_value", "message": message, "hint": hint})
}

/// The body's bytes, with the router's limit (1 MiB) answered as 413 in the API's shape.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) => Err(bytes_rejection(rejection)),
        }
    }
}

fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!(
            "request bodies are limited to {} bytes (1 MiB)",
            crate::MAX_REQUEST_BYTES
        ))
    } else {
        ApiError::invalid_request(format!(
            "the body could not be read: {}",
            rejection.body_text()
        ))
    }
}

/// Like `axum::extract::Path`: a parameter that is not valid UTF-8 (or of the wrong
/// type) answers 400 `invalid_request`.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) if rejection.status().is_server_error() => {
                tracing::error!(error = %rejection.body_text(), "a route's path parameters do not match its handler");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the route is misconfigured",
                ))
            }
            Err(rejection) => Err(invalid_with_detail(json!({
                "path": "path",
                "code": "invalid_path",
                "message": rejection.body_text(),
                "hint": "path segments must be percent-encoded UTF-8",
            }))),
        }
    }
}

/// Like `axum::extract::Query`, with each problem named by its parameter
/// (`query.user_id`).
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let path = json_path("query", error.path());
                let message = error.into_inner().to_string();
                let mut detail = data_problem(&path, &message);
                if detail["code"] == "missing_field" {
                    detail["hint"] = json!(format!(
                        "add ?{}=… to the URL",
                        detail["path"]
                            .as_str()
                            .unwrap_or_default()
                            .trim_start_matches("query.")
                    ));
                }
                invalid_with_detail(detail)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        url: String,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        enabled: bool,
        source: Inner,
        #[serde(default)]
        list: Vec<u8>,
    }

    fn detail(body: &str) -> Value {
        let error = parse_json::<Outer>(body.as_bytes()).unwrap_err();
        assert_eq!(error.code, "invalid_request");
        error.details[0].clone()
    }

    #[test]
    fn unknown_fields_name_their_path_and_the_expected_fields() {
        let d = detail(r#"{"enabled": true, "source": {"url": "x", "ulr": "y"}}"#);
        assert_eq!(d["path"], "$.source.ulr");
        assert_eq!(d["code"], "unknown_field");
        assert_eq!(d["hint"], "expected one of: url");
        let d = detail(r#"{"enabled": true, "sorce": {}}"#);
        assert_eq!(d["path"], "$.sorce");
        assert_eq!(d["hint"], "expected one of: enabled, source, list");
    }

    #[test]
    fn wrong_types_and_missing_fields_name_their_path() {
        let d = detail(r#"{"enabled": "yes", "source": {"url": "x"}}"#);
        assert_eq!(
            (d["path"].as_str(), d["code"].as_str()),
            (Some("$.enabled"), Some("wrong_type"))
        );
        assert_eq!(d["hint"], "send a boolean");
        let d = detail(r#"{"enabled": true, "source": {"url": "x"}, "list": [1, "2"]}"#);
        assert_eq!(d["path"], "$.list[1]");
        let d = detail(r#"{"enabled": true, "source": {}}"#);
        assert_eq!(
            (d["path"].as_str(), d["code"].as_str()),
            (Some("$.source.url"), Some("missing_field"))
        );
        let d = detail(r#"{"enabled": tru"#);
        assert_eq!(d["code"], "invalid_json");
        let d = detail(r#"{"enabled": true, "source": {"url": "x"}} x"#);
        assert_eq!(d["code"], "invalid_json");
    }
}
