//! Bulk import of users' periodic-fetch pairs, for operators moving a user base to
//! refreshd and for benchmarks that need millions of subjects. Each pair's state is
//! built by the rules (`FetchPair::imported`), exactly as the inputs it stands for
//! would have built it; only the per-input commits are skipped.

use crate::engine::Engine;
use crate::error::EngineError;
use refreshd_rules::periodic::{fetch_jitter_ms, validate_token, FetchPair};
use refreshd_rules::Instant;
use refreshd_store::PairRecord;

/// Users written per transaction by callers that import many (the CLI).
pub const IMPORT_CHUNK: usize = 10_000;

/// One user of an app, as an import file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedUser {
    pub user_id: String,
    /// P5; sealed at rest like a token set through the API.
    pub token: Option<String>,
    /// P6: the user's last launch of the app.
    pub last_launch: Instant,
    /// P8: when the last successful fetch completed, if any.
    pub last_success: Option<Instant>,
}

impl Engine {
    /// Writes the pairs of `users` for `appid` in one transaction; users that already
    /// have a pair are left as they are. Answers how many pairs were written. Nothing is
    /// written when any user is invalid (an empty id or a malformed token).
    pub async fn import_users(
        &self,
        appid: &str,
        users: &[ImportedUser],
    ) -> Result<u64, EngineError> {
        let app = self.app(appid).await?;
        let now = self.now();
        let jitter_minutes = self.settings.fetch_jitter_minutes;
        let mut records = Vec::with_capacity(users.len());
        let mut earliest: Option<Instant> = None;
        for user in users {
            if user.user_id.is_empty() {
                return Err(EngineError::invalid_request("user_id must not be empty"));
            }
            if let Some(token) = &user.token {
                validate_token(token)?;
            }
            let pair = FetchPair::imported(
                user.last_launch,
                user.token.is_some(),
                user.last_success,
                fetch_jitter_ms(appid, &user.user_id, jitter_minutes),
            );
            let next = pair.next_wakeup(now, &app);
            if let Some(at) = next {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
            records.push(PairRecord {
                appid: appid.to_string(),
                user_id: user.user_id.clone(),
                state: serde_json::to_string(&pair).map_err(EngineError::corrupt)?,
                version: 1,
                next_wake_at: next.map(Instant::as_millis),
                token_sealed: user.token.as_deref().map(|t| self.sealer.seal(t)),
                ..PairRecord::default()
            });
        }
        let written = self.store.insert_pairs(&records).await?;
        self.plan(earliest);
        Ok(written)
    }
}
