//! `refreshd serve`: the service, with zero setup.
//!
//! Settings (`settings`) come from flags, then `REFRESHD_*` environment variables, then a
//! TOML file (`--config`), then defaults. Secrets (the operator key and the token-sealing
//! key) come only from the environment or from files refreshd generates in the data
//! directory with mode 0600.

mod settings;

use crate::data_dir::{DataDir, StoreLock};
use anyhow::{bail, Context, Result};
use refreshd_engine::secrets::{hash_key, new_api_key, random_bytes, SecretKey, TokenSealer};
use refreshd_engine::{Clock, Engine, EngineSettings, SystemClock, WarpClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_store::{KeyKind, KeyRecord, PgStore, SqliteStore, Store};
pub(crate) use settings::StoreSetting;
use settings::{resolve, Settings};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::http_server;

pub use settings::ServeArgs;

/// Writes a new secret file readable only by its owner.
fn write_secret_file(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// The token-sealing key: `REFRESHD_SECRET_KEY` (64 hex digits) or a generated file.
pub(crate) fn secret_key(data_dir: &Path) -> Result<SecretKey> {
    let text = match std::env::var("REFRESHD_SECRET_KEY") {
        Ok(text) => text,
        Err(_) => {
            let path = data_dir.join("secret.key");
            if !path.exists() {
                write_secret_file(&path, &hex::encode(random_bytes::<32>()))?;
            }
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
        }
    };
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .context("the secret key must be 64 hex digits (32 bytes)")?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes);
    Ok(SecretKey(key))
}

/// The operator key: `REFRESHD_ADMIN_KEY`, or generated into the data directory once.
/// Whichever it is becomes the only live operator key.
async fn operator_key(store: &dyn Store, data_dir: &Path, now: i64) -> Result<()> {
    let (key, origin) = match std::env::var("REFRESHD_ADMIN_KEY") {
        Ok(key) => (key.trim().to_string(), "REFRESHD_ADMIN_KEY".to_string()),
        Err(_) => {
            let path = data_dir.join("operator.key");
            if !path.exists() {
                write_secret_file(&path, &new_api_key(KeyKind::Operator))?;
            }
            let key = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            (key.trim().to_string(), path.display().to_string())
        }
    };
    if !key.starts_with("rfdo_") || key.len() < 37 {
        bail!("the operator key from {origin} must start with rfdo_ and have at least 32 more characters");
    }
    let hash = hash_key(&key);
    if store.find_key(&hash).await?.is_none() {
        let record = KeyRecord {
            key_hash: hash,
            kind: KeyKind::Operator,
            principal: "operator".into(),
            created_at: now,
        };
        store.rotate_key(&record, now).await?;
    }
    println!("operator key: {origin}");
    Ok(())
}

/// SIGTERM and SIGINT, listened to for the whole life of the service: the first starts
/// a graceful shutdown, a second one exits at once.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal; returns the conventional exit status for it (128 + its
    /// number).
    async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => 128 + 15,
                _ = self.interrupt.recv() => 128 + 2,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            128 + 2
        }
    }
}

/// Opens the store `serve` (and `import`) works on: PostgreSQL for a URL, else the
/// SQLite file (by default in the data directory), held by `holder` until the returned
/// lock is dropped so that no second process writes it.
pub(crate) async fn open_store(
    setting: Option<&StoreSetting>,
    data_dir: &Path,
    holder: &str,
    node_id: &str,
) -> Result<(Arc<dyn Store>, Option<StoreLock>)> {
    Ok(match setting {
        Some(url) if url.is_postgres() => {
            // Never print the URL: it may carry a password.
            println!("store: PostgreSQL (fleet mode, node {node_id})");
            let store = PgStore::open(url.as_str())
                .await
                .context("cannot open the PostgreSQL store")?;
            (Arc::new(store), None)
        }
        other => {
            let path = other
                .map(|store| PathBuf::from(store.as_str()))
                .unwrap_or_else(|| data_dir.join("refreshd.sqlite3"));
            println!("store: SQLite at {}", path.display());
            let lock = StoreLock::open(&path, holder)?;
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            (Arc::new(store), Some(lock))
        }
    })
}

pub fn run(args: ServeArgs) -> Result<()> {
    let settings = resolve(args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(settings));
    // Whatever is still running past the grace period is abandoned, not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(settings: Settings) -> Result<()> {
    // Bound first: a port in use is reported before anything is created on disk.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local = listener.local_addr()?;
    let holder = format!("listening on {local}");
    // Held until the process ends: one `serve` per data directory, and per SQLite file.
    let _data_dir = DataDir::open(&settings.data_dir, &holder)?;
    let (store, _store_lock) = open_store(
        settings.store.as_ref(),
        &settings.data_dir,
        &holder,
        &settings.node_id,
    )
    .await?;
    let clock: Arc<dyn Clock> = match settings.time_warp {
        Some(factor) => {
            let clock = WarpClock::new(factor, settings.time_warp_epoch);
            // The epoch is where warped and real time agree, not where the warped clock
            // starts (`--help`): say where it starts, which is what an operator expects.
            let starts_at = jiff::Timestamp::from_millisecond(clock.now().as_millis())
                .map(|at| at.to_string())
                .unwrap_or_default();
            tracing::warn!(factor, %starts_at, "TIME WARP: the clock runs {factor} times faster than real time and reads {starts_at} now; never use this in production");
            Arc::new(clock)
        }
        None => Arc::new(SystemClock),
    };
    operator_key(store.as_ref(), &settings.data_dir, clock.now().as_millis()).await?;
    let trusted = DestinationPolicy::parse_trusted(&settings.allow_destination)?;
    let limits = FetchLimits {
        deadline: settings.fetch_deadline,
        per_origin: settings.per_origin_limit,
        ..FetchLimits::default()
    };
    let fetcher = Arc::new(Fetcher::new(DestinationPolicy::new(trusted), limits)?);
    let sealer = TokenSealer::new(&secret_key(&settings.data_dir)?);
    // Leases and polling are real durations; the engine measures them on its clock,
    // which runs `warp` times faster under --time-warp.
    let warp = settings.time_warp.unwrap_or(1.0);
    let on_clock = |real: Duration| (real.as_millis() as f64 * warp) as i64;
    let deadline = settings.fetch_deadline;
    let engine_settings = EngineSettings {
        device: settings.device,
        fetch_jitter_minutes: settings.fetch_jitter_minutes,
        cloud_envs: settings.cloud_envs.clone(),
        fetch_lease_ms: on_clock(deadline * 4),
        node_id: settings.node_id.clone(),
        claim_lease_ms: on_clock(settings.claim_lease),
        poll_interval_ms: on_clock(settings.poll_interval),
        delivery_lease_ms: on_clock(deadline * 2),
        read_cache: settings.read_cache,
    };
    let engine = Engine::new(
        store.clone(),
        clock,
        fetcher.clone(),
        sealer,
        engine_settings,
    );
    // Before the due index is loaded, so its gauge is recorded; every series is at zero
    // from here on.
    crate::telemetry::install(settings.metrics_listen)?;
    engine.load_due_index().await?;
    // Other nodes' host events reach this node's SSE streams (PostgreSQL NOTIFY).
    let forward_store = store.clone();
    let forward_sink = engine.host_event_sender();
    tokio::spawn(async move { forward_store.forward_host_events(forward_sink).await });

    // Listening before "listening on" is printed: from then on a signal means shutdown.
    let mut signals = Signals::listen()?;
    // refreshd never fetches from or delivers to itself, whatever --allow-destination
    // trusts (SECURITY.md). Set before the engine's loops start. A metrics port of 0 is
    // chosen by the exporter and cannot be known here; only tests use it.
    let own_listeners = [local, settings.metrics_listen]
        .into_iter()
        .filter(|address| address.port() != 0)
        .collect();
    fetcher.set_own_listeners(own_listeners)?;
    // Printed on stdout so scripts and tests can wait for it.
    println!("listening on http://{local}");
    println!("metrics on http://{}/metrics", settings.metrics_listen);
    tracing::info!(data_dir = %settings.data_dir.display(), "refreshd started");
    {
        // A count over the whole due-index: reported when done, never holding up the
        // listener.
        let engine = engine.clone();
        tokio::spawn(async move {
            match engine.count_due_subjects().await {
                Ok(planned) => tracing::info!(planned, "subjects with a planned wake-up"),
                Err(error) => tracing::warn!(%error, "counting planned subjects failed"),
            }
        });
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let wakes = tokio::spawn(engine.clone().run(stop_rx.clone()));
    let deliveries = tokio::spawn(engine.clone().run_deliveries(stop_rx.clone()));
    let (app, api) = refreshd_api::build(
        engine.clone(),
        refreshd_api::ApiSettings {
            rate_limit_per_second: settings.rate_limit_per_second,
            rate_limit_burst: settings.rate_limit_burst,
            max_streams_per_key: settings.max_streams_per_key,
            // One deadline for a request's head and for its body: a client that
            // trickles either holds a connection no longer than this.
            body_read_timeout: settings.http_limits.header_read_timeout,
            max_requests_in_flight_per_key:
                refreshd_api::request_limits::DEFAULT_MAX_REQUESTS_IN_FLIGHT_PER_KEY,
        },
    );
    let stop_http = CancellationToken::new();
    let grace = settings.shutdown_grace;
    {
        let stop_http = stop_http.clone();
        let api = api.clone();
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!(
                grace_seconds = grace.as_secs(),
                "shutting down: ending event streams, finishing requests and work in progress (a second signal exits at once)"
            );
            let _ = stop_tx.send(true);
            // SSE streams would otherwise keep their connections, and so the server, open
            // forever.
            api.end_streams();
            stop_http.cancel();
            let status = signals.next().await;
            tracing::warn!(status, "second signal: exiting at once");
            std::process::exit(status);
        });
    }
    let server = http_server::serve(listener, app, settings.http_limits, stop_http).await;
    // Everything gets one grace period. Abandoning work is safe: every decision was
    // committed before it was carried out, a delivery is resent under its id and an
    // unrecorded fetch is ordered again.
    let finished = tokio::time::timeout(grace, async {
        server.drained().await;
        let _ = wakes.await;
        let _ = deliveries.await;
    })
    .await;
    match finished {
        Ok(()) => tracing::info!("stopped"),
        Err(_) => tracing::warn!(
            open_connections = server.open_connections(),
            "stopped: the shutdown grace period ended; the requests and work still in progress were abandoned"
        ),
    }
    Ok(())
}
