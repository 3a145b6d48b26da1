//! `refreshd-bench`: benchmarks that print figures, kept out of the shipped `refreshd`
//! binary (they carry hostile HTTP servers and workload generators). They are run by
//! hand (see BENCHMARKS.md), never as tests, so no timing is ever asserted.

mod db;
mod fetch;
mod hostile;
mod lateness;
mod outbound;
mod ratelimit;
mod rules;
mod servers;
mod sqlref;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "refreshd-bench",
    version,
    about = "Benchmarks of refreshd that print figures (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// One API key at five times its rate limit, another key's latency beside it.
    RateLimit {
        /// Seconds per phase (alone, then beside the loud key).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The fetcher against hostile servers on loopback: abort time past the deadline,
    /// memory per fetch, other origins' latency.
    Hostile {
        /// Full-size fetches for the memory figure.
        #[arg(long, default_value_t = 2_000)]
        fetches: usize,
    },
    /// End-to-end periodic fetches: engine, store and fetcher against loopback origins,
    /// all users due at once (loaded in bulk beforehand, untimed).
    Fetch {
        /// Users (app-user pairs) to fetch for.
        #[arg(long, default_value_t = 2_000)]
        users: u32,
        /// Requests in flight to one origin at once (the per-origin limit).
        #[arg(long, default_value_t = 8)]
        per_origin: usize,
        /// Distinct origins (one app and one loopback listener each; users spread over them).
        #[arg(long, default_value_t = 1)]
        origins: u32,
        /// Size of the body each fetch gets.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// Run on PostgreSQL: a fresh database is created beside this URL's and dropped
        /// afterwards. Default: a fresh SQLite file in the temporary directory.
        #[arg(long)]
        database_url: Option<String>,
        /// Give up when not every fetch is recorded after this long.
        #[arg(long, default_value_t = 1_800)]
        timeout_seconds: u64,
        /// Stop timing after this many seconds and report the rate so far (a steady
        /// drain of a large backlog, without waiting for its end).
        #[arg(long)]
        measure_seconds: Option<f64>,
    },
    /// The disk without refreshd: sqlx SQLite (WAL, synchronous=FULL) updating a
    /// pair-sized row by key, some rows per commit.
    SqliteReference {
        /// Rows in the table (each update picks the next one).
        #[arg(long, default_value_t = 20_000)]
        rows: u32,
        /// Body bytes per row.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// Rows updated per commit.
        #[arg(long, default_value_t = 1)]
        per_commit: u32,
        /// How long to update.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// A loopback origin serving BODY_BYTES at /feed (`?size=N` for another size), for wrk.
    Origin {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// GET /v1/apps/{appid}/background-fetch answered from memory: the same JSON shape
    /// and an authorization check, the reference for reads of cached data.
    MemoryServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// An app and the size of its cached body, NAME=BYTES (repeatable).
        #[arg(long = "app", required = true)]
        apps: Vec<String>,
        /// A file of accepted bearer keys, one per line.
        #[arg(long)]
        keys: PathBuf,
    },
    /// Lateness of scheduled periodic fetches (planned instant → arrival at the origin).
    Lateness {
        /// Pairs, each planned once.
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        /// Seconds over which the planned instants are spread evenly.
        #[arg(long, default_value_t = 60.0)]
        spread_seconds: f64,
        /// Run on PostgreSQL (see `fetch`).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// The same schedule slept through by a bare tokio::time::sleep_until loop.
    LatenessReference {
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        #[arg(long, default_value_t = 60.0)]
        spread_seconds: f64,
    },
    /// Another provider's add→delivery latency while 0, 1 and 50 providers hang.
    Deliveries {
        /// Forms added (and delivered) per phase, one after another.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// Resident memory while the fetcher fetches many distinct origins.
    Origins {
        /// Distinct origins to fetch.
        #[arg(long, default_value_t = 100_000)]
        count: usize,
    },
    /// One simulated day of many devices through the rules, on one core.
    Rules {
        /// Devices to simulate (20 forms each).
        #[arg(long, default_value_t = 50_000)]
        devices: u32,
        /// Forms per device.
        #[arg(long, default_value_t = 20)]
        forms_per_device: u32,
        /// Seed of the workload generator, for repeatable runs.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(which: BenchCommand) -> Result<ExitCode> {
    match which {
        BenchCommand::RateLimit { seconds } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(ratelimit::run(seconds.max(1)))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Hostile { fetches } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(hostile::run(fetches.max(1)))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Deliveries { samples } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(outbound::deliveries(samples.max(1)))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Origins { count } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(outbound::origins(count.max(1)))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Fetch {
            users,
            per_origin,
            origins,
            body_bytes,
            database_url,
            timeout_seconds,
            measure_seconds,
        } => {
            if users == 0 || origins == 0 {
                bail!("--users and --origins must be at least 1");
            }
            runtime()?.block_on(fetch::run(fetch::FetchArgs {
                users,
                per_origin,
                origins,
                body_bytes,
                database_url,
                timeout_seconds,
                measure_seconds,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::SqliteReference {
            rows,
            body_bytes,
            per_commit,
            seconds,
        } => {
            if rows == 0 || per_commit == 0 {
                bail!("--rows and --per-commit must be at least 1");
            }
            runtime()?.block_on(sqlref::run(rows, body_bytes, per_commit, seconds))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Origin { listen, body_bytes } => {
            runtime()?.block_on(servers::origin(listen, body_bytes))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::MemoryServer { listen, apps, keys } => {
            runtime()?.block_on(servers::memory_server(listen, &apps, &keys))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Lateness {
            count,
            spread_seconds,
            database_url,
        } => {
            if count == 0 {
                bail!("--count must be at least 1");
            }
            runtime()?.block_on(lateness::refreshd(count, spread_seconds, database_url))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::LatenessReference {
            count,
            spread_seconds,
        } => {
            if count == 0 {
                bail!("--count must be at least 1");
            }
            runtime()?.block_on(lateness::reference(count, spread_seconds))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Rules {
            devices,
            forms_per_device,
            seed,
        } => {
            if devices == 0 || forms_per_device == 0 {
                bail!("--devices and --forms-per-device must be at least 1");
            }
            rules::run(devices, forms_per_device, seed);
            Ok(ExitCode::SUCCESS)
        }
    }
}
