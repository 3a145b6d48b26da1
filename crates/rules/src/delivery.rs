//! Retrying a refresh delivery to a provider (api.md: "retried under the same delivery id
//! after 5 s, 30 s and 2 min, then given up"). The engine persists the instant this
//! returns, so a restart keeps the schedule.

use crate::time::Instant;

/// Delays after the first, second and third failed attempt.
pub const DELIVERY_RETRY_DELAYS_MS: [i64; 3] = [5_000, 30_000, 120_000];

/// When to try a delivery again after `failed_attempts` attempts have failed, the last
/// at `now`; `None` means give up.
pub fn next_delivery_attempt(failed_attempts: i64, now: Instant) -> Option<Instant> {
    let index = usize::try_from(failed_attempts.checked_sub(1)?).ok()?;
    DELIVERY_RETRY_DELAYS_MS
        .get(index)
        .map(|delay| now.plus_millis(*delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_after_5s_30s_2min_then_gives_up() {
        let now = Instant::from_millis(1_000_000);
        let delays: Vec<Option<i64>> = (0..=5)
            .map(|n| next_delivery_attempt(n, now).map(|at| at.millis_since(now)))
            .collect();
        assert_eq!(
            delays,
            [None, Some(5_000), Some(30_000), Some(120_000), None, None]
        );
    }
}
