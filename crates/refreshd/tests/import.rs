//! `refreshd import` as an operator runs it: the real binary on a real SQLite file.

use refreshd_rules::periodic::{App, PeriodicSetting, Source, SubjectType};
use refreshd_store::{SqliteStore, Store};
use std::process::Command;

/// A data directory whose store holds app `wx1` with its periodic fetch configured.
async fn data_dir_with_app(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("refreshd-import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("refreshd.sqlite3"))
        .await
        .unwrap();
    let app = App::new(
        "wx1",
        SubjectType::Organization,
        Some(PeriodicSetting {
            enabled: true,
            source: Source::Url("https://data.example.com/feed".into()),
            gray: None,
        }),
    )
    .unwrap();
    store
        .insert_app("wx1", &serde_json::to_string(&app).unwrap(), None, None)
        .await
        .unwrap();
    store.close().await;
    dir
}

fn import(dir: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_refreshd"))
        .args(["import", "--data-dir"])
        .arg(dir)
        .args(["--appid", "wx1"])
        .arg(file)
        .env_remove("REFRESHD_STORE")
        .output()
        .expect("the binary runs")
}

#[tokio::test]
async fn import_writes_planned_pairs_skips_existing_users_and_stops_at_a_bad_line() {
    let dir = data_dir_with_app("lines").await;
    let now = jiff::Timestamp::now();
    let recent = (now - jiff::SignedDuration::from_hours(1)).to_string();
    let mut lines: Vec<String> = (0..25_000)
        .map(|i| format!(r#"{{"user_id":"u{i}","token":"t{i}","last_launch":"{recent}"}}"#))
        .collect();
    lines.push(format!(
        r#"{{"user_id":"late","last_launch":"{recent}","last_success":"{recent}"}}"#
    ));
    let file = dir.join("users.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();

    let out = import(&dir, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(out.stdout.lines_last()).expect("a JSON summary");
    assert_eq!(
        (summary["imported"].as_u64(), summary["skipped"].as_u64()),
        (Some(25_001), Some(0))
    );

    // Again, with one more user and then a line that is not a user: the existing users
    // are skipped, the new one before the bad line is written, and the exit code says so.
    lines.push(format!(
        r#"{{"user_id":"extra","token":"x","last_launch":"{recent}"}}"#
    ));
    lines.push(r#"{"user":"no id"}"#.to_string());
    lines.push(format!(
        r#"{{"user_id":"after","token":"x","last_launch":"{recent}"}}"#
    ));
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = import(&dir, &file);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 25003"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(out.stdout.lines_last()).unwrap();
    assert_eq!(
        (summary["imported"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(25_001))
    );

    let store = SqliteStore::open(&dir.join("refreshd.sqlite3"))
        .await
        .unwrap();
    // Users with a token are due now; the one without waits for a token (P7).
    assert_eq!(store.count_planned().await.unwrap(), 25_001);
    let later = jiff::Timestamp::now().as_millisecond() + 1;
    assert_eq!(store.count_due(later).await.unwrap(), 25_001);
    let pair = store.get_pair("wx1", "u7").await.unwrap().unwrap();
    assert!(pair
        .token_sealed
        .is_some_and(|t| !t.windows(2).any(|w| w == b"t7")));
    assert!(store.get_pair("wx1", "after").await.unwrap().is_none());
    assert!(store
        .get_pair("wx1", "late")
        .await
        .unwrap()
        .unwrap()
        .next_wake_at
        .is_none());
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn import_refuses_an_unknown_app_and_a_malformed_instant_with_their_reason() {
    let dir = data_dir_with_app("refusals").await;
    let file = dir.join("users.jsonl");
    std::fs::write(&file, r#"{"user_id":"u1","last_launch":"yesterday"}"#).unwrap();
    let out = import(&dir, &file);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 1") && stderr.contains("last_launch"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_refreshd"))
        .args(["import", "--data-dir"])
        .arg(&dir)
        .args(["--appid", "nope"])
        .arg(&file)
        .env_remove("REFRESHD_STORE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("app_not_found"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The last line of a process's standard output.
trait LastLine {
    fn lines_last(&self) -> &[u8];
}

impl LastLine for Vec<u8> {
    fn lines_last(&self) -> &[u8] {
        let trimmed = self.strip_suffix(b"\n").unwrap_or(self);
        match trimmed.iter().rposition(|b| *b == b'\n') {
            Some(i) => &trimmed[i + 1..],
            None => trimmed,
        }
    }
}
