//! refreshd's storage.
//!
//! One trait, [`Store`], with two backends: [`SqliteStore`] (embedded, one node) and
//! [`PgStore`] (PostgreSQL, a fleet of nodes), both one implementation, [`SqlStore`],
//! over what each database does its own way (`sql::Backend`). The trait covers what the engine and the API keep: keys, apps, providers,
//! devices (with their rules state), forms and their data, deliveries, host events, and
//! per-user fetch state with its cache and log. The store knows SQL and nothing about
//! the rules: subject state arrives as serialized text and leaves the same way.
//!
//! Every change to a subject and everything it causes (deliveries, events, decision
//! notes) is written by one call in one transaction, guarded by the subject's version,
//! so a crash loses nothing committed and two writers never both win.

mod group;
mod postgres;
mod records;
mod sql;
mod sqlite;

pub use postgres::PgBackend;
pub use records::*;
pub use sql::SqlStore;
pub use sqlite::SqliteBackend;

/// The embedded store: one SQLite file, one node.
pub type SqliteStore = SqlStore<SqliteBackend>;
/// The fleet store: PostgreSQL shared by several nodes.
pub type PgStore = SqlStore<PgBackend>;

use async_trait::async_trait;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row already exists (a unique id was taken).
    #[error("already exists")]
    Exists,
    /// The subject changed since it was loaded; load it again and retry.
    #[error("the subject was changed by someone else")]
    Conflict,
    /// A referenced row does not exist.
    #[error("not found")]
    NotFound,
    /// The database could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Exists,
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            sqlx::Error::RowNotFound => StoreError::NotFound,
            _ => StoreError::Unavailable(error.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Builds the host event for a form's stored data (the engine owns the payload format).
pub type EventBuilder = dyn Fn(&FormData) -> NewEvent + Send + Sync;

/// Whether a store is used by this node alone (SQLite), so that every change it holds
/// was made here, or shared by a fleet (PostgreSQL), where other nodes change it too;
/// caches in front of it need a time-to-live in the second case only.
pub trait NodeScope {
    fn single_node(&self) -> bool;
}

impl<B: sql::Backend> NodeScope for SqlStore<B> {
    fn single_node(&self) -> bool {
        B::SINGLE_NODE
    }
}

/// Everything refreshd keeps. Implemented by [`SqliteStore`] and [`PgStore`].
#[async_trait]
pub trait Store: NodeScope + Send + Sync + 'static {
    /// Answers when the database is reachable and takes writes: after a failed commit
    /// (a full disk) the embedded store answers an error until a write fits again.
    async fn ping(&self) -> StoreResult<()>;

    // ---- keys
    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()>;
    /// The live key with this hash.
    async fn find_key(&self, key_hash: &[u8]) -> StoreResult<Option<KeyRecord>>;
    /// Revokes every live key of a principal and inserts its new one, atomically.
    async fn rotate_key(&self, new_key: &KeyRecord, now: i64) -> StoreResult<()>;

    // ---- apps
    /// Inserts an app with its first key, in one transaction (a failure leaves neither).
    async fn insert_app(
        &self,
        appid: &str,
        app: &str,
        signing: Option<&SigningSecrets>,
        key: Option<&KeyRecord>,
    ) -> StoreResult<()>;
    async fn get_app(&self, appid: &str) -> StoreResult<Option<String>>;
    async fn put_app(&self, appid: &str, app: &str) -> StoreResult<()>;
    /// The app's fetch-signing secrets: `Ok(None)` for an app created before apps had
    /// one; `NotFound` when there is no such app.
    async fn app_signing(&self, appid: &str) -> StoreResult<Option<SigningSecrets>>;
    async fn set_app_signing(&self, appid: &str, signing: &SigningSecrets) -> StoreResult<()>;

    // ---- providers
    /// Inserts a provider with its first key, choosing its number, in one transaction.
    async fn insert_provider(
        &self,
        provider: &NewProvider,
        key: Option<&KeyRecord>,
    ) -> StoreResult<ProviderRecord>;
    async fn get_provider(&self, provider: &str) -> StoreResult<Option<ProviderRecord>>;
    async fn update_provider(&self, provider: &ProviderRecord) -> StoreResult<()>;
    async fn provider_by_num(&self, provider_num: i64) -> StoreResult<Option<ProviderRecord>>;

    // ---- devices and forms
    /// Inserts a device with its first key and first events, in one transaction.
    async fn insert_device(
        &self,
        device: &DeviceRecord,
        next_wake_at: Option<i64>,
        key: Option<&KeyRecord>,
        events: &[NewEvent],
    ) -> StoreResult<()>;
    async fn get_device(&self, device_id: &str) -> StoreResult<Option<DeviceRecord>>;
    /// Writes a device's new state and everything it caused, if its version is still
    /// `commit.expected_version`. Answers once committed; commits that arrive together
    /// share one transaction and one durable commit (group commit), each keeping its
    /// own answer.
    async fn commit_device(&self, commit: DeviceCommit) -> StoreResult<()>;
    async fn get_form(&self, form_id: &str) -> StoreResult<Option<FormRecord>>;
    async fn form_by_num(&self, form_num: i64) -> StoreResult<Option<FormRecord>>;
    async fn forms_of_provider(&self, provider: &str) -> StoreResult<Vec<FormRecord>>;
    async fn forms_of_device(&self, device_id: &str) -> StoreResult<Vec<FormRecord>>;
    async fn next_form_num(&self) -> StoreResult<i64>;
    async fn get_form_data(&self, form_id: &str) -> StoreResult<Option<FormData>>;
    /// The stored data of every form of a device.
    async fn form_data_of_device(&self, device_id: &str) -> StoreResult<Vec<DeviceFormData>>;
    /// Stores a form's new data and the host event announcing it, together; without an
    /// event the data is announced later by `announce_pending_data`.
    async fn put_form_data(&self, data: &FormData, event: Option<&NewEvent>) -> StoreResult<()>;
    /// Announces data that arrived while the form was hidden; true when there was some.
    async fn announce_pending_data(
        &self,
        form_id: &str,
        event_for: &EventBuilder,
    ) -> StoreResult<bool>;
    async fn recent_decisions(&self, form_id: &str, limit: i64) -> StoreResult<Vec<DecisionNote>>;

    // ---- deliveries
    /// Claims up to `limit` deliveries due at or before `now` until `lease_until`.
    async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// Records an attempt's outcome (once: a finished delivery stays finished) and
    /// counts it in its provider's hourly statistics.
    async fn finish_delivery(
        &self,
        delivery_id: &str,
        finish: &DeliveryFinish,
        timing: &AttemptTiming,
    ) -> StoreResult<()>;
    /// Gives back claims this node will not send now (their provider has as many sends
    /// in flight as it may, or the send is still running here): each delivery still
    /// pending and still carrying the claim's lease (`claimed_until`) is due again at
    /// `at`, counting no attempt. A delivery whose outcome was recorded meanwhile keeps
    /// the next attempt that outcome planned.
    async fn defer_deliveries(
        &self,
        delivery_ids: &[String],
        claimed_until: i64,
        at: i64,
    ) -> StoreResult<()>;

    // ---- host events
    async fn events_after(
        &self,
        device_id: &str,
        after_event_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>>;

    /// The latest event of each form and of each app of a device, oldest first.
    async fn latest_events(&self, device_id: &str) -> StoreResult<Vec<EventRecord>>;
    /// Whether the device still has the event `event_id`.
    async fn event_exists(&self, device_id: &str, event_id: i64) -> StoreResult<bool>;
    /// What the device's events after `after_event_id` are about, oldest first.
    async fn event_subjects_after(
        &self,
        device_id: &str,
        after_event_id: i64,
    ) -> StoreResult<Vec<EventSubject>>;
    /// The id of the device's newest event, 0 when it has none.
    async fn last_event_id(&self, device_id: &str) -> StoreResult<i64>;

    // ---- periodic fetch
    async fn get_pair(&self, appid: &str, user_id: &str) -> StoreResult<Option<PairRecord>>;
    /// A pair's state, version, token, cache time stamps and ETag: all but the cached
    /// body (`cached_data` is `None`), which is the only field that can be large.
    async fn get_pair_state(&self, appid: &str, user_id: &str) -> StoreResult<Option<PairRecord>>;
    /// [`Store::get_pair_state`] of many users of one app at once, in no given order;
    /// users without a pair are left out.
    async fn get_pair_states(&self, appid: &str, user_ids: &[&str])
        -> StoreResult<Vec<PairRecord>>;
    /// Inserts (`expected_version` 0) or updates a pair, with an optional log entry and
    /// an optional announcement to the user's devices; answers the devices announced to.
    async fn commit_pair(&self, commit: PairCommit) -> StoreResult<Vec<String>>;
    /// Inserts new pairs in one transaction (a bulk import); a pair that exists already
    /// is left as it is. Answers how many were inserted.
    async fn insert_pairs(&self, pairs: &[PairRecord]) -> StoreResult<u64>;
    /// Every pair of a user (across apps), by appid.
    async fn pairs_of_user(&self, user_id: &str) -> StoreResult<Vec<PairRecord>>;
    async fn fetch_log(
        &self,
        appid: &str,
        user_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<FetchLogEntry>>;

    // ---- scheduling
    /// Claims up to `limit` subjects due at or before `now` that no other node holds,
    /// for `node` until `lease_until`. A commit of the subject releases its claim; a
    /// claim whose node died expires at `lease_until`.
    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<(SubjectKey, i64)>>;
    /// How many subjects are due at or before `now` and not yet woken (the backlog).
    async fn count_due(&self, now: i64) -> StoreResult<i64>;
    /// The earliest planned wake-up of a subject that is not claimed at `now` (the
    /// next instant `claim_due` can hand anything out, leases aside).
    async fn earliest_wake_at(&self, now: i64) -> StoreResult<Option<i64>>;
    /// How many subjects have a planned wake-up.
    async fn count_planned(&self) -> StoreResult<i64>;
    /// Pairs whose state says a fetch was ordered; used to recover after a crash.
    async fn all_pairs_of_app(&self, appid: &str) -> StoreResult<Vec<PairRecord>>;

    /// Called once when a node starts. A store only one node can use (SQLite) releases
    /// every claim: they can only be its own predecessor's. A shared store does nothing;
    /// other nodes may be alive, and dead nodes' claims expire.
    async fn release_claims_at_start(&self) -> StoreResult<()> {
        Ok(())
    }

    // ---- host events across nodes
    /// Tells the other nodes that `device_id` has new host events. One node: nothing.
    async fn publish_host_event(&self, _device_id: &str) -> StoreResult<()> {
        Ok(())
    }
    /// Forwards other nodes' announcements into `sink` until the store closes. One node:
    /// returns at once.
    async fn forward_host_events(
        &self,
        _sink: tokio::sync::broadcast::Sender<String>,
    ) -> StoreResult<()> {
        Ok(())
    }

    // ---- listing (operator views; ids ascending, after the cursor id, at most `limit`)
    /// Apps as (appid, the rules' App as JSON).
    async fn list_apps(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<(String, String)>>;
    async fn list_providers(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ProviderRecord>>;
    /// Devices, of one user when `user_id` is given.
    async fn list_devices(
        &self,
        user_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<DeviceRecord>>;
    /// How many forms of each definition of `provider` are placed, by form name.
    async fn placed_form_counts(&self, provider: &str) -> StoreResult<Vec<(String, i64)>>;

    // ---- deletion: each in one transaction, keys deleted with their principal
    /// An app, its keys, every user's pair, cache and fetch log, and the `fetched_data`
    /// events it caused; answers the users whose pairs went.
    async fn delete_app(&self, appid: &str) -> StoreResult<Vec<String>>;
    /// A provider without placed forms (the engine removes them from their devices
    /// first), its keys and its deliveries.
    async fn delete_provider(&self, provider: &str) -> StoreResult<()>;
    /// A device, its keys, forms, their data, decisions, deliveries and events.
    async fn delete_device(&self, device_id: &str) -> StoreResult<()>;
    /// Every trace of a user: their devices (as `delete_device`), pairs, tokens, caches
    /// and fetch logs. Answers (devices, appids of the pairs) that went.
    async fn erase_user(&self, user_id: &str) -> StoreResult<(Vec<String>, Vec<String>)>;

    // ---- cloud environments managed through the API
    /// (env, base URL), by env.
    async fn list_cloud_envs(&self) -> StoreResult<Vec<(String, String)>>;
    async fn get_cloud_env(&self, env: &str) -> StoreResult<Option<String>>;
    /// Inserts or replaces.
    async fn put_cloud_env(&self, env: &str, base_url: &str) -> StoreResult<()>;
    async fn delete_cloud_env(&self, env: &str) -> StoreResult<()>;

    // ---- statistics (counted in the transactions that record what they count)
    /// An app's fetch counters from `from_hour` on.
    async fn fetch_stats(&self, appid: &str, from_hour: i64) -> StoreResult<Vec<StatRow>>;
    /// A provider's delivery and trigger counters from `from_hour` on.
    async fn provider_stats(&self, provider: &str, from_hour: i64) -> StoreResult<Vec<StatRow>>;
    /// Of an app's users: those with a token and a planned fetch, and those of them due
    /// at `now`.
    async fn pair_counts(&self, appid: &str, now: i64) -> StoreResult<(i64, i64)>;

    // ---- retention
    /// Deletes finished deliveries, events and statistics older than `before`.
    async fn prune(&self, before: i64) -> StoreResult<()>;
}
