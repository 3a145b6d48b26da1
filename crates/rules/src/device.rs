//! A device and its forms: the widget refresh rules (F11–F24) and catch-up (T5).
//!
//! A device is one subject: its forms share one interval tick (F11), one network state
//! (F16) and one local midnight (F17), so they are decided together. The caller drives
//! it with two calls, both handed the current instant:
//!
//! * [`Device::wake`] runs every timer due at or before `now`, in the order of F24;
//! * [`Device::apply`] does the same and then applies one input (add, hide, …).
//!
//! Afterwards [`Device::next_wakeup`] says when the device next needs to be woken. It is
//! always later than the last `now` handed in, and the device never fires anything
//! twice for one due time, whatever order instants arrive in (T5).

use crate::decision::{FormDecision, FormId, ProviderId, SkipReason, Trigger, TriggerSet};
use crate::error::RuleError;
use crate::plan::RefreshPlan;
use crate::time::{local_date, next_local_midnight, resolve_local_time, Instant, MINUTE_MS};
use jiff::tz::TimeZone;

/// Counted refreshes a form may receive per local day (F17).
pub const DAILY_QUOTA: u8 = 50;
/// A form is due this much before its period has fully passed (F12).
pub const DUE_SLACK_MS: i64 = 30_000;
/// An outage must last this long to trigger network refresh (F16).
pub const MIN_OUTAGE_MS: i64 = 10 * MINUTE_MS;
/// Next-refresh bounds (F13), in minutes.
pub const NEXT_REFRESH_MIN: i64 = 5;
pub const NEXT_REFRESH_MIN_SYSTEM: i64 = 1;
pub const NEXT_REFRESH_MAX: i64 = 10_080;

/// Per-device settings (F11, F23).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSettings {
    tick_minutes: u8,
    max_forms: u16,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        DeviceSettings {
            tick_minutes: 30,
            max_forms: 512,
        }
    }
}

/// A setting outside its allowed range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("tick_minutes must be 1 to 30, got {0}")]
    TickMinutes(i64),
    #[error("max_forms must be 1 to 65535, got {0}")]
    MaxForms(i64),
}

impl DeviceSettings {
    pub fn new(tick_minutes: i64, max_forms: i64) -> Result<Self, SettingsError> {
        let tick_minutes = u8::try_from(tick_minutes)
            .ok()
            .filter(|t| (1..=30).contains(t))
            .ok_or(SettingsError::TickMinutes(tick_minutes))?;
        let max_forms = u16::try_from(max_forms)
            .ok()
            .filter(|m| *m >= 1)
            .ok_or(SettingsError::MaxForms(max_forms))?;
        Ok(DeviceSettings {
            tick_minutes,
            max_forms,
        })
    }
    pub fn tick_minutes(self) -> u8 {
        self.tick_minutes
    }
    pub fn max_forms(self) -> u16 {
        self.max_forms
    }
    fn tick_ms(self) -> i64 {
        self.tick_minutes as i64 * MINUTE_MS
    }
}

/// A form to add (F19, F22, F23).
#[derive(Clone, Debug)]
pub struct NewForm {
    pub id: FormId,
    pub provider: ProviderId,
    pub system_app: bool,
    /// `None` when the form's configuration has errors (F5): the add is rejected with
    /// `invalid_config`, after the `form_exists` check (F23).
    pub plan: Option<RefreshPlan>,
    pub hidden: bool,
}

/// An input to a device. Each is applied at the instant handed with it.
#[derive(Clone, Debug)]
pub enum DeviceInput {
    /// Run due timers only.
    Wake,
    AddForm(NewForm),
    RemoveForm(FormId),
    Hide(FormId),
    Show(FormId),
    Offline,
    Online,
    SetNextRefresh {
        form: FormId,
        caller: ProviderId,
        minutes: i64,
    },
    /// F23a: a re-uploaded configuration or a new market interval.
    Replan {
        form: FormId,
        plan: RefreshPlan,
    },
    /// F23a: the device's time zone changed.
    SetZone(TimeZone),
}

/// What an accepted input produced besides decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    Done,
    /// F14: the next-refresh is due at this instant.
    NextRefreshAt(Instant),
}

/// The result of one step: decisions, the input's verdict, and the next wake-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub decisions: Vec<FormDecision>,
    pub result: Result<Accepted, RuleError>,
    pub next_wakeup: Option<Instant>,
}

const FLAG_VISIBLE: u8 = 1;
const FLAG_SYSTEM_APP: u8 = 2;
/// F18: rejected with `quota_exhausted` since the last reset.
const FLAG_REMIND_AT_RESET: u8 = 4;

/// One form's state. Kept small: a device's forms are read and written on every wake-up.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FormState {
    id: FormId,
    provider: ProviderId,
    flags: u8,
    deferred: TriggerSet,
    counted_today: u8,
    plan: RefreshPlan,
    /// F12: the last interval trigger, or the add instant.
    last_interval: Instant,
    /// F14: the single pending next-refresh.
    pending_next: Option<Instant>,
    /// F15: the next scheduled occurrence, cached.
    next_scheduled: Option<Instant>,
}

impl FormState {
    pub fn id(&self) -> FormId {
        self.id
    }
    pub fn provider(&self) -> ProviderId {
        self.provider
    }
    pub fn plan(&self) -> &RefreshPlan {
        &self.plan
    }
    pub fn is_visible(&self) -> bool {
        self.flags & FLAG_VISIBLE != 0
    }
    pub fn is_system_app(&self) -> bool {
        self.flags & FLAG_SYSTEM_APP != 0
    }
    /// F18: a `quota_reset` refresh will come at the next midnight.
    pub fn remind_at_reset(&self) -> bool {
        self.flags & FLAG_REMIND_AT_RESET != 0
    }
    pub fn deferred(&self) -> TriggerSet {
        self.deferred
    }
    pub fn counted_today(&self) -> u8 {
        self.counted_today
    }
    pub fn pending_next_refresh(&self) -> Option<Instant> {
        self.pending_next
    }
    pub fn next_scheduled(&self) -> Option<Instant> {
        self.next_scheduled
    }
    pub fn last_interval(&self) -> Instant {
        self.last_interval
    }
    fn quota_left(&self) -> bool {
        self.counted_today < DAILY_QUOTA
    }
    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }
    /// F12: the earliest instant at which a tick finds this form due.
    fn interval_due_from(&self) -> Option<Instant> {
        let period = self.plan.interval_period_ms()?;
        Some(self.last_interval.plus_millis(period - DUE_SLACK_MS))
    }
}

/// The shared interval tick of a device (F11): ticks at `anchor + k·tick`, k ≥ 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct TickGrid {
    anchor: Instant,
}

/// A device: its zone, settings, network state and forms in the order they were added.
/// Serializable (serde) so the service can persist it; the zone is stored by its IANA
/// name and looked up again on load.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Device {
    #[serde(with = "zone_by_name")]
    zone: TimeZone,
    settings: DeviceSettings,
    forms: Vec<FormState>,
    grid: Option<TickGrid>,
    /// Every grid tick at or before this instant has been accounted for (T5).
    ticked_through: Instant,
    /// F16: when the current outage began, if offline.
    offline_since: Option<Instant>,
    /// F17: the next local midnight at which counts reset.
    next_reset_at: Option<Instant>,
    /// The instant of the latest `offline` or `online` report.
    #[serde(default)]
    last_network_report: Option<Instant>,
}

impl Device {
    /// A device created at `now`, online (F16), with no forms.
    pub fn new(zone: TimeZone, settings: DeviceSettings, now: Instant) -> Self {
        let next_reset_at = next_local_midnight(now, &zone);
        Device {
            zone,
            settings,
            forms: Vec::new(),
            grid: None,
            ticked_through: now,
            offline_since: None,
            next_reset_at,
            last_network_report: None,
        }
    }

    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }
    pub fn settings(&self) -> DeviceSettings {
        self.settings
    }
    pub fn forms(&self) -> &[FormState] {
        &self.forms
    }
    pub fn form(&self, id: FormId) -> Option<&FormState> {
        self.forms.iter().find(|f| f.id == id)
    }
    /// The instant of the latest network report, if any.
    pub fn last_network_report(&self) -> Option<Instant> {
        self.last_network_report
    }

    pub fn is_offline(&self) -> bool {
        self.offline_since.is_some()
    }
    /// The instant the daily counts next reset (F17).
    pub fn next_reset_at(&self) -> Option<Instant> {
        self.next_reset_at
    }

    /// One step: due timers, then the input, then the next wake-up.
    pub fn step(&mut self, now: Instant, input: DeviceInput) -> Step {
        let mut decisions = Vec::new();
        let result = self.apply(now, input, &mut decisions);
        Step {
            decisions,
            result,
            next_wakeup: self.next_wakeup(),
        }
    }

    /// The next instant this device needs [`Device::wake`], or `None` when nothing is
    /// planned. Always later than every `now` handed in so far.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let mut earliest = self.next_interval_tick();
        let mut consider = |candidate: Option<Instant>| {
            if let Some(c) = candidate {
                earliest = Some(earliest.map_or(c, |e| e.min(c)));
            }
        };
        // Counts reset lazily on the next wake; midnight itself only needs a wake-up
        // when a reminder (F18) is waiting for it.
        if self.forms.iter().any(FormState::remind_at_reset) {
            consider(self.next_reset_at);
        }
        for form in &self.forms {
            consider(form.pending_next);
            consider(form.next_scheduled);
        }
        earliest
    }

    /// Runs every timer due at or before `now`, in F24 order: the midnight reset, the
    /// interval tick, next-refreshes, scheduled refreshes. Overdue timers fire once (T5).
    pub fn wake(&mut self, now: Instant, out: &mut Vec<FormDecision>) {
        self.reset_at_midnight(now, out);
        self.tick(now, out);
        self.fire_next_refreshes(now, out);
        self.fire_scheduled(now, out);
    }

    /// Runs due timers, then applies `input` (F24: timers before inputs at one instant).
    pub fn apply(
        &mut self,
        now: Instant,
        input: DeviceInput,
        out: &mut Vec<FormDecision>,
    ) -> Result<Accepted, RuleError> {
        self.wake(now, out);
        match input {
            DeviceInput::Wake => Ok(Accepted::Done),
            DeviceInput::AddForm(form) => self.add_form(now, form).map(|()| Accepted::Done),
            DeviceInput::RemoveForm(id) => self.remove_form(id).map(|()| Accepted::Done),
            DeviceInput::Hide(id) => self.hide(id).map(|()| Accepted::Done),
            DeviceInput::Show(id) => self.show(id, out).map(|()| Accepted::Done),
            DeviceInput::Offline => {
                self.note_network_report(now);
                self.offline_since.get_or_insert(now);
                Ok(Accepted::Done)
            }
            DeviceInput::Online => {
                self.note_network_report(now);
                self.online(now, out);
                Ok(Accepted::Done)
            }
            DeviceInput::SetNextRefresh {
                form,
                caller,
                minutes,
            } => self
                .set_next_refresh(now, form, caller, minutes)
                .map(Accepted::NextRefreshAt),
            DeviceInput::Replan { form, plan } => {
                self.replan(now, form, plan).map(|()| Accepted::Done)
            }
            DeviceInput::SetZone(zone) => {
                self.set_zone(now, zone);
                Ok(Accepted::Done)
            }
        }
    }

    /// The next `limit` decisions about `form` if nothing else happens (no inputs), found
    /// by running a copy of this device forward. Stops after `horizon_ms` of simulated
    /// time, so a form with nothing planned returns quickly.
    pub fn preview(
        &self,
        form: FormId,
        now: Instant,
        limit: usize,
        horizon_ms: i64,
    ) -> Vec<(Instant, FormDecision)> {
        let mut copy = self.clone();
        let mut found = Vec::new();
        let mut decisions = Vec::new();
        copy.wake(now, &mut decisions);
        let horizon = now.plus_millis(horizon_ms);
        while found.len() < limit {
            let Some(at) = copy.next_wakeup().filter(|at| *at <= horizon) else {
                break;
            };
            decisions.clear();
            copy.wake(at, &mut decisions);
            found.extend(
                decisions
                    .iter()
                    .filter(|d| d.form() == form)
                    .map(|d| (at, *d)),
            );
        }
        found.truncate(limit);
        found
    }

    // ---- timers -------------------------------------------------------------------

    /// F17, F18 and T5: one reset however many midnights were missed.
    fn reset_at_midnight(&mut self, now: Instant, out: &mut Vec<FormDecision>) {
        let Some(reset_at) = self.next_reset_at else {
            return;
        };
        if now < reset_at {
            return;
        }
        for index in 0..self.forms.len() {
            let form = &mut self.forms[index];
            form.counted_today = 0;
            if form.remind_at_reset() {
                form.set_flag(FLAG_REMIND_AT_RESET, false);
                trigger(form, Trigger::QuotaReset, out);
            }
        }
        self.next_reset_at = next_local_midnight(now, &self.zone);
    }

    /// F11, F12 and T5: the first grid tick, after those already accounted for, at which
    /// some interval form is due. Ticks where no form is due need no wake-up.
    fn next_interval_tick(&self) -> Option<Instant> {
        let grid = self.grid?;
        let due_from = self
            .forms
            .iter()
            .filter_map(FormState::interval_due_from)
            .min()?;
        let after = due_from.max(self.ticked_through.plus_millis(1));
        Some(first_tick_at_or_after(grid, self.settings.tick_ms(), after))
    }

    /// F12: evaluates the tick if one is due; missed ticks collapse into one evaluation
    /// at `now` (T5), and the grid keeps its anchor.
    fn tick(&mut self, now: Instant, out: &mut Vec<FormDecision>) {
        let due_tick = self.next_interval_tick();
        if now > self.ticked_through {
            self.ticked_through = now;
        }
        if due_tick.is_none_or(|tick| tick > now) {
            return;
        }
        for form in &mut self.forms {
            let Some(due_from) = form.interval_due_from() else {
                continue;
            };
            if now < due_from {
                continue;
            }
            if form.pending_next.is_some() {
                out.push(FormDecision::Skipped {
                    form: form.id,
                    kind: Trigger::Interval,
                    reason: SkipReason::NextRefreshPending,
                });
            } else if !form.quota_left() {
                out.push(FormDecision::Skipped {
                    form: form.id,
                    kind: Trigger::Interval,
                    reason: SkipReason::QuotaExhausted,
                });
            } else {
                form.last_interval = now;
                trigger(form, Trigger::Interval, out);
            }
        }
    }

    /// F14: due next-refreshes fire if quota remains, else are dropped; either way they
    /// are no longer pending.
    fn fire_next_refreshes(&mut self, now: Instant, out: &mut Vec<FormDecision>) {
        for form in &mut self.forms {
            if form.pending_next.is_none_or(|at| at > now) {
                continue;
            }
            form.pending_next = None;
            if form.quota_left() {
                trigger(form, Trigger::Next, out);
            } else {
                out.push(FormDecision::Skipped {
                    form: form.id,
                    kind: Trigger::Next,
                    reason: SkipReason::QuotaExhausted,
                });
            }
        }
    }

    /// F15: scheduled refreshes, not counted; missed occurrences give one trigger (T5).
    fn fire_scheduled(&mut self, now: Instant, out: &mut Vec<FormDecision>) {
        for form in &mut self.forms {
            if form.next_scheduled.is_none_or(|at| at > now) {
                continue;
            }
            form.next_scheduled = next_occurrence(&form.plan.scheduled_times, now, &self.zone);
            trigger(form, Trigger::Scheduled, out);
        }
    }

    // ---- inputs -------------------------------------------------------------------

    fn position(&self, id: FormId) -> Result<usize, RuleError> {
        self.forms
            .iter()
            .position(|f| f.id == id)
            .ok_or(RuleError::FormNotFound)
    }

    /// F19, F22, F23: checks in order `form_exists`, `invalid_config`, `too_many_forms`.
    fn add_form(&mut self, now: Instant, new: NewForm) -> Result<(), RuleError> {
        if self.position(new.id).is_ok() {
            return Err(RuleError::FormExists);
        }
        let plan = new.plan.ok_or(RuleError::InvalidConfig)?;
        if self.forms.len() >= self.settings.max_forms as usize {
            return Err(RuleError::TooManyForms {
                max: self.settings.max_forms,
            });
        }
        let mut flags = 0;
        if !new.hidden {
            flags |= FLAG_VISIBLE;
        }
        if new.system_app {
            flags |= FLAG_SYSTEM_APP;
        }
        let next_scheduled = next_occurrence(&plan.scheduled_times, now, &self.zone);
        self.forms.push(FormState {
            id: new.id,
            provider: new.provider,
            flags,
            deferred: TriggerSet::EMPTY,
            counted_today: 0,
            plan,
            last_interval: now,
            pending_next: None,
            next_scheduled,
        });
        self.maintain_grid(now);
        Ok(())
    }

    /// F22: everything of the form goes with it.
    fn remove_form(&mut self, id: FormId) -> Result<(), RuleError> {
        let index = self.position(id)?;
        self.forms.remove(index);
        self.maintain_grid(self.ticked_through);
        Ok(())
    }

    /// F11: a grid starts when an interval form arrives on a device without one, and is
    /// dropped with the last interval form.
    fn maintain_grid(&mut self, now: Instant) {
        let has_interval = self.forms.iter().any(|f| f.plan.interval_half_hours > 0);
        match (has_interval, self.grid) {
            (true, None) => {
                self.grid = Some(TickGrid { anchor: now });
                self.ticked_through = self.ticked_through.max(now);
            }
            (false, Some(_)) => self.grid = None,
            _ => {}
        }
    }

    /// F20: `hide` on a hidden form does nothing.
    fn hide(&mut self, id: FormId) -> Result<(), RuleError> {
        let index = self.position(id)?;
        self.forms[index].set_flag(FLAG_VISIBLE, false);
        Ok(())
    }

    /// F21: one `visible` refresh for everything deferred while hidden.
    fn show(&mut self, id: FormId, out: &mut Vec<FormDecision>) -> Result<(), RuleError> {
        let index = self.position(id)?;
        let form = &mut self.forms[index];
        if form.is_visible() {
            return Ok(());
        }
        form.set_flag(FLAG_VISIBLE, true);
        let deferred = std::mem::take(&mut form.deferred);
        if deferred.is_empty() {
            return Ok(());
        }
        let counted = deferred.any_counted();
        if counted {
            form.counted_today = form.counted_today.saturating_add(1);
        }
        out.push(FormDecision::Refresh {
            form: form.id,
            trigger: Trigger::Visible,
            counted,
            deferred,
        });
        Ok(())
    }

    fn note_network_report(&mut self, now: Instant) {
        self.last_network_report = Some(self.last_network_report.map_or(now, |l| l.max(now)));
    }

    /// F16: a continuous outage of at least ten minutes refreshes the network forms of
    /// system apps; a repeated `online` does nothing.
    fn online(&mut self, now: Instant, out: &mut Vec<FormDecision>) {
        let Some(since) = self.offline_since.take() else {
            return;
        };
        if now.millis_since(since) < MIN_OUTAGE_MS {
            return;
        }
        for form in &mut self.forms {
            if form.plan.network_recovery && form.is_system_app() {
                trigger(form, Trigger::Network, out);
            }
        }
    }

    /// F13 (errors in order) and F14.
    fn set_next_refresh(
        &mut self,
        now: Instant,
        id: FormId,
        caller: ProviderId,
        minutes: i64,
    ) -> Result<Instant, RuleError> {
        let resets_at = self.next_reset_at.unwrap_or(now);
        let index = self.position(id)?;
        let form = &mut self.forms[index];
        if form.provider != caller {
            return Err(RuleError::NotFormOwner);
        }
        if form.plan.data_proxy {
            return Err(RuleError::ProxyEnabled);
        }
        let min = if form.is_system_app() {
            NEXT_REFRESH_MIN_SYSTEM
        } else {
            NEXT_REFRESH_MIN
        };
        if !(min..=NEXT_REFRESH_MAX).contains(&minutes) {
            return Err(RuleError::InvalidNextRefresh { min });
        }
        if !form.quota_left() {
            form.set_flag(FLAG_REMIND_AT_RESET, true);
            return Err(RuleError::QuotaExhausted { resets_at });
        }
        let due = now.plus_minutes(minutes);
        form.pending_next = Some(due);
        Ok(due)
    }

    /// F23a: new settings take effect now; history (last, count, mark, deferred,
    /// pending next-refresh) is kept.
    fn replan(&mut self, now: Instant, id: FormId, plan: RefreshPlan) -> Result<(), RuleError> {
        let index = self.position(id)?;
        let form = &mut self.forms[index];
        form.next_scheduled = next_occurrence(&plan.scheduled_times, now, &self.zone);
        form.plan = plan;
        self.maintain_grid(now);
        Ok(())
    }

    /// F23a: scheduled times and midnight follow the new zone from now on.
    fn set_zone(&mut self, now: Instant, zone: TimeZone) {
        self.next_reset_at = next_local_midnight(now, &zone);
        for form in &mut self.forms {
            form.next_scheduled = next_occurrence(&form.plan.scheduled_times, now, &zone);
        }
        self.zone = zone;
    }
}

/// F20: deliver to a visible form (counting F17's kinds), defer on a hidden one.
fn trigger(form: &mut FormState, kind: Trigger, out: &mut Vec<FormDecision>) {
    if form.is_visible() {
        let counted = kind.is_counted();
        if counted {
            form.counted_today = form.counted_today.saturating_add(1);
        }
        out.push(FormDecision::Refresh {
            form: form.id,
            trigger: kind,
            counted,
            deferred: TriggerSet::EMPTY,
        });
    } else {
        form.deferred.insert(kind);
        out.push(FormDecision::Deferred {
            form: form.id,
            kind,
        });
    }
}

/// The first grid tick (k ≥ 1) at or after `at`.
fn first_tick_at_or_after(grid: TickGrid, tick_ms: i64, at: Instant) -> Instant {
    let elapsed = at.millis_since(grid.anchor);
    if elapsed <= tick_ms {
        return grid.anchor.plus_millis(tick_ms);
    }
    let ticks = elapsed.saturating_add(tick_ms - 1) / tick_ms;
    grid.anchor.plus_millis(ticks.saturating_mul(tick_ms))
}

/// F15 with T2: the earliest instant strictly after `after` at which one of `times`
/// falls in `zone`. Neighbouring days are searched because a DST gap can move a local
/// time across midnight.
pub fn next_occurrence(
    times: &[crate::time::LocalTime],
    after: Instant,
    zone: &TimeZone,
) -> Option<Instant> {
    if times.is_empty() {
        return None;
    }
    let today = local_date(after, zone)?;
    let mut best: Option<Instant> = None;
    for offset in -1..=3i32 {
        let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
            continue;
        };
        for &time in times {
            if let Some(at) = resolve_local_time(date, time, zone) {
                if at > after && best.is_none_or(|b| at < b) {
                    best = Some(at);
                }
            }
        }
        // Once a candidate exists and this day is past `after`'s day, later days cannot
        // hold an earlier one.
        if best.is_some() && offset >= 1 {
            break;
        }
    }
    best
}

/// Stores a time zone as its IANA name (T1).
mod zone_by_name {
    use jiff::tz::TimeZone;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(zone: &TimeZone, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(zone.iana_name().unwrap_or("UTC"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TimeZone, D::Error> {
        let name = String::deserialize(d)?;
        TimeZone::get(&name)
            .map_err(|_| serde::de::Error::custom(format!("unknown time zone {name}")))
    }
}
