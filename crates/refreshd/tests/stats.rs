//! Statistics through the running binary: an app's fetches and a provider's deliveries
//! and decided refreshes, counted when they are recorded and read by their owners.

mod support;

use serde_json::{json, Value};
use support::*;

fn hour_with_data(stats: &Value, field: &str) -> Value {
    let hours = stats["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 24, "{stats}");
    let busy: Vec<&Value> = hours
        .iter()
        .filter(|h| h[field].as_i64() > Some(0))
        .collect();
    assert!(!busy.is_empty(), "{stats}");
    busy.last().copied().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_and_deliveries_are_counted_by_hour_for_their_owners() {
    let dir = temp_dir("stats");
    let origin = Origin::default();
    let url = origin.start().await;
    let provider = Provider::default();
    // The first delivery fails once, then succeeds on its retry.
    *provider.fail_first.lock().unwrap() = 1;
    let refresh_url = provider.start().await;
    // No warp: every count lands in the current hour or the one before.
    let svc = Service::start(&dir, &epoch_now(), &["--time-warp", "1"]);

    let developer = svc.create_app("wx1", "organization").await;
    let other_developer = svc.create_app("wx2", "organization").await;
    svc.fetch_from(&developer, "wx1", &url).await;
    let device_key = svc.create_device("d1", "u1", "UTC").await;
    assert_eq!(
        svc.call("POST", "/v1/apps/wx1/launch", &device_key, None)
            .await
            .0,
        204
    );
    let (status, _) = svc
        .call(
            "PUT",
            "/v1/apps/wx1/background-fetch/token",
            &device_key,
            Some(json!({"token": "t"})),
        )
        .await;
    assert_eq!(status, 204);
    // The token's own fetch may run beside these; count what the log says happened.
    for _ in 0..3 {
        let (_, report) = svc
            .call(
                "POST",
                "/v1/apps/wx1/periodic-fetch/fetch-now",
                &developer,
                Some(json!({"user_id": "u1"})),
            )
            .await;
        assert_eq!(report["outcome"], "ok", "{report}");
    }
    origin.set(Behaviour::Status(500, None));
    let (_, report) = svc
        .call(
            "POST",
            "/v1/apps/wx1/periodic-fetch/fetch-now",
            &developer,
            Some(json!({"user_id": "u1"})),
        )
        .await;
    assert_eq!(report["outcome"], "http_status", "{report}");
    let (_, log) = svc
        .call(
            "GET",
            "/v1/apps/wx1/periodic-fetch/log?user_id=u1",
            &developer,
            None,
        )
        .await;
    let attempts = log["attempts"].as_array().unwrap();
    let ok = attempts.iter().filter(|a| a["outcome"] == "ok").count() as i64;

    let (status, stats) = svc
        .call("GET", "/v1/apps/wx1/stats", &developer, None)
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["totals"]["fetches"], attempts.len() as i64, "{stats}");
    assert_eq!(stats["totals"]["outcomes"]["ok"], ok, "{stats}");
    assert_eq!(stats["totals"]["outcomes"]["http_status"], 1, "{stats}");
    let rate = stats["totals"]["success_rate"].as_f64().unwrap();
    assert!(
        (rate - ok as f64 / attempts.len() as f64).abs() < 1e-9,
        "{stats}"
    );
    assert!(
        stats["totals"]["latency_ms"]["p99"].as_i64().unwrap()
            >= stats["totals"]["latency_ms"]["p50"].as_i64().unwrap()
    );
    assert_eq!(stats["users"]["eligible"], 1, "{stats}");
    // Lateness is counted for scheduled fetches only (the token's first fetch), never
    // for the four fetch-nows.
    let scheduled = attempts.len() > 4;
    assert_eq!(
        stats["totals"]["lateness_ms"]["p50"].is_i64(),
        scheduled,
        "{stats}"
    );
    let busy = hour_with_data(&stats, "fetches");
    assert_eq!(
        busy["fetches"], stats["totals"]["fetches"],
        "all in this hour: {stats}"
    );
    // The operator sees it too; another app's developer does not.
    let (_, mut seen) = svc
        .call("GET", "/v1/apps/wx1/stats", &svc.operator, None)
        .await;
    seen["to"] = stats["to"].clone();
    assert_eq!(seen, stats, "the operator's view is the developer's");
    let (status, body) = svc
        .call("GET", "/v1/apps/wx1/stats", &other_developer, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("app_not_found"))
    );

    // A provider: the add refresh is decided once, its delivery fails once and is
    // retried to success.
    let (_, created) = svc
        .call("POST", "/v1/admin/providers", &svc.operator, Some(json!({"provider": "p", "refresh_url": refresh_url, "system_app": false, "api_version": 11})))
        .await;
    let provider_key = created["provider_key"].as_str().unwrap().to_string();
    let (status, _) = svc
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(json!({"forms": [{"name": "w"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = svc
        .call(
            "POST",
            "/v1/forms",
            &device_key,
            Some(json!({"provider": "p", "form_name": "w"})),
        )
        .await;
    assert_eq!(status, 201);
    let stats = eventually(30, "the retried delivery is counted", || async {
        let (_, stats) = svc
            .call("GET", "/v1/providers/p/stats", &provider_key, None)
            .await;
        (stats["totals"]["outcomes"]["done"] == 1).then_some(stats)
    })
    .await;
    assert_eq!(stats["totals"]["outcomes"]["retry"], 1, "{stats}");
    assert_eq!(stats["totals"]["deliveries"], 2, "{stats}");
    assert_eq!(stats["totals"]["triggers"], json!({"add": 1}), "{stats}");
    assert_eq!(stats["totals"]["success_rate"], 0.5, "{stats}");
    let (status, _) = svc
        .call("GET", "/v1/providers/p/stats", &svc.operator, None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = svc
        .call("GET", "/v1/providers/other/stats", &provider_key, None)
        .await;
    assert_eq!(status, 404);
    assert!(svc.stop().success());
}
