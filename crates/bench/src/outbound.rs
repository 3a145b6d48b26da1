//! `refreshd-bench deliveries` and `refreshd-bench origins`: figures for what refreshd
//! sends out. Prints figures; asserts nothing (RELIABILITY.md records them).
//!
//! * deliveries: another provider's add→delivery latency while 0, 1 or 50 providers
//!   hold every delivery connection open without answering (the API, the engine and
//!   a real SQLite file in-process; providers on loopback);
//! * origins: resident memory while the fetcher fetches many distinct origins (names
//!   resolved by a test resolver to loopback), and how many origins it still tracks.

use anyhow::{bail, Context, Result};
use refreshd_engine::secrets::{hash_key, new_api_key, SecretKey, TokenSealer};
use refreshd_engine::{Clock, Engine, EngineSettings, SystemClock};
use refreshd_fetch::{fetch_periodic, DestinationPolicy, FetchLimits, Fetcher, NameResolver};
use refreshd_store::{KeyKind, KeyRecord, SqliteStore, Store};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Resident set size of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads one request head (and whatever else arrived with it).
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// A provider on 127.0.0.2 that reads each delivery and never answers; returns its URL.
async fn hanging_provider() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.2:0").await?;
    let url = format!("http://{}/refresh", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut stream).await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    Ok(url)
}

/// A provider that answers 204 at once and reports the form id of each delivery.
async fn answering_provider(arrived: mpsc::UnboundedSender<(String, Instant)>) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.2:0").await?;
    let url = format!("http://{}/refresh", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let Some(mut request) = read_head(&mut stream).await else {
                    return;
                };
                let at = Instant::now();
                // The body is small; read until it holds a complete JSON object.
                let mut buf = [0u8; 4096];
                while !request.ends_with(b"}") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
                let form_id = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["form_id"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = arrived.send((form_id, at));
                let _ = stream
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    Ok(url)
}

/// The API and engine in-process on a fresh SQLite file.
struct Service {
    base: String,
    operator: String,
    http: reqwest::Client,
    dir: std::path::PathBuf,
    _stop: watch::Sender<bool>,
}

impl Service {
    async fn start(tag: &str) -> Result<Service> {
        let dir = std::env::temp_dir().join(format!(
            "refreshd-bench-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("bench.sqlite3")).await?);
        let policy = DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.2/32"])?);
        // Production defaults: a 15 s deadline, 8 requests per origin.
        let fetcher = Arc::new(Fetcher::new(policy, FetchLimits::default())?);
        let engine = Engine::new(
            store.clone(),
            Arc::new(SystemClock) as Arc<dyn Clock>,
            fetcher,
            TokenSealer::new(&SecretKey([5; 32])),
            EngineSettings::default(),
        );
        let operator = new_api_key(KeyKind::Operator);
        store
            .insert_key(&KeyRecord {
                key_hash: hash_key(&operator),
                kind: KeyKind::Operator,
                principal: "operator".into(),
                created_at: 0,
            })
            .await?;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(engine.clone().run(stopped.clone()));
        tokio::spawn(engine.clone().run_deliveries(stopped));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = refreshd_api::router(engine, 1_000_000, 1_000_000);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Service {
            base,
            operator,
            http: reqwest::Client::new(),
            dir,
            _stop: stop,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: String,
    ) -> Result<serde_json::Value> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    async fn provider(&self, name: &str, refresh_url: &str) -> Result<()> {
        let provider = self
            .call(
                reqwest::Method::POST,
                "/v1/admin/providers",
                &self.operator,
                serde_json::json!({"provider": name, "refresh_url": refresh_url, "system_app": false, "api_version": 11}).to_string(),
            )
            .await?;
        let key = provider["provider_key"].as_str().context("provider key")?;
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/providers/{name}/form-config"),
            key,
            r#"{"forms": [{"name": "w"}]}"#.into(),
        )
        .await?;
        Ok(())
    }

    async fn device(&self, id: &str) -> Result<String> {
        let device = self
            .call(
                reqwest::Method::POST,
                "/v1/admin/devices",
                &self.operator,
                serde_json::json!({"device_id": id, "user_id": id, "zone": "UTC"}).to_string(),
            )
            .await?;
        Ok(device["device_key"]
            .as_str()
            .context("device key")?
            .to_string())
    }

    /// Adds a form; returns its id.
    async fn add_form(&self, device_key: &str, provider: &str) -> Result<String> {
        let form = self
            .call(
                reqwest::Method::POST,
                "/v1/forms",
                device_key,
                serde_json::json!({"provider": provider, "form_name": "w"}).to_string(),
            )
            .await?;
        Ok(form["form_id"].as_str().context("form id")?.to_string())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One phase: `hanging` providers keep receiving deliveries they never answer, while
/// `samples` forms of an answering provider are added one after another.
async fn delivery_phase(hanging: usize, samples: usize) -> Result<Vec<f64>> {
    let service = Service::start("deliveries").await?;
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let fast_url = answering_provider(arrived_tx).await?;
    service.provider("fast", &fast_url).await?;
    let mut slow_names = Vec::new();
    for i in 0..hanging {
        let name = format!("slow{i}");
        service.provider(&name, &hanging_provider().await?).await?;
        slow_names.push(name);
    }
    // Every hanging provider starts with its origin full (8 deliveries held open).
    let slow_device = service.device("slow-device").await?;
    for name in &slow_names {
        for _ in 0..8 {
            service.add_form(&slow_device, name).await?;
        }
    }
    let device = service.device("fast-device").await?;
    let mut latencies = Vec::with_capacity(samples);
    let mut slow_device_forms = 8 * hanging;
    let mut slow_devices = 0;
    let mut slow_key = slow_device;
    for i in 0..samples {
        // The hanging providers keep getting new deliveries meanwhile.
        if !slow_names.is_empty() {
            if slow_device_forms >= 500 {
                slow_devices += 1;
                slow_key = service
                    .device(&format!("slow-device-{slow_devices}"))
                    .await?;
                slow_device_forms = 0;
            }
            service
                .add_form(&slow_key, &slow_names[i % slow_names.len()])
                .await?;
            slow_device_forms += 1;
        }
        let sent = Instant::now();
        let form_id = service.add_form(&device, "fast").await?;
        let arrived_at = loop {
            let (id, at) = tokio::time::timeout(Duration::from_secs(600), arrived.recv())
                .await
                .context("no delivery in 10 minutes")?
                .context("provider stopped")?;
            if id == form_id {
                break at;
            }
        };
        latencies.push(arrived_at.duration_since(sent).as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&service.dir);
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

pub async fn deliveries(samples: usize) -> Result<()> {
    println!(
        "refreshd-bench deliveries: another provider's add→delivery latency while providers hang"
    );
    println!("  API + engine + SQLite in-process; fetch deadline 15 s, 8 per origin; {samples} adds per phase, one at a time;");
    println!("  each hanging provider holds 8 deliveries open from the start and gets one more per sample");
    for hanging in [0, 1, 50] {
        let started = Instant::now();
        let latencies = delivery_phase(hanging, samples).await?;
        println!(
            "  {hanging:>2} hanging providers: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples, phase {:.1} s)",
            percentile(&latencies, 50.0) * 1000.0,
            percentile(&latencies, 99.0) * 1000.0,
            latencies.last().copied().unwrap_or(0.0) * 1000.0,
            latencies.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Resolves `origin-N.bench` to one of the loopback addresses the origin server
/// listens on, spreading connections over several addresses.
struct LoopbackNames {
    addresses: Vec<IpAddr>,
}

impl NameResolver for LoopbackNames {
    fn lookup(
        &self,
        host: &str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let n: usize = host
            .trim_start_matches("origin-")
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let answer = vec![self.addresses[n % self.addresses.len()]];
        Box::pin(async move { Ok(answer) })
    }
}

pub async fn origins(count: usize) -> Result<()> {
    // One port on sixteen loopback addresses, answering a small 200 and closing.
    let probe = TcpListener::bind("127.0.0.2:0").await?;
    let port = probe.local_addr()?.port();
    let mut addresses = vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))];
    let mut listeners = vec![probe];
    for last in 3..18u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        if let Ok(listener) = TcpListener::bind((ip, port)).await {
            addresses.push(ip);
            listeners.push(listener);
        }
    }
    for listener in listeners {
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = read_head(&mut stream).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
    }
    let policy = DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.0/8"])?);
    let fetcher = Arc::new(Fetcher::with_resolver(
        policy,
        FetchLimits::default(),
        Arc::new(LoopbackNames { addresses }),
    )?);
    println!("refreshd-bench origins: {count} distinct origins (names resolved to loopback), 16 at a time");
    println!("  start: RSS {} KiB", rss_kib().unwrap_or(0));
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let checkpoints = [
        1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
    ];
    let mut done_upto = 0;
    for &checkpoint in checkpoints
        .iter()
        .filter(|&&c| c <= count)
        .chain(std::iter::once(&count))
    {
        if checkpoint <= done_upto {
            continue;
        }
        let workers: Vec<_> = (0..16)
            .map(|_| {
                let (fetcher, next, failures) = (fetcher.clone(), next.clone(), failures.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= checkpoint {
                            next.fetch_sub(1, Ordering::SeqCst);
                            return;
                        }
                        let url = format!("http://origin-{i}.bench:{port}/feed?token=t");
                        let result = fetch_periodic(&fetcher, &url, None, SystemTime::now()).await;
                        if result.outcome != refreshd_rules::periodic::FetchOutcome::Ok {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await?;
        }
        done_upto = checkpoint;
        println!(
            "  after {checkpoint:>6} origins: RSS {} KiB, origins tracked {}, failed fetches {}, {:.1} s",
            rss_kib().unwrap_or(0),
            fetcher.tracked_origins(),
            failures.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
