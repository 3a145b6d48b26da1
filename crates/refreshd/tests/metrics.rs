//! The Prometheus metrics of a running `refreshd serve`: every family is there from the
//! start, with a HELP line, histograms with buckets (never summaries), labelled counters
//! with their known label values at zero; a 429 is counted; and the Grafana dashboard
//! (docs/grafana-dashboard.json) queries only metrics the service exports.

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use support::{epoch_now, temp_dir, Service};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every family refreshd exports, with its Prometheus type.
const FAMILIES: [(&str, &str); 14] = [
    ("refreshd_refreshes_total", "counter"),
    ("refreshd_deliveries_total", "counter"),
    ("refreshd_fetches_total", "counter"),
    ("refreshd_fetches_postponed_total", "counter"),
    ("refreshd_commit_conflicts_total", "counter"),
    ("refreshd_connections_refused_total", "counter"),
    ("refreshd_rate_limited_requests_total", "counter"),
    ("refreshd_engine_errors_total", "counter"),
    ("refreshd_fetch_seconds", "histogram"),
    ("refreshd_store_commit_seconds", "histogram"),
    ("refreshd_lateness_seconds", "histogram"),
    ("refreshd_due_backlog", "gauge"),
    ("refreshd_due_subjects", "gauge"),
    ("refreshd_sse_clients", "gauge"),
];

/// One scrape, by family: its HELP text, its TYPE and its sample lines.
#[derive(Default, Debug)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<String>,
}

fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_string()).or_default().help = Some(help.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a TYPE line names a type");
            families.entry(name.to_string()).or_default().kind = Some(kind.to_string());
        } else if !line.is_empty() && !line.starts_with('#') {
            let series = line.split([' ', '{']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    series
                        .strip_suffix(suffix)
                        .filter(|base| families.contains_key(*base))
                })
                .unwrap_or(series);
            families
                .entry(family.to_string())
                .or_default()
                .samples
                .push(line.to_string());
        }
    }
    families
}

async fn scrape(svc: &Service, metrics: &str) -> String {
    let response = svc
        .client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .expect("the metrics listener answers");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Names like `refreshd_x` in every string of a JSON document.
fn metric_names_in(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(at) = rest.find("refreshd_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
        Value::Array(items) => items.iter().for_each(|v| metric_names_in(v, names)),
        Value::Object(map) => map.values().for_each(|v| metric_names_in(v, names)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_described_present_at_start_and_queried_by_the_dashboard() {
    let dir = temp_dir("metrics");
    let metrics = format!("127.0.0.1:{}", free_port());
    let svc = Service::start(
        &dir,
        &epoch_now(),
        &[
            "--metrics-listen",
            &metrics,
            "--rate-limit-per-second",
            "1",
            "--rate-limit-burst",
            "2",
        ],
    );

    let text = scrape(&svc, &metrics).await;
    let families = parse(&text);
    for (name, family) in families.iter().filter(|(n, _)| n.starts_with("refreshd_")) {
        let help = family.help.as_deref().unwrap_or("");
        assert!(!help.trim().is_empty(), "{name} has no HELP text:\n{text}");
        assert_ne!(
            family.kind.as_deref(),
            Some("summary"),
            "{name} is a summary"
        );
        if family.kind.as_deref() == Some("histogram") {
            assert!(
                family
                    .samples
                    .iter()
                    .any(|s| s.starts_with(&format!("{name}_bucket{{le=\"+Inf\"}}"))),
                "{name} has no buckets:\n{text}"
            );
            let finite = family
                .samples
                .iter()
                .filter(|s| s.starts_with(&format!("{name}_bucket")) && !s.contains("+Inf"))
                .count();
            assert!(finite >= 5, "{name} has only {finite} finite buckets");
        }
        if family.kind.as_deref() == Some("counter") {
            assert!(
                name.ends_with("_total"),
                "counter {name} does not end in _total"
            );
        }
    }
    for (name, kind) in FAMILIES {
        let family = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing at start:\n{text}"));
        assert_eq!(family.kind.as_deref(), Some(kind), "{name}'s type");
        assert!(!family.samples.is_empty(), "{name} has no series at start");
    }
    let exported: BTreeSet<&str> = families
        .keys()
        .map(String::as_str)
        .filter(|n| n.starts_with("refreshd_"))
        .collect();
    let expected: BTreeSet<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
    assert_eq!(exported, expected, "the exported families changed");

    // Labelled counters list each known label value at zero.
    for series in [
        "refreshd_fetches_total{outcome=\"ok\"} 0",
        "refreshd_fetches_total{outcome=\"timeout\"} 0",
        "refreshd_fetches_total{outcome=\"blocked_address\"} 0",
        "refreshd_deliveries_total{outcome=\"given_up\"} 0",
        "refreshd_refreshes_total{trigger=\"visible\",counted=\"false\"} 0",
        "refreshd_refreshes_total{trigger=\"interval\",counted=\"true\"} 0",
        "refreshd_engine_errors_total{step=\"claim\"} 0",
        "refreshd_rate_limited_requests_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing:\n{text}"
        );
    }
    assert_eq!(families["refreshd_fetches_total"].samples.len(), 10);
    assert_eq!(families["refreshd_deliveries_total"].samples.len(), 3);

    // A request over the key's rate is answered 429 and counted.
    let mut limited = 0;
    for n in 0..30 {
        let (status, _) = svc
            .call(
                "POST",
                "/v1/admin/apps",
                &svc.operator,
                Some(json!({"appid": format!("wxmetrics{n}"), "subject": "organization"})),
            )
            .await;
        if status == 429 {
            limited += 1;
            break;
        }
    }
    assert_eq!(limited, 1, "a burst of 2 runs out within 30 quick requests");
    let after = scrape(&svc, &metrics).await;
    assert!(
        after
            .lines()
            .any(|l| l == "refreshd_rate_limited_requests_total 1"),
        "the 429 is not counted:\n{after}"
    );

    // The dashboard: importable with a Prometheus data source input, and querying only
    // exported series (a histogram through its _bucket, _sum and _count).
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is valid JSON");
    assert!(dashboard["__inputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|input| input["name"] == "DS_PROMETHEUS" && input["pluginId"] == "prometheus"));
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut expressions = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        expressions += targets.len();
    }
    assert!(expressions >= 10, "only {expressions} queries");
    let mut queried = BTreeSet::new();
    metric_names_in(&dashboard, &mut queried);
    let mut available: BTreeSet<String> = BTreeSet::new();
    for (name, kind) in FAMILIES {
        available.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                available.insert(format!("{name}{suffix}"));
            }
        }
    }
    let unknown: Vec<&String> = queried.difference(&available).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries unknown metrics: {unknown:?}"
    );
    // Every family is on the dashboard.
    for (name, _) in FAMILIES {
        assert!(
            queried.iter().any(|q| q.starts_with(name)),
            "{name} is not on the dashboard"
        );
    }
}
