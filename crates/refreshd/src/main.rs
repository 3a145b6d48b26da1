//! The `refreshd` command line: thin over the library crates. Benchmarks live in the
//! `refreshd-bench` binary (crates/bench), so the shipped binary carries none of them.

mod data_dir;
mod http_server;
mod import;
mod lint;
mod serve;
mod simulate_engine;
mod telemetry;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use refreshd_simulate::{explain, html, output, Scenario, Simulation};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "refreshd",
    version,
    about = "Background refresh engine for mini-program data and widgets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
enum SimulateFormat {
    /// One JSON object per line (the scenario format's output).
    #[default]
    Json,
    /// A timeline for people: local times, aligned columns, daily summaries.
    Text,
    /// The timeline as one self-contained HTML page (inline SVG, readable offline).
    Html,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
enum ExplainFormat {
    /// The explanation as text.
    #[default]
    Text,
    /// One self-contained HTML page: the subject's timeline above the text.
    Html,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
enum LintFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON document, for tools.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: the HTTP API, the engine and the fetcher, on the embedded store.
    Serve(Box<serve::ServeArgs>),
    /// Load users' periodic-fetch pairs from JSON lines (moving a user base to refreshd).
    Import(import::ImportArgs),
    /// Run a scenario through the rules with a virtual clock.
    Simulate {
        scenario: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: SimulateFormat,
        /// Drive the scenario with the service's own engine (its commands and wake
        /// step, a temporary SQLite store, a manual clock, the origins played at the
        /// engine's network boundary) instead of the simulator's driver. Same output.
        #[arg(long)]
        engine: bool,
        /// Write the output to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Check a form_config.json: every error and warning, with its JSON path and a fix.
    Lint {
        config: PathBuf,
        /// The provider is a system app (network-recovery refresh applies, F16).
        #[arg(long)]
        system_app: bool,
        #[arg(long, value_enum, default_value_t)]
        format: LintFormat,
    },
    /// Explain why a form or a user's fetch did or did not refresh around a time.
    Explain {
        scenario: PathBuf,
        /// The form id (a key of the scenario's "forms").
        #[arg(long, conflicts_with_all = ["app", "user"])]
        form: Option<String>,
        /// The app id, with --user, for periodic fetches.
        #[arg(long, requires = "user")]
        app: Option<String>,
        #[arg(long, requires = "app")]
        user: Option<String>,
        /// The instant to explain (YYYY-MM-DDTHH:MM:SS, local to the scenario's zone,
        /// or with Z/±HH:MM). Defaults to the scenario's end.
        #[arg(long)]
        at: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: ExplainFormat,
        /// Write the output to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn read_scenario(path: &Path) -> Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read scenario {}", path.display()))?;
    Scenario::parse(&text).with_context(|| format!("invalid scenario {}", path.display()))
}

/// Prints `text`, or writes it to `output` when one is named.
fn emit(text: &str, output: Option<&Path>) -> Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Runs `scenario` and writes its JSON lines to `output` (or standard output) through
/// one buffer, each instant's lines as soon as the instant is done.
fn stream_json_lines(scenario: &Scenario, output: Option<&Path>) -> Result<()> {
    let (sink, name): (Box<dyn Write>, String) = match output {
        Some(path) => (
            Box::new(
                File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
            ),
            path.display().to_string(),
        ),
        None => (
            Box::new(std::io::stdout().lock()),
            "standard output".to_string(),
        ),
    };
    let mut sink = BufWriter::with_capacity(1 << 16, sink);
    Simulation::run_streaming(scenario, |records| {
        output::write_json_lines(records, &scenario.zone, &mut sink)
    })
    .and_then(|_work| sink.flush())
    .with_context(|| format!("cannot write {name}"))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Simulate {
            scenario,
            format,
            engine,
            output: destination,
        } => {
            let scenario = read_scenario(&scenario)?;
            if let (SimulateFormat::Json, false) = (format, engine) {
                // Written as the run goes, so memory does not grow with the output.
                stream_json_lines(&scenario, destination.as_deref())?;
                return Ok(ExitCode::SUCCESS);
            }
            let records = if engine {
                simulate_engine::run(&scenario)?
            } else {
                Simulation::run(&scenario)
            };
            let text = match format {
                SimulateFormat::Json => output::json_lines(&records, &scenario.zone),
                SimulateFormat::Text => output::timeline(&records, &scenario),
                SimulateFormat::Html => html::timeline_page(&records, &scenario),
            };
            emit(&text, destination.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lint {
            config,
            system_app,
            format,
        } => lint::run(&config, system_app, format),
        Command::Explain {
            scenario,
            form,
            app,
            user,
            at,
            format,
            output: destination,
        } => {
            let scenario = read_scenario(&scenario)?;
            let at = match at {
                Some(text) => Some(
                    refreshd_simulate::scenario::parse_instant(&text, "--at", &scenario.zone)
                        .map_err(|e| anyhow::anyhow!(e.message))?,
                ),
                None => None,
            };
            let subject = match (form, app, user) {
                (Some(form), _, _) => explain::Subject::Form(form),
                (None, Some(app), Some(user)) => explain::Subject::Fetch { app, user },
                _ => anyhow::bail!("name a subject: --form ID, or --app ID --user ID"),
            };
            let report = match format {
                ExplainFormat::Text => explain::explain(&scenario, &subject, at)?,
                ExplainFormat::Html => explain::explain_html(&scenario, &subject, at)?,
            };
            emit(&report, destination.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve::run(*args).map(|()| ExitCode::SUCCESS),
        Command::Import(args) => import::run(args),
    }
}
