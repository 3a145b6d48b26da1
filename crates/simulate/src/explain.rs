//! placeholder
use crate::Scenario;
use refreshd_rules::Instant;
pub enum Subject {
    Form(String),
    Fetch { app: String, user: String },
}
pub fn explain(
    _s: &Scenario,
    _subject: &Subject,
    _at: Option<Instant>,
) -> Result<String, std::fmt::Error> {
    Ok(String::new())
}
