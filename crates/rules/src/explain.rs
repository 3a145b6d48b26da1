//! "Why did (or didn't) this form refresh?": what the rules know about one form at one
//! instant, read the same way for every explainer (the CLI's `explain`, the API's
//! explain endpoint), so that they cannot tell different stories.

use crate::decision::{FormDecision, FormId, Timed, Trigger, TriggerSet};
use crate::device::{Device, DAILY_QUOTA};
use crate::periodic::{gray_bucket, App, FetchPair, Ineligible, NextFetchReason, ACTIVE_FOR_MS};
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

/// P4: where one user stands in an app's grayscale rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayStanding {
    pub url: String,
    pub percent: u8,
    pub tester: bool,
    /// The user's stable bucket, 0 to 99.
    pub bucket: u64,
    pub in_gray_group: bool,
}

/// "Why was (or wasn't) this user's data fetched?": what the rules know about one
/// user's periodic fetch at one instant (P4–P10), for every explainer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairExplanation {
    pub enabled: bool,
    pub gray: Option<GrayStanding>,
    pub last_launch: Option<Instant>,
    /// P6: the user counts as active until then.
    pub active_until: Option<Instant>,
    pub token_set: bool,
    /// P7: why the user is not eligible now; `None` when eligible.
    pub ineligible: Option<Ineligible>,
    pub consecutive_failures: u32,
    /// P8–P10: the next fetch, and why then.
    pub next_due: Option<Instant>,
    pub why: NextFetchReason,
}

pub fn explain_pair(app: &App, pair: &FetchPair, user: &str, now: Instant) -> PairExplanation {
    let gray = app
        .periodic()
        .and_then(|setting| setting.gray.as_ref())
        .map(|gray| GrayStanding {
            url: gray.url.clone(),
            percent: gray.percent,
            tester: gray.testers.iter().any(|t| t == user),
            bucket: gray_bucket(app.appid(), user),
            in_gray_group: app.in_gray_group(gray, user),
        });
    PairExplanation {
        enabled: app.periodic_enabled(),
        gray,
        last_launch: pair.last_launch(),
        active_until: pair.last_launch().map(|l| l.plus_millis(ACTIVE_FOR_MS)),
        token_set: pair.has_token(),
        ineligible: pair.ineligibility(now, app),
        consecutive_failures: pair.consecutive_failures(),
        next_due: pair.next_wakeup(now, app),
        why: pair.next_fetch_reason(now, app),
    }
}
