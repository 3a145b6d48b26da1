//! The in-memory due-index: every subject with a planned wake-up, earliest first. It is
//! a cache of the store's `next_wake_at` columns and is rebuilt from them at start.

use refreshd_store::SubjectKey;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct DueIndex {
    by_time: BTreeSet<(i64, SubjectKey)>,
    planned: HashMap<SubjectKey, i64>,
}

impl DueIndex {
    /// Plans `subject` at `at`, or removes it with `None`.
    pub fn set(&mut self, subject: SubjectKey, at: Option<i64>) {
        if let Some(old) = self.planned.remove(&subject) {
            self.by_time.remove(&(old, subject.clone()));
        }
        if let Some(at) = at {
            self.by_time.insert((at, subject.clone()));
            self.planned.insert(subject, at);
        }
    }

    /// The earliest planned instant.
    pub fn earliest(&self) -> Option<i64> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns every subject due at or before `now`, earliest first.
    pub fn take_due(&mut self, now: i64) -> Vec<(i64, SubjectKey)> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            let (at, subject) = self.by_time.pop_first().expect("checked non-empty");
            self.planned.remove(&subject);
            due.push((at, subject));
        }
        due
    }

    pub fn len(&self) -> usize {
        self.planned.len()
    }

    pub fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replanning_moves_a_subject_and_due_ones_come_out_in_order() {
        let mut index = DueIndex::default();
        let a = SubjectKey::Device("a".into());
        let b = SubjectKey::Device("b".into());
        index.set(a.clone(), Some(30));
        index.set(b.clone(), Some(10));
        index.set(a.clone(), Some(5));
        assert_eq!(index.len(), 2);
        assert_eq!(index.earliest(), Some(5));
        assert_eq!(index.take_due(20), vec![(5, a), (10, b.clone())]);
        assert!(index.is_empty());
        index.set(b.clone(), Some(1));
        index.set(b, None);
        assert_eq!(index.earliest(), None);
    }
}
