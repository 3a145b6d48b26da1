//! The engine's core: its parts (store, clock, fetcher, sealer), the due-index, and the
//! one way a subject changes: `with_device` / `with_pair` load it, run the rules, commit
//! the new state together with the decisions it caused before anything is carried out,
//! and re-plan it; a change that lost a race with another writer runs again on fresh
//! state. The commands (`crate::commands`) and the loops (`crate::run`) change subjects
//! only through them.

use crate::clock::Clock;
use crate::due::DueHint;
use crate::error::EngineError;
use crate::running::RunningFetches;
use crate::secrets::{random_bytes, TokenSealer};
use crate::transport::Transport;
use crate::wire;
use refreshd_fetch::Fetcher;
use refreshd_rules::device::DeviceSettings;
use refreshd_rules::form_config::{check_document, ConfigReport, FormDefinition, LintContext};
use refreshd_rules::periodic::{App, FetchOrder, FetchPair};
use refreshd_rules::{Device, FormDecision, FormId, Instant, ProviderTraits, RefreshPlan, Trigger};
use refreshd_store::{
    DecisionNote, DeviceCommit, FormRecord, NewDelivery, NewEvent, PairCommit, PairRecord,
    ProviderRecord, Store, SubjectKey,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, Notify};

/// Settings the engine applies to every subject.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub device: DeviceSettings,
    /// P8's jitter window.
    pub fetch_jitter_minutes: u32,
    /// Cloud environments: `env` → internal base URL (P2).
    pub cloud_envs: HashMap<String, String>,
    /// How long an ordered fetch may stay unrecorded before it is ordered again.
    pub fetch_lease_ms: i64,
    /// This node's name in claims (random per process unless set).
    pub node_id: String,
    /// How long a claim on a due subject lasts; longer than the fetch deadline.
    pub claim_lease_ms: i64,
    /// How often the store is asked for due work that other nodes planned.
    pub poll_interval_ms: i64,
    /// How long a claimed delivery is held before another node may send it again;
    /// longer than one attempt's deadline.
    pub delivery_lease_ms: i64,
    /// The read cache's byte budget and its time-to-live in a fleet (`read_cache`).
    pub read_cache: crate::read_cache::ReadCacheSettings,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            device: DeviceSettings::default(),
            fetch_jitter_minutes: 0,
            cloud_envs: HashMap::new(),
            fetch_lease_ms: 60_000,
            node_id: new_id("node_"),
            claim_lease_ms: 60_000,
            poll_interval_ms: 1_000,
            delivery_lease_ms: 30_000,
            read_cache: Default::default(),
        }
    }
}

/// What a device change adds to its commit besides the rules' decisions.
#[derive(Default)]
pub(crate) struct DeviceExtras {
    pub add_forms: Vec<FormRecord>,
    pub remove_forms: Vec<String>,
    pub deliveries: Vec<NewDelivery>,
    pub events: Vec<NewEvent>,
}

pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) fetcher: Arc<Fetcher>,
    /// Where outbound requests go: the fetcher in the service, a stub in tests.
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) sealer: TokenSealer,
    pub(crate) settings: EngineSettings,
    /// When the wake loop must look at the store next (`due`).
    due: Mutex<DueHint>,
    pub(crate) due_changed: Notify,
    pub(crate) deliveries_waiting: Notify,
    locks: Mutex<HashMap<SubjectKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Device ids with new host events (SSE listeners re-read the store).
    host_events: broadcast::Sender<String>,
    /// Pairs whose fetch runs in this process now.
    pub(crate) fetching: Mutex<RunningFetches>,
    /// Each provider's parsed form definitions, so that adding or re-planning a form
    /// does not read the whole config again. One entry per provider, each holding at
    /// most `MAX_CONFIG_BYTES` of text: bounded by the number of providers.
    parsed_configs: Mutex<HashMap<String, ParsedConfig>>,
    /// Where committed form decisions are copied, when someone listens (`tap_decisions`).
    pub(crate) decision_tap: Mutex<Option<std::sync::mpsc::Sender<TappedDecision>>>,
    pub(crate) read_cache: crate::read_cache::ReadCache,
}

/// A form decision as the engine committed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TappedDecision {
    pub form_id: String,
    pub at: Instant,
    pub decision: FormDecision,
}

/// A provider's form definitions with the config text they were read from. The entry
/// is used only while the stored text is the same (compared whole, which costs far less
/// than reading it), so an upload through another node of a fleet is seen at once.
struct ParsedConfig {
    text: Arc<str>,
    system_app: bool,
    definitions: Arc<[FormDefinition]>,
}

/// Reads a config whose size is bounded by the rules (`MAX_CONFIG_BYTES`); called on a
/// blocking thread because a large one takes milliseconds of CPU.
pub fn parse_form_config(text: &str, system_app: bool) -> ConfigReport<Vec<FormDefinition>> {
    check_document(text, LintContext { system_app })
}

/// How often a change is tried when other writers keep winning.
pub(crate) const CONFLICT_RETRIES: u32 = 8;

/// Counts the attempts of one change that may lose races with other writers (a node of
/// the fleet, a launch beside a fetch): every retry loop asks it whether to go again,
/// so they all stop after [`CONFLICT_RETRIES`] attempts and count each lost race.
#[derive(Default)]
pub(crate) struct ConflictRetries {
    attempts: u32,
}

impl ConflictRetries {
    /// Whether the attempt that gave `result` lost a race and may be run again on
    /// fresh state.
    pub(crate) fn again<T>(&mut self, result: &Result<T, EngineError>) -> bool {
        self.attempts += 1;
        let again = matches!(result, Err(e) if e.is_conflict()) && self.attempts < CONFLICT_RETRIES;
        if again {
            metrics::counter!("refreshd_commit_conflicts_total").increment(1);
        }
        again
    }
}

/// A short random id with a readable prefix.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(random_bytes::<10>()))
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        fetcher: Arc<Fetcher>,
        sealer: TokenSealer,
        settings: EngineSettings,
    ) -> Arc<Self> {
        let transport: Arc<dyn Transport> = fetcher.clone();
        Self::with_transport(store, clock, fetcher, transport, sealer, settings)
    }

    /// An engine whose outbound requests go to `transport` instead of `fetcher` (which
    /// still checks configured URLs); tests and the engine-driven simulator play the
    /// network this way.
    pub fn with_transport(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        fetcher: Arc<Fetcher>,
        transport: Arc<dyn Transport>,
        sealer: TokenSealer,
        settings: EngineSettings,
    ) -> Arc<Self> {
        Arc::new(Engine {
            read_cache: crate::read_cache::ReadCache::for_engine(&settings, &store),
            store,
            clock,
            fetcher,
            transport,
            sealer,
            settings,
            due: Mutex::new(DueHint::default()),
            due_changed: Notify::new(),
            deliveries_waiting: Notify::new(),
            locks: Mutex::new(HashMap::new()),
            host_events: broadcast::channel(1024).0,
            fetching: Mutex::new(RunningFetches::default()),
            parsed_configs: Mutex::new(HashMap::new()),
            decision_tap: Mutex::new(None),
        })
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// A provider's signing secret as it is stored: sealed like users' tokens.
    pub fn seal_signing_secret(&self, secret: &str) -> String {
        self.sealer.seal_text(secret)
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Device ids whose host events changed; an SSE stream re-reads the store for its own.
    pub(crate) fn subscribe_host_events(&self) -> broadcast::Receiver<String> {
        self.host_events.subscribe()
    }

    /// Tells SSE streams, here and on the other nodes, that `device_id` has new events.
    pub(crate) fn announce_events(&self, device_id: &str) {
        let _ = self.host_events.send(device_id.to_string());
        // Other nodes of a fleet hear of it through the store; best effort, since SSE
        // streams also re-read the store every few seconds.
        let store = self.store.clone();
        let device_id = device_id.to_string();
        tokio::spawn(async move {
            if let Err(error) = store.publish_host_event(&device_id).await {
                tracing::debug!(%error, "announcing host events to other nodes failed");
            }
        });
    }

    /// Where announcements from other nodes are fed in.
    pub fn host_event_sender(&self) -> broadcast::Sender<String> {
        self.host_events.clone()
    }

    /// Prepares the wake loop at start: claims left by this node's predecessor are
    /// released (one node only) and the store's earliest planned wake-up is read. Nothing
    /// per subject is loaded: the store is the due-index. T5's catch-up follows
    /// naturally: overdue subjects are claimed and woken once at the current instant.
    pub async fn load_due_index(&self) -> Result<(), EngineError> {
        self.store.release_claims_at_start().await?;
        self.refresh_due_hint().await
    }

    /// Counts the subjects with a planned wake-up into the `refreshd_due_subjects`
    /// gauge and answers the count. It scans the whole index, so `serve` runs it beside
    /// the listener rather than before it.
    pub async fn count_due_subjects(&self) -> Result<i64, EngineError> {
        let planned = self.store.count_planned().await?;
        metrics::gauge!("refreshd_due_subjects").set(planned as f64);
        Ok(planned)
    }

    /// Reads the store's earliest planned wake-up into the hint (after a pass of the
    /// wake loop, and at start).
    pub(crate) async fn refresh_due_hint(&self) -> Result<(), EngineError> {
        self.due.lock().unwrap_or_else(|e| e.into_inner()).reset();
        let earliest = self.store.earliest_wake_at(self.now().as_millis()).await;
        let mut hint = self.due.lock().unwrap_or_else(|e| e.into_inner());
        match earliest {
            Ok(earliest) => {
                hint.merge_store(earliest);
                Ok(())
            }
            Err(error) => {
                // Unknown: look again at once rather than sleep past work.
                hint.planned(i64::MIN);
                Err(error.into())
            }
        }
    }

    /// A subject was committed with its next wake-up at `at`.
    pub(crate) fn plan(&self, at: Option<Instant>) {
        if let Some(at) = at {
            self.due
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .planned(at.as_millis());
            self.due_changed.notify_one();
        }
    }

    pub(crate) fn earliest_due(&self) -> Option<Instant> {
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .earliest()
            .map(Instant::from_millis)
    }

    /// One subject is changed by one task at a time in this process.
    pub(crate) async fn lock(&self, subject: SubjectKey) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(subject).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Loads a device, lets `change` apply inputs to it, and commits the new state with
    /// every decision (as deliveries and notes) in one transaction, even when `change`
    /// returns an error (the timers it ran first still count). When another writer (a
    /// node of the fleet) changed the device meanwhile, the change is run again on the
    /// fresh state; nothing was carried out, so nothing happens twice.
    pub(crate) async fn with_device<T>(
        &self,
        device_id: &str,
        mut change: impl FnMut(
            &mut Device,
            Instant,
            &mut Vec<FormDecision>,
            &mut DeviceExtras,
        ) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let _guard = self.lock(SubjectKey::Device(device_id.to_string())).await;
        let mut retries = ConflictRetries::default();
        loop {
            let result = self.try_device_change(device_id, &mut change).await;
            if !retries.again(&result) {
                return result;
            }
        }
    }

    async fn try_device_change<T>(
        &self,
        device_id: &str,
        change: &mut impl FnMut(
            &mut Device,
            Instant,
            &mut Vec<FormDecision>,
            &mut DeviceExtras,
        ) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let record = self
            .store
            .get_device(device_id)
            .await?
            .ok_or(EngineError::NotFound("not_found"))?;
        let mut device: Device =
            serde_json::from_str(&record.state).map_err(EngineError::corrupt)?;
        let now = self.now();
        let mut decisions = Vec::new();
        let mut extras = DeviceExtras::default();
        let result = change(&mut device, now, &mut decisions, &mut extras);
        let mut forms = self.store.forms_of_device(device_id).await?;
        forms.extend(extras.add_forms.iter().cloned());
        let by_num: HashMap<i64, &FormRecord> = forms.iter().map(|f| (f.form_num, f)).collect();
        let mut commit = DeviceCommit {
            device_id: device_id.to_string(),
            expected_version: record.version,
            state: serde_json::to_string(&device).map_err(EngineError::corrupt)?,
            next_wake_at: device.next_wakeup().map(Instant::as_millis),
            add_forms: extras.add_forms,
            remove_forms: extras.remove_forms,
            deliveries: extras.deliveries,
            events: extras.events,
            decisions: Vec::new(),
        };
        let mut tapped = Vec::new();
        for decision in &decisions {
            let Some(form) = by_num.get(&(decision.form().0 as i64)) else {
                continue;
            };
            tapped.push(TappedDecision {
                form_id: form.form_id.clone(),
                at: now,
                decision: *decision,
            });
            commit.decisions.push(DecisionNote {
                form_id: form.form_id.clone(),
                at: now.as_millis(),
                decision: decision.to_string(),
                rule: decision.rule().to_string(),
            });
            if let FormDecision::Refresh {
                trigger,
                deferred,
                counted,
                ..
            } = decision
            {
                metrics::counter!("refreshd_refreshes_total", "trigger" => trigger.as_str(), "counted" => if *counted { "true" } else { "false" }).increment(1);
                let deferred: Vec<&str> = deferred.iter().map(Trigger::as_str).collect();
                commit
                    .deliveries
                    .push(delivery_for(form, trigger.as_str(), &deferred, now));
            }
        }
        let has_deliveries = !commit.deliveries.is_empty();
        let has_events = !commit.events.is_empty();
        let started = std::time::Instant::now();
        self.store.commit_device(commit).await?;
        self.tap(tapped);
        metrics::histogram!("refreshd_store_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        self.plan(device.next_wakeup());
        if has_deliveries {
            self.deliveries_waiting.notify_one();
        }
        if has_events {
            self.announce_events(device_id);
        }
        result
    }

    /// Wakes a device whose timers are due.
    pub(crate) async fn wake_device(
        &self,
        device_id: &str,
        due_at: i64,
    ) -> Result<(), EngineError> {
        let lateness = self.now().millis_since(Instant::from_millis(due_at));
        metrics::histogram!("refreshd_lateness_seconds").record(lateness.max(0) as f64 / 1000.0);
        self.with_device(device_id, |device, now, out, _| {
            device.wake(now, out);
            Ok(())
        })
        .await
    }

    /// The definition and provider facts a new or re-planned form needs.
    pub(crate) fn plan_for(provider: &ProviderRecord, definition: &FormDefinition) -> RefreshPlan {
        RefreshPlan::new(
            definition,
            ProviderTraits {
                system_app: provider.system_app,
                api_version: u32::try_from(provider.api_version).ok(),
                market_update_duration: provider.market_update_duration,
            },
        )
    }

    /// The provider's valid definitions (none when it has no valid config), from the
    /// cache while the stored text is unchanged, else read on a blocking thread.
    pub async fn definitions(
        &self,
        provider: &ProviderRecord,
    ) -> Result<Arc<[FormDefinition]>, EngineError> {
        let Some(text) = provider.form_config.as_deref() else {
            return Ok(Arc::from(Vec::new()));
        };
        if let Some(cached) = self
            .parsed_configs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&provider.provider)
            .filter(|c| c.system_app == provider.system_app && *c.text == *text)
        {
            return Ok(cached.definitions.clone());
        }
        let text: Arc<str> = Arc::from(text);
        let system_app = provider.system_app;
        let parsing = text.clone();
        let report = tokio::task::spawn_blocking(move || parse_form_config(&parsing, system_app))
            .await
            .map_err(|e| EngineError::Corrupt(format!("reading a form config failed: {e}")))?;
        let definitions: Arc<[FormDefinition]> = Arc::from(report.value.unwrap_or_default());
        self.remember_definitions(&provider.provider, text, system_app, definitions.clone());
        Ok(definitions)
    }

    /// Keeps definitions just read from `text` (a config upload reads it anyway), so the
    /// next add of one of its forms does not read it again.
    pub(crate) fn remember_definitions(
        &self,
        provider: &str,
        text: Arc<str>,
        system_app: bool,
        definitions: Arc<[FormDefinition]>,
    ) {
        self.parsed_configs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                provider.to_string(),
                ParsedConfig {
                    text,
                    system_app,
                    definitions,
                },
            );
    }

    /// Whether the host shows the form now (F19); data for a hidden form waits.
    pub(crate) async fn is_form_visible(&self, form: &FormRecord) -> Result<bool, EngineError> {
        Ok(self
            .device_state(&form.device_id)
            .await?
            .form(FormId(form.form_num as u64))
            .is_some_and(|f| f.is_visible()))
    }

    /// A device's state, for explanations.
    pub(crate) async fn device_state(&self, device_id: &str) -> Result<Device, EngineError> {
        let record = self
            .store
            .get_device(device_id)
            .await?
            .ok_or(EngineError::NotFound("not_found"))?;
        serde_json::from_str(&record.state).map_err(EngineError::corrupt)
    }

    // ---- apps and pairs -------------------------------------------------------------

    pub async fn app(&self, appid: &str) -> Result<App, EngineError> {
        let text = self
            .store
            .get_app(appid)
            .await?
            .ok_or(EngineError::NotFound("app_not_found"))?;
        serde_json::from_str(&text).map_err(EngineError::corrupt)
    }

    /// Loads (or starts) a pair, lets `change` update it, and commits it.
    pub(crate) async fn with_pair<T>(
        &self,
        app: &App,
        user_id: &str,
        change: impl FnMut(&mut FetchPair, &mut PairRecord, Instant) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        Ok(self
            .with_pair_committed(app, user_id, None, change)
            .await?
            .0)
    }

    /// [`Engine::with_pair`], answering also the pair as committed (its cached body
    /// left out), for a fetch that follows at once and need not read it again. `known`
    /// is the pair as read just before (many at once), tried first; when it is no longer
    /// current its commit loses the version race and the pair is read again.
    pub(crate) async fn with_pair_committed<T>(
        &self,
        app: &App,
        user_id: &str,
        mut known: Option<PairRecord>,
        mut change: impl FnMut(&mut FetchPair, &mut PairRecord, Instant) -> Result<T, EngineError>,
    ) -> Result<(T, PairRecord), EngineError> {
        let key = SubjectKey::Pair {
            appid: app.appid().to_string(),
            user_id: user_id.to_string(),
        };
        let _guard = self.lock(key.clone()).await;
        let mut retries = ConflictRetries::default();
        loop {
            let result = self
                .try_pair_change(app, user_id, known.take(), &mut change)
                .await;
            if retries.again(&result) {
                continue;
            }
            self.read_cache.pair_changed(app.appid(), user_id);
            let (result, next, committed) = result?;
            self.plan(next);
            return Ok((result, committed));
        }
    }

    async fn try_pair_change<T>(
        &self,
        app: &App,
        user_id: &str,
        known: Option<PairRecord>,
        change: &mut impl FnMut(&mut FetchPair, &mut PairRecord, Instant) -> Result<T, EngineError>,
    ) -> Result<(T, Option<Instant>, PairRecord), EngineError> {
        let appid = app.appid();
        // The state without the cached body: a change through here never touches the
        // cache.
        let existing = match known {
            Some(record) => Some(record),
            None => self.store.get_pair_state(appid, user_id).await?,
        };
        let expected_version = existing.as_ref().map_or(0, |r| r.version);
        let mut record = existing.unwrap_or_else(|| PairRecord {
            appid: appid.to_string(),
            user_id: user_id.to_string(),
            ..PairRecord::default()
        });
        let mut pair: FetchPair = if record.state.is_empty() {
            FetchPair::default()
        } else {
            serde_json::from_str(&record.state).map_err(EngineError::corrupt)?
        };
        let now = self.now();
        let result = change(&mut pair, &mut record, now)?;
        let next = if pair.is_in_flight() {
            Some(now.plus_millis(self.settings.fetch_lease_ms))
        } else {
            pair.next_wakeup(now, app)
        };
        record.state = serde_json::to_string(&pair).map_err(EngineError::corrupt)?;
        record.next_wake_at = next.map(Instant::as_millis);
        let committed = PairRecord {
            version: expected_version + 1,
            ..record.clone()
        };
        self.store
            .commit_pair(PairCommit {
                record,
                expected_version,
                log: None,
                announce: None,
                lateness_ms: None,
                write_cache: false,
            })
            .await?;
        Ok((result, next, committed))
    }

    /// A cloud environment's base URL: the one the operator set through the API, else
    /// the configuration file's. Read from the store each time, so every node of a
    /// fleet follows a change at once.
    pub(crate) async fn cloud_base_url(&self, env: &str) -> Result<Option<String>, EngineError> {
        if let Some(base) = self.store.get_cloud_env(env).await? {
            return Ok(Some(base));
        }
        Ok(self.settings.cloud_envs.get(env).cloned())
    }

    /// Orders a due fetch of `user_id`'s pair of `app`, if the rules say one is due.
    pub(crate) async fn order_due_fetch(
        &self,
        app: &App,
        user_id: &str,
        known: Option<PairRecord>,
    ) -> Result<Option<(FetchOrder, PairRecord)>, EngineError> {
        let appid = app.appid();
        let (running, app_is_full) = {
            let fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            (
                fetching.is_running(appid, user_id),
                fetching.app_is_full(appid),
            )
        };
        if app_is_full {
            // Its claim holds the pair until it lapses; it is ordered then.
            metrics::counter!("refreshd_fetches_postponed_total").increment(1);
            return Ok(None);
        }
        let (order, committed) = self
            .with_pair_committed(app, user_id, known, |pair, _, now| {
                if pair.is_in_flight() {
                    if running {
                        return Ok(None);
                    }
                    // Ordered before a crash and never recorded: order it again (T5).
                    pair.abandon_in_flight();
                }
                Ok(pair.wake(now, app, user_id))
            })
            .await?;
        Ok(order.map(|order| (order, committed)))
    }
}

/// A delivery row for a refresh decision: the body is fixed now, so every retry sends
/// the same bytes under the same id.
pub(crate) fn delivery_for(
    form: &FormRecord,
    trigger: &str,
    deferred: &[&str],
    now: Instant,
) -> NewDelivery {
    NewDelivery {
        delivery_id: new_id("dlv_"),
        form_id: form.form_id.clone(),
        device_id: form.device_id.clone(),
        provider: form.provider.clone(),
        body: wire::delivery_body(form, trigger, deferred, now),
        trigger: trigger.to_string(),
        next_attempt_at: now.as_millis(),
        created_at: now.as_millis(),
    }
}
