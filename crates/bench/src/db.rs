//! The database a benchmark runs on: a fresh SQLite file in a temporary directory, or a
//! fresh PostgreSQL database created beside the one named by `--database-url` and
//! dropped afterwards. Besides refreshd's own store it gives the benchmark a plain sqlx
//! pool on the same database, to load users' pairs in bulk (untimed setup) and to count
//! what the engine has recorded.

use anyhow::{bail, Context, Result};
use refreshd_engine::secrets::TokenSealer;
use refreshd_rules::periodic::FetchPair;
use refreshd_rules::Instant;
use refreshd_store::{PgStore, SqliteStore, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, PgPool, SqlitePool};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Rows per transaction when loading pairs (what `refreshd import` commits at once).
const LOAD_CHUNK: usize = 10_000;
/// Rows per INSERT statement (six binds each stays under both databases' limits).
const ROWS_PER_STATEMENT: usize = 1_000;

pub enum BenchDb {
    Sqlite {
        /// The temporary directory to remove afterwards; `None` for an existing file.
        dir: Option<PathBuf>,
        pool: SqlitePool,
    },
    Postgres {
        admin_url: String,
        name: String,
        pool: PgPool,
    },
}

/// One user's pair as the bench loads it.
pub struct NewPair {
    pub appid: String,
    pub user_id: String,
    pub token: String,
    /// When the engine should wake it (ms since the epoch).
    pub wake_at: i64,
}

impl BenchDb {
    /// Opens refreshd's store on a fresh database, and the bench's own pool beside it.
    pub async fn open(
        database_url: Option<&str>,
        label: &str,
    ) -> Result<(BenchDb, Arc<dyn Store>)> {
        let tag = format!("{label}_{}_{}", std::process::id(), fastrand::u32(..));
        match database_url {
            None => {
                let dir = std::env::temp_dir().join(format!("refreshd-bench-{tag}"));
                std::fs::create_dir_all(&dir)?;
                let file = dir.join("bench.sqlite3");
                let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&file).await?);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(
                        SqliteConnectOptions::new()
                            .filename(&file)
                            .busy_timeout(std::time::Duration::from_secs(30)),
                    )
                    .await?;
                Ok((
                    BenchDb::Sqlite {
                        dir: Some(dir),
                        pool,
                    },
                    store,
                ))
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let name = format!("refreshd_bench_{tag}");
                let mut admin = PgConnectOptions::from_str(url)?
                    .disable_statement_logging()
                    .connect()
                    .await
                    .context("connecting to PostgreSQL")?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await?;
                let bench_url = with_database(url, &name)?;
                let store: Arc<dyn Store> = Arc::new(PgStore::open(&bench_url).await?);
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with(
                        PgConnectOptions::from_str(&bench_url)?.disable_statement_logging(),
                    )
                    .await?;
                Ok((
                    BenchDb::Postgres {
                        admin_url: url.to_string(),
                        name,
                        pool,
                    },
                    store,
                ))
            }
            Some(_) => bail!("--database-url must be a postgres:// URL (SQLite is the default)"),
        }
    }

    /// The bench's pool on an existing SQLite file (refreshd's store, already migrated).
    pub async fn existing_sqlite(file: &std::path::Path) -> Result<BenchDb> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(file)
                    .busy_timeout(std::time::Duration::from_secs(30)),
            )
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        Ok(BenchDb::Sqlite { dir: None, pool })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            BenchDb::Sqlite { .. } => "sqlite",
            BenchDb::Postgres { .. } => "postgres",
        }
    }

    /// Loads pairs in bulk, each eligible (token set, launched at `launched`) and planned
    /// to wake at its `wake_at`: the state a token + launch gives, written straight into
    /// the store's table in chunks. Untimed setup; the engine's due-index is built from
    /// the table afterwards (`Engine::load_due_index`).
    pub async fn load_pairs(
        &self,
        sealer: &TokenSealer,
        launched: Instant,
        pairs: &[NewPair],
    ) -> Result<()> {
        let mut state = FetchPair::default();
        state.token_set();
        state.launch(launched);
        let state = serde_json::to_string(&state)?;
        for chunk in pairs.chunks(LOAD_CHUNK) {
            let sealed: Vec<Vec<u8>> = chunk.iter().map(|p| sealer.seal(&p.token)).collect();
            macro_rules! load {
                ($pool:expr, $db:ty) => {{
                    let mut tx = $pool.begin().await?;
                    for (rows, sealed) in chunk
                        .chunks(ROWS_PER_STATEMENT)
                        .zip(sealed.chunks(ROWS_PER_STATEMENT))
                    {
                        let mut insert = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO fetch_pairs (appid, user_id, state, version, next_wake_at, token_sealed) ",
                        );
                        insert.push_values(rows.iter().zip(sealed), |mut row, (pair, sealed)| {
                            row.push_bind(pair.appid.as_str())
                                .push_bind(pair.user_id.as_str())
                                .push_bind(state.as_str())
                                .push_bind(1_i64)
                                .push_bind(pair.wake_at)
                                .push_bind(sealed.as_slice());
                        });
                        insert.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }};
            }
            match self {
                BenchDb::Sqlite { pool, .. } => load!(pool, sqlx::Sqlite),
                BenchDb::Postgres { pool, .. } => load!(pool, sqlx::Postgres),
            }
        }
        Ok(())
    }

    /// Plans pair `u{i}` of `count` to wake at `start + i * spread / count` (ms).
    pub async fn spread_wake_times(&self, start: i64, spread: i64, count: u32) -> Result<()> {
        let sql = "UPDATE fetch_pairs SET next_wake_at = $1 + CAST(substr(user_id, 2) AS BIGINT) * $2 / $3";
        match self {
            BenchDb::Sqlite { pool, .. } => {
                sqlx::query(sql)
                    .bind(start)
                    .bind(spread)
                    .bind(i64::from(count))
                    .execute(pool)
                    .await?;
            }
            BenchDb::Postgres { pool, .. } => {
                sqlx::query(sql)
                    .bind(start)
                    .bind(spread)
                    .bind(i64::from(count))
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Pairs whose fetch has been recorded (a cache written), and the largest version.
    pub async fn recorded(&self) -> Result<i64> {
        let sql = "SELECT count(*) FROM fetch_pairs WHERE cached_at IS NOT NULL";
        Ok(match self {
            BenchDb::Sqlite { pool, .. } => sqlx::query_scalar(sql).fetch_one(pool).await?,
            BenchDb::Postgres { pool, .. } => sqlx::query_scalar(sql).fetch_one(pool).await?,
        })
    }

    /// Removes the database (the store must be closed or dropped first for SQLite's
    /// files to go; PostgreSQL's is dropped with its connections).
    pub async fn remove(self) -> Result<()> {
        match self {
            BenchDb::Sqlite { dir, pool } => {
                pool.close().await;
                if let Some(dir) = dir {
                    std::fs::remove_dir_all(&dir).context("removing the bench store")?;
                }
            }
            BenchDb::Postgres {
                admin_url,
                name,
                pool,
            } => {
                pool.close().await;
                let mut admin = PgConnectOptions::from_str(&admin_url)?
                    .disable_statement_logging()
                    .connect()
                    .await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
            }
        }
        Ok(())
    }
}

/// `url` with its database (the path) replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").context("bad PostgreSQL URL")? + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// Bytes this process has caused to be written to storage so far (Linux
/// `/proc/self/io`), when the kernel reports it.
pub fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The `q`-quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Prints one machine-readable result line for bench/run.sh.
pub fn emit(value: serde_json::Value) {
    println!("RESULT {value}");
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "b").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "b").unwrap(),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "b").unwrap(),
            "postgres://h/b"
        );
    }
}
