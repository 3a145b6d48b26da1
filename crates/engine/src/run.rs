//! The engine's loops: waking due subjects, carrying out fetches and deliveries.

use crate::engine::{form_data_event, Engine};
use crate::error::EngineError;
use crate::secrets::sign_delivery_with;
use refreshd_fetch::{fetch_periodic, FetchFailure, Outbound};
use refreshd_rules::periodic::{
    fetch_jitter_ms, fetch_url, FetchCache, FetchOrder, FetchOutcome, Source,
};
use refreshd_rules::Instant;
use refreshd_store::{
    DeliveryFinish, DeliveryRecord, FetchLogEntry, FormData, PairCommit, ProviderRecord, SubjectKey,
};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Subjects claimed per look at the store.
const CLAIM_BATCH: i64 = 256;
/// Finished deliveries and host events are kept this long (api.md).
pub const RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// A finished fetch, ready to be recorded.
struct FetchCompletion {
    sent_at: Instant,
    completed: Instant,
    outcome: FetchOutcome,
    retry_after_ms: Option<i64>,
    jitter: i64,
    base: String,
    body: String,
    etag: Option<String>,
    log: FetchLogEntry,
}

/// What a fetch returns to its caller (`fetch-now` answers with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    pub outcome: FetchOutcome,
    pub http_status: Option<u16>,
    pub time_stamp: Option<i64>,
}

impl Engine {
    /// Wakes due subjects until `shutdown` turns true. A subject that fails is logged
    /// and planned again shortly; one bad subject never stops the loop.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = self.now();
            let lease_until = now.plus_millis(self.settings.claim_lease_ms);
            // The store is the due-index: claim what is due, so that in a fleet each
            // subject is woken by one node, and a dead node's claims expire.
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
                    tracing::warn!(%error, "claiming due subjects failed; retrying");
                    Vec::new()
                }
            };
            // Local hints at or before now are covered by the claim (or by another node).
            self.take_due(now);
            let full_batch = claimed.len() as i64 == CLAIM_BATCH;
            for (subject, due_at) in claimed {
                let result = match &subject {
                    SubjectKey::Device(id) => self.wake_device(id, due_at).await,
                    SubjectKey::Pair { appid, user_id } => {
                        self.clone().wake_pair(appid, user_id).await
                    }
                };
                if let Err(error) = result {
                    // The claim stays until its lease ends; then any node tries again.
                    tracing::warn!(?subject, %error, "waking a subject failed");
                }
            }
            if full_batch {
                continue;
            }
            // What is due and not yet woken, after this pass (zero when keeping up).
            match self.store.count_due(self.now().as_millis()).await {
                Ok(backlog) => metrics::gauge!("refreshd_due_backlog").set(backlog as f64),
                Err(error) => tracing::debug!(%error, "counting the backlog failed"),
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

    async fn wake_pair(self: Arc<Self>, appid: &str, user_id: &str) -> Result<(), EngineError> {
        if let Some(order) = self.order_due_fetch(appid, user_id).await? {
            let engine = self.clone();
            let (appid, user_id) = (appid.to_string(), user_id.to_string());
            tokio::spawn(async move {
                if let Err(error) = engine.execute_fetch(&appid, &user_id, order).await {
                    tracing::warn!(%appid, %error, "a periodic fetch could not be recorded");
                }
            });
        }
        Ok(())
    }

    /// P11: fetches now and answers when the fetch is recorded.
    pub async fn fetch_now(&self, appid: &str, user_id: &str) -> Result<FetchReport, EngineError> {
        let app = self.app(appid).await?;
        let order = self
            .with_pair(&app, user_id, |pair, _, _| {
                Ok(pair.fetch_now(&app, user_id)?)
            })
            .await?;
        self.execute_fetch(appid, user_id, order).await
    }

    /// Carries out an ordered fetch and records its outcome (P8, P9, P13, P14).
    pub(crate) async fn execute_fetch(
        &self,
        appid: &str,
        user_id: &str,
        order: FetchOrder,
    ) -> Result<FetchReport, EngineError> {
        let key = (appid.to_string(), user_id.to_string());
        // A count, not a flag: a fetch-now may run beside a scheduled fetch (P11).
        *self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_insert(0) += 1;
        let report = self.fetch_and_record(appid, user_id, order).await;
        let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = fetching.get_mut(&key) {
            *running -= 1;
            if *running == 0 {
                fetching.remove(&key);
            }
        }
        drop(fetching);
        report
    }

    async fn fetch_and_record(
        &self,
        appid: &str,
        user_id: &str,
        order: FetchOrder,
    ) -> Result<FetchReport, EngineError> {
        let app = self.app(appid).await?;
        let record = self
            .store
            .get_pair(appid, user_id)
            .await?
            .unwrap_or_default();
        let token = match &record.token_sealed {
            Some(sealed) => self.sealer.open(sealed).map_err(EngineError::corrupt)?,
            None => String::new(),
        };
        let base = match &order.target.source {
            Source::Url(url) => Some(url.clone()),
            Source::Cloud { env, function } => self
                .settings
                .cloud_envs
                .get(env)
                .map(|base| format!("{}/{function}", base.trim_end_matches('/'))),
        };
        let sent_at = self.now();
        let cache = FetchCache {
            data: record.cached_data.clone(),
            time_stamp_ms: record.cached_at,
            sent_at_ms: record.cached_sent_at,
            etag: record
                .etag
                .clone()
                .zip(record.etag_url.clone())
                .map(|(e, u)| (u, e)),
        };
        let started = std::time::Instant::now();
        let result = match &base {
            Some(base) => {
                let url = fetch_url(base, app.appid(), &token, sent_at.as_millis());
                let wall = UNIX_EPOCH + Duration::from_millis(sent_at.as_millis().max(0) as u64);
                fetch_periodic(&self.fetcher, &url, cache.if_none_match(base), wall).await
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
        let jitter = fetch_jitter_ms(app.appid(), user_id, self.settings.fetch_jitter_minutes);
        let retry_after_ms = result.retry_after.map(|d| d.as_millis() as i64);
        let report = FetchReport {
            outcome: result.outcome,
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
            sent_at,
            completed,
            outcome: result.outcome,
            retry_after_ms,
            jitter,
            base: base.clone().unwrap_or_default(),
            body: result.body.unwrap_or_default(),
            etag: result.etag,
            log,
        };
        let mut attempts = 0;
        let (time_stamp, next) = loop {
            attempts += 1;
            match self.record_fetch(&app, user_id, &completion).await {
                Err(EngineError::Store(refreshd_store::StoreError::Conflict)) if attempts < 8 => {}
                other => break other?,
            }
        };
        self.plan(
            SubjectKey::Pair {
                appid: appid.to_string(),
                user_id: user_id.to_string(),
            },
            next,
        );
        Ok(FetchReport {
            time_stamp,
            ..report
        })
    }

    /// Applies a completed fetch to the pair, its cache and its log, in one commit.
    async fn record_fetch(
        &self,
        app: &refreshd_rules::periodic::App,
        user_id: &str,
        done: &FetchCompletion,
    ) -> Result<(Option<i64>, Option<Instant>), EngineError> {
        let mut record = self
            .store
            .get_pair(app.appid(), user_id)
            .await?
            .unwrap_or_default();
        let mut pair: refreshd_rules::periodic::FetchPair =
            serde_json::from_str(&record.state).map_err(EngineError::corrupt)?;
        pair.record_outcome(
            done.completed,
            done.outcome,
            done.retry_after_ms,
            done.jitter,
        );
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
        cache.apply(
            done.outcome,
            &done.base,
            done.body.clone(),
            done.etag.clone(),
            done.sent_at.as_millis(),
            done.completed.as_millis(),
        );
        record.cached_data = cache.data;
        record.cached_at = cache.time_stamp_ms;
        record.cached_sent_at = cache.sent_at_ms;
        (record.etag_url, record.etag) = match cache.etag {
            Some((url, etag)) => (Some(url), Some(etag)),
            None => (None, None),
        };
        let next = pair.next_wakeup(done.completed, app);
        record.state = serde_json::to_string(&pair).map_err(EngineError::corrupt)?;
        record.next_wake_at = next.map(Instant::as_millis);
        let expected_version = record.version;
        let time_stamp = record.cached_at;
        self.store
            .commit_pair(&PairCommit {
                record,
                expected_version,
                log: Some(done.log.clone()),
            })
            .await?;
        Ok((time_stamp, next))
    }

    /// Sends due deliveries until `shutdown` turns true.
    pub async fn run_deliveries(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut next_prune = self.now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = self.now();
            if now >= next_prune {
                if let Err(error) = self.store.prune(now.as_millis() - RETENTION_MS).await {
                    tracing::warn!(%error, "pruning old records failed");
                }
                next_prune = now.plus_millis(3_600_000);
            }
            match self
                .store
                .claim_deliveries(
                    now.as_millis(),
                    now.plus_millis(self.settings.delivery_lease_ms).as_millis(),
                    64,
                )
                .await
            {
                Ok(due) => {
                    let sends = due.into_iter().map(|d| {
                        let engine = self.clone();
                        tokio::spawn(async move { engine.deliver(d).await })
                    });
                    for send in sends.collect::<Vec<_>>() {
                        let _ = send.await;
                    }
                }
                Err(error) => tracing::warn!(%error, "reading due deliveries failed"),
            }
            tokio::select! {
                _ = self.clock.sleep_until(now.plus_millis(1_000)) => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.deliveries_waiting.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One delivery attempt (F20; api.md): a signed POST; a 2xx JSON answer becomes
    /// the form's data; failures retry under the same delivery id.
    async fn deliver(&self, delivery: DeliveryRecord) {
        let attempts = delivery.attempts + 1;
        let outcome = self.send_delivery(&delivery).await;
        let now = self.now();
        let visible = match self.store.get_form(&delivery.form_id).await {
            Ok(Some(form)) => self.is_form_visible(&form).await.unwrap_or(true),
            _ => true,
        };
        let finish = match outcome {
            Ok(data) => {
                let data = data.map(|data| {
                    let trigger = serde_json::from_str::<serde_json::Value>(&delivery.body)
                        .ok()
                        .and_then(|b| b["trigger"].as_str().map(str::to_string))
                        .unwrap_or_default();
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
            .finish_delivery(&delivery.delivery_id, &finish)
            .await
        {
            Ok(()) if has_data => self.announce_events(&delivery.device_id),
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, "recording a delivery failed; it will be sent again under the same id")
            }
        }
    }

    /// The signature header under the provider's secret, and under the secret it
    /// replaced while their overlap lasts (on the engine's clock).
    fn delivery_signature(
        &self,
        provider: &ProviderRecord,
        unix_seconds: i64,
        body: &str,
    ) -> Result<String, &'static str> {
        let current = self
            .sealer
            .open_text(&provider.signing_secret)
            .map_err(|_| "signing_secret")?;
        let now = self.now().as_millis();
        let previous = match (
            &provider.previous_signing_secret,
            provider.previous_secret_until,
        ) {
            (Some(sealed), Some(until)) if now < until => self.sealer.open_text(sealed).ok(),
            _ => None,
        };
        let mut secrets = vec![current.as_str()];
        secrets.extend(previous.as_deref());
        Ok(sign_delivery_with(&secrets, unix_seconds, body))
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
        let unix_seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
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
            .fetcher
            .send(Outbound {
                method: Method::POST,
                url: &provider.refresh_url,
                headers,
                body: Some(delivery.body.clone().into_bytes()),
            })
            .await
            .map_err(|failure| match failure {
                FetchFailure::Timeout => "timeout",
                FetchFailure::TooLarge { .. } => "too_large",
                FetchFailure::Blocked(_) | FetchFailure::PlainHttpNotTrusted => "blocked",
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
