//! Which timed triggers a form has, derived from its definition and its provider
//! (F6–F10, F16). Computed once when a form is added or re-planned (F23a).

use crate::form_config::FormDefinition;
use crate::time::{LocalTime, MINUTE_MS};
use std::sync::Arc;

/// The app market's interval applies from this provider API version on (F10).
pub const MARKET_OVERRIDE_MIN_API_VERSION: u32 = 11;

/// What refreshd knows about a form's provider that changes how its forms refresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProviderTraits {
    pub system_app: bool,
    /// Declared API version; `None` counts as below 11 (F10).
    pub api_version: Option<u32>,
    /// The app market's `updateDuration` override, in half-hours (F10).
    pub market_update_duration: Option<i64>,
}

/// A form's timed refreshes, small enough to copy into per-form state.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefreshPlan {
    /// Effective interval in half-hours (F10); 0 means no interval refresh.
    pub interval_half_hours: u16,
    /// Fixed daily times, distinct and ascending (F8, F15); empty means none.
    pub scheduled_times: Arc<[LocalTime]>,
    /// The form gets network-recovery refresh (F16: condition set and a system app).
    pub network_recovery: bool,
    /// Data proxy on: no interval and no next-refresh (F9).
    pub data_proxy: bool,
}

impl RefreshPlan {
    /// F6–F10 and F16 applied to a valid definition.
    pub fn new(definition: &FormDefinition, provider: ProviderTraits) -> Self {
        let duration = definition.update_duration;
        // F6: updateEnabled=false turns off interval and scheduled refresh.
        // F9: a data proxy turns off interval refresh.
        let interval_half_hours =
            if definition.update_enabled && !definition.data_proxy_enabled && duration > 0 {
                effective_update_duration(duration, provider)
            } else {
                0
            };
        // F7: a positive duration ignores the scheduled fields; F8 picks the list first.
        let scheduled_times: Arc<[LocalTime]> = if definition.update_enabled && duration == 0 {
            if !definition.multi_scheduled_update_time.is_empty() {
                definition.multi_scheduled_update_time.clone().into()
            } else {
                definition.scheduled_update_time.into_iter().collect()
            }
        } else {
            Arc::from([])
        };
        RefreshPlan {
            interval_half_hours,
            scheduled_times,
            network_recovery: definition.network_condition && provider.system_app,
            data_proxy: definition.data_proxy_enabled,
        }
    }

    /// The interval period in milliseconds, if the form has interval refresh.
    pub fn interval_period_ms(&self) -> Option<i64> {
        (self.interval_half_hours > 0).then(|| self.interval_half_hours as i64 * 30 * MINUTE_MS)
    }
}

/// F10: the market's interval wins when longer, for providers on API 11 or later, and
/// only when it is within 1..=336.
pub fn effective_update_duration(config_duration: u16, provider: ProviderTraits) -> u16 {
    let honours_market = provider
        .api_version
        .is_some_and(|v| v >= MARKET_OVERRIDE_MIN_API_VERSION);
    match provider.market_update_duration {
        Some(m) if honours_market && (1..=336).contains(&m) => config_duration.max(m as u16),
        _ => config_duration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(enabled: bool, duration: u16) -> FormDefinition {
        FormDefinition {
            name: "w".into(),
            update_enabled: enabled,
            update_duration: duration,
            scheduled_update_time: LocalTime::new(10, 30),
            multi_scheduled_update_time: vec![],
            network_condition: true,
            data_proxy_enabled: false,
        }
    }

    fn market(api: Option<u32>, m: Option<i64>) -> ProviderTraits {
        ProviderTraits {
            system_app: false,
            api_version: api,
            market_update_duration: m,
        }
    }

    #[test]
    fn f6_disabled_has_no_interval_and_no_schedule() {
        let plan = RefreshPlan::new(&definition(false, 2), ProviderTraits::default());
        assert_eq!(plan.interval_half_hours, 0);
        assert!(plan.scheduled_times.is_empty());
    }

    #[test]
    fn f7_positive_duration_ignores_schedule() {
        let plan = RefreshPlan::new(&definition(true, 2), ProviderTraits::default());
        assert_eq!(plan.interval_half_hours, 2);
        assert!(plan.scheduled_times.is_empty());
    }

    #[test]
    fn f8_list_wins_over_single_time() {
        let mut d = definition(true, 0);
        d.multi_scheduled_update_time = vec![LocalTime::new(11, 30).unwrap()];
        let plan = RefreshPlan::new(&d, ProviderTraits::default());
        assert_eq!(&*plan.scheduled_times, &[LocalTime::new(11, 30).unwrap()]);
        let single = RefreshPlan::new(&definition(true, 0), ProviderTraits::default());
        assert_eq!(&*single.scheduled_times, &[LocalTime::new(10, 30).unwrap()]);
    }

    #[test]
    fn f9_proxy_turns_off_interval() {
        let mut d = definition(true, 2);
        d.data_proxy_enabled = true;
        let plan = RefreshPlan::new(&d, ProviderTraits::default());
        assert_eq!(plan.interval_half_hours, 0);
        assert!(plan.scheduled_times.is_empty());
        assert!(plan.data_proxy);
    }

    #[test]
    fn f10_market_override_longer_wins_from_api_11() {
        assert_eq!(effective_update_duration(1, market(Some(11), Some(4))), 4);
        assert_eq!(effective_update_duration(6, market(Some(11), Some(4))), 6);
        assert_eq!(effective_update_duration(1, market(Some(10), Some(4))), 1);
        assert_eq!(effective_update_duration(1, market(None, Some(4))), 1);
        assert_eq!(effective_update_duration(1, market(Some(12), Some(0))), 1);
        assert_eq!(effective_update_duration(1, market(Some(12), Some(337))), 1);
    }

    #[test]
    fn f10_market_never_enables_interval_on_its_own() {
        let plan = RefreshPlan::new(&definition(true, 0), market(Some(11), Some(4)));
        assert_eq!(plan.interval_half_hours, 0);
    }

    #[test]
    fn f16_network_needs_system_app() {
        let d = definition(false, 0);
        assert!(!RefreshPlan::new(&d, ProviderTraits::default()).network_recovery);
        let system = ProviderTraits {
            system_app: true,
            ..ProviderTraits::default()
        };
        assert!(RefreshPlan::new(&d, system).network_recovery);
    }
}
