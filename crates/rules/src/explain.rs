//! "Why did (or didn't) this form refresh?": what the rules know about one form at one
//! instant, read the same way for every explainer (the CLI's `explain`, the API's
//! explain endpoint), so that they cannot tell different stories.

use crate::decision::{FormDecision, FormId, Timed, Trigger, TriggerSet};
use crate::device::{Device, DAILY_QUOTA};
use crate::time::{Instant, LocalTime, HOUR_MS};
use std::sync::Arc;

/// How many planned decisions an explanation lists, and how far ahead it looks.
pub const PLANNED: usize = 10;
pub const PLAN_HORIZON_MS: i64 = 400 * 24 * HOUR_MS;

/// One form's state and plan at an instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormExplanation {
    pub at: Instant,
    pub visible: bool,
    /// Triggers deferred while hidden (F20), delivered on show (F21).
    pub deferred: TriggerSet,
    pub counted_today: u8,
    pub daily_quota: u8,
    /// The device's next local midnight (F17).
    pub quota_resets_at: Option<Instant>,
    /// A `quota_reset` refresh is due at the reset (F18).
    pub remind_at_reset: bool,
    pub pending_next_refresh: Option<Instant>,
    /// The interval period (F10), if the form has interval refresh.
    pub interval_period_ms: Option<i64>,
    /// The device's shared tick (F11), in minutes.
    pub tick_minutes: u8,
    /// The last interval refresh, or the add (F12).
    pub last_interval: Instant,
    pub scheduled_times: Arc<[LocalTime]>,
    pub next_scheduled: Option<Instant>,
    pub network_recovery: bool,
    pub data_proxy: bool,
    /// What the rules will decide for the form if nothing else happens.
    pub planned: Vec<Timed<FormDecision>>,
}

/// Explains `form` of `device` at `now` (the device is woken to `now` on a copy, so
/// overdue timers count as fired), listing up to `planned` next decisions. `None` when
/// the form is not on the device.
pub fn explain_form(
    device: &Device,
    form: FormId,
    now: Instant,
    planned: usize,
) -> Option<FormExplanation> {
    let mut device = device.clone();
    device.wake(now, &mut Vec::new());
    let state = device.form(form)?;
    let plan = state.plan();
    Some(FormExplanation {
        at: now,
        visible: state.is_visible(),
        deferred: state.deferred(),
        counted_today: state.counted_today(),
        daily_quota: DAILY_QUOTA,
        quota_resets_at: device.next_reset_at(),
        remind_at_reset: state.remind_at_reset(),
        pending_next_refresh: state.pending_next_refresh(),
        interval_period_ms: plan.interval_period_ms(),
        tick_minutes: device.settings().tick_minutes(),
        last_interval: state.last_interval(),
        scheduled_times: plan.scheduled_times.clone(),
        next_scheduled: state.next_scheduled(),
        network_recovery: plan.network_recovery,
        data_proxy: plan.data_proxy,
        planned: device
            .preview(form, now, planned, PLAN_HORIZON_MS)
            .into_iter()
            .map(|(at, decision)| Timed { at, decision })
            .collect(),
    })
}

/// A planned decision in words, with its rule: "refresh interval, counted [F12]".
pub fn planned_line(decision: &FormDecision) -> String {
    match *decision {
        FormDecision::Refresh {
            trigger, counted, ..
        } => format!(
            "refresh {trigger}{} [{}]",
            if counted { ", counted" } else { "" },
            decision.rule()
        ),
        FormDecision::Deferred { kind, .. } => format!("defer {kind} while hidden [F20]"),
        FormDecision::Skipped { kind, reason, .. } => {
            format!("skip {kind}: {} [{}]", reason.as_str(), decision.rule())
        }
    }
}

/// The deferred kinds by name, sorted (F21).
pub fn deferred_names(deferred: TriggerSet) -> Vec<&'static str> {
    deferred.iter().map(Trigger::as_str).collect()
}
