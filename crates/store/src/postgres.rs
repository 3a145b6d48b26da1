//! The fleet backend: PostgreSQL shared by several `refreshd serve` nodes.
//!
//! The statements are [`crate::sql`]'s, shared with SQLite, with two differences that
//! matter for a fleet: due subjects are claimed with `FOR UPDATE SKIP LOCKED`, so two
//! nodes never claim the same subject, and host events are announced with `NOTIFY`, so
//! an SSE client connected to any node hears of events committed on another.
//!
//! The URL is read once and never kept: it may carry a password, and nothing here may
//! print it (errors, logs, `Debug`).

use crate::sql::{Backend, Commit, SqlStore};
use crate::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult};
use sqlx::{ConnectOptions, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// The channel on which nodes announce devices with new host events.
const EVENTS_CHANNEL: &str = "refreshd_host_events";

/// PostgreSQL's side of [`SqlStore`]: one pool for reads and writes.
#[derive(Clone)]
pub struct PgBackend {
    pool: PgPool,
}

impl Commit for Transaction<'static, Postgres> {
    async fn commit(self) -> StoreResult<()> {
        Transaction::commit(self).await?;
        Ok(())
    }
}

impl Backend for PgBackend {
    type Db = Postgres;
    type Tx = Transaction<'static, Postgres>;
    const NAME: &'static str = "PgStore";
    const SINGLE_NODE: bool = false;
    // Rows another node is claiming right now are passed over: no subject is claimed
    // twice and no node waits for another.
    const CLAIM_LOCK: &'static str = " FOR UPDATE SKIP LOCKED";
    // Batches on different rows commit side by side; each holds one pooled connection.
    const WRITERS: usize = 4;
    const ANONYMOUS_PLACEHOLDERS: bool = false;
    const ROW_LOCK: &'static str = " FOR UPDATE";

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> StoreResult<Self::Tx> {
        Ok(self.pool.begin().await?)
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn publish_host_event(&self, device_id: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn forward_host_events(
        &self,
        sink: tokio::sync::broadcast::Sender<String>,
    ) -> StoreResult<()> {
        // Reconnects after a lost connection; notices sent meanwhile are covered by the
        // SSE streams' periodic re-read of the store.
        loop {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "LISTEN connection failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(EVENTS_CHANNEL).await {
                tracing::warn!(%error, "LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                match listener.recv().await {
                    Ok(notice) => {
                        let _ = sink.send(notice.payload().to_string());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                        break;
                    }
                }
            }
            if self.pool.is_closed() {
                return Ok(());
            }
        }
    }
}

impl SqlStore<PgBackend> {
    /// Connects to `url` and brings the schema up to date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_in_schema(url, None).await
    }

    /// Connects with every table in `schema` (created if missing): test suites give
    /// each run its own schema in one shared database.
    pub async fn open_in_schema(url: &str, schema: Option<&str>) -> StoreResult<Self> {
        // sqlx's parse errors name the part that is wrong, never the URL's text.
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
            .disable_statement_logging();
        if let Some(schema) = schema {
            let mut admin = options.connect().await?;
            sqlx::query(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "")
            ))
            .execute(&mut admin)
            .await?;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the schema: {e}")))?;
        Ok(SqlStore::start(PgBackend { pool }))
    }
}
