//! The fetches this process is carrying out now, by pair and by app.
//!
//! By pair: a due pair whose fetch is still running here is not ordered again (a
//! fetch-now may run beside a scheduled fetch, so it is a count, not a flag). By app:
//! one app's fetches may take at most [`MAX_FETCHES_PER_APP`] of the node's fetch
//! slots, so an app whose origin is slow cannot hold every slot and delay the others.

use std::collections::HashMap;

/// One app's fetches running on this node at once, at most; its further due pairs keep
/// their claim until it lapses and are ordered then.
pub const MAX_FETCHES_PER_APP: usize = crate::run::MAX_FETCHES_IN_FLIGHT / 4;

#[derive(Debug, Default)]
pub(crate) struct RunningFetches {
    per_pair: HashMap<(String, String), usize>,
    per_app: HashMap<String, usize>,
}

impl RunningFetches {
    pub(crate) fn start(&mut self, appid: &str, user_id: &str) {
        *self
            .per_pair
            .entry((appid.to_string(), user_id.to_string()))
            .or_insert(0) += 1;
        *self.per_app.entry(appid.to_string()).or_insert(0) += 1;
    }

    pub(crate) fn finish(&mut self, appid: &str, user_id: &str) {
        let key = (appid.to_string(), user_id.to_string());
        if let Some(n) = self.per_pair.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_pair.remove(&key);
            }
        }
        if let Some(n) = self.per_app.get_mut(appid) {
            *n -= 1;
            if *n == 0 {
                self.per_app.remove(appid);
            }
        }
    }

    pub(crate) fn is_running(&self, appid: &str, user_id: &str) -> bool {
        self.per_pair
            .contains_key(&(appid.to_string(), user_id.to_string()))
    }

    /// Whether the app already runs as many fetches as it may.
    pub(crate) fn app_is_full(&self, appid: &str) -> bool {
        self.per_app
            .get(appid)
            .is_some_and(|n| *n >= MAX_FETCHES_PER_APP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_pair_and_app_and_forgets_finished_ones() {
        let mut running = RunningFetches::default();
        running.start("wx1", "u1");
        running.start("wx1", "u1");
        assert!(running.is_running("wx1", "u1"));
        running.finish("wx1", "u1");
        assert!(running.is_running("wx1", "u1"), "a second fetch still runs");
        running.finish("wx1", "u1");
        assert!(!running.is_running("wx1", "u1"));
        assert!(running.per_app.is_empty() && running.per_pair.is_empty());
        for i in 0..MAX_FETCHES_PER_APP {
            assert!(!running.app_is_full("wx1"));
            running.start("wx1", &format!("u{i}"));
        }
        assert!(running.app_is_full("wx1"));
        assert!(!running.app_is_full("wx2"), "another app has its own share");
    }
}
