//! The database a benchmark runs on: a fresh SQLite file in a temporary directory, or a
//! fresh PostgreSQL database created beside the one named by `--database-url` and
//! dropped afterwards. Users' pairs are loaded through the engine (`import_users`, as
//! `refreshd import` does; untimed setup). Besides refreshd's own store it gives the
//! benchmark a plain sqlx pool on the same database, to count what the engine recorded.

use anyhow::{bail, Context, Result};
use refreshd_engine::import::{ImportedUser, IMPORT_CHUNK};
use refreshd_engine::secrets::{SecretKey, TokenSealer};
use refreshd_engine::{Clock, Engine, EngineSettings, SystemClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_rules::periodic::{App, PeriodicSetting, Source, SubjectType};
use refreshd_store::{PgStore, SqliteStore, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, PgPool, SqlitePool};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

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

    pub fn kind(&self) -> &'static str {
        match self {
            BenchDb::Sqlite { .. } => "sqlite",
            BenchDb::Postgres { .. } => "postgres",
        }
    }

    /// Pairs whose fetch has been recorded (a cache written), and the largest version.
    pub async fn recorded(&self) -> Result<i64> {
        let sql = "SELECT count(*) FROM fetch_cache WHERE cached_at IS NOT NULL";
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

/// Imports `users` through the engine, as `refreshd import` does (`Engine::import_users`),
/// user `i` into app `apps[i % apps.len()]`, in transactions of `IMPORT_CHUNK` users.
pub async fn import_users(engine: &Engine, apps: &[String], users: &[ImportedUser]) -> Result<()> {
    for (k, appid) in apps.iter().enumerate() {
        let mine: Vec<ImportedUser> = users
            .iter()
            .enumerate()
            .filter(|(i, _)| i % apps.len() == k)
            .map(|(_, user)| user.clone())
            .collect();
        for chunk in mine.chunks(IMPORT_CHUNK) {
            engine.import_users(appid, chunk).await?;
        }
    }
    Ok(())
}

/// An engine over `store` on the system clock, allowed to fetch from loopback origins
/// only, with `limits`; and its clock.
pub fn loopback_engine(
    store: Arc<dyn Store>,
    limits: FetchLimits,
) -> Result<(Arc<Engine>, Arc<dyn Clock>)> {
    let policy = DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.1/32"])?);
    let fetcher = Arc::new(Fetcher::new(policy, limits)?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = Engine::new(
        store,
        clock.clone(),
        fetcher,
        TokenSealer::new(&SecretKey([9; 32])),
        EngineSettings::default(),
    );
    Ok((engine, clock))
}

/// Stores an app whose periodic fetch reads `url`.
pub async fn insert_url_app(store: &dyn Store, appid: &str, url: String) -> Result<()> {
    let app = App::new(
        appid,
        SubjectType::Organization,
        Some(PeriodicSetting {
            enabled: true,
            source: Source::Url(url),
            gray: None,
        }),
    )?;
    store
        .insert_app(appid, &serde_json::to_string(&app)?, None, None)
        .await?;
    Ok(())
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
