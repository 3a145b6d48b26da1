//! "Why did (or didn't) my widget refresh?": explanations of one subject at one instant.
//!
//! The scenario is run up to and including the instant; then the subject's state is read
//! back from the rules and its recent decisions are listed with the rule that made each,
//! followed by what the rules plan next if nothing else happens.

use crate::html::{explanation_page, Lane};
use crate::output::{describe, format_instant};
use crate::run::{RecordKind, Simulation};
use crate::scenario::{Action, Scenario};
use refreshd_rules::explain::{
    deferred_names, explain_form as explain_form_state, explain_pair, planned_line, PLANNED,
};
use refreshd_rules::form_config::{check_form_entry, LintContext, Severity};
use refreshd_rules::periodic::Source;
use refreshd_rules::time::{HOUR_MS, MINUTE_MS};
use refreshd_rules::Instant;
use std::fmt::Write as _;

/// What to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Form(String),
    Fetch { app: String, user: String },
}

/// Why an explanation cannot be given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("form \"{0}\" is not declared in the scenario's \"forms\"")]
    UnknownForm(String),
    #[error("app \"{0}\" is not declared in the scenario's \"apps\"")]
    UnknownApp(String),
    #[error("--at {0} is outside the scenario (start to end)")]
    OutOfRange(String),
}

/// How far back recent decisions are listed.
const LOOKBACK_MS: i64 = 24 * HOUR_MS;

/// Explains `subject` at `at` (default: the scenario's last simulated instant).
pub fn explain(
    scenario: &Scenario,
    subject: &Subject,
    at: Option<Instant>,
) -> Result<String, ExplainError> {
    let (sim, at) = run_to(scenario, at)?;
    explain_text(&sim, subject, at)
}

/// As [`explain`], as one self-contained HTML page: the subject's lane of the timeline
/// from the scenario's start to the instant, above the same text.
pub fn explain_html(
    scenario: &Scenario,
    subject: &Subject,
    at: Option<Instant>,
) -> Result<String, ExplainError> {
    let (sim, at) = run_to(scenario, at)?;
    let text = explain_text(&sim, subject, at)?;
    let lane = match subject {
        Subject::Form(form) => Lane::Form(form.clone()),
        Subject::Fetch { app, user } => Lane::Fetch {
            app: app.clone(),
            user: user.clone(),
        },
    };
    Ok(explanation_page(sim.records(), scenario, lane, at, &text))
}

/// The scenario run up to and including `at` (default: its end).
fn run_to(
    scenario: &Scenario,
    at: Option<Instant>,
) -> Result<(Simulation<'_>, Instant), ExplainError> {
    let at = at.unwrap_or(scenario.end);
    if at < scenario.start || at > scenario.end {
        return Err(ExplainError::OutOfRange(format_instant(at, &scenario.zone)));
    }
    let mut sim = Simulation::new(scenario);
    sim.run_until(at, true);
    Ok((sim, at))
}

fn explain_text(sim: &Simulation, subject: &Subject, at: Instant) -> Result<String, ExplainError> {
    match subject {
        Subject::Form(form) => explain_form(sim, form, at),
        Subject::Fetch { app, user } => explain_fetch(sim, app, user, at),
    }
}

fn explain_form(sim: &Simulation, form: &str, at: Instant) -> Result<String, ExplainError> {
    let scenario = sim.scenario();
    let zone = &scenario.zone;
    let entry = scenario
        .form(form)
        .ok_or_else(|| ExplainError::UnknownForm(form.to_string()))?;
    let t = |i: Instant| format_instant(i, zone);
    let mut out = String::new();
    let _ = writeln!(out, "form {form} at {} ({})", t(at), scenario.zone_name);

    // The configuration as the rules read it.
    let config = check_form_entry(
        &entry.config,
        &entry.config_path,
        LintContext {
            system_app: entry.traits.system_app,
        },
    );
    for issue in &config.issues {
        let severity = match issue.severity {
            Severity::Error => "config error",
            Severity::Warning => "config warning",
        };
        let _ = writeln!(
            out,
            "  {severity} {} at {}: {} (hint: {})",
            issue.rule, issue.path, issue.message, issue.hint
        );
    }

    let live = sim
        .live_form(form)
        .and_then(|id| explain_form_state(sim.device(), id, at, PLANNED));
    match &live {
        None => {
            let added = scenario.events.iter().any(|e| {
                e.at <= at && matches!(&e.action, Action::AddForm { form: f, .. } if f == form)
            });
            let why = if !added {
                "it has not been added yet (no add_form event so far)"
            } else if config.has_errors() {
                "its add was rejected: invalid_config (F5), see the config errors above"
            } else {
                "it was removed, or its add was rejected (see the decisions below)"
            };
            let _ = writeln!(out, "  not on the device: {why}");
        }
        Some(state) => {
            let _ = writeln!(
                out,
                "  visible: {}{}",
                if state.visible {
                    "yes"
                } else {
                    "no: triggers are deferred until shown (F20)"
                },
                if state.deferred.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; deferred now: {}",
                        deferred_names(state.deferred).join(", ")
                    )
                }
            );
            match state.interval_period_ms {
                Some(period) => {
                    let _ = writeln!(
                        out,
                        "  interval: every {} min (F10: updateDuration {}, market {}, API {}); shared tick every {} min (F11); last interval refresh or add at {}",
                        period / MINUTE_MS,
                        shown(config.value.as_ref().map(|d| d.update_duration)),
                        shown(entry.traits.market_update_duration),
                        shown(entry.traits.api_version),
                        state.tick_minutes,
                        t(state.last_interval)
                    );
                }
                None => {
                    let why = match &config.value {
                        Some(d) if !d.update_enabled => "updateEnabled is false (F6)",
                        Some(d) if d.data_proxy_enabled && d.update_duration > 0 => {
                            "dataProxyEnabled turns it off (F9)"
                        }
                        _ => "updateDuration is 0 (F8)",
                    };
                    let _ = writeln!(out, "  interval: none, {why}");
                }
            }
            if state.scheduled_times.is_empty() {
                let _ = writeln!(out, "  scheduled: none (F7, F8)");
            } else {
                let times: Vec<String> = state
                    .scheduled_times
                    .iter()
                    .map(|t| t.to_string())
                    .collect();
                let _ = writeln!(
                    out,
                    "  scheduled: daily at {} local, not counted (F15); next at {}",
                    times.join(", "),
                    state.next_scheduled.map(t).unwrap_or_else(|| "-".into())
                );
            }
            let _ = writeln!(
                out,
                "  network-recovery refresh: {}",
                if state.network_recovery {
                    "yes, after an outage of 10 minutes or more (F16)"
                } else {
                    "no (F16 needs \"network\" in conditionUpdate and a system app)"
                }
            );
            let resets = state.quota_resets_at.map(t).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "  quota: {}/{} counted refreshes used today; resets at {resets} (F17){}",
                state.counted_today,
                state.daily_quota,
                if state.remind_at_reset {
                    "; a quota_reset refresh is due then (F18)"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                out,
                "  next-refresh: {}",
                match (state.data_proxy, state.pending_next_refresh) {
                    (true, _) => "not available, data proxy enabled (F9)".to_string(),
                    (false, Some(due)) => format!(
                        "pending at {} (F14); interval triggers are skipped until then (F12)",
                        t(due)
                    ),
                    (false, None) => "none pending".to_string(),
                }
            );
        }
    }

    let _ = writeln!(out, "\ndecisions in the 24 hours up to {}:", t(at));
    let mut any = false;
    for record in sim
        .records()
        .iter()
        .filter(|r| r.at.millis_since(at) > -LOOKBACK_MS)
    {
        let about_form = match &record.what {
            RecordKind::Form { form: f, .. } => f == form,
            RecordKind::Rejected { subject, .. } => subject.as_deref() == Some(form),
            RecordKind::Fetch { .. } => false,
        };
        if about_form {
            let (_, what, detail) = describe(record);
            let _ = writeln!(out, "  {}  {what}  {detail}", t(record.at));
            any = true;
        }
    }
    if !any {
        let _ = writeln!(out, "  none");
    }

    let _ = writeln!(out, "\nnext {PLANNED} planned, if nothing else happens:");
    let planned = live.map(|state| state.planned).unwrap_or_default();
    if planned.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for planned in planned {
        let _ = writeln!(
            out,
            "  {}  {}",
            t(planned.at),
            planned_line(&planned.decision)
        );
    }
    Ok(out)
}

fn explain_fetch(
    sim: &Simulation,
    app_id: &str,
    user: &str,
    at: Instant,
) -> Result<String, ExplainError> {
    let scenario = sim.scenario();
    let zone = &scenario.zone;
    let t = |i: Instant| format_instant(i, zone);
    let app_index = scenario
        .apps
        .iter()
        .position(|(id, _)| id == app_id)
        .ok_or_else(|| ExplainError::UnknownApp(app_id.to_string()))?;
    let app = &sim.apps()[app_index];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "periodic fetch of app {app_id} for user {user} at {} ({})",
        t(at),
        scenario.zone_name
    );
    let state = sim.pair(app_index, user);
    // What the rules say about this user, read once (a user with no state yet is a
    // default pair: never launched, no token).
    let why = explain_pair(
        app,
        &state.map(|s| s.pair.clone()).unwrap_or_default(),
        user,
        at,
    );
    match app.periodic() {
        None => {
            let _ = writeln!(out, "  periodic fetch: not configured (P1)");
        }
        Some(setting) => {
            let source = match &setting.source {
                Source::Url(url) => url.clone(),
                Source::Cloud { env, function } => format!("cloud://{env}/{function}"),
            };
            let _ = writeln!(
                out,
                "  periodic fetch: {}; source {source}",
                if setting.enabled {
                    "enabled"
                } else {
                    "disabled (P7)"
                }
            );
            if let Some(gray) = &why.gray {
                let _ =
                    writeln!(
                    out,
                    "  grayscale: {} at {}%; this user is {} (tester: {}, bucket {} {} {}) (P4)",
                    gray.url,
                    gray.percent,
                    if gray.in_gray_group { "in the gray group" } else { "not in the gray group" },
                    if gray.tester { "yes" } else { "no" },
                    gray.bucket,
                    if gray.bucket < gray.percent as u64 { "<" } else { ">=" },
                    gray.percent
                );
            }
        }
    }
    match state {
        None => {
            let _ = writeln!(
                out,
                "  this user has not launched the app or set a token yet (P6, P7)"
            );
        }
        Some(state) => {
            let _ = writeln!(
                out,
                "  last launch: {} (active while less than 7 days have passed, P6){}",
                why.last_launch.map(t).unwrap_or_else(|| "never".into()),
                why.active_until
                    .map(|until| format!("; active until {}", t(until)))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                out,
                "  token: {} (P5)",
                if why.token_set { "set" } else { "not set" }
            );
            match why.ineligible {
                None => {
                    let _ = writeln!(out, "  eligible: yes (P7)");
                }
                Some(why) => {
                    let _ = writeln!(
                        out,
                        "  eligible: no, {} (P7); no fetch is planned until that changes",
                        why.code()
                    );
                }
            }
            if let Some((when, outcome)) = state.last_outcome {
                let _ = writeln!(
                    out,
                    "  last attempt: {} → {} ({}); consecutive failures: {}",
                    t(when),
                    outcome.as_str(),
                    if outcome.is_success() { "P13" } else { "P14" },
                    why.consecutive_failures
                );
            }
            let cached = state
                .cache
                .time_stamp_ms
                .map(|ms| {
                    format!(
                        "{} bytes, time_stamp {} ({ms})",
                        state.cache.data.as_deref().map_or(0, str::len),
                        t(Instant::from_millis(ms))
                    )
                })
                .unwrap_or_else(|| "nothing yet (no_cached_data)".into());
            let _ = writeln!(out, "  cached data: {cached} (P15)");
            let next = match why.next_due {
                Some(due) => format!("{} — {}", t(due), why.why),
                None => "none (not eligible then, P10)".to_string(),
            };
            let _ = writeln!(out, "  next fetch: {next}");
        }
    }
    let _ = writeln!(
        out,
        "\nfetches and rejections in the 24 hours up to {}:",
        t(at)
    );
    let mut any = false;
    for record in sim
        .records()
        .iter()
        .filter(|r| r.at.millis_since(at) > -LOOKBACK_MS)
    {
        let relevant = match &record.what {
            RecordKind::Fetch { app, user: u, .. } => app == app_id && u == user,
            RecordKind::Rejected { subject, .. } => subject.as_deref() == Some(app_id),
            RecordKind::Form { .. } => false,
        };
        if relevant {
            let (_, what, detail) = describe(record);
            let _ = writeln!(out, "  {}  {what}  {detail}", t(record.at));
            any = true;
        }
    }
    if !any {
        let _ = writeln!(out, "  none");
    }
    Ok(out)
}

fn shown<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "not set".to_string(), |v| v.to_string())
}
