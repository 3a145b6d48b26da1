//! Why an engine call failed. The API maps each variant to a status and code.

use refreshd_rules::form_config::ConfigIssue;
use refreshd_rules::RuleError;
use refreshd_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A rule rejected the input (F13, P3, …).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// Nothing with that id is visible to the caller; the code says what kind of thing.
    #[error("{0}")]
    NotFound(&'static str),
    /// The input is well-formed but not acceptable.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        details: Vec<ConfigIssue>,
    },
    /// A URL refreshd would never reach (P2, api.md): the field's JSON path, what is
    /// wrong, and what would make it work.
    #[error("{message}")]
    Destination {
        path: &'static str,
        message: String,
        hint: &'static str,
    },
    /// The input is larger than its limit.
    #[error("{0}")]
    TooLarge(String),
    /// What already exists, in words ("a device with this device_id").
    #[error("{0} already exists")]
    Exists(&'static str),
    /// The change keeps losing to concurrent ones; the caller may try again.
    #[error("{0}")]
    Busy(&'static str),
    /// The caller's key is of another kind, or its principal no longer exists.
    #[error("a valid key of the right kind is required")]
    Unauthorized,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored state could not be read back; never caused by a request.
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
}

impl EngineError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        EngineError::Invalid {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 400 `invalid_request`: the request itself is wrong.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::invalid("invalid_request", message)
    }

    pub fn corrupt(error: impl std::fmt::Display) -> Self {
        EngineError::Corrupt(error.to_string())
    }

    /// Another writer changed the subject first; the change may be run again.
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, EngineError::Store(StoreError::Conflict))
    }
}
