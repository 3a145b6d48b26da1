//! The virtual-clock driver: runs a scenario through the rules.
//!
//! Time jumps straight from one instant that matters to the next (an event, or a wake-up
//! the rules asked for), so a simulated week takes milliseconds. At each instant the
//! order of F24 holds: device timers, then due fetches, then the inputs in file order,
//! each followed by any fetch it made due at once.
//!
//! The driver's own work per instant does not grow with the scenario: forms and pairs
//! are found by position rather than by scanning, the device is woken only when the
//! rules said it needs to be, and pairs wait in a queue by the instant they are due.
//! (What the rules do with a device's forms on each wake-up is theirs to decide.)

use crate::scenario::{Action, Origin, OriginStatus, Scenario};
use refreshd_rules::device::{Device, DeviceInput, NewForm};
use refreshd_rules::form_config::{check_form_entry, LintContext};
use refreshd_rules::periodic::{
    classify_response, fetch_url, validate_token, App, FetchAnswer, FetchCache, FetchOutcome,
    FetchPair, Source,
};
use refreshd_rules::{FormDecision, FormId, Instant, ProviderId, RefreshPlan, RuleError};
use std::collections::{BTreeSet, HashMap};

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

/// Marks an instance id that names no form (its add was refused).
const NO_FORM: u32 = u32::MAX;

/// How much work the driver did, for tests that check it grows with the scenario and
/// not faster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Instants run.
    pub instants: u64,
    /// Times the device was woken at an instant without an input (`Device::wake`).
    pub device_wakes: u64,
    /// Inputs handed to the device (`Device::apply`).
    pub device_inputs: u64,
    /// Pairs looked at to find the next instant or the fetches due at one.
    pub pairs_visited: u64,
}

/// A scenario in progress: the rules' state plus the simulated world around it.
pub struct Simulation<'s> {
    scenario: &'s Scenario,
    clock: Instant,
    next_event: usize,
    device: Device,
    /// `device.next_wakeup()` since the device last changed (only this driver changes
    /// it), so that finding the next instant does not read every form; `None` while it
    /// needs asking again (once per instant, however many inputs the instant has).
    device_wakeup: Option<Option<Instant>>,
    apps: Vec<App>,
    /// In the order pairs were first named (section S).
    pairs: Vec<PairState>,
    /// (app position, user) → position in `pairs`.
    pair_positions: HashMap<(usize, String), usize>,
    /// Pairs that will be due, by (instant, position in `pairs`), as the rules last
    /// said; an entry whose pair has since stopped being eligible is dropped when met.
    due_pairs: BTreeSet<(Instant, usize)>,
    /// Each pair's entry in `due_pairs`, if it has one.
    pair_due: Vec<Option<Instant>>,
    origins: HashMap<String, Origin>,
    /// Position in the scenario's `forms` → its live instance, if any.
    live_forms: Vec<Option<FormId>>,
    /// Instance id (handed out from 0) → position in the scenario's `forms`, or
    /// `NO_FORM` once a refused add has forgotten it. Four bytes per instance.
    instance_forms: Vec<u32>,
    providers: HashMap<String, ProviderId>,
    records: Vec<Record>,
    work: Work,
}

impl<'s> Simulation<'s> {
    pub fn new(scenario: &'s Scenario) -> Self {
        let device = Device::new(
            scenario.zone.clone(),
            scenario.device_settings,
            scenario.start,
        );
        Simulation {
            scenario,
            clock: scenario.start,
            next_event: 0,
            device_wakeup: None,
            device,
            apps: scenario.apps.iter().map(|(_, app)| app.clone()).collect(),
            pairs: Vec::new(),
            pair_positions: HashMap::new(),
            due_pairs: BTreeSet::new(),
            pair_due: Vec::new(),
            origins: HashMap::new(),
            live_forms: vec![None; scenario.forms.len()],
            instance_forms: Vec::new(),
            providers: HashMap::new(),
            records: Vec::new(),
            work: Work::default(),
        }
    }

    /// Runs the whole scenario: every instant from `start` up to, not including, `end`.
    pub fn run(scenario: &Scenario) -> Vec<Record> {
        let mut sim = Simulation::new(scenario);
        sim.run_until(scenario.end, false);
        sim.records
    }

    /// Runs the whole scenario like [`Simulation::run`], handing each instant's records
    /// to `sink` as soon as that instant is done instead of keeping them all, so that a
    /// long run's memory does not grow with its output. Stops at the first error of
    /// `sink`. Answers the work done.
    pub fn run_streaming<E>(
        scenario: &Scenario,
        mut sink: impl FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<Work, E> {
        let mut sim = Simulation::new(scenario);
        while let Some(at) = sim.next_instant() {
            if at >= scenario.end {
                break;
            }
            sim.clock = at;
            sim.run_instant(at);
            sink(&sim.records)?;
            sim.records.clear();
        }
        Ok(sim.work)
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
    /// The simulated device (read only: the driver keeps track of its wake-ups).
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn apps(&self) -> &[App] {
        &self.apps
    }
    /// In the order pairs were first named (section S).
    pub fn pairs(&self) -> &[PairState] {
        &self.pairs
    }
    /// The pair of the app at `app` (its position in the scenario's `apps`) and `user`,
    /// once an input has named it.
    pub fn pair(&self, app: usize, user: &str) -> Option<&PairState> {
        let index = *self.pair_positions.get(&(app, user.to_string()))?;
        Some(&self.pairs[index])
    }
    /// How much work the driver has done so far.
    pub fn work(&self) -> Work {
        self.work
    }
    pub fn live_form(&self, id: &str) -> Option<FormId> {
        self.live_forms[self.scenario.form_position(id)?]
    }
    pub fn form_name(&self, id: FormId) -> Option<&str> {
        let position = *self.instance_forms.get(usize::try_from(id.0).ok()?)?;
        (position != NO_FORM).then(|| self.scenario.forms[position as usize].id.as_str())
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
    fn next_instant(&mut self) -> Option<Instant> {
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
        consider(self.device_wakeup());
        consider(self.next_pair_wakeup());
        next.filter(|at| *at < scenario.end)
    }

    fn device_wakeup(&mut self) -> Option<Instant> {
        *self
            .device_wakeup
            .get_or_insert_with(|| self.device.next_wakeup())
    }

    /// The earliest instant, seen from the clock, at which a pair is due. A pair's due
    /// instant seen from `now` is its queued instant or `now`, whichever is later, so
    /// the first queued pair that is still eligible is the earliest; pairs that stopped
    /// being eligible meanwhile (P6: no launch for seven days) leave the queue until an
    /// input changes them again.
    fn next_pair_wakeup(&mut self) -> Option<Instant> {
        while let Some(&(queued, index)) = self.due_pairs.first() {
            self.work.pairs_visited += 1;
            let state = &self.pairs[index];
            match state.pair.next_wakeup(self.clock, &self.apps[state.app]) {
                Some(at) => return Some(at),
                None => {
                    self.due_pairs.remove(&(queued, index));
                    self.pair_due[index] = None;
                }
            }
        }
        None
    }

    /// Puts the pair at `index` in the queue at the instant the rules now give it.
    fn requeue_pair(&mut self, index: usize, now: Instant) {
        if let Some(queued) = self.pair_due[index].take() {
            self.due_pairs.remove(&(queued, index));
        }
        let state = &self.pairs[index];
        if let Some(at) = state.pair.next_wakeup(now, &self.apps[state.app]) {
            self.due_pairs.insert((at, index));
            self.pair_due[index] = Some(at);
        }
    }

    fn run_instant(&mut self, at: Instant) {
        self.work.instants += 1;
        // A device with no timer due at `at` would decide nothing here (its wake-up
        // says so); its next input wakes it first anyway (F24).
        if self.device_wakeup().is_some_and(|due| due <= at) {
            let mut decisions = Vec::new();
            self.device.wake(at, &mut decisions);
            self.work.device_wakes += 1;
            self.device_wakeup = None;
            self.record_decisions(at, decisions);
        }
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
                .form_name(decision.form())
                .map(str::to_string)
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
        self.live_form(id).unwrap_or(FormId(u64::MAX))
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
            self.work.device_inputs += 1;
            self.device_wakeup = None;
            self.record_decisions(at, decisions);
            match (result, action) {
                (Err(error), Action::AddForm { form, .. }) => {
                    // A new instance that was refused was never created: forget its id.
                    // (An add refused as `form_exists` named the live instance.)
                    if let Some(position) = self.scenario.form_position(form) {
                        if let Some(id) = self.live_forms[position] {
                            if id.0 + 1 == self.instance_forms.len() as u64
                                && self.device.form(id).is_none()
                            {
                                self.live_forms[position] = None;
                                self.instance_forms[id.0 as usize] = NO_FORM;
                            }
                        }
                    }
                    self.reject(at, index, error, &subject);
                }
                (Err(error), _) => self.reject(at, index, error, &subject),
                (Ok(_), Action::RemoveForm(form)) => {
                    if let Some(position) = self.scenario.form_position(form) {
                        self.live_forms[position] = None;
                    }
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
        let position = self.scenario.form_position(form)?;
        let entry = &self.scenario.forms[position];
        if let Some(id) = self.live_forms[position] {
            // Present already: let the rules answer `form_exists` (F23 order).
            return Some(DeviceInput::AddForm(NewForm {
                id,
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
        let id = FormId(self.instance_forms.len() as u64);
        self.instance_forms
            .push(u32::try_from(position).expect("fewer than 2^32 - 1 forms"));
        self.live_forms[position] = Some(id);
        let provider = self.provider_id(&entry.provider);
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
        // One allocation per lookup; a borrowed-key lookup would need a custom key type.
        let next = self.pairs.len();
        let index = *self
            .pair_positions
            .entry((app, user.to_string()))
            .or_insert(next);
        if index < next {
            return index;
        }
        self.pair_due.push(None);
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
                self.requeue_pair(pair, at);
            }
            Action::SetToken { app, user, token } => {
                let app_index = self.app_index(app)?;
                validate_token(token).map_err(|e| (e, app.clone()))?;
                let pair = self.pair_index(app_index, user);
                self.pairs[pair].token = Some(token.clone());
                self.pairs[pair].pair.token_set();
                self.requeue_pair(pair, at);
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
                self.requeue_pair(pair, at);
            }
            Action::Origin { url, behaviour } => {
                self.origins.insert(url.clone(), behaviour.clone());
            }
            _ => {}
        }
        Ok(())
    }

    /// Wakes every pair due at `at`, in the order pairs were first named (section S).
    fn run_due_fetches(&mut self, at: Instant) {
        let mut due = Vec::new();
        while let Some(&(queued, index)) = self.due_pairs.first() {
            if queued > at {
                break;
            }
            self.work.pairs_visited += 1;
            self.due_pairs.remove(&(queued, index));
            self.pair_due[index] = None;
            due.push(index);
        }
        due.sort_unstable();
        for index in due {
            let state = &mut self.pairs[index];
            if let Some(order) = state.pair.wake(at, &self.apps[state.app], &state.user) {
                self.perform_fetch(at, index, order.target.source, order.target.gray);
            }
            self.requeue_pair(index, at);
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
