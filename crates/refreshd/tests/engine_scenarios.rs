//! Every scenario through both drivers: `refreshd simulate` (the simulator's driver) and
//! `refreshd simulate --engine` (the service's own engine, store, clock and transport
//! boundary) must write the same lines. This is what shows the service decides exactly
//! what the rules say; `crates/simulate/tests/scenarios.rs` checks the lines themselves
//! against the expected output.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Test output is captured unless a test fails; a skip must be seen anyway.
macro_rules! say_loudly {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn simulate(scenario: &Path, engine: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_refreshd"));
    command.arg("simulate");
    if engine {
        command.arg("--engine");
    }
    let output = command.arg(scenario).output().unwrap();
    assert!(
        output.status.success(),
        "simulate{} {} failed: {}",
        if engine { " --engine" } else { "" },
        scenario.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs every scenario of `folder` both ways; returns how many there were.
fn both_drivers_agree(folder: &Path) -> usize {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let differing: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let by_rules = simulate(file, false);
            let by_engine = simulate(file, true);
            (by_rules != by_engine).then(|| {
                format!(
                    "{}\n--- simulate\n{by_rules}--- simulate --engine\n{by_engine}",
                    file.display()
                )
            })
        })
        .collect();
    assert!(differing.is_empty(), "{}", differing.join("\n"));
    files.len()
}

#[test]
fn project_scenarios_give_the_same_output_through_the_engine() {
    let count = both_drivers_agree(&repo_root().join("tests/scenarios"));
    assert!(
        count >= 25,
        "expected the project's scenarios, found {count}"
    );
}

#[test]
fn shared_public_scenarios_give_the_same_output_through_the_engine() {
    let shared = repo_root().join("../shared/scenarios");
    if !shared.is_dir() {
        say_loudly!(
            "SKIPPED: {} not found (a clone without ../shared); the project's own copies in tests/scenarios still ran through both drivers",
            shared.display()
        );
        return;
    }
    let count = both_drivers_agree(&shared);
    assert!(count > 0);
}

#[test]
fn the_engine_driver_refuses_an_invalid_scenario_like_the_simulator() {
    let dir = std::env::temp_dir().join(format!("refreshd-engine-scn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    std::fs::write(&file, r#"{"start": "2026-03-01T00:00:00", "end": "x"}"#).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_refreshd"))
        .args(["simulate", "--engine"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("$.end"));
    let _ = std::fs::remove_dir_all(dir);
}
