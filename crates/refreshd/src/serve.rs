//! `refreshd serve`: the service, with zero setup.
//!
//! Settings come from flags, then `REFRESHD_*` environment variables (clap reads both,
//! flags first), then a TOML file (`--config`), then defaults. Secrets (the operator key
//! and the token-sealing key) come only from the environment or from files refreshd
//! generates in the data directory with mode 0600.

use crate::data_dir::DataDir;
use anyhow::{bail, Context, Result};
use clap::Args;
use refreshd_engine::secrets::{hash_key, new_api_key, random_bytes, SecretKey, TokenSealer};
use refreshd_engine::{Clock, Engine, EngineSettings, SystemClock, WarpClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_rules::device::DeviceSettings;
use refreshd_store::{KeyKind, KeyRecord, PgStore, SqliteStore, Store};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::http_server::{self, HttpLimits};

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (lowest precedence after defaults).
    #[arg(long, env = "REFRESHD_CONFIG")]
    config: Option<PathBuf>,
    /// Where the SQLite file and generated keys live [default: ./refreshd-data].
    #[arg(long, env = "REFRESHD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store: a PostgreSQL URL (postgres://…) for a fleet of nodes, or a SQLite
    /// file path [default: DATA_DIR/refreshd.sqlite3].
    #[arg(long, env = "REFRESHD_STORE")]
    store: Option<String>,
    /// API address [default: 127.0.0.1:8080].
    #[arg(long, env = "REFRESHD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Prometheus metrics address [default: 127.0.0.1:9464].
    #[arg(long, env = "REFRESHD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Trusted destination range (repeatable): may be private or loopback, and may be
    /// reached over plain http://.
    #[arg(
        long = "allow-destination",
        env = "REFRESHD_ALLOW_DESTINATION",
        value_delimiter = ','
    )]
    allow_destination: Vec<String>,
    /// Run the clock this many times faster than real time (demos, tests).
    #[arg(long, env = "REFRESHD_TIME_WARP")]
    time_warp: Option<f64>,
    /// The instant the warped clock starts from (RFC 3339); nodes must agree on it.
    #[arg(long, env = "REFRESHD_TIME_WARP_EPOCH")]
    time_warp_epoch: Option<String>,
    /// The shared interval tick, 1 to 30 minutes (F11) [default: 30].
    #[arg(long, env = "REFRESHD_TICK_MINUTES")]
    tick_minutes: Option<i64>,
    /// Forms per device (F23) [default: 512].
    #[arg(long, env = "REFRESHD_MAX_FORMS")]
    max_forms: Option<i64>,
    /// P8's jitter window in minutes [default: 0].
    #[arg(long, env = "REFRESHD_FETCH_JITTER_MINUTES")]
    fetch_jitter_minutes: Option<u32>,
    /// Total deadline of one outbound request [default: 15].
    #[arg(long, env = "REFRESHD_FETCH_DEADLINE_SECONDS")]
    fetch_deadline_seconds: Option<u64>,
    /// Outbound requests in flight per origin [default: 8].
    #[arg(long, env = "REFRESHD_PER_ORIGIN_LIMIT")]
    per_origin_limit: Option<usize>,
    /// API requests per second per key [default: 50].
    #[arg(long, env = "REFRESHD_RATE_LIMIT_PER_SECOND")]
    rate_limit_per_second: Option<u32>,
    /// API burst per key [default: 100].
    #[arg(long, env = "REFRESHD_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<u32>,
    /// How long a node's claim on due work lasts; a dead node's work is taken over
    /// after this [default: the fetch deadline + 5].
    #[arg(long, env = "REFRESHD_CLAIM_LEASE_SECONDS")]
    claim_lease_seconds: Option<u64>,
    /// This node's name in claims on due work [default: random per start].
    #[arg(long, env = "REFRESHD_NODE_ID")]
    node_id: Option<String>,
    /// How often to look in the store for due work other nodes planned, in
    /// milliseconds [default: 1000].
    #[arg(long, env = "REFRESHD_POLL_INTERVAL_MS")]
    poll_interval_ms: Option<u64>,
    /// After SIGTERM or SIGINT, how long requests and work in progress may take to
    /// finish before they are abandoned; a second signal exits at once [default: 10].
    #[arg(long, env = "REFRESHD_SHUTDOWN_GRACE_SECONDS")]
    shutdown_grace_seconds: Option<u64>,
    /// A connection must send a request's headers within this many seconds (also how
    /// long an idle connection stays open) [default: 15].
    #[arg(long, env = "REFRESHD_HEADER_READ_TIMEOUT_SECONDS")]
    header_read_timeout_seconds: Option<u64>,
    /// API connections open at once; more are answered 503 and closed [default: 10000].
    #[arg(long, env = "REFRESHD_MAX_CONNECTIONS")]
    max_connections: Option<u32>,
    /// Open event streams (GET /v1/events) per key; more are answered 429 [default: 8].
    #[arg(long, env = "REFRESHD_MAX_STREAMS_PER_KEY")]
    max_streams_per_key: Option<usize>,
}

/// The TOML file: the same settings, plus cloud environments.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    store: Option<String>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    allow_destination: Vec<String>,
    time_warp: Option<f64>,
    time_warp_epoch: Option<String>,
    tick_minutes: Option<i64>,
    max_forms: Option<i64>,
    fetch_jitter_minutes: Option<u32>,
    fetch_deadline_seconds: Option<u64>,
    per_origin_limit: Option<usize>,
    rate_limit_per_second: Option<u32>,
    rate_limit_burst: Option<u32>,
    node_id: Option<String>,
    poll_interval_ms: Option<u64>,
    claim_lease_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
    header_read_timeout_seconds: Option<u64>,
    max_connections: Option<u32>,
    max_streams_per_key: Option<usize>,
    #[serde(default)]
    cloud: CloudSettings,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct CloudSettings {
    #[serde(default)]
    envs: HashMap<String, CloudEnv>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CloudEnv {
    base_url: String,
}

/// Settings after precedence was applied.
#[derive(Debug)]
struct Settings {
    data_dir: PathBuf,
    store: Option<String>,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    allow_destination: Vec<String>,
    time_warp: Option<f64>,
    time_warp_epoch: Option<i64>,
    device: DeviceSettings,
    fetch_jitter_minutes: u32,
    fetch_deadline: Duration,
    per_origin_limit: usize,
    rate_limit_per_second: u32,
    rate_limit_burst: u32,
    node_id: String,
    poll_interval: Duration,
    claim_lease: Duration,
    shutdown_grace: Duration,
    http_limits: HttpLimits,
    max_streams_per_key: usize,
    cloud_envs: HashMap<String, String>,
}

fn resolve(args: ServeArgs) -> Result<Settings> {
    let file: FileSettings = match &args.config {
        None => FileSettings::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?
        }
    };
    let mut allow = args.allow_destination;
    if allow.is_empty() {
        allow = file.allow_destination;
    }
    // Every setting is checked before anything is created on disk.
    DestinationPolicy::parse_trusted(&allow)
        .with_context(|| "invalid --allow-destination (a CIDR such as 127.0.0.1/32)")?;
    for (env, cloud) in &file.cloud.envs {
        check_cloud_base_url(env, &cloud.base_url)?;
    }
    let time_warp = args.time_warp.or(file.time_warp);
    if let Some(factor) = time_warp {
        if !(factor.is_finite() && factor > 0.0) {
            bail!("--time-warp must be a positive number, got {factor}");
        }
    }
    let time_warp_epoch = match args.time_warp_epoch.or(file.time_warp_epoch) {
        None => None,
        Some(text) => {
            let ts: jiff::Timestamp = text.parse().with_context(|| {
                format!("--time-warp-epoch \"{text}\" is not an RFC 3339 instant")
            })?;
            Some(ts.as_millisecond())
        }
    };
    let fetch_deadline_seconds = args
        .fetch_deadline_seconds
        .or(file.fetch_deadline_seconds)
        .unwrap_or(15)
        .max(1);
    let device = DeviceSettings::new(
        args.tick_minutes.or(file.tick_minutes).unwrap_or(30),
        args.max_forms.or(file.max_forms).unwrap_or(512),
    )?;
    Ok(Settings {
        store: args.store.or(file.store),
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("refreshd-data")),
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("constant")),
        metrics_listen: args
            .metrics_listen
            .or(file.metrics_listen)
            .unwrap_or_else(|| "127.0.0.1:9464".parse().expect("constant")),
        allow_destination: allow,
        time_warp,
        time_warp_epoch,
        device,
        fetch_jitter_minutes: args
            .fetch_jitter_minutes
            .or(file.fetch_jitter_minutes)
            .unwrap_or(0),
        fetch_deadline: Duration::from_secs(fetch_deadline_seconds),
        per_origin_limit: args
            .per_origin_limit
            .or(file.per_origin_limit)
            .unwrap_or(8)
            .max(1),
        rate_limit_per_second: args
            .rate_limit_per_second
            .or(file.rate_limit_per_second)
            .unwrap_or(50),
        rate_limit_burst: args
            .rate_limit_burst
            .or(file.rate_limit_burst)
            .unwrap_or(100),
        node_id: args
            .node_id
            .or(file.node_id)
            .unwrap_or_else(|| refreshd_engine::engine::new_id("node_")),
        claim_lease: Duration::from_secs(
            args.claim_lease_seconds
                .or(file.claim_lease_seconds)
                .unwrap_or(fetch_deadline_seconds + 5)
                .max(1),
        ),
        poll_interval: Duration::from_millis(
            args.poll_interval_ms
                .or(file.poll_interval_ms)
                .unwrap_or(1000)
                .max(10),
        ),
        shutdown_grace: Duration::from_secs(
            args.shutdown_grace_seconds
                .or(file.shutdown_grace_seconds)
                .unwrap_or(10),
        ),
        http_limits: HttpLimits {
            header_read_timeout: Duration::from_secs(
                args.header_read_timeout_seconds
                    .or(file.header_read_timeout_seconds)
                    .unwrap_or(15)
                    .max(1),
            ),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000)
                .max(1),
        },
        max_streams_per_key: args
            .max_streams_per_key
            .or(file.max_streams_per_key)
            .unwrap_or(refreshd_api::streams::DEFAULT_MAX_STREAMS_PER_KEY)
            .max(1),
        cloud_envs: file
            .cloud
            .envs
            .into_iter()
            .map(|(env, c)| (env, c.base_url))
            .collect(),
    })
}

/// A cloud environment's base URL must be an absolute http(s) URL without query or
/// fragment: function names are appended to its path.
fn check_cloud_base_url(env: &str, base_url: &str) -> Result<()> {
    let url = reqwest::Url::parse(base_url)
        .with_context(|| format!("cloud.envs.{env}.base_url \"{base_url}\" is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        bail!("cloud.envs.{env}.base_url must be an http(s) URL with a host and no query or fragment, got \"{base_url}\"");
    }
    Ok(())
}

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
fn secret_key(data_dir: &Path) -> Result<SecretKey> {
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
    // Held until the process ends: one `serve` per data directory.
    let _data_dir = DataDir::open(
        &settings.data_dir,
        &format!("listening on {}", settings.listen),
    )?;
    let store: Arc<dyn Store> = match settings.store.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            // Never print the URL: it may carry a password.
            println!("store: PostgreSQL (fleet mode, node {})", settings.node_id);
            Arc::new(
                PgStore::open(url)
                    .await
                    .context("cannot open the PostgreSQL store")?,
            )
        }
        other => {
            let path = other
                .map(PathBuf::from)
                .unwrap_or_else(|| settings.data_dir.join("refreshd.sqlite3"));
            println!("store: SQLite at {}", path.display());
            Arc::new(
                SqliteStore::open(&path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?,
            )
        }
    };
    let clock: Arc<dyn Clock> = match settings.time_warp {
        Some(factor) => {
            tracing::warn!(factor, "TIME WARP: the clock runs {factor} times faster than real time; never use this in production");
            Arc::new(WarpClock::new(factor, settings.time_warp_epoch))
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
    };
    let engine = Engine::new(
        store.clone(),
        clock,
        fetcher.clone(),
        sealer,
        engine_settings,
    );
    let planned = engine.load_due_index().await?;
    // Other nodes' host events reach this node's SSE streams (PostgreSQL NOTIFY).
    let forward_store = store.clone();
    let forward_sink = engine.host_event_sender();
    tokio::spawn(async move { forward_store.forward_host_events(forward_sink).await });

    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(settings.metrics_listen)
        .install()
        .context("cannot start the metrics listener")?;

    // Listening before "listening on" is printed: from then on a signal means shutdown.
    let mut signals = Signals::listen()?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local = listener.local_addr()?;
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
    tracing::info!(planned, data_dir = %settings.data_dir.display(), "refreshd started");

    let (stop_tx, stop_rx) = watch::channel(false);
    let wakes = tokio::spawn(engine.clone().run(stop_rx.clone()));
    let deliveries = tokio::spawn(engine.clone().run_deliveries(stop_rx.clone()));
    let (app, api) = refreshd_api::build(
        engine.clone(),
        refreshd_api::ApiSettings {
            rate_limit_per_second: settings.rate_limit_per_second,
            rate_limit_burst: settings.rate_limit_burst,
            max_streams_per_key: settings.max_streams_per_key,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "refreshd-config-{}-{}.toml",
            std::process::id(),
            contents.len()
        ));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let config = file("listen = \"127.0.0.1:9000\"\ntick_minutes = 10\nmax_forms = 7\n[cloud.envs.prod]\nbase_url = \"http://10.1.2.3:9000\"\n");
        let args = ServeArgs {
            config: Some(config),
            tick_minutes: Some(15),
            ..ServeArgs::default()
        };
        let settings = resolve(args).unwrap();
        assert_eq!(settings.listen.port(), 9000, "from the file");
        assert_eq!(settings.device.tick_minutes(), 15, "the flag wins");
        assert_eq!(settings.device.max_forms(), 7);
        assert_eq!(settings.metrics_listen.port(), 9464, "default");
        assert_eq!(settings.cloud_envs["prod"], "http://10.1.2.3:9000");
    }

    #[test]
    fn shutdown_and_connection_settings_have_defaults_and_come_from_the_file() {
        let defaults = resolve(ServeArgs::default()).unwrap();
        assert_eq!(defaults.shutdown_grace, Duration::from_secs(10));
        assert_eq!(
            defaults.http_limits.header_read_timeout,
            Duration::from_secs(15)
        );
        assert_eq!(defaults.http_limits.max_connections, 10_000);
        assert_eq!(defaults.max_streams_per_key, 8);
        let config = file("shutdown_grace_seconds = 3\nheader_read_timeout_seconds = 4\nmax_connections = 5\nmax_streams_per_key = 6\n");
        let settings = resolve(ServeArgs {
            config: Some(config),
            max_connections: Some(50),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(settings.shutdown_grace, Duration::from_secs(3));
        assert_eq!(
            settings.http_limits.header_read_timeout,
            Duration::from_secs(4)
        );
        assert_eq!(settings.http_limits.max_connections, 50, "the flag wins");
        assert_eq!(settings.max_streams_per_key, 6);
    }

    #[test]
    fn bad_settings_are_named() {
        let unknown = file("listne = \"127.0.0.1:1\"\n");
        let error = resolve(ServeArgs {
            config: Some(unknown),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains("listne"), "{error:#}");
        let error = resolve(ServeArgs {
            tick_minutes: Some(31),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains("tick_minutes"), "{error:#}");
        let error = resolve(ServeArgs {
            time_warp: Some(-1.0),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains("time-warp"), "{error:#}");
        let error = resolve(ServeArgs {
            allow_destination: vec!["127.0.0.1/33".into()],
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("allow-destination"),
            "{error:#}"
        );
        assert!(format!("{error:#}").contains("127.0.0.1/33"), "{error:#}");
        let bad_cloud = file("[cloud.envs.prod]\nbase_url = \"ftp://10.0.0.1\"\n");
        let error = resolve(ServeArgs {
            config: Some(bad_cloud),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("cloud.envs.prod.base_url"),
            "{error:#}"
        );
    }
}
