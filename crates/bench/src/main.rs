//! `refreshd-bench`: benchmarks that print figures, kept out of the shipped `refreshd`
//! binary (they carry hostile HTTP servers and workload generators). They are run by
//! hand (see BENCHMARKS.md), never as tests, so no timing is ever asserted.

mod fetch;
mod hostile;
mod outbound;
mod ratelimit;
mod rules;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
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
    /// End-to-end periodic fetches: engine, SQLite store and fetcher against a loopback
    /// origin, all users due at once.
    Fetch {
        /// Users (app-user pairs) to fetch for.
        #[arg(long, default_value_t = 2_000)]
        users: u32,
        /// Requests in flight to the origin at once (the per-origin limit).
        #[arg(long, default_value_t = 8)]
        per_origin: usize,
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
        BenchCommand::Fetch { users, per_origin } => {
            if users == 0 {
                bail!("--users must be at least 1");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(fetch::run(users, per_origin))?;
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
