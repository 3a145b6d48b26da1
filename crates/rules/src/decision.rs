//! What the rules decide: refreshes, deferrals and skips, each traceable to its rule.

use crate::time::Instant;
use std::fmt;

/// Identifies a form instance. The caller chooses it; an id that is removed and added
/// again names a new instance (F22).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FormId(pub u64);

/// Identifies a widget provider (the app that owns a form). The caller interns names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ProviderId(pub u32);

/// Why a form is refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// F12: the shared tick found the form due.
    Interval,
    /// F16: the device came back online after a long enough outage.
    Network,
    /// F14: the provider's next-refresh time arrived.
    Next,
    /// F18: the first midnight after a `quota_exhausted` rejection.
    QuotaReset,
    /// F15: a fixed daily time arrived.
    Scheduled,
    /// F21: a hidden form with deferred triggers was shown.
    Visible,
}

impl Trigger {
    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::Interval => "interval",
            Trigger::Network => "network",
            Trigger::Next => "next",
            Trigger::QuotaReset => "quota_reset",
            Trigger::Scheduled => "scheduled",
            Trigger::Visible => "visible",
        }
    }

    /// Interval and next-refresh triggers use the daily quota (F17).
    pub const fn is_counted(self) -> bool {
        matches!(self, Trigger::Interval | Trigger::Next)
    }

    /// The rule that produces this trigger.
    pub const fn rule(self) -> &'static str {
        match self {
            Trigger::Interval => "F12",
            Trigger::Network => "F16",
            Trigger::Next => "F14",
            Trigger::QuotaReset => "F18",
            Trigger::Scheduled => "F15",
            Trigger::Visible => "F21",
        }
    }

    const ALL: [Trigger; 6] = [
        Trigger::Interval,
        Trigger::Network,
        Trigger::Next,
        Trigger::QuotaReset,
        Trigger::Scheduled,
        Trigger::Visible,
    ];
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of trigger kinds in one byte; iterates in the order of their names (F20's
/// deferred kinds coalesce, and are reported sorted).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TriggerSet(u8);

impl TriggerSet {
    pub const EMPTY: TriggerSet = TriggerSet(0);

    pub fn insert(&mut self, trigger: Trigger) {
        self.0 |= 1 << trigger as u8;
    }
    pub fn contains(self, trigger: Trigger) -> bool {
        self.0 & (1 << trigger as u8) != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// True when any kind in the set uses the quota (F21: the `visible` catch-up counts).
    pub fn any_counted(self) -> bool {
        self.iter().any(Trigger::is_counted)
    }
    pub fn iter(self) -> impl Iterator<Item = Trigger> {
        Trigger::ALL.into_iter().filter(move |t| self.contains(*t))
    }
}

impl fmt::Debug for TriggerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Trigger> for TriggerSet {
    fn from_iter<I: IntoIterator<Item = Trigger>>(iter: I) -> Self {
        let mut set = TriggerSet::EMPTY;
        for t in iter {
            set.insert(t);
        }
        set
    }
}

/// Why a due trigger was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// F12: the form has a next-refresh pending, which takes precedence.
    NextRefreshPending,
    /// F12, F14: the form used its 50 counted refreshes today.
    QuotaExhausted,
}

impl SkipReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::NextRefreshPending => "next_refresh_pending",
            SkipReason::QuotaExhausted => "quota_exhausted",
        }
    }
}

/// One decision about one form at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormDecision {
    /// Ask the provider for new data now (F20). `deferred` is non-empty only for
    /// `Trigger::Visible` (F21).
    Refresh {
        form: FormId,
        trigger: Trigger,
        counted: bool,
        deferred: TriggerSet,
    },
    /// The form is hidden: the trigger is recorded and delivered on `show` (F20).
    Deferred { form: FormId, kind: Trigger },
    /// The trigger was due but not delivered (F12, F14).
    Skipped {
        form: FormId,
        kind: Trigger,
        reason: SkipReason,
    },
}

impl FormDecision {
    pub fn form(&self) -> FormId {
        match *self {
            FormDecision::Refresh { form, .. }
            | FormDecision::Deferred { form, .. }
            | FormDecision::Skipped { form, .. } => form,
        }
    }

    /// The rule that made this decision, for explanations.
    pub fn rule(&self) -> &'static str {
        match *self {
            FormDecision::Refresh { trigger, .. } => trigger.rule(),
            FormDecision::Deferred { .. } => "F20",
            FormDecision::Skipped {
                reason: SkipReason::NextRefreshPending,
                ..
            } => "F12",
            FormDecision::Skipped {
                kind: Trigger::Next,
                ..
            } => "F14",
            FormDecision::Skipped { .. } => "F17",
        }
    }
}

/// A decision in words, as the explainers (CLI and API) and decision notes show it.
impl fmt::Display for FormDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FormDecision::Refresh {
                trigger,
                counted,
                deferred,
                ..
            } => {
                write!(f, "refresh {trigger}")?;
                if counted {
                    f.write_str(" (counted)")?;
                }
                if !deferred.is_empty() {
                    let kinds: Vec<&str> = deferred.iter().map(Trigger::as_str).collect();
                    write!(f, " for deferred {}", kinds.join(", "))?;
                }
                Ok(())
            }
            FormDecision::Deferred { kind, .. } => write!(f, "deferred {kind} while hidden"),
            FormDecision::Skipped { kind, reason, .. } => {
                write!(f, "skipped {kind}: {}", reason.as_str())
            }
        }
    }
}

/// A decision with the instant it was made at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timed<T> {
    pub at: Instant,
    pub decision: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f20_trigger_set_iterates_sorted_by_name() {
        let set: TriggerSet = [Trigger::Scheduled, Trigger::Interval, Trigger::Next]
            .into_iter()
            .collect();
        let names: Vec<_> = set.iter().map(Trigger::as_str).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(set.any_counted());
        assert!(!TriggerSet::from_iter([Trigger::Scheduled, Trigger::Network]).any_counted());
    }

    #[test]
    fn f21_decisions_read_as_words() {
        let form = FormId(1);
        let visible = FormDecision::Refresh {
            form,
            trigger: Trigger::Visible,
            counted: true,
            deferred: [Trigger::Next, Trigger::Interval].into_iter().collect(),
        };
        assert_eq!(
            visible.to_string(),
            "refresh visible (counted) for deferred interval, next"
        );
        let deferred = FormDecision::Deferred {
            form,
            kind: Trigger::Scheduled,
        };
        assert_eq!(deferred.to_string(), "deferred scheduled while hidden");
        let skipped = FormDecision::Skipped {
            form,
            kind: Trigger::Interval,
            reason: SkipReason::QuotaExhausted,
        };
        assert_eq!(skipped.to_string(), "skipped interval: quota_exhausted");
    }
}
