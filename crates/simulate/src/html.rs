//! The timeline as one self-contained HTML page: an inline SVG with one lane per form and
//! one per (app, user) periodic fetch, a time axis in the scenario's zone, and the text
//! timeline underneath. Nothing is loaded from elsewhere (no fonts, scripts, styles or
//! images), so a file opens the same offline.
//!
//! Marks are told apart by shape as well as colour: a counted refresh is a filled circle,
//! a refresh that is not counted a filled diamond, a deferred trigger an open triangle,
//! a skipped one a cross; a fetch is a filled circle when it succeeded and an open square
//! when it failed; a rejected input an open square with a bar. Every mark has a `<title>`
//! (shown on hover) with its local time, what happened and the rule that decided it, and
//! `data-*` attributes that say the same for tools.

use crate::output::{describe, format_instant, timeline};
use crate::run::{Record, RecordKind};
use crate::scenario::Scenario;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use refreshd_rules::time::local_date;
use refreshd_rules::{FormDecision, Instant, Trigger};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Horizontal layout, in SVG units.
const LABEL_WIDTH: f64 = 200.0;
const PLOT_WIDTH: f64 = 1000.0;
const RIGHT_MARGIN: f64 = 20.0;
/// Vertical layout: the axis on top, then one lane after another.
const AXIS_HEIGHT: f64 = 46.0;
const LANE_HEIGHT: f64 = 44.0;
/// Within a lane: deferred marks above the middle, refreshes and fetches on it, skipped
/// and rejected marks below it.
const ROW_OFFSET: f64 = 12.0;

/// Which records a lane shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lane {
    /// A form of the scenario, by its id: its decisions, and inputs about it that were
    /// rejected.
    Form(String),
    /// One user's periodic fetches of one app.
    Fetch { app: String, user: String },
    /// Rejected inputs that name no form lane.
    Rejected,
}

impl Lane {
    fn label(&self) -> String {
        match self {
            Lane::Form(form) => format!("form {form}"),
            Lane::Fetch { app, user } => format!("fetch {app} / {user}"),
            Lane::Rejected => "rejected inputs".to_string(),
        }
    }

    fn data(&self) -> String {
        match self {
            Lane::Form(form) => format!("data-lane=\"form\" data-form=\"{}\"", escape(form)),
            Lane::Fetch { app, user } => format!(
                "data-lane=\"fetch\" data-app=\"{}\" data-user=\"{}\"",
                escape(app),
                escape(user)
            ),
            Lane::Rejected => "data-lane=\"rejected\"".to_string(),
        }
    }
}

/// The lane of `record` among `lanes`, if any.
fn lane_of(record: &Record, lanes: &[Lane]) -> Option<usize> {
    let wanted = |lane: &Lane| match (&record.what, lane) {
        (RecordKind::Form { form, .. }, Lane::Form(f)) => form == f,
        (RecordKind::Fetch { app, user, .. }, Lane::Fetch { app: a, user: u }) => {
            app == a && user == u
        }
        (RecordKind::Rejected { subject, .. }, Lane::Form(f)) => subject.as_deref() == Some(f),
        _ => false,
    };
    // A rejected input that names no form lane goes to the rejected lane, or, without
    // one (an explanation of a fetch), to the lane of the app it names.
    lanes
        .iter()
        .position(wanted)
        .or_else(|| match &record.what {
            RecordKind::Rejected { subject, .. } => {
                lanes.iter().position(|l| *l == Lane::Rejected).or_else(|| {
                    lanes.iter().position(
                        |l| matches!(l, Lane::Fetch { app, .. } if subject.as_deref() == Some(app)),
                    )
                })
            }
            _ => None,
        })
}

/// The lanes of a whole scenario: every declared form, then each (app, user) pair that
/// fetched, in the order of its first fetch, then rejected inputs about anything else.
pub fn scenario_lanes(records: &[Record], scenario: &Scenario) -> Vec<Lane> {
    let mut lanes: Vec<Lane> = scenario
        .forms
        .iter()
        .map(|f| Lane::Form(f.id.clone()))
        .collect();
    for record in records {
        if let RecordKind::Fetch { app, user, .. } = &record.what {
            let lane = Lane::Fetch {
                app: app.clone(),
                user: user.clone(),
            };
            if !lanes.contains(&lane) {
                lanes.push(lane);
            }
        }
    }
    let stray = records.iter().any(|r| match &r.what {
        RecordKind::Rejected { subject, .. } => !subject
            .as_deref()
            .is_some_and(|s| scenario.forms.iter().any(|f| f.id == s)),
        _ => false,
    });
    if stray {
        lanes.push(Lane::Rejected);
    }
    lanes
}

/// `simulate --format html`: the whole scenario's timeline as one page.
pub fn timeline_page(records: &[Record], scenario: &Scenario) -> String {
    let lanes = scenario_lanes(records, scenario);
    let zone = &scenario.zone;
    let heading = format!(
        "refreshd timeline in {} from {} to {}",
        scenario.zone_name,
        format_instant(scenario.start, zone),
        format_instant(scenario.end, zone)
    );
    let mut body = String::new();
    let _ = writeln!(body, "<h1>{}</h1>", escape(&heading));
    body.push_str(&legend());
    body.push_str(&svg(
        records,
        scenario,
        &lanes,
        scenario.start,
        scenario.end,
    ));
    body.push_str(&daily_counts(records, scenario));
    let _ = writeln!(
        body,
        "<details open=\"open\"><summary>The same timeline as text</summary><pre>{}</pre></details>",
        escape(&timeline(records, scenario))
    );
    page(&heading, &body)
}

/// `explain --format html`: one subject's lane from the scenario's start to `at`, above
/// the text explanation.
pub fn explanation_page(
    records: &[Record],
    scenario: &Scenario,
    lane: Lane,
    at: Instant,
    explanation: &str,
) -> String {
    let heading = format!(
        "refreshd explain: {}",
        explanation.lines().next().unwrap_or_default()
    );
    let mut body = String::new();
    let _ = writeln!(body, "<h1>{}</h1>", escape(&heading));
    body.push_str(&legend());
    body.push_str(&svg(records, scenario, &[lane], scenario.start, at));
    let _ = writeln!(body, "<pre>{}</pre>", escape(explanation));
    page(&heading, &body)
}

fn page(title: &str, body: &str) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    let _ = writeln!(out, "<title>{}</title>", escape(title));
    out.push_str(STYLE);
    out.push_str("</head>\n<body>\n");
    out.push_str(body);
    out.push_str("</body>\n</html>\n");
    out
}

const STYLE: &str = "<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.2em; font-weight: 600; }
pre { font-family: ui-monospace, monospace; font-size: 0.85em; background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font-family: system-ui, sans-serif; font-size: 11px; fill: #333; }
svg .lane-label { font-size: 12px; font-weight: 600; }
svg .mark:hover { opacity: 0.6; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.legend { display: flex; flex-wrap: wrap; gap: 0.4em 1.4em; align-items: center; margin: 0.5em 0 1em; font-size: 0.9em; }
.legend span { display: inline-flex; align-items: center; gap: 0.35em; }
</style>
";

/// A trigger's colour (its shape says counted or not, deferred or skipped).
fn colour(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Interval => "#1f6fd1",
        Trigger::Next => "#8e3fc4",
        Trigger::Visible => "#1a9a4b",
        Trigger::Scheduled => "#d9730d",
        Trigger::Network => "#0d8c8c",
        Trigger::QuotaReset => "#9c5b2e",
    }
}

const FETCH_OK: &str = "#3d7a3d";
const FETCH_FAILED: &str = "#c0392b";
const REJECTED: &str = "#b00020";

const COUNTED: &str = "<circle r=\"5.5\" fill=\"{c}\" stroke=\"#111\" stroke-width=\"0.8\"/>";
const NOT_COUNTED: &str =
    "<path d=\"M0,-6.5 L6.5,0 L0,6.5 L-6.5,0 Z\" fill=\"{c}\" stroke=\"#111\" stroke-width=\"0.8\"/>";
const DEFERRED: &str =
    "<path d=\"M-5.5,-4.5 L5.5,-4.5 L0,5 Z\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.6\"/>";
const SKIPPED: &str =
    "<path d=\"M-4.5,-4.5 L4.5,4.5 M-4.5,4.5 L4.5,-4.5\" stroke=\"{c}\" stroke-width=\"2\"/>";
const FETCH_SUCCEEDED: &str = "<circle r=\"4.5\" fill=\"{c}\"/>";
const FETCH_FAILURE: &str =
    "<rect x=\"-4.5\" y=\"-4.5\" width=\"9\" height=\"9\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.8\"/>";
const REJECTION: &str = "<rect x=\"-4.5\" y=\"-4.5\" width=\"9\" height=\"9\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.4\"/><path d=\"M0,-3 L0,3\" stroke=\"{c}\" stroke-width=\"1.6\"/>";

fn shape(template: &str, colour: &str) -> String {
    template.replace("{c}", colour)
}

/// A small stand-alone SVG of one mark, for the legend.
fn swatch(template: &str, colour: &str) -> String {
    format!(
        "<svg width=\"16\" height=\"16\" viewBox=\"-8 -8 16 16\" aria-hidden=\"true\">{}</svg>",
        shape(template, colour)
    )
}

fn legend() -> String {
    let grey = "#555";
    let mut out = String::from("<div class=\"legend\">\n");
    for (template, colour, text) in [
        (COUNTED, grey, "refresh, counted (daily quota)"),
        (NOT_COUNTED, grey, "refresh, not counted"),
        (DEFERRED, grey, "deferred while hidden"),
        (SKIPPED, grey, "skipped (hover: rule)"),
        (FETCH_SUCCEEDED, FETCH_OK, "fetch succeeded"),
        (FETCH_FAILURE, FETCH_FAILED, "fetch failed"),
        (REJECTION, REJECTED, "input rejected"),
    ] {
        let _ = writeln!(
            out,
            "<span>{}{}</span>",
            swatch(template, colour),
            escape(text)
        );
    }
    for trigger in [
        Trigger::Interval,
        Trigger::Next,
        Trigger::Visible,
        Trigger::Scheduled,
        Trigger::Network,
        Trigger::QuotaReset,
    ] {
        let _ = writeln!(
            out,
            "<span><svg width=\"14\" height=\"14\" viewBox=\"0 0 14 14\" aria-hidden=\"true\"><rect width=\"14\" height=\"14\" rx=\"3\" fill=\"{}\"/></svg>{}</span>",
            colour(trigger),
            trigger.as_str()
        );
    }
    out.push_str("</div>\n");
    out
}

/// Local time to the second, with the offset, for titles.
fn local(at: Instant, zone: &TimeZone) -> String {
    at.to_timestamp()
        .map(|ts| {
            ts.to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        })
        .unwrap_or_else(|| format!("@{}ms", at.as_millis()))
}

/// The zone's UTC offset over `from`..`to`: one, or the first and last when they differ.
fn offsets(from: Instant, to: Instant, zone: &TimeZone) -> String {
    let offset = |at: Instant| {
        at.to_timestamp()
            .map(|ts| ts.to_zoned(zone.clone()).strftime("UTC%:z").to_string())
            .unwrap_or_default()
    };
    let (first, last) = (offset(from), offset(to));
    if first == last {
        first
    } else {
        format!("{first} to {last}")
    }
}

/// The axis's ticks: local times on a step of whole hours (local midnight always one),
/// each with its label and whether it starts a day.
fn ticks(from: Instant, to: Instant, zone: &TimeZone) -> Vec<(Instant, String, bool)> {
    let span_hours = to.millis_since(from) as f64 / 3_600_000.0;
    let step: i8 = match span_hours {
        h if h <= 6.0 => 1,
        h if h <= 24.0 => 2,
        h if h <= 72.0 => 6,
        h if h <= 240.0 => 12,
        _ => 24,
    };
    let (Some(first), Some(last)) = (local_date(from, zone), local_date(to, zone)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut day: Date = first;
    while day <= last {
        for hour in (0i8..24).step_by(step as usize) {
            let Ok(zoned) = day.at(hour, 0, 0, 0).to_zoned(zone.clone()) else {
                continue;
            };
            let at = Instant::from_millis(zoned.timestamp().as_millisecond());
            if at < from || at > to || out.iter().any(|(t, _, _)| *t == at) {
                continue;
            }
            let midnight = hour == 0;
            let label = if midnight {
                zoned.strftime("%a %m-%d").to_string()
            } else {
                zoned.strftime("%H:%M").to_string()
            };
            out.push((at, label, midnight));
        }
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    out
}

/// The SVG: the axis, then `lanes`, each with its marks between `from` and `to`.
fn svg(
    records: &[Record],
    scenario: &Scenario,
    lanes: &[Lane],
    from: Instant,
    to: Instant,
) -> String {
    let zone = &scenario.zone;
    let span = to.millis_since(from).max(60_000) as f64;
    let x = |at: Instant| {
        let fraction = (at.millis_since(from) as f64 / span).clamp(0.0, 1.0);
        LABEL_WIDTH + fraction * PLOT_WIDTH
    };
    let width = LABEL_WIDTH + PLOT_WIDTH + RIGHT_MARGIN;
    let height = AXIS_HEIGHT + LANE_HEIGHT * lanes.len().max(1) as f64 + 8.0;
    let bottom = height - 8.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline, times in {}\">",
        escape(&scenario.zone_name)
    );

    // The axis: local times in the scenario's zone.
    out.push_str("<g class=\"axis\">\n");
    let _ = writeln!(
        out,
        "<text x=\"4\" y=\"16\">local time, {} ({})</text>",
        escape(&scenario.zone_name),
        escape(&offsets(from, to, zone))
    );
    for (at, label, midnight) in ticks(from, to, zone) {
        let tx = x(at);
        let (stroke, text_weight) = if midnight {
            ("#888", " font-weight=\"600\"")
        } else {
            ("#ddd", "")
        };
        let _ = writeln!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{}\" x2=\"{tx:.1}\" y2=\"{bottom:.1}\" stroke=\"{stroke}\" stroke-width=\"1\"/><text x=\"{tx:.1}\" y=\"{}\" text-anchor=\"middle\"{text_weight}>{}</text>",
            AXIS_HEIGHT - 10.0,
            AXIS_HEIGHT - 14.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LABEL_WIDTH}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-width=\"1\"/>",
        AXIS_HEIGHT - 10.0,
        LABEL_WIDTH + PLOT_WIDTH,
        AXIS_HEIGHT - 10.0
    );
    out.push_str("</g>\n");

    // Marks by lane, in record order.
    let mut by_lane: Vec<Vec<&Record>> = vec![Vec::new(); lanes.len()];
    for record in records.iter().filter(|r| r.at >= from && r.at <= to) {
        if let Some(lane) = lane_of(record, lanes) {
            by_lane[lane].push(record);
        }
    }
    for (index, (lane, marks)) in lanes.iter().zip(&by_lane).enumerate() {
        let top = AXIS_HEIGHT + LANE_HEIGHT * index as f64;
        let middle = top + LANE_HEIGHT / 2.0;
        let _ = writeln!(out, "<g class=\"lane\" {}>", lane.data());
        let band = if index % 2 == 0 { "#fafafa" } else { "#f0f3f7" };
        let _ = writeln!(
            out,
            "<rect x=\"0\" y=\"{top:.1}\" width=\"{width}\" height=\"{LANE_HEIGHT}\" fill=\"{band}\" fill-opacity=\"0.7\"/><text class=\"lane-label\" x=\"6\" y=\"{:.1}\">{}</text><line x1=\"{LABEL_WIDTH}\" y1=\"{middle:.1}\" x2=\"{:.1}\" y2=\"{middle:.1}\" stroke=\"#ccc\" stroke-width=\"1\"/>",
            middle + 4.0,
            escape(&lane.label()),
            LABEL_WIDTH + PLOT_WIDTH
        );
        for record in marks {
            out.push_str(&mark(record, x(record.at), middle, zone));
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// One record's mark, centred at (`x`, the lane's `middle`).
fn mark(record: &Record, x: f64, middle: f64, zone: &TimeZone) -> String {
    let (subject, what, detail) = describe(record);
    let title = format!("{}  {subject}  {what}  {detail}", local(record.at, zone));
    let (data, y, drawn) = match &record.what {
        RecordKind::Form { decision, .. } => match *decision {
            FormDecision::Refresh {
                trigger, counted, ..
            } => (
                format!(
                    "data-kind=\"refresh\" data-trigger=\"{}\" data-counted=\"{counted}\" data-rule=\"{}\"",
                    trigger.as_str(),
                    decision.rule()
                ),
                middle,
                shape(
                    if counted { COUNTED } else { NOT_COUNTED },
                    colour(trigger),
                ),
            ),
            FormDecision::Deferred { kind, .. } => (
                format!(
                    "data-kind=\"deferred\" data-trigger=\"{}\" data-rule=\"{}\"",
                    kind.as_str(),
                    decision.rule()
                ),
                middle - ROW_OFFSET,
                shape(DEFERRED, colour(kind)),
            ),
            FormDecision::Skipped { kind, reason, .. } => (
                format!(
                    "data-kind=\"skipped\" data-trigger=\"{}\" data-reason=\"{}\" data-rule=\"{}\"",
                    kind.as_str(),
                    reason.as_str(),
                    decision.rule()
                ),
                middle + ROW_OFFSET,
                shape(SKIPPED, colour(kind)),
            ),
        },
        RecordKind::Fetch { outcome, gray, .. } => {
            let (template, colour) = if outcome.is_success() {
                (FETCH_SUCCEEDED, FETCH_OK)
            } else {
                (FETCH_FAILURE, FETCH_FAILED)
            };
            (
                format!(
                    "data-kind=\"fetch\" data-outcome=\"{}\" data-gray=\"{gray}\"",
                    outcome.as_str()
                ),
                middle,
                shape(template, colour),
            )
        }
        RecordKind::Rejected { error, .. } => (
            format!("data-kind=\"rejected\" data-error=\"{}\"", error.code()),
            middle + ROW_OFFSET,
            shape(REJECTION, REJECTED),
        ),
    };
    format!(
        "<g class=\"mark\" {data} transform=\"translate({x:.1},{y:.1})\"><title>{}</title>{drawn}</g>\n",
        escape(&title)
    )
}

/// Counted refreshes per local day and form, as in the text timeline's summaries.
fn daily_counts(records: &[Record], scenario: &Scenario) -> String {
    let mut counts: BTreeMap<String, BTreeMap<&str, u32>> = BTreeMap::new();
    for record in records {
        if let RecordKind::Form {
            form,
            decision: FormDecision::Refresh { counted: true, .. },
        } = &record.what
        {
            let day = local_date(record.at, &scenario.zone)
                .map(|d| d.to_string())
                .unwrap_or_default();
            *counts.entry(day).or_default().entry(form).or_default() += 1;
        }
    }
    let forms: Vec<&str> = scenario.forms.iter().map(|f| f.id.as_str()).collect();
    let mut out = String::from(
        "<table class=\"daily\">\n<caption>Counted refreshes per local day (daily quota 50)</caption>\n<tr><th>day</th>",
    );
    for form in &forms {
        let _ = write!(out, "<th>form {}</th>", escape(form));
    }
    out.push_str("</tr>\n");
    if counts.is_empty() {
        let _ = writeln!(
            out,
            "<tr><td colspan=\"{}\">none</td></tr>",
            forms.len() + 1
        );
    }
    for (day, by_form) in &counts {
        let _ = write!(out, "<tr><td>{}</td>", escape(day));
        for form in &forms {
            let _ = write!(out, "<td>{}</td>", by_form.get(form).copied().unwrap_or(0));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}
