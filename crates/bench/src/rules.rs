//! `refreshd-bench rules`: one simulated day of many devices through the rules, on one
//! core. Prints figures; never run as a test.

use jiff::tz::TimeZone;
use refreshd_rules::device::{DeviceSettings, FormState, NewForm};
use refreshd_rules::form_config::FormDefinition;
use refreshd_rules::time::{Instant as RulesInstant, LocalTime, HOUR_MS};
use refreshd_rules::{
    Device, DeviceInput, FormDecision, FormId, ProviderId, ProviderTraits, RefreshPlan, Trigger,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant as WallClock;

/// 2026-03-02T00:00:00Z: the simulated day starts here.
const DAY_START_MS: i64 = 1_772_409_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const ZONES: [&str; 6] = [
    "Asia/Shanghai",
    "America/New_York",
    "Europe/Berlin",
    "UTC",
    "Asia/Kolkata",
    "America/Sao_Paulo",
];

/// A device's scripted inputs for the day, in time order.
struct DeviceScript {
    inputs: Vec<(RulesInstant, DeviceInput)>,
    next_input: usize,
    /// Forms whose provider re-arms next-refresh after each refresh, with the minutes.
    rearm_minutes: HashMap<FormId, i64>,
}

fn definition() -> FormDefinition {
    FormDefinition {
        name: "bench".into(),
        update_enabled: true,
        update_duration: 0,
        scheduled_update_time: None,
        multi_scheduled_update_time: vec![],
        network_condition: false,
        data_proxy_enabled: false,
    }
}

/// Builds one device with the mix: 60 % interval (1–48 half-hours), 25 % one to
/// four fixed times, 10 % next-refresh every 5–120 minutes, 5 % network recovery with a
/// few outages per device; about a quarter of the forms hidden part of the day.
fn build_device(rng: &mut fastrand::Rng, index: u32, forms: u32) -> (Device, DeviceScript) {
    let day_start = RulesInstant::from_millis(DAY_START_MS);
    let zone = TimeZone::get(ZONES[index as usize % ZONES.len()]).expect("bundled zone");
    let mut device = Device::new(zone, DeviceSettings::default(), day_start);
    let mut script = DeviceScript {
        inputs: Vec::new(),
        next_input: 0,
        rearm_minutes: HashMap::new(),
    };
    let mut has_network_form = false;
    for f in 0..forms {
        let id = FormId(index as u64 * forms as u64 + f as u64);
        let roll = rng.u32(0..100);
        let (plan, system_app) = match roll {
            0..=59 => {
                let d = FormDefinition {
                    update_duration: rng.u16(1..=48),
                    ..definition()
                };
                (RefreshPlan::new(&d, ProviderTraits::default()), false)
            }
            60..=84 => {
                let mut times: Vec<LocalTime> = (0..rng.usize(1..=4))
                    .map(|_| LocalTime::new(rng.u8(0..24), rng.u8(0..60)).unwrap())
                    .collect();
                times.sort();
                times.dedup();
                let d = FormDefinition {
                    multi_scheduled_update_time: times,
                    ..definition()
                };
                (RefreshPlan::new(&d, ProviderTraits::default()), false)
            }
            85..=94 => {
                let d = FormDefinition {
                    update_enabled: false,
                    ..definition()
                };
                let minutes = rng.i64(5..=120);
                script.rearm_minutes.insert(id, minutes);
                let first = day_start.plus_minutes(rng.i64(0..60));
                script.inputs.push((
                    first,
                    DeviceInput::SetNextRefresh {
                        form: id,
                        caller: ProviderId(0),
                        minutes,
                    },
                ));
                (RefreshPlan::new(&d, ProviderTraits::default()), false)
            }
            _ => {
                has_network_form = true;
                let d = FormDefinition {
                    update_enabled: false,
                    network_condition: true,
                    ..definition()
                };
                let traits = ProviderTraits {
                    system_app: true,
                    ..ProviderTraits::default()
                };
                (RefreshPlan::new(&d, traits), true)
            }
        };
        let mut decisions = Vec::new();
        device
            .apply(
                day_start,
                DeviceInput::AddForm(NewForm {
                    id,
                    provider: ProviderId(0),
                    system_app,
                    plan: Some(plan),
                    hidden: false,
                }),
                &mut decisions,
            )
            .expect("bench forms are valid");
        if rng.u32(0..4) == 0 {
            let hide_at = day_start.plus_minutes(rng.i64(0..20 * 60));
            let show_at = hide_at.plus_minutes(rng.i64(30..=240));
            script.inputs.push((hide_at, DeviceInput::Hide(id)));
            script.inputs.push((show_at, DeviceInput::Show(id)));
        }
    }
    if has_network_form {
        for _ in 0..rng.u32(1..=3) {
            let off = day_start.plus_minutes(rng.i64(0..22 * 60));
            let on = off.plus_minutes(rng.i64(1..=90));
            script.inputs.push((off, DeviceInput::Offline));
            script.inputs.push((on, DeviceInput::Online));
        }
    }
    script.inputs.sort_by_key(|(at, _)| *at);
    (device, script)
}

/// The heap-allocated and inline bytes of one device's state.
fn device_state_bytes(device: &Device) -> usize {
    let forms_heap = std::mem::size_of_val(device.forms());
    let schedules: usize = device
        .forms()
        .iter()
        .map(|f| {
            let n = f.plan().scheduled_times.len();
            // An Arc<[T]> allocation: two reference counts plus the elements.
            if n == 0 {
                0
            } else {
                16 + n * std::mem::size_of::<LocalTime>()
            }
        })
        .sum();
    std::mem::size_of::<Device>() + forms_heap + schedules
}

pub fn run(device_count: u32, forms_per_device: u32, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let build_started = WallClock::now();
    let mut devices = Vec::with_capacity(device_count as usize);
    let mut scripts = Vec::with_capacity(device_count as usize);
    for i in 0..device_count {
        let (device, script) = build_device(&mut rng, i, forms_per_device);
        devices.push(device);
        scripts.push(script);
    }
    let build_time = build_started.elapsed();
    let state_bytes: usize = devices.iter().map(device_state_bytes).sum();
    let total_forms = device_count as u64 * forms_per_device as u64;

    let day_start = RulesInstant::from_millis(DAY_START_MS);
    let day_end = day_start.plus_millis(DAY_MS);
    let next_event = |device: &Device, script: &DeviceScript| {
        let input = script.inputs.get(script.next_input).map(|(at, _)| *at);
        match (device.next_wakeup(), input) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    let mut queue: BinaryHeap<Reverse<(RulesInstant, u32)>> = devices
        .iter()
        .zip(&scripts)
        .enumerate()
        .filter_map(|(i, (d, s))| next_event(d, s).map(|at| Reverse((at, i as u32))))
        .collect();

    let mut wakeups = 0u64;
    let mut inputs = 0u64;
    let mut refreshes = 0u64;
    let mut counted = 0u64;
    let mut deferred = 0u64;
    let mut decisions = Vec::with_capacity(64);
    let started = WallClock::now();
    while let Some(Reverse((at, index))) = queue.pop() {
        if at >= day_end {
            break;
        }
        let device = &mut devices[index as usize];
        let script = &mut scripts[index as usize];
        decisions.clear();
        let input_due = script
            .inputs
            .get(script.next_input)
            .is_some_and(|(input_at, _)| *input_at <= at);
        if input_due {
            let input = script.inputs[script.next_input].1.clone();
            script.next_input += 1;
            let _ = device.apply(at, input, &mut decisions);
            inputs += 1;
        } else {
            device.wake(at, &mut decisions);
            wakeups += 1;
        }
        for decision in &decisions {
            match *decision {
                FormDecision::Refresh {
                    form,
                    trigger,
                    counted: c,
                    ..
                } => {
                    refreshes += 1;
                    counted += c as u64;
                    // The provider asks for its next refresh as soon as it is refreshed.
                    if trigger == Trigger::Next {
                        if let Some(minutes) = script.rearm_minutes.get(&form) {
                            let input = DeviceInput::SetNextRefresh {
                                form,
                                caller: ProviderId(0),
                                minutes: *minutes,
                            };
                            let _ = device.apply(at, input, &mut Vec::new());
                            inputs += 1;
                        }
                    }
                }
                FormDecision::Deferred { .. } => deferred += 1,
                FormDecision::Skipped { .. } => {}
            }
        }
        if let Some(next) = next_event(device, script) {
            queue.push(Reverse((next, index)));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let handled = wakeups + inputs;
    println!("refreshd-bench rules: one simulated day, one core");
    println!("  devices {device_count}, forms {total_forms} ({forms_per_device} per device), seed {seed}");
    println!("  workload built in {:.2} s", build_time.as_secs_f64());
    println!(
        "  decisions {handled} ({wakeups} wake-ups + {inputs} inputs) in {elapsed:.2} s = {:.0} decisions/s",
        handled as f64 / elapsed
    );
    println!("  refreshes delivered {refreshes} ({counted} counted), deferred {deferred}");
    crate::db::emit(serde_json::json!({
        "bench": "rules",
        "devices": device_count,
        "forms": total_forms,
        "decisions": handled,
        "seconds": elapsed,
        "decisions_per_second": handled as f64 / elapsed,
        "state_bytes_per_form": state_bytes as u64 / total_forms,
    }));
    println!(
        "  state: {} bytes per form in memory (FormState {} bytes inline, Device {} bytes, schedules on the heap)",
        state_bytes as u64 / total_forms,
        std::mem::size_of::<FormState>(),
        std::mem::size_of::<Device>()
    );
}
