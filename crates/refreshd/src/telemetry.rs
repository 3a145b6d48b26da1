//! refreshd's Prometheus metrics: the exporter, every metric's description and unit,
//! the histograms' buckets, and every series that exists from the start at zero.
//!
//! The engine and the API record with the `metrics` macros; this module is the one place
//! that names them all, so a scrape right after start already lists every family (and,
//! for labelled counters, every known label value), each with its HELP line.

use anyhow::{Context, Result};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use refreshd_rules::periodic::FetchOutcome;
use refreshd_rules::Trigger;
use std::net::SocketAddr;

/// How long a periodic fetch took, request to recorded answer: up to the fetch deadline.
const FETCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// One store commit: sub-millisecond on SQLite, a few milliseconds on PostgreSQL.
const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// How late a timer was woken on the engine's clock: from keeping up to an hour behind.
const LATENESS_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
];
/// For any histogram without buckets of its own: never a summary.
const DEFAULT_BUCKETS: &[f64] = &[0.001, 0.01, 0.1, 1.0, 10.0, 100.0];

/// Every fetch outcome, the values of `refreshd_fetches_total`'s `outcome` label.
const FETCH_OUTCOMES: [FetchOutcome; 10] = [
    FetchOutcome::Ok,
    FetchOutcome::NotModified,
    FetchOutcome::InvalidResponse,
    FetchOutcome::Redirect,
    FetchOutcome::HttpStatus,
    FetchOutcome::TooLarge,
    FetchOutcome::NotUtf8,
    FetchOutcome::Timeout,
    FetchOutcome::Connect,
    FetchOutcome::BlockedAddress,
];

/// Does not compile when an outcome is added without being listed in `FETCH_OUTCOMES`.
#[allow(dead_code)]
fn fetch_outcome_listed(outcome: FetchOutcome) {
    match outcome {
        FetchOutcome::Ok
        | FetchOutcome::NotModified
        | FetchOutcome::InvalidResponse
        | FetchOutcome::Redirect
        | FetchOutcome::HttpStatus
        | FetchOutcome::TooLarge
        | FetchOutcome::NotUtf8
        | FetchOutcome::Timeout
        | FetchOutcome::Connect
        | FetchOutcome::BlockedAddress => {}
    }
}

const TRIGGERS: [Trigger; 6] = [
    Trigger::Interval,
    Trigger::Network,
    Trigger::Next,
    Trigger::QuotaReset,
    Trigger::Scheduled,
    Trigger::Visible,
];

/// Does not compile when a trigger is added without being listed in `TRIGGERS`.
#[allow(dead_code)]
fn trigger_listed(trigger: Trigger) {
    match trigger {
        Trigger::Interval
        | Trigger::Network
        | Trigger::Next
        | Trigger::QuotaReset
        | Trigger::Scheduled
        | Trigger::Visible => {}
    }
}

/// The `counted` values a refresh by `trigger` can carry: a visible refresh is counted
/// when it carries a deferred counted trigger (F21), the others by their kind (F17).
fn counted_values(trigger: Trigger) -> &'static [&'static str] {
    match trigger {
        Trigger::Visible => &["true", "false"],
        t if t.is_counted() => &["true"],
        _ => &["false"],
    }
}

/// The values of `refreshd_deliveries_total`'s `outcome` label.
pub const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "retry", "given_up"];

/// The values of `refreshd_engine_errors_total`'s `step` label.
pub const ENGINE_ERROR_STEPS: [&str; 6] = [
    "claim",
    "wake",
    "record_fetch",
    "read_deliveries",
    "record_delivery",
    "prune",
];

/// Starts the exporter on `listen`, then describes and registers every metric.
pub fn install(listen: SocketAddr) -> Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets(DEFAULT_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("refreshd_fetch_seconds".into()),
            FETCH_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("refreshd_store_commit_seconds".into()),
            COMMIT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("refreshd_lateness_seconds".into()),
            LATENESS_BUCKETS,
        )?
        .install()
        .context("cannot start the metrics listener")?;
    describe();
    register();
    Ok(())
}

fn describe() {
    metrics::describe_counter!(
        "refreshd_refreshes_total",
        Unit::Count,
        "Form refreshes decided, by trigger and by whether they used the daily quota."
    );
    metrics::describe_counter!(
        "refreshd_deliveries_total",
        Unit::Count,
        "Delivery attempts to providers' servers, by outcome (delivered, retry, given_up)."
    );
    metrics::describe_counter!(
        "refreshd_fetches_total",
        Unit::Count,
        "Periodic fetches from developers' servers, by outcome."
    );
    metrics::describe_counter!(
        "refreshd_fetches_postponed_total",
        Unit::Count,
        "Due periodic fetches left for a later pass because their app already runs its share of this node's fetches."
    );
    metrics::describe_counter!(
        "refreshd_commit_conflicts_total",
        Unit::Count,
        "Store commits that lost a race with another node and were run again."
    );
    metrics::describe_counter!(
        "refreshd_connections_refused_total",
        Unit::Count,
        "API connections closed at once because the connection limit was reached."
    );
    metrics::describe_counter!(
        "refreshd_rate_limited_requests_total",
        Unit::Count,
        "API requests answered 429 (per-key rate, requests or streams in progress)."
    );
    metrics::describe_counter!(
        "refreshd_engine_errors_total",
        Unit::Count,
        "Engine steps that failed and will be retried, by step; mostly store errors."
    );
    metrics::describe_histogram!(
        "refreshd_fetch_seconds",
        Unit::Seconds,
        "Time a periodic fetch took, from sending the request to its classified answer."
    );
    metrics::describe_histogram!(
        "refreshd_store_commit_seconds",
        Unit::Seconds,
        "Time one device's decisions took to commit to the store."
    );
    metrics::describe_histogram!(
        "refreshd_lateness_seconds",
        Unit::Seconds,
        "How late a device's timer was woken, actual minus due, on the engine's clock."
    );
    metrics::describe_gauge!(
        "refreshd_due_backlog",
        Unit::Count,
        "Subjects due now and not yet woken (zero when the engine keeps up)."
    );
    metrics::describe_gauge!(
        "refreshd_due_subjects",
        Unit::Count,
        "Subjects with a planned wake-up (devices and periodic fetches), counted in the store once after start."
    );
    metrics::describe_gauge!(
        "refreshd_sse_clients",
        Unit::Count,
        "Event streams (SSE) open now."
    );
}

/// Every series that exists from the start, at zero.
fn register() {
    for trigger in TRIGGERS {
        for counted in counted_values(trigger) {
            metrics::counter!("refreshd_refreshes_total", "trigger" => trigger.as_str(), "counted" => *counted).increment(0);
        }
    }
    for outcome in DELIVERY_OUTCOMES {
        metrics::counter!("refreshd_deliveries_total", "outcome" => outcome).increment(0);
    }
    for outcome in FETCH_OUTCOMES {
        metrics::counter!("refreshd_fetches_total", "outcome" => outcome.as_str()).increment(0);
    }
    for step in ENGINE_ERROR_STEPS {
        metrics::counter!("refreshd_engine_errors_total", "step" => step).increment(0);
    }
    metrics::counter!("refreshd_fetches_postponed_total").increment(0);
    metrics::counter!("refreshd_commit_conflicts_total").increment(0);
    metrics::counter!("refreshd_connections_refused_total").increment(0);
    metrics::counter!("refreshd_rate_limited_requests_total").increment(0);
    // A registered histogram is rendered with all its buckets, before any sample.
    for name in [
        "refreshd_fetch_seconds",
        "refreshd_store_commit_seconds",
        "refreshd_lateness_seconds",
    ] {
        let _ = metrics::histogram!(name);
    }
    metrics::gauge!("refreshd_due_backlog").set(0.0);
    metrics::gauge!("refreshd_due_subjects").set(0.0);
    metrics::gauge!("refreshd_sse_clients").set(0.0);
}
