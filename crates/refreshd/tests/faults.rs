//! Fault tests of the running service. Short forms run in the suite; `bench/faults.sh`
//! runs the long forms (more subjects, more cycles) and prints the figures recorded in
//! RELIABILITY.md. Outcomes (duplicates, losses) are asserted; timings are reported,
//! never asserted.

mod support;

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant as Wall};
use support::*;

macro_rules! say_loudly {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

/// `count` devices with one interval form each (every 30 virtual minutes), and as many
/// users with periodic fetch. Returns device keys with their form ids.
async fn populate(
    svc: &Service,
    count: usize,
    refresh_url: &str,
    feed_url: &str,
) -> (Vec<(String, String)>, String) {
    let (_, p) = svc.call("POST", "/v1/admin/providers", &svc.operator, Some(json!({"provider": "p", "refresh_url": refresh_url, "system_app": false, "api_version": 11}))).await;
    let provider_key = p["provider_key"].as_str().unwrap().to_string();
    svc.call(
        "PUT",
        "/v1/providers/p/form-config",
        &provider_key,
        Some(json!({"forms": [{"name": "w", "updateEnabled": true, "updateDuration": 1}]})),
    )
    .await;
    let (_, app) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &svc.operator,
            Some(json!({"appid": "wx1", "subject": "organization"})),
        )
        .await;
    let developer = app["developer_key"].as_str().unwrap().to_string();
    svc.call(
        "PUT",
        "/v1/apps/wx1/periodic-fetch",
        &developer,
        Some(json!({"enabled": true, "source": {"url": feed_url}})),
    )
    .await;
    // Sixteen request streams at once: ten thousand subjects are set up in seconds.
    let streams = 16;
    let chunks: Vec<Vec<usize>> = (0..streams)
        .map(|k| (0..count).filter(|i| i % streams == k).collect())
        .collect();
    let made = futures_util::future::join_all(chunks.iter().map(|indexes| async move {
        let mut made = Vec::new();
        for &i in indexes {
            let (_, d) = svc.call("POST", "/v1/admin/devices", &svc.operator, Some(json!({"device_id": format!("d{i}"), "user_id": format!("u{i}"), "zone": "UTC"}))).await;
            let key = d["device_key"].as_str().unwrap().to_string();
            let (_, form) = svc.call("POST", "/v1/forms", &key, Some(json!({"provider": "p", "form_name": "w"}))).await;
            svc.call("PUT", "/v1/apps/wx1/background-fetch/token", &key, Some(json!({"token": format!("t{i}")}))).await;
            svc.call("POST", "/v1/apps/wx1/launch", &key, None).await;
            made.push((i, (key, form["form_id"].as_str().unwrap().to_string())));
        }
        made
    }))
    .await;
    let mut devices: Vec<(usize, (String, String))> = made.into_iter().flatten().collect();
    devices.sort_by_key(|(i, _)| *i);
    let devices = devices.into_iter().map(|(_, d)| d).collect();
    (devices, developer)
}

/// The cached time stamp each user's client can read now.
async fn cache_stamps(svc: &Service, devices: &[(String, String)]) -> Vec<Option<i64>> {
    let mut stamps = Vec::with_capacity(devices.len());
    for (key, _) in devices {
        let (status, body): (u16, Value) = svc
            .call("GET", "/v1/apps/wx1/background-fetch", key, None)
            .await;
        stamps.push((status == 200).then(|| body["time_stamp"].as_i64().unwrap()));
    }
    stamps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_on_sqlite_loses_nothing_and_never_redelivers_under_a_new_id() {
    let subjects = setting("REFRESHD_FAULT_SUBJECTS", 10_000);
    let cycles = setting("REFRESHD_FAULT_CYCLES", 10);
    let dir = temp_dir("sigkill-loop");
    let provider = Provider::default();
    let refresh_url = provider.start().await;
    let origin = Origin::default();
    let feed = origin.start().await;
    let epoch = epoch_now();
    let started = Wall::now();
    // A slower clock than other tests (two minutes a second by default): ten thousand
    // devices ticking every 30 virtual minutes is then a load one node carries.
    let warp_factor = setting("REFRESHD_FAULT_WARP", 120).to_string();
    // Generous API limits: the loop drives one node with many subjects.
    let args = [
        "--time-warp",
        warp_factor.as_str(),
        "--rate-limit-per-second",
        "100000",
        "--rate-limit-burst",
        "100000",
        "--fetch-jitter-minutes",
        "30",
    ];
    let mut svc = Service::start(&dir, &epoch, &args);
    let setup = Wall::now();
    let (devices, _) = populate(&svc, subjects, &refresh_url, &feed).await;
    let setup_seconds = setup.elapsed().as_secs_f64();
    // Cache durability is checked on a sample of users each cycle.
    let sample: Vec<(String, String)> = devices
        .iter()
        .step_by((subjects / 500).max(1))
        .cloned()
        .collect();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut lost_cache_writes = 0;
    let mut catch_up = Vec::new();
    for _ in 0..cycles {
        let run_for = Duration::from_millis(rng.u64(500..=3000));
        tokio::time::sleep(run_for).await; // the fault's timing, not a wait for a result
        let seen = cache_stamps(&svc, &sample).await;
        svc.kill9();
        svc = Service::start(&dir, &epoch, &args);
        let restarted = Wall::now();
        let after = cache_stamps(&svc, &sample).await;
        lost_cache_writes += seen
            .iter()
            .zip(&after)
            .filter(|(before, now)| now < before)
            .count();
        // Catch-up delay: from listening again to the next delivery.
        let count_at_restart = provider.deliveries.lock().unwrap().len();
        eventually(60, "a delivery after restart", || async {
            (provider.deliveries.lock().unwrap().len() > count_at_restart).then_some(())
        })
        .await;
        catch_up.push(restarted.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed_virtual_minutes =
        started.elapsed().as_secs_f64() * warp_factor.parse::<f64>().unwrap() / 60.0;
    drop(svc);

    let deliveries = provider.deliveries.lock().unwrap().clone();
    let mut ids_per_slot: HashMap<String, HashSet<String>> = HashMap::new();
    let mut interval_slots: HashMap<String, HashSet<String>> = HashMap::new();
    for (id, _, body, _) in &deliveries {
        let slot = format!(
            "{}|{}|{}",
            body["form_id"], body["trigger"], body["decided_at"]
        );
        ids_per_slot.entry(slot).or_default().insert(id.clone());
        if body["trigger"] == "interval" {
            interval_slots
                .entry(body["form_id"].to_string())
                .or_default()
                .insert(body["decided_at"].to_string());
        }
    }
    let duplicates = ids_per_slot.values().filter(|ids| ids.len() > 1).count();
    // A form cannot have had more interval refreshes than 30-minute periods elapsed.
    let most = interval_slots.values().map(HashSet::len).max().unwrap_or(0);
    let allowed = (elapsed_virtual_minutes / 30.0).ceil() as usize + 1;
    let p99 = percentile(&mut catch_up, 0.99);
    say_loudly!(
        "FIGURES sigkill-loop sqlite: subjects {subjects} (set up in {setup_seconds:.1} s), warp {}, cycles {cycles}, deliveries {}, duplicate slots {duplicates}, lost cache writes {lost_cache_writes}, max interval refreshes per form {most} (allowed {allowed}), catch-up after restart p50 {:.0} ms p99 {:.0} ms",
        warp_factor,
        deliveries.len(),
        percentile(&mut catch_up, 0.5),
        p99
    );
    assert_eq!(duplicates, 0, "a decision delivered under two ids");
    assert_eq!(lost_cache_writes, 0, "a committed cache write was lost");
    assert!(
        most <= allowed,
        "{most} interval refreshes in {elapsed_virtual_minutes:.0} virtual minutes"
    );
    assert!(!interval_slots.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_one_hour_outage_fires_each_overdue_timer_once_and_replays_nothing() {
    let dir = temp_dir("outage");
    let provider = Provider::default();
    let refresh_url = provider.start().await;
    let origin = Origin::default();
    let feed = origin.start().await;
    let epoch = epoch_now();
    let svc = Service::start(&dir, &epoch, &[]);
    let (devices, _) = populate(&svc, 5, &refresh_url, &feed).await;
    eventually(30, "interval deliveries before the outage", || async {
        (provider
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.2["trigger"] == "interval")
            .count()
            >= 5)
            .then_some(())
    })
    .await;
    assert!(svc.stop().success(), "SIGTERM stops cleanly");
    let before = provider.deliveries.lock().unwrap().len();
    let origin_before = origin.count();
    // Down for an hour of service time (one second at an hour a second); time keeps
    // running because the epoch is shared.
    let down = Wall::now();
    while down.elapsed() < Duration::from_millis(1_000) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let svc = Service::start(&dir, &epoch, &[]);
    eventually(30, "catch-up deliveries", || async {
        (provider.deliveries.lock().unwrap().len() >= before + devices.len()).then_some(())
    })
    .await;
    // The first wave after restart: one interval refresh per form, at one instant.
    let after: Vec<_> = provider.deliveries.lock().unwrap()[before..].to_vec();
    let mut first_wave: HashMap<String, Vec<String>> = HashMap::new();
    for (_, _, body, _) in &after {
        first_wave
            .entry(body["form_id"].to_string())
            .or_default()
            .push(body["decided_at"].to_string());
    }
    for (form, instants) in &first_wave {
        let first = &instants[0];
        let same = instants.iter().filter(|i| *i == first).count();
        assert_eq!(
            same, 1,
            "form {form}: the missed ticks collapsed into one refresh"
        );
    }
    // Periodic fetches were not due within the hour (12 h interval): none replayed.
    assert_eq!(
        origin.count(),
        origin_before,
        "no missed fetch repetitions replayed"
    );
    drop(svc);
}
