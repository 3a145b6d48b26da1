//! `refreshd simulate --engine`: a scenario (section S) driven by the service's own
//! engine instead of the simulator's driver, so that the scenarios prove what the
//! service decides, not only what the rules decide.
//!
//! The engine runs as in production (its commands, its wake step, its fetch execution,
//! a SQLite store in a temporary file) on a `ManualClock` moved to each next instant.
//! This driver only routes: it turns scenario events into the calls the API would make,
//! plays the developer servers behind the engine's `Transport`, and writes what the
//! engine committed (its form decisions, its fetches, its refusals) as section S lines.

use anyhow::{anyhow, bail, Context, Result};
use refreshd_engine::engine::parse_form_config;
use refreshd_engine::secrets::{SecretKey, TokenSealer};
use refreshd_engine::transport::TransportFuture;
use refreshd_engine::{
    Caller, Engine, EngineError, EngineSettings, ManualClock, TappedDecision, Transport,
};
use refreshd_fetch::{
    DestinationPolicy, FetchFailure, FetchLimits, FetchResult, Fetcher, Inbound, Outbound,
};
use refreshd_rules::periodic::Source;
use refreshd_rules::{Instant, RuleError};
use refreshd_simulate::run::answer;
use refreshd_simulate::scenario::{Action, Event, Origin, OriginStatus};
use refreshd_simulate::{Record, RecordKind, Scenario};
use refreshd_store::{KeyKind, NewProvider, SqliteStore, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The one device of a scenario.
const DEVICE: &str = "device";

/// Who the driver calls the engine's commands as: the API would take it from a key.
fn as_caller(kind: KeyKind, id: &str) -> Caller {
    Caller {
        kind,
        id: id.to_string(),
        key_hash: Vec::new(),
    }
}

/// Runs `scenario` through the engine and returns its records, as `Simulation::run`.
pub fn run(scenario: &Scenario) -> Result<Vec<Record>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = TempDir::new()?;
    runtime.block_on(async {
        let mut driver = EngineDriver::start(scenario, &dir.0).await?;
        driver.run().await?;
        Ok(driver.records)
    })
}

/// A directory removed when dropped (the store's file lives there).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("refreshd-simulate-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The scenario's developer servers, at the engine's network boundary. A fetch
/// completes at the instant it is sent (section S): the stub answers at once.
#[derive(Default)]
struct OriginStub {
    /// How each configured URL answers now (`origin` events).
    origins: Mutex<HashMap<String, Origin>>,
    /// The URLs fetched, in order (the output line names the URL with its query).
    fetched: Mutex<Vec<String>>,
}

/// The configured URL of a P12 fetch URL: everything before its `appid` parameter,
/// which is the last one named so (the token and timestamp are percent-encoded, so
/// they cannot contain `appid=`).
fn configured_url(url: &str) -> &str {
    match url.rfind("appid=") {
        Some(at) if at > 0 => &url[..at - 1],
        _ => url,
    }
}

impl Transport for OriginStub {
    fn fetch_periodic<'a>(
        &'a self,
        url: &'a str,
        if_none_match: Option<&'a str>,
        _signature: Option<&'a str>,
        _now: SystemTime,
    ) -> TransportFuture<'a, FetchResult> {
        let origin = lock(&self.origins)
            .get(configured_url(url))
            .cloned()
            .unwrap_or_default();
        lock(&self.fetched).push(url.to_string());
        let (outcome, body, etag) = answer(&origin, if_none_match);
        let http_status = match origin.status {
            OriginStatus::Http(status) => Some(status),
            _ => None,
        };
        Box::pin(std::future::ready(FetchResult {
            outcome,
            http_status,
            bytes: body.len(),
            body: Some(body),
            etag,
            retry_after: origin.retry_after_s.map(Duration::from_secs),
        }))
    }

    fn deliver<'a>(
        &'a self,
        _request: Outbound<'a>,
    ) -> TransportFuture<'a, Result<Inbound, FetchFailure>> {
        // Section S has no provider servers; deliveries are never dispatched here.
        Box::pin(std::future::ready(Err(FetchFailure::Connect)))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scenario form as the engine knows it: one provider per scenario form, because each
/// scenario form carries its own config and provider traits.
struct PlacedDefinition {
    provider: String,
    /// `None` when the provider's config upload was refused (F5).
    name: Option<String>,
}

struct EngineDriver<'s> {
    scenario: &'s Scenario,
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    origins: Arc<OriginStub>,
    decisions: Receiver<TappedDecision>,
    /// By scenario form index.
    definitions: Vec<PlacedDefinition>,
    /// Scenario form id → the engine's id of its live instance.
    live: HashMap<String, String>,
    /// Every engine form id → its scenario form id.
    names: HashMap<String, String>,
    records: Vec<Record>,
}

impl<'s> EngineDriver<'s> {
    async fn start(scenario: &'s Scenario, dir: &std::path::Path) -> Result<Self> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("engine.sqlite3")).await?);
        let clock = Arc::new(ManualClock::new(scenario.start));
        let origins = Arc::new(OriginStub::default());
        // A cloud source is fetched at cloud://ENV/FUNCTION (section S).
        let cloud_envs = scenario
            .apps
            .iter()
            .filter_map(|(_, app)| match &app.periodic()?.source {
                Source::Cloud { env, .. } => Some((env.clone(), format!("cloud://{env}"))),
                Source::Url(_) => None,
            })
            .collect();
        let settings = EngineSettings {
            device: scenario.device_settings,
            fetch_jitter_minutes: scenario.fetch_jitter_minutes,
            cloud_envs,
            ..EngineSettings::default()
        };
        let fetcher = Arc::new(Fetcher::new(
            DestinationPolicy::new(Vec::new()),
            FetchLimits::default(),
        )?);
        let engine = Engine::with_transport(
            store.clone(),
            clock.clone(),
            fetcher,
            origins.clone(),
            TokenSealer::new(&SecretKey([7; 32])),
            settings,
        );
        let decisions = engine.tap_decisions();
        engine
            .admin()
            .create_device(
                &as_caller(KeyKind::Operator, "operator"),
                DEVICE,
                "user",
                &scenario.zone_name,
            )
            .await?;
        let mut definitions = Vec::new();
        for (index, entry) in scenario.forms.iter().enumerate() {
            let provider = format!("provider-{index}");
            let record = store
                .insert_provider(
                    &NewProvider {
                        provider: provider.clone(),
                        refresh_url: "https://provider.invalid/refresh".into(),
                        system_app: entry.traits.system_app,
                        // No declared API version is stored as -1 (below 11, F10).
                        api_version: entry.traits.api_version.map_or(-1, i64::from),
                        signing_secret: engine.seal_signing_secret("unused"),
                    },
                    None,
                )
                .await?;
            // The provider uploads a config holding just this form's definition.
            let text = format!("{{\"forms\":[{}]}}", entry.config);
            let report = parse_form_config(&text, entry.traits.system_app);
            let name = match report.value {
                Some(forms) if !report.has_errors() => forms.into_iter().next().map(|d| d.name),
                _ => None,
            };
            let mut record = record;
            record.market_update_duration = entry.traits.market_update_duration;
            record.form_config = name.is_some().then_some(text);
            store.update_provider(&record).await?;
            definitions.push(PlacedDefinition { provider, name });
        }
        for (appid, app) in &scenario.apps {
            store
                .insert_app(appid, &serde_json::to_string(app)?, None, None)
                .await?;
        }
        Ok(EngineDriver {
            scenario,
            engine,
            store,
            clock,
            origins,
            decisions,
            definitions,
            live: HashMap::new(),
            names: HashMap::new(),
            records: Vec::new(),
        })
    }

    /// Every instant from start up to, not including, end at which an event happens or
    /// the engine planned a wake-up. At each: the engine's wake step (device timers,
    /// then due fetches), then the events in file order, each followed by a wake step
    /// for what it made due at once (F24).
    async fn run(&mut self) -> Result<()> {
        let scenario = self.scenario;
        let mut next_event = 0;
        let mut last: Option<Instant> = None;
        loop {
            let event_at = scenario.events.get(next_event).map(|e| e.at);
            let wake_at = self
                .engine
                .next_wakeup()
                .await?
                .filter(|at| last.is_none_or(|last| *at > last));
            let Some(at) = [event_at, wake_at].into_iter().flatten().min() else {
                break;
            };
            if at >= scenario.end {
                break;
            }
            last = Some(at);
            self.clock.set(at);
            self.wake(at).await?;
            while let Some(event) = scenario.events.get(next_event) {
                if event.at != at {
                    break;
                }
                next_event += 1;
                self.apply(at, event).await?;
                self.wake(at).await?;
            }
        }
        Ok(())
    }

    /// The engine's wake step, with the fetches it ordered carried out one by one.
    async fn wake(&mut self, at: Instant) -> Result<()> {
        loop {
            let step = self.engine.wake_due_once().await;
            self.take_decisions();
            for fetch in step.fetches {
                let (app, user) = (fetch.appid.clone(), fetch.user_id.clone());
                let report = self.engine.execute_fetch(fetch).await?;
                self.record_fetch(at, app, user, report.gray, report.outcome)?;
            }
            if !step.batch_full {
                return Ok(());
            }
        }
    }

    fn record_fetch(
        &mut self,
        at: Instant,
        app: String,
        user: String,
        gray: bool,
        outcome: refreshd_rules::periodic::FetchOutcome,
    ) -> Result<()> {
        let url = lock(&self.origins.fetched)
            .pop()
            .ok_or_else(|| anyhow!("the engine recorded a fetch of {app} it never sent"))?;
        self.records.push(Record {
            at,
            what: RecordKind::Fetch {
                app,
                user,
                url,
                gray,
                outcome,
            },
        });
        Ok(())
    }

    /// Copies the form decisions the engine committed since the last call.
    fn take_decisions(&mut self) {
        while let Ok(tapped) = self.decisions.try_recv() {
            let form = self.names.get(&tapped.form_id).cloned().unwrap_or_default();
            self.records.push(Record {
                at: tapped.at,
                what: RecordKind::Form {
                    form,
                    decision: tapped.decision,
                },
            });
        }
    }

    /// The engine's form id for a scenario form id (one that is not live answers
    /// `form_not_found` from the command, as the API would).
    fn form(&self, form: &str) -> String {
        self.live
            .get(form)
            .cloned()
            .unwrap_or_else(|| "frm_not_placed".to_string())
    }

    async fn apply(&mut self, at: Instant, event: &Event) -> Result<()> {
        let subject = match &event.action {
            Action::AddForm { form, .. }
            | Action::RemoveForm(form)
            | Action::Hide(form)
            | Action::Show(form)
            | Action::SetNextRefresh { form, .. } => form.clone(),
            Action::Launch { app, .. }
            | Action::SetToken { app, .. }
            | Action::SetGray { app, .. }
            | Action::FetchNow { app, .. } => app.clone(),
            Action::Offline | Action::Online | Action::Origin { .. } => String::new(),
        };
        let result = self.call(at, &event.action).await;
        self.take_decisions();
        if let Err(error) = result {
            let error = rule_error(error)?;
            self.records.push(Record {
                at,
                what: RecordKind::Rejected {
                    event: event.index,
                    error,
                    subject: Some(subject),
                },
            });
        }
        Ok(())
    }

    /// One event as the API calls it.
    async fn call(&mut self, at: Instant, action: &Action) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let device = as_caller(KeyKind::Device, DEVICE);
        match action {
            Action::AddForm { form, hidden } => {
                // The service mints form ids, so "add the id that is present" has no API
                // call; the answer is F22's.
                if self.live.contains_key(form) {
                    return Err(RuleError::FormExists.into());
                }
                let index = self.form_index(form)?;
                let entry = &self.scenario.forms[index];
                let definition = &self.definitions[index];
                // The provider's upload of this config was refused (F5).
                let Some(name) = &definition.name else {
                    return Err(RuleError::InvalidConfig.into());
                };
                let id = engine
                    .forms()
                    .add_form(
                        &device,
                        &definition.provider,
                        name,
                        hidden.unwrap_or(entry.hidden),
                    )
                    .await?
                    .form_id;
                self.live.insert(form.clone(), id.clone());
                self.names.insert(id, form.clone());
            }
            Action::RemoveForm(form) => {
                engine
                    .forms()
                    .remove_form(&device, &self.form(form))
                    .await?;
                self.live.remove(form);
            }
            Action::Hide(form) | Action::Show(form) => {
                let visible = matches!(action, Action::Show(_));
                engine
                    .forms()
                    .set_visibility(&device, &self.form(form), visible)
                    .await?;
            }
            Action::Offline | Action::Online => {
                let online = matches!(action, Action::Online);
                engine
                    .device()
                    .report_network(&device, online, None)
                    .await?;
            }
            Action::SetNextRefresh {
                form,
                minutes,
                caller,
            } => {
                let index = self.form_index(form)?;
                let entry = &self.scenario.forms[index];
                // The API answers another provider's form as absent (404); the rules,
                // and so the scenario's output, name it `not_form_owner` (F13).
                if !self.live.contains_key(form) {
                    return Err(RuleError::FormNotFound.into());
                }
                if caller.as_ref().is_some_and(|c| *c != entry.provider) {
                    return Err(RuleError::NotFormOwner.into());
                }
                let provider = as_caller(KeyKind::Provider, &self.definitions[index].provider);
                engine
                    .forms()
                    .set_next_refresh(&provider, &self.form(form), *minutes)
                    .await?;
            }
            Action::Launch { app, user } => engine.launch(app, user).await?,
            Action::SetToken { app, user, token } => {
                engine.set_token(app, user, token).await?;
            }
            Action::SetGray {
                app,
                percent,
                url,
                testers,
            } => {
                let mut stored = engine.app(app).await?;
                stored.set_gray(*percent, url.clone(), testers.clone())?;
                let text = serde_json::to_string(&stored).map_err(EngineError::corrupt)?;
                self.store.put_app(app, &text).await?;
                engine.replan_app(&stored).await?;
            }
            Action::FetchNow { app, user } => {
                let developer = as_caller(KeyKind::App, app);
                let report = engine.apps().fetch_now(&developer, app, user).await?;
                self.record_fetch(at, app.clone(), user.clone(), report.gray, report.outcome)
                    .map_err(EngineError::corrupt)?;
            }
            Action::Origin { url, behaviour } => {
                lock(&self.origins.origins).insert(url.clone(), behaviour.clone());
            }
        }
        Ok(())
    }

    fn form_index(&self, form: &str) -> Result<usize, EngineError> {
        self.scenario
            .forms
            .iter()
            .position(|f| f.id == form)
            .ok_or(EngineError::NotFound("form_not_found"))
    }
}

/// The rule behind an engine refusal, as section S reports it.
fn rule_error(error: EngineError) -> Result<RuleError> {
    match error {
        EngineError::Rule(rule) => Ok(rule),
        EngineError::NotFound("form_not_found") => Ok(RuleError::FormNotFound),
        EngineError::NotFound("app_not_found") => Ok(RuleError::AppNotFound),
        other => bail!("the engine failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::configured_url;

    #[test]
    fn the_configured_url_is_found_before_the_p12_query() {
        assert_eq!(
            configured_url("https://a.example/f?appid=wx&token=t&timestamp=1"),
            "https://a.example/f"
        );
        assert_eq!(
            configured_url("https://a.example/f?x=appid&appid=wx&token=appid%3D&timestamp=1"),
            "https://a.example/f?x=appid"
        );
    }
}
