//! Why the rules reject an input. Each variant has the stable code the API and the
//! simulator report.

use crate::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("no such form")]
    FormNotFound,
    #[error("the caller is not the form's provider")]
    NotFormOwner,
    #[error("the form uses a data proxy, so next-refresh is not available (F9)")]
    ProxyEnabled,
    #[error("next-refresh minutes must be between {min} and 10080")]
    InvalidNextRefresh { min: i64 },
    #[error("the form used its 50 counted refreshes today; the count resets at {resets_at}")]
    QuotaExhausted { resets_at: Instant },
    #[error("a form with this id already exists")]
    FormExists,
    #[error("the form's configuration has errors")]
    InvalidConfig,
    #[error("the device already holds its maximum of {max} forms")]
    TooManyForms { max: u16 },
    #[error("no such app")]
    AppNotFound,
    #[error("periodic fetch is not enabled for this app")]
    PeriodicDisabled,
    #[error("the user has not set a background fetch token")]
    TokenNotSet,
    #[error("a token must be 1 to 1024 characters")]
    InvalidToken,
    #[error("a grayscale rollout cannot be lowered or withdrawn")]
    GrayCannotRetract,
    #[error("no grayscale URL is set; give one")]
    GrayUrlNotSet,
    #[error("{0}")]
    SourceNotAllowed(&'static str),
    #[error("grayscale percentage must be 0 to 100")]
    InvalidGrayPercent,
    #[error("the cloud {field} must be 1 to 128 characters of A-Z a-z 0-9 _ . -, not starting with . or - and without \"..\" (P2)")]
    InvalidCloudName { field: &'static str },
}

impl RuleError {
    /// The stable error code (spec and API).
    pub fn code(&self) -> &'static str {
        match self {
            RuleError::FormNotFound => "form_not_found",
            RuleError::NotFormOwner => "not_form_owner",
            RuleError::ProxyEnabled => "proxy_enabled",
            RuleError::InvalidNextRefresh { .. } => "invalid_next_refresh",
            RuleError::QuotaExhausted { .. } => "quota_exhausted",
            RuleError::FormExists => "form_exists",
            RuleError::InvalidConfig => "invalid_config",
            RuleError::TooManyForms { .. } => "too_many_forms",
            RuleError::AppNotFound => "app_not_found",
            RuleError::PeriodicDisabled => "periodic_disabled",
            RuleError::TokenNotSet => "token_not_set",
            RuleError::InvalidToken => "invalid_token",
            RuleError::GrayCannotRetract => "gray_cannot_retract",
            RuleError::GrayUrlNotSet => "gray_url_not_set",
            RuleError::SourceNotAllowed(_) => "source_not_allowed",
            RuleError::InvalidGrayPercent => "invalid_request",
            // The name is a path segment of the fetch URL (`base_url/FUNCTION`): a bad
            // one makes a bad destination, which api.md calls `invalid_url`. (Not
            // `source_not_allowed`: that is a kind of source the app may not use.)
            RuleError::InvalidCloudName { .. } => "invalid_url",
        }
    }
}
