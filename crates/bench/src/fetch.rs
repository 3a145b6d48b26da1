//! `refreshd-bench fetch`: due periodic fetches end to end, through the engine, a real
//! store (a fresh SQLite file, or a fresh PostgreSQL database) and the fetcher, against
//! origins on loopback. Prints figures; never a test.
//!
//! Setup (untimed) loads every user's pair in bulk, eligible and due now, the way
//! `refreshd import` does; the timing runs from the engine's start until every fetch
//! is recorded (body cached, next fetch planned, committed).

use crate::db::{emit, import_users, insert_url_app, loopback_engine, write_bytes, BenchDb};
use crate::servers::{spawn_origin, OriginLog};
use anyhow::{bail, Result};
use refreshd_engine::import::ImportedUser;
use refreshd_fetch::FetchLimits;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};
use tokio::sync::watch;

pub struct FetchArgs {
    pub users: u32,
    pub per_origin: usize,
    pub origins: u32,
    pub body_bytes: usize,
    pub database_url: Option<String>,
    pub timeout_seconds: u64,
    /// Stop timing after this long even when fetches remain: the rate is then what
    /// was recorded so far over the time taken (a steady drain, not its end).
    pub measure_seconds: Option<f64>,
}

pub async fn run(args: FetchArgs) -> Result<()> {
    let FetchArgs {
        users,
        per_origin,
        origins,
        body_bytes,
        database_url,
        timeout_seconds,
        measure_seconds,
    } = args;
    let log = Arc::new(OriginLog::default());
    let mut ports = Vec::with_capacity(origins as usize);
    for _ in 0..origins {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        ports.push(listener.local_addr()?.port());
        spawn_origin(listener, body_bytes, log.clone());
    }

    let (db, store) = BenchDb::open(database_url.as_deref(), "fetch").await?;
    let limits = FetchLimits {
        per_origin,
        ..FetchLimits::default()
    };
    let (engine, clock) = loopback_engine(store.clone(), limits)?;

    // One app per origin; users spread over them in turn.
    let setup = WallClock::now();
    for (i, port) in ports.iter().enumerate() {
        let url = format!("http://127.0.0.1:{port}/feed");
        insert_url_app(store.as_ref(), &format!("bench{i}"), url).await?;
    }
    // Launched just now with a token and never fetched: every pair is due at once.
    let now = clock.now();
    let users: Vec<ImportedUser> = (0..users)
        .map(|i| ImportedUser {
            user_id: format!("u{i}"),
            token: Some(format!("t{i}")),
            last_launch: now,
            last_success: None,
        })
        .collect();
    let apps: Vec<String> = (0..origins).map(|i| format!("bench{i}")).collect();
    import_users(&engine, &apps, &users).await?;
    let users = users.len() as u32;
    engine.load_due_index().await?;
    let setup_time = setup.elapsed();

    let (stop_tx, stop_rx) = watch::channel(false);
    let written_before = write_bytes();
    let started = WallClock::now();
    let loop_task = tokio::spawn(engine.clone().run(stop_rx));
    let deadline = started + Duration::from_secs(timeout_seconds);
    let measure_until = measure_seconds.map(|s| started + Duration::from_secs_f64(s));
    let recorded = loop {
        let recorded = db.recorded().await?;
        if recorded >= i64::from(users)
            || measure_until.is_some_and(|until| WallClock::now() >= until)
        {
            break recorded;
        }
        if WallClock::now() > deadline {
            let _ = stop_tx.send(true);
            bail!("{recorded} of {users} fetches were recorded in {timeout_seconds} s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    let complete = recorded >= i64::from(users);
    let written = written_before
        .zip(write_bytes())
        .map(|(before, after)| after.saturating_sub(before));
    let _ = stop_tx.send(true);
    let _ = loop_task.await;
    drop(engine);
    drop(store);
    let kind = db.kind();
    db.remove().await?;

    let rate = recorded as f64 / elapsed.as_secs_f64();
    println!("refreshd-bench fetch: due periodic fetches end to end (engine + {kind} + fetcher) against loopback origins");
    println!("  users {users}, origins {origins}, per-origin limit {per_origin}, body {body_bytes} bytes");
    println!(
        "  setup (bulk load, untimed): {:.2} s",
        setup_time.as_secs_f64()
    );
    println!(
        "  {recorded} of {users} fetches ordered, performed and recorded in {:.2} s = {rate:.0} fetches/s (origins saw {})",
        elapsed.as_secs_f64(),
        log.requests.load(Ordering::Relaxed)
    );
    // Only meaningful for the embedded store: PostgreSQL writes in its own processes.
    let per_fetch = written
        .filter(|_| kind == "sqlite")
        .map(|w| w as f64 / recorded.max(1) as f64);
    if let Some(per_fetch) = per_fetch {
        println!("  bytes written to storage by this process: {per_fetch:.0} per fetch");
    }
    emit(serde_json::json!({
        "bench": "fetch",
        "db": kind,
        "users": users,
        "recorded": recorded,
        "complete": complete,
        "origins": origins,
        "per_origin": per_origin,
        "body_bytes": body_bytes,
        "setup_seconds": setup_time.as_secs_f64(),
        "seconds": elapsed.as_secs_f64(),
        "fetches_per_second": rate,
        "write_bytes_per_fetch": per_fetch,
        "origin_requests": log.requests.load(Ordering::Relaxed),
    }));
    Ok(())
}
