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
    #[error("{0}")]
    Exists(&'static str),
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

    pub fn corrupt(error: impl std::fmt::Display) -> Self {
        EngineError::Corrupt(error.to_string())
    }
}
