//! The error shape of api.md: `{"error": {"code", "message", "details": [...]}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use refreshd_engine::{EngineError, StoreError};
use refreshd_rules::form_config::{ConfigIssue, Severity};
use refreshd_rules::RuleError;
use serde::Serialize;
use serde_json::json;

/// The body of every error answer (api.md): `{"error": {"code", "message", "details"}}`.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody<'a> {
    pub error: ErrorFields<'a>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ErrorFields<'a> {
    /// Stable and machine-readable; each operation lists the codes it may answer.
    pub code: &'a str,
    /// For humans.
    pub message: &'a str,
    /// Every problem found, each at its JSON path, when there are several.
    #[schemars(with = "Vec<Detail>")]
    pub details: &'a [serde_json::Value],
}

/// One problem of a request, or one warning of an accepted form configuration.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "ErrorDetail")]
pub struct Detail {
    /// Where: a JSON path (`$.source.url`), `query.NAME` or `path`.
    pub path: String,
    pub code: String,
    pub message: String,
    /// How to fix it.
    pub hint: String,
    /// The rule a form-config issue comes from (F1 … F16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A form-config issue's severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<IssueSeverity>,
}

#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IssueSeverity {
    Error,
    Warning,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<serde_json::Value>,
    pub retry_after_seconds: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after_seconds: None,
        }
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid key of the right kind is required",
        )
    }
    pub fn not_found(code: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, "no such object")
    }
    /// 405: the path exists, the method does not (the `Allow` header lists those that do).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not accept this method; the Allow header lists those it does",
        )
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
}

/// A config issue as an error detail or a warning (api.md item shape).
pub fn issue_detail(issue: &ConfigIssue) -> Detail {
    Detail {
        path: issue.path.clone(),
        code: issue.code.to_string(),
        message: issue.message.clone(),
        hint: issue.hint.clone(),
        rule: Some(issue.rule.to_string()),
        severity: Some(match issue.severity {
            Severity::Error => IssueSeverity::Error,
            Severity::Warning => IssueSeverity::Warning,
        }),
    }
}

/// A config issue as an error detail.
pub fn issue_json(issue: &ConfigIssue) -> serde_json::Value {
    serde_json::to_value(issue_detail(issue)).unwrap_or_default()
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Rule(rule) => rule_error(rule),
            EngineError::NotFound(code) => ApiError::not_found(code),
            EngineError::Invalid {
                code,
                message,
                details,
            } => ApiError {
                details: details.iter().map(issue_json).collect(),
                ..ApiError::new(StatusCode::BAD_REQUEST, code, message)
            },
            EngineError::Destination {
                path,
                message,
                hint,
            } => {
                let mut error =
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_url", message.clone());
                error.details.push(json!({
                    "path": path,
                    "code": "invalid_url",
                    "message": message,
                    "hint": hint,
                }));
                error
            }
            EngineError::TooLarge(message) => ApiError::too_large(message),
            EngineError::Exists(what) => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{what} already exists"),
            ),
            EngineError::Busy(message) => {
                let mut error = ApiError::new(StatusCode::CONFLICT, "busy", message);
                error.retry_after_seconds = Some(1);
                error
            }
            EngineError::Unauthorized => ApiError::unauthorized(),
            EngineError::Store(StoreError::NotFound) => ApiError::not_found("not_found"),
            EngineError::Store(StoreError::Exists) => {
                ApiError::new(StatusCode::CONFLICT, "exists", "already exists")
            }
            EngineError::Store(error) => {
                tracing::warn!(%error, "store error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is unavailable; try again",
                )
            }
            EngineError::Corrupt(error) => {
                tracing::error!(%error, "stored state unreadable");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "stored state could not be read",
                )
            }
        }
    }
}

fn rule_error(rule: RuleError) -> ApiError {
    let message = rule.to_string();
    let status = match &rule {
        RuleError::FormNotFound | RuleError::AppNotFound => StatusCode::NOT_FOUND,
        // F13: another provider's form is reported as not existing.
        RuleError::NotFormOwner => return ApiError::not_found("form_not_found"),
        RuleError::QuotaExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
        RuleError::FormExists
        | RuleError::ProxyEnabled
        | RuleError::PeriodicDisabled
        | RuleError::TokenNotSet
        | RuleError::GrayCannotRetract
        | RuleError::TooManyForms { .. } => StatusCode::CONFLICT,
        RuleError::InvalidNextRefresh { .. }
        | RuleError::InvalidConfig
        | RuleError::InvalidToken
        | RuleError::GrayUrlNotSet
        | RuleError::SourceNotAllowed(_)
        | RuleError::InvalidGrayPercent => StatusCode::BAD_REQUEST,
        RuleError::InvalidCloudName { field } => {
            let mut error = ApiError::new(StatusCode::BAD_REQUEST, rule.code(), message.clone());
            error.details.push(json!({
                "path": format!("$.source.cloud.{field}"),
                "code": rule.code(),
                "message": message,
                "hint": "name the function as the platform lists it, for example \"getData\"; \
                         it is one path segment after the environment's base URL",
            }));
            return error;
        }
    };
    ApiError::new(status, rule.code(), message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorFields {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
