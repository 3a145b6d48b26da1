//! Request and response bodies of refreshd's API, as serde structs.
//!
//! Instants are RFC 3339 strings as the server writes them; `time_stamp` is epoch
//! milliseconds. Response types derive `schemars::JsonSchema` so that they can be
//! compared with the server's OpenAPI document ([`response_schema`]). Fields the server
//! always writes, even as `null`, have no `skip_serializing_if`, so they are required in
//! those schemas; unknown fields are ignored when reading, so a newer server does not
//! break an older client.

use crate::error::ErrorDetail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------- operator

/// Whether an app's publisher is a person or an organization (cloud sources need
/// `organization` for some environments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Individual,
    Organization,
}

/// `POST /v1/admin/apps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApp {
    pub appid: String,
    pub subject: Subject,
}

/// The answer to creating an app. The keys and the secret are shown only once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedApp {
    pub appid: String,
    pub developer_key: String,
    /// Signs the periodic fetches sent to the developer's server (64 hex characters).
    pub signing_secret: String,
}

/// `POST /v1/admin/providers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProvider {
    pub provider: String,
    pub refresh_url: String,
    pub system_app: bool,
    pub api_version: i64,
}

/// The answer to creating a provider.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedProvider {
    pub provider: String,
    pub provider_key: String,
    /// Signs the deliveries sent to the provider's `refresh_url`.
    pub signing_secret: String,
}

/// The answer to setting a provider's market update duration (F10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MarketUpdateDuration {
    pub provider: String,
    /// Hours (1..=336); `null` when cleared.
    #[serde(default)]
    pub update_duration: Option<i64>,
}

/// `POST /v1/admin/devices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    pub device_id: String,
    pub user_id: String,
    /// An IANA zone, e.g. `Asia/Shanghai`.
    pub zone: String,
}

/// The answer to creating a device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedDevice {
    pub device_id: String,
    pub device_key: String,
}

/// Which kind of principal a key rotation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOwner {
    App,
    Provider,
    Device,
}

impl KeyOwner {
    pub(crate) fn collection(self) -> &'static str {
        match self {
            KeyOwner::App => "apps",
            KeyOwner::Provider => "providers",
            KeyOwner::Device => "devices",
        }
    }
}

/// The answer to a key rotation: the id and the new key under the field of its kind.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RotatedKey {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
}

impl RotatedKey {
    /// The new key, whatever its kind.
    pub fn key(&self) -> Option<&str> {
        self.developer_key
            .as_deref()
            .or(self.provider_key.as_deref())
            .or(self.device_key.as_deref())
    }
}

/// The answer to rotating a provider's signing secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RotatedProviderSecret {
    pub provider: String,
    pub signing_secret: String,
    /// Until then deliveries carry a `v1=` value under each secret, the new one first.
    #[serde(default)]
    pub previous_valid_until: Option<String>,
}

/// The answer to rotating an app's signing secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RotatedAppSecret {
    pub appid: String,
    pub signing_secret: String,
    /// Until then periodic fetches carry a `v1=` value under each secret, the new one
    /// first.
    #[serde(default)]
    pub previous_valid_until: Option<String>,
}

// The secrets must not end up in logs through `{:?}`.
macro_rules! redacted_debug {
    ($ty:ident { $($shown:ident),* } hides { $($hidden:ident),* }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut s = f.debug_struct(stringify!($ty));
                $( s.field(stringify!($shown), &self.$shown); )*
                $( let _ = &self.$hidden; s.field(stringify!($hidden), &"<redacted>"); )*
                s.finish()
            }
        }
    };
}
redacted_debug!(CreatedApp { appid } hides { developer_key, signing_secret });
redacted_debug!(CreatedProvider { provider } hides { provider_key, signing_secret });
redacted_debug!(CreatedDevice { device_id } hides { device_key });
redacted_debug!(RotatedKey { id } hides { developer_key, provider_key, device_key });
redacted_debug!(RotatedProviderSecret { provider, previous_valid_until } hides { signing_secret });
redacted_debug!(RotatedAppSecret { appid, previous_valid_until } hides { signing_secret });

// ---------------------------------------------------------------- developer

/// Where periodic fetches go: a URL, or a cloud function of a configured environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Url(String),
    Cloud { env: String, function: String },
}

/// A gray release of a second URL to a share of users (P3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Gray {
    pub url: String,
    pub percent: u8,
    #[serde(default)]
    pub testers: Vec<String>,
}

/// `PUT /v1/apps/{appid}/periodic-fetch`: the whole setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodicFetchSetting {
    pub enabled: bool,
    pub source: Source,
    /// Always sent, as `null` when there is no gray release.
    pub gray: Option<Gray>,
}

/// The stored periodic-fetch setting, as the server answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PeriodicFetch {
    pub enabled: bool,
    /// `null` when nothing was ever set.
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub gray: Option<Gray>,
}

/// The outcome of a fetch-now (P11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FetchNowReport {
    /// `ok`, `not_modified`, `http_status`, `timeout`, `connect`, …
    pub outcome: String,
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Epoch ms of the data now cached, when there is some.
    #[serde(default)]
    pub time_stamp: Option<i64>,
}

/// One attempt of the fetch log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FetchAttempt {
    pub at: String,
    pub gray: bool,
    pub outcome: String,
    #[serde(default)]
    pub http_status: Option<i64>,
    pub bytes: i64,
    pub duration_ms: i64,
}

/// `GET /v1/apps/{appid}/periodic-fetch/log`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FetchLog {
    pub attempts: Vec<FetchAttempt>,
}

/// The user's activity as periodic fetching sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FetchActivity {
    #[serde(default)]
    pub last_launch: Option<String>,
    #[serde(default)]
    pub active_until: Option<String>,
}

/// Where a user stands in a gray release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GrayStatus {
    pub percent: u8,
    pub tester: bool,
    pub bucket: u64,
}

/// The last fetch's outcome, with a hint for the developer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LastFetchOutcome {
    pub at: String,
    pub outcome: String,
    #[serde(default)]
    pub http_status: Option<i64>,
    #[serde(default)]
    pub hint: Option<String>,
}

/// `GET /v1/apps/{appid}/periodic-fetch/explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FetchExplanation {
    pub enabled: bool,
    pub activity: FetchActivity,
    pub token_set: bool,
    pub eligible: bool,
    #[serde(default)]
    pub ineligible_reason: Option<String>,
    #[serde(default)]
    pub gray: Option<GrayStatus>,
    #[serde(default)]
    pub last_outcome: Option<LastFetchOutcome>,
    pub consecutive_failures: u32,
    #[serde(default)]
    pub next_due: Option<String>,
    pub why: String,
}

// ---------------------------------------------------------------- provider

/// Placed forms removed because their definition left the form config (F23a).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemovedForms {
    pub form_name: String,
    pub count: u64,
}

/// The answer to a form-config upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FormConfigResult {
    pub warnings: Vec<ErrorDetail>,
    #[serde(default)]
    pub removed_forms: Vec<RemovedForms>,
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to `POST /v1/forms/{form_id}/next-refresh`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NextRefresh {
    pub due_at: String,
}

/// A decision noted for a form, with the rule that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotedDecision {
    pub at: String,
    pub decision: String,
    pub rule: String,
}

/// `GET /v1/forms/{form_id}/explain` (device or provider).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FormExplanation {
    pub form_id: String,
    pub form_name: String,
    pub visible: bool,
    pub counted_today: u32,
    pub daily_quota: u32,
    #[serde(default)]
    pub quota_resets_at: Option<String>,
    pub deferred: Vec<String>,
    #[serde(default)]
    pub pending_next_refresh: Option<String>,
    #[serde(default)]
    pub interval_minutes: Option<i64>,
    pub scheduled_times: Vec<String>,
    pub network_recovery: bool,
    pub data_proxy: bool,
    pub recent_decisions: Vec<NotedDecision>,
    pub next_planned: Vec<NotedDecision>,
}

/// The body refreshd POSTs to a provider's `refresh_url` (F20, F21).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    pub form_id: String,
    pub form_name: String,
    /// `add`, `interval`, `scheduled`, `next`, `network`, `visible`, …
    pub trigger: String,
    #[serde(default)]
    pub deferred: Vec<String>,
    #[serde(default)]
    pub decided_at: Option<String>,
}

// ---------------------------------------------------------------- device

/// `POST /v1/forms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewForm {
    pub provider: String,
    pub form_name: String,
    pub hidden: bool,
}

/// The answer to adding a form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AddedForm {
    pub form_id: String,
}

/// `GET /v1/apps/{appid}/background-fetch?fetch_type=periodic` (P15).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CachedData {
    /// The developer server's body, as text.
    pub fetched_data: String,
    /// Epoch ms of the fetch.
    pub time_stamp: i64,
}

/// `GET /v1/forms/{form_id}/data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FormData {
    pub data: Value,
    #[serde(default)]
    pub updated_at: Option<String>,
    pub trigger: String,
}

/// One app's cached data in a sync answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SyncApp {
    pub appid: String,
    pub fetched_data: String,
    pub time_stamp: i64,
}

/// One placed form in a sync answer; `data` is `null` while the form has none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncForm {
    pub form_id: String,
    pub provider: String,
    pub form_name: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub trigger: Option<String>,
}

/// `GET /v1/device/sync`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncResponse {
    /// Pass it to the next sync.
    pub cursor: String,
    /// `true`: this is the whole state; drop apps and forms not listed.
    pub reset: bool,
    pub apps: Vec<SyncApp>,
    pub forms: Vec<SyncForm>,
    pub removed_forms: Vec<String>,
}

// ---------------------------------------------------------------- events

/// `event: fetched_data`: a fetch changed the user's cached data of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FetchedData {
    pub appid: String,
    pub fetched_data: String,
    pub time_stamp: i64,
}

/// `event: form_data`: a form's latest data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FormDataEvent {
    pub form_id: String,
    pub data: Value,
    #[serde(default)]
    pub updated_at: Option<String>,
    pub trigger: String,
}

/// `event: form_removed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FormRemoved {
    pub form_id: String,
}

/// An event of `GET /v1/events`, with the id the server gave it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HostEvent {
    FetchedData {
        id: String,
        event: FetchedData,
    },
    FormData {
        id: String,
        event: FormDataEvent,
    },
    FormRemoved {
        id: String,
        event: FormRemoved,
    },
    /// An event kind this client does not know, passed on as it came.
    Other {
        id: String,
        kind: String,
        data: String,
    },
}

impl HostEvent {
    /// The event's id (what a reconnect sends as `Last-Event-ID`); empty if it had none.
    pub fn id(&self) -> &str {
        match self {
            HostEvent::FetchedData { id, .. }
            | HostEvent::FormData { id, .. }
            | HostEvent::FormRemoved { id, .. }
            | HostEvent::Other { id, .. } => id,
        }
    }
}

/// The JSON schema of a response type as the server sends it: every field present,
/// `null` where there is nothing (the serialize view of these types), and `$defs` for
/// nested types.
pub fn response_schema<T: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>()).unwrap_or(Value::Null)
}
