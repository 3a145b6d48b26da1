//! The rows the store reads and writes. Instants are epoch milliseconds.

/// Which kind of principal a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Operator,
    App,
    Provider,
    Device,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Operator => "operator",
            KeyKind::App => "app",
            KeyKind::Provider => "provider",
            KeyKind::Device => "device",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "operator" => KeyKind::Operator,
            "app" => KeyKind::App,
            "provider" => KeyKind::Provider,
            "device" => KeyKind::Device,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_hash: Vec<u8>,
    pub kind: KeyKind,
    pub principal: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProvider {
    pub provider: String,
    pub refresh_url: String,
    pub system_app: bool,
    pub api_version: i64,
    pub signing_secret: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    pub provider: String,
    pub provider_num: i64,
    pub refresh_url: String,
    pub system_app: bool,
    pub api_version: i64,
    pub market_update_duration: Option<i64>,
    /// Sealed by the engine; the store never sees the secret itself.
    pub signing_secret: String,
    pub form_config: Option<String>,
    /// The secret `signing_secret` replaced, still signing beside it until
    /// `previous_secret_until` (sealed likewise).
    pub previous_signing_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: String,
    pub user_id: String,
    /// The rules' device state, serialized.
    pub state: String,
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormRecord {
    pub form_id: String,
    pub form_num: i64,
    pub device_id: String,
    pub provider: String,
    pub form_name: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormData {
    pub form_id: String,
    /// JSON text.
    pub data: String,
    pub updated_at: i64,
    pub trigger: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub device_id: String,
    /// The form the event is about: a form keeps only its last
    /// [`EVENTS_KEPT_PER_FORM`] events, so a provider writing often grows nothing.
    pub form_id: Option<String>,
    /// The app a `fetched_data` event is about: a device keeps only the latest one per
    /// app, since each carries the whole cached body.
    pub appid: Option<String>,
    pub kind: String,
    /// JSON text.
    pub payload: String,
    pub at: i64,
}

/// What an event is about, without its payload: a sync reads these to learn which
/// forms and apps changed after a cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSubject {
    pub event_id: i64,
    pub kind: String,
    pub form_id: Option<String>,
    pub appid: Option<String>,
}

/// A form's stored data as a device's host may see it: `announce_pending` when it
/// arrived while the form was hidden and the host has not been told yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFormData {
    pub data: FormData,
    pub announce_pending: bool,
}

/// A signing secret (sealed text) and, after a rotation, the one it replaced with the
/// instant until which that one still signs beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SigningSecrets {
    pub current: String,
    pub previous: Option<String>,
    pub previous_until: Option<i64>,
}

/// The event a pair's commit announces to every device of its user (`fetched_data`);
/// each device's earlier event about the same app is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairAnnouncement {
    pub kind: String,
    /// JSON text.
    pub payload: String,
    pub at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub event_id: i64,
    pub kind: String,
    pub payload: String,
    pub at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionNote {
    pub form_id: String,
    pub at: i64,
    pub decision: String,
    pub rule: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub delivery_id: String,
    pub form_id: String,
    pub device_id: String,
    pub provider: String,
    /// The JSON body sent to the provider; fixed at decision time so retries repeat it.
    pub body: String,
    /// The trigger the body names, kept beside it so an answer is filed without
    /// reading the body again.
    pub trigger: String,
    pub next_attempt_at: i64,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub form_id: String,
    pub device_id: String,
    pub provider: String,
    pub body: String,
    pub trigger: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

/// How a delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryFinish {
    /// Delivered; the provider's answer, if it carried data, becomes the form's data,
    /// announced by the event, or when the form is next shown if there is none.
    Done {
        data: Option<(FormData, Option<NewEvent>)>,
        attempts: i64,
    },
    Retry {
        attempts: i64,
        next_attempt_at: i64,
    },
    GiveUp {
        attempts: i64,
    },
}

/// A change to a device, written atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceCommit {
    pub device_id: String,
    pub expected_version: i64,
    pub state: String,
    pub next_wake_at: Option<i64>,
    pub add_forms: Vec<FormRecord>,
    pub remove_forms: Vec<String>,
    pub deliveries: Vec<NewDelivery>,
    pub events: Vec<NewEvent>,
    pub decisions: Vec<DecisionNote>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairRecord {
    pub appid: String,
    pub user_id: String,
    pub state: String,
    pub version: i64,
    pub next_wake_at: Option<i64>,
    pub token_sealed: Option<Vec<u8>>,
    pub cached_data: Option<String>,
    pub cached_at: Option<i64>,
    /// When the fetch that produced the cached data was sent.
    pub cached_sent_at: Option<i64>,
    pub etag: Option<String>,
    pub etag_url: Option<String>,
}

/// A whole pair row to write (version 0 inserts), and optionally a log entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairCommit {
    pub record: PairRecord,
    pub expected_version: i64,
    pub log: Option<FetchLogEntry>,
    /// Announced to the user's devices in the same transaction.
    pub announce: Option<PairAnnouncement>,
    /// How late a scheduled fetch was sent after it was due, counted with the log
    /// entry in the app's statistics (a fetch-now has none).
    pub lateness_ms: Option<i64>,
    /// Whether the record's cache (data, time stamps, ETag) is written too. A new pair
    /// is written whole; an update leaves the stored cache as it is unless this is set,
    /// so state-only commits never rewrite a body.
    pub write_cache: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchLogEntry {
    pub at: i64,
    pub gray: bool,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub bytes: i64,
    pub duration_ms: i64,
}

/// A subject the engine wakes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKey {
    Device(String),
    Pair { appid: String, user_id: String },
}

/// Attempts kept in the fetch log per user and app.
pub const FETCH_LOG_KEPT: i64 = 100;

/// Host events kept per form (api.md needs the latest one to be replayable; a few more
/// let a host that reconnects quickly see the recent sequence). With form data capped
/// at 262,144 bytes, one placed form holds at most 1 + 4 copies of its data: 1.25 MiB.
pub const EVENTS_KEPT_PER_FORM: i64 = 4;

/// Upper bounds (milliseconds) of the latency buckets statistics count in; a latency
/// above the last falls in one more bucket (index `LATENCY_BOUNDS_MS.len()`).
pub const LATENCY_BOUNDS_MS: [i64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 15_000, 30_000,
];

/// Upper bounds (milliseconds) of the lateness buckets: how long after it was due a
/// scheduled fetch was sent, from a tenth of a second to a day.
pub const LATENESS_BOUNDS_MS: [i64; 12] = [
    100, 1_000, 5_000, 15_000, 60_000, 300_000, 900_000, 1_800_000, 3_600_000, 10_800_000,
    21_600_000, 86_400_000,
];

/// The bucket a latency falls in.
pub fn latency_bucket(ms: i64) -> i64 {
    bucket_of(&LATENCY_BOUNDS_MS, ms)
}

/// The bucket a lateness falls in.
pub fn lateness_bucket(ms: i64) -> i64 {
    bucket_of(&LATENESS_BOUNDS_MS, ms)
}

fn bucket_of(bounds: &[i64], ms: i64) -> i64 {
    bounds
        .iter()
        .position(|bound| ms <= *bound)
        .unwrap_or(bounds.len()) as i64
}

/// The statistics counter a scheduled fetch's lateness is kept under.
pub const LATENESS_STAT: &str = "lateness";

/// The start of the hour (UTC) that `at_ms` falls in.
pub fn hour_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(3_600_000) * 3_600_000
}

/// One counter of the hourly statistics: in `hour`, `count` of `what` (an outcome, or
/// `trigger:<trigger>`) in latency `bucket`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatRow {
    pub hour: i64,
    pub what: String,
    pub bucket: i64,
    pub count: i64,
}

/// When a delivery attempt was made and how long it took, for the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptTiming {
    pub at: i64,
    pub duration_ms: i64,
}
