//! The virtual-clock driver: runs a scenario through the rules.
//!
//! Time jumps straight from one instant that matters to the next (an event, or a wake-up
//! the rules asked for), so a simulated week takes milliseconds. At each instant the
//! order of F24 holds: device timers, then due fetches, then the inputs in file order,
//! each followed by any fetch it made due at once.

use crate::scenario::{Action, Origin, OriginStatus, Scenario};
use refreshd_rules::device::{Device, DeviceInput, NewForm};
use refreshd_rules::form_config::{check_form_entry, LintContext};
use refreshd_rules::periodic::{
    classify_response, fetch_url, validate_token, App, FetchAnswer, FetchCache, FetchOutcome,
    FetchPair, Source,
};
use refreshd_rules::{FormDecision, FormId, Instant, ProviderId, RefreshPlan, RuleError};
use std::collections::HashMap;

/// One line of simulator output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub at: Instant,
    pub what: RecordKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A decision about a form, with the scenario's form id.
    Form {
        form: String,
        decision: FormDecision,
    },
    /// A fetch and its outcome.
    Fetch {
        app: String,
        user: String,
        url: String,
        gray: bool,
        outcome: FetchOutcome,
    },
    /// A rejected input.
    Rejected {
        event: usize,
        error: RuleError,
        /// The form or app the input named, for explanations.
        subject: Option<String>,
    },
}

/// One (app, user) pair's state in the simulation.
#[derive(Clone, Debug)]
pub struct PairState {
    pub app: usize,
    pub user: String,
    pub pair: FetchPair,
    pub token: Option<String>,
    pub cache: FetchCache,
    pub last_outcome: Option<(Instant, FetchOutcome)>,
}

/// A scenario in progress: the rules' state plus the simulated world around it.
pub struct Simulation<'s> {
    scenario: &'s Scenario,
    clock: Instant,
    next_event: usize,
    pub device: Device,
    pub apps: Vec<App>,
    /// In the order pairs were first named (section S).
    pub pairs: Vec<PairState>,
    origins: HashMap<String, Origin>,
    /// Scenario form id → the live instance's id.
    live_forms: HashMap<String, FormId>,
    /// Every instance ever added → scenario form id.
    instance_names: HashMap<FormId, String>,
    next_instance: u64,
    providers: HashMap<String, ProviderId>,
    records: Vec<Record>,
}

impl<'s> Simulation<'s> {
    pub fn new(scenario: &'s Scenario) -> Self {
        Simulation {
            scenario,
            clock: scenario.start,
            next_event: 0,
            device: Device::new(
                scenario.zone.clone(),
                scenario.device_settings,
                scenario.start,
            ),
            apps: scenario.apps.iter().map(|(_, app)| app.clone()).collect(),
            pairs: Vec::new(),
            origins: HashMap::new(),
            live_forms: HashMap::new(),
            instance_names: HashMap::new(),
            next_instance: 0,
            providers: HashMap::new(),
            records: Vec::new(),
        }
    }

    /// Runs the whole scenario: every instant from `start` up to, not including, `end`.
    pub fn run(scenario: &Scenario) -> Vec<Record> {
        let mut sim = Simulation::new(scenario);
        sim.run_until(scenario.end, false);
        sim.records
    }

    pub fn clock(&self) -> Instant {
        self.clock
    }
    pub fn records(&self) -> &[Record] {
        &self.records
    }
    pub fn scenario(&self) -> &Scenario {
        self.scenario
    }
    pub fn live_form(&self, id: &str) -> Option<FormId> {
        self.live_forms.get(id).copied()
    }
    pub fn form_name(&self, id: FormId) -> Option<&str> {
        self.instance_names.get(&id).map(String::as_str)
    }

    /// Runs every instant before `limit` (and at `limit` too when `inclusive`).
    pub fn run_until(&mut self, limit: Instant, inclusive: bool) {
        let limit = limit.min(self.scenario.end);
        let inclusive = inclusive && limit < self.scenario.end;
        while let Some(at) = self.next_instant() {
            if at > limit || (at == limit && !inclusive) {
                break;
            }
            self.clock = at;
            self.run_instant(at);
        }
    }

    /// The next instant something happens, if any.
    fn next_instant(&self) -> Option<Instant> {
        let scenario = self.scenario;
        let mut next = scenario
            .events
            .get(self.next_event)
            .map(|e| e.at)
            .filter(|at| *at < scenario.end);
        let mut consider = |candidate: Option<Instant>| {
            if let Some(c) = candidate {
                next = Some(next.map_or(c, |n: Instant| n.min(c)));
            }
        };
        consider(self.device.next_wakeup());
        for state in &self.pairs {
            consider(state.pair.next_wakeup(self.clock, &self.apps[state.app]));
        }
        next.filter(|at| *at < scenario.end)
    }

    fn run_instant(&mut self, at: Instant) {
        let mut decisions = Vec::new();
        self.device.wake(at, &mut decisions);
        self.record_decisions(at, decisions);
        self.run_due_fetches(at);
        while let Some(event) = self.scenario.events.get(self.next_event) {
            if event.at != at {
                break;
            }
            self.next_event += 1;
            self.apply(at, event.index, &event.action);
            self.run_due_fetches(at);
        }
    }

    fn record_decisions(&mut self, at: Instant, decisions: Vec<FormDecision>) {
        for decision in decisions {
            let form = self
                .instance_names
                .get(&decision.form())
                .cloned()
                .unwrap_or_default();
            self.records.push(Record {
                at,
                what: RecordKind::Form { form, decision },
            });
        }
    }

    fn reject(&mut self, at: Instant, event: usize, error: RuleError, subject: &str) {
        self.records.push(Record {
            at,
            what: RecordKind::Rejected {
                event,
                error,
                subject: Some(subject.to_string()),
            },
        });
    }

    fn provider_id(&mut self, name: &str) -> ProviderId {
        let next = ProviderId(self.providers.len() as u32);
        *self.providers.entry(name.to_string()).or_insert(next)
    }

    /// The id an input names: the live instance, or one that matches no form.
    fn named_form(&self, id: &str) -> FormId {
        self.live_forms.get(id).copied().unwrap_or(FormId(u64::MAX))
    }

    fn apply(&mut self, at: Instant, index: usize, action: &Action) {
        let device_input = match action {
            Action::AddForm { form, hidden } => self.add_form_input(form, *hidden),
            Action::RemoveForm(form) => Some(DeviceInput::RemoveForm(self.named_form(form))),
            Action::Hide(form) => Some(DeviceInput::Hide(self.named_form(form))),
            Action::Show(form) => Some(DeviceInput::Show(self.named_form(form))),
            Action::Offline => Some(DeviceInput::Offline),
            Action::Online => Some(DeviceInput::Online),
            Action::SetNextRefresh {
                form,
                minutes,
                caller,
            } => {
                let caller_name = caller
                    .clone()
                    .or_else(|| self.scenario.form(form).map(|f| f.provider.clone()))
                    .unwrap_or_default();
                Some(DeviceInput::SetNextRefresh {
                    form: self.named_form(form),
                    caller: self.provider_id(&caller_name),
                    minutes: *minutes,
                })
            }
            _ => None,
        };
        if let Some(input) = device_input {
            let subject = action_form(action).unwrap_or_default().to_string();
            let mut decisions = Vec::new();
            let result = self.device.apply(at, input, &mut decisions);
            self.record_decisions(at, decisions);
            match (result, action) {
                (Err(error), Action::AddForm { .. }) => {
                    // The instance was never created: forget its id.
                    if let Some(id) = self.live_forms.get(&subject).copied() {
                        if self.device.form(id).is_none() {
                            self.live_forms.remove(&subject);
                            self.instance_names.remove(&id);
                        }
                    }
                    self.reject(at, index, error, &subject);
                }
                (Err(error), _) => self.reject(at, index, error, &subject),
                (Ok(_), Action::RemoveForm(form)) => {
                    self.live_forms.remove(form);
                }
                (Ok(_), _) => {}
            }
            return;
        }
        if let Err((error, subject)) = self.apply_periodic(at, action) {
            self.reject(at, index, error, &subject);
        }
    }

    fn add_form_input(&mut self, form: &str, hidden: Option<bool>) -> Option<DeviceInput> {
        let entry = self.scenario.form(form)?;
        if let Some(id) = self.live_forms.get(form) {
            // Present already: let the rules answer `form_exists` (F23 order).
            return Some(DeviceInput::AddForm(NewForm {
                id: *id,
                provider: ProviderId(u32::MAX),
                system_app: false,
                plan: None,
                hidden: false,
            }));
        }
        let context = LintContext {
            system_app: entry.traits.system_app,
        };
        let plan = check_form_entry(&entry.config, &entry.config_path, context)
            .value
            .map(|definition| RefreshPlan::new(&definition, entry.traits));
        let id = FormId(self.next_instance);
        self.next_instance += 1;
        self.live_forms.insert(form.to_string(), id);
        self.instance_names.insert(id, form.to_string());
        let provider = self.provider_id(&entry.provider.clone());
        Some(DeviceInput::AddForm(NewForm {
            id,
            provider,
            system_app: entry.traits.system_app,
            plan,
            hidden: hidden.unwrap_or(entry.hidden),
        }))
    }

    fn app_index(&self, app: &str) -> Result<usize, (RuleError, String)> {
        self.scenario
            .apps
            .iter()
            .position(|(id, _)| id == app)
            .ok_or((RuleError::AppNotFound, app.to_string()))
    }

    fn pair_index(&mut self, app: usize, user: &str) -> usize {
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.app == app && p.user == user)
        {
            return i;
        }
        self.pairs.push(PairState {
            app,
            user: user.to_string(),
            pair: FetchPair::default(),
            token: None,
            cache: FetchCache::default(),
            last_outcome: None,
        });
        self.pairs.len() - 1
    }

    fn apply_periodic(&mut self, at: Instant, action: &Action) -> Result<(), (RuleError, String)> {
        match action {
            Action::Launch { app, user } => {
                let app = self.app_index(app)?;
                let pair = self.pair_index(app, user);
                self.pairs[pair].pair.launch(at);
            }
            Action::SetToken { app, user, token } => {
                let app_index = self.app_index(app)?;
                validate_token(token).map_err(|e| (e, app.clone()))?;
                let pair = self.pair_index(app_index, user);
                self.pairs[pair].token = Some(token.clone());
                self.pairs[pair].pair.token_set();
            }
            Action::SetGray {
                app,
                percent,
                url,
                testers,
            } => {
                let index = self.app_index(app)?;
                self.apps[index]
                    .set_gray(*percent, url.clone(), testers.clone())
                    .map_err(|e| (e, app.clone()))?;
            }
            Action::FetchNow { app, user } => {
                let app_index = self.app_index(app)?;
                let pair = self.pair_index(app_index, user);
                let state = &mut self.pairs[pair];
                let order = state
                    .pair
                    .fetch_now(&self.apps[app_index], user)
                    .map_err(|e| (e, app.clone()))?;
                self.perform_fetch(at, pair, order.target.source, order.target.gray);
            }
            Action::Origin { url, behaviour } => {
                self.origins.insert(url.clone(), behaviour.clone());
            }
            _ => {}
        }
        Ok(())
    }

    fn run_due_fetches(&mut self, at: Instant) {
        for index in 0..self.pairs.len() {
            let state = &mut self.pairs[index];
            if let Some(order) = state.pair.wake(at, &self.apps[state.app], &state.user) {
                self.perform_fetch(at, index, order.target.source, order.target.gray);
            }
        }
    }

    /// A simulated fetch completes at the instant it is sent (section S).
    fn perform_fetch(&mut self, at: Instant, pair: usize, source: Source, gray: bool) {
        let state = &mut self.pairs[pair];
        let app = &self.apps[state.app];
        let base = source_url(&source);
        let token = state.token.clone().unwrap_or_default();
        let url = fetch_url(&base, app.appid(), &token, at.as_millis());
        let origin = self.origins.get(&base).cloned().unwrap_or_default();
        let (outcome, body, etag) = answer(&origin, state.cache.if_none_match(&base));
        let answer = FetchAnswer {
            url: base,
            outcome,
            body,
            etag,
            retry_after_ms: origin.retry_after_ms(),
            sent_at: at,
            completed_at: at,
        };
        state.pair.complete(
            app,
            &state.user,
            answer,
            self.scenario.fetch_jitter_minutes,
            &mut state.cache,
        );
        state.last_outcome = Some((at, outcome));
        let record = RecordKind::Fetch {
            app: app.appid().to_string(),
            user: state.user.clone(),
            url,
            gray,
            outcome,
        };
        self.records.push(Record { at, what: record });
    }
}

/// Where a source is fetched (section S: a cloud source at `cloud://ENV/FUNCTION`).
pub fn source_url(source: &Source) -> String {
    match source {
        Source::Url(url) => url.clone(),
        Source::Cloud { env, function } => format!("cloud://{env}/{function}"),
    }
}

/// How a simulated origin answers a request carrying `if_none_match` (section S): the
/// outcome, the body and the ETag.
pub fn answer(
    origin: &Origin,
    if_none_match: Option<&str>,
) -> (FetchOutcome, String, Option<String>) {
    let status = match origin.status {
        OriginStatus::Timeout => return (FetchOutcome::Timeout, String::new(), None),
        OriginStatus::Connect => return (FetchOutcome::Connect, String::new(), None),
        OriginStatus::BlockedAddress => return (FetchOutcome::BlockedAddress, String::new(), None),
        OriginStatus::Http(status) => status,
    };
    if let (Some(etag), Some(sent)) = (&origin.etag, if_none_match) {
        if etag == sent {
            return (FetchOutcome::NotModified, String::new(), Some(etag.clone()));
        }
    }
    if status == 204 {
        return (FetchOutcome::Ok, String::new(), origin.etag.clone());
    }
    let len = origin.body_bytes as usize;
    let outcome = classify_response(status, len, origin.utf8);
    let body = if outcome == FetchOutcome::Ok {
        "x".repeat(len)
    } else {
        String::new()
    };
    (outcome, body, origin.etag.clone())
}

fn action_form(action: &Action) -> Option<&str> {
    match action {
        Action::AddForm { form, .. }
        | Action::RemoveForm(form)
        | Action::Hide(form)
        | Action::Show(form)
        | Action::SetNextRefresh { form, .. } => Some(form),
        _ => None,
    }
}
