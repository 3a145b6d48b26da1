//! Widget refresh rules (F11–F24) and catch-up (T5), one test per behaviour, through one
//! harness that drives a `Device` the way the engine does: wake at each wake-up it asks
//! for, apply inputs at their instants.

use jiff::tz::TimeZone;
use refreshd_rules::device::{DeviceSettings, NewForm, DAILY_QUOTA};
use refreshd_rules::form_config::FormDefinition;
use refreshd_rules::{
    Device, DeviceInput, FormDecision, FormId, Instant, LocalTime, ProviderId, ProviderTraits,
    RefreshPlan, RuleError, SkipReason, Trigger,
};

const PROVIDER: ProviderId = ProviderId(1);

fn at(text: &str) -> Instant {
    Instant::from_timestamp(text.parse().expect("RFC 3339 with offset"))
}

fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

fn definition() -> FormDefinition {
    FormDefinition {
        name: "w".into(),
        update_enabled: true,
        update_duration: 0,
        scheduled_update_time: None,
        multi_scheduled_update_time: vec![],
        network_condition: false,
        data_proxy_enabled: false,
    }
}

fn interval(half_hours: u16) -> RefreshPlan {
    RefreshPlan::new(
        &FormDefinition {
            update_duration: half_hours,
            ..definition()
        },
        ProviderTraits::default(),
    )
}

fn scheduled(times: &[(u8, u8)]) -> RefreshPlan {
    RefreshPlan::new(
        &FormDefinition {
            multi_scheduled_update_time: times
                .iter()
                .map(|(h, m)| LocalTime::new(*h, *m).unwrap())
                .collect(),
            ..definition()
        },
        ProviderTraits::default(),
    )
}

fn manual() -> RefreshPlan {
    RefreshPlan::new(
        &FormDefinition {
            update_enabled: false,
            ..definition()
        },
        ProviderTraits::default(),
    )
}

fn network(system_app: bool) -> RefreshPlan {
    RefreshPlan::new(
        &FormDefinition {
            update_enabled: false,
            network_condition: true,
            ..definition()
        },
        ProviderTraits {
            system_app,
            ..ProviderTraits::default()
        },
    )
}

/// A device plus everything it decided, with the instant of each decision.
struct Harness {
    device: Device,
    log: Vec<(Instant, FormDecision)>,
}

impl Harness {
    fn new(zone_name: &str, start: &str) -> Self {
        Self::with_settings(zone_name, start, DeviceSettings::default())
    }

    fn with_settings(zone_name: &str, start: &str, settings: DeviceSettings) -> Self {
        Harness {
            device: Device::new(zone(zone_name), settings, at(start)),
            log: Vec::new(),
        }
    }

    /// Wakes the device at every wake-up it asks for up to and including `until`.
    fn run_until(&mut self, until: &str) {
        let until = at(until);
        while let Some(next) = self.device.next_wakeup().filter(|n| *n <= until) {
            self.wake_at(next);
        }
    }

    /// Wakes the device once at `now`, as after downtime (T5).
    fn wake_at(&mut self, now: Instant) {
        let mut decisions = Vec::new();
        self.device.wake(now, &mut decisions);
        self.log.extend(decisions.into_iter().map(|d| (now, d)));
    }

    fn input(&mut self, when: &str, input: DeviceInput) -> Result<(), RuleError> {
        self.run_until(when);
        let now = at(when);
        let mut decisions = Vec::new();
        let result = self.device.apply(now, input, &mut decisions);
        self.log.extend(decisions.into_iter().map(|d| (now, d)));
        result.map(|_| ())
    }

    fn add(&mut self, when: &str, id: u64, plan: RefreshPlan) {
        self.add_with(when, id, plan, false, false);
    }

    fn add_with(&mut self, when: &str, id: u64, plan: RefreshPlan, hidden: bool, system_app: bool) {
        self.input(
            when,
            DeviceInput::AddForm(NewForm {
                id: FormId(id),
                provider: PROVIDER,
                system_app,
                plan: Some(plan),
                hidden,
            }),
        )
        .expect("add accepted");
    }

    /// Delivered refreshes as (instant, form, trigger).
    fn refreshes(&self) -> Vec<(Instant, u64, Trigger)> {
        self.log
            .iter()
            .filter_map(|(when, d)| match d {
                FormDecision::Refresh { form, trigger, .. } => Some((*when, form.0, *trigger)),
                _ => None,
            })
            .collect()
    }

    fn refresh_times(&self, form: u64) -> Vec<Instant> {
        self.refreshes()
            .into_iter()
            .filter(|(_, f, _)| *f == form)
            .map(|(w, _, _)| w)
            .collect()
    }

    /// Spends the form's daily quota on next-refreshes 5 minutes apart from `from`, each
    /// delivered; returns the instant just after the last one (F17).
    fn use_up_quota(&mut self, form: u64, from: &str) -> Instant {
        let mut t = at(from);
        for _ in 0..DAILY_QUOTA {
            self.input(&t.to_string(), next_refresh(form, 5)).unwrap();
            t = t.plus_minutes(5);
        }
        t
    }

    fn take_log(&mut self) -> Vec<(Instant, FormDecision)> {
        std::mem::take(&mut self.log)
    }
}

fn next_refresh(form: u64, minutes: i64) -> DeviceInput {
    DeviceInput::SetNextRefresh {
        form: FormId(form),
        caller: PROVIDER,
        minutes,
    }
}

#[test]
fn f11_f12_shared_tick_doc_example() {
    let mut h = Harness::new("Asia/Shanghai", "2026-03-01T03:00:00+08:00");
    h.add("2026-03-01T03:20:00+08:00", 1, interval(1));
    h.add("2026-03-01T03:40:00+08:00", 2, interval(1));
    h.run_until("2026-03-01T04:20:00+08:00");
    assert_eq!(
        h.refreshes(),
        vec![
            (at("2026-03-01T03:50:00+08:00"), 1, Trigger::Interval),
            (at("2026-03-01T04:20:00+08:00"), 1, Trigger::Interval),
            (at("2026-03-01T04:20:00+08:00"), 2, Trigger::Interval),
        ]
    );
}

#[test]
fn f11_grid_dropped_with_last_interval_form_and_restarted_on_next_add() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, interval(1));
    h.input("2026-03-01T00:10:00Z", DeviceInput::RemoveForm(FormId(1)))
        .unwrap();
    h.add("2026-03-01T00:17:00Z", 2, interval(1));
    h.run_until("2026-03-01T01:30:00Z");
    // The new grid is anchored at 00:17, not at 00:00.
    assert_eq!(
        h.refresh_times(2),
        vec![at("2026-03-01T00:47:00Z"), at("2026-03-01T01:17:00Z")]
    );
}

#[test]
fn f12_short_tick_finds_form_due_within_30s_slack() {
    let settings = DeviceSettings::new(7, 512).unwrap();
    let mut h = Harness::with_settings("UTC", "2026-03-01T00:00:00Z", settings);
    h.add("2026-03-01T00:00:00Z", 1, interval(1));
    h.run_until("2026-03-01T01:15:00Z");
    // Ticks every 7 min; due when 29.5 min have passed: 00:35, then 01:10.
    assert_eq!(
        h.refresh_times(1),
        vec![at("2026-03-01T00:35:00Z"), at("2026-03-01T01:10:00Z")]
    );
}

#[test]
fn f12_pending_next_refresh_skips_interval_and_is_reported_each_tick() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, interval(1));
    h.input("2026-03-01T00:20:00Z", next_refresh(1, 60))
        .unwrap();
    h.run_until("2026-03-01T01:30:00Z");
    let skips: Vec<Instant> = h
        .log
        .iter()
        .filter(|(_, d)| {
            matches!(
                d,
                FormDecision::Skipped {
                    kind: Trigger::Interval,
                    reason: SkipReason::NextRefreshPending,
                    ..
                }
            )
        })
        .map(|(w, _)| *w)
        .collect();
    assert_eq!(
        skips,
        vec![at("2026-03-01T00:30:00Z"), at("2026-03-01T01:00:00Z")]
    );
    // The tick at 01:20's instant? No: the next-refresh fires at 01:20, then interval
    // resumes at 01:30 because `last` never moved.
    assert_eq!(
        h.refreshes(),
        vec![
            (at("2026-03-01T01:20:00Z"), 1, Trigger::Next),
            (at("2026-03-01T01:30:00Z"), 1, Trigger::Interval),
        ]
    );
}

#[test]
fn f13_errors_in_order() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    let proxy = RefreshPlan::new(
        &FormDefinition {
            data_proxy_enabled: true,
            ..definition()
        },
        ProviderTraits::default(),
    );
    h.add("2026-03-01T00:00:00Z", 1, proxy);
    let t = "2026-03-01T00:01:00Z";
    assert_eq!(
        h.input(t, next_refresh(9, 10)),
        Err(RuleError::FormNotFound)
    );
    let other = DeviceInput::SetNextRefresh {
        form: FormId(1),
        caller: ProviderId(2),
        minutes: 0,
    };
    assert_eq!(h.input(t, other), Err(RuleError::NotFormOwner));
    assert_eq!(h.input(t, next_refresh(1, 0)), Err(RuleError::ProxyEnabled));
    h.add(t, 2, manual());
    for bad in [-1, 0, 4, 10_081] {
        assert_eq!(
            h.input(t, next_refresh(2, bad)),
            Err(RuleError::InvalidNextRefresh { min: 5 }),
            "{bad}"
        );
    }
    assert_eq!(h.input(t, next_refresh(2, 10_080)), Ok(()));
}

#[test]
fn f13_system_apps_may_use_one_minute() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add_with("2026-03-01T00:00:00Z", 1, manual(), false, true);
    assert_eq!(h.input("2026-03-01T00:00:00Z", next_refresh(1, 1)), Ok(()));
    assert_eq!(
        h.input("2026-03-01T00:00:00Z", next_refresh(1, 0)),
        Err(RuleError::InvalidNextRefresh { min: 1 })
    );
    h.run_until("2026-03-01T00:05:00Z");
    assert_eq!(h.refresh_times(1), vec![at("2026-03-01T00:01:00Z")]);
}

#[test]
fn f14_later_call_replaces_pending_next_refresh() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, manual());
    h.input("2026-03-01T00:00:00Z", next_refresh(1, 30))
        .unwrap();
    h.input("2026-03-01T00:10:00Z", next_refresh(1, 5)).unwrap();
    h.run_until("2026-03-01T02:00:00Z");
    assert_eq!(h.refresh_times(1), vec![at("2026-03-01T00:15:00Z")]);
}

#[test]
fn f15_scheduled_fires_daily_after_add_and_is_not_counted() {
    let mut h = Harness::new("Asia/Shanghai", "2026-03-01T00:00:00+08:00");
    h.add(
        "2026-03-01T10:30:00+08:00",
        1,
        scheduled(&[(10, 30), (16, 0)]),
    );
    h.run_until("2026-03-02T12:00:00+08:00");
    assert_eq!(
        h.refresh_times(1),
        vec![
            at("2026-03-01T16:00:00+08:00"),
            at("2026-03-02T10:30:00+08:00")
        ],
        "10:30 on the add instant is not strictly after the add"
    );
    assert!(h
        .log
        .iter()
        .all(|(_, d)| matches!(d, FormDecision::Refresh { counted: false, .. })));
}

#[test]
fn f15_t2_dst_gap_new_york_moves_forward_and_same_instant_fires_once() {
    let mut h = Harness::new("America/New_York", "2026-03-07T00:00:00-05:00");
    // 02:30 does not exist on 2026-03-08 and resolves to 03:30, where 03:30 also falls.
    h.add(
        "2026-03-07T00:00:00-05:00",
        1,
        scheduled(&[(2, 30), (3, 30)]),
    );
    h.run_until("2026-03-09T04:00:00-04:00");
    assert_eq!(
        h.refresh_times(1),
        vec![
            at("2026-03-07T02:30:00-05:00"),
            at("2026-03-07T03:30:00-05:00"),
            at("2026-03-08T03:30:00-04:00"),
            at("2026-03-09T02:30:00-04:00"),
            at("2026-03-09T03:30:00-04:00"),
        ]
    );
}

#[test]
fn f15_t2_dst_fold_berlin_fires_once_at_earlier_instant() {
    let mut h = Harness::new("Europe/Berlin", "2026-10-24T12:00:00+02:00");
    h.add("2026-10-24T12:00:00+02:00", 1, scheduled(&[(2, 30)]));
    h.run_until("2026-10-26T12:00:00+01:00");
    assert_eq!(
        h.refresh_times(1),
        vec![
            at("2026-10-25T02:30:00+02:00"),
            at("2026-10-26T02:30:00+01:00")
        ]
    );
}

#[test]
fn f15_lord_howe_half_hour_shift() {
    let mut h = Harness::new("Australia/Lord_Howe", "2026-10-03T12:00:00+10:30");
    h.add(
        "2026-10-03T12:00:00+10:30",
        1,
        scheduled(&[(2, 15), (10, 0)]),
    );
    h.run_until("2026-10-05T12:00:00+11:00");
    assert_eq!(
        h.refresh_times(1),
        vec![
            at("2026-10-04T02:45:00+11:00"), // 02:15 is in the 30-minute gap
            at("2026-10-04T10:00:00+11:00"),
            at("2026-10-05T02:15:00+11:00"),
            at("2026-10-05T10:00:00+11:00"),
        ]
    );
}

#[test]
fn f16_network_refresh_after_ten_minute_outage_for_system_apps_only() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add_with("2026-03-01T00:00:00Z", 1, network(true), false, true);
    h.add_with("2026-03-01T00:00:00Z", 2, network(false), false, false);
    h.input("2026-03-01T01:00:00Z", DeviceInput::Offline)
        .unwrap();
    h.input("2026-03-01T01:05:00Z", DeviceInput::Offline)
        .unwrap(); // repeat ignored
    h.input("2026-03-01T01:09:59Z", DeviceInput::Online)
        .unwrap(); // too short
    h.input("2026-03-01T02:00:00Z", DeviceInput::Offline)
        .unwrap();
    h.input("2026-03-01T02:10:00Z", DeviceInput::Online)
        .unwrap();
    h.input("2026-03-01T02:11:00Z", DeviceInput::Online)
        .unwrap(); // repeat: nothing
    assert_eq!(
        h.refreshes(),
        vec![(at("2026-03-01T02:10:00Z"), 1, Trigger::Network)]
    );
}

#[test]
fn f16_form_added_during_outage_counts() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.input("2026-03-01T01:00:00Z", DeviceInput::Offline)
        .unwrap();
    h.add_with("2026-03-01T01:05:00Z", 1, network(true), false, true);
    h.input("2026-03-01T01:30:00Z", DeviceInput::Online)
        .unwrap();
    assert_eq!(h.refresh_times(1), vec![at("2026-03-01T01:30:00Z")]);
}

#[test]
fn f17_at_most_50_counted_per_day_then_skipped_and_reset_at_local_midnight() {
    let mut h = Harness::new("Asia/Tokyo", "2026-03-01T00:00:00+09:00");
    h.add("2026-03-01T00:00:00+09:00", 1, interval(1));
    for i in 0..60 {
        // Next-refreshes every 5 minutes: counted, and each pauses the interval (F12).
        let when = at("2026-03-01T00:00:00+09:00").plus_minutes(5 * i + 1);
        let _ = h.input(&when.to_string(), next_refresh(1, 5));
    }
    h.run_until("2026-03-02T00:40:00+09:00");
    let counted_day_one = h
        .log
        .iter()
        .filter(|(w, d)| {
            *w < at("2026-03-02T00:00:00+09:00")
                && matches!(d, FormDecision::Refresh { counted: true, .. })
        })
        .count();
    assert_eq!(counted_day_one, DAILY_QUOTA as usize);
    assert!(h.log.iter().any(|(_, d)| matches!(
        d,
        FormDecision::Skipped {
            reason: SkipReason::QuotaExhausted,
            ..
        }
    )));
    // After local midnight the interval refreshes again.
    assert!(h
        .refresh_times(1)
        .iter()
        .any(|w| *w >= at("2026-03-02T00:00:00+09:00")));
}

#[test]
fn f18_quota_rejection_marks_form_for_one_reset_refresh() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, manual());
    let t = h.use_up_quota(1, "2026-03-01T00:00:00Z");
    let result = h.input(&t.to_string(), next_refresh(1, 5));
    assert_eq!(
        result,
        Err(RuleError::QuotaExhausted {
            resets_at: at("2026-03-02T00:00:00Z")
        })
    );
    let _ = h.input(&t.plus_minutes(1).to_string(), next_refresh(1, 5)); // marked again: still once
    h.take_log();
    h.run_until("2026-03-03T00:00:00Z");
    assert_eq!(
        h.refreshes(),
        vec![(at("2026-03-02T00:00:00Z"), 1, Trigger::QuotaReset)]
    );
}

#[test]
fn f18_t3_reset_follows_santiago_midnight_gap() {
    // 2026-09-06 in America/Santiago begins at 01:00 (-03): midnight is skipped.
    let mut h = Harness::new("America/Santiago", "2026-09-05T00:00:00-04:00");
    h.add("2026-09-05T00:00:00-04:00", 1, manual());
    let t = h.use_up_quota(1, "2026-09-05T10:00:00-04:00");
    assert!(h.input(&t.to_string(), next_refresh(1, 5)).is_err());
    h.take_log();
    h.run_until("2026-09-07T00:00:00-03:00");
    assert_eq!(
        h.refreshes(),
        vec![(at("2026-09-06T01:00:00-03:00"), 1, Trigger::QuotaReset)]
    );
}

#[test]
fn f19_f20_f21_hidden_form_defers_and_catches_up_once_on_show() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add_with("2026-03-01T00:00:00Z", 1, interval(1), true, false);
    h.input("2026-03-01T00:40:00Z", next_refresh(1, 5)).unwrap();
    h.input("2026-03-01T01:10:00Z", DeviceInput::Hide(FormId(1)))
        .unwrap(); // no-op
    h.input("2026-03-01T01:20:00Z", DeviceInput::Show(FormId(1)))
        .unwrap();
    h.input("2026-03-01T01:21:00Z", DeviceInput::Show(FormId(1)))
        .unwrap(); // no-op
    let refreshes: Vec<_> = h
        .log
        .iter()
        .filter(|(_, d)| matches!(d, FormDecision::Refresh { .. }))
        .collect();
    assert_eq!(refreshes.len(), 1);
    let (
        when,
        FormDecision::Refresh {
            trigger,
            counted,
            deferred,
            ..
        },
    ) = refreshes[0]
    else {
        unreachable!()
    };
    assert_eq!(*when, at("2026-03-01T01:20:00Z"));
    assert_eq!(*trigger, Trigger::Visible);
    assert!(*counted);
    let kinds: Vec<_> = deferred.iter().collect();
    assert_eq!(kinds, vec![Trigger::Interval, Trigger::Next]);
    assert_eq!(h.device.form(FormId(1)).unwrap().counted_today(), 1);
}

#[test]
fn f21_show_without_deferred_kinds_delivers_nothing() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add_with("2026-03-01T00:00:00Z", 1, manual(), true, false);
    h.input("2026-03-01T00:10:00Z", DeviceInput::Show(FormId(1)))
        .unwrap();
    assert!(h.log.is_empty());
}

#[test]
fn f21_scheduled_only_catch_up_is_not_counted() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add_with("2026-03-01T00:00:00Z", 1, scheduled(&[(1, 0)]), true, false);
    h.input("2026-03-01T02:00:00Z", DeviceInput::Show(FormId(1)))
        .unwrap();
    assert!(matches!(
        h.log.last(),
        Some((
            _,
            FormDecision::Refresh {
                trigger: Trigger::Visible,
                counted: false,
                ..
            }
        ))
    ));
}

#[test]
fn f22_removed_id_reused_starts_afresh() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, manual());
    h.input("2026-03-01T00:00:00Z", next_refresh(1, 5)).unwrap();
    h.input("2026-03-01T00:01:00Z", DeviceInput::RemoveForm(FormId(1)))
        .unwrap();
    assert_eq!(
        h.input("2026-03-01T00:01:00Z", DeviceInput::Hide(FormId(1))),
        Err(RuleError::FormNotFound)
    );
    h.add("2026-03-01T00:02:00Z", 1, manual());
    h.run_until("2026-03-01T01:00:00Z");
    assert!(
        h.refreshes().is_empty(),
        "the old pending next-refresh went with the old form"
    );
    assert_eq!(h.device.form(FormId(1)).unwrap().counted_today(), 0);
}

#[test]
fn f23_add_checks_exists_then_config_then_capacity() {
    let settings = DeviceSettings::new(30, 1).unwrap();
    let mut h = Harness::with_settings("UTC", "2026-03-01T00:00:00Z", settings);
    h.add("2026-03-01T00:00:00Z", 1, manual());
    let add = |id, plan| {
        DeviceInput::AddForm(NewForm {
            id: FormId(id),
            provider: PROVIDER,
            system_app: false,
            plan,
            hidden: false,
        })
    };
    let t = "2026-03-01T00:00:00Z";
    assert_eq!(h.input(t, add(1, None)), Err(RuleError::FormExists));
    assert_eq!(h.input(t, add(2, None)), Err(RuleError::InvalidConfig));
    assert_eq!(
        h.input(t, add(2, Some(manual()))),
        Err(RuleError::TooManyForms { max: 1 })
    );
}

#[test]
fn f23a_replan_keeps_history_and_takes_effect_now() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, interval(1));
    h.run_until("2026-03-01T00:30:00Z");
    h.input(
        "2026-03-01T00:40:00Z",
        DeviceInput::Replan {
            form: FormId(1),
            plan: interval(2),
        },
    )
    .unwrap();
    h.run_until("2026-03-01T02:00:00Z");
    // last stays 00:30; the new 60-minute period makes 01:30 the next due tick.
    assert_eq!(
        h.refresh_times(1),
        vec![at("2026-03-01T00:30:00Z"), at("2026-03-01T01:30:00Z")]
    );
    assert_eq!(h.device.form(FormId(1)).unwrap().counted_today(), 2);
}

#[test]
fn f23a_zone_change_moves_scheduled_times_and_midnight() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, scheduled(&[(10, 0)]));
    h.input(
        "2026-03-01T05:00:00Z",
        DeviceInput::SetZone(zone("Asia/Shanghai")),
    )
    .unwrap();
    h.run_until("2026-03-02T12:00:00Z");
    assert_eq!(h.refresh_times(1), vec![at("2026-03-02T10:00:00+08:00")]);
    assert_eq!(
        h.device.next_reset_at(),
        Some(at("2026-03-03T00:00:00+08:00"))
    );
}

#[test]
fn f24_same_instant_order_reset_tick_next_scheduled() {
    let mut h = Harness::new("UTC", "2026-03-01T23:00:00Z");
    h.add("2026-03-01T23:00:00Z", 1, interval(2));
    h.add("2026-03-01T23:00:00Z", 2, scheduled(&[(0, 0)]));
    h.add("2026-03-01T23:00:00Z", 3, manual());
    h.input("2026-03-01T23:00:00Z", next_refresh(3, 60))
        .unwrap();
    h.run_until("2026-03-02T00:00:00Z");
    let order: Vec<_> = h.refreshes().into_iter().map(|(_, f, t)| (f, t)).collect();
    assert_eq!(
        order,
        vec![
            (1, Trigger::Interval),
            (3, Trigger::Next),
            (2, Trigger::Scheduled)
        ]
    );
}

#[test]
fn t5_downtime_each_timer_kind_fires_once_and_nothing_is_replayed() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, interval(1));
    h.add(
        "2026-03-01T00:00:00Z",
        2,
        scheduled(&[(1, 0), (2, 0), (3, 0)]),
    );
    h.add("2026-03-01T00:00:00Z", 3, manual());
    h.input("2026-03-01T00:00:00Z", next_refresh(3, 30))
        .unwrap();
    // Down from 00:00 until 03:47: 7 ticks, three scheduled times and a next-refresh missed.
    h.wake_at(at("2026-03-01T03:47:00Z"));
    let fired: Vec<_> = h.refreshes();
    let w = at("2026-03-01T03:47:00Z");
    assert_eq!(
        fired,
        vec![
            (w, 1, Trigger::Interval),
            (w, 3, Trigger::Next),
            (w, 2, Trigger::Scheduled)
        ]
    );
    h.take_log();
    h.run_until("2026-03-01T05:00:00Z");
    // The grid keeps its anchor (00:00): 04:00 is only 13 min after the catch-up, so the
    // next interval refresh is 04:30, then every tick.
    assert_eq!(
        h.refresh_times(1),
        vec![at("2026-03-01T04:30:00Z"), at("2026-03-01T05:00:00Z")]
    );
}

#[test]
fn t5_missed_midnights_give_one_reset() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, manual());
    let t = h.use_up_quota(1, "2026-03-01T00:00:00Z");
    assert!(h.input(&t.to_string(), next_refresh(1, 5)).is_err());
    h.take_log();
    h.wake_at(at("2026-03-04T12:00:00Z"));
    assert_eq!(
        h.refreshes(),
        vec![(at("2026-03-04T12:00:00Z"), 1, Trigger::QuotaReset)]
    );
    assert_eq!(h.device.next_reset_at(), Some(at("2026-03-05T00:00:00Z")));
}

#[test]
fn t5_clock_jumping_backward_never_fires_twice() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, interval(1));
    h.add("2026-03-01T00:00:00Z", 2, scheduled(&[(1, 0)]));
    h.run_until("2026-03-01T01:00:00Z");
    let before = h.refreshes().len();
    // The wall clock steps back two hours, then forward again to where it was.
    h.wake_at(at("2026-02-28T23:00:00Z"));
    h.wake_at(at("2026-03-01T00:30:00Z"));
    h.wake_at(at("2026-03-01T01:00:00Z"));
    assert_eq!(h.refreshes().len(), before);
}

#[test]
fn next_wakeup_is_never_in_the_past_after_a_step() {
    let mut h = Harness::new("UTC", "2026-03-01T00:00:00Z");
    h.add("2026-03-01T00:00:00Z", 1, interval(1));
    let now = at("2026-03-01T03:47:00Z");
    let step = h.device.step(now, DeviceInput::Wake);
    assert!(step.next_wakeup.unwrap() > now);
}

#[test]
fn t1_device_state_round_trips_through_serde_with_its_zone() {
    let mut h = Harness::new("Europe/Berlin", "2026-03-01T00:00:00+01:00");
    h.add("2026-03-01T00:00:00+01:00", 1, interval(1));
    h.add_with(
        "2026-03-01T00:00:00+01:00",
        2,
        scheduled(&[(10, 30)]),
        true,
        false,
    );
    h.input("2026-03-01T00:10:00+01:00", next_refresh(1, 30))
        .unwrap();
    let saved = serde_json::to_string(&h.device).unwrap();
    let mut restored: Device = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored.zone().iana_name(), Some("Europe/Berlin"));
    assert_eq!(restored.next_wakeup(), h.device.next_wakeup());
    // Both copies decide the same from here on.
    let later = at("2026-03-02T12:00:00+01:00");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    while let Some(w) = h.device.next_wakeup().filter(|w| *w <= later) {
        h.device.wake(w, &mut a);
        restored.wake(w, &mut b);
    }
    assert_eq!(a, b);
    assert!(!a.is_empty());
    let broken = saved.replace("Europe/Berlin", "Mars/Olympus");
    assert!(serde_json::from_str::<Device>(&broken).is_err());
}
