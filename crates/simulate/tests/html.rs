//! The HTML timeline of every project scenario: well-formed, self-contained, one lane per
//! form and per fetching (app, user) pair, and exactly the marks the simulation made
//! (counted and not-counted refreshes drawn with different shapes, skipped marks titled
//! with their rule). The explanation page likewise for one subject.

use refreshd_rules::FormDecision;
use refreshd_simulate::explain::{explain, explain_html, Subject};
use refreshd_simulate::html::timeline_page;
use refreshd_simulate::{RecordKind, Scenario, Simulation};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().ends_with(".expected.json")
        })
        .collect();
    files.push(repo_root().join("examples/shared-tick.json"));
    files.sort();
    assert!(files.len() > 10, "the project's scenarios are found");
    files
}

fn load(path: &Path) -> Scenario {
    Scenario::parse(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}

/// Checks the page is well-formed markup (every element closed, in order; attribute
/// values quoted; no bare `<` or `&` in text), the way an XML parser would.
fn assert_well_formed(page: &str, what: &str) {
    let body = page
        .strip_prefix("<!DOCTYPE html>\n")
        .unwrap_or_else(|| panic!("{what}: no doctype"));
    let mut open: Vec<String> = Vec::new();
    let mut rest = body;
    let check_text = |text: &str| {
        let mut t = text;
        while let Some(at) = t.find('&') {
            let entity = &t[at..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "{what}: bare & in {:?}",
                &entity[..entity.len().min(20)]
            );
            t = &entity[1..];
        }
        assert!(!text.contains('>'), "{what}: bare > in text {text:?}");
    };
    while let Some(start) = rest.find('<') {
        check_text(&rest[..start]);
        let end = rest[start..]
            .find('>')
            .unwrap_or_else(|| panic!("{what}: unclosed tag"))
            + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let expected = open
                .pop()
                .unwrap_or_else(|| panic!("{what}: stray </{name}>"));
            assert_eq!(name, expected, "{what}: </{name}> closes <{expected}>");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attributes) = tag.split_once(' ').unwrap_or((tag, ""));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{what}: bad element name {name:?}"
        );
        // name="value" pairs, values without quotes or angle brackets.
        loop {
            attributes = attributes.trim_start();
            if attributes.is_empty() {
                break;
            }
            let (attribute, value) = attributes
                .split_once("=\"")
                .unwrap_or_else(|| panic!("{what}: unquoted attribute in <{tag}>"));
            assert!(
                attribute
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "{what}: bad attribute {attribute:?} in <{tag}>"
            );
            let close = value
                .find('"')
                .unwrap_or_else(|| panic!("{what}: unterminated value in <{tag}>"));
            check_text(&value[..close]);
            assert!(!value[..close].contains('<'), "{what}: < in a value");
            attributes = &value[close + 1..];
        }
        if !self_closing {
            open.push(name.to_string());
        }
    }
    check_text(rest);
    assert!(open.is_empty(), "{what}: unclosed elements {open:?}");
}

/// Nothing is loaded from elsewhere: no URL but the SVG namespace, no script, link,
/// image, stylesheet import or font.
fn assert_self_contained(page: &str, what: &str) {
    let without_namespace = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for forbidden in [
        "http://",
        "https://",
        "<script",
        "<link",
        "<img",
        "src=",
        "href=",
        "url(",
        "@import",
        "@font-face",
    ] {
        assert!(
            !without_namespace.contains(forbidden),
            "{what}: contains {forbidden}"
        );
    }
}

/// The lanes of the page's timeline, in order: each lane's opening tag and its marks.
fn lanes_of(page: &str) -> Vec<(String, Vec<String>)> {
    let svg_start = page.find("<svg xmlns=").expect("an inline SVG timeline");
    let svg = &page[svg_start..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    let mut out = Vec::new();
    for part in svg.split("<g class=\"lane\" ").skip(1) {
        let head = part[..part.find('>').unwrap()].to_string();
        let marks = part
            .split("<g class=\"mark\" ")
            .skip(1)
            .map(|m| m[..m.find("</g>").unwrap()].to_string())
            .collect();
        out.push((head, marks));
    }
    out
}

#[test]
fn every_project_scenario_renders_one_lane_per_form_with_the_simulated_marks() {
    let mut kinds_seen: BTreeMap<&str, usize> = BTreeMap::new();
    for file in scenario_files() {
        let what = file.file_name().unwrap().to_string_lossy().into_owned();
        let scenario = load(&file);
        let records = Simulation::run(&scenario);
        let page = timeline_page(&records, &scenario);
        assert_well_formed(&page, &what);
        assert_self_contained(&page, &what);
        assert!(page.contains("<svg"), "{what}: no SVG");
        assert!(
            page.contains(&format!("local time, {}", scenario.zone_name)),
            "{what}: the axis does not name the zone"
        );

        let lanes = lanes_of(&page);
        let form_lanes: Vec<&(String, Vec<String>)> = lanes
            .iter()
            .filter(|(head, _)| head.starts_with("data-lane=\"form\""))
            .collect();
        let form_ids: Vec<String> = form_lanes
            .iter()
            .map(|(head, _)| {
                head.split("data-form=\"")
                    .nth(1)
                    .unwrap()
                    .trim_end_matches('"')
                    .to_string()
            })
            .collect();
        let declared: Vec<String> = scenario.forms.iter().map(|f| f.id.clone()).collect();
        assert_eq!(form_ids, declared, "{what}: one lane per form, in order");

        for ((_, marks), form) in form_lanes.iter().zip(&declared) {
            // What the simulation decided for this form, by kind and trigger.
            let mut expected: BTreeMap<String, usize> = BTreeMap::new();
            for record in &records {
                if let RecordKind::Form { form: f, decision } = &record.what {
                    if f != form {
                        continue;
                    }
                    let key = match *decision {
                        FormDecision::Refresh {
                            trigger, counted, ..
                        } => format!("refresh {} counted={counted}", trigger.as_str()),
                        FormDecision::Deferred { kind, .. } => {
                            format!("deferred {}", kind.as_str())
                        }
                        FormDecision::Skipped { kind, .. } => format!("skipped {}", kind.as_str()),
                    };
                    *expected.entry(key).or_default() += 1;
                }
            }
            let mut drawn: BTreeMap<String, usize> = BTreeMap::new();
            for mark in marks {
                let attribute = |name: &str| {
                    mark.split(&format!("{name}=\""))
                        .nth(1)
                        .map(|v| v[..v.find('"').unwrap()].to_string())
                };
                let kind = attribute("data-kind").unwrap();
                let key = match kind.as_str() {
                    "refresh" => {
                        let counted = attribute("data-counted").unwrap();
                        // Counted and not counted differ by shape, not only colour.
                        let circle = mark.contains("<circle");
                        let diamond = mark.contains("<path d=\"M0,-6.5 L6.5,0");
                        assert_eq!(
                            (circle, diamond),
                            (counted == "true", counted == "false"),
                            "{what}: refresh shape: {mark}"
                        );
                        format!(
                            "refresh {} counted={counted}",
                            attribute("data-trigger").unwrap()
                        )
                    }
                    "deferred" | "skipped" => {
                        if kind == "skipped" {
                            let rule = attribute("data-rule").unwrap();
                            assert!(rule.starts_with('F'), "{what}: {mark}");
                            let title = &mark[mark.find("<title>").unwrap()..];
                            assert!(
                                title.contains(&format!("[{rule}]")),
                                "{what}: a skipped mark's title names its rule: {mark}"
                            );
                        }
                        format!("{kind} {}", attribute("data-trigger").unwrap())
                    }
                    "rejected" => continue,
                    other => panic!("{what}: a {other} mark on a form lane"),
                };
                *kinds_seen
                    .entry(match key.split(' ').next().unwrap() {
                        "refresh" if key.ends_with("true") => "counted",
                        "refresh" => "not counted",
                        "deferred" => "deferred",
                        _ => "skipped",
                    })
                    .or_default() += 1;
                *drawn.entry(key).or_default() += 1;
            }
            assert_eq!(drawn, expected, "{what}: marks of form {form}");
        }

        // One lane per (app, user) that fetched, with one mark per fetch.
        let mut fetches: BTreeMap<(String, String), usize> = BTreeMap::new();
        for record in &records {
            if let RecordKind::Fetch { app, user, .. } = &record.what {
                *fetches.entry((app.clone(), user.clone())).or_default() += 1;
            }
        }
        let fetch_lanes: BTreeMap<(String, String), usize> = lanes
            .iter()
            .filter(|(head, _)| head.starts_with("data-lane=\"fetch\""))
            .map(|(head, marks)| {
                let value = |name: &str| {
                    let v = head.split(&format!("{name}=\"")).nth(1).unwrap();
                    v[..v.find('"').unwrap()].to_string()
                };
                assert!(marks.iter().all(|m| m.starts_with("data-kind=\"fetch\"")));
                ((value("data-app"), value("data-user")), marks.len())
            })
            .collect();
        assert_eq!(fetch_lanes, fetches, "{what}: fetch lanes");
        *kinds_seen.entry("fetch").or_default() += fetches.values().sum::<usize>();
    }
    // The scenarios exercise every kind of mark, so the checks above checked something.
    for kind in ["counted", "not counted", "deferred", "skipped", "fetch"] {
        assert!(
            kinds_seen.get(kind).copied().unwrap_or(0) > 0,
            "no scenario drew a {kind} mark: {kinds_seen:?}"
        );
    }
}

#[test]
fn the_explanation_page_shows_one_subject_lane_and_the_same_text() {
    let file = repo_root().join("tests/scenarios/08-hidden-deferral.json");
    let scenario = load(&file);
    let form = scenario.forms[0].id.clone();
    let subject = Subject::Form(form.clone());
    let page = explain_html(&scenario, &subject, None).unwrap();
    assert_well_formed(&page, "explain html");
    assert_self_contained(&page, "explain html");
    let lanes = lanes_of(&page);
    assert_eq!(lanes.len(), 1);
    assert!(lanes[0].0.contains(&format!("data-form=\"{form}\"")));
    let records = Simulation::run(&scenario);
    let about_form = records
        .iter()
        .filter(|r| matches!(&r.what, RecordKind::Form { form: f, .. } if *f == form))
        .count();
    assert!(about_form > 0);
    assert_eq!(lanes[0].1.len(), about_form);
    // The text explanation is on the page, escaped.
    let text = explain(&scenario, &subject, None).unwrap();
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    assert!(page.contains(&escaped), "{page}");

    // A periodic fetch subject gets its (app, user) lane.
    let file = repo_root().join("tests/scenarios/11-periodic-retries.json");
    let scenario = load(&file);
    let records = Simulation::run(&scenario);
    let (app, user) = records
        .iter()
        .find_map(|r| match &r.what {
            RecordKind::Fetch { app, user, .. } => Some((app.clone(), user.clone())),
            _ => None,
        })
        .expect("the scenario fetches");
    let page = explain_html(&scenario, &Subject::Fetch { app, user }, None).unwrap();
    assert_well_formed(&page, "explain fetch html");
    let lanes = lanes_of(&page);
    assert_eq!(lanes.len(), 1);
    assert!(lanes[0].0.starts_with("data-lane=\"fetch\""));
    assert!(!lanes[0].1.is_empty());
}
