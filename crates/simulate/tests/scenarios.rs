//! Runs scenario files through the simulator and compares with their expected output,
//! the way `shared/scenarios/compare.py` does: instants compared as instants (any
//! offset), lines within one instant compared as a multiset, output never going back
//! in time.

/// Test output is captured unless a test fails; a skip must be seen anyway, so it is
/// written to the process's stderr directly.
macro_rules! say_loudly {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use jiff::Timestamp;
use proptest::prelude::*;
use refreshd_simulate::{output, Scenario, Simulation};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Lines grouped by instant (epoch ms), each line without its "at", as canonical JSON.
fn grouped(text: &str, what: &str) -> Result<BTreeMap<i64, Vec<String>>, String> {
    let mut groups: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut last = i64::MIN;
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut value: Value =
            serde_json::from_str(line).map_err(|e| format!("{what}:{}: not JSON: {e}", n + 1))?;
        let at = value
            .as_object_mut()
            .and_then(|o| o.remove("at"))
            .and_then(|a| a.as_str().map(str::to_string))
            .ok_or_else(|| format!("{what}:{}: no \"at\"", n + 1))?;
        let instant: Timestamp = at
            .parse()
            .map_err(|e| format!("{what}:{}: bad instant {at}: {e}", n + 1))?;
        let ms = instant.as_millisecond();
        if ms < last {
            return Err(format!("{what}:{}: goes back in time", n + 1));
        }
        last = ms;
        // serde_json with preserve_order keeps key order; sort keys for comparison.
        let sorted: BTreeMap<String, Value> = value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        groups
            .entry(ms)
            .or_default()
            .push(serde_json::to_string(&sorted).unwrap());
    }
    for lines in groups.values_mut() {
        lines.sort();
    }
    Ok(groups)
}

/// Runs one scenario file and returns a description of every difference.
fn check_scenario(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let scenario = Scenario::parse(&text).map_err(|e| format!("invalid: {e}"))?;
    let actual = output::json_lines(&Simulation::run(&scenario), &scenario.zone);
    let expected_path = path.with_extension("expected.jsonl");
    let expected = std::fs::read_to_string(&expected_path)
        .map_err(|e| format!("{}: {e}", expected_path.display()))?;
    let expected = grouped(&expected, "expected")?;
    let actual_groups = grouped(&actual, "actual")?;
    if expected == actual_groups {
        return Ok(());
    }
    let mut diff = String::new();
    let instants: std::collections::BTreeSet<_> =
        expected.keys().chain(actual_groups.keys()).collect();
    for at in instants {
        let e = expected.get(at).cloned().unwrap_or_default();
        let a = actual_groups.get(at).cloned().unwrap_or_default();
        if e != a {
            let when = Timestamp::from_millisecond(*at).unwrap();
            diff.push_str(&format!("@ {when}\n  expected {e:?}\n  actual   {a:?}\n"));
        }
    }
    Err(diff)
}

fn check_folder(folder: &Path) -> usize {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().ends_with(".expected.json")
        })
        .collect();
    files.sort();
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            check_scenario(f)
                .err()
                .map(|e| format!("FAIL {}\n{e}", f.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    files.len()
}

#[test]
fn project_scenarios_match_expected_output() {
    let count = check_folder(&repo_root().join("tests/scenarios"));
    assert!(
        count >= 25,
        "expected the project's scenarios, found {count}"
    );
}

#[test]
fn shared_public_scenarios_match_expected_output() {
    let shared = repo_root().join("../shared/scenarios");
    if !shared.is_dir() {
        say_loudly!(
            "SKIPPED: {} not found (a clone without ../shared); the project's own copies in tests/scenarios still ran",
            shared.display()
        );
        return;
    }
    let count = check_folder(&shared);
    eprintln!("checked {count} public scenarios in {}", shared.display());
    assert!(count > 0);
}

#[test]
fn comparison_notices_a_wrong_line() {
    // The checker itself must be able to fail: a changed expectation is a mismatch.
    let dir = std::env::temp_dir().join(format!("refreshd-scn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = repo_root().join("tests/scenarios/02-interval-hourly.json");
    let copy = dir.join("x.json");
    std::fs::copy(&scenario, &copy).unwrap();
    let expected = std::fs::read_to_string(scenario.with_extension("expected.jsonl")).unwrap();
    std::fs::write(
        dir.join("x.expected.jsonl"),
        expected.replace("12:00:00+00:00", "12:30:00+00:00"),
    )
    .unwrap();
    assert!(check_scenario(&copy).is_err());
    std::fs::write(dir.join("x.expected.jsonl"), expected).unwrap();
    assert!(check_scenario(&copy).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

proptest! {
    #[test]
    fn s_scenario_parser_never_panics(text in ".{0,300}") {
        let _ = Scenario::parse(&text);
    }

    #[test]
    fn s_scenario_parser_never_panics_on_scenario_shaped_input(
        zone in prop::sample::select(vec!["\"UTC\"", "\"Mars/Olympus\"", "5", "\"America/Santiago\""]),
        start in prop::sample::select(vec!["\"2026-03-01T00:00:00\"", "\"2026-13-01T00:00:00\"", "\"x\"", "null", "\"2026-09-06T00:00:00\""]),
        event in prop::sample::select(vec![
            r#"{"at": "2026-03-01T00:00:00", "add_form": "A"}"#,
            r#"{"at": "2026-03-01T00:00:00", "set_next_refresh": {"form": "A", "minutes": 1e3}}"#,
            r#"{"at": "2026-03-01T00:00:00", "origin": {"url": "https://x.example/f", "status": -1}}"#,
            r#"{"at": "2026-03-01T00:00:00", "set_gray": {"app": "a", "percent": 101}}"#,
            r#"{"at": "2026-03-01T00:00:00", "launch": {"app": "a", "user": "u"}, "online": true}"#,
            r#"{"at": "2026-03-01T00:00:00"}"#,
            r#"[]"#,
        ]),
        config in prop::sample::select(vec![r#"{"name": "a", "updateDuration": 1}"#, "[]", "null", r#"{"name": "a", "scheduledUpdateTime": "99:99"}"#]),
    ) {
        let text = format!(
            r#"{{"zone": {zone}, "start": {start}, "end": "2026-03-02T00:00:00", "forms": {{"A": {{"provider": "p", "config": {config}}}}}, "events": [{event}]}}"#
        );
        if let Ok(scenario) = Scenario::parse(&text) {
            let _ = Simulation::run(&scenario);
        }
    }
}
