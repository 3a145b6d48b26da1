//! The one implementation of [`Store`], for every SQL backend.
//!
//! Every statement is written once, with `$N` placeholders: they are PostgreSQL's own,
//! and on SQLite sqlx binds `$N` to the N-th argument as well, so no statement is
//! rewritten per backend. What a backend does its own way is behind [`Backend`]: how a
//! write transaction begins and commits, the row lock a claim takes, claims left at
//! start, host events across nodes, write health. Each backend also has its own
//! migrations (column types differ: INTEGER/BLOB against BIGINT/BYTEA).

use crate::group::{self, GroupWriter, Inbox, JobResult, WriteJob};
use crate::records::*;
use crate::{EventBuilder, Store, StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::DerefMut;

/// What one database does its own way. Everything else is [`SqlStore`].
pub trait Backend: Clone + Send + Sync + 'static {
    type Db: Database;
    /// An open write transaction. Dropped without [`Commit::commit`], it rolls back.
    type Tx: Commit + DerefMut<Target = Conn<Self>>;
    /// The store's name in `Debug` output, which shows nothing else: a PostgreSQL URL
    /// may carry a password.
    const NAME: &'static str;
    /// Only one node can use the store, so every claim found at start is its own
    /// predecessor's. A shared store keeps them: other nodes may be alive.
    const SINGLE_NODE: bool;
    /// Appended to the selects that pick rows to claim: the row lock that keeps two
    /// nodes from claiming one row (empty where one writer connection already does).
    const CLAIM_LOCK: &'static str;
    /// Group-commit writer tasks (`group`): one where there is one writer connection,
    /// several where transactions on different rows run side by side.
    const WRITERS: usize;
    /// Grouped statements (many rows, hundreds of parameters) use anonymous `?`
    /// placeholders rather than `$N`: SQLite looks a numbered parameter up by walking
    /// the statement's list of names, so binding hundreds of them costs their square.
    /// Every other statement uses `$N`, which both databases read.
    const ANONYMOUS_PLACEHOLDERS: bool;
    /// Appended to a select that locks the rows a grouped statement is about to update,
    /// in key order (empty where one writer connection leaves nobody to deadlock with):
    /// one statement over many rows takes its locks in whatever order its plan visits
    /// them, and two writers doing that on overlapping rows could deadlock.
    const ROW_LOCK: &'static str;

    fn reader(&self) -> &Pool<Self::Db>;
    fn begin(&self) -> impl Future<Output = StoreResult<Self::Tx>> + Send;
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Whether writes fit, beyond the database answering (called by `ping`).
    fn check_writes(&self) -> impl Future<Output = StoreResult<()>> + Send {
        async { Ok(()) }
    }
    /// After an erasure: drops what the database still keeps of deleted rows outside
    /// its live pages (SQLite's write-ahead log holds every earlier version of a page
    /// until a checkpoint).
    fn forget_deleted(&self) -> impl Future<Output = StoreResult<()>> + Send {
        async { Ok(()) }
    }
    /// See [`Store::publish_host_event`]; one node: nothing to tell.
    fn publish_host_event(&self, _device_id: &str) -> impl Future<Output = StoreResult<()>> + Send {
        async { Ok(()) }
    }
    /// See [`Store::forward_host_events`]; one node: returns at once.
    fn forward_host_events(
        &self,
        _sink: tokio::sync::broadcast::Sender<String>,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        async { Ok(()) }
    }
}

/// Ends a write transaction; the write is acknowledged only when this returned `Ok`.
pub trait Commit: Send {
    fn commit(self) -> impl Future<Output = StoreResult<()>> + Send;
}

type Conn<B> = <<B as Backend>::Db as Database>::Connection;
type DbRow<B> = <<B as Backend>::Db as Database>::Row;

/// refreshd's store over one SQL backend: [`crate::SqliteStore`] or [`crate::PgStore`].
#[derive(Clone)]
pub struct SqlStore<B> {
    pub(crate) backend: B,
    /// Subject commits go through here, to be written in groups (`group`).
    writes: GroupWriter,
}

impl<B: Backend> std::fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(B::NAME).finish_non_exhaustive()
    }
}

impl<B: Backend> SqlStore<B> {
    /// Closes the store's connections, waiting for running statements.
    pub async fn close(&self) {
        self.backend.close().await
    }
}

const FORM_COLUMNS: &str = "form_id, form_num, device_id, provider, form_name, created_at";
const PROVIDER_COLUMNS: &str = "provider, provider_num, refresh_url, system_app, api_version, market_update_duration, signing_secret, form_config, previous_signing_secret, previous_secret_until";
/// A pair's own row; its cache is a row of `fetch_cache` beside it, written only when the
/// cache changes, so state-only commits never rewrite (or read) a body.
const PAIR_COLUMNS: &str = "appid, user_id, state, version, next_wake_at, token_sealed";
/// A pair with its cache, for reads that answer both.
const PAIR_WITH_CACHE: &str = "SELECT p.appid, p.user_id, p.state, p.version, p.next_wake_at, p.token_sealed, c.data AS cached_data, c.cached_at, c.cached_sent_at, c.etag, c.etag_url FROM fetch_pairs p LEFT JOIN fetch_cache c ON c.appid = p.appid AND c.user_id = p.user_id";
const FORM_DATA_COLUMNS: &str = "form_id, data, updated_at, trigger";
const DELIVERY_COLUMNS: &str =
    "delivery_id, form_id, device_id, provider, body, trigger, attempts, next_attempt_at";
/// The two tables of hourly counters: per app (fetch outcomes and lateness) and per
/// provider (delivery outcomes and decided triggers).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StatCounters {
    Fetches,
    Providers,
}

impl StatCounters {
    /// (table, owner column, what column).
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            StatCounters::Fetches => ("fetch_stats", "appid", "outcome"),
            StatCounters::Providers => ("provider_stats", "provider", "what"),
        }
    }
}

/// Counter increments gathered over a group of commits and written once per counter
/// row, in key order: many fetches of one app in one hour touch one row, once.
#[derive(Default)]
struct StatTally {
    counts: BTreeMap<(StatCounters, String, i64, String, i64), i64>,
}

impl StatTally {
    fn add(&mut self, counters: StatCounters, owner: &str, at_ms: i64, what: &str, bucket: i64) {
        *self
            .counts
            .entry((
                counters,
                owner.to_string(),
                hour_of(at_ms),
                what.to_string(),
                bucket,
            ))
            .or_insert(0) += 1;
    }
}

/// Decision notes kept per form, for explanations.
const DECISIONS_KEPT_PER_FORM: i64 = 50;

/// Pair updates in one batch that are written with grouped statements rather than one
/// by one, at least: below it, the per-pair statements (prepared once and kept) cost less
/// than preparing grouped ones.
const GROUPED_PAIRS_MIN: usize = 4;
/// Rows per grouped statement, at most: 8 columns of 256 rows stay far below SQLite's
/// 32,766 and PostgreSQL's 65,535 bound parameters.
const GROUPED_PAIRS_PER_STATEMENT: usize = 256;

/// The positions in `jobs` of the pair updates to write together: each pair's first
/// commit in the batch, when it updates (a new pair is inserted on its own).
fn grouped_pair_updates(jobs: &[&WriteJob]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut grouped = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if let WriteJob::Pair(commit) = job {
            let first = seen.insert((commit.record.appid.as_str(), commit.record.user_id.as_str()));
            if first && commit.expected_version > 0 {
                grouped.push(i);
            }
        }
    }
    grouped
}

/// `VALUES ($1, $2), ($3, $4), …`: `rows` rows of `columns` placeholders (or anonymous,
/// see [`Backend::ANONYMOUS_PLACEHOLDERS`]; bind in the order they appear).
fn values_rows<B: Backend>(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(8 + rows * columns * 6);
    sql.push_str("VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&placeholders::<B>(columns, 1 + row * columns));
        sql.push(')');
    }
    sql
}

/// `$first, $first+1, …`: `count` placeholders (or `?, ?, …`).
fn placeholders<B: Backend>(count: usize, first: usize) -> String {
    let mut sql = String::with_capacity(count * 6);
    for n in first..first + count {
        if n > first {
            sql.push_str(", ");
        }
        if B::ANONYMOUS_PLACEHOLDERS {
            sql.push('?');
        } else {
            sql.push_str(&format!("${n}"));
        }
    }
    sql
}

// The bounds below (on this block and on the `Store` impl) say what the SQL needs of a
// database: statements on a connection or a pool, and the column types refreshd uses
// (BIGINT, TEXT, BLOB/BYTEA). SQLite and PostgreSQL both meet them.
impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'a> &'a str: ColumnIndex<DbRow<B>> + Encode<'a, B::Db> + Type<B::Db>,
    usize: ColumnIndex<DbRow<B>>,
    for<'a> &'a [u8]: Encode<'a, B::Db> + Type<B::Db>,
    i64: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    String: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    Vec<u8>: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    Option<i64>: for<'q> Encode<'q, B::Db>,
    Option<String>: for<'q> Encode<'q, B::Db>,
    Option<Vec<u8>>: for<'q> Encode<'q, B::Db>,
    B::Db: sqlx::database::HasStatementCache,
{
    fn provider_from_row(row: &DbRow<B>) -> ProviderRecord {
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

    fn form_from_row(row: &DbRow<B>) -> FormRecord {
        FormRecord {
            form_id: row.get("form_id"),
            form_num: row.get("form_num"),
            device_id: row.get("device_id"),
            provider: row.get("provider"),
            form_name: row.get("form_name"),
            created_at: row.get("created_at"),
        }
    }

    fn pair_from_row(row: &DbRow<B>) -> PairRecord {
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

    fn form_data_from_row(row: &DbRow<B>) -> FormData {
        FormData {
            form_id: row.get("form_id"),
            data: row.get("data"),
            updated_at: row.get("updated_at"),
            trigger: row.get("trigger"),
        }
    }

    fn delivery_from_row(row: &DbRow<B>) -> DeliveryRecord {
        DeliveryRecord {
            delivery_id: row.get("delivery_id"),
            form_id: row.get("form_id"),
            device_id: row.get("device_id"),
            provider: row.get("provider"),
            body: row.get("body"),
            trigger: row.get("trigger"),
            attempts: row.get("attempts"),
            next_attempt_at: row.get("next_attempt_at"),
        }
    }

    fn wakeup_from_row(row: &DbRow<B>, table: SubjectTable) -> (SubjectKey, i64) {
        match table {
            SubjectTable::Devices => (SubjectKey::Device(row.get(0)), row.get(1)),
            SubjectTable::Pairs => {
                let key = SubjectKey::Pair {
                    appid: row.get(0),
                    user_id: row.get(1),
                };
                (key, row.get(2))
            }
        }
    }

    /// The store over `backend`, with its group-commit writers running (`group`).
    pub(crate) fn start(backend: B) -> Self {
        let (writes, inbox) = GroupWriter::channel();
        for _ in 0..B::WRITERS {
            tokio::spawn(Self::run_writer(backend.clone(), inbox.clone()));
        }
        SqlStore { backend, writes }
    }

    async fn insert_key_row(tx: &mut Conn<B>, key: &KeyRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (key_hash, kind, principal, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.key_hash)
        .bind(key.kind.as_str())
        .bind(&key.principal)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn insert_event(tx: &mut Conn<B>, event: &NewEvent) -> StoreResult<i64> {
        if let Some(appid) = &event.appid {
            // Each `fetched_data` carries the whole cached body: only the latest counts.
            sqlx::query("DELETE FROM events WHERE device_id = $1 AND appid = $2")
                .bind(&event.device_id)
                .bind(appid)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(
            "INSERT INTO events (device_id, form_id, appid, kind, payload, at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING event_id",
        )
        .bind(&event.device_id)
        .bind(&event.form_id)
        .bind(&event.appid)
        .bind(&event.kind)
        .bind(&event.payload)
        .bind(event.at)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(form_id) = &event.form_id {
            sqlx::query(
                "DELETE FROM events WHERE form_id = $1 AND event_id <= (SELECT event_id FROM events WHERE form_id = $1 ORDER BY event_id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(form_id)
            .bind(EVENTS_KEPT_PER_FORM)
            .execute(&mut *tx)
            .await?;
        }
        Ok(row.get(0))
    }

    /// Adds `n` to the counter of `what` (an outcome, the lateness, a trigger) of `owner`
    /// in `counters` for `hour`, within `tx`.
    async fn count_stat(
        tx: &mut Conn<B>,
        counters: StatCounters,
        owner: &str,
        hour: i64,
        what: &str,
        bucket: i64,
        n: i64,
    ) -> StoreResult<()> {
        let (table, owner_column, what_column) = counters.columns();
        sqlx::query(&format!(
            "INSERT INTO {table} ({owner_column}, hour, {what_column}, bucket, count) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT ({owner_column}, hour, {what_column}, bucket) DO UPDATE SET count = {table}.count + $5"
        ))
        .bind(owner)
        .bind(hour)
        .bind(what)
        .bind(bucket)
        .bind(n)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Writes the counters gathered in `tally`, within `tx`.
    async fn write_tally(tx: &mut Conn<B>, tally: StatTally) -> StoreResult<()> {
        for ((counters, owner, hour, what, bucket), n) in tally.counts {
            Self::count_stat(tx, counters, &owner, hour, &what, bucket, n).await?;
        }
        Ok(())
    }

    /// The group-commit writer: takes batches of subject commits off `inbox` and writes
    /// each batch in one transaction (`group`), until the store is dropped.
    async fn run_writer(backend: B, inbox: Inbox) {
        while let Some(mut batch) = group::next_batch(&inbox).await {
            // Stable: two commits of one subject keep their order.
            batch.sort_by(|a, b| a.job.sort_key().cmp(&b.job.sort_key()));
            let results = {
                let jobs: Vec<&WriteJob> = batch.iter().map(|q| &q.job).collect();
                match Self::write_batch(&backend, &jobs).await {
                    Ok(results) => results,
                    Err(error) if jobs.len() == 1 => vec![Err(error)],
                    // Rolled back: each commit again on its own, so that the one that
                    // failed fails alone.
                    Err(_) => {
                        let mut results = Vec::with_capacity(jobs.len());
                        for job in &jobs {
                            results.push(match Self::write_batch(&backend, &[job]).await {
                                Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Conflict)),
                                Err(error) => Err(error),
                            });
                        }
                        results
                    }
                }
            };
            for (queued, result) in batch.into_iter().zip(results) {
                // The waiter may be gone (its request was dropped); the write stands.
                let _ = queued.done.send(result);
            }
        }
    }

    /// Writes `jobs` in one transaction and commits once. A job that lost its version
    /// race answers `Conflict` and wrote nothing; any other failure rolls back the
    /// whole batch and is answered as the batch's error.
    async fn write_batch(backend: &B, jobs: &[&WriteJob]) -> StoreResult<Vec<JobResult>> {
        let mut tx = backend.begin().await?;
        let mut tally = StatTally::default();
        let mut results: Vec<Option<JobResult>> = jobs.iter().map(|_| None).collect();
        // Pair updates are written a few statements per group rather than per pair; the
        // rest one by one after them, in the batch's order. Only the first commit of each
        // pair goes with the group, so commits of one pair still apply in their order.
        let grouped = grouped_pair_updates(jobs);
        if grouped.len() >= GROUPED_PAIRS_MIN {
            let commits: Vec<&PairCommit> = grouped
                .iter()
                .filter_map(|&i| match jobs[i] {
                    WriteJob::Pair(commit) => Some(commit),
                    WriteJob::Device(_) => None,
                })
                .collect();
            for chunk in grouped
                .chunks(GROUPED_PAIRS_PER_STATEMENT)
                .zip(commits.chunks(GROUPED_PAIRS_PER_STATEMENT))
            {
                let answers = Self::write_pair_updates(&mut tx, chunk.1, &mut tally).await?;
                for (&i, answer) in chunk.0.iter().zip(answers) {
                    results[i] = Some(answer);
                }
            }
        }
        for (job, slot) in jobs.iter().zip(results.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let result = match job {
                WriteJob::Pair(commit) => Self::write_pair(&mut tx, commit, &mut tally).await,
                WriteJob::Device(commit) => Self::write_device(&mut tx, commit, &mut tally)
                    .await
                    .map(|()| Vec::new()),
            };
            *slot = Some(match result {
                Err(StoreError::Conflict) => Err(StoreError::Conflict),
                Err(error) => return Err(error),
                Ok(announced) => Ok(announced),
            });
        }
        Self::write_tally(&mut tx, tally).await?;
        tx.commit().await?;
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Conflict)))
            .collect())
    }

    /// A grouped statement over `rows` rows. Full chunks and single rows share one
    /// text each, so they are prepared once and kept; other sizes are prepared for the
    /// one use, so that they do not push other statements out of the connection's cache.
    fn grouped_query(sql: &str, rows: usize) -> SqlQuery<'_, B> {
        sqlx::query(sql).persistent(rows == 1 || rows == GROUPED_PAIRS_PER_STATEMENT)
    }

    /// Updates of existing pairs (distinct pairs, each expecting its version), written
    /// with a handful of statements whatever their number, within `tx`: the version-
    /// checked update says which commits won; only the winners' caches, log entries and
    /// announcements are written. A loser answers `Conflict` having written nothing.
    async fn write_pair_updates(
        tx: &mut Conn<B>,
        commits: &[&PairCommit],
        tally: &mut StatTally,
    ) -> StoreResult<Vec<JobResult>> {
        if !B::ROW_LOCK.is_empty() {
            let sql = format!(
                "SELECT 1 FROM fetch_pairs WHERE (appid, user_id) IN ({}) ORDER BY appid, user_id{}",
                values_rows::<B>(commits.len(), 2),
                B::ROW_LOCK
            );
            let mut query = Self::grouped_query(&sql, commits.len());
            for c in commits {
                query = query.bind(&c.record.appid).bind(&c.record.user_id);
            }
            query.execute(&mut *tx).await?;
        }
        let sql = format!(
            "UPDATE fetch_pairs SET state = v.column3, version = version + 1, next_wake_at = v.column4, claimed_by = NULL, claim_until = NULL, token_sealed = v.column5
             FROM ({}) AS v
             WHERE fetch_pairs.appid = v.column1 AND fetch_pairs.user_id = v.column2 AND fetch_pairs.version = v.column6
             RETURNING appid, user_id",
            values_rows::<B>(commits.len(), 6)
        );
        let mut query = Self::grouped_query(&sql, commits.len());
        for c in commits {
            let r = &c.record;
            query = query
                .bind(&r.appid)
                .bind(&r.user_id)
                .bind(&r.state)
                .bind(r.next_wake_at)
                .bind(&r.token_sealed)
                .bind(c.expected_version);
        }
        let won: std::collections::HashSet<(String, String)> = query
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let winners: Vec<&PairCommit> = commits
            .iter()
            .copied()
            .filter(|c| won.contains(&(c.record.appid.clone(), c.record.user_id.clone())))
            .collect();

        // Caches: upserted together; one left with neither data nor ETag is deleted.
        let (cleared, cached): (Vec<&PairCommit>, Vec<&PairCommit>) = winners
            .iter()
            .copied()
            .filter(|c| c.write_cache)
            .partition(|c| c.record.cached_data.is_none() && c.record.etag.is_none());
        for c in cleared {
            Self::write_cache_row(tx, &c.record).await?;
        }
        let cached: Vec<&PairRecord> = cached.iter().map(|c| &c.record).collect();
        Self::write_cache_rows(tx, &cached).await?;

        // Log entries, then each pair's log cut back to its last FETCH_LOG_KEPT.
        let logged: Vec<(&PairCommit, &FetchLogEntry)> = winners
            .iter()
            .filter_map(|c| c.log.as_ref().map(|log| (*c, log)))
            .collect();
        if !logged.is_empty() {
            let sql = format!(
                "INSERT INTO fetch_log (appid, user_id, at, gray, outcome, http_status, bytes, duration_ms) {}",
                values_rows::<B>(logged.len(), 8)
            );
            let mut query = Self::grouped_query(&sql, logged.len());
            for (c, log) in &logged {
                query = query
                    .bind(&c.record.appid)
                    .bind(&c.record.user_id)
                    .bind(log.at)
                    .bind(log.gray as i64)
                    .bind(&log.outcome)
                    .bind(log.http_status)
                    .bind(log.bytes)
                    .bind(log.duration_ms);
            }
            query.execute(&mut *tx).await?;
            let sql = format!(
                "DELETE FROM fetch_log WHERE (appid, user_id) IN ({}) AND id <= (SELECT k.id FROM fetch_log k WHERE k.appid = fetch_log.appid AND k.user_id = fetch_log.user_id ORDER BY k.id DESC LIMIT 1 OFFSET {})",
                values_rows::<B>(logged.len(), 2),
                placeholders::<B>(1, 2 * logged.len() + 1)
            );
            let mut query = Self::grouped_query(&sql, logged.len());
            for (c, _) in &logged {
                query = query.bind(&c.record.appid).bind(&c.record.user_id);
            }
            query.bind(FETCH_LOG_KEPT).execute(&mut *tx).await?;
            for (c, log) in &logged {
                let appid = &c.record.appid;
                tally.add(
                    StatCounters::Fetches,
                    appid,
                    log.at,
                    &log.outcome,
                    latency_bucket(log.duration_ms),
                );
                if let Some(lateness) = c.lateness_ms {
                    tally.add(
                        StatCounters::Fetches,
                        appid,
                        log.at,
                        LATENESS_STAT,
                        lateness_bucket(lateness),
                    );
                }
            }
        }

        let announced = Self::announce_to_devices(tx, &winners).await?;
        Ok(commits
            .iter()
            .map(|c| {
                let key = (c.record.appid.clone(), c.record.user_id.clone());
                match announced.get(&key) {
                    Some(devices) => Ok(devices.clone()),
                    None if won.contains(&key) => Ok(Vec::new()),
                    None => Err(StoreError::Conflict),
                }
            })
            .collect())
    }

    /// Upserts the cache rows of `records` (each holding data or an ETag) with one
    /// statement.
    async fn write_cache_rows(tx: &mut Conn<B>, records: &[&PairRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO fetch_cache (appid, user_id, data, cached_at, cached_sent_at, etag, etag_url) {}
             ON CONFLICT (appid, user_id) DO UPDATE SET data = excluded.data, cached_at = excluded.cached_at, cached_sent_at = excluded.cached_sent_at, etag = excluded.etag, etag_url = excluded.etag_url",
            values_rows::<B>(records.len(), 7)
        );
        let mut query = Self::grouped_query(&sql, records.len());
        for r in records {
            query = query
                .bind(&r.appid)
                .bind(&r.user_id)
                .bind(&r.cached_data)
                .bind(r.cached_at)
                .bind(r.cached_sent_at)
                .bind(&r.etag)
                .bind(&r.etag_url);
        }
        query.execute(&mut *tx).await?;
        Ok(())
    }

    /// Writes the announcements of `winners` to every device of their users (the latest
    /// `fetched_data` per device and app replaces the one before); answers the devices
    /// told, by pair.
    async fn announce_to_devices(
        tx: &mut Conn<B>,
        winners: &[&PairCommit],
    ) -> StoreResult<std::collections::HashMap<(String, String), Vec<String>>> {
        let mut told = std::collections::HashMap::new();
        let announcing: Vec<(&PairCommit, &PairAnnouncement)> = winners
            .iter()
            .filter_map(|c| c.announce.as_ref().map(|a| (*c, a)))
            .collect();
        if announcing.is_empty() {
            return Ok(told);
        }
        let sql = format!(
            "SELECT user_id, device_id FROM devices WHERE user_id IN ({}) ORDER BY user_id, device_id",
            placeholders::<B>(announcing.len(), 1)
        );
        let mut query = Self::grouped_query(&sql, announcing.len());
        for (c, _) in &announcing {
            query = query.bind(&c.record.user_id);
        }
        let mut devices_of: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for row in query.fetch_all(&mut *tx).await? {
            devices_of.entry(row.get(0)).or_default().push(row.get(1));
        }
        let events: Vec<(&str, &str, &PairAnnouncement)> = announcing
            .iter()
            .flat_map(|(c, announce)| {
                let devices = devices_of
                    .get(&c.record.user_id)
                    .map_or(&[][..], Vec::as_slice);
                devices
                    .iter()
                    .map(move |d| (d.as_str(), c.record.appid.as_str(), *announce))
            })
            .collect();
        for chunk in events.chunks(GROUPED_PAIRS_PER_STATEMENT) {
            // Each `fetched_data` carries the whole cached body: only the latest counts.
            let sql = format!(
                "DELETE FROM events WHERE (device_id, appid) IN ({})",
                values_rows::<B>(chunk.len(), 2)
            );
            let mut query = Self::grouped_query(&sql, chunk.len());
            for (device_id, appid, _) in chunk {
                query = query.bind(*device_id).bind(*appid);
            }
            query.execute(&mut *tx).await?;
            let sql = format!(
                "INSERT INTO events (device_id, appid, kind, payload, at) {}",
                values_rows::<B>(chunk.len(), 5)
            );
            let mut query = Self::grouped_query(&sql, chunk.len());
            for (device_id, appid, announce) in chunk {
                query = query
                    .bind(*device_id)
                    .bind(*appid)
                    .bind(&announce.kind)
                    .bind(&announce.payload)
                    .bind(announce.at);
            }
            query.execute(&mut *tx).await?;
        }
        for (c, _) in &announcing {
            if let Some(devices) = devices_of.get(&c.record.user_id) {
                told.insert(
                    (c.record.appid.clone(), c.record.user_id.clone()),
                    devices.clone(),
                );
            }
        }
        Ok(told)
    }

    /// One device's commit within a group's transaction; `Conflict`, having written
    /// nothing, when its version moved.
    async fn write_device(
        tx: &mut Conn<B>,
        commit: &DeviceCommit,
        tally: &mut StatTally,
    ) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE devices SET state = $1, version = version + 1, next_wake_at = $2, claimed_by = NULL, claim_until = NULL WHERE device_id = $3 AND version = $4",
        )
        .bind(&commit.state)
        .bind(commit.next_wake_at)
        .bind(&commit.device_id)
        .bind(commit.expected_version)
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&updated) == 0 {
            return Err(StoreError::Conflict);
        }
        for form in &commit.add_forms {
            sqlx::query(&format!(
                "INSERT INTO forms ({FORM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
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
                sqlx::query(&format!("DELETE FROM {table} WHERE form_id = $1"))
                    .bind(form_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE deliveries SET state = 'failed', next_attempt_at = NULL WHERE form_id = $1 AND state = 'pending'")
                .bind(form_id)
                .execute(&mut *tx)
                .await?;
        }
        for d in &commit.deliveries {
            sqlx::query(
                "INSERT INTO deliveries (delivery_id, form_id, device_id, provider, body, trigger, attempts, next_attempt_at, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, 'pending', $8)",
            )
            .bind(&d.delivery_id)
            .bind(&d.form_id)
            .bind(&d.device_id)
            .bind(&d.provider)
            .bind(&d.body)
            .bind(&d.trigger)
            .bind(d.next_attempt_at)
            .bind(d.created_at)
            .execute(&mut *tx)
            .await?;
            tally.add(
                StatCounters::Providers,
                &d.provider,
                d.created_at,
                &format!("trigger:{}", d.trigger),
                0,
            );
        }
        for event in &commit.events {
            Self::insert_event(tx, event).await?;
        }
        for note in &commit.decisions {
            sqlx::query(
                "INSERT INTO form_decisions (form_id, at, decision, rule) VALUES ($1, $2, $3, $4)",
            )
            .bind(&note.form_id)
            .bind(note.at)
            .bind(&note.decision)
            .bind(&note.rule)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM form_decisions WHERE form_id = $1 AND id <= (SELECT id FROM form_decisions WHERE form_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&note.form_id)
            .bind(DECISIONS_KEPT_PER_FORM)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Inserts new pair rows (and the caches of those that have one) within `tx`, many
    /// per statement; a pair that exists already is left as it is, and a pair listed
    /// twice is inserted as first listed. Answers how many were inserted.
    async fn insert_pair_rows(tx: &mut Conn<B>, pairs: &[PairRecord]) -> StoreResult<u64> {
        let mut inserted = 0;
        for chunk in pairs.chunks(GROUPED_PAIRS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO fetch_pairs ({PAIR_COLUMNS}) {} ON CONFLICT (appid, user_id) DO NOTHING RETURNING appid, user_id",
                values_rows::<B>(chunk.len(), 6)
            );
            let mut query = Self::grouped_query(&sql, chunk.len());
            for r in chunk {
                query = query
                    .bind(&r.appid)
                    .bind(&r.user_id)
                    .bind(&r.state)
                    .bind(1_i64)
                    .bind(r.next_wake_at)
                    .bind(&r.token_sealed);
            }
            let mut new: std::collections::HashSet<(String, String)> = query
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            inserted += new.len() as u64;
            let cached: Vec<&PairRecord> = chunk
                .iter()
                .filter(|r| new.remove(&(r.appid.clone(), r.user_id.clone())))
                .filter(|r| r.cached_data.is_some() || r.etag.is_some())
                .collect();
            Self::write_cache_rows(tx, &cached).await?;
        }
        Ok(inserted)
    }

    /// Writes a pair's cache row as `r` holds it, within `tx` (none left when it holds
    /// neither data nor an ETag).
    async fn write_cache_row(tx: &mut Conn<B>, r: &PairRecord) -> StoreResult<()> {
        if r.cached_data.is_none() && r.etag.is_none() {
            sqlx::query("DELETE FROM fetch_cache WHERE appid = $1 AND user_id = $2")
                .bind(&r.appid)
                .bind(&r.user_id)
                .execute(&mut *tx)
                .await?;
            return Ok(());
        }
        Self::write_cache_rows(tx, &[r]).await
    }

    /// One pair's commit within a group's transaction; `Conflict`, having written
    /// nothing, when its version moved (or, for a new pair, when it exists already).
    async fn write_pair(
        tx: &mut Conn<B>,
        commit: &PairCommit,
        tally: &mut StatTally,
    ) -> StoreResult<Vec<String>> {
        let r = &commit.record;
        if commit.expected_version == 0 {
            // A pair inserted meanwhile by another writer is a lost race, not an error:
            // nothing is written, so the rest of the group's transaction stands.
            if Self::insert_pair_rows(tx, std::slice::from_ref(r)).await? == 0 {
                return Err(StoreError::Conflict);
            }
        } else {
            let updated = sqlx::query(
                "UPDATE fetch_pairs SET state = $1, version = version + 1, next_wake_at = $2, claimed_by = NULL, claim_until = NULL, token_sealed = $3
                 WHERE appid = $4 AND user_id = $5 AND version = $6",
            )
            .bind(&r.state)
            .bind(r.next_wake_at)
            .bind(&r.token_sealed)
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(commit.expected_version)
            .execute(&mut *tx)
            .await?;
            if B::rows_affected(&updated) == 0 {
                return Err(StoreError::Conflict);
            }
            if commit.write_cache {
                Self::write_cache_row(tx, r).await?;
            }
        }
        if let Some(log) = &commit.log {
            sqlx::query("INSERT INTO fetch_log (appid, user_id, at, gray, outcome, http_status, bytes, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
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
                "DELETE FROM fetch_log WHERE appid = $1 AND user_id = $2 AND id <= (SELECT id FROM fetch_log WHERE appid = $1 AND user_id = $2 ORDER BY id DESC LIMIT 1 OFFSET $3)",
            )
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(FETCH_LOG_KEPT)
            .execute(&mut *tx)
            .await?;
            let bucket = latency_bucket(log.duration_ms);
            tally.add(
                StatCounters::Fetches,
                &r.appid,
                log.at,
                &log.outcome,
                bucket,
            );
            if let Some(lateness) = commit.lateness_ms {
                tally.add(
                    StatCounters::Fetches,
                    &r.appid,
                    log.at,
                    LATENESS_STAT,
                    lateness_bucket(lateness),
                );
            }
        }
        let mut announced = Vec::new();
        if let Some(announce) = &commit.announce {
            let devices =
                sqlx::query("SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id")
                    .bind(&r.user_id)
                    .fetch_all(&mut *tx)
                    .await?;
            for row in &devices {
                let event = NewEvent {
                    device_id: row.get(0),
                    form_id: None,
                    appid: Some(r.appid.clone()),
                    kind: announce.kind.clone(),
                    payload: announce.payload.clone(),
                    at: announce.at,
                };
                Self::insert_event(tx, &event).await?;
                announced.push(event.device_id);
            }
        }
        Ok(announced)
    }

    fn stat_rows(rows: &[DbRow<B>]) -> Vec<StatRow> {
        rows.iter()
            .map(|row| StatRow {
                hour: row.get(0),
                what: row.get(1),
                bucket: row.get(2),
                count: row.get(3),
            })
            .collect()
    }

    /// Deletes a device and everything hanging from it, within `tx`; `NotFound` when
    /// there is no such device.
    async fn delete_device_rows(tx: &mut Conn<B>, device_id: &str) -> StoreResult<()> {
        for statement in [
            "DELETE FROM api_keys WHERE kind = 'device' AND principal = $1",
            "DELETE FROM form_data WHERE form_id IN (SELECT form_id FROM forms WHERE device_id = $1)",
            "DELETE FROM form_decisions WHERE form_id IN (SELECT form_id FROM forms WHERE device_id = $1)",
            "DELETE FROM deliveries WHERE device_id = $1",
            "DELETE FROM events WHERE device_id = $1",
            "DELETE FROM forms WHERE device_id = $1",
        ] {
            sqlx::query(statement)
                .bind(device_id)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM devices WHERE device_id = $1")
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        if B::rows_affected(&deleted) == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Stores a form's data with the event that announces it, or, without one, marks it
    /// to be announced when the form is shown.
    async fn store_form_data(
        tx: &mut Conn<B>,
        data: &FormData,
        event: Option<&NewEvent>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO form_data (form_id, data, updated_at, trigger, announce_on_show) VALUES ($1, $2, $3, $4, $5)
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
            Self::insert_event(tx, event).await?;
        }
        Ok(())
    }

    /// Runs one statement that must change a row; none changed is `NotFound`.
    async fn update_one(&self, query: SqlQuery<'_, B>) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        let done = query.execute(&mut *tx).await?;
        if B::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await
    }

    /// Claims the due rows of one subject table for `node` until `lease_until`.
    async fn claim_table(
        tx: &mut Conn<B>,
        table: SubjectTable,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<(SubjectKey, i64)>> {
        let (name, key, columns) = (table.name(), table.key(), table.key_columns());
        let sql = format!(
            "UPDATE {name} SET claimed_by = $1, claim_until = $2
             WHERE {key} IN (SELECT {columns} FROM {name}
                 WHERE next_wake_at IS NOT NULL AND next_wake_at <= $3 AND (claim_until IS NULL OR claim_until < $3)
                 ORDER BY next_wake_at LIMIT $4{lock})
             RETURNING {columns}, next_wake_at",
            lock = B::CLAIM_LOCK,
        );
        let rows = sqlx::query(&sql)
            .bind(node)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        Ok(rows
            .iter()
            .map(|row| Self::wakeup_from_row(row, table))
            .collect())
    }
}

/// The two tables of subjects the engine wakes.
#[derive(Clone, Copy)]
enum SubjectTable {
    Devices,
    Pairs,
}

impl SubjectTable {
    fn name(self) -> &'static str {
        match self {
            SubjectTable::Devices => "devices",
            SubjectTable::Pairs => "fetch_pairs",
        }
    }
    /// The primary key as the left side of `IN`.
    fn key(self) -> &'static str {
        match self {
            SubjectTable::Devices => "device_id",
            SubjectTable::Pairs => "(appid, user_id)",
        }
    }
    fn key_columns(self) -> &'static str {
        match self {
            SubjectTable::Devices => "device_id",
            SubjectTable::Pairs => "appid, user_id",
        }
    }
}

type SqlQuery<'q, B> =
    sqlx::query::Query<'q, <B as Backend>::Db, <<B as Backend>::Db as Database>::Arguments<'q>>;

#[async_trait]
impl<B: Backend> Store for SqlStore<B>
where
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'a> &'a str: ColumnIndex<DbRow<B>> + Encode<'a, B::Db> + Type<B::Db>,
    usize: ColumnIndex<DbRow<B>>,
    for<'a> &'a [u8]: Encode<'a, B::Db> + Type<B::Db>,
    i64: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    String: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    Vec<u8>: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    Option<i64>: for<'q> Encode<'q, B::Db>,
    Option<String>: for<'q> Encode<'q, B::Db>,
    Option<Vec<u8>>: for<'q> Encode<'q, B::Db>,
    B::Db: sqlx::database::HasStatementCache,
{
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(self.backend.reader())
            .await?;
        self.backend.check_writes().await
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        Self::insert_key_row(&mut tx, key).await?;
        tx.commit().await
    }

    async fn find_key(&self, key_hash: &[u8]) -> StoreResult<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT key_hash, kind, principal, created_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(self.backend.reader())
        .await?;
        Ok(row.and_then(|row| {
            Some(KeyRecord {
                key_hash: row.get("key_hash"),
                kind: KeyKind::parse(&row.get::<String, _>("kind"))?,
                principal: row.get("principal"),
                created_at: row.get("created_at"),
            })
        }))
    }

    async fn rotate_key(&self, new_key: &KeyRecord, now: i64) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE kind = $2 AND principal = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(new_key.kind.as_str())
            .bind(&new_key.principal)
            .execute(&mut *tx)
            .await?;
        // A key of this principal that was revoked comes back: an operator key given by
        // REFRESHD_ADMIN_KEY once, then by its file again, is the same key.
        let done = sqlx::query(
            "INSERT INTO api_keys (key_hash, kind, principal, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL
             WHERE api_keys.kind = excluded.kind AND api_keys.principal = excluded.principal",
        )
        .bind(&new_key.key_hash)
        .bind(new_key.kind.as_str())
        .bind(&new_key.principal)
        .bind(new_key.created_at)
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&done) == 0 {
            return Err(StoreError::Exists);
        }
        tx.commit().await
    }

    async fn insert_app(
        &self,
        appid: &str,
        app: &str,
        signing: Option<&SigningSecrets>,
        key: Option<&KeyRecord>,
    ) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        sqlx::query("INSERT INTO apps (appid, app, signing_secret) VALUES ($1, $2, $3)")
            .bind(appid)
            .bind(app)
            .bind(signing.map(|s| s.current.clone()))
            .execute(&mut *tx)
            .await?;
        if let Some(key) = key {
            Self::insert_key_row(&mut tx, key).await?;
        }
        tx.commit().await
    }

    async fn get_app(&self, appid: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT app FROM apps WHERE appid = $1")
            .bind(appid)
            .fetch_optional(self.backend.reader())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_app(&self, appid: &str, app: &str) -> StoreResult<()> {
        self.update_one(
            sqlx::query("UPDATE apps SET app = $1 WHERE appid = $2")
                .bind(app)
                .bind(appid),
        )
        .await
    }

    async fn app_signing(&self, appid: &str) -> StoreResult<Option<SigningSecrets>> {
        let row = sqlx::query("SELECT signing_secret, previous_signing_secret, previous_secret_until FROM apps WHERE appid = $1")
            .bind(appid)
            .fetch_optional(self.backend.reader())
            .await?
            .ok_or(StoreError::NotFound)?;
        let current: Option<String> = row.get(0);
        Ok(current.map(|current| SigningSecrets {
            current,
            previous: row.get(1),
            previous_until: row.get(2),
        }))
    }

    async fn set_app_signing(&self, appid: &str, signing: &SigningSecrets) -> StoreResult<()> {
        self.update_one(
            sqlx::query("UPDATE apps SET signing_secret = $1, previous_signing_secret = $2, previous_secret_until = $3 WHERE appid = $4")
                .bind(&signing.current)
                .bind(&signing.previous)
                .bind(signing.previous_until)
                .bind(appid),
        )
        .await
    }

    async fn insert_provider(
        &self,
        provider: &NewProvider,
        key: Option<&KeyRecord>,
    ) -> StoreResult<ProviderRecord> {
        let mut tx = self.backend.begin().await?;
        let num: i64 = sqlx::query("SELECT COALESCE(MAX(provider_num), 0) + 1 FROM providers")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        sqlx::query(
            "INSERT INTO providers (provider, provider_num, refresh_url, system_app, api_version, signing_secret) VALUES ($1, $2, $3, $4, $5, $6)",
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
            Self::insert_key_row(&mut tx, key).await?;
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
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE provider = $1"
        ))
        .bind(provider)
        .fetch_optional(self.backend.reader())
        .await?;
        Ok(row.as_ref().map(Self::provider_from_row))
    }

    async fn update_provider(&self, p: &ProviderRecord) -> StoreResult<()> {
        self.update_one(
            sqlx::query(
                "UPDATE providers SET refresh_url = $1, system_app = $2, api_version = $3, market_update_duration = $4, signing_secret = $5, form_config = $6, previous_signing_secret = $7, previous_secret_until = $8 WHERE provider = $9",
            )
            .bind(&p.refresh_url)
            .bind(p.system_app as i64)
            .bind(p.api_version)
            .bind(p.market_update_duration)
            .bind(&p.signing_secret)
            .bind(&p.form_config)
            .bind(&p.previous_signing_secret)
            .bind(p.previous_secret_until)
            .bind(&p.provider),
        )
        .await
    }

    async fn provider_by_num(&self, provider_num: i64) -> StoreResult<Option<ProviderRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE provider_num = $1"
        ))
        .bind(provider_num)
        .fetch_optional(self.backend.reader())
        .await?;
        Ok(row.as_ref().map(Self::provider_from_row))
    }

    async fn insert_device(
        &self,
        device: &DeviceRecord,
        next_wake_at: Option<i64>,
        key: Option<&KeyRecord>,
        events: &[NewEvent],
    ) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        sqlx::query("INSERT INTO devices (device_id, user_id, state, version, next_wake_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&device.device_id)
            .bind(&device.user_id)
            .bind(&device.state)
            .bind(device.version)
            .bind(next_wake_at)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = key {
            Self::insert_key_row(&mut tx, key).await?;
        }
        for event in events {
            Self::insert_event(&mut tx, event).await?;
        }
        tx.commit().await
    }

    async fn get_device(&self, device_id: &str) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query(
            "SELECT device_id, user_id, state, version FROM devices WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(self.backend.reader())
        .await?;
        Ok(row.map(|row| DeviceRecord {
            device_id: row.get("device_id"),
            user_id: row.get("user_id"),
            state: row.get("state"),
            version: row.get("version"),
        }))
    }

    async fn commit_device(&self, commit: DeviceCommit) -> StoreResult<()> {
        self.writes.write(WriteJob::Device(commit)).await.map(drop)
    }

    async fn get_form(&self, form_id: &str) -> StoreResult<Option<FormRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE form_id = $1"
        ))
        .bind(form_id)
        .fetch_optional(self.backend.reader())
        .await?;
        Ok(row.as_ref().map(Self::form_from_row))
    }

    async fn form_by_num(&self, form_num: i64) -> StoreResult<Option<FormRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE form_num = $1"
        ))
        .bind(form_num)
        .fetch_optional(self.backend.reader())
        .await?;
        Ok(row.as_ref().map(Self::form_from_row))
    }

    async fn forms_of_provider(&self, provider: &str) -> StoreResult<Vec<FormRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE provider = $1 ORDER BY form_num"
        ))
        .bind(provider)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows.iter().map(Self::form_from_row).collect())
    }

    async fn forms_of_device(&self, device_id: &str) -> StoreResult<Vec<FormRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE device_id = $1 ORDER BY form_num"
        ))
        .bind(device_id)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows.iter().map(Self::form_from_row).collect())
    }

    async fn next_form_num(&self) -> StoreResult<i64> {
        // Never reused: a reused number would make a new form inherit an old one's
        // identity in the rules (F22).
        let mut tx = self.backend.begin().await?;
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
        let row = sqlx::query(&format!(
            "SELECT {FORM_DATA_COLUMNS} FROM form_data WHERE form_id = $1"
        ))
        .bind(form_id)
        .fetch_optional(self.backend.reader())
        .await?;
        Ok(row.as_ref().map(Self::form_data_from_row))
    }

    async fn form_data_of_device(&self, device_id: &str) -> StoreResult<Vec<DeviceFormData>> {
        let rows = sqlx::query(
            "SELECT d.form_id, d.data, d.updated_at, d.trigger, d.announce_on_show FROM form_data d JOIN forms f ON f.form_id = d.form_id WHERE f.device_id = $1 ORDER BY f.form_num",
        )
        .bind(device_id)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows
            .iter()
            .map(|row| DeviceFormData {
                data: Self::form_data_from_row(row),
                announce_pending: row.get::<i64, _>("announce_on_show") != 0,
            })
            .collect())
    }

    async fn put_form_data(&self, data: &FormData, event: Option<&NewEvent>) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        Self::store_form_data(&mut tx, data, event).await?;
        tx.commit().await
    }

    async fn announce_pending_data(
        &self,
        form_id: &str,
        event_for: &EventBuilder,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {FORM_DATA_COLUMNS} FROM form_data WHERE form_id = $1 AND announce_on_show = 1"
        ))
        .bind(form_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // Committed although nothing changed: a transaction that ends any other way
            // counts as a failed write.
            tx.commit().await?;
            return Ok(false);
        };
        let data = Self::form_data_from_row(&row);
        Self::insert_event(&mut tx, &event_for(&data)).await?;
        sqlx::query("UPDATE form_data SET announce_on_show = 0 WHERE form_id = $1")
            .bind(form_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn recent_decisions(&self, form_id: &str, limit: i64) -> StoreResult<Vec<DecisionNote>> {
        let rows = sqlx::query("SELECT form_id, at, decision, rule FROM form_decisions WHERE form_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(form_id)
            .bind(limit)
            .fetch_all(self.backend.reader())
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
        let mut tx = self.backend.begin().await?;
        let rows = sqlx::query(&format!(
            "UPDATE deliveries SET next_attempt_at = $1
             WHERE delivery_id IN (SELECT delivery_id FROM deliveries
                 WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $2 AND state = 'pending'
                 ORDER BY next_attempt_at LIMIT $3{lock})
             RETURNING {DELIVERY_COLUMNS}",
            lock = B::CLAIM_LOCK,
        ))
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claimed: Vec<DeliveryRecord> = rows.iter().map(Self::delivery_from_row).collect();
        claimed.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        Ok(claimed)
    }

    async fn defer_deliveries(
        &self,
        delivery_ids: &[String],
        claimed_until: i64,
        at: i64,
    ) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        for delivery_id in delivery_ids {
            sqlx::query(
                "UPDATE deliveries SET next_attempt_at = $1 WHERE delivery_id = $2 AND state = 'pending' AND next_attempt_at = $3",
            )
            .bind(at)
            .bind(delivery_id)
            .bind(claimed_until)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    async fn finish_delivery(
        &self,
        delivery_id: &str,
        finish: &DeliveryFinish,
        timing: &AttemptTiming,
    ) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        let (state, attempts, next): (&str, i64, Option<i64>) = match finish {
            DeliveryFinish::Done { attempts, .. } => ("done", *attempts, None),
            DeliveryFinish::Retry {
                attempts,
                next_attempt_at,
            } => ("pending", *attempts, Some(*next_attempt_at)),
            DeliveryFinish::GiveUp { attempts } => ("failed", *attempts, None),
        };
        let updated = sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3 WHERE delivery_id = $4 AND state = 'pending'",
        )
        .bind(state)
        .bind(attempts)
        .bind(next)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&updated) == 0 {
            // Finished already (or its form was removed): nothing to apply twice.
            return tx.commit().await;
        }
        let outcome = match finish {
            DeliveryFinish::Done { .. } => "done",
            DeliveryFinish::Retry { .. } => "retry",
            DeliveryFinish::GiveUp { .. } => "failed",
        };
        sqlx::query(
            "INSERT INTO provider_stats (provider, hour, what, bucket, count)
             SELECT provider, $2, $3, $4, 1 FROM deliveries WHERE delivery_id = $1
             ON CONFLICT (provider, hour, what, bucket) DO UPDATE SET count = provider_stats.count + 1",
        )
        .bind(delivery_id)
        .bind(hour_of(timing.at))
        .bind(outcome)
        .bind(latency_bucket(timing.duration_ms))
        .execute(&mut *tx)
        .await?;
        if let DeliveryFinish::Done {
            data: Some((data, event)),
            ..
        } = finish
        {
            let form_exists = sqlx::query("SELECT 1 FROM forms WHERE form_id = $1")
                .bind(&data.form_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if form_exists {
                Self::store_form_data(&mut tx, data, event.as_ref()).await?;
            }
        }
        tx.commit().await
    }

    async fn events_after(
        &self,
        device_id: &str,
        after_event_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT event_id, kind, payload, at FROM events WHERE device_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3")
            .bind(device_id)
            .bind(after_event_id)
            .bind(limit)
            .fetch_all(self.backend.reader())
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

    async fn latest_events(&self, device_id: &str) -> StoreResult<Vec<EventRecord>> {
        // One group per form and per app; an event about neither (none are written
        // now) is a group of its own.
        let rows = sqlx::query(
            "SELECT event_id, kind, payload, at FROM events WHERE event_id IN (
                 SELECT MAX(event_id) FROM events WHERE device_id = $1
                 GROUP BY COALESCE(form_id, appid, CAST(event_id AS TEXT)))
             ORDER BY event_id",
        )
        .bind(device_id)
        .fetch_all(self.backend.reader())
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

    async fn event_exists(&self, device_id: &str, event_id: i64) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM events WHERE device_id = $1 AND event_id = $2")
            .bind(device_id)
            .bind(event_id)
            .fetch_optional(self.backend.reader())
            .await?;
        Ok(row.is_some())
    }

    async fn event_subjects_after(
        &self,
        device_id: &str,
        after_event_id: i64,
    ) -> StoreResult<Vec<EventSubject>> {
        let rows = sqlx::query("SELECT event_id, kind, form_id, appid FROM events WHERE device_id = $1 AND event_id > $2 ORDER BY event_id")
            .bind(device_id)
            .bind(after_event_id)
            .fetch_all(self.backend.reader())
            .await?;
        Ok(rows
            .iter()
            .map(|row| EventSubject {
                event_id: row.get("event_id"),
                kind: row.get("kind"),
                form_id: row.get("form_id"),
                appid: row.get("appid"),
            })
            .collect())
    }

    async fn last_event_id(&self, device_id: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(event_id), 0) FROM events WHERE device_id = $1")
            .bind(device_id)
            .fetch_one(self.backend.reader())
            .await?;
        Ok(row.get(0))
    }

    async fn pairs_of_user(&self, user_id: &str) -> StoreResult<Vec<PairRecord>> {
        let rows = sqlx::query(&format!(
            "{PAIR_WITH_CACHE} WHERE p.user_id = $1 ORDER BY p.appid"
        ))
        .bind(user_id)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows.iter().map(Self::pair_from_row).collect())
    }

    async fn get_pair(&self, appid: &str, user_id: &str) -> StoreResult<Option<PairRecord>> {
        let row = sqlx::query(&format!(
            "{PAIR_WITH_CACHE} WHERE p.appid = $1 AND p.user_id = $2"
        ))
        .bind(appid)
        .bind(user_id)
        .fetch_optional(self.backend.reader())
        .await?;
        Ok(row.as_ref().map(Self::pair_from_row))
    }

    async fn get_pair_state(&self, appid: &str, user_id: &str) -> StoreResult<Option<PairRecord>> {
        Ok(self.get_pair_states(appid, &[user_id]).await?.pop())
    }

    async fn get_pair_states(
        &self,
        appid: &str,
        user_ids: &[&str],
    ) -> StoreResult<Vec<PairRecord>> {
        let mut records = Vec::with_capacity(user_ids.len());
        for chunk in user_ids.chunks(GROUPED_PAIRS_PER_STATEMENT) {
            let sql = format!(
                "SELECT p.appid, p.user_id, p.state, p.version, p.next_wake_at, p.token_sealed, c.cached_at, c.cached_sent_at, c.etag, c.etag_url
                 FROM fetch_pairs p LEFT JOIN fetch_cache c ON c.appid = p.appid AND c.user_id = p.user_id
                 WHERE p.appid = {} AND p.user_id IN ({})",
                placeholders::<B>(1, 1),
                placeholders::<B>(chunk.len(), 2)
            );
            let mut query = Self::grouped_query(&sql, chunk.len()).bind(appid);
            for user_id in chunk {
                query = query.bind(*user_id);
            }
            let rows = query.fetch_all(self.backend.reader()).await?;
            records.extend(rows.iter().map(|row| PairRecord {
                appid: row.get("appid"),
                user_id: row.get("user_id"),
                state: row.get("state"),
                version: row.get("version"),
                next_wake_at: row.get("next_wake_at"),
                token_sealed: row.get("token_sealed"),
                cached_data: None,
                cached_at: row.get("cached_at"),
                cached_sent_at: row.get("cached_sent_at"),
                etag: row.get("etag"),
                etag_url: row.get("etag_url"),
            }));
        }
        Ok(records)
    }

    async fn commit_pair(&self, commit: PairCommit) -> StoreResult<Vec<String>> {
        self.writes.write(WriteJob::Pair(commit)).await
    }

    async fn insert_pairs(&self, pairs: &[PairRecord]) -> StoreResult<u64> {
        let mut tx = self.backend.begin().await?;
        let inserted = Self::insert_pair_rows(&mut tx, pairs).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn fetch_log(
        &self,
        appid: &str,
        user_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<FetchLogEntry>> {
        let rows = sqlx::query("SELECT at, gray, outcome, http_status, bytes, duration_ms FROM fetch_log WHERE appid = $1 AND user_id = $2 ORDER BY at DESC, id DESC LIMIT $3")
            .bind(appid)
            .bind(user_id)
            .bind(limit)
            .fetch_all(self.backend.reader())
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
        // The claim's select and update cannot interleave with another node's: SQLite
        // has one writer connection, PostgreSQL passes over rows another node is
        // claiming right now (`CLAIM_LOCK`), so no node waits for another.
        let mut tx = self.backend.begin().await?;
        let mut claimed = Vec::new();
        for table in [SubjectTable::Devices, SubjectTable::Pairs] {
            claimed.extend(Self::claim_table(&mut tx, table, node, now, lease_until, limit).await?);
        }
        tx.commit().await?;
        claimed.sort_by_key(|(_, at)| *at);
        Ok(claimed)
    }

    async fn count_due(&self, now: i64) -> StoreResult<i64> {
        // Both counts are range scans on the partial next_wake_at indexes.
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM devices WHERE next_wake_at IS NOT NULL AND next_wake_at <= $1)
                  + (SELECT COUNT(*) FROM fetch_pairs WHERE next_wake_at IS NOT NULL AND next_wake_at <= $1)",
        )
        .bind(now)
        .fetch_one(self.backend.reader())
        .await?;
        Ok(row.get(0))
    }

    async fn earliest_wake_at(&self, now: i64) -> StoreResult<Option<i64>> {
        // Each walks its partial next_wake_at index from the start and stops at the
        // first row not claimed now: claimed rows are few (a node's work in flight).
        let mut earliest: Option<i64> = None;
        for table in [SubjectTable::Devices, SubjectTable::Pairs] {
            let sql = format!(
                "SELECT next_wake_at FROM {} WHERE next_wake_at IS NOT NULL AND (claim_until IS NULL OR claim_until < $1) ORDER BY next_wake_at LIMIT 1",
                table.name()
            );
            let row = sqlx::query(&sql)
                .bind(now)
                .fetch_optional(self.backend.reader())
                .await?;
            if let Some(at) = row.map(|row| row.get::<i64, _>(0)) {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(earliest)
    }

    async fn count_planned(&self) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM devices WHERE next_wake_at IS NOT NULL)
                  + (SELECT COUNT(*) FROM fetch_pairs WHERE next_wake_at IS NOT NULL)",
        )
        .fetch_one(self.backend.reader())
        .await?;
        Ok(row.get(0))
    }

    async fn all_pairs_of_app(&self, appid: &str) -> StoreResult<Vec<PairRecord>> {
        let rows = sqlx::query(&format!("{PAIR_WITH_CACHE} WHERE p.appid = $1"))
            .bind(appid)
            .fetch_all(self.backend.reader())
            .await?;
        Ok(rows.iter().map(Self::pair_from_row).collect())
    }

    async fn release_claims_at_start(&self) -> StoreResult<()> {
        if !B::SINGLE_NODE {
            return Ok(());
        }
        let mut tx = self.backend.begin().await?;
        for table in [SubjectTable::Devices, SubjectTable::Pairs] {
            let table = table.name();
            sqlx::query(&format!("UPDATE {table} SET claimed_by = NULL, claim_until = NULL WHERE claimed_by IS NOT NULL"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    async fn publish_host_event(&self, device_id: &str) -> StoreResult<()> {
        self.backend.publish_host_event(device_id).await
    }

    async fn forward_host_events(
        &self,
        sink: tokio::sync::broadcast::Sender<String>,
    ) -> StoreResult<()> {
        self.backend.forward_host_events(sink).await
    }

    async fn list_apps(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT appid, app FROM apps WHERE appid > $1 ORDER BY appid LIMIT $2")
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(self.backend.reader())
                .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn list_providers(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ProviderRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE provider > $1 ORDER BY provider LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows.iter().map(Self::provider_from_row).collect())
    }

    async fn list_devices(
        &self,
        user_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(
            "SELECT device_id, user_id, state, version FROM devices
             WHERE device_id > $1 AND ($2 = '' OR user_id = $2) ORDER BY device_id LIMIT $3",
        )
        .bind(after.unwrap_or(""))
        .bind(user_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows
            .iter()
            .map(|row| DeviceRecord {
                device_id: row.get("device_id"),
                user_id: row.get("user_id"),
                state: row.get("state"),
                version: row.get("version"),
            })
            .collect())
    }

    async fn placed_form_counts(&self, provider: &str) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT form_name, COUNT(*) FROM forms WHERE provider = $1 GROUP BY form_name ORDER BY form_name",
        )
        .bind(provider)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn delete_app(&self, appid: &str) -> StoreResult<Vec<String>> {
        let mut tx = self.backend.begin().await?;
        let users =
            sqlx::query("SELECT user_id FROM fetch_pairs WHERE appid = $1 ORDER BY user_id")
                .bind(appid)
                .fetch_all(&mut *tx)
                .await?;
        for statement in [
            "DELETE FROM api_keys WHERE kind = 'app' AND principal = $1",
            "DELETE FROM fetch_pairs WHERE appid = $1",
            "DELETE FROM fetch_cache WHERE appid = $1",
            "DELETE FROM fetch_log WHERE appid = $1",
            "DELETE FROM events WHERE appid = $1",
            "DELETE FROM fetch_stats WHERE appid = $1",
        ] {
            sqlx::query(statement).bind(appid).execute(&mut *tx).await?;
        }
        let deleted = sqlx::query("DELETE FROM apps WHERE appid = $1")
            .bind(appid)
            .execute(&mut *tx)
            .await?;
        if B::rows_affected(&deleted) == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(users.iter().map(|row| row.get(0)).collect())
    }

    async fn delete_provider(&self, provider: &str) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        for statement in [
            "DELETE FROM api_keys WHERE kind = 'provider' AND principal = $1",
            "DELETE FROM deliveries WHERE provider = $1",
            "DELETE FROM provider_stats WHERE provider = $1",
        ] {
            sqlx::query(statement)
                .bind(provider)
                .execute(&mut *tx)
                .await?;
        }
        // Refused by the forms' foreign key while any form of the provider is placed.
        let deleted = sqlx::query("DELETE FROM providers WHERE provider = $1")
            .bind(provider)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::NotFound => StoreError::Conflict,
                other => other,
            })?;
        if B::rows_affected(&deleted) == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await
    }

    async fn delete_device(&self, device_id: &str) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        Self::delete_device_rows(&mut tx, device_id).await?;
        tx.commit().await
    }

    async fn erase_user(&self, user_id: &str) -> StoreResult<(Vec<String>, Vec<String>)> {
        let mut tx = self.backend.begin().await?;
        let devices: Vec<String> =
            sqlx::query("SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
        for device_id in &devices {
            Self::delete_device_rows(&mut tx, device_id).await?;
        }
        let apps: Vec<String> =
            sqlx::query("SELECT appid FROM fetch_pairs WHERE user_id = $1 ORDER BY appid")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
        for statement in [
            "DELETE FROM fetch_pairs WHERE user_id = $1",
            "DELETE FROM fetch_cache WHERE user_id = $1",
            "DELETE FROM fetch_log WHERE user_id = $1",
        ] {
            sqlx::query(statement)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.backend.forget_deleted().await?;
        Ok((devices, apps))
    }

    async fn list_cloud_envs(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT env, base_url FROM cloud_envs ORDER BY env")
            .fetch_all(self.backend.reader())
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn get_cloud_env(&self, env: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT base_url FROM cloud_envs WHERE env = $1")
            .bind(env)
            .fetch_optional(self.backend.reader())
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn put_cloud_env(&self, env: &str, base_url: &str) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        sqlx::query(
            "INSERT INTO cloud_envs (env, base_url) VALUES ($1, $2)
             ON CONFLICT (env) DO UPDATE SET base_url = excluded.base_url",
        )
        .bind(env)
        .bind(base_url)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    async fn delete_cloud_env(&self, env: &str) -> StoreResult<()> {
        self.update_one(sqlx::query("DELETE FROM cloud_envs WHERE env = $1").bind(env))
            .await
    }

    async fn fetch_stats(&self, appid: &str, from_hour: i64) -> StoreResult<Vec<StatRow>> {
        let rows = sqlx::query(
            "SELECT hour, outcome, bucket, count FROM fetch_stats WHERE appid = $1 AND hour >= $2",
        )
        .bind(appid)
        .bind(from_hour)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(Self::stat_rows(&rows))
    }

    async fn provider_stats(&self, provider: &str, from_hour: i64) -> StoreResult<Vec<StatRow>> {
        let rows = sqlx::query("SELECT hour, what, bucket, count FROM provider_stats WHERE provider = $1 AND hour >= $2")
            .bind(provider)
            .bind(from_hour)
            .fetch_all(self.backend.reader())
            .await?;
        Ok(Self::stat_rows(&rows))
    }

    async fn pair_counts(&self, appid: &str, now: i64) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN next_wake_at <= $2 THEN 1 ELSE 0 END), 0)
             FROM fetch_pairs WHERE appid = $1 AND token_sealed IS NOT NULL AND next_wake_at IS NOT NULL",
        )
        .bind(appid)
        .bind(now)
        .fetch_one(self.backend.reader())
        .await?;
        Ok((row.get(0), row.get(1)))
    }

    async fn prune(&self, before: i64) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        sqlx::query("DELETE FROM deliveries WHERE state <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM events WHERE at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        for table in ["fetch_stats", "provider_stats"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE hour < $1"))
                .bind(hour_of(before))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

#[cfg(test)]
mod tests;
