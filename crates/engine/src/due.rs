//! When the wake loop must look at the store next.
//!
//! The store is the due-index: every subject's `next_wake_at` is an indexed column, and
//! claiming due work is one range scan on it (`Store::claim_due`). The engine keeps
//! nothing per subject in memory, only the earliest instant it knows something may be
//! due: the store's earliest planned wake-up, read after each pass of the wake loop,
//! lowered by every plan committed since. That instant may be early (a subject planned
//! earlier and re-planned later since), which costs one look that claims nothing and
//! reads the store's earliest again; it is never late, because every plan lowers it
//! before the loop sleeps again. Memory stays constant however many subjects a node
//! holds, and a start reads one row, not the whole index.

/// The earliest instant (UTC ms) worth a look at the store; `None` when nothing is
/// planned as far as this node knows.
#[derive(Debug, Default)]
pub struct DueHint {
    earliest: Option<i64>,
}

impl DueHint {
    /// A subject was planned at `at`.
    pub fn planned(&mut self, at: i64) {
        self.earliest = Some(self.earliest.map_or(at, |e| e.min(at)));
    }

    /// The earliest known instant.
    pub fn earliest(&self) -> Option<i64> {
        self.earliest
    }

    /// Forgets the hint before the store's earliest is read; plans committed while it
    /// is read lower the new hint again (see [`DueHint::merge_store`]).
    pub fn reset(&mut self) {
        self.earliest = None;
    }

    /// Adds the store's earliest planned wake-up, read after [`DueHint::reset`].
    pub fn merge_store(&mut self, store_earliest: Option<i64>) {
        if let Some(at) = store_earliest {
            self.planned(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_the_earliest_plan_and_a_reset_reads_the_store_again() {
        let mut hint = DueHint::default();
        assert_eq!(hint.earliest(), None);
        hint.planned(30);
        hint.planned(10);
        hint.planned(20);
        assert_eq!(hint.earliest(), Some(10));
        hint.reset();
        // A plan committed while the store's earliest was being read still counts.
        hint.planned(25);
        hint.merge_store(Some(40));
        assert_eq!(hint.earliest(), Some(25));
        hint.reset();
        hint.merge_store(None);
        assert_eq!(hint.earliest(), None);
    }
}
