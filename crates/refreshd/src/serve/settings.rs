//! `refreshd serve`'s settings, spelled once.
//!
//! [`ServeArgs`] is read by clap (flags, then `REFRESHD_*` variables) and by serde (the
//! `--config` TOML file, whose keys are the field names). The two readings are merged
//! field by field, flag > variable > file, then [`DEFAULTS`] fills what none gave, and
//! [`resolve`] checks everything before `serve` creates anything.

use anyhow::{bail, Context, Result};
use clap::Args;
use refreshd_fetch::DestinationPolicy;
use refreshd_rules::device::DeviceSettings;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http_server::HttpLimits;

/// Every setting as given: `None` when neither a flag, a variable nor the file set it.
/// The `[default: …]` in each help text is checked against [`DEFAULTS`] by a test.
#[derive(Args, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (lowest precedence after defaults).
    #[arg(long, env = "REFRESHD_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Where the SQLite file and generated keys live [default: refreshd-data].
    #[arg(long, env = "REFRESHD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store: a PostgreSQL URL (postgres://…) for a fleet of nodes, or a SQLite
    /// file path [default: DATA_DIR/refreshd.sqlite3].
    #[arg(long, env = "REFRESHD_STORE")]
    store: Option<StoreSetting>,
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
    allow_destination: Option<Vec<String>>,
    /// Run the clock this many times faster than real time (demos, tests).
    #[arg(long, env = "REFRESHD_TIME_WARP")]
    time_warp: Option<f64>,
    /// With --time-warp: the instant (RFC 3339) at which the warped clock agrees with
    /// the real clock [default: when this node starts].
    ///
    /// It is NOT the instant the warped clock shows at start. At real time T the clock
    /// reads EPOCH + (T - EPOCH) x FACTOR, so an epoch one hour in the past with
    /// --time-warp 60 starts the clock 59 hours ahead of real time; give the present
    /// instant to start from now. Because it is a fixed point of real time, nodes
    /// started at different moments with the same factor and epoch read the same
    /// virtual time: every node of a fleet must give the same values.
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
    /// Memory for the read cache of keys, devices and users' cached data, in MiB; 0
    /// turns it off [default: 64].
    #[arg(long, env = "REFRESHD_READ_CACHE_MIB")]
    read_cache_mib: Option<u64>,
    /// With a store shared by several nodes (PostgreSQL), how long this node trusts a
    /// read-cache entry, in milliseconds: another node's change (a rotated or deleted
    /// key, newly fetched data) is seen here within this [default: 1000].
    #[arg(long, env = "REFRESHD_READ_CACHE_TTL_MS")]
    read_cache_ttl_ms: Option<u64>,
    /// Cloud environments and their internal base URLs: only in the file.
    #[arg(skip)]
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

/// The defaults of every setting that has a fixed one, named as in [`ServeArgs`]. The
/// others are derived in [`resolve`]: the store from the data directory, the claim lease
/// from the fetch deadline, the node id at random, the warp epoch at start.
#[derive(Debug, Serialize)]
struct Defaults {
    data_dir: &'static str,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    tick_minutes: i64,
    max_forms: i64,
    fetch_jitter_minutes: u32,
    fetch_deadline_seconds: u64,
    per_origin_limit: usize,
    rate_limit_per_second: u32,
    rate_limit_burst: u32,
    poll_interval_ms: u64,
    shutdown_grace_seconds: u64,
    header_read_timeout_seconds: u64,
    max_connections: u32,
    max_streams_per_key: usize,
    read_cache_mib: u64,
    read_cache_ttl_ms: u64,
}

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

const DEFAULTS: Defaults = Defaults {
    data_dir: "refreshd-data",
    listen: loopback(8080),
    metrics_listen: loopback(9464),
    tick_minutes: 30,
    max_forms: 512,
    fetch_jitter_minutes: 0,
    fetch_deadline_seconds: 15,
    per_origin_limit: 8,
    rate_limit_per_second: 50,
    rate_limit_burst: 100,
    poll_interval_ms: 1000,
    shutdown_grace_seconds: 10,
    header_read_timeout_seconds: 15,
    max_connections: 10_000,
    max_streams_per_key: refreshd_api::streams::DEFAULT_MAX_STREAMS_PER_KEY,
    read_cache_mib: 64,
    read_cache_ttl_ms: 1000,
};

impl ServeArgs {
    /// Field by field, what `self` gives wins over what `lower` gives. Destructured so
    /// that a new setting cannot be forgotten here.
    fn or(self, lower: ServeArgs) -> ServeArgs {
        let ServeArgs {
            config,
            data_dir,
            store,
            listen,
            metrics_listen,
            allow_destination,
            time_warp,
            time_warp_epoch,
            tick_minutes,
            max_forms,
            fetch_jitter_minutes,
            fetch_deadline_seconds,
            per_origin_limit,
            rate_limit_per_second,
            rate_limit_burst,
            claim_lease_seconds,
            node_id,
            poll_interval_ms,
            shutdown_grace_seconds,
            header_read_timeout_seconds,
            max_connections,
            max_streams_per_key,
            read_cache_mib,
            read_cache_ttl_ms,
            cloud,
        } = self;
        ServeArgs {
            config: config.or(lower.config),
            data_dir: data_dir.or(lower.data_dir),
            store: store.or(lower.store),
            listen: listen.or(lower.listen),
            metrics_listen: metrics_listen.or(lower.metrics_listen),
            allow_destination: allow_destination.or(lower.allow_destination),
            time_warp: time_warp.or(lower.time_warp),
            time_warp_epoch: time_warp_epoch.or(lower.time_warp_epoch),
            tick_minutes: tick_minutes.or(lower.tick_minutes),
            max_forms: max_forms.or(lower.max_forms),
            fetch_jitter_minutes: fetch_jitter_minutes.or(lower.fetch_jitter_minutes),
            fetch_deadline_seconds: fetch_deadline_seconds.or(lower.fetch_deadline_seconds),
            per_origin_limit: per_origin_limit.or(lower.per_origin_limit),
            rate_limit_per_second: rate_limit_per_second.or(lower.rate_limit_per_second),
            rate_limit_burst: rate_limit_burst.or(lower.rate_limit_burst),
            claim_lease_seconds: claim_lease_seconds.or(lower.claim_lease_seconds),
            node_id: node_id.or(lower.node_id),
            poll_interval_ms: poll_interval_ms.or(lower.poll_interval_ms),
            shutdown_grace_seconds: shutdown_grace_seconds.or(lower.shutdown_grace_seconds),
            header_read_timeout_seconds: header_read_timeout_seconds
                .or(lower.header_read_timeout_seconds),
            max_connections: max_connections.or(lower.max_connections),
            max_streams_per_key: max_streams_per_key.or(lower.max_streams_per_key),
            read_cache_mib: read_cache_mib.or(lower.read_cache_mib),
            read_cache_ttl_ms: read_cache_ttl_ms.or(lower.read_cache_ttl_ms),
            // Only the file has cloud environments.
            cloud: if cloud.envs.is_empty() {
                lower.cloud
            } else {
                cloud
            },
        }
    }

    /// The `--config` file's settings, or none.
    fn read_file(path: Option<&Path>) -> Result<ServeArgs> {
        let Some(path) = path else {
            return Ok(ServeArgs::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// `--store`: a PostgreSQL URL or a SQLite path. Its `Debug` never shows a URL, which
/// may carry a password, so settings can be logged whole.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct StoreSetting(String);

impl StoreSetting {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }
}

impl std::str::FromStr for StoreSetting {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(StoreSetting(text.to_string()))
    }
}

impl std::fmt::Debug for StoreSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_postgres() {
            f.write_str("StoreSetting(PostgreSQL URL, not shown)")
        } else {
            f.debug_tuple("StoreSetting").field(&self.0).finish()
        }
    }
}

/// Settings after precedence and defaults were applied, in the types `serve` uses.
#[derive(Debug)]
pub(super) struct Settings {
    pub data_dir: PathBuf,
    pub store: Option<StoreSetting>,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub allow_destination: Vec<String>,
    pub time_warp: Option<f64>,
    /// Milliseconds since the Unix epoch; see `--time-warp-epoch`.
    pub time_warp_epoch: Option<i64>,
    pub device: DeviceSettings,
    pub fetch_jitter_minutes: u32,
    pub fetch_deadline: Duration,
    pub per_origin_limit: usize,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub node_id: String,
    pub poll_interval: Duration,
    pub claim_lease: Duration,
    pub shutdown_grace: Duration,
    pub http_limits: HttpLimits,
    pub max_streams_per_key: usize,
    pub read_cache: refreshd_engine::ReadCacheSettings,
    pub cloud_envs: HashMap<String, String>,
}

/// Merges flags and variables (`args`) over the `--config` file, applies the defaults
/// once, and checks every setting: nothing is created on disk before this succeeds.
pub(super) fn resolve(args: ServeArgs) -> Result<Settings> {
    let file = ServeArgs::read_file(args.config.as_deref())?;
    let given = args.or(file);
    let allow_destination = given.allow_destination.unwrap_or_default();
    DestinationPolicy::parse_trusted(&allow_destination)
        .with_context(|| "invalid --allow-destination (a CIDR such as 127.0.0.1/32)")?;
    for (env, cloud) in &given.cloud.envs {
        check_cloud_base_url(env, &cloud.base_url)?;
    }
    if let Some(factor) = given.time_warp {
        if !(factor.is_finite() && factor > 0.0) {
            bail!("--time-warp must be a positive number, got {factor}");
        }
    }
    let time_warp_epoch = match given.time_warp_epoch {
        None => None,
        Some(text) => {
            let ts: jiff::Timestamp = text.parse().with_context(|| {
                format!("--time-warp-epoch \"{text}\" is not an RFC 3339 instant")
            })?;
            Some(ts.as_millisecond())
        }
    };
    let fetch_deadline_seconds = at_least(
        "fetch-deadline-seconds",
        given
            .fetch_deadline_seconds
            .unwrap_or(DEFAULTS.fetch_deadline_seconds),
        1,
    )?;
    let device = DeviceSettings::new(
        given.tick_minutes.unwrap_or(DEFAULTS.tick_minutes),
        given.max_forms.unwrap_or(DEFAULTS.max_forms),
    )?;
    Ok(Settings {
        data_dir: given
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULTS.data_dir)),
        store: given.store,
        listen: given.listen.unwrap_or(DEFAULTS.listen),
        metrics_listen: given.metrics_listen.unwrap_or(DEFAULTS.metrics_listen),
        allow_destination,
        time_warp: given.time_warp,
        time_warp_epoch,
        device,
        fetch_jitter_minutes: given
            .fetch_jitter_minutes
            .unwrap_or(DEFAULTS.fetch_jitter_minutes),
        fetch_deadline: Duration::from_secs(fetch_deadline_seconds),
        per_origin_limit: at_least(
            "per-origin-limit",
            given.per_origin_limit.unwrap_or(DEFAULTS.per_origin_limit),
            1,
        )?,
        rate_limit_per_second: at_least(
            "rate-limit-per-second",
            given
                .rate_limit_per_second
                .unwrap_or(DEFAULTS.rate_limit_per_second),
            1,
        )?,
        rate_limit_burst: at_least(
            "rate-limit-burst",
            given.rate_limit_burst.unwrap_or(DEFAULTS.rate_limit_burst),
            1,
        )?,
        node_id: given
            .node_id
            .unwrap_or_else(|| refreshd_engine::engine::new_id("node_")),
        // A claim outlives the fetch it covers, so a slow fetch is not taken over.
        claim_lease: Duration::from_secs(at_least(
            "claim-lease-seconds",
            given
                .claim_lease_seconds
                .unwrap_or(fetch_deadline_seconds + 5),
            1,
        )?),
        poll_interval: Duration::from_millis(at_least(
            "poll-interval-ms",
            given.poll_interval_ms.unwrap_or(DEFAULTS.poll_interval_ms),
            10,
        )?),
        shutdown_grace: Duration::from_secs(
            given
                .shutdown_grace_seconds
                .unwrap_or(DEFAULTS.shutdown_grace_seconds),
        ),
        http_limits: HttpLimits {
            header_read_timeout: Duration::from_secs(at_least(
                "header-read-timeout-seconds",
                given
                    .header_read_timeout_seconds
                    .unwrap_or(DEFAULTS.header_read_timeout_seconds),
                1,
            )?),
            max_connections: at_least(
                "max-connections",
                given.max_connections.unwrap_or(DEFAULTS.max_connections),
                1,
            )?,
        },
        max_streams_per_key: at_least(
            "max-streams-per-key",
            given
                .max_streams_per_key
                .unwrap_or(DEFAULTS.max_streams_per_key),
            1,
        )?,
        read_cache: refreshd_engine::ReadCacheSettings {
            max_bytes: given
                .read_cache_mib
                .unwrap_or(DEFAULTS.read_cache_mib)
                .saturating_mul(1024 * 1024),
            fleet_ttl: Duration::from_millis(
                given
                    .read_cache_ttl_ms
                    .unwrap_or(DEFAULTS.read_cache_ttl_ms),
            ),
        },
        cloud_envs: given
            .cloud
            .envs
            .into_iter()
            .map(|(env, c)| (env, c.base_url))
            .collect(),
    })
}

/// A setting that would stop the service from working at all (no connections, no
/// requests per second, a zero deadline) is refused rather than quietly raised.
fn at_least<T: PartialOrd + std::fmt::Display>(flag: &str, value: T, min: T) -> Result<T> {
    if value < min {
        bail!("--{flag} must be at least {min}, got {value}");
    }
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> PathBuf {
        // One file per call: tests run in parallel and may write contents of one length.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "refreshd-config-{}-{}-{}.toml",
            std::process::id(),
            contents.len(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
            allow_destination: Some(vec!["127.0.0.1/33".into()]),
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
        for (flag, args) in [
            ("--max-connections", parse(&["--max-connections", "0"])),
            (
                "--max-streams-per-key",
                parse(&["--max-streams-per-key", "0"]),
            ),
            ("--per-origin-limit", parse(&["--per-origin-limit", "0"])),
            (
                "--fetch-deadline-seconds",
                parse(&["--fetch-deadline-seconds", "0"]),
            ),
            (
                "--rate-limit-per-second",
                parse(&["--rate-limit-per-second", "0"]),
            ),
            (
                "--header-read-timeout-seconds",
                parse(&["--header-read-timeout-seconds", "0"]),
            ),
        ] {
            let error = resolve(args).unwrap_err();
            assert!(format!("{error:#}").contains(flag), "{flag}: {error:#}");
        }
    }

    /// `refreshd serve` as clap sees it, without the rest of the command line.
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(flags: &[&str]) -> ServeArgs {
        use clap::Parser;
        Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn every_flag_and_variable_keeps_its_name() {
        use clap::CommandFactory;
        let command = Serve::command();
        let names: Vec<(String, String)> = command
            .get_arguments()
            .filter(|arg| arg.get_long().is_some())
            .map(|arg| {
                let env = arg.get_env().unwrap().to_string_lossy().into_owned();
                (arg.get_long().unwrap().to_string(), env)
            })
            .collect();
        let expected = [
            "config",
            "data-dir",
            "store",
            "listen",
            "metrics-listen",
            "allow-destination",
            "time-warp",
            "time-warp-epoch",
            "tick-minutes",
            "max-forms",
            "fetch-jitter-minutes",
            "fetch-deadline-seconds",
            "per-origin-limit",
            "rate-limit-per-second",
            "rate-limit-burst",
            "claim-lease-seconds",
            "node-id",
            "poll-interval-ms",
            "shutdown-grace-seconds",
            "header-read-timeout-seconds",
            "max-connections",
            "max-streams-per-key",
            "read-cache-mib",
            "read-cache-ttl-ms",
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|flag| {
                let env = format!("REFRESHD_{}", flag.replace('-', "_").to_uppercase());
                (flag.to_string(), env)
            })
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn every_setting_but_config_is_a_file_key_of_the_flag_name() {
        let config = file(concat!(
            "data_dir = \"d\"\nstore = \"s.sqlite3\"\nlisten = \"127.0.0.1:1\"\n",
            "metrics_listen = \"127.0.0.1:2\"\nallow_destination = [\"10.0.0.0/8\"]\n",
            "time_warp = 2.5\ntime_warp_epoch = \"2026-03-01T00:00:00Z\"\n",
            "tick_minutes = 5\nmax_forms = 6\nfetch_jitter_minutes = 7\n",
            "fetch_deadline_seconds = 8\nper_origin_limit = 9\nrate_limit_per_second = 10\n",
            "rate_limit_burst = 11\nclaim_lease_seconds = 12\nnode_id = \"n\"\n",
            "poll_interval_ms = 13\nshutdown_grace_seconds = 14\n",
            "header_read_timeout_seconds = 16\nmax_connections = 17\n",
            "max_streams_per_key = 18\nread_cache_mib = 19\nread_cache_ttl_ms = 20\n",
        ));
        let settings = resolve(ServeArgs {
            config: Some(config),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("d"));
        assert_eq!(
            settings.store.as_ref().map(StoreSetting::as_str),
            Some("s.sqlite3")
        );
        assert_eq!(settings.listen.port(), 1);
        assert_eq!(settings.metrics_listen.port(), 2);
        assert_eq!(settings.allow_destination, ["10.0.0.0/8"]);
        assert_eq!(settings.time_warp, Some(2.5));
        assert_eq!(settings.time_warp_epoch, Some(1_772_323_200_000));
        assert_eq!(settings.device.tick_minutes(), 5);
        assert_eq!(settings.device.max_forms(), 6);
        assert_eq!(settings.fetch_jitter_minutes, 7);
        assert_eq!(settings.fetch_deadline, Duration::from_secs(8));
        assert_eq!(settings.per_origin_limit, 9);
        assert_eq!(settings.rate_limit_per_second, 10);
        assert_eq!(settings.rate_limit_burst, 11);
        assert_eq!(settings.claim_lease, Duration::from_secs(12));
        assert_eq!(settings.node_id, "n");
        assert_eq!(settings.poll_interval, Duration::from_millis(13));
        assert_eq!(settings.shutdown_grace, Duration::from_secs(14));
        assert_eq!(
            settings.http_limits.header_read_timeout,
            Duration::from_secs(16)
        );
        assert_eq!(settings.http_limits.max_connections, 17);
        assert_eq!(settings.max_streams_per_key, 18);
        assert_eq!(settings.read_cache.max_bytes, 19 * 1024 * 1024);
        assert_eq!(settings.read_cache.fleet_ttl, Duration::from_millis(20));
        let nested = file("config = \"other.toml\"\n");
        let error = resolve(ServeArgs {
            config: Some(nested),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains("config"), "{error:#}");
    }

    #[test]
    fn the_flag_wins_over_its_variable_and_the_variable_over_the_file() {
        // The only test that sets or reads this variable.
        std::env::set_var("REFRESHD_RATE_LIMIT_BURST", "21");
        let config = file("rate_limit_burst = 3\nallow_destination = [\"10.0.0.0/8\"]\n");
        let from_variable = parse(&["--config", config.to_str().unwrap()]);
        let from_flag = parse(&[
            "--config",
            config.to_str().unwrap(),
            "--rate-limit-burst",
            "22",
            "--allow-destination",
            "127.0.0.1/32,127.0.0.2/32",
        ]);
        std::env::remove_var("REFRESHD_RATE_LIMIT_BURST");
        let from_variable = resolve(from_variable).unwrap();
        assert_eq!(from_variable.rate_limit_burst, 21);
        assert_eq!(from_variable.allow_destination, ["10.0.0.0/8"], "the file");
        let from_flag = resolve(from_flag).unwrap();
        assert_eq!(from_flag.rate_limit_burst, 22);
        assert_eq!(
            from_flag.allow_destination,
            ["127.0.0.1/32", "127.0.0.2/32"],
            "the flag replaces the file's list"
        );
    }

    #[test]
    fn the_help_shows_the_defaults_that_apply() {
        use clap::CommandFactory;
        let defaults = serde_json::to_value(&DEFAULTS).unwrap();
        let defaults = defaults.as_object().unwrap();
        let command = Serve::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let shown = help
                .split_once("[default: ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(shown, _)| shown.to_string());
            let id = arg.get_id().as_str();
            match (defaults.get(id), shown) {
                (Some(value), Some(shown)) => {
                    let value = value
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or(value.to_string());
                    assert_eq!(shown, value, "--{id}'s help");
                    checked += 1;
                }
                (Some(_), None) => panic!("--{id}'s help does not show its default"),
                (None, _) => {}
            }
        }
        assert_eq!(checked, defaults.len(), "every default belongs to a flag");
        let resolved = resolve(ServeArgs::default()).unwrap();
        assert_eq!(resolved.data_dir, PathBuf::from("refreshd-data"));
        assert_eq!(resolved.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(resolved.metrics_listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(resolved.device.tick_minutes(), 30);
        assert_eq!(resolved.device.max_forms(), 512);
        assert_eq!(resolved.fetch_jitter_minutes, 0);
        assert_eq!(resolved.fetch_deadline, Duration::from_secs(15));
        assert_eq!(resolved.per_origin_limit, 8);
        assert_eq!(resolved.rate_limit_per_second, 50);
        assert_eq!(resolved.rate_limit_burst, 100);
        assert_eq!(
            resolved.claim_lease,
            Duration::from_secs(20),
            "deadline + 5"
        );
        assert_eq!(resolved.poll_interval, Duration::from_millis(1000));
        assert!(resolved.node_id.starts_with("node_"));
        assert_eq!(resolved.store, None);
        assert_eq!(resolved.time_warp, None);
        assert_eq!(resolved.time_warp_epoch, None);
        assert!(resolved.allow_destination.is_empty());
        assert!(resolved.cloud_envs.is_empty());
    }

    #[test]
    fn the_time_warp_epoch_is_explained_in_the_long_help() {
        use clap::CommandFactory;
        let command = Serve::command();
        let epoch = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some("time-warp-epoch"))
            .unwrap();
        let help = epoch.get_long_help().unwrap().to_string();
        assert!(
            help.contains("NOT the instant the warped clock shows at start"),
            "{help}"
        );
        assert!(help.contains("EPOCH + (T - EPOCH) x FACTOR"), "{help}");
        assert!(help.contains("every node of a fleet"), "{help}");
        let error = resolve(ServeArgs {
            time_warp: Some(2.0),
            time_warp_epoch: Some("yesterday".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("time-warp-epoch"),
            "{error:#}"
        );
    }
}
