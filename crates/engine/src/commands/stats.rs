//! Statistics a developer reads for its app and a provider for its forms: the last 24
//! hours in hourly buckets, read from counters the store keeps beside what they count
//! (a fetch's log entry, a delivery's outcome, a decided refresh), so reading them costs
//! a few thousand rows at most, whatever the number of users.

use super::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use refreshd_rules::Instant;
use refreshd_store::{KeyKind, StatRow, LATENCY_BOUNDS_MS, LATENESS_BOUNDS_MS, LATENESS_STAT};
use std::collections::BTreeMap;

const HOUR_MS: i64 = 3_600_000;
/// Hours a statistics answer covers, the current one included.
pub const STATS_HOURS: i64 = 24;

pub struct StatsCommands<'a> {
    pub(crate) engine: &'a Engine,
}

/// Counts of one hour (or of the whole window).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HourStats {
    /// The start of the hour; the window's start for totals.
    pub hour: Instant,
    /// Fetches or deliveries.
    pub total: i64,
    /// By outcome (fetch outcomes; `done`, `retry`, `failed` for deliveries).
    pub outcomes: BTreeMap<String, i64>,
    /// Share of `ok` fetches or `done` deliveries; `None` when there were none.
    pub success_rate: Option<f64>,
    /// Upper bounds of the latency buckets holding the median and the 99th
    /// percentile; `None` when nothing was measured.
    pub latency_p50_ms: Option<i64>,
    pub latency_p99_ms: Option<i64>,
    /// How long after they were due scheduled fetches were sent, as bucket bounds
    /// (apps only; a fetch-now is not scheduled).
    pub lateness_p50_ms: Option<i64>,
    pub lateness_p99_ms: Option<i64>,
    /// Decided refreshes by trigger (providers only).
    pub triggers: BTreeMap<String, i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppStats {
    pub appid: String,
    pub from: Instant,
    pub to: Instant,
    pub hours: Vec<HourStats>,
    pub totals: HourStats,
    /// Users with a token whose next fetch is planned, and those of them due now.
    pub eligible_users: i64,
    pub due_users: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProviderStats {
    pub provider: String,
    pub from: Instant,
    pub to: Instant,
    pub hours: Vec<HourStats>,
    pub totals: HourStats,
}

/// Accumulates rows of one hour (or all of them) into `HourStats`.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, i64>,
    latency: BTreeMap<i64, i64>,
    lateness: BTreeMap<i64, i64>,
    triggers: BTreeMap<String, i64>,
}

impl Tally {
    fn add(&mut self, row: &StatRow) {
        if row.what == LATENESS_STAT {
            *self.lateness.entry(row.bucket).or_default() += row.count;
            return;
        }
        match row.what.strip_prefix("trigger:") {
            Some(trigger) => *self.triggers.entry(trigger.to_string()).or_default() += row.count,
            None => {
                *self.outcomes.entry(row.what.clone()).or_default() += row.count;
                *self.latency.entry(row.bucket).or_default() += row.count;
            }
        }
    }

    fn finish(self, hour: Instant, success: &str) -> HourStats {
        let total: i64 = self.outcomes.values().sum();
        let succeeded = self.outcomes.get(success).copied().unwrap_or(0);
        HourStats {
            hour,
            total,
            success_rate: (total > 0).then(|| succeeded as f64 / total as f64),
            latency_p50_ms: percentile(&self.latency, &LATENCY_BOUNDS_MS, 0.50),
            latency_p99_ms: percentile(&self.latency, &LATENCY_BOUNDS_MS, 0.99),
            lateness_p50_ms: percentile(&self.lateness, &LATENESS_BOUNDS_MS, 0.50),
            lateness_p99_ms: percentile(&self.lateness, &LATENESS_BOUNDS_MS, 0.99),
            outcomes: self.outcomes,
            triggers: self.triggers,
        }
    }
}

/// The upper bound of the bucket holding quantile `q` (the last bound for the overflow
/// bucket, read as "at least").
fn percentile(buckets: &BTreeMap<i64, i64>, bounds: &[i64], q: f64) -> Option<i64> {
    let total: i64 = buckets.values().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (bucket, count) in buckets {
        seen += count;
        if seen >= rank {
            let index = (*bucket as usize).min(bounds.len() - 1);
            return Some(bounds[index]);
        }
    }
    bounds.last().copied()
}

/// Hourly stats for the window ending in the hour of `now`, oldest first, and totals.
fn by_hour(rows: &[StatRow], from_hour: i64, success: &str) -> (Vec<HourStats>, HourStats) {
    let mut hours: Vec<Tally> = (0..STATS_HOURS).map(|_| Tally::default()).collect();
    let mut all = Tally::default();
    for row in rows {
        let index = (row.hour - from_hour) / HOUR_MS;
        if (0..STATS_HOURS).contains(&index) {
            hours[index as usize].add(row);
            all.add(row);
        }
    }
    let hours = hours
        .into_iter()
        .enumerate()
        .map(|(i, tally)| {
            tally.finish(
                Instant::from_millis(from_hour + i as i64 * HOUR_MS),
                success,
            )
        })
        .collect();
    (hours, all.finish(Instant::from_millis(from_hour), success))
}

impl StatsCommands<'_> {
    /// The window: from the start of the hour 23 hours before the current one to now.
    fn window(&self) -> (i64, Instant) {
        let now = self.engine.now();
        let current_hour = now.as_millis().div_euclid(HOUR_MS) * HOUR_MS;
        (current_hour - (STATS_HOURS - 1) * HOUR_MS, now)
    }

    /// An app's fetches: its developer's view, or the operator's.
    pub async fn app(&self, caller: &Caller, appid: &str) -> Result<AppStats, EngineError> {
        match caller.kind {
            KeyKind::Operator => {}
            _ if caller.require(KeyKind::App)? == appid => {}
            _ => return Err(EngineError::NotFound("app_not_found")),
        }
        let store = &self.engine.store;
        if store.get_app(appid).await?.is_none() {
            return Err(EngineError::NotFound("app_not_found"));
        }
        let (from_hour, now) = self.window();
        let rows = store.fetch_stats(appid, from_hour).await?;
        let (hours, totals) = by_hour(&rows, from_hour, "ok");
        let (eligible_users, due_users) = store.pair_counts(appid, now.as_millis()).await?;
        Ok(AppStats {
            appid: appid.to_string(),
            from: Instant::from_millis(from_hour),
            to: now,
            hours,
            totals,
            eligible_users,
            due_users,
        })
    }

    /// A provider's deliveries and decided refreshes: its own view, or the operator's.
    pub async fn provider(
        &self,
        caller: &Caller,
        provider: &str,
    ) -> Result<ProviderStats, EngineError> {
        match caller.kind {
            KeyKind::Operator => {}
            _ if caller.require(KeyKind::Provider)? == provider => {}
            _ => return Err(EngineError::NotFound("not_found")),
        }
        let store = &self.engine.store;
        if store.get_provider(provider).await?.is_none() {
            return Err(EngineError::NotFound("not_found"));
        }
        let (from_hour, now) = self.window();
        let rows = store.provider_stats(provider, from_hour).await?;
        let (hours, totals) = by_hour(&rows, from_hour, "done");
        Ok(ProviderStats {
            provider: provider.to_string(),
            from: Instant::from_millis(from_hour),
            to: now,
            hours,
            totals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hour: i64, what: &str, bucket: i64, count: i64) -> StatRow {
        StatRow {
            hour,
            what: what.into(),
            bucket,
            count,
        }
    }

    #[test]
    fn percentiles_are_the_bounds_of_the_buckets_holding_them() {
        // 98 fast (bucket 0: ≤ 10 ms), 2 slow (bucket 5: ≤ 500 ms).
        let buckets = BTreeMap::from([(0, 98), (5, 2)]);
        let bounds = &LATENCY_BOUNDS_MS;
        assert_eq!(percentile(&buckets, bounds, 0.5), Some(bounds[0]));
        assert_eq!(percentile(&buckets, bounds, 0.99), Some(bounds[5]));
        assert_eq!(percentile(&BTreeMap::new(), bounds, 0.5), None);
        // The overflow bucket reads as the last bound.
        let over = BTreeMap::from([(bounds.len() as i64, 1)]);
        assert_eq!(percentile(&over, bounds, 0.5), bounds.last().copied());
    }

    #[test]
    fn rows_fall_into_their_hour_and_outside_rows_are_ignored() {
        let from = 10 * HOUR_MS;
        let rows = vec![
            row(from, "ok", 0, 3),
            row(from, "http_error", 2, 1),
            row(from + 23 * HOUR_MS, "ok", 1, 2),
            row(from + 24 * HOUR_MS, "ok", 1, 100),
            row(from - HOUR_MS, "ok", 1, 100),
            row(from + HOUR_MS, "trigger:interval", 0, 7),
            row(from, LATENESS_STAT, 3, 4),
        ];
        let (hours, totals) = by_hour(&rows, from, "ok");
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0].total, 4, "lateness is not an outcome");
        assert_eq!(hours[0].lateness_p99_ms, Some(LATENESS_BOUNDS_MS[3]));
        assert_eq!(hours[1].lateness_p50_ms, None);
        assert_eq!(hours[0].success_rate, Some(0.75));
        assert_eq!(hours[1].triggers["interval"], 7);
        assert_eq!(hours[1].total, 0, "triggers are not outcomes");
        assert_eq!(hours[1].success_rate, None);
        assert_eq!(hours[23].total, 2);
        assert_eq!(totals.total, 6);
        assert_eq!(totals.outcomes["ok"], 5);
        assert_eq!(hours[23].hour, Instant::from_millis(from + 23 * HOUR_MS));
    }
}
