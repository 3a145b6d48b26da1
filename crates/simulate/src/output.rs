//! Rendering simulator records: JSON lines (section S) and a timeline for people.

use crate::run::{Record, RecordKind};
use crate::scenario::Scenario;
use jiff::tz::TimeZone;
use refreshd_rules::time::local_date;
use refreshd_rules::{FormDecision, Instant};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;

/// RFC 3339 in `zone`'s offset, to the second.
pub fn format_instant(at: Instant, zone: &TimeZone) -> String {
    match at.to_timestamp() {
        Some(ts) => ts
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        None => format!("@{}ms", at.as_millis()),
    }
}

/// One record as the JSON object of section S.
pub fn record_json(record: &Record, zone: &TimeZone) -> Value {
    record_value(record, format_instant(record.at, zone))
}

/// One record as the JSON object of section S, its instant already written as `at`.
fn record_value(record: &Record, at: String) -> Value {
    let mut line = Map::new();
    line.insert("at".into(), Value::String(at));
    match &record.what {
        RecordKind::Form { form, decision } => {
            line.insert("form".into(), json!(form));
            match *decision {
                FormDecision::Refresh {
                    trigger,
                    counted,
                    deferred,
                    ..
                } => {
                    line.insert("refresh".into(), json!(trigger.as_str()));
                    line.insert("counted".into(), json!(counted));
                    if trigger == refreshd_rules::Trigger::Visible {
                        let kinds: Vec<&str> = deferred.iter().map(|t| t.as_str()).collect();
                        line.insert("deferred".into(), json!(kinds));
                    }
                }
                FormDecision::Deferred { kind, .. } => {
                    line.insert("deferred".into(), json!(kind.as_str()));
                }
                FormDecision::Skipped { kind, reason, .. } => {
                    line.insert("skipped".into(), json!(kind.as_str()));
                    line.insert("reason".into(), json!(reason.as_str()));
                }
            }
        }
        RecordKind::Fetch {
            app,
            user,
            url,
            gray,
            outcome,
        } => {
            line.insert("app".into(), json!(app));
            line.insert("user".into(), json!(user));
            line.insert("fetch".into(), json!(url));
            line.insert("gray".into(), json!(gray));
            line.insert("outcome".into(), json!(outcome.as_str()));
        }
        RecordKind::Rejected { event, error, .. } => {
            line.insert("event".into(), json!(event));
            line.insert("error".into(), json!(error.code()));
        }
    }
    Value::Object(line)
}

/// All records as JSON lines, each ending in a newline.
pub fn json_lines(records: &[Record], zone: &TimeZone) -> String {
    let mut out = Vec::new();
    write_json_lines(records, zone, &mut out).expect("writing to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Writes records as JSON lines, each ending in a newline, to `out` (give it a buffered
/// writer: this writes a line in several pieces). Records of one instant, which come
/// together, share one formatting of that instant.
pub fn write_json_lines(
    records: &[Record],
    zone: &TimeZone,
    out: &mut impl io::Write,
) -> io::Result<()> {
    let mut last: Option<(Instant, String)> = None;
    for record in records {
        let at = match &last {
            Some((at, text)) if *at == record.at => text.clone(),
            _ => {
                let text = format_instant(record.at, zone);
                last = Some((record.at, text.clone()));
                text
            }
        };
        serde_json::to_writer(&mut *out, &record_value(record, at))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The subject, what happened, and details, as the timeline's three text columns.
pub fn describe(record: &Record) -> (String, String, String) {
    match &record.what {
        RecordKind::Form { form, decision } => match *decision {
            FormDecision::Refresh {
                trigger,
                counted,
                deferred,
                ..
            } => {
                let mut detail = if counted { "counted" } else { "not counted" }.to_string();
                if !deferred.is_empty() {
                    let kinds: Vec<&str> = deferred.iter().map(|t| t.as_str()).collect();
                    let _ = write!(detail, "; was deferred: {}", kinds.join(", "));
                }
                let _ = write!(detail, " [{}]", decision.rule());
                (format!("form {form}"), format!("refresh {trigger}"), detail)
            }
            FormDecision::Deferred { kind, .. } => (
                format!("form {form}"),
                format!("defer {kind}"),
                format!("hidden [{}]", decision.rule()),
            ),
            FormDecision::Skipped { kind, reason, .. } => (
                format!("form {form}"),
                format!("skip {kind}"),
                format!("{} [{}]", reason.as_str(), decision.rule()),
            ),
        },
        RecordKind::Fetch {
            app,
            user,
            gray,
            outcome,
            ..
        } => (
            format!("app {app} / {user}"),
            format!("fetch {}", outcome.as_str()),
            if *gray { "gray URL" } else { "main URL" }.to_string(),
        ),
        RecordKind::Rejected {
            event,
            error,
            subject,
        } => (
            subject
                .clone()
                .map(|s| format!("input {s}"))
                .unwrap_or_default(),
            format!("reject {}", error.code()),
            format!("event #{event}: {error}"),
        ),
    }
}

/// A readable timeline: local times, one decision a line, aligned columns, and a
/// per-day summary of counted refreshes per form.
pub fn timeline(records: &[Record], scenario: &Scenario) -> String {
    let zone = &scenario.zone;
    let rows: Vec<(String, String, (String, String, String))> = records
        .iter()
        .map(|r| {
            let day = local_date(r.at, zone)
                .map(|d| d.to_string())
                .unwrap_or_default();
            let time =
                r.at.to_timestamp()
                    .map(|ts| {
                        ts.to_zoned(zone.clone())
                            .strftime("%H:%M:%S %:z")
                            .to_string()
                    })
                    .unwrap_or_default();
            (day, time, describe(r))
        })
        .collect();
    let width = |f: fn(&(String, String, String)) -> &String| {
        rows.iter()
            .map(|(_, _, d)| f(d).chars().count())
            .max()
            .unwrap_or(0)
    };
    let subject_width = width(|d| &d.0);
    let what_width = width(|d| &d.1);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "timeline in {} from {} to {}",
        scenario.zone_name,
        format_instant(scenario.start, zone),
        format_instant(scenario.end, zone)
    );
    let mut day_counts: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    let mut current_day: Option<&str> = None;
    for (record, (day, time, (subject, what, detail))) in records.iter().zip(&rows) {
        if current_day != Some(day.as_str()) {
            if let Some(previous) = current_day {
                write_day_summary(&mut out, previous, day_counts.get(previous));
            }
            let _ = writeln!(out, "\n{day}");
            current_day = Some(day);
        }
        let _ = writeln!(
            out,
            "  {time}  {subject:<subject_width$}  {what:<what_width$}  {detail}"
        );
        if let RecordKind::Form {
            form,
            decision: FormDecision::Refresh { counted: true, .. },
        } = &record.what
        {
            *day_counts
                .entry(day.clone())
                .or_default()
                .entry(form.clone())
                .or_default() += 1;
        }
    }
    match current_day {
        Some(day) => write_day_summary(&mut out, day, day_counts.get(day)),
        None => out.push_str("\n  (nothing happened)\n"),
    }
    out
}

fn write_day_summary(out: &mut String, day: &str, counts: Option<&BTreeMap<String, u32>>) {
    let summary = match counts {
        Some(counts) if !counts.is_empty() => counts
            .iter()
            .map(|(form, n)| format!("{form} {n}/50"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_string(),
    };
    let _ = writeln!(out, "  -- {day} counted refreshes: {summary}");
}
