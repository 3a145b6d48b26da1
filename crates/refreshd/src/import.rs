//! `refreshd import`: loads users' periodic-fetch pairs from JSON lines into the store
//! (an operator moving a user base to refreshd; benchmarks that need millions of
//! subjects). Each line is checked, turned into the pair the rules would have built
//! from the same launch, token and success (`Engine::import_users`), and written in
//! transactions of `IMPORT_CHUNK` users.

use crate::data_dir::DataDir;
use crate::serve::{open_store, secret_key, StoreSetting};
use anyhow::{Context, Result};
use refreshd_engine::import::{ImportedUser, IMPORT_CHUNK};
use refreshd_engine::secrets::TokenSealer;
use refreshd_engine::{Engine, EngineSettings, SystemClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_rules::Instant;
use serde::Deserialize;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The data directory `serve` uses (its secret.key seals the imported tokens).
    #[arg(long, env = "REFRESHD_DATA_DIR", default_value = "refreshd-data")]
    data_dir: PathBuf,
    /// The store, as for `serve`: a PostgreSQL URL, or a SQLite file path
    /// [default: DATA_DIR/refreshd.sqlite3].
    #[arg(long, env = "REFRESHD_STORE")]
    store: Option<StoreSetting>,
    /// The app the users belong to; it must exist.
    #[arg(long)]
    appid: String,
    /// The per-user spread of the 12-hour schedule, as `serve --fetch-jitter-minutes`.
    #[arg(long, env = "REFRESHD_FETCH_JITTER_MINUTES", default_value_t = 0)]
    fetch_jitter_minutes: u32,
    /// JSON lines, one user each; standard input when absent or `-`.
    file: Option<PathBuf>,
}

/// One line of an import file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    user_id: String,
    #[serde(default)]
    token: Option<String>,
    last_launch: String,
    #[serde(default)]
    last_success: Option<String>,
}

fn instant(text: &str, field: &str) -> Result<Instant> {
    let at: jiff::Timestamp = text
        .parse()
        .with_context(|| format!("{field} must be an RFC 3339 instant, got {text:?}"))?;
    Ok(Instant::from_millis(at.as_millisecond()))
}

fn parse_line(text: &str) -> Result<ImportedUser> {
    let line: Line = serde_json::from_str(text).context("not a valid user object")?;
    Ok(ImportedUser {
        user_id: line.user_id,
        token: line.token,
        last_launch: instant(&line.last_launch, "last_launch")?,
        last_success: line
            .last_success
            .as_deref()
            .map(|t| instant(t, "last_success"))
            .transpose()?,
    })
}

pub fn run(args: ImportArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(import(args))
}

async fn import(args: ImportArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let holder = format!("refreshd import (pid {})", std::process::id());
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    // A running `serve` holds these: importing beside it on one SQLite file is refused.
    let _data_dir = DataDir::open(&args.data_dir, &holder)?;
    let (store, _store_lock) =
        open_store(args.store.as_ref(), &args.data_dir, &holder, "import").await?;
    let fetcher = Arc::new(Fetcher::new(
        DestinationPolicy::new(Vec::new()),
        FetchLimits::default(),
    )?);
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        fetcher,
        TokenSealer::new(&secret_key(&args.data_dir)?),
        EngineSettings {
            fetch_jitter_minutes: args.fetch_jitter_minutes,
            ..EngineSettings::default()
        },
    );
    engine
        .app(&args.appid)
        .await
        .with_context(|| format!("app {:?}", args.appid))?;

    let reader: Box<dyn BufRead> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
    };
    let (mut read, mut imported) = (0u64, 0u64);
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
    let mut failure = None;
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("line {}: cannot be read", number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(user) => chunk.push(user),
            Err(error) => {
                failure = Some(format!("line {}: {error:#}", number + 1));
                break;
            }
        }
        read += 1;
        if chunk.len() == IMPORT_CHUNK {
            imported += engine.import_users(&args.appid, &chunk).await?;
            chunk.clear();
        }
    }
    // Every line before a bad one is imported: running the import again once the line
    // is mended skips them.
    if !chunk.is_empty() {
        imported += engine.import_users(&args.appid, &chunk).await?;
    }
    let summary = serde_json::json!({
        "imported": imported,
        "skipped": read - imported,
        "seconds": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    });
    println!("{summary}");
    match failure {
        Some(reason) => {
            eprintln!("error: {reason}; the lines before it were imported, none after it");
            Ok(ExitCode::from(2))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
