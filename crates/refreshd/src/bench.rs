//! `refreshd bench …` placeholder, filled in below.
use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// One simulated day of many devices through the rules.
    Rules,
}

pub fn run(_which: BenchCommand) -> Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
