//! `refreshd-bench fetch`: periodic fetches end to end, through the engine, a real SQLite
//! file and the fetcher, against an origin on loopback. Prints figures; never a test.

use anyhow::{Context, Result};
use refreshd_engine::secrets::{SecretKey, TokenSealer};
use refreshd_engine::{Clock, Engine, EngineSettings, SystemClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_rules::periodic::{App, PeriodicSetting, Source, SubjectType};
use refreshd_store::{SqliteStore, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};
use tokio::sync::watch;

pub async fn run(users: u32, per_origin: usize) -> Result<()> {
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let origin = axum::Router::new().route(
        "/feed",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "x".repeat(1024)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, origin).await });

    let dir = std::env::temp_dir().join(format!("refreshd-bench-fetch-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("bench.sqlite3")).await?);
    let policy = DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.1/32"])?);
    let limits = FetchLimits {
        per_origin,
        ..FetchLimits::default()
    };
    let fetcher = Arc::new(Fetcher::new(policy, limits)?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = Engine::new(
        store.clone(),
        clock,
        fetcher,
        TokenSealer::new(&SecretKey([9; 32])),
        EngineSettings::default(),
    );

    let app = App::new(
        "bench",
        SubjectType::Organization,
        Some(PeriodicSetting {
            enabled: true,
            source: Source::Url(format!("http://127.0.0.1:{port}/feed")),
            gray: None,
        }),
    )?;
    store
        .insert_app("bench", &serde_json::to_string(&app)?, None, None)
        .await?;

    // Users become eligible (token + launch) while the engine is not running, so that
    // every first fetch is due when it starts.
    let setup = WallClock::now();
    for i in 0..users {
        let user = format!("u{i}");
        engine.set_token("bench", &user, "token").await?;
        engine.launch("bench", &user).await?;
    }
    let setup_time = setup.elapsed();

    let (stop_tx, stop_rx) = watch::channel(false);
    let started = WallClock::now();
    let loop_task = tokio::spawn(engine.clone().run(stop_rx));
    let deadline = started + Duration::from_secs(600);
    // Users whose fetch is not yet recorded; each poll looks only at those.
    let mut waiting: Vec<String> = (0..users).map(|i| format!("u{i}")).collect();
    while !waiting.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut still = Vec::with_capacity(waiting.len());
        for user in waiting {
            if store
                .get_pair("bench", &user)
                .await?
                .and_then(|p| p.cached_at)
                .is_none()
            {
                still.push(user);
            }
        }
        waiting = still;
        if WallClock::now() > deadline {
            anyhow::bail!(
                "{} of {users} fetches were not recorded in 10 minutes",
                waiting.len()
            );
        }
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let _ = loop_task.await;
    std::fs::remove_dir_all(&dir).context("removing the bench store")?;
    println!("refreshd-bench fetch: periodic fetches end to end (engine + SQLite + fetcher) against a loopback origin");
    println!("  users {users}, per-origin limit {per_origin}, body 1 KiB");
    println!(
        "  setup (token + launch per user): {:.2} s = {:.0} API-level inputs/s",
        setup_time.as_secs_f64(),
        2.0 * users as f64 / setup_time.as_secs_f64()
    );
    println!(
        "  {users} fetches ordered, performed and recorded in {:.2} s = {:.0} fetches/s (origin saw {})",
        elapsed.as_secs_f64(),
        users as f64 / elapsed.as_secs_f64(),
        served.load(Ordering::Relaxed)
    );
    Ok(())
}
