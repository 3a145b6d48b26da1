//! `form_config.json`: reading, validation and lint (F1–F5, with the warnings of F3, F4,
//! F7, F8, F9 and F16).
//!
//! Every problem is collected, never just the first (F5): a developer fixing a config wants
//! the whole list at once. Each carries its JSON path, a stable code, the rule it comes
//! from and a one-line hint.

use crate::hhmm::{parse_time, parse_time_list, TimeListError};
use crate::json::{self, index_path, member_path, Json};
use crate::time::LocalTime;

/// The largest `updateDuration` honoured; larger values are clamped with a warning (F4).
pub const MAX_UPDATE_DURATION: i64 = 336;

/// The most form definitions one `form_config.json` may hold. Not in the source
/// documents: refreshd settles it so that one provider cannot make every widget add and
/// re-plan expensive (a config is read whole whenever its forms are planned). Real
/// configs hold a handful of forms.
pub const MAX_DEFINITIONS: usize = 256;

/// The largest `form_config.json` accepted, in bytes (below the API's 1 MiB body limit:
/// 256 definitions of about 1 KiB each).
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Fields refreshd reads (F1).
const READ_FIELDS: [&str; 7] = [
    "name",
    "updateEnabled",
    "updateDuration",
    "scheduledUpdateTime",
    "multiScheduledUpdateTime",
    "conditionUpdate",
    "dataProxyEnabled",
];

/// Documented fields that are accepted and kept without being read (F1).
const KEPT_FIELDS: [&str; 18] = [
    "description",
    "src",
    "uiSyntax",
    "window",
    "colorMode",
    "isDefault",
    "defaultDimension",
    "supportDimensions",
    "formConfigAbility",
    "metadata",
    "formVisibleNotify",
    "isDynamic",
    "transparencyEnabled",
    "fontScaleFollowSystem",
    "supportShapes",
    "previewImages",
    "renderingMode",
    "dataProxy",
];

/// Values of `conditionUpdate` that refreshd knows (F16).
const KNOWN_CONDITIONS: [&str; 1] = ["network"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub severity: Severity,
    /// JSON path of the offending value, such as `$.forms[0].updateDuration`.
    pub path: String,
    /// Stable machine-readable code, such as `invalid_time`.
    pub code: &'static str,
    /// The rule this comes from (F1 … F16).
    pub rule: &'static str,
    pub message: String,
    /// One line telling the developer how to fix it.
    pub hint: String,
}

/// A valid form definition: what the rules read from one entry of `forms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormDefinition {
    pub name: String,
    pub update_enabled: bool,
    /// After F4 clamping; never negative.
    pub update_duration: u16,
    pub scheduled_update_time: Option<LocalTime>,
    /// Distinct times in ascending order (F3); empty when not set.
    pub multi_scheduled_update_time: Vec<LocalTime>,
    /// `"network"` is listed in `conditionUpdate` (F16).
    pub network_condition: bool,
    pub data_proxy_enabled: bool,
}

/// The result of checking one form entry or a whole document: the definitions (only
/// when there is no error) and every issue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigReport<T> {
    pub value: Option<T>,
    pub issues: Vec<ConfigIssue>,
}

impl<T> ConfigReport<T> {
    pub fn errors(&self) -> impl Iterator<Item = &ConfigIssue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &ConfigIssue> {
        self.issues
            .iter()
            .filter(|i| i.severity == Severity::Warning)
    }
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// How the config will be used, for warnings that depend on the provider.
#[derive(Clone, Copy, Debug, Default)]
pub struct LintContext {
    /// The provider is a system app (F16: only system apps get network refresh).
    pub system_app: bool,
}

/// Checks a whole `form_config.json` document (`{"forms": [...]}`): every entry, plus
/// unique names (F1).
pub fn check_document(text: &str, context: LintContext) -> ConfigReport<Vec<FormDefinition>> {
    let mut issues = Vec::new();
    if text.len() > MAX_CONFIG_BYTES {
        issues.push(error(
            "$",
            "config_too_large",
            "F1",
            format!(
                "the document has {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                text.len()
            ),
            "remove unused definitions or shorten descriptions",
        ));
        return ConfigReport {
            value: None,
            issues,
        };
    }
    let root = match json::parse(text) {
        Ok(root) => root,
        Err(err) => {
            issues.push(error(
                "$",
                "invalid_json",
                "F5",
                err.to_string(),
                "fix the JSON syntax; every key may appear once per object",
            ));
            return ConfigReport {
                value: None,
                issues,
            };
        }
    };
    let Json::Object(members) = &root else {
        issues.push(error(
            "$",
            "wrong_type",
            "F1",
            format!("the document must be an object, found {}", root.kind()),
            "write {\"forms\": [ ... ]}",
        ));
        return ConfigReport {
            value: None,
            issues,
        };
    };
    for (key, _) in members {
        if key != "forms" {
            issues.push(warning(
                &member_path("$", key),
                "unknown_field",
                "F1",
                format!("\"{key}\" is not a form_config.json field and is ignored"),
                "remove it, or check its spelling",
            ));
        }
    }
    let forms = match root.get("forms") {
        Some(Json::Array(forms)) => forms,
        Some(other) => {
            issues.push(error(
                "$.forms",
                "wrong_type",
                "F1",
                format!("\"forms\" must be an array, found {}", other.kind()),
                "write \"forms\": [ {\"name\": ...}, ... ]",
            ));
            return ConfigReport {
                value: None,
                issues,
            };
        }
        None => {
            issues.push(error(
                "$",
                "missing_field",
                "F1",
                "\"forms\" is required".to_string(),
                "add \"forms\": [ {\"name\": ...} ]",
            ));
            return ConfigReport {
                value: None,
                issues,
            };
        }
    };
    if forms.len() > MAX_DEFINITIONS {
        // Checked before any entry is read, so an oversized document costs no more than
        // its tokenizing.
        issues.push(error(
            "$.forms",
            "too_many_definitions",
            "F1",
            format!(
                "\"forms\" has {} definitions; at most {MAX_DEFINITIONS} are accepted",
                forms.len()
            ),
            "split the forms across providers, or remove unused definitions",
        ));
        return ConfigReport {
            value: None,
            issues,
        };
    }
    let mut definitions = Vec::with_capacity(forms.len());
    let mut names: Vec<(&str, usize)> = Vec::new();
    for (index, entry) in forms.iter().enumerate() {
        let path = index_path("$.forms", index);
        let report = check_form_entry(entry, &path, context);
        issues.extend(report.issues);
        if let Some(Json::String(name)) = entry.get("name") {
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == name.as_str()) {
                issues.push(error(
                    &member_path(&path, "name"),
                    "duplicate_name",
                    "F1",
                    format!("name \"{name}\" is already used by $.forms[{first}]"),
                    "give every form a unique name",
                ));
            } else {
                names.push((name, index));
            }
        }
        definitions.extend(report.value);
    }
    let has_errors = issues.iter().any(|i| i.severity == Severity::Error);
    ConfigReport {
        value: (!has_errors).then_some(definitions),
        issues,
    }
}

/// Checks one entry of `forms` (F1–F4a) and, when it has no error, returns its definition.
/// `path` is the entry's JSON path, used as the prefix of every issue.
pub fn check_form_entry(
    entry: &Json,
    path: &str,
    context: LintContext,
) -> ConfigReport<FormDefinition> {
    let mut issues = Vec::new();
    let Json::Object(members) = entry else {
        issues.push(error(
            path,
            "wrong_type",
            "F1",
            format!("a form must be an object, found {}", entry.kind()),
            "write {\"name\": \"...\", ...}",
        ));
        return ConfigReport {
            value: None,
            issues,
        };
    };
    for (key, _) in members {
        if !READ_FIELDS.contains(&key.as_str()) && !KEPT_FIELDS.contains(&key.as_str()) {
            issues.push(warning(
                &member_path(path, key),
                "unknown_field",
                "F1",
                format!("\"{key}\" is not a documented form field and is ignored"),
                "remove it, or check its spelling (field names are case-sensitive)",
            ));
        }
    }
    let field = |name: &str| (entry.get(name), member_path(path, name));

    let name = match field("name") {
        (Some(Json::String(name)), _) if !name.is_empty() => Some(name.clone()),
        (Some(Json::String(_)), p) => {
            issues.push(error(
                &p,
                "empty_name",
                "F4a",
                "\"name\" must not be empty".into(),
                "give the form a name",
            ));
            None
        }
        (Some(other), p) => {
            issues.push(wrong_type(&p, "a string", other));
            None
        }
        (None, _) => {
            issues.push(error(
                path,
                "missing_field",
                "F1",
                "\"name\" is required".into(),
                "add \"name\": \"my_widget\"",
            ));
            None
        }
    };
    let update_enabled = read_bool(&mut issues, field("updateEnabled"));
    let data_proxy_enabled = read_bool(&mut issues, field("dataProxyEnabled"));

    let update_duration = match field("updateDuration") {
        (None, _) => Some(0),
        (Some(Json::Integer(n)), p) if *n < 0 => {
            issues.push(error(
                &p,
                "negative_update_duration",
                "F4",
                format!("updateDuration is {n}; it must be 0 or more"),
                "use 0 for no interval refresh, or N for every N×30 minutes",
            ));
            None
        }
        (Some(Json::Integer(n)), p) if *n > MAX_UPDATE_DURATION => {
            issues.push(warning(
                &p,
                "update_duration_clamped",
                "F4",
                format!("updateDuration {n} is above {MAX_UPDATE_DURATION} and is read as {MAX_UPDATE_DURATION} (one week)"),
                "use at most 336",
            ));
            Some(MAX_UPDATE_DURATION as u16)
        }
        (Some(Json::Integer(n)), _) => Some(*n as u16),
        (Some(other), p) => {
            issues.push(wrong_type(&p, "an integer that fits in 64 bits", other));
            None
        }
    };

    let scheduled_update_time = match field("scheduledUpdateTime") {
        (None, _) => None,
        (Some(Json::String(text)), p) => match parse_time(text) {
            Ok(time) => Some(time),
            Err(err) => {
                issues.push(time_error(&p, &err));
                None
            }
        },
        (Some(other), p) => {
            issues.push(wrong_type(&p, "a string \"HH:MM\"", other));
            None
        }
    };
    let (multi_path, multi_written) = {
        let (value, p) = field("multiScheduledUpdateTime");
        (p, value)
    };
    let multi_scheduled_update_time = match multi_written {
        None => Vec::new(),
        Some(Json::String(text)) => match parse_time_list(text) {
            Ok(list) => {
                for duplicate in &list.duplicates {
                    issues.push(warning(
                        &multi_path,
                        "duplicate_time",
                        "F3",
                        format!("{duplicate} is listed more than once; it fires once"),
                        "list each time once",
                    ));
                }
                list.times
            }
            Err(errors) => {
                for err in &errors {
                    issues.push(time_error(&multi_path, err));
                }
                Vec::new()
            }
        },
        Some(other) => {
            issues.push(wrong_type(&multi_path, "a string \"HH:MM,HH:MM\"", other));
            Vec::new()
        }
    };
    let multi_is_set = matches!(multi_written, Some(Json::String(s)) if !s.is_empty());

    let mut network_condition = false;
    match field("conditionUpdate") {
        (None, _) => {}
        (Some(Json::Array(items)), p) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = index_path(&p, i);
                match item {
                    Json::String(s) if s == "network" => network_condition = true,
                    Json::String(s) => issues.push(warning(
                        &item_path,
                        "unknown_condition",
                        "F4a",
                        format!("condition \"{s}\" is not known and is ignored"),
                        format!("known conditions: {}", KNOWN_CONDITIONS.join(", ")),
                    )),
                    other => issues.push(wrong_type(&item_path, "a string", other)),
                }
            }
        }
        (Some(other), p) => issues.push(wrong_type(&p, "an array of strings", other)),
    }

    // Warnings about settings that are valid but do not do what they seem to (F7, F8, F9, F16).
    let duration = update_duration.unwrap_or(0);
    let scheduled_written = entry.get("scheduledUpdateTime").is_some() || multi_is_set;
    if duration > 0 && scheduled_written {
        issues.push(warning(
            path,
            "scheduled_time_ignored",
            "F7",
            "updateDuration > 0 selects interval refresh, so the scheduled times are ignored"
                .into(),
            "set updateDuration to 0 to use the scheduled times, or remove them",
        ));
    }
    if duration == 0 && multi_is_set {
        if entry.get("scheduledUpdateTime").is_some() {
            issues.push(warning(
                &member_path(path, "scheduledUpdateTime"),
                "single_time_not_merged",
                "F8",
                "multiScheduledUpdateTime is set, so scheduledUpdateTime is not used (it is not merged into the list)".into(),
                "add the single time to multiScheduledUpdateTime if it should fire too",
            ));
        } else {
            issues.push(warning(
                &multi_path,
                "single_time_missing",
                "F8",
                "older hosts read only scheduledUpdateTime and will not refresh this form on time"
                    .into(),
                "also set scheduledUpdateTime to one of the listed times",
            ));
        }
    }
    if data_proxy_enabled == Some(true) && duration > 0 && update_enabled == Some(true) {
        issues.push(warning(
            &member_path(path, "dataProxyEnabled"),
            "proxy_disables_timed_refresh",
            "F9",
            "with dataProxyEnabled, interval refresh is off and updateDuration > 0 ignores the scheduled times: this form has no timed refresh".into(),
            "set updateDuration to 0 and use scheduled times, or turn off dataProxyEnabled",
        ));
    }
    if network_condition && !context.system_app {
        issues.push(warning(
            &member_path(path, "conditionUpdate"),
            "network_needs_system_app",
            "F16",
            "network-recovery refresh only applies to system apps; this form will not get it"
                .into(),
            "remove \"network\", or lint with --system-app if the provider is a system app",
        ));
    }

    let has_errors = issues.iter().any(|i| i.severity == Severity::Error);
    let value = match (name, update_enabled, update_duration, data_proxy_enabled) {
        (Some(name), Some(update_enabled), Some(update_duration), Some(data_proxy_enabled))
            if !has_errors =>
        {
            Some(FormDefinition {
                name,
                update_enabled,
                update_duration,
                scheduled_update_time,
                multi_scheduled_update_time,
                network_condition,
                data_proxy_enabled,
            })
        }
        _ => None,
    };
    ConfigReport { value, issues }
}

fn read_bool(
    issues: &mut Vec<ConfigIssue>,
    (value, path): (Option<&Json>, String),
) -> Option<bool> {
    match value {
        None => Some(false),
        Some(Json::Bool(b)) => Some(*b),
        Some(other) => {
            issues.push(wrong_type(&path, "a boolean (true or false)", other));
            None
        }
    }
}

fn time_error(path: &str, err: &TimeListError) -> ConfigIssue {
    let (code, rule) = match err {
        TimeListError::NotATime(_) => ("invalid_time", "F2"),
        TimeListError::EmptyEntry { .. } => ("empty_time_entry", "F3"),
        TimeListError::TooMany { .. } => ("too_many_times", "F3"),
    };
    let hint = match err {
        TimeListError::NotATime(_) => "write times as HH:MM, 00:00 to 23:59, such as \"10:30\"",
        TimeListError::EmptyEntry { .. } => "separate times with single commas: \"10:30,16:30\"",
        TimeListError::TooMany { .. } => "list at most 24 times",
    };
    error(path, code, rule, err.to_string(), hint)
}

fn wrong_type(path: &str, expected: &str, found: &Json) -> ConfigIssue {
    error(
        path,
        "wrong_type",
        "F4a",
        format!("expected {expected}, found {}", found.kind()),
        format!("write {expected}"),
    )
}

fn error(
    path: &str,
    code: &'static str,
    rule: &'static str,
    message: String,
    hint: impl Into<String>,
) -> ConfigIssue {
    ConfigIssue {
        severity: Severity::Error,
        path: path.to_string(),
        code,
        rule,
        message,
        hint: hint.into(),
    }
}

fn warning(
    path: &str,
    code: &'static str,
    rule: &'static str,
    message: String,
    hint: impl Into<String>,
) -> ConfigIssue {
    ConfigIssue {
        severity: Severity::Warning,
        ..error(path, code, rule, message, hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(entry: &str) -> ConfigReport<FormDefinition> {
        check_form_entry(&json::parse(entry).unwrap(), "$", LintContext::default())
    }

    fn codes(report: &ConfigReport<FormDefinition>) -> Vec<&'static str> {
        report.issues.iter().map(|i| i.code).collect()
    }

    #[test]
    fn f1_defaults_and_kept_fields() {
        let r = check(r#"{"name": "w", "src": "./x.ets", "window": {"designWidth": 720}}"#);
        assert!(r.issues.is_empty(), "{:?}", r.issues);
        let d = r.value.unwrap();
        assert!(!d.update_enabled && d.update_duration == 0 && !d.data_proxy_enabled);
    }

    #[test]
    fn f1_unknown_field_is_a_warning_with_its_path() {
        let r = check(r#"{"name": "w", "updateDuraton": 2}"#);
        assert!(r.value.is_some());
        assert_eq!(r.issues[0].path, "$.updateDuraton");
        assert_eq!(r.issues[0].severity, Severity::Warning);
    }

    #[test]
    fn f1_name_required_and_unique_in_document() {
        assert_eq!(
            codes(&check(r#"{"updateEnabled": true}"#)),
            ["missing_field"]
        );
        let doc = check_document(
            r#"{"forms": [{"name": "a"}, {"name": "a"}]}"#,
            LintContext::default(),
        );
        assert!(doc.value.is_none());
        assert_eq!(doc.issues[0].code, "duplicate_name");
        assert_eq!(doc.issues[0].path, "$.forms[1].name");
    }

    #[test]
    fn f2_bad_single_time_is_an_error_naming_the_text() {
        let r = check(r#"{"name": "w", "updateEnabled": true, "scheduledUpdateTime": "24:00"}"#);
        assert!(r.value.is_none());
        assert_eq!(r.issues[0].code, "invalid_time");
        assert!(r.issues[0].message.contains("24:00"));
    }

    #[test]
    fn f3_multi_list_errors_and_duplicate_warning() {
        let r = check(r#"{"name": "w", "multiScheduledUpdateTime": "10:00,10:30:00"}"#);
        assert!(r.value.is_none());
        assert_eq!(
            r.errors().map(|i| i.code).collect::<Vec<_>>(),
            ["invalid_time"]
        );
        assert!(r.issues[0].message.contains("10:30:00"));
        let r = check(
            r#"{"name": "w", "scheduledUpdateTime": "9:00", "multiScheduledUpdateTime": "10:00,10:00"}"#,
        );
        assert!(r.value.is_some());
        assert!(codes(&r).contains(&"duplicate_time"));
    }

    #[test]
    fn f4_negative_is_error_and_large_is_clamped_with_warning() {
        assert_eq!(
            codes(&check(r#"{"name": "w", "updateDuration": -1}"#)),
            ["negative_update_duration"]
        );
        let r = check(r#"{"name": "w", "updateDuration": 400}"#);
        assert_eq!(r.value.unwrap().update_duration, 336);
        assert_eq!(r.issues[0].code, "update_duration_clamped");
    }

    #[test]
    fn f4a_types_are_strict() {
        for bad in [
            r#"{"name": "w", "updateDuration": 1.5}"#,
            r#"{"name": "w", "updateDuration": "2"}"#,
            r#"{"name": "w", "updateDuration": null}"#,
            r#"{"name": "w", "updateDuration": 99999999999999999999}"#,
            r#"{"name": "w", "updateEnabled": "true"}"#,
            r#"{"name": "w", "conditionUpdate": "network"}"#,
            r#"{"name": "w", "conditionUpdate": [1]}"#,
            r#"{"name": ""}"#,
            r#"{"name": 5}"#,
        ] {
            let r = check(bad);
            assert!(r.value.is_none() && r.has_errors(), "{bad}");
        }
    }

    #[test]
    fn f4a_time_fields_are_validated_even_when_ignored() {
        let r = check(
            r#"{"name": "w", "updateEnabled": true, "updateDuration": 2, "scheduledUpdateTime": "aa:bb"}"#,
        );
        assert!(r.value.is_none());
        assert!(codes(&r).contains(&"invalid_time"));
    }

    #[test]
    fn f5_every_error_at_once() {
        let r = check(r#"{"updateDuration": -3, "scheduledUpdateTime": "x", "updateEnabled": 1}"#);
        assert_eq!(r.errors().count(), 4, "{:?}", r.issues);
    }

    #[test]
    fn f7_scheduled_ignored_warning() {
        let r = check(
            r#"{"name": "w", "updateEnabled": true, "updateDuration": 2, "scheduledUpdateTime": "10:30"}"#,
        );
        assert_eq!(codes(&r), ["scheduled_time_ignored"]);
    }

    #[test]
    fn f8_single_and_multi_warnings() {
        let both = check(
            r#"{"name": "w", "updateEnabled": true, "scheduledUpdateTime": "9:00", "multiScheduledUpdateTime": "10:00"}"#,
        );
        assert_eq!(codes(&both), ["single_time_not_merged"]);
        let multi_only =
            check(r#"{"name": "w", "updateEnabled": true, "multiScheduledUpdateTime": "10:00"}"#);
        assert_eq!(codes(&multi_only), ["single_time_missing"]);
        let empty_multi =
            check(r#"{"name": "w", "updateEnabled": true, "multiScheduledUpdateTime": ""}"#);
        assert!(empty_multi.issues.is_empty());
    }

    #[test]
    fn f9_proxy_with_interval_warns_no_timed_refresh() {
        let r = check(
            r#"{"name": "w", "updateEnabled": true, "updateDuration": 2, "dataProxyEnabled": true}"#,
        );
        assert_eq!(codes(&r), ["proxy_disables_timed_refresh"]);
    }

    #[test]
    fn f16_network_condition_warns_unless_system_app() {
        let text = r#"{"name": "w", "conditionUpdate": ["network", "wifi"]}"#;
        let r = check(text);
        assert_eq!(codes(&r), ["unknown_condition", "network_needs_system_app"]);
        let system = check_form_entry(
            &json::parse(text).unwrap(),
            "$",
            LintContext { system_app: true },
        );
        assert_eq!(system.issues.len(), 1);
        assert!(system.value.unwrap().network_condition);
    }

    #[test]
    fn f1_limits_on_definitions_and_size_are_errors_with_their_path() {
        let forms = |n: usize| {
            let entries: Vec<String> = (0..n).map(|i| format!("{{\"name\": \"w{i}\"}}")).collect();
            format!("{{\"forms\": [{}]}}", entries.join(","))
        };
        let at_limit = check_document(&forms(MAX_DEFINITIONS), LintContext::default());
        assert_eq!(at_limit.value.map(|d| d.len()), Some(MAX_DEFINITIONS));
        let over = check_document(&forms(MAX_DEFINITIONS + 1), LintContext::default());
        assert!(over.value.is_none());
        assert_eq!(
            (over.issues[0].code, over.issues[0].path.as_str()),
            ("too_many_definitions", "$.forms")
        );
        let padded = format!(
            "{{\"forms\": [{{\"name\": \"w\", \"description\": \"{}\"}}]}}",
            "x".repeat(MAX_CONFIG_BYTES)
        );
        let large = check_document(&padded, LintContext::default());
        assert_eq!(
            (large.issues[0].code, large.issues[0].path.as_str()),
            ("config_too_large", "$")
        );
    }

    #[test]
    fn document_shape_errors() {
        let ctx = LintContext::default();
        assert_eq!(check_document("[]", ctx).issues[0].code, "wrong_type");
        assert_eq!(check_document("{}", ctx).issues[0].code, "missing_field");
        assert_eq!(
            check_document("{\"forms\": 1}", ctx).issues[0].code,
            "wrong_type"
        );
        assert_eq!(check_document("{", ctx).issues[0].code, "invalid_json");
    }
}
