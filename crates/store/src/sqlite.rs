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

use crate::records::*;
use crate::{EventBuilder, Store, StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
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

#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    health: Arc<WriteHealth>,
}

/// One write transaction on the writer connection (`BEGIN IMMEDIATE`). Dropping it
/// without a successful [`WriteTx::commit`] closes the connection instead of returning
/// it to the pool: closing rolls back whatever SQLite still holds open, and the next
/// write starts on a connection in a known state.
struct WriteTx {
    conn: PoolConnection<Sqlite>,
    health: Arc<WriteHealth>,
    committed: bool,
}

impl WriteTx {
    async fn commit(mut self) -> StoreResult<()> {
        match sqlx::query("COMMIT").execute(&mut *self.conn).await {
            Ok(_) => {
                self.committed = true;
                self.health.failing.store(false, Ordering::Relaxed);
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
    /// commit. Writes count as failing until one commits again (health checks probe).
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
            self.health.failing.store(true, Ordering::Relaxed);
        }
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

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        owner_only_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
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
        Ok(SqliteStore {
            writer,
            reader,
            health,
        })
    }

    /// Closes both pools, waiting for running statements.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Caps the database file at `max_pages` pages (`None`: no cap) and answers the cap
    /// in force; SQLite never sets it below the file's current size. Past the cap every
    /// write fails as on a full disk, which is how the fault tests fill the disk without
    /// root, and how an operator can bound the embedded store.
    pub async fn limit_pages(&self, max_pages: Option<u64>) -> StoreResult<u64> {
        let pages = max_pages.unwrap_or(NO_PAGE_LIMIT).min(NO_PAGE_LIMIT);
        self.health.page_limit.store(pages, Ordering::Relaxed);
        let mut conn = self.writer.acquire().await?;
        let row = sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .fetch_one(&mut *conn)
            .await?;
        let in_force: i64 = row.get(0);
        self.health
            .page_limit
            .store(in_force as u64, Ordering::Relaxed);
        Ok(in_force as u64)
    }

    /// The database file's size in pages.
    pub async fn page_count(&self) -> StoreResult<u64> {
        let mut conn = self.writer.acquire().await?;
        let row = sqlx::query("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await?;
        Ok(row.get::<i64, _>(0) as u64)
    }

    /// Starts a write transaction on the writer connection.
    async fn write(&self) -> StoreResult<WriteTx> {
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

    /// Commits a write as large as the largest real one and takes it back, to learn
    /// whether writes fit again after a failed commit.
    async fn probe_write(&self) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO write_probe (filler) VALUES (zeroblob(?))")
            .bind(PROBE_BYTES)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM write_probe")
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}

fn provider_from_row(row: &sqlx::sqlite::SqliteRow) -> ProviderRecord {
    ProviderRecord {
        provider: row.get("provider"),
        provider_num: row.get("provider_num"),
        refresh_url: row.get("refresh_url"),
        system_app: row.get::<i64, _>("system_app") != 0,
        api_version: row.get("api_version"),
        market_update_duration: row.get("market_update_duration"),
        signing_secret: row.get("signing_secret"),
        form_config: row.get("form_config"),
        previous_signing_secret: row.get("previous_signing_secret"),
        previous_secret_until: row.get("previous_secret_until"),
    }
}

fn form_from_row(row: &sqlx::sqlite::SqliteRow) -> FormRecord {
    FormRecord {
        form_id: row.get("form_id"),
        form_num: row.get("form_num"),
        device_id: row.get("device_id"),
        provider: row.get("provider"),
        form_name: row.get("form_name"),
        created_at: row.get("created_at"),
    }
}

fn pair_from_row(row: &sqlx::sqlite::SqliteRow) -> PairRecord {
    PairRecord {
        appid: row.get("appid"),
        user_id: row.get("user_id"),
        state: row.get("state"),
        version: row.get("version"),
        next_wake_at: row.get("next_wake_at"),
        token_sealed: row.get("token_sealed"),
        cached_data: row.get("cached_data"),
        cached_at: row.get("cached_at"),
        cached_sent_at: row.get("cached_sent_at"),
        etag: row.get("etag"),
        etag_url: row.get("etag_url"),
    }
}

const FORM_COLUMNS: &str = "form_id, form_num, device_id, provider, form_name, created_at";
const PROVIDER_COLUMNS: &str = "provider, provider_num, refresh_url, system_app, api_version, market_update_duration, signing_secret, form_config, previous_signing_secret, previous_secret_until";
const PAIR_COLUMNS: &str = "appid, user_id, state, version, next_wake_at, token_sealed, cached_data, cached_at, etag, etag_url, cached_sent_at";

async fn insert_key_row(tx: &mut SqliteConnection, key: &KeyRecord) -> StoreResult<()> {
    sqlx::query("INSERT INTO api_keys (key_hash, kind, principal, created_at) VALUES (?, ?, ?, ?)")
        .bind(&key.key_hash)
        .bind(key.kind.as_str())
        .bind(&key.principal)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn insert_event(tx: &mut SqliteConnection, event: &NewEvent) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO events (device_id, form_id, kind, payload, at) VALUES (?, ?, ?, ?, ?) RETURNING event_id",
    )
    .bind(&event.device_id)
    .bind(&event.form_id)
    .bind(&event.kind)
    .bind(&event.payload)
    .bind(event.at)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(form_id) = &event.form_id {
        sqlx::query(
            "DELETE FROM events WHERE form_id = ?1 AND event_id <= (SELECT event_id FROM events WHERE form_id = ?1 ORDER BY event_id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(form_id)
        .bind(EVENTS_KEPT_PER_FORM)
        .execute(&mut *tx)
        .await?;
    }
    Ok(row.get(0))
}

/// Stores a form's data with the event that announces it, or, without one, marks it to
/// be announced when the form is shown.
async fn store_form_data(
    tx: &mut SqliteConnection,
    data: &FormData,
    event: Option<&NewEvent>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO form_data (form_id, data, updated_at, trigger, announce_on_show) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(form_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at,
             trigger = excluded.trigger, announce_on_show = excluded.announce_on_show",
    )
    .bind(&data.form_id)
    .bind(&data.data)
    .bind(data.updated_at)
    .bind(&data.trigger)
    .bind(event.is_none() as i64)
    .execute(&mut *tx)
    .await?;
    if let Some(event) = event {
        insert_event(tx, event).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        // After a failed commit the store is unhealthy until a write of full size
        // commits again (the probe, or any real write).
        if self.health.failing.load(Ordering::Relaxed) {
            self.probe_write().await?;
        }
        Ok(())
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let mut tx = self.write().await?;
        insert_key_row(&mut tx, key).await?;
        tx.commit().await
    }

    async fn find_key(&self, key_hash: &[u8]) -> StoreResult<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT key_hash, kind, principal, created_at FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.and_then(|row| {
            Some(KeyRecord {
                key_hash: row.get("key_hash"),
                kind: KeyKind::parse(row.get::<&str, _>("kind"))?,
                principal: row.get("principal"),
                created_at: row.get("created_at"),
            })
        }))
    }

    async fn rotate_key(&self, new_key: &KeyRecord, now: i64) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE kind = ? AND principal = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(new_key.kind.as_str())
            .bind(&new_key.principal)
            .execute(&mut *tx)
            .await?;
        insert_key_row(&mut tx, new_key).await?;
        tx.commit().await
    }

    async fn insert_app(&self, appid: &str, app: &str, key: Option<&KeyRecord>) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO apps (appid, app) VALUES (?, ?)")
            .bind(appid)
            .bind(app)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = key {
            insert_key_row(&mut tx, key).await?;
        }
        tx.commit().await
    }

    async fn get_app(&self, appid: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT app FROM apps WHERE appid = ?")
            .bind(appid)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_app(&self, appid: &str, app: &str) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE apps SET app = ? WHERE appid = ?")
            .bind(app)
            .bind(appid)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await
    }

    async fn insert_provider(
        &self,
        provider: &NewProvider,
        key: Option<&KeyRecord>,
    ) -> StoreResult<ProviderRecord> {
        let mut tx = self.write().await?;
        let num: i64 = sqlx::query("SELECT COALESCE(MAX(provider_num), 0) + 1 FROM providers")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        sqlx::query(
            "INSERT INTO providers (provider, provider_num, refresh_url, system_app, api_version, signing_secret) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&provider.provider)
        .bind(num)
        .bind(&provider.refresh_url)
        .bind(provider.system_app as i64)
        .bind(provider.api_version)
        .bind(&provider.signing_secret)
        .execute(&mut *tx)
        .await?;
        if let Some(key) = key {
            insert_key_row(&mut tx, key).await?;
        }
        tx.commit().await?;
        Ok(ProviderRecord {
            provider: provider.provider.clone(),
            provider_num: num,
            refresh_url: provider.refresh_url.clone(),
            system_app: provider.system_app,
            api_version: provider.api_version,
            market_update_duration: None,
            signing_secret: provider.signing_secret.clone(),
            form_config: None,
            previous_signing_secret: None,
            previous_secret_until: None,
        })
    }

    async fn get_provider(&self, provider: &str) -> StoreResult<Option<ProviderRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE provider = ?"
        ))
        .bind(provider)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(provider_from_row))
    }

    async fn provider_by_num(&self, provider_num: i64) -> StoreResult<Option<ProviderRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE provider_num = ?"
        ))
        .bind(provider_num)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(provider_from_row))
    }

    async fn update_provider(&self, p: &ProviderRecord) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE providers SET refresh_url = ?, system_app = ?, api_version = ?, market_update_duration = ?, signing_secret = ?, form_config = ?, previous_signing_secret = ?, previous_secret_until = ? WHERE provider = ?",
        )
        .bind(&p.refresh_url)
        .bind(p.system_app as i64)
        .bind(p.api_version)
        .bind(p.market_update_duration)
        .bind(&p.signing_secret)
        .bind(&p.form_config)
        .bind(&p.previous_signing_secret)
        .bind(p.previous_secret_until)
        .bind(&p.provider)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await
    }

    async fn insert_device(
        &self,
        device: &DeviceRecord,
        next_wake_at: Option<i64>,
        key: Option<&KeyRecord>,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO devices (device_id, user_id, state, version, next_wake_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&device.device_id)
            .bind(&device.user_id)
            .bind(&device.state)
            .bind(device.version)
            .bind(next_wake_at)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = key {
            insert_key_row(&mut tx, key).await?;
        }
        tx.commit().await
    }

    async fn get_device(&self, device_id: &str) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query(
            "SELECT device_id, user_id, state, version FROM devices WHERE device_id = ?",
        )
        .bind(device_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|row| DeviceRecord {
            device_id: row.get("device_id"),
            user_id: row.get("user_id"),
            state: row.get("state"),
            version: row.get("version"),
        }))
    }

    async fn commit_device(&self, commit: &DeviceCommit) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE devices SET state = ?, version = version + 1, next_wake_at = ?, claimed_by = NULL, claim_until = NULL WHERE device_id = ? AND version = ?",
        )
        .bind(&commit.state)
        .bind(commit.next_wake_at)
        .bind(&commit.device_id)
        .bind(commit.expected_version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::Conflict);
        }
        for form in &commit.add_forms {
            sqlx::query(&format!(
                "INSERT INTO forms ({FORM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .bind(&form.form_id)
            .bind(form.form_num)
            .bind(&form.device_id)
            .bind(&form.provider)
            .bind(&form.form_name)
            .bind(form.created_at)
            .execute(&mut *tx)
            .await?;
        }
        for form_id in &commit.remove_forms {
            // Its events go too: the `form_removed` written below is all a host needs.
            for table in ["forms", "form_data", "form_decisions", "events"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE form_id = ?"))
                    .bind(form_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE deliveries SET state = 'failed', next_attempt_at = NULL WHERE form_id = ? AND state = 'pending'")
                .bind(form_id)
                .execute(&mut *tx)
                .await?;
        }
        for d in &commit.deliveries {
            sqlx::query(
                "INSERT INTO deliveries (delivery_id, form_id, device_id, provider, body, attempts, next_attempt_at, state, created_at) VALUES (?, ?, ?, ?, ?, 0, ?, 'pending', ?)",
            )
            .bind(&d.delivery_id)
            .bind(&d.form_id)
            .bind(&d.device_id)
            .bind(&d.provider)
            .bind(&d.body)
            .bind(d.next_attempt_at)
            .bind(d.created_at)
            .execute(&mut *tx)
            .await?;
        }
        for event in &commit.events {
            insert_event(&mut tx, event).await?;
        }
        for note in &commit.decisions {
            sqlx::query(
                "INSERT INTO form_decisions (form_id, at, decision, rule) VALUES (?, ?, ?, ?)",
            )
            .bind(&note.form_id)
            .bind(note.at)
            .bind(&note.decision)
            .bind(&note.rule)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM form_decisions WHERE form_id = ? AND id <= (SELECT id FROM form_decisions WHERE form_id = ? ORDER BY id DESC LIMIT 1 OFFSET 50)",
            )
            .bind(&note.form_id)
            .bind(&note.form_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_form(&self, form_id: &str) -> StoreResult<Option<FormRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE form_id = ?"
        ))
        .bind(form_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(form_from_row))
    }

    async fn form_by_num(&self, form_num: i64) -> StoreResult<Option<FormRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE form_num = ?"
        ))
        .bind(form_num)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(form_from_row))
    }

    async fn forms_of_provider(&self, provider: &str) -> StoreResult<Vec<FormRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE provider = ? ORDER BY form_num"
        ))
        .bind(provider)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(form_from_row).collect())
    }

    async fn forms_of_device(&self, device_id: &str) -> StoreResult<Vec<FormRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE device_id = ? ORDER BY form_num"
        ))
        .bind(device_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(form_from_row).collect())
    }

    async fn next_form_num(&self) -> StoreResult<i64> {
        // Never reused: a reused number would make a new form inherit an old one's
        // identity in the rules (F22).
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "INSERT INTO counters (name, value) VALUES ('form_num', 1)
             ON CONFLICT(name) DO UPDATE SET value = counters.value + 1 RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.get(0))
    }

    async fn get_form_data(&self, form_id: &str) -> StoreResult<Option<FormData>> {
        let row = sqlx::query(
            "SELECT form_id, data, updated_at, trigger FROM form_data WHERE form_id = ?",
        )
        .bind(form_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|row| FormData {
            form_id: row.get("form_id"),
            data: row.get("data"),
            updated_at: row.get("updated_at"),
            trigger: row.get("trigger"),
        }))
    }

    async fn put_form_data(&self, data: &FormData, event: Option<&NewEvent>) -> StoreResult<()> {
        let mut tx = self.write().await?;
        store_form_data(&mut tx, data, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn announce_pending_data(
        &self,
        form_id: &str,
        event_for: &EventBuilder,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let row = sqlx::query("SELECT form_id, data, updated_at, trigger FROM form_data WHERE form_id = ? AND announce_on_show = 1")
            .bind(form_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(false);
        };
        let data = FormData {
            form_id: row.get("form_id"),
            data: row.get("data"),
            updated_at: row.get("updated_at"),
            trigger: row.get("trigger"),
        };
        insert_event(&mut tx, &event_for(&data)).await?;
        sqlx::query("UPDATE form_data SET announce_on_show = 0 WHERE form_id = ?")
            .bind(form_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn recent_decisions(&self, form_id: &str, limit: i64) -> StoreResult<Vec<DecisionNote>> {
        let rows = sqlx::query("SELECT form_id, at, decision, rule FROM form_decisions WHERE form_id = ? ORDER BY id DESC LIMIT ?")
            .bind(form_id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|row| DecisionNote {
                form_id: row.get("form_id"),
                at: row.get("at"),
                decision: row.get("decision"),
                rule: row.get("rule"),
            })
            .collect())
    }

    async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        // Claiming moves the next attempt to the end of the lease: no other node picks it
        // up meanwhile, and if this node dies it is sent again, under the same id, then.
        let mut tx = self.write().await?;
        let rows = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = ?
             WHERE delivery_id IN (SELECT delivery_id FROM deliveries
                 WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ? AND state = 'pending'
                 ORDER BY next_attempt_at LIMIT ?)
             RETURNING delivery_id, form_id, device_id, provider, body, attempts, next_attempt_at",
        )
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claimed: Vec<DeliveryRecord> = rows
            .iter()
            .map(|row| DeliveryRecord {
                delivery_id: row.get("delivery_id"),
                form_id: row.get("form_id"),
                device_id: row.get("device_id"),
                provider: row.get("provider"),
                body: row.get("body"),
                attempts: row.get("attempts"),
                next_attempt_at: row.get("next_attempt_at"),
            })
            .collect();
        claimed.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        Ok(claimed)
    }

    async fn finish_delivery(&self, delivery_id: &str, finish: &DeliveryFinish) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let (state, attempts, next): (&str, i64, Option<i64>) = match finish {
            DeliveryFinish::Done { attempts, .. } => ("done", *attempts, None),
            DeliveryFinish::Retry {
                attempts,
                next_attempt_at,
            } => ("pending", *attempts, Some(*next_attempt_at)),
            DeliveryFinish::GiveUp { attempts } => ("failed", *attempts, None),
        };
        let updated = sqlx::query(
            "UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ? WHERE delivery_id = ? AND state = 'pending'",
        )
        .bind(state)
        .bind(attempts)
        .bind(next)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            // Finished already (or its form was removed): nothing to apply twice.
            return tx.commit().await;
        }
        if let DeliveryFinish::Done {
            data: Some((data, event)),
            ..
        } = finish
        {
            let form_exists = sqlx::query("SELECT 1 FROM forms WHERE form_id = ?")
                .bind(&data.form_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if form_exists {
                store_form_data(&mut tx, data, event.as_ref()).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn events_after(
        &self,
        device_id: &str,
        after_event_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT event_id, kind, payload, at FROM events WHERE device_id = ? AND event_id > ? ORDER BY event_id LIMIT ?")
            .bind(device_id)
            .bind(after_event_id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|row| EventRecord {
                event_id: row.get("event_id"),
                kind: row.get("kind"),
                payload: row.get("payload"),
                at: row.get("at"),
            })
            .collect())
    }

    async fn get_pair(&self, appid: &str, user_id: &str) -> StoreResult<Option<PairRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PAIR_COLUMNS} FROM fetch_pairs WHERE appid = ? AND user_id = ?"
        ))
        .bind(appid)
        .bind(user_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(pair_from_row))
    }

    async fn commit_pair(&self, commit: &PairCommit) -> StoreResult<()> {
        let r = &commit.record;
        let mut tx = self.write().await?;
        if commit.expected_version == 0 {
            sqlx::query(&format!(
                "INSERT INTO fetch_pairs ({PAIR_COLUMNS}) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(&r.state)
            .bind(r.next_wake_at)
            .bind(&r.token_sealed)
            .bind(&r.cached_data)
            .bind(r.cached_at)
            .bind(&r.etag)
            .bind(&r.etag_url)
            .bind(r.cached_sent_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Exists => StoreError::Conflict,
                other => other,
            })?;
        } else {
            let updated = sqlx::query(
                "UPDATE fetch_pairs SET state = ?, version = version + 1, next_wake_at = ?, claimed_by = NULL, claim_until = NULL, token_sealed = ?, cached_data = ?, cached_at = ?, etag = ?, etag_url = ?, cached_sent_at = ?
                 WHERE appid = ? AND user_id = ? AND version = ?",
            )
            .bind(&r.state)
            .bind(r.next_wake_at)
            .bind(&r.token_sealed)
            .bind(&r.cached_data)
            .bind(r.cached_at)
            .bind(&r.etag)
            .bind(&r.etag_url)
            .bind(r.cached_sent_at)
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(commit.expected_version)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
        }
        if let Some(log) = &commit.log {
            sqlx::query("INSERT INTO fetch_log (appid, user_id, at, gray, outcome, http_status, bytes, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&r.appid)
                .bind(&r.user_id)
                .bind(log.at)
                .bind(log.gray as i64)
                .bind(&log.outcome)
                .bind(log.http_status)
                .bind(log.bytes)
                .bind(log.duration_ms)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM fetch_log WHERE appid = ? AND user_id = ? AND id <= (SELECT id FROM fetch_log WHERE appid = ? AND user_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            )
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(FETCH_LOG_KEPT)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn fetch_log(
        &self,
        appid: &str,
        user_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<FetchLogEntry>> {
        let rows = sqlx::query("SELECT at, gray, outcome, http_status, bytes, duration_ms FROM fetch_log WHERE appid = ? AND user_id = ? ORDER BY id DESC LIMIT ?")
            .bind(appid)
            .bind(user_id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|row| FetchLogEntry {
                at: row.get("at"),
                gray: row.get::<i64, _>("gray") != 0,
                outcome: row.get("outcome"),
                http_status: row.get("http_status"),
                bytes: row.get("bytes"),
                duration_ms: row.get("duration_ms"),
            })
            .collect())
    }

    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<(SubjectKey, i64)>> {
        // One writer connection: the select and the update cannot interleave with
        // another claim.
        let mut tx = self.write().await?;
        let mut claimed = Vec::new();
        let devices = sqlx::query(
            "UPDATE devices SET claimed_by = ?, claim_until = ?
             WHERE device_id IN (SELECT device_id FROM devices
                 WHERE next_wake_at IS NOT NULL AND next_wake_at <= ? AND (claim_until IS NULL OR claim_until < ?)
                 ORDER BY next_wake_at LIMIT ?)
             RETURNING device_id, next_wake_at",
        )
        .bind(node)
        .bind(lease_until)
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for row in devices {
            claimed.push((SubjectKey::Device(row.get(0)), row.get(1)));
        }
        let pairs = sqlx::query(
            "UPDATE fetch_pairs SET claimed_by = ?, claim_until = ?
             WHERE (appid, user_id) IN (SELECT appid, user_id FROM fetch_pairs
                 WHERE next_wake_at IS NOT NULL AND next_wake_at <= ? AND (claim_until IS NULL OR claim_until < ?)
                 ORDER BY next_wake_at LIMIT ?)
             RETURNING appid, user_id, next_wake_at",
        )
        .bind(node)
        .bind(lease_until)
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for row in pairs {
            claimed.push((
                SubjectKey::Pair {
                    appid: row.get(0),
                    user_id: row.get(1),
                },
                row.get(2),
            ));
        }
        tx.commit().await?;
        claimed.sort_by_key(|(_, at)| *at);
        Ok(claimed)
    }

    async fn release_claims_at_start(&self) -> StoreResult<()> {
        let mut tx = self.write().await?;
        for table in ["devices", "fetch_pairs"] {
            sqlx::query(&format!("UPDATE {table} SET claimed_by = NULL, claim_until = NULL WHERE claimed_by IS NOT NULL"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn count_due(&self, now: i64) -> StoreResult<i64> {
        // Both counts are range scans on the partial next_wake_at indexes.
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM devices WHERE next_wake_at IS NOT NULL AND next_wake_at <= ?)
                  + (SELECT COUNT(*) FROM fetch_pairs WHERE next_wake_at IS NOT NULL AND next_wake_at <= ?)",
        )
        .bind(now)
        .bind(now)
        .fetch_one(&self.reader)
        .await?;
        Ok(row.get(0))
    }

    async fn planned_wakeups(&self) -> StoreResult<Vec<(SubjectKey, i64)>> {
        let mut planned = Vec::new();
        for row in sqlx::query(
            "SELECT device_id, next_wake_at FROM devices WHERE next_wake_at IS NOT NULL",
        )
        .fetch_all(&self.reader)
        .await?
        {
            planned.push((SubjectKey::Device(row.get(0)), row.get(1)));
        }
        for row in sqlx::query(
            "SELECT appid, user_id, next_wake_at FROM fetch_pairs WHERE next_wake_at IS NOT NULL",
        )
        .fetch_all(&self.reader)
        .await?
        {
            planned.push((
                SubjectKey::Pair {
                    appid: row.get(0),
                    user_id: row.get(1),
                },
                row.get(2),
            ));
        }
        Ok(planned)
    }

    async fn all_pairs_of_app(&self, appid: &str) -> StoreResult<Vec<PairRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PAIR_COLUMNS} FROM fetch_pairs WHERE appid = ?"
        ))
        .bind(appid)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(pair_from_row).collect())
    }

    async fn prune(&self, before: i64) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM deliveries WHERE state <> 'pending' AND created_at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM events WHERE at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}
