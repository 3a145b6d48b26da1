//! The command line as a user runs it: the real binary, real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn refreshd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refreshd"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn path(relative: &str) -> String {
    root().join(relative).to_string_lossy().into_owned()
}

fn temp_file(name: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("refreshd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, contents).unwrap();
    file.to_string_lossy().into_owned()
}

#[test]
fn simulate_prints_json_lines_of_the_doc_example() {
    let out = refreshd(&["simulate", &path("examples/shared-tick.json")]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["at"], "2026-03-01T03:50:00+08:00");
    assert_eq!(first["form"], "A");
    assert_eq!(first["refresh"], "interval");
    assert_eq!(stdout.lines().count(), 5);
}

#[test]
fn simulate_text_timeline_has_local_times_and_daily_summary() {
    let out = refreshd(&[
        "simulate",
        &path("examples/shared-tick.json"),
        "--format",
        "text",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("03:50:00 +08:00  form A  refresh interval"),
        "{text}"
    );
    assert!(text.contains("counted refreshes: A 3/50, B 2/50"), "{text}");
}

#[test]
fn s_invalid_scenario_names_the_path_and_prints_nothing_on_stdout() {
    let bad = temp_file(
        "bad.json",
        r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "events": [{"at": "2026-03-01T00:00:00", "set_next_refresh": {"form": "A", "minutes": "5"}}]}"#,
    );
    let out = refreshd(&["simulate", &bad]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("$.events[0].set_next_refresh.minutes"),
        "{stderr}"
    );
}

#[test]
fn simulate_missing_file_is_a_clear_error() {
    let out = refreshd(&["simulate", "/nonexistent/scenario.json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("cannot read scenario"));
}

#[test]
fn f5_lint_lists_every_problem_and_exits_1_on_errors() {
    let out = refreshd(&["lint", &path("examples/form_config.json")]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("error[invalid_time] $.forms[1].multiScheduledUpdateTime"),
        "{text}"
    );
    assert!(
        text.contains("warning[scheduled_time_ignored] $.forms[0]"),
        "{text}"
    );
    assert!(text.contains("warning[network_needs_system_app]"), "{text}");
    assert!(text.contains("hint:"), "{text}");
}

#[test]
fn f16_lint_system_app_silences_network_warning_and_json_format_is_parseable() {
    let out = refreshd(&[
        "lint",
        &path("examples/form_config.json"),
        "--system-app",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> = doc["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert!(!codes.contains(&"network_needs_system_app"));
    assert_eq!(doc["errors"], 1);
    for issue in doc["issues"].as_array().unwrap() {
        assert!(issue["path"].as_str().unwrap().starts_with("$"));
        assert!(!issue["hint"].as_str().unwrap().is_empty());
    }
}

#[test]
fn lint_clean_config_exits_0() {
    let good = temp_file(
        "good.json",
        r#"{"forms": [{"name": "w", "updateEnabled": true, "updateDuration": 2}]}"#,
    );
    let out = refreshd(&["lint", &good]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("0 error(s), 0 warning(s)"));
}

#[test]
fn lint_non_utf8_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("refreshd-cli-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("latin1.json");
    std::fs::write(&file, b"{\"forms\": [{\"name\": \"\xe9\"}]}").unwrap();
    let out = refreshd(&["lint", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("not UTF-8"));
}

#[test]
fn explain_form_shows_rule_quota_and_plan() {
    let out = refreshd(&[
        "explain",
        &path("tests/scenarios/08-hidden-deferral.json"),
        "--form",
        "H",
        "--at",
        "2026-03-01T11:00:00",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("deferred until shown (F20)"), "{text}");
    assert!(text.contains("quota: 0/50"), "{text}");
    assert!(text.contains("defer interval  hidden [F20]"), "{text}");
    assert!(text.contains("next 10 planned"), "{text}");
}

#[test]
fn explain_fetch_shows_eligibility_and_retry() {
    let out = refreshd(&[
        "explain",
        &path("tests/scenarios/11-periodic-retries.json"),
        "--app",
        "wx1",
        "--user",
        "u1",
        "--at",
        "2026-03-01T09:00:00",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("eligible: yes (P7)"), "{text}");
    assert!(
        text.contains("next fetch: 2026-03-01T09:05:00+00:00 — retry after failure 3 (P9)"),
        "{text}"
    );
}

#[test]
fn explain_unknown_form_is_an_error() {
    let out = refreshd(&[
        "explain",
        &path("tests/scenarios/08-hidden-deferral.json"),
        "--form",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("\"nope\" is not declared"));
}

#[test]
fn the_shipped_binary_carries_only_serve_simulate_lint_and_explain() {
    let out = refreshd(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["serve", "simulate", "lint", "explain"] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(command)),
            "{command} missing from:\n{help}"
        );
    }
    assert!(
        !help.contains("bench"),
        "benchmarks belong to refreshd-bench:\n{help}"
    );
    let bench = refreshd(&["bench", "rules"]);
    assert!(!bench.status.success(), "`refreshd bench` must not exist");
}

#[test]
fn simulate_html_writes_one_self_contained_page_to_the_output_file() {
    let dir = std::env::temp_dir().join(format!("refreshd-cli-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("timeline.html");
    let _ = std::fs::remove_file(&file);
    let out = refreshd(&[
        "simulate",
        &path("examples/shared-tick.json"),
        "--format",
        "html",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "the page goes to the file only");
    let page = std::fs::read_to_string(&file).expect("the HTML file is written");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.trim_end().ends_with("</html>"));
    assert!(page.contains("<svg"));
    // The example's two forms, each in its lane; local times of Asia/Shanghai.
    assert_eq!(
        page.matches("<g class=\"lane\" data-lane=\"form\"").count(),
        2
    );
    assert!(
        page.contains("local time, Asia/Shanghai (UTC+08:00)"),
        "{page}"
    );
    // Five interval refreshes, as in the JSON lines.
    assert_eq!(
        page.matches("data-kind=\"refresh\" data-trigger=\"interval\"")
            .count(),
        5
    );

    // The text timeline is unchanged by the new format.
    let text = refreshd(&[
        "simulate",
        &path("examples/shared-tick.json"),
        "--format",
        "text",
    ]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(page.contains(text.lines().nth(3).unwrap()), "{page}");

    // explain writes its page the same way.
    let explained = dir.join("explain.html");
    let out = refreshd(&[
        "explain",
        &path("tests/scenarios/08-hidden-deferral.json"),
        "--form",
        "H",
        "--at",
        "2026-03-01T11:00:00",
        "--format",
        "html",
        "-o",
        explained.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(&explained).unwrap();
    assert!(page.contains("<svg") && page.contains("data-form=\"H\""));
    assert!(page.contains("deferred until shown (F20)"), "{page}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_format_is_a_clear_error() {
    for command in ["simulate", "explain"] {
        let mut args = vec![
            command.to_string(),
            path("tests/scenarios/08-hidden-deferral.json"),
        ];
        if command == "explain" {
            args.extend(["--form".to_string(), "H".to_string()]);
        }
        args.extend(["--format".to_string(), "bogus".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = refreshd(&args);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("invalid value 'bogus' for '--format") && stderr.contains("html"),
            "{command}: {stderr}"
        );
    }
}
