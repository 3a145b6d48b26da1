//! The embedded backend: one SQLite file, zero setup.
//!
//! Writes go through a single connection, so write transactions never contend; reads
//! use a small pool (WAL lets them run beside the writer). `synchronous = FULL` makes a
//! committed transaction survive power loss, not just a process crash.
//!
//! Every write runs in a [`WriteTx`]: a write is acknowledged only after its `COMMIT`
//! succeeded, and a transaction that ends any other way takes its connection with it.
//! After a disk-full or I/O error SQLite may have rolled the transaction back by itself
//! (or not), so a connection whose transaction state is in doubt never takes another
//! write; the pool opens a fresh one, and the store recovers when space returns.
//!
//! The statements themselves are [`crate::sql`]'s, shared with PostgreSQL.

use crate::sql::{Backend, Commit, SqlStore};
use crate::{StoreError, StoreResult};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// SQLite's own ceiling for `max_page_count`: no limit.
const NO_PAGE_LIMIT: u64 = 4_294_967_294;
/// What the health probe commits: as much as the largest single write refreshd makes
/// (a 256 KiB body plus its row), so "healthy" means the next write of any size fits.
const PROBE_BYTES: i64 = 300 * 1024;

/// Whether commits are failing, and the size cap applied to every writer connection.
#[derive(Debug)]
struct WriteHealth {
    failing: AtomicBool,
    page_limit: AtomicU64,
}

/// SQLite's side of [`SqlStore`]: its pools and write health.
#[derive(Clone)]
pub struct SqliteBackend {
    writer: SqlitePool,
    reader: SqlitePool,
    health: Arc<WriteHealth>,
}

/// One write transaction on the writer connection (`BEGIN IMMEDIATE`). Dropping it
/// without a successful [`Commit::commit`] closes the connection instead of returning
/// it to the pool: closing rolls back whatever SQLite still holds open, and the next
/// write starts on a connection in a known state.
pub struct WriteTx {
    conn: PoolConnection<Sqlite>,
    health: Arc<WriteHealth>,
    committed: bool,
}

impl Commit for WriteTx {
    async fn commit(mut self) -> StoreResult<()> {
        match sqlx::query("COMMIT").execute(&mut *self.conn).await {
            Ok(_) => {
                self.committed = true;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "a commit failed; the write is not acknowledged");
                Err(error.into())
            }
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for WriteTx {
    /// Ended without a commit: a conflict or a duplicate id, or a failed statement or
    /// commit. Writes count as failing until the health probe commits again: a small
    /// write fitting says nothing about the next large one.
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
            self.health.failing.store(true, Ordering::Relaxed);
        }
    }
}

impl Backend for SqliteBackend {
    type Db = Sqlite;
    type Tx = WriteTx;
    const NAME: &'static str = "SqliteStore";
    const SINGLE_NODE: bool = true;
    // One writer connection: a claim's select and update cannot interleave with another.
    const CLAIM_LOCK: &'static str = "";
    const WRITERS: usize = 1;
    const ANONYMOUS_PLACEHOLDERS: bool = true;
    const ROW_LOCK: &'static str = "";

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Starts a write transaction on the writer connection.
    async fn begin(&self) -> StoreResult<WriteTx> {
        let conn = self.writer.acquire().await?;
        let mut tx = WriteTx {
            conn,
            health: self.health.clone(),
            committed: false,
        };
        if let Err(error) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx.conn).await {
            // `tx` is dropped uncommitted: the connection is replaced.
            return Err(error.into());
        }
        Ok(tx)
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Folds the write-ahead log into the file and empties it, so the earlier versions
    /// of erased rows it held are gone too (secure_delete has zeroed them in the pages).
    async fn forget_deleted(&self) -> StoreResult<()> {
        let mut conn = self.writer.acquire().await?;
        let (busy,): (i64,) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await?;
        if busy != 0 {
            return Err(StoreError::Unavailable(
                "the write-ahead log could not be emptied while readers held it; erase again"
                    .into(),
            ));
        }
        Ok(())
    }

    /// After a failed commit the store is unhealthy until a write of full size (the
    /// probe) commits again.
    async fn check_writes(&self) -> StoreResult<()> {
        if self.health.failing.load(Ordering::Relaxed) {
            self.probe_write().await?;
        }
        Ok(())
    }
}

impl SqliteBackend {
    /// Commits a write as large as the largest real one and takes it back, to learn
    /// whether writes fit again after a failed commit.
    async fn probe_write(&self) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO write_probe (filler) VALUES (zeroblob($1))")
            .bind(PROBE_BYTES)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM write_probe")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.health.failing.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// Creates the database file with mode 0600 (SQLite gives its `-wal` and `-shm` files the
/// main file's mode), or narrows an existing file to it: the file holds sealed tokens,
/// key hashes and every user's cached data.
fn owner_only_file(path: &Path) -> StoreResult<()> {
    let unavailable =
        |e: std::io::Error| StoreError::Unavailable(format!("preparing {}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(unavailable)?;
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(suffix);
                    let side = std::path::PathBuf::from(side);
                    if side.exists() {
                        std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600))
                            .map_err(unavailable)?;
                    }
                }
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
    #[cfg(not(unix))]
    let _ = unavailable;
    Ok(())
}

impl SqlStore<SqliteBackend> {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        owner_only_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted content is overwritten, so an erased user or device leaves no
            // bytes of theirs behind in the file.
            .pragma("secure_delete", "on")
            .busy_timeout(Duration::from_secs(10));
        let health = Arc::new(WriteHealth {
            failing: AtomicBool::new(false),
            page_limit: AtomicU64::new(NO_PAGE_LIMIT),
        });
        let limit = health.clone();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A replacement writer connection keeps the size cap of the one it replaces.
            .after_connect(move |conn, _| {
                let pages = limit.page_limit.load(Ordering::Relaxed);
                Box::pin(async move {
                    sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the schema: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqlStore::start(SqliteBackend {
            writer,
            reader,
            health,
        }))
    }

    /// Caps the database file at `max_pages` pages (`None`: no cap) and answers the cap
    /// in force; SQLite never sets it below the file's current size. Past the cap every
    /// write fails as on a full disk, which is how the fault tests fill the disk without
    /// root, and how an operator can bound the embedded store.
    pub async fn limit_pages(&self, max_pages: Option<u64>) -> StoreResult<u64> {
        let health = &self.backend.health;
        let pages = max_pages.unwrap_or(NO_PAGE_LIMIT).min(NO_PAGE_LIMIT);
        health.page_limit.store(pages, Ordering::Relaxed);
        let mut conn = self.backend.writer.acquire().await?;
        let row = sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .fetch_one(&mut *conn)
            .await?;
        let in_force: i64 = row.get(0);
        health.page_limit.store(in_force as u64, Ordering::Relaxed);
        Ok(in_force as u64)
    }

    /// The database file's size in pages.
    pub async fn page_count(&self) -> StoreResult<u64> {
        let mut conn = self.backend.writer.acquire().await?;
        let row = sqlx::query("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await?;
        Ok(row.get::<i64, _>(0) as u64)
    }
}
