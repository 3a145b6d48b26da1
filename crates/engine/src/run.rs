//! The engine's loops: waking due subjects, carrying out fetches and deliveries.

use crate::engine::{ConflictRetries, Engine, TappedDecision};
use crate::error::EngineError;
use crate::secrets::signature_header;
use crate::wire::{fetched_data_announcement, form_data_event};
use futures_util::StreamExt;
use refreshd_fetch::{BlockReason, FetchFailure, Outbound};
use refreshd_rules::periodic::{
    fetch_url, App, FetchAnswer, FetchCache, FetchOrder, FetchOutcome, Source,
};
use refreshd_rules::Instant;
use refreshd_store::{
    AttemptTiming, DeliveryFinish, DeliveryRecord, FetchLogEntry, FormData, PairCommit, PairRecord,
    ProviderRecord, SigningSecrets, SubjectKey,
};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Subjects claimed per look at the store.
const CLAIM_BATCH: i64 = 256;
/// Due pairs woken at once within one step: their commits are written together.
const PAIR_WAKES_AT_ONCE: usize = 64;
/// Ordered fetches being carried out by this node at once, at most. Each is a task and
/// a pair's state; the per-origin limit decides how many reach one origin at a time.
pub const MAX_FETCHES_IN_FLIGHT: usize = 4096;
/// Deliveries claimed per look at the store.
const DELIVERY_CLAIM_BATCH: usize = 64;
/// Deliveries being sent by this node at once, at most. Sends are cheap tasks (most of
/// their life is waiting on the network), but claims must not run ahead of what can be
/// sent before their lease ends; one origin's share is bounded by the fetcher.
pub const MAX_DELIVERIES_IN_FLIGHT: usize = 1024;
/// Finished deliveries and host events are kept this long (api.md).
pub const RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// A finished fetch, ready to be recorded.
struct FetchCompletion {
    answer: FetchAnswer,
    log: FetchLogEntry,
    /// How long after it was due a scheduled fetch was sent.
    lateness_ms: Option<i64>,
}

/// The deliveries this node is sending; owned by the delivery loop.
#[derive(Default)]
pub struct DeliveryDispatcher {
    sends: JoinSet<()>,
    /// Deliveries whose attempt is not recorded yet, and how many each provider has.
    sending: Arc<Mutex<Sending>>,
}

#[derive(Default)]
struct Sending {
    ids: HashSet<String>,
    per_provider: HashMap<String, usize>,
}

/// Marks one delivery as being sent until its send has recorded its outcome. A claim
/// of a marked delivery (its lease ran out, or its retry fell due before the send task
/// ended) is given back at once rather than sent a second time.
struct SendingMark {
    sending: Arc<Mutex<Sending>>,
    id: String,
    provider: String,
}

impl Drop for SendingMark {
    fn drop(&mut self) {
        let mut sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        sending.ids.remove(&self.id);
        if let Some(n) = sending.per_provider.get_mut(&self.provider) {
            *n -= 1;
            if *n == 0 {
                sending.per_provider.remove(&self.provider);
            }
        }
    }
}

impl DeliveryDispatcher {
    /// Deliveries being sent now.
    pub fn in_flight(&self) -> usize {
        self.sends.len()
    }

    fn is_full(&self) -> bool {
        self.in_flight() >= MAX_DELIVERIES_IN_FLIGHT
    }

    fn forget_finished(&mut self) {
        while let Some(done) = self.sends.try_join_next() {
            log_failed_send(done);
        }
    }

    async fn one_finished(&mut self) {
        if let Some(done) = self.sends.join_next().await {
            log_failed_send(done);
        }
    }

    /// Waits for every send in flight.
    pub async fn finish_all(&mut self) {
        while !self.sends.is_empty() {
            self.one_finished().await;
        }
    }
}

/// A send that panicked is logged; its delivery is sent again under the same id when
/// its lease ends.
fn log_failed_send(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        tracing::error!(%error, "a delivery send failed unexpectedly");
    }
}

/// What one step of the delivery loop did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchStep {
    /// The claim returned as many as it asked for: more may be due now.
    pub batch_full: bool,
    /// Sends started.
    pub started: usize,
}

/// A fetch the rules ordered when its pair was woken; `Engine::execute_fetch` carries
/// it out and records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueFetch {
    pub appid: String,
    pub user_id: String,
    pub order: FetchOrder,
    /// When the pair was due, for a scheduled fetch (its lateness is counted); `None`
    /// for a fetch-now.
    pub due_at: Option<Instant>,
    /// The app as it was read when the fetch was ordered (read again when absent).
    pub app: Option<Arc<FetchingApp>>,
    /// The pair as the order committed it, without its cached body (read again when
    /// absent; when another change moved it since, recording reads it again anyway).
    pub pair: Option<PairRecord>,
}

/// An app as its fetches need it: its rules and its signing secrets, read once per wake
/// pass and handed to every fetch the pass orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchingApp {
    pub app: App,
    /// `None` for an app created before apps had one (it fetches unsigned until its
    /// secret is rotated).
    pub signing: Option<SigningSecrets>,
}

/// What one step of the wake loop did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WakeStep {
    /// Subjects claimed and woken.
    pub woken: usize,
    /// The claim returned as many as it asked for: more may be due now.
    pub batch_full: bool,
    /// Fetches the woken pairs ordered, not yet carried out.
    pub fetches: Vec<DueFetch>,
}

/// What a fetch returns to its caller (`fetch-now` answers with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    pub outcome: FetchOutcome,
    /// Whether the gray URL was fetched (P3, P4).
    pub gray: bool,
    pub http_status: Option<u16>,
    pub time_stamp: Option<i64>,
}

impl Engine {
    /// Wakes due subjects until `shutdown` turns true. A subject that fails is logged
    /// and planned again shortly; one bad subject never stops the loop. At most
    /// [`MAX_FETCHES_IN_FLIGHT`] ordered fetches run at once; the loop claims no more
    /// while they are all taken, so a backlog waits in the store, not in memory.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let fetch_slots = Arc::new(Semaphore::new(MAX_FETCHES_IN_FLIGHT));
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = self.now();
            let step = self.wake_due_once().await;
            for fetch in step.fetches {
                // Ordered fetches are leased: one not started before shutdown is
                // ordered again once its lease ends (T5).
                let slot = tokio::select! {
                    slot = fetch_slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = shutdown.changed() => return,
                };
                let engine = self.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let appid = fetch.appid.clone();
                    if let Err(error) = engine.execute_fetch(fetch).await {
                        metrics::counter!("refreshd_engine_errors_total", "step" => "record_fetch")
                            .increment(1);
                        tracing::warn!(%appid, %error, "a periodic fetch could not be recorded");
                    }
                });
            }
            if step.batch_full {
                continue;
            }
            // What is due and not yet woken, after this pass (zero when keeping up).
            match self.store.count_due(self.now().as_millis()).await {
                Ok(backlog) => metrics::gauge!("refreshd_due_backlog").set(backlog as f64),
                Err(error) => tracing::debug!(%error, "counting the backlog failed"),
            }
            if let Err(error) = self.refresh_due_hint().await {
                // The poll below looks again.
                tracing::warn!(%error, "reading the earliest planned wake-up failed");
            }
            let poll_at = now.plus_millis(self.settings.poll_interval_ms);
            let wake_at = self.earliest_due().map_or(poll_at, |at| at.min(poll_at));
            tokio::select! {
                _ = self.clock.sleep_until(wake_at) => {}
                _ = self.due_changed.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One step of the wake loop at the clock's `now`: claims the subjects that are
    /// due (the store is the due-index, so in a fleet each subject is woken by one node
    /// and a dead node's claims expire), wakes each, and hands back the fetches the
    /// woken pairs ordered. A subject that fails is logged; its claim stays until the
    /// lease ends, then any node tries again.
    pub async fn wake_due_once(&self) -> WakeStep {
        let now = self.now();
        let lease_until = now.plus_millis(self.settings.claim_lease_ms);
        let claimed = match self
            .store
            .claim_due(
                &self.settings.node_id,
                now.as_millis(),
                lease_until.as_millis(),
                CLAIM_BATCH,
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                metrics::counter!("refreshd_engine_errors_total", "step" => "claim").increment(1);
                tracing::warn!(%error, "claiming due subjects failed; retrying");
                Vec::new()
            }
        };
        let mut step = WakeStep {
            woken: claimed.len(),
            batch_full: claimed.len() as i64 == CLAIM_BATCH,
            fetches: Vec::new(),
        };
        // Devices one by one, in the order they were due (their decisions are reported
        // in that order); then the pairs, many at once, so that their commits share
        // group commits. The fetches they order keep the pairs' order.
        let mut pairs = Vec::new();
        for (subject, due_at) in claimed {
            match subject {
                SubjectKey::Device(id) => {
                    if let Err(error) = self.wake_device(&id, due_at).await {
                        metrics::counter!("refreshd_engine_errors_total", "step" => "wake")
                            .increment(1);
                        tracing::warn!(device_id = %id, %error, "waking a subject failed");
                    }
                }
                SubjectKey::Pair { appid, user_id } => pairs.push((appid, user_id, due_at)),
            }
        }
        // Each app is read once per pass, and handed to the fetches it orders.
        let mut apps: HashMap<String, Option<Arc<FetchingApp>>> = HashMap::new();
        for (appid, _, _) in &pairs {
            if apps.contains_key(appid) {
                continue;
            }
            let app = match self.fetching_app(appid).await {
                Ok(app) => Some(Arc::new(app)),
                // Deleted: its pairs went with it.
                Err(EngineError::NotFound(_)) => None,
                Err(error) => {
                    metrics::counter!("refreshd_engine_errors_total", "step" => "wake")
                        .increment(1);
                    tracing::warn!(%appid, %error, "reading an app failed; its due pairs wait for their claims to lapse");
                    None
                }
            };
            apps.insert(appid.clone(), app);
        }
        // And their pairs with one read per app, each tried first by its order.
        let mut users_of: HashMap<&str, Vec<&str>> = HashMap::new();
        for (appid, user_id, _) in &pairs {
            if matches!(apps.get(appid), Some(Some(_))) {
                users_of.entry(appid).or_default().push(user_id);
            }
        }
        let mut known: HashMap<(String, String), PairRecord> = HashMap::new();
        for (appid, users) in users_of {
            match self.store.get_pair_states(appid, &users).await {
                Ok(records) => known.extend(
                    records
                        .into_iter()
                        .map(|r| ((r.appid.clone(), r.user_id.clone()), r)),
                ),
                // Each order reads its own pair instead.
                Err(error) => tracing::debug!(%appid, %error, "reading due pairs failed"),
            }
        }
        let ordered: Vec<_> = futures_util::stream::iter(pairs)
            .filter_map(|(appid, user_id, due_at)| {
                let app = apps.get(&appid).cloned().flatten();
                let pair = known.remove(&(appid, user_id.clone()));
                std::future::ready(app.map(|app| (app, user_id, due_at, pair)))
            })
            .map(|(app, user_id, due_at, pair)| async move {
                let order = self.order_due_fetch(&app.app, &user_id, pair).await;
                (app, user_id, due_at, order)
            })
            .buffered(PAIR_WAKES_AT_ONCE)
            .collect()
            .await;
        for (app, user_id, due_at, order) in ordered {
            match order {
                Ok(Some((order, pair))) => step.fetches.push(DueFetch {
                    appid: app.app.appid().to_string(),
                    user_id,
                    order,
                    due_at: Some(Instant::from_millis(due_at)),
                    app: Some(app),
                    pair: Some(pair),
                }),
                Ok(None) => {}
                Err(error) => {
                    metrics::counter!("refreshd_engine_errors_total", "step" => "wake")
                        .increment(1);
                    tracing::warn!(appid = app.app.appid(), %error, "waking a subject failed");
                }
            }
        }
        step
    }

    /// The earliest instant a subject is planned to wake at, read from the store (the
    /// due-index), if any; subjects claimed right now are not counted.
    pub async fn next_wakeup(&self) -> Result<Option<Instant>, EngineError> {
        Ok(self
            .store
            .earliest_wake_at(self.now().as_millis())
            .await?
            .map(Instant::from_millis))
    }

    /// An app with its signing secrets, as its fetches need it.
    pub(crate) async fn fetching_app(&self, appid: &str) -> Result<FetchingApp, EngineError> {
        let app = self.app(appid).await?;
        self.with_signing(app).await
    }

    /// `app` with its signing secrets read beside it.
    pub(crate) async fn with_signing(&self, app: App) -> Result<FetchingApp, EngineError> {
        let signing = self.store.app_signing(app.appid()).await?;
        Ok(FetchingApp { app, signing })
    }

    /// Starts copying every committed form decision to the returned receiver (one
    /// listener at a time; a new call replaces the previous one). For drivers that
    /// report decisions, such as the engine-driven simulator.
    pub fn tap_decisions(&self) -> std::sync::mpsc::Receiver<TappedDecision> {
        let (sender, receiver) = std::sync::mpsc::channel();
        *self.decision_tap.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        receiver
    }

    pub(crate) fn tap(&self, decisions: Vec<TappedDecision>) {
        let mut tap = self.decision_tap.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = tap.as_ref() {
            if decisions.into_iter().any(|d| sender.send(d).is_err()) {
                // The listener is gone.
                *tap = None;
            }
        }
    }

    /// Carries out an ordered fetch and records its outcome (P8, P9, P13, P14).
    pub async fn execute_fetch(&self, fetch: DueFetch) -> Result<FetchReport, EngineError> {
        let appid = fetch.appid.clone();
        let user_id = fetch.user_id.clone();
        let (appid, user_id) = (appid.as_str(), user_id.as_str());
        self.fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start(appid, user_id);
        let report = self.fetch_and_record(fetch).await;
        self.fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(appid, user_id);
        report
    }

    async fn fetch_and_record(&self, fetch: DueFetch) -> Result<FetchReport, EngineError> {
        let DueFetch {
            appid,
            user_id,
            order,
            due_at,
            app,
            pair,
        } = fetch;
        let (appid, user_id) = (appid.as_str(), user_id.as_str());
        let app = match app {
            Some(app) => app,
            None => Arc::new(self.fetching_app(appid).await?),
        };
        // The pair as the order left it; its cached body is read only if a 304 keeps it.
        let (record, body_read) = match pair {
            Some(record) => (record, false),
            None => (
                self.store
                    .get_pair(appid, user_id)
                    .await?
                    .unwrap_or_default(),
                true,
            ),
        };
        let token = match &record.token_sealed {
            Some(sealed) => self.sealer.open(sealed).map_err(EngineError::corrupt)?,
            None => String::new(),
        };
        let base = match &order.target.source {
            Source::Url(url) => Some(url.clone()),
            // Names are checked when configured (P2); one stored before that check
            // existed is refused here rather than sent out of the base path.
            Source::Cloud { env, function } => self
                .cloud_base_url(env)
                .await?
                .filter(|_| {
                    refreshd_rules::periodic::check_cloud_name("function", function).is_ok()
                })
                .map(|base| format!("{}/{function}", base.trim_end_matches('/'))),
        };
        let sent_at = self.now();
        // Only the ETag matters before the fetch (P12); the body is not copied.
        let cache = FetchCache {
            etag: record
                .etag
                .clone()
                .zip(record.etag_url.clone())
                .map(|(e, u)| (u, e)),
            ..FetchCache::default()
        };
        let started = std::time::Instant::now();
        let result = match &base {
            Some(base) => {
                let url = fetch_url(base, app.app.appid(), &token, sent_at.as_millis());
                let wall = UNIX_EPOCH + Duration::from_millis(sent_at.as_millis().max(0) as u64);
                let signature = self.fetch_signature(appid, app.signing.as_ref(), &url);
                self.transport
                    .fetch_periodic(&url, cache.if_none_match(base), signature.as_deref(), wall)
                    .await
            }
            // A cloud environment missing from the configuration cannot be reached.
            None => refreshd_fetch::FetchResult {
                outcome: FetchOutcome::Connect,
                http_status: None,
                body: None,
                etag: None,
                retry_after: None,
                bytes: 0,
            },
        };
        let elapsed = started.elapsed();
        metrics::counter!("refreshd_fetches_total", "outcome" => result.outcome.as_str())
            .increment(1);
        metrics::histogram!("refreshd_fetch_seconds").record(elapsed.as_secs_f64());
        let completed = self.now();
        let retry_after_ms = result.retry_after.map(|d| d.as_millis() as i64);
        let report = FetchReport {
            outcome: result.outcome,
            gray: order.target.gray,
            http_status: result.http_status,
            time_stamp: None,
        };
        let gray = order.target.gray;
        let log = FetchLogEntry {
            at: sent_at.as_millis(),
            gray,
            outcome: result.outcome.as_str().to_string(),
            http_status: result.http_status.map(i64::from),
            bytes: result.bytes as i64,
            duration_ms: elapsed.as_millis() as i64,
        };
        // Record under the pair's lock, on its current version; another node may have
        // changed the pair meanwhile (a launch, a token): then read and apply again.
        let _guard = self
            .lock(SubjectKey::Pair {
                appid: appid.to_string(),
                user_id: user_id.to_string(),
            })
            .await;
        let completion = FetchCompletion {
            answer: FetchAnswer {
                url: base.clone().unwrap_or_default(),
                outcome: result.outcome,
                body: result.body.unwrap_or_default(),
                etag: result.etag,
                retry_after_ms,
                sent_at,
                completed_at: completed,
            },
            log,
            lateness_ms: due_at.map(|due| sent_at.millis_since(due).max(0)),
        };
        let mut retries = ConflictRetries::default();
        // The record read before the fetch is applied first; only when the pair changed
        // meanwhile (a lost race), or a 304 keeps a body not read yet, is it read again.
        let keeps_unread_body = completion.answer.outcome == FetchOutcome::NotModified
            && !body_read
            && record.cached_at.is_some();
        let mut known = (!keeps_unread_body).then_some(record);
        let (time_stamp, next) = loop {
            let result = self
                .record_fetch(&app.app, user_id, &completion, known.take())
                .await;
            if !retries.again(&result) {
                break result?;
            }
        };
        self.plan(next);
        Ok(FetchReport {
            time_stamp,
            ..report
        })
    }

    /// Applies a completed fetch to the pair, its cache and its log, in one commit;
    /// `known` is the pair as last read, if it may still be current.
    async fn record_fetch(
        &self,
        app: &refreshd_rules::periodic::App,
        user_id: &str,
        done: &FetchCompletion,
        known: Option<PairRecord>,
    ) -> Result<(Option<i64>, Option<Instant>), EngineError> {
        let mut record = match known {
            Some(record) => record,
            None => self
                .store
                .get_pair(app.appid(), user_id)
                .await?
                .unwrap_or_default(),
        };
        let mut pair: refreshd_rules::periodic::FetchPair =
            serde_json::from_str(&record.state).map_err(EngineError::corrupt)?;
        let cached_before = record.cached_at;
        let mut cache = FetchCache {
            data: record.cached_data.take(),
            time_stamp_ms: record.cached_at,
            sent_at_ms: record.cached_sent_at,
            etag: record
                .etag
                .take()
                .zip(record.etag_url.take())
                .map(|(e, u)| (u, e)),
        };
        let completion = pair.complete(
            app,
            user_id,
            done.answer.clone(),
            self.settings.fetch_jitter_minutes,
            &mut cache,
        );
        record.cached_data = cache.data;
        record.cached_at = cache.time_stamp_ms;
        record.cached_sent_at = cache.sent_at_ms;
        (record.etag_url, record.etag) = match cache.etag {
            Some((url, etag)) => (Some(url), Some(etag)),
            None => (None, None),
        };
        let next = completion.next_wakeup;
        record.state = serde_json::to_string(&pair).map_err(EngineError::corrupt)?;
        record.next_wake_at = next.map(Instant::as_millis);
        let expected_version = record.version;
        let time_stamp = record.cached_at;
        // New data goes to the user's devices with the commit that stores it, so a
        // device hears of exactly what is cached (and a 304 or a failure says nothing).
        let announce = match (&record.cached_data, record.cached_at) {
            (Some(data), Some(at)) if record.cached_at != cached_before => Some(
                fetched_data_announcement(app.appid(), data, at, done.answer.completed_at),
            ),
            _ => None,
        };
        let announced = self
            .store
            .commit_pair(PairCommit {
                record,
                expected_version,
                log: Some(done.log.clone()),
                announce,
                lateness_ms: done.lateness_ms,
                write_cache: completion.cache_changed,
            })
            .await;
        // Even when the commit's answer is an error: it may have been written.
        self.read_cache.pair_changed(app.appid(), user_id);
        let announced = announced?;
        for device_id in &announced {
            self.announce_events(device_id);
        }
        Ok((time_stamp, next))
    }

    /// Sends due deliveries until `shutdown` turns true, then lets the sends in flight
    /// finish (each is bounded by the fetch deadline) so that their outcomes are
    /// recorded rather than repeated after the lease.
    pub async fn run_deliveries(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut dispatcher = DeliveryDispatcher::default();
        let mut next_prune = self.now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = self.now();
            if now >= next_prune {
                if let Err(error) = self.store.prune(now.as_millis() - RETENTION_MS).await {
                    metrics::counter!("refreshd_engine_errors_total", "step" => "prune")
                        .increment(1);
                    tracing::warn!(%error, "pruning old records failed");
                }
                next_prune = now.plus_millis(3_600_000);
            }
            match self.dispatch_deliveries(&mut dispatcher).await {
                // More may be due at once: claim again without waiting (unless the whole
                // batch was deferred, which would only claim it again).
                Ok(step) if step.batch_full && step.started > 0 => continue,
                Ok(_) => {}
                Err(error) => {
                    metrics::counter!("refreshd_engine_errors_total", "step" => "read_deliveries")
                        .increment(1);
                    tracing::warn!(%error, "reading due deliveries failed")
                }
            }
            let full = dispatcher.is_full();
            tokio::select! {
                _ = self.clock.sleep_until(now.plus_millis(1_000)) => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.deliveries_waiting.notified() => {}
                // At the bound, a finished send is what makes room for the next claim.
                _ = dispatcher.one_finished(), if full => {}
                _ = shutdown.changed() => {}
            }
        }
        dispatcher.finish_all().await;
    }

    /// One step of the delivery loop: forgets finished sends, claims due deliveries up
    /// to the in-flight bound and starts each at once. Nothing here waits for a send,
    /// so a provider whose `refresh_url` hangs holds only its own sends (and the
    /// fetcher's per-origin limit keeps it to a few connections); everyone else's
    /// deliveries keep being claimed and sent.
    pub async fn dispatch_deliveries(
        self: &Arc<Self>,
        dispatcher: &mut DeliveryDispatcher,
    ) -> Result<DispatchStep, EngineError> {
        dispatcher.forget_finished();
        let room = MAX_DELIVERIES_IN_FLIGHT.saturating_sub(dispatcher.in_flight());
        let limit = room.min(DELIVERY_CLAIM_BATCH);
        if limit == 0 {
            return Ok(DispatchStep::default());
        }
        let now = self.now();
        let lease_until = now.plus_millis(self.settings.delivery_lease_ms);
        let claimed = self
            .store
            .claim_deliveries(now.as_millis(), lease_until.as_millis(), limit as i64)
            .await?;
        let mut step = DispatchStep {
            batch_full: claimed.len() == limit,
            started: 0,
        };
        // A provider gets as many sends at once as the fetcher lets one origin have:
        // more would only queue behind that limit, holding the node's in-flight room
        // (and timing out in the queue) while other providers wait.
        let per_provider = self.fetcher.limits().per_origin.max(1);
        let mut deferred = Vec::new();
        for delivery in claimed {
            let mark = {
                let mut sending = dispatcher.sending.lock().unwrap_or_else(|e| e.into_inner());
                // Still being sent here (its lease ran out, or its retry fell due
                // before the send task ended): given back, not sent twice.
                if sending.ids.contains(&delivery.delivery_id) {
                    deferred.push(delivery.delivery_id);
                    continue;
                }
                let busy = sending
                    .per_provider
                    .get(&delivery.provider)
                    .copied()
                    .unwrap_or(0);
                if busy >= per_provider {
                    deferred.push(delivery.delivery_id);
                    continue;
                }
                sending.ids.insert(delivery.delivery_id.clone());
                *sending
                    .per_provider
                    .entry(delivery.provider.clone())
                    .or_default() += 1;
                SendingMark {
                    sending: dispatcher.sending.clone(),
                    id: delivery.delivery_id.clone(),
                    provider: delivery.provider.clone(),
                }
            };
            let engine = self.clone();
            dispatcher
                .sends
                .spawn(async move { engine.deliver(delivery, mark).await });
            step.started += 1;
        }
        if !deferred.is_empty() {
            // Back to due shortly, not at the lease's end: a busy provider's next
            // deliveries go out as soon as its sends finish, and the claims in between
            // reach everyone else's.
            let at = now.plus_millis(self.settings.poll_interval_ms.max(1));
            self.store
                .defer_deliveries(&deferred, lease_until.as_millis(), at.as_millis())
                .await?;
        }
        Ok(step)
    }

    /// One delivery attempt (F20; api.md): a signed POST; a 2xx JSON answer becomes
    /// the form's data; failures retry under the same delivery id.
    /// `_sending` is held until the outcome is recorded (see [`SendingMark`]).
    async fn deliver(&self, delivery: DeliveryRecord, _sending: SendingMark) {
        let attempts = delivery.attempts + 1;
        let sent_at = self.now();
        let started = std::time::Instant::now();
        let outcome = self.send_delivery(&delivery).await;
        let timing = AttemptTiming {
            at: sent_at.as_millis(),
            duration_ms: started.elapsed().as_millis() as i64,
        };
        let now = self.now();
        let visible = match self.store.get_form(&delivery.form_id).await {
            Ok(Some(form)) => self.is_form_visible(&form).await.unwrap_or(true),
            _ => true,
        };
        let finish = match outcome {
            Ok(data) => {
                let data = data.map(|data| {
                    let trigger = delivery.trigger.clone();
                    let data = FormData {
                        form_id: delivery.form_id.clone(),
                        data,
                        updated_at: now.as_millis(),
                        trigger,
                    };
                    // Data for a hidden form reaches the host when it is shown (F20).
                    let event = visible.then(|| form_data_event(&data, &delivery.device_id, now));
                    (data, event)
                });
                DeliveryFinish::Done { data, attempts }
            }
            Err(reason) => {
                tracing::info!(delivery_id = %delivery.delivery_id, attempts, reason, "delivery failed");
                match refreshd_rules::delivery::next_delivery_attempt(attempts, now) {
                    Some(at) => DeliveryFinish::Retry {
                        attempts,
                        next_attempt_at: at.as_millis(),
                    },
                    None => DeliveryFinish::GiveUp { attempts },
                }
            }
        };
        let outcome_label = match &finish {
            DeliveryFinish::Done { .. } => "delivered",
            DeliveryFinish::Retry { .. } => "retry",
            DeliveryFinish::GiveUp { .. } => "given_up",
        };
        metrics::counter!("refreshd_deliveries_total", "outcome" => outcome_label).increment(1);
        let has_data = matches!(
            &finish,
            DeliveryFinish::Done {
                data: Some((_, Some(_))),
                ..
            }
        );
        match self
            .store
            .finish_delivery(&delivery.delivery_id, &finish, &timing)
            .await
        {
            Ok(()) if has_data => self.announce_events(&delivery.device_id),
            Ok(()) => {}
            Err(error) => {
                metrics::counter!("refreshd_engine_errors_total", "step" => "record_delivery")
                    .increment(1);
                tracing::warn!(%error, "recording a delivery failed; it will be sent again under the same id")
            }
        }
    }

    /// The signature header over `signed` under the current secret, and under the
    /// secret it replaced while their overlap lasts (on the engine's clock).
    fn signature(
        &self,
        secrets: &SigningSecrets,
        unix_seconds: i64,
        signed: &str,
    ) -> Result<String, &'static str> {
        let current = self
            .sealer
            .open_text(&secrets.current)
            .map_err(|_| "signing_secret")?;
        let now = self.now().as_millis();
        let previous = match (&secrets.previous, secrets.previous_until) {
            (Some(sealed), Some(until)) if now < until => self.sealer.open_text(sealed).ok(),
            _ => None,
        };
        let mut keys = vec![current.as_str()];
        keys.extend(previous.as_deref());
        Ok(signature_header(&keys, unix_seconds, signed))
    }

    fn delivery_signature(
        &self,
        provider: &ProviderRecord,
        unix_seconds: i64,
        body: &str,
    ) -> Result<String, &'static str> {
        let secrets = SigningSecrets {
            current: provider.signing_secret.clone(),
            previous: provider.previous_signing_secret.clone(),
            previous_until: provider.previous_secret_until,
        };
        self.signature(&secrets, unix_seconds, body)
    }

    /// A periodic fetch's signature over the request target it sends, under the app's
    /// secret; `None` for an app created before apps had one (until its secret is
    /// rotated). Like a delivery's, it is stamped with the host's real clock.
    fn fetch_signature(
        &self,
        appid: &str,
        secrets: Option<&SigningSecrets>,
        url: &str,
    ) -> Option<String> {
        let secrets = secrets?;
        let target = refreshd_fetch::request_target(url)?;
        match self.signature(secrets, wall_clock_seconds(), &target) {
            Ok(header) => Some(header),
            // A secret sealed under another REFRESHD_SECRET_KEY: the fetch still goes out
            // (unsigned, so a verifying server refuses it and the log shows why) rather
            // than stalling the user's schedule.
            Err(_) => {
                tracing::warn!(
                    appid,
                    "the app's signing secret could not be opened; fetching unsigned"
                );
                None
            }
        }
    }

    /// Sends one delivery; `Ok(Some(json))` when the provider answered with data.
    async fn send_delivery(
        &self,
        delivery: &DeliveryRecord,
    ) -> Result<Option<String>, &'static str> {
        let provider = self
            .store
            .get_provider(&delivery.provider)
            .await
            .map_err(|_| "store")?
            .ok_or("provider gone")?;
        // Signatures use the host's real clock, never the engine's: `t` is checked by
        // the provider against its own clock (api.md: reject signatures older than 5
        // minutes), so under --time-warp an engine timestamp would be hours or days off
        // and every delivery would be rejected. It is only a freshness stamp for the
        // receiver; nothing in refreshd decides by it.
        let unix_seconds = wall_clock_seconds();
        let signature = self.delivery_signature(&provider, unix_seconds, &delivery.body)?;
        let headers = vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                HeaderName::from_static("refreshd-delivery-id"),
                HeaderValue::from_str(&delivery.delivery_id).map_err(|_| "id")?,
            ),
            (
                HeaderName::from_static("refreshd-signature"),
                HeaderValue::from_str(&signature).map_err(|_| "signature")?,
            ),
        ];
        let response = self
            .transport
            .deliver(Outbound {
                method: Method::POST,
                url: &provider.refresh_url,
                headers,
                body: Some(delivery.body.clone().into_bytes()),
            })
            .await
            .map_err(|failure| match failure {
                FetchFailure::Timeout => "timeout",
                FetchFailure::TooLarge { .. } => "too_large",
                FetchFailure::Blocked(blocked) => match blocked.reason {
                    BlockReason::Range => {
                        "blocked: private, loopback or reserved address (an operator can trust it with --allow-destination CIDR)"
                    }
                    BlockReason::OwnListener => {
                        "blocked: refreshd's own API or metrics address (never reached, whatever --allow-destination trusts)"
                    }
                },
                FetchFailure::PlainHttpNotTrusted => {
                    "blocked: plain http:// to an untrusted address (use https://, or trust the range with --allow-destination CIDR)"
                }
                FetchFailure::InvalidUrl(_) => "invalid_url",
                FetchFailure::Connect => "connect",
                FetchFailure::InvalidResponse => "invalid_response",
            })?;
        if !(200..300).contains(&response.status) {
            return Err("http_status");
        }
        if response.status == 204 || response.body.is_empty() {
            return Ok(None);
        }
        let text = String::from_utf8(response.body).map_err(|_| "not_utf8")?;
        serde_json::from_str::<serde_json::Value>(&text).map_err(|_| "not_json")?;
        Ok(Some(text))
    }
}

/// The host's real clock in Unix seconds, for signature stamps only: receivers check
/// them against their own clocks, so under --time-warp the engine's clock would be off.
fn wall_clock_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
