//! Statistics: an app's fetches for its developer, a provider's deliveries and decided
//! refreshes for the provider, both for the operator; the last 24 hours by hour.

use crate::error::ApiResult;
use crate::extract::Path;
use crate::openapi::DateTime;
use crate::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use refreshd_engine::commands::HourStats;
use refreshd_engine::wire::rfc3339;
use refreshd_engine::Caller;
use serde::Serialize;
use std::collections::BTreeMap;

/// Percentiles of a latency, as the upper bounds of the buckets that hold them.
#[derive(Serialize, schemars::JsonSchema)]
pub struct LatencyView {
    p50: Option<i64>,
    p99: Option<i64>,
}

/// An app's fetches in one hour (or in the whole window, for `totals`).
#[derive(Serialize, schemars::JsonSchema)]
pub struct FetchHourView {
    /// The start of the hour (RFC 3339).
    #[schemars(with = "Option<DateTime>")]
    hour: Option<String>,
    fetches: i64,
    /// By outcome (`ok`, `not_modified`, `http_error`, `timeout`, …).
    outcomes: BTreeMap<String, i64>,
    /// Share of `ok` fetches, 0 to 1; `null` without fetches.
    success_rate: Option<f64>,
    latency_ms: LatencyView,
    /// How long after they were due scheduled fetches were sent (fetch-now is not
    /// scheduled), as the upper bounds of the buckets holding p50 and p99.
    lateness_ms: LatencyView,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct UsersView {
    /// Users with a token whose next fetch is planned.
    eligible: i64,
    /// Those of them due now.
    due: i64,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct AppStatsView {
    appid: String,
    #[schemars(with = "Option<DateTime>")]
    from: Option<String>,
    #[schemars(with = "Option<DateTime>")]
    to: Option<String>,
    /// 24 hours, oldest first; the last one is the current hour.
    hours: Vec<FetchHourView>,
    totals: FetchHourView,
    users: UsersView,
}

/// A provider's deliveries and decided refreshes in one hour (or in the whole window).
#[derive(Serialize, schemars::JsonSchema)]
pub struct DeliveryHourView {
    #[schemars(with = "Option<DateTime>")]
    hour: Option<String>,
    /// Delivery attempts.
    deliveries: i64,
    /// Attempts by outcome: `done`, `retry` (failed, to be retried), `failed` (given up).
    outcomes: BTreeMap<String, i64>,
    /// Share of `done` attempts, 0 to 1; `null` without attempts.
    success_rate: Option<f64>,
    latency_ms: LatencyView,
    /// Refreshes decided, by trigger.
    triggers: BTreeMap<String, i64>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ProviderStatsView {
    provider: String,
    #[schemars(with = "Option<DateTime>")]
    from: Option<String>,
    #[schemars(with = "Option<DateTime>")]
    to: Option<String>,
    hours: Vec<DeliveryHourView>,
    totals: DeliveryHourView,
}

fn latency(hour: &HourStats) -> LatencyView {
    LatencyView {
        p50: hour.latency_p50_ms,
        p99: hour.latency_p99_ms,
    }
}

fn fetch_hour(hour: HourStats) -> FetchHourView {
    FetchHourView {
        hour: rfc3339(hour.hour),
        fetches: hour.total,
        success_rate: hour.success_rate,
        latency_ms: latency(&hour),
        lateness_ms: LatencyView {
            p50: hour.lateness_p50_ms,
            p99: hour.lateness_p99_ms,
        },
        outcomes: hour.outcomes,
    }
}

fn delivery_hour(hour: HourStats) -> DeliveryHourView {
    DeliveryHourView {
        hour: rfc3339(hour.hour),
        deliveries: hour.total,
        success_rate: hour.success_rate,
        latency_ms: latency(&hour),
        outcomes: hour.outcomes,
        triggers: hour.triggers,
    }
}

pub async fn app_stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
) -> ApiResult<Json<AppStatsView>> {
    let stats = state.engine.stats().app(&caller, &appid).await?;
    Ok(Json(AppStatsView {
        appid: stats.appid,
        from: rfc3339(stats.from),
        to: rfc3339(stats.to),
        hours: stats.hours.into_iter().map(fetch_hour).collect(),
        totals: fetch_hour(stats.totals),
        users: UsersView {
            eligible: stats.eligible_users,
            due: stats.due_users,
        },
    }))
}

pub async fn provider_stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
) -> ApiResult<Json<ProviderStatsView>> {
    let stats = state.engine.stats().provider(&caller, &provider).await?;
    Ok(Json(ProviderStatsView {
        provider: stats.provider,
        from: rfc3339(stats.from),
        to: rfc3339(stats.to),
        hours: stats.hours.into_iter().map(delivery_hour).collect(),
        totals: delivery_hour(stats.totals),
    }))
}
