//! Property tests over random devices, zones and input sequences in 2026–2027.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use proptest::prelude::*;
use refreshd_rules::device::{DeviceSettings, NewForm, DAILY_QUOTA};
use refreshd_rules::form_config::{check_document, check_form_entry, FormDefinition, LintContext};
use refreshd_rules::hhmm::parse_time_list;
use refreshd_rules::time::{local_date, MINUTE_MS};
use refreshd_rules::{
    Device, DeviceInput, FormDecision, FormId, Instant, LocalTime, ProviderId, ProviderTraits,
    RefreshPlan, Trigger,
};
use std::collections::HashMap;

const ZONES: [&str; 10] = [
    "UTC",
    "Asia/Shanghai",
    "America/New_York",
    "Europe/Berlin",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/St_Johns",
    "Europe/London",
];

/// 2026-01-01T00:00:00Z and the span to 2027-12-31.
const START_2026: i64 = 1_767_225_600_000;
const TWO_YEARS_MS: i64 = 2 * 365 * 24 * 60 * MINUTE_MS;

#[derive(Clone, Debug)]
enum PlanKind {
    Interval(u16),
    Scheduled(Vec<(u8, u8)>),
    Manual,
    Network,
}

#[derive(Clone, Debug)]
enum Op {
    Advance(i64),
    Add {
        slot: usize,
        plan: PlanKind,
        hidden: bool,
    },
    Remove(usize),
    Hide(usize),
    Show(usize),
    Offline,
    Online,
    NextRefresh {
        slot: usize,
        minutes: i64,
        burst: u8,
    },
}

fn plan_kind() -> impl Strategy<Value = PlanKind> {
    prop_oneof![
        (1u16..=48).prop_map(PlanKind::Interval),
        prop::collection::vec((0u8..24, 0u8..60), 1..=4).prop_map(PlanKind::Scheduled),
        Just(PlanKind::Manual),
        Just(PlanKind::Network),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1i64..=600).prop_map(Op::Advance),
        2 => (0usize..5, plan_kind(), any::<bool>()).prop_map(|(slot, plan, hidden)| Op::Add { slot, plan, hidden }),
        1 => (0usize..5).prop_map(Op::Remove),
        2 => (0usize..5).prop_map(Op::Hide),
        2 => (0usize..5).prop_map(Op::Show),
        1 => Just(Op::Offline),
        1 => Just(Op::Online),
        3 => (0usize..5, 1i64..=120, 1u8..=60).prop_map(|(slot, minutes, burst)| Op::NextRefresh { slot, minutes, burst }),
    ]
}

fn build_plan(kind: &PlanKind) -> (RefreshPlan, bool) {
    let base = FormDefinition {
        name: "w".into(),
        update_enabled: true,
        update_duration: 0,
        scheduled_update_time: None,
        multi_scheduled_update_time: vec![],
        network_condition: false,
        data_proxy_enabled: false,
    };
    let traits = ProviderTraits::default();
    match kind {
        PlanKind::Interval(d) => (
            RefreshPlan::new(
                &FormDefinition {
                    update_duration: *d,
                    ..base
                },
                traits,
            ),
            false,
        ),
        PlanKind::Scheduled(times) => {
            let mut list: Vec<LocalTime> = times
                .iter()
                .map(|(h, m)| LocalTime::new(*h, *m).unwrap())
                .collect();
            list.sort();
            list.dedup();
            (
                RefreshPlan::new(
                    &FormDefinition {
                        multi_scheduled_update_time: list,
                        ..base
                    },
                    traits,
                ),
                false,
            )
        }
        PlanKind::Manual => (
            RefreshPlan::new(
                &FormDefinition {
                    update_enabled: false,
                    ..base
                },
                traits,
            ),
            false,
        ),
        PlanKind::Network => (
            RefreshPlan::new(
                &FormDefinition {
                    update_enabled: false,
                    network_condition: true,
                    ..base
                },
                ProviderTraits {
                    system_app: true,
                    ..traits
                },
            ),
            true,
        ),
    }
}

/// Everything decided, with the visibility the driver saw and the wake-up after each step.
#[derive(Debug, PartialEq)]
struct Run {
    log: Vec<(Instant, FormDecision)>,
    hidden_deliveries: Vec<(Instant, FormId)>,
    wakeups_in_past: Vec<(Instant, Instant)>,
}

/// Drives a device the way the engine does: wake at every requested wake-up, then apply
/// each input at its instant.
fn drive(zone: &TimeZone, tick: i64, start: Instant, ops: &[Op]) -> Run {
    let mut device = Device::new(zone.clone(), DeviceSettings::new(tick, 512).unwrap(), start);
    let mut now = start;
    let mut slots: [Option<FormId>; 5] = [None; 5];
    let mut visible: HashMap<FormId, bool> = HashMap::new();
    let mut next_id = 0u64;
    let mut run = Run {
        log: vec![],
        hidden_deliveries: vec![],
        wakeups_in_past: vec![],
    };

    let record = |at: Instant,
                  decisions: Vec<FormDecision>,
                  visible: &HashMap<FormId, bool>,
                  run: &mut Run| {
        for d in decisions {
            if let FormDecision::Refresh { form, .. } = d {
                if !visible.get(&form).copied().unwrap_or(false) {
                    run.hidden_deliveries.push((at, form));
                }
            }
            run.log.push((at, d));
        }
    };

    let apply = |device: &mut Device,
                 at: Instant,
                 input: DeviceInput,
                 visible: &mut HashMap<FormId, bool>,
                 run: &mut Run| {
        // Wake at every requested instant up to `at` first.
        while let Some(wake) = device.next_wakeup().filter(|w| *w <= at) {
            let step = device.step(wake, DeviceInput::Wake);
            record(wake, step.decisions, visible, run);
            if step.next_wakeup.is_some_and(|n| n <= wake) {
                run.wakeups_in_past.push((wake, step.next_wakeup.unwrap()));
            }
        }
        // A `show` makes the form visible before its catch-up refresh is delivered.
        if let DeviceInput::Show(id) = &input {
            if visible.contains_key(id) {
                visible.insert(*id, true);
            }
        }
        let step = device.step(at, input.clone());
        if step.result.is_ok() {
            match &input {
                DeviceInput::AddForm(f) => {
                    visible.insert(f.id, !f.hidden);
                }
                DeviceInput::Hide(id) => {
                    visible.insert(*id, false);
                }
                DeviceInput::RemoveForm(id) => {
                    visible.remove(id);
                }
                _ => {}
            }
        }
        record(at, step.decisions, visible, run);
        if step.next_wakeup.is_some_and(|n| n <= at) {
            run.wakeups_in_past.push((at, step.next_wakeup.unwrap()));
        }
        step.result
    };

    for op in ops {
        match op {
            Op::Advance(minutes) => {
                now = now.plus_minutes(*minutes);
                apply(&mut device, now, DeviceInput::Wake, &mut visible, &mut run).unwrap();
            }
            Op::Add { slot, plan, hidden } => {
                let (plan, system_app) = build_plan(plan);
                let id = FormId(next_id);
                next_id += 1;
                let input = DeviceInput::AddForm(NewForm {
                    id,
                    provider: ProviderId(0),
                    system_app,
                    plan: Some(plan),
                    hidden: *hidden,
                });
                if slots[*slot].is_none()
                    && apply(&mut device, now, input, &mut visible, &mut run).is_ok()
                {
                    slots[*slot] = Some(id);
                }
            }
            Op::Remove(slot) => {
                if let Some(id) = slots[*slot].take() {
                    apply(
                        &mut device,
                        now,
                        DeviceInput::RemoveForm(id),
                        &mut visible,
                        &mut run,
                    )
                    .unwrap();
                }
            }
            Op::Hide(slot) | Op::Show(slot) => {
                if let Some(id) = slots[*slot] {
                    let input = if matches!(op, Op::Hide(_)) {
                        DeviceInput::Hide(id)
                    } else {
                        DeviceInput::Show(id)
                    };
                    apply(&mut device, now, input, &mut visible, &mut run).unwrap();
                }
            }
            Op::Offline => {
                apply(
                    &mut device,
                    now,
                    DeviceInput::Offline,
                    &mut visible,
                    &mut run,
                )
                .unwrap();
            }
            Op::Online => {
                apply(
                    &mut device,
                    now,
                    DeviceInput::Online,
                    &mut visible,
                    &mut run,
                )
                .unwrap();
            }
            Op::NextRefresh {
                slot,
                minutes,
                burst,
            } => {
                if let Some(id) = slots[*slot] {
                    // A burst: the provider asks again every time the last one fired.
                    for _ in 0..*burst {
                        let input = DeviceInput::SetNextRefresh {
                            form: id,
                            caller: ProviderId(0),
                            minutes: (*minutes).max(5),
                        };
                        let _ = apply(&mut device, now, input, &mut visible, &mut run);
                        now = now.plus_minutes((*minutes).max(5));
                        apply(&mut device, now, DeviceInput::Wake, &mut visible, &mut run).unwrap();
                    }
                }
            }
        }
    }
    run
}

fn setup() -> impl Strategy<Value = (usize, i64, i64, Vec<Op>)> {
    (
        0usize..ZONES.len(),
        prop_oneof![Just(30i64), 1i64..=30],
        0i64..TWO_YEARS_MS,
        prop::collection::vec(op(), 1..120),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn f20_no_delivery_to_a_hidden_form((zone, tick, offset, ops) in setup()) {
        let zone = TimeZone::get(ZONES[zone]).unwrap();
        let run = drive(&zone, tick, Instant::from_millis(START_2026 + offset / MINUTE_MS * MINUTE_MS), &ops);
        prop_assert!(run.hidden_deliveries.is_empty(), "{:?}", run.hidden_deliveries);
    }

    #[test]
    fn f17_at_most_50_counted_per_form_per_local_day((zone, tick, offset, ops) in setup()) {
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        let run = drive(&tz, tick, Instant::from_millis(START_2026 + offset / MINUTE_MS * MINUTE_MS), &ops);
        let mut per_day: HashMap<(FormId, Date), u32> = HashMap::new();
        for (at, d) in &run.log {
            if let FormDecision::Refresh { form, counted: true, .. } = d {
                *per_day.entry((*form, local_date(*at, &tz).unwrap())).or_default() += 1;
            }
        }
        for ((form, day), n) in per_day {
            prop_assert!(n <= DAILY_QUOTA as u32, "{form:?} {day}: {n}");
        }
    }

    #[test]
    fn t4_next_wakeup_is_never_in_the_past((zone, tick, offset, ops) in setup()) {
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        let run = drive(&tz, tick, Instant::from_millis(START_2026 + offset / MINUTE_MS * MINUTE_MS), &ops);
        prop_assert!(run.wakeups_in_past.is_empty(), "{:?}", run.wakeups_in_past);
    }

    #[test]
    fn identical_input_gives_identical_output((zone, tick, offset, ops) in setup()) {
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        let start = Instant::from_millis(START_2026 + offset / MINUTE_MS * MINUTE_MS);
        prop_assert_eq!(drive(&tz, tick, start, &ops), drive(&tz, tick, start, &ops));
    }

    #[test]
    fn f15_t2_scheduled_refreshes_land_on_their_local_times(
        zone in 0usize..ZONES.len(),
        day in 0i64..730,
        times in prop::collection::vec((0u8..24, 0u8..60), 1..=4),
    ) {
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        let first_day = Date::constant(2026, 1, 1).checked_add(jiff::Span::new().days(day)).unwrap();
        let start = Instant::from_timestamp(first_day.to_zoned(tz.clone()).unwrap().timestamp());
        let end_day = first_day.checked_add(jiff::Span::new().days(4)).unwrap();
        let end = Instant::from_timestamp(end_day.to_zoned(tz.clone()).unwrap().timestamp());
        let (plan, _) = build_plan(&PlanKind::Scheduled(times.clone()));
        let mut device = Device::new(tz.clone(), DeviceSettings::default(), start);
        let add = DeviceInput::AddForm(NewForm { id: FormId(1), provider: ProviderId(0), system_app: false, plan: Some(plan), hidden: false });
        device.step(start, add).result.unwrap();
        let mut fired = Vec::new();
        while let Some(at) = device.next_wakeup().filter(|at| *at < end) {
            for d in device.step(at, DeviceInput::Wake).decisions {
                let is_scheduled = matches!(d, FormDecision::Refresh { trigger: Trigger::Scheduled, counted: false, .. });
                prop_assert!(is_scheduled, "unexpected decision {:?}", d);
                fired.push(at);
            }
        }
        // Expected, computed with jiff directly: each local time on each date, resolved
        // with the "compatible" strategy (T2), strictly after the add, one per instant.
        let mut expected = Vec::new();
        for d in 0..4 {
            let date = first_day.checked_add(jiff::Span::new().days(d)).unwrap();
            for (h, m) in &times {
                let dt = date.at(*h as i8, *m as i8, 0, 0);
                let ts = tz.to_ambiguous_zoned(dt).compatible().unwrap().timestamp();
                let at = Instant::from_timestamp(ts);
                if at > start && at < end {
                    expected.push(at);
                }
            }
        }
        expected.sort();
        expected.dedup();
        prop_assert_eq!(fired, expected);
    }

    #[test]
    fn f2_f3_time_list_parser_never_panics(text in ".{0,80}") {
        let _ = parse_time_list(&text);
    }

    #[test]
    fn f3_valid_lists_round_trip(times in prop::collection::vec((0u8..24, 0u8..60), 0..=24)) {
        let text = times.iter().map(|(h, m)| format!("{h}:{m:02}")).collect::<Vec<_>>().join(",");
        let list = parse_time_list(&text).unwrap();
        let mut expected: Vec<LocalTime> = times.iter().map(|(h, m)| LocalTime::new(*h, *m).unwrap()).collect();
        expected.sort();
        expected.dedup();
        prop_assert_eq!(list.times, expected);
    }

    #[test]
    fn f5_config_parser_never_panics(text in ".{0,200}") {
        let _ = check_document(&text, LintContext::default());
    }

    #[test]
    fn f5_config_parser_never_panics_on_json_shaped_input(
        fields in prop::collection::vec((
            prop::sample::select(vec!["name", "updateEnabled", "updateDuration", "scheduledUpdateTime", "multiScheduledUpdateTime", "conditionUpdate", "dataProxyEnabled", "x"]),
            prop::sample::select(vec!["1", "-1", "1.5", "true", "null", "\"10:30\"", "\"a,b,\"", "[\"network\"]", "{}", "[]", "99999999999999999999", "\"\""]),
        ), 0..8)
    ) {
        let body = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect::<Vec<_>>().join(", ");
        let text = format!("{{\"forms\": [{{{body}}}]}}");
        let report = check_document(&text, LintContext::default());
        // A value without errors must be usable as a plan.
        if let Some(defs) = &report.value {
            for d in defs {
                let _ = RefreshPlan::new(d, ProviderTraits::default());
            }
        }
        if let Ok(json) = refreshd_rules::json::parse(&text) {
            let _ = check_form_entry(&json, "$", LintContext::default());
        }
    }
}
