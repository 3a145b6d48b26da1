//! `refreshd-bench rate-limit`: one key sends five times its rate limit while another
//! key's latency is measured, against the real API router and engine on a loopback
//! port with a temporary SQLite store. Prints figures; asserts nothing.

use anyhow::Result;
use refreshd_engine::secrets::{SecretKey, TokenSealer};
use refreshd_engine::{Caller, Clock, Engine, EngineSettings, KeyKind, SystemClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_store::{SqliteStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT_PER_SECOND: u32 = 50;
const BURST: u32 = 100;

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `per_second` requests a second for `seconds`, paced; returns latencies (ms) and
/// the number of 429 answers.
async fn paced(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    per_second: u64,
    seconds: u64,
) -> Result<(Vec<f64>, usize)> {
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    let mut tasks = Vec::new();
    for _ in 0..per_second * seconds {
        interval.tick().await;
        let (client, url, key) = (client.clone(), url.to_string(), key.to_string());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let status = client
                .get(&url)
                .bearer_auth(&key)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (started.elapsed().as_secs_f64() * 1000.0, status)
        }));
    }
    let mut latencies = Vec::new();
    let mut limited = 0;
    for task in tasks {
        let (latency, status) = task.await?;
        latencies.push(latency);
        limited += usize::from(status == 429);
    }
    Ok((latencies, limited))
}

pub async fn run(seconds: u64) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("refreshd-bench-ratelimit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("bench.sqlite3")).await?);
    let fetcher = Arc::new(Fetcher::new(
        DestinationPolicy::default(),
        FetchLimits::default(),
    )?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = Engine::new(
        store.clone(),
        clock,
        fetcher,
        TokenSealer::new(&SecretKey([3; 32])),
        EngineSettings::default(),
    );
    let mut keys = Vec::new();
    let operator = Caller {
        kind: KeyKind::Operator,
        id: "operator".into(),
        key_hash: Vec::new(),
    };
    for device in ["loud", "quiet"] {
        let created = engine
            .admin()
            .create_device(&operator, device, device, "UTC")
            .await?;
        keys.push(created.device_key);
    }
    let app = refreshd_api::router(engine, LIMIT_PER_SECOND, BURST);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/forms/frm_none/data", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();

    let quiet_rate = 20;
    let (mut unloaded, _) = paced(&client, &url, &keys[1], quiet_rate, seconds).await?;
    let loud_rate = 5 * LIMIT_PER_SECOND as u64;
    let loud = {
        let (client, url, key) = (client.clone(), url.clone(), keys[0].clone());
        tokio::spawn(async move { paced(&client, &url, &key, loud_rate, seconds).await })
    };
    let (mut loaded, quiet_limited) = paced(&client, &url, &keys[1], quiet_rate, seconds).await?;
    let (_, loud_limited) = loud.await??;
    std::fs::remove_dir_all(&dir)?;
    println!("refreshd-bench rate-limit: per-key limit {LIMIT_PER_SECOND}/s, burst {BURST}, {seconds} s per phase");
    println!(
        "  loud key at {loud_rate}/s (5x): {loud_limited} of {} requests answered 429",
        loud_rate * seconds
    );
    println!(
        "  quiet key at {quiet_rate}/s: p50 {:.2} ms p99 {:.2} ms alone; p50 {:.2} ms p99 {:.2} ms beside the loud key ({quiet_limited} answered 429)",
        percentile(&mut unloaded, 0.5),
        percentile(&mut unloaded, 0.99),
        percentile(&mut loaded, 0.5),
        percentile(&mut loaded, 0.99)
    );
    Ok(())
}
