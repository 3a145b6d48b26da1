//! Scenario files (section S of the rules): parsing and validation.
//!
//! A scenario is rejected whole, with the JSON path of the first problem, before anything
//! is simulated: a half-run scenario would print output that looks trustworthy.

use crate::reader::{as_bool, as_string, as_string_list, invalid, ObjectReader, Result};
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use refreshd_rules::device::DeviceSettings;
use refreshd_rules::json::{self, member_path, Json};
use refreshd_rules::periodic::{App, Gray, PeriodicSetting, Source, SubjectType};
use refreshd_rules::time::{resolve_local, Instant};
use refreshd_rules::ProviderTraits;
use std::collections::HashMap;

pub use crate::reader::ScenarioError;

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub zone_name: String,
    pub zone: TimeZone,
    pub start: Instant,
    pub end: Instant,
    pub device_settings: DeviceSettings,
    pub fetch_jitter_minutes: u32,
    /// In file order; the key is the form id.
    pub forms: Vec<FormEntry>,
    /// Form id → position in `forms`: events name forms by id, and a scan per event
    /// would make a run quadratic in the number of forms.
    form_positions: HashMap<String, usize>,
    /// In file order.
    pub apps: Vec<(String, App)>,
    pub events: Vec<Event>,
}

#[derive(Clone, Debug)]
pub struct FormEntry {
    pub id: String,
    pub provider: String,
    pub traits: ProviderTraits,
    /// The `config` object as written; validated when the form is added (F5).
    pub config: Json,
    pub config_path: String,
    pub hidden: bool,
}

#[derive(Clone, Debug)]
pub struct Event {
    /// Position in `events`, as reported in error lines.
    pub index: usize,
    pub at: Instant,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    AddForm {
        form: String,
        hidden: Option<bool>,
    },
    RemoveForm(String),
    Hide(String),
    Show(String),
    Offline,
    Online,
    SetNextRefresh {
        form: String,
        minutes: i64,
        caller: Option<String>,
    },
    Launch {
        app: String,
        user: String,
    },
    SetToken {
        app: String,
        user: String,
        token: String,
    },
    SetGray {
        app: String,
        percent: i64,
        url: Option<String>,
        testers: Option<Vec<String>>,
    },
    FetchNow {
        app: String,
        user: String,
    },
    Origin {
        url: String,
        behaviour: Origin,
    },
}

/// How a simulated URL answers (section S).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub status: OriginStatus,
    pub body_bytes: u64,
    pub utf8: bool,
    pub retry_after_s: Option<u64>,
    pub etag: Option<String>,
}

impl Origin {
    /// The `Retry-After` it answers with, in milliseconds (P9).
    pub fn retry_after_ms(&self) -> Option<i64> {
        self.retry_after_s
            .map(|s| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000))
    }
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            status: OriginStatus::Http(200),
            body_bytes: 100,
            utf8: true,
            retry_after_s: None,
            etag: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginStatus {
    Http(u16),
    Timeout,
    Connect,
    BlockedAddress,
}

const ACTIONS: [&str; 12] = [
    "add_form",
    "remove_form",
    "hide",
    "show",
    "offline",
    "online",
    "set_next_refresh",
    "launch",
    "set_token",
    "set_gray",
    "fetch_now",
    "origin",
];

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario> {
        let root = json::parse(text).map_err(|e| match e {
            json::JsonError::DuplicateKey { path, key } => {
                invalid(&path, format!("duplicate key \"{key}\""))
            }
            json::JsonError::Syntax(message) => invalid("$", message),
        })?;
        let mut top = ObjectReader::new(&root, "$")?;
        let (zone_name, zone) = match top.opt_string("zone")? {
            None => ("UTC".to_string(), TimeZone::UTC),
            Some((name, path)) => {
                let zone = TimeZone::get(&name)
                    .map_err(|_| invalid(&path, format!("unknown IANA time zone \"{name}\"")))?;
                (name, zone)
            }
        };
        let (start_text, start_path) = top.string("start")?;
        let start = parse_instant(&start_text, &start_path, &zone)?;
        let (end_text, end_path) = top.string("end")?;
        let end = parse_instant(&end_text, &end_path, &zone)?;
        if end < start {
            return Err(invalid(&end_path, "\"end\" is before \"start\""));
        }

        let (device_settings, fetch_jitter_minutes) = match top.optional("settings") {
            None => (DeviceSettings::default(), 0),
            Some((value, path)) => parse_settings(value, &path)?,
        };

        let forms = match top.optional("forms") {
            None => Vec::new(),
            Some((value, path)) => parse_forms(value, &path)?,
        };
        // Ids are unique: the JSON reader rejects duplicate keys.
        let form_positions: HashMap<String, usize> = forms
            .iter()
            .enumerate()
            .map(|(position, form)| (form.id.clone(), position))
            .collect();
        let apps = match top.optional("apps") {
            None => Vec::new(),
            Some((value, path)) => parse_apps(value, &path)?,
        };
        let events = match top.optional("events") {
            None => Vec::new(),
            Some((value, path)) => parse_events(value, &path, &zone, start, &form_positions)?,
        };
        top.finish()?;
        Ok(Scenario {
            zone_name,
            zone,
            start,
            end,
            device_settings,
            fetch_jitter_minutes,
            forms,
            form_positions,
            apps,
            events,
        })
    }

    pub fn form(&self, id: &str) -> Option<&FormEntry> {
        self.form_position(id).map(|position| &self.forms[position])
    }

    /// Where the form `id` is in `forms`, if it is declared.
    pub fn form_position(&self, id: &str) -> Option<usize> {
        self.form_positions.get(id).copied()
    }
}

/// `YYYY-MM-DDTHH:MM:SS` with an optional `Z` or `±HH:MM`; without an offset the time is
/// local to `zone` and T2 resolves it.
pub fn parse_instant(text: &str, path: &str, zone: &TimeZone) -> Result<Instant> {
    let bad = || {
        invalid(
            path,
            format!("\"{text}\" is not a date-time of the form YYYY-MM-DDTHH:MM:SS with an optional Z or ±HH:MM"),
        )
    };
    let bytes = text.as_bytes();
    if bytes.len() < 19 || !text.is_ascii() {
        return Err(bad());
    }
    let shape_ok = bytes[..19].iter().enumerate().all(|(i, b)| match i {
        4 | 7 => *b == b'-',
        10 => *b == b'T',
        13 | 16 => *b == b':',
        _ => b.is_ascii_digit(),
    });
    if !shape_ok {
        return Err(bad());
    }
    let datetime: DateTime = text[..19].parse().map_err(|_| bad())?;
    let offset = match &text[19..] {
        "" => None,
        "Z" => Some(Offset::UTC),
        suffix => Some(parse_offset(suffix).ok_or_else(bad)?),
    };
    let instant = match offset {
        None => resolve_local(datetime, zone),
        Some(offset) => offset
            .to_timestamp(datetime)
            .ok()
            .map(Instant::from_timestamp),
    };
    instant.ok_or_else(bad)
}

fn parse_offset(suffix: &str) -> Option<Offset> {
    let b = suffix.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |s: &[u8]| -> Option<i32> {
        s.iter().try_fold(0i32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + (d - b'0') as i32)
        })
    };
    let hours = digits(&b[1..3])?;
    let minutes = digits(&b[4..6])?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()
}

fn parse_settings(value: &Json, path: &str) -> Result<(DeviceSettings, u32)> {
    let mut settings = ObjectReader::new(value, path)?;
    let (tick, tick_path) = settings
        .opt_integer("tick_minutes")?
        .unwrap_or((30, String::new()));
    let (max_forms, max_path) = settings
        .opt_integer("max_forms")?
        .unwrap_or((512, String::new()));
    let jitter = match settings.opt_integer("fetch_jitter_minutes")? {
        None => 0,
        Some((n, p)) => u32::try_from(n)
            .ok()
            .filter(|n| *n <= 7 * 24 * 60)
            .ok_or_else(|| invalid(&p, "fetch_jitter_minutes must be 0 to 10080 (P8)"))?,
    };
    settings.finish()?;
    let device = DeviceSettings::new(tick, max_forms).map_err(|e| {
        let at = match e {
            refreshd_rules::device::SettingsError::TickMinutes(_) => tick_path,
            refreshd_rules::device::SettingsError::MaxForms(_) => max_path,
        };
        invalid(&at, e.to_string())
    })?;
    Ok((device, jitter))
}

fn parse_forms(value: &Json, path: &str) -> Result<Vec<FormEntry>> {
    let Json::Object(members) = value else {
        return Err(invalid(
            path,
            format!("expected an object, found {}", value.kind()),
        ));
    };
    let mut forms = Vec::with_capacity(members.len());
    for (id, entry) in members {
        let entry_path = member_path(path, id);
        let mut form = ObjectReader::new(entry, &entry_path)?;
        let (provider, provider_path) = form.string("provider")?;
        if provider.is_empty() {
            return Err(invalid(&provider_path, "\"provider\" must not be empty"));
        }
        let system_app = form.opt_bool("system_app")?.unwrap_or(false);
        let api_version = form
            .opt_integer("api_version")?
            .map(|(n, p)| {
                u32::try_from(n).map_err(|_| invalid(&p, "api_version must be 0 or more"))
            })
            .transpose()?;
        let market_update_duration = form.opt_integer("market_update_duration")?.map(|(n, _)| n);
        let hidden = form.opt_bool("hidden")?.unwrap_or(false);
        let (config, config_path) = form.required("config")?;
        form.finish()?;
        forms.push(FormEntry {
            id: id.clone(),
            provider,
            traits: ProviderTraits {
                system_app,
                api_version,
                market_update_duration,
            },
            config: config.clone(),
            config_path,
            hidden,
        });
    }
    Ok(forms)
}

fn parse_apps(value: &Json, path: &str) -> Result<Vec<(String, App)>> {
    let Json::Object(members) = value else {
        return Err(invalid(
            path,
            format!("expected an object, found {}", value.kind()),
        ));
    };
    let mut apps = Vec::with_capacity(members.len());
    for (appid, entry) in members {
        let app_path = member_path(path, appid);
        if appid.is_empty() {
            return Err(invalid(&app_path, "an app id must not be empty"));
        }
        let mut app = ObjectReader::new(entry, &app_path)?;
        let (subject_text, subject_path) = app.string("subject")?;
        let subject = match subject_text.as_str() {
            "individual" => SubjectType::Individual,
            "organization" => SubjectType::Organization,
            other => {
                return Err(invalid(
                    &subject_path,
                    format!("subject must be \"individual\" or \"organization\", not \"{other}\""),
                ))
            }
        };
        let periodic = app
            .optional("periodic")
            .map(|(v, p)| parse_periodic(v, &p))
            .transpose()?;
        app.finish()?;
        let periodic_path = member_path(&app_path, "periodic");
        let app = App::new(appid.clone(), subject, periodic)
            .map_err(|e| invalid(&periodic_path, format!("{} ({e})", e.code())))?;
        apps.push((appid.clone(), app));
    }
    Ok(apps)
}

fn parse_periodic(value: &Json, path: &str) -> Result<PeriodicSetting> {
    let mut periodic = ObjectReader::new(value, path)?;
    let enabled = periodic.opt_bool("enabled")?.unwrap_or(false);
    let url = periodic.opt_string("url")?;
    let cloud = periodic.optional("cloud");
    let source = match (url, cloud) {
        (Some((url, url_path)), None) => Source::Url(check_https_url(&url, &url_path)?),
        (None, Some((cloud, cloud_path))) => {
            let mut cloud = ObjectReader::new(cloud, &cloud_path)?;
            let (env, env_path) = cloud.string("env")?;
            let (function, function_path) = cloud.string("function")?;
            cloud.finish()?;
            check_cloud_name(&env, &env_path)?;
            check_cloud_name(&function, &function_path)?;
            Source::Cloud { env, function }
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                path,
                "give exactly one of \"url\" and \"cloud\", not both",
            ))
        }
        (None, None) => return Err(invalid(path, "give exactly one of \"url\" and \"cloud\"")),
    };
    let gray_url = periodic.opt_string("gray_url")?;
    let gray_percent = periodic.opt_integer("gray_percent")?;
    let testers = periodic
        .optional("testers")
        .map(|(v, p)| as_string_list(v, &p))
        .transpose()?;
    let any_gray = gray_url.is_some() || gray_percent.is_some() || testers.is_some();
    let gray = if any_gray {
        if !matches!(source, Source::Url(_)) {
            return Err(invalid(
                path,
                "gray fields need a \"url\" source (source_not_allowed, P3a)",
            ));
        }
        let (url, url_path) = gray_url
            .ok_or_else(|| invalid(path, "\"gray_url\" is required with other gray fields"))?;
        let percent = match gray_percent {
            None => 0,
            Some((n, p)) => check_percent(n, &p)?,
        };
        Some(Gray {
            url: check_https_url(&url, &url_path)?,
            percent,
            testers: testers.unwrap_or_default(),
        })
    } else {
        None
    };
    periodic.finish()?;
    Ok(PeriodicSetting {
        enabled,
        source,
        gray,
    })
}

fn check_percent(n: i64, path: &str) -> Result<u8> {
    u8::try_from(n)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| invalid(path, format!("percent must be 0 to 100, got {n}")))
}

/// P2: scenario URLs are written normalised: `https://`, a host, a non-empty path.
fn check_https_url(url: &str, path: &str) -> Result<String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| invalid(path, format!("\"{url}\" must be an https:// URL (P2)")))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    if host.is_empty() || host.contains('@') || host.chars().any(char::is_whitespace) {
        return Err(invalid(path, format!("\"{url}\" has no valid host")));
    }
    Ok(url.to_string())
}

/// P2's pattern for cloud names, from the rules; the path names the field.
fn check_cloud_name(name: &str, path: &str) -> Result<()> {
    let field = if path.ends_with(".env") {
        "env"
    } else {
        "function"
    };
    refreshd_rules::periodic::check_cloud_name(field, name)
        .map_err(|e| invalid(path, format!("\"{name}\": {e}")))
}

fn parse_events(
    value: &Json,
    path: &str,
    zone: &TimeZone,
    start: Instant,
    forms: &HashMap<String, usize>,
) -> Result<Vec<Event>> {
    let Json::Array(items) = value else {
        return Err(invalid(
            path,
            format!("expected an array, found {}", value.kind()),
        ));
    };
    let mut events = Vec::with_capacity(items.len());
    let mut previous = start;
    for (index, item) in items.iter().enumerate() {
        let event_path = format!("{path}[{index}]");
        let mut event = ObjectReader::new(item, &event_path)?;
        let (at_text, at_path) = event.string("at")?;
        let at = parse_instant(&at_text, &at_path, zone)?;
        if at < start {
            return Err(invalid(&at_path, "event is before \"start\""));
        }
        if at < previous {
            return Err(invalid(
                &at_path,
                "events must be in non-decreasing time order",
            ));
        }
        previous = at;
        let present: Vec<&str> = ACTIONS.iter().copied().filter(|a| event.has(a)).collect();
        let action = match present.as_slice() {
            [one] => parse_action(&mut event, one, forms)?,
            [] => {
                return Err(invalid(
                    &event_path,
                    format!("an event needs one of: {}", ACTIONS.join(", ")),
                ))
            }
            many => {
                return Err(invalid(
                    &event_path,
                    format!("an event has exactly one action, found {}", many.join(", ")),
                ))
            }
        };
        event.finish()?;
        events.push(Event { index, at, action });
    }
    Ok(events)
}

fn parse_action(
    event: &mut ObjectReader,
    name: &str,
    forms: &HashMap<String, usize>,
) -> Result<Action> {
    let (value, path) = event.required(name)?;
    Ok(match name {
        "add_form" => {
            let form = as_string(value, &path)?;
            if !forms.contains_key(&form) {
                return Err(invalid(
                    &path,
                    format!("form \"{form}\" is not in \"forms\""),
                ));
            }
            let hidden = event.opt_bool("hidden")?;
            Action::AddForm { form, hidden }
        }
        "remove_form" => Action::RemoveForm(as_string(value, &path)?),
        "hide" => Action::Hide(as_string(value, &path)?),
        "show" => Action::Show(as_string(value, &path)?),
        "offline" | "online" => {
            if !as_bool(value, &path)? {
                return Err(invalid(&path, format!("\"{name}\" must be true")));
            }
            if name == "offline" {
                Action::Offline
            } else {
                Action::Online
            }
        }
        "set_next_refresh" => {
            let mut body = ObjectReader::new(value, &path)?;
            let (form, _) = body.string("form")?;
            let (minutes, _) = body.integer("minutes")?;
            let caller = body.opt_string("caller")?.map(|(c, _)| c);
            body.finish()?;
            Action::SetNextRefresh {
                form,
                minutes,
                caller,
            }
        }
        "launch" | "fetch_now" => {
            let mut body = ObjectReader::new(value, &path)?;
            let (app, _) = body.string("app")?;
            let (user, _) = body.string("user")?;
            body.finish()?;
            if name == "launch" {
                Action::Launch { app, user }
            } else {
                Action::FetchNow { app, user }
            }
        }
        "set_token" => {
            let mut body = ObjectReader::new(value, &path)?;
            let (app, _) = body.string("app")?;
            let (user, _) = body.string("user")?;
            let (token, _) = body.string("token")?;
            body.finish()?;
            Action::SetToken { app, user, token }
        }
        "set_gray" => {
            let mut body = ObjectReader::new(value, &path)?;
            let (app, _) = body.string("app")?;
            let (percent, percent_path) = body.integer("percent")?;
            check_percent(percent, &percent_path)?;
            let url = body
                .opt_string("url")?
                .map(|(u, p)| check_https_url(&u, &p))
                .transpose()?;
            let testers = body
                .optional("testers")
                .map(|(v, p)| as_string_list(v, &p))
                .transpose()?;
            body.finish()?;
            Action::SetGray {
                app,
                percent,
                url,
                testers,
            }
        }
        "origin" => parse_origin(value, &path)?,
        _ => unreachable!("ACTIONS lists every action"),
    })
}

fn parse_origin(value: &Json, path: &str) -> Result<Action> {
    let mut body = ObjectReader::new(value, path)?;
    let (url, url_path) = body.string("url")?;
    if !(url.starts_with("https://") || url.starts_with("cloud://")) {
        return Err(invalid(
            &url_path,
            "an origin URL is a configured https:// URL or cloud://ENV/FUNCTION",
        ));
    }
    let mut origin = Origin::default();
    if let Some((status, status_path)) = body.optional("status") {
        origin.status = match status {
            Json::String(s) if s == "timeout" => OriginStatus::Timeout,
            Json::String(s) if s == "connect" => OriginStatus::Connect,
            Json::String(s) if s == "blocked_address" => OriginStatus::BlockedAddress,
            Json::Integer(n) if (100..=599).contains(n) => OriginStatus::Http(*n as u16),
            other => {
                return Err(invalid(
                    &status_path,
                    format!(
                        "status is an HTTP status 100-599 or \"timeout\", \"connect\", \"blocked_address\"; found {}",
                        match other { Json::String(s) => format!("\"{s}\""), o => o.kind().to_string() }
                    ),
                ))
            }
        };
    }
    if let Some((n, p)) = body.opt_integer("body_bytes")? {
        origin.body_bytes = u64::try_from(n)
            .ok()
            .filter(|n| *n <= 64 * 1024 * 1024)
            .ok_or_else(|| invalid(&p, "body_bytes must be 0 to 67108864"))?;
    }
    if let Some(utf8) = body.opt_bool("utf8")? {
        origin.utf8 = utf8;
    }
    if let Some((n, p)) = body.opt_integer("retry_after_s")? {
        origin.retry_after_s =
            Some(u64::try_from(n).map_err(|_| invalid(&p, "retry_after_s must be 0 or more"))?);
    }
    if let Some((etag, _)) = body.opt_string("etag")? {
        origin.etag = Some(etag);
    }
    body.finish()?;
    Ok(Action::Origin {
        url,
        behaviour: origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> ScenarioError {
        Scenario::parse(text).unwrap_err()
    }

    const MINIMAL: &str = r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00"}"#;

    #[test]
    fn s_minimal_scenario_uses_defaults() {
        let s = Scenario::parse(MINIMAL).unwrap();
        assert_eq!(s.zone_name, "UTC");
        assert_eq!(s.device_settings, DeviceSettings::default());
        assert!(s.forms.is_empty() && s.apps.is_empty() && s.events.is_empty());
    }

    #[test]
    fn s_unknown_keys_are_rejected_with_their_path() {
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "zon": "UTC"}"#,
        );
        assert_eq!(e.path, "$.zon");
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "settings": {"tick": 5}}"#,
        );
        assert_eq!(e.path, "$.settings.tick");
    }

    #[test]
    fn s_duplicate_keys_are_rejected() {
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00"}"#,
        );
        assert_eq!(e.path, "$");
        assert!(e.message.contains("duplicate"));
    }

    #[test]
    fn s_date_times_are_strict() {
        for bad in [
            "2026-03-01 00:00:00",
            "2026-03-01T00:00",
            "2026-03-01T00:00:00.5",
            "2026-03-01T00:00:00+0100",
            "2026-02-30T00:00:00",
            "2026-03-01T24:00:00",
        ] {
            let text = format!(r#"{{"start": "{bad}", "end": "2026-03-02T00:00:00"}}"#);
            assert_eq!(error_of(&text).path, "$.start", "{bad}");
        }
        let zone = TimeZone::get("Asia/Shanghai").unwrap();
        let local = parse_instant("2026-03-01T08:00:00", "$", &zone).unwrap();
        let utc = parse_instant("2026-03-01T00:00:00Z", "$", &zone).unwrap();
        let offset = parse_instant("2026-03-01T01:00:00+01:00", "$", &zone).unwrap();
        assert_eq!(local, utc);
        assert_eq!(utc, offset);
    }

    #[test]
    fn s_settings_out_of_range() {
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "settings": {"tick_minutes": 31}}"#,
        );
        assert_eq!(e.path, "$.settings.tick_minutes");
    }

    #[test]
    fn s_events_in_order_and_not_before_start() {
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "events": [{"at": "2026-02-28T00:00:00", "offline": true}]}"#,
        );
        assert_eq!(e.path, "$.events[0].at");
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "events": [{"at": "2026-03-01T02:00:00", "offline": true}, {"at": "2026-03-01T01:00:00", "online": true}]}"#,
        );
        assert_eq!(e.path, "$.events[1].at");
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "events": [{"at": "2026-03-01T02:00:00", "offline": false}]}"#,
        );
        assert_eq!(e.path, "$.events[0].offline");
    }

    #[test]
    fn s_add_form_must_name_a_declared_form() {
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "events": [{"at": "2026-03-01T00:00:00", "add_form": "X"}]}"#,
        );
        assert_eq!(e.path, "$.events[0].add_form");
    }

    #[test]
    fn s_minutes_must_be_an_integer() {
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "events": [{"at": "2026-03-01T00:00:00", "set_next_refresh": {"form": "A", "minutes": 5.0}}]}"#,
        );
        assert_eq!(e.path, "$.events[0].set_next_refresh.minutes");
    }

    #[test]
    fn s_p2_individual_url_source_is_invalid_naming_the_rule() {
        let e = error_of(
            r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "apps": {"a": {"subject": "individual", "periodic": {"url": "https://x.example/f"}}}}"#,
        );
        assert_eq!(e.path, "$.apps.a.periodic");
        assert!(e.message.contains("source_not_allowed"));
    }

    #[test]
    fn s_periodic_source_rules() {
        let base = r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "apps": {"a": {"subject": "organization", "periodic": PERIODIC}}}"#;
        for (periodic, path) in [
            (r#"{"url": "http://x.example/f"}"#, "$.apps.a.periodic.url"),
            (r#"{}"#, "$.apps.a.periodic"),
            (
                r#"{"url": "https://x.example/f", "cloud": {"env": "e", "function": "f"}}"#,
                "$.apps.a.periodic",
            ),
            (
                r#"{"cloud": {"env": "e!", "function": "f"}}"#,
                "$.apps.a.periodic.cloud.env",
            ),
            (
                r#"{"cloud": {"env": "e", "function": "f"}, "gray_url": "https://g.example/f"}"#,
                "$.apps.a.periodic",
            ),
            (
                r#"{"url": "https://x.example/f", "gray_percent": 5}"#,
                "$.apps.a.periodic",
            ),
            (
                r#"{"url": "https://x.example/f", "gray_url": "https://g.example/f", "gray_percent": 101}"#,
                "$.apps.a.periodic.gray_percent",
            ),
        ] {
            let e = error_of(&base.replace("PERIODIC", periodic));
            assert_eq!(e.path, path, "{periodic}");
        }
    }

    #[test]
    fn s_origin_status_values() {
        let base = r#"{"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00", "events": [{"at": "2026-03-01T00:00:00", "origin": {"url": "https://x.example/f", "status": STATUS}}]}"#;
        assert!(Scenario::parse(&base.replace("STATUS", "\"timeout\"")).is_ok());
        assert!(Scenario::parse(&base.replace("STATUS", "503")).is_ok());
        for bad in ["\"slow\"", "99", "600", "true"] {
            assert_eq!(
                error_of(&base.replace("STATUS", bad)).path,
                "$.events[0].origin.status"
            );
        }
    }
}
