//! `refreshd-bench sqlite-reference`: what the disk allows without refreshd. sqlx's
//! SQLite driver (the one refreshd links) on a fresh file in the same temporary
//! directory, WAL, `synchronous=FULL`; each commit updates `per_commit` rows by key, a
//! row the size of a fetched pair (state JSON of about 150 bytes, the body, the next
//! wake-up). Prints figures; never a test.

use crate::db::{emit, write_bytes};
use anyhow::Result;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::time::{Duration, Instant as WallClock};

const STATE: &str = r#"{"last_launch":1764237600000,"has_token":true,"attempted":true,"consecutive_failures":0,"planned":1764280800000,"in_flight":false}"#;

pub async fn run(rows: u32, body_bytes: usize, per_commit: u32, seconds: f64) -> Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "refreshd-bench-sqlref-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)?;
    let options = SqliteConnectOptions::new()
        .filename(dir.join("reference.sqlite3"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query(
        "CREATE TABLE pairs (key TEXT PRIMARY KEY, state TEXT NOT NULL, body TEXT, next_wake_at INTEGER)",
    )
    .execute(&pool)
    .await?;
    let body = "x".repeat(body_bytes);
    // Untimed: every row exists, as every user's pair does.
    let mut tx = pool.begin().await?;
    for i in 0..rows {
        sqlx::query("INSERT INTO pairs (key, state, next_wake_at) VALUES (?, ?, 0)")
            .bind(format!("u{i}"))
            .bind(STATE)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    let written_before = write_bytes();
    let started = WallClock::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut updated: u64 = 0;
    let mut commits: u64 = 0;
    while WallClock::now() < until {
        let mut tx = pool.begin().await?;
        for _ in 0..per_commit {
            let key = format!("u{}", updated % u64::from(rows));
            sqlx::query("UPDATE pairs SET state = ?, body = ?, next_wake_at = ? WHERE key = ?")
                .bind(STATE)
                .bind(body.as_str())
                .bind(updated as i64)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            updated += 1;
        }
        tx.commit().await?;
        commits += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let written = written_before
        .zip(write_bytes())
        .map(|(before, after)| after.saturating_sub(before) as f64 / updated as f64);
    pool.close().await;
    std::fs::remove_dir_all(&dir)?;
    let rate = updated as f64 / elapsed;
    println!("refreshd-bench sqlite-reference: sqlx SQLite, WAL, synchronous=FULL, {per_commit} row(s) per commit");
    println!(
        "  {updated} rows of {body_bytes} bytes in {commits} commits, {elapsed:.2} s = {rate:.0} rows/s"
    );
    if let Some(written) = written {
        println!("  bytes written to storage: {written:.0} per row");
    }
    emit(serde_json::json!({
        "bench": "sqlite-reference",
        "rows": rows,
        "body_bytes": body_bytes,
        "per_commit": per_commit,
        "seconds": elapsed,
        "rows_per_second": rate,
        "write_bytes_per_row": written,
    }));
    Ok(())
}
