//! The running service end to end over real sockets: periodic fetch and widget flows,
//! SSE, bad input, and a SIGKILL restart.

mod support;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::*;

struct Keys {
    developer: String,
    device: String,
}

/// An organization app with a periodic URL source, and a device for user `u1`.
async fn periodic_setup(svc: &Service, url: &str) -> Keys {
    let (status, app) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &svc.operator,
            Some(json!({"appid": "wx1", "subject": "organization"})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let developer = app["developer_key"].as_str().unwrap().to_string();
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(json!({"enabled": true, "source": {"url": url}, "gray": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, device) = svc
        .call(
            "POST",
            "/v1/admin/devices",
            &svc.operator,
            Some(json!({"device_id": "d1", "user_id": "u1", "zone": "Asia/Shanghai"})),
        )
        .await;
    assert_eq!(status, 201, "{device}");
    Keys {
        developer,
        device: device["device_key"].as_str().unwrap().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p6_p8_p12_p15_token_launch_fetch_read() {
    let dir = temp_dir("periodic");
    let origin = Origin::default();
    let url = origin.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let keys = periodic_setup(&svc, &url).await;

    let (status, body) = svc
        .call(
            "GET",
            "/v1/apps/wx1/background-fetch?fetch_type=periodic",
            &keys.device,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_cached_data"))
    );
    assert_eq!(
        svc.call(
            "PUT",
            "/v1/apps/wx1/background-fetch/token",
            &keys.device,
            Some(json!({"token": "tok 1/é"}))
        )
        .await
        .0,
        204
    );
    assert_eq!(
        svc.call("POST", "/v1/apps/wx1/launch", &keys.device, None)
            .await
            .0,
        204
    );

    // Eligible now: the first fetch is due at once (P8).
    let cached = eventually(30, "cached data", || async {
        let (status, body) = svc
            .call("GET", "/v1/apps/wx1/background-fetch", &keys.device, None)
            .await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(cached["fetched_data"], "hello");
    assert!(cached["time_stamp"].as_i64().unwrap() > 0);
    let (query, headers) = origin.requests.lock().unwrap()[0].clone();
    assert_eq!(query["appid"], "wx1");
    assert_eq!(query["token"], "tok 1/é");
    assert!(query["timestamp"].parse::<i64>().unwrap() > 1_700_000_000_000);
    assert!(headers.get("referer").is_none());

    // About 12 virtual hours later (12 s of real time) the next fetch comes (P8).
    eventually(60, "second fetch", || async {
        (origin.count() >= 2).then_some(())
    })
    .await;

    // The fetch log never carries the token or the URL. The second attempt is logged
    // once its answer is recorded, just after the origin saw it.
    let log = eventually(60, "the second fetch recorded", || async {
        let (status, log) = svc
            .call(
                "GET",
                "/v1/apps/wx1/periodic-fetch/log?user_id=u1",
                &keys.developer,
                None,
            )
            .await;
        assert_eq!(status, 200);
        (log["attempts"].as_array().unwrap().len() >= 2).then_some(log)
    })
    .await;
    let text = log.to_string();
    assert!(
        !text.contains("tok") && !text.contains("127.0.0.2"),
        "{text}"
    );
    assert!(!svc.stderr().contains("tok 1"), "token leaked into logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p9_p11_p13_p14_fetch_now_outcomes_304_too_large_and_retry_after() {
    let dir = temp_dir("fetchnow");
    let origin = Origin::default();
    let url = origin.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let keys = periodic_setup(&svc, &url).await;

    let now = |body: Value| {
        svc.call(
            "POST",
            "/v1/apps/wx1/periodic-fetch/fetch-now",
            &keys.developer,
            Some(body),
        )
    };
    let (status, body) = now(json!({"user_id": "u1"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("token_not_set"))
    );
    svc.call(
        "PUT",
        "/v1/apps/wx1/background-fetch/token",
        &keys.device,
        Some(json!({"token": "t"})),
    )
    .await;

    origin.set(Behaviour::WithEtag("\"v1\"".into(), "first".into()));
    let (status, body) = now(json!({"user_id": "u1"})).await;
    assert_eq!(
        (
            status,
            body["outcome"].as_str(),
            body["http_status"].as_u64()
        ),
        (200, Some("ok"), Some(200))
    );
    let (_, body) = now(json!({"user_id": "u1"})).await;
    assert_eq!(body["outcome"], "not_modified");
    let last = origin.requests.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(last.get("if-none-match").unwrap(), "\"v1\"");

    origin.set(Behaviour::Huge);
    assert_eq!(
        now(json!({"user_id": "u1"})).await.1["outcome"],
        "too_large"
    );
    // Launched, so the pair is eligible and its next fetch is planned (P7).
    assert_eq!(
        svc.call("POST", "/v1/apps/wx1/launch", &keys.device, None)
            .await
            .0,
        204
    );
    origin.set(Behaviour::Status(503, Some(7200)));
    let (_, body) = now(json!({"user_id": "u1"})).await;
    assert_eq!(
        (body["outcome"].as_str(), body["http_status"].as_u64()),
        (Some("http_status"), Some(503))
    );
    // Failures keep the cached data (P14).
    let (_, cached) = svc
        .call("GET", "/v1/apps/wx1/background-fetch", &keys.device, None)
        .await;
    assert_eq!(cached["fetched_data"], "first");
    // The explanation names the failure count and the rule, and Retry-After (2 h)
    // outweighs the second failure's 15 minutes (P9).
    let (_, explain) = svc
        .call(
            "GET",
            "/v1/apps/wx1/periodic-fetch/explain?user_id=u1",
            &keys.developer,
            None,
        )
        .await;
    assert_eq!(explain["consecutive_failures"], 2, "{explain}");
    assert!(
        explain["why"].as_str().unwrap().contains("P9")
            || explain["why"].as_str().unwrap().contains("P7"),
        "{explain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_p4_grayscale_split_and_promotion() {
    let dir = temp_dir("gray");
    let main = Origin::default();
    let gray = Origin::default();
    main.set(Behaviour::Body("main".into()));
    gray.set(Behaviour::Body("gray".into()));
    let (main_url, gray_url) = (main.start().await, gray.start().await);
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let keys = periodic_setup(&svc, &main_url).await;
    let put = |gray: Value| {
        svc.call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &keys.developer,
            Some(json!({"enabled": true, "source": {"url": main_url}, "gray": gray})),
        )
    };
    assert_eq!(
        put(json!({"url": gray_url, "percent": 0, "testers": ["u1"]}))
            .await
            .0,
        200
    );
    svc.call(
        "PUT",
        "/v1/apps/wx1/background-fetch/token",
        &keys.device,
        Some(json!({"token": "t"})),
    )
    .await;
    let fetch = || {
        svc.call(
            "POST",
            "/v1/apps/wx1/periodic-fetch/fetch-now",
            &keys.developer,
            Some(json!({"user_id": "u1"})),
        )
    };
    fetch().await;
    assert_eq!(
        svc.call("GET", "/v1/apps/wx1/background-fetch", &keys.device, None)
            .await
            .1["fetched_data"],
        "gray"
    );
    // Lowering or withdrawing a rollout is refused and changes nothing (P3).
    assert_eq!(
        put(json!(null)).await.1["error"]["code"],
        "gray_cannot_retract"
    );
    // 100 % promotes the gray URL to the main URL and ends the rollout.
    let (status, setting) = put(json!({"url": gray_url, "percent": 100, "testers": []})).await;
    assert_eq!(status, 200);
    assert_eq!(setting["source"]["url"], gray_url.as_str());
    assert!(setting["gray"].is_null());
}

/// A provider with one interval form definition and a device with that form.
async fn widget_setup(
    svc: &Service,
    refresh_url: &str,
    config: Value,
    system_app: bool,
) -> (String, String, String) {
    let (status, provider) = svc
        .call("POST", "/v1/admin/providers", &svc.operator, Some(json!({"provider": "com.example.weather", "refresh_url": refresh_url, "system_app": system_app, "api_version": 11})))
        .await;
    assert_eq!(status, 201, "{provider}");
    let provider_key = provider["provider_key"].as_str().unwrap().to_string();
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/providers/com.example.weather/form-config",
            &provider_key,
            Some(config),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, device) = svc
        .call(
            "POST",
            "/v1/admin/devices",
            &svc.operator,
            Some(json!({"device_id": "d1", "user_id": "u1", "zone": "UTC"})),
        )
        .await;
    assert_eq!(status, 201);
    (
        provider_key,
        device["device_key"].as_str().unwrap().to_string(),
        provider["signing_secret"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_f14_f20_f21_widget_interval_next_refresh_hidden_catch_up_and_sse() {
    let dir = temp_dir("widget");
    let provider = Provider::default();
    let refresh_url = provider.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let config =
        json!({"forms": [{"name": "weather", "updateEnabled": true, "updateDuration": 1}]});
    let (provider_key, device_key, secret) = widget_setup(&svc, &refresh_url, config, false).await;

    // A host listens for events before the form exists.
    let events = svc
        .client
        .get(format!("{}/v1/events", svc.base))
        .bearer_auth(&device_key)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut stream = events;

    let (status, form) = svc
        .call(
            "POST",
            "/v1/forms",
            &device_key,
            Some(
                json!({"provider": "com.example.weather", "form_name": "weather", "hidden": false}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{form}");
    let form_id = form["form_id"].as_str().unwrap().to_string();

    // Initial data (trigger add), then interval refreshes every 30 virtual minutes.
    eventually(30, "add and two interval deliveries", || async {
        let t = provider.triggers(&form_id);
        (t.first().map(String::as_str) == Some("add")
            && t.iter().filter(|x| *x == "interval").count() >= 2)
            .then_some(())
    })
    .await;
    // The provider can check the signature the way api.md tells it to.
    let (id, signature, _, raw) = provider.deliveries.lock().unwrap()[0].clone();
    assert!(id.starts_with("dlv_"));
    let (t, v1) = signature.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{raw}").as_bytes());
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1);

    // The provider's answer became the form's data, and reached the SSE client.
    let (status, data) = svc
        .call(
            "GET",
            &format!("/v1/forms/{form_id}/data"),
            &device_key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{data}");
    assert!(data["data"]["n"].as_i64().unwrap() >= 1);
    let mut seen = String::new();
    let got_event = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: form_data") && seen.contains(&form_id) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got_event, Ok(true), "{seen}");

    // Next-refresh: 5 minutes minimum (F13), then due.
    let (status, body) = svc
        .call(
            "POST",
            &format!("/v1/forms/{form_id}/next-refresh"),
            &provider_key,
            Some(json!({"minutes": 4})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_next_refresh"))
    );
    let (status, body) = svc
        .call(
            "POST",
            &format!("/v1/forms/{form_id}/next-refresh"),
            &provider_key,
            Some(json!({"minutes": 5})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["due_at"].as_str().is_some());
    eventually(30, "next delivery", || async {
        provider
            .triggers(&form_id)
            .contains(&"next".to_string())
            .then_some(())
    })
    .await;

    // Hidden: triggers are deferred; shown: one visible catch-up.
    assert_eq!(
        svc.call(
            "POST",
            &format!("/v1/forms/{form_id}/visibility"),
            &device_key,
            Some(json!({"visible": false}))
        )
        .await
        .0,
        204
    );
    let before = provider.triggers(&form_id).len();
    let explain = eventually(30, "a deferred interval", || async {
        let (_, e) = svc
            .call(
                "GET",
                &format!("/v1/forms/{form_id}/explain"),
                &device_key,
                None,
            )
            .await;
        e["deferred"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
            .then_some(e)
    })
    .await;
    assert_eq!(explain["visible"], false);
    assert!(explain["next_planned"].as_array().unwrap().len() <= 10);
    assert_eq!(
        provider.triggers(&form_id).len(),
        before,
        "nothing is delivered to a hidden form"
    );
    svc.call(
        "POST",
        &format!("/v1/forms/{form_id}/visibility"),
        &device_key,
        Some(json!({"visible": true})),
    )
    .await;
    eventually(30, "visible catch-up", || async {
        provider
            .triggers(&form_id)
            .contains(&"visible".to_string())
            .then_some(())
    })
    .await;
    let catch_up = provider
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .find(|d| d.2["trigger"] == "visible")
        .unwrap()
        .2
        .clone();
    assert_eq!(catch_up["deferred"], json!(["interval"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f16_network_recovery_and_delivery_retries_keep_the_delivery_id() {
    let dir = temp_dir("network");
    let provider = Provider::default();
    *provider.fail_first.lock().unwrap() = 2;
    let refresh_url = provider.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let config = json!({"forms": [{"name": "clock", "conditionUpdate": ["network"]}]});
    let (_, device_key, _) = widget_setup(&svc, &refresh_url, config, true).await;
    let (_, form) = svc
        .call(
            "POST",
            "/v1/forms",
            &device_key,
            Some(json!({"provider": "com.example.weather", "form_name": "clock", "hidden": false})),
        )
        .await;
    let form_id = form["form_id"].as_str().unwrap().to_string();
    // The add delivery fails twice, then succeeds, always under the same id.
    eventually(30, "add delivered after retries", || async {
        (provider.triggers(&form_id).len() >= 3).then_some(())
    })
    .await;
    let ids: Vec<String> = provider
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .take(3)
        .map(|d| d.0.clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    let (_, explain) = svc
        .call(
            "GET",
            &format!("/v1/forms/{form_id}/explain"),
            &device_key,
            None,
        )
        .await;
    assert_eq!(explain["network_recovery"], true, "{explain}");
    // An outage reported after it ended: offline since 20 minutes ago by the service's clock.
    let health: Value = svc
        .client
        .get(format!("{}/healthz", svc.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now: jiff::Timestamp = health["now"].as_str().unwrap().parse().unwrap();
    let future = now
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap()
        .to_string();
    let (status, _) = svc
        .call(
            "POST",
            "/v1/device/network",
            &device_key,
            Some(json!({"online": true, "since": future})),
        )
        .await;
    assert_eq!(status, 400, "since in the future");
    let long = now
        .checked_sub(jiff::SignedDuration::from_mins(20))
        .unwrap()
        .to_string();
    assert_eq!(
        svc.call(
            "POST",
            "/v1/device/network",
            &device_key,
            Some(json!({"online": true, "since": long}))
        )
        .await
        .0,
        204
    );
    // A report older than the previous one is refused and triggers nothing.
    let stale = now
        .checked_sub(jiff::SignedDuration::from_mins(5))
        .unwrap()
        .to_string();
    let (status, _) = svc
        .call(
            "POST",
            "/v1/device/network",
            &device_key,
            Some(json!({"online": true, "since": stale})),
        )
        .await;
    assert_eq!(status, 400, "since before the previous report");
    eventually(30, "network delivery", || async {
        provider
            .triggers(&form_id)
            .contains(&"network".to_string())
            .then_some(())
    })
    .await;
    let network_count = provider
        .triggers(&form_id)
        .iter()
        .filter(|t| *t == "network")
        .count();
    assert_eq!(
        network_count, 1,
        "the 5-minute outage triggered nothing (F16)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let dir = temp_dir("badinput");
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let origin = Origin::default();
    let url = origin.start().await;
    let keys = periodic_setup(&svc, &url).await;
    let code = |v: &Value| v["error"]["code"].as_str().map(str::to_string);

    // 401: no key, unknown key, wrong kind of key.
    assert_eq!(svc.call("POST", "/v1/admin/apps", "", None).await.0, 401);
    assert_eq!(
        svc.call(
            "POST",
            "/v1/admin/apps",
            "rfdo_0000000000000000000000000000000000000000",
            None
        )
        .await
        .0,
        401
    );
    let (status, body) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &keys.device,
            Some(json!({"appid": "x", "subject": "organization"})),
        )
        .await;
    assert_eq!((status, code(&body)), (401, Some("unauthorized".into())));
    // 401: malformed Authorization headers.
    for header in [
        "Basic cmZkbzp4",
        "Bearer",
        "Bearer ",
        "bearer rfdo_x",
        "rfdo_abc",
        "Bearer rfdx_0000",
    ] {
        let response = svc
            .client
            .post(format!("{}/v1/admin/apps", svc.base))
            .header("authorization", header)
            .json(&json!({"appid": "x", "subject": "organization"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{header}");
    }
    // 400: malformed JSON, wrong types, unknown fields, bad zone, hostile URLs.
    let raw = svc
        .client
        .post(format!("{}/v1/admin/apps", svc.base))
        .bearer_auth(&svc.operator)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let (status, body) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &svc.operator,
            Some(json!({"appid": 5, "subject": "organization"})),
        )
        .await;
    assert_eq!((status, code(&body)), (400, Some("invalid_request".into())));
    let (status, _) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &svc.operator,
            Some(json!({"appid": "a", "subject": "organization", "extra": 1})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = svc
        .call(
            "POST",
            "/v1/admin/devices",
            &svc.operator,
            Some(json!({"device_id": "d2", "user_id": "u", "zone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!((status, code(&body)), (400, Some("invalid_zone".into())));
    for hostile in [
        "http://169.254.169.254/latest",
        "https://127.0.0.1/x",
        "file:///etc/passwd",
        "https://user:pw@example.com/",
    ] {
        let (status, body) = svc
            .call(
                "PUT",
                "/v1/apps/wx1/periodic-fetch",
                &keys.developer,
                Some(json!({"enabled": true, "source": {"url": hostile}})),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (400, Some("invalid_url".into())),
            "{hostile}"
        );
    }
    // The stored setting is untouched by the rejected ones.
    let (status, _) = svc
        .call(
            "POST",
            "/v1/apps/wx1/periodic-fetch/fetch-now",
            &keys.developer,
            Some(json!({"user_id": "nobody"})),
        )
        .await;
    assert_eq!(status, 409);
    // 413: bodies over 1 MiB.
    let big = json!({"appid": "x".repeat(1_100_000), "subject": "organization"});
    assert_eq!(
        svc.call("POST", "/v1/admin/apps", &svc.operator, Some(big))
            .await
            .0,
        413
    );
    // 404: unknown ids and other principals' objects look the same.
    assert_eq!(
        code(
            &svc.call("GET", "/v1/forms/frm_nope/data", &keys.device, None)
                .await
                .1
        ),
        Some("form_not_found".into())
    );
    let (_, other) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &svc.operator,
            Some(json!({"appid": "wx2", "subject": "organization"})),
        )
        .await;
    let other_key = other["developer_key"].as_str().unwrap();
    let (status, body) = svc
        .call(
            "GET",
            "/v1/apps/wx1/periodic-fetch/log?user_id=u1",
            other_key,
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (404, Some("app_not_found".into())));
    // Rotation: the old key stops working at once.
    let (status, rotated) = svc
        .call("POST", "/v1/admin/apps/wx2/rotate-key", &svc.operator, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        svc.call(
            "GET",
            "/v1/apps/wx2/periodic-fetch/log?user_id=u1",
            other_key,
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        svc.call(
            "GET",
            "/v1/apps/wx2/periodic-fetch/log?user_id=u1",
            rotated["developer_key"].as_str().unwrap(),
            None
        )
        .await
        .0,
        200
    );
    // OpenAPI and health need no key.
    let doc: Value = svc
        .client
        .get(format!("{}/v1/openapi.json", svc.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/forms/{form_id}/next-refresh"]["post"].is_object());
    // Request bodies are described by schemas derived from the handlers' own types, and
    // every reference resolves inside the document.
    let body = &doc["paths"]["/v1/admin/apps"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    let text = doc.to_string();
    assert!(
        text.contains("\"appid\"") && text.contains("\"subject\""),
        "{body}"
    );
    let mut refs = 0;
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        let name = target.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {target}"
        );
        refs += 1;
    }
    assert!(
        refs >= 12,
        "request bodies refer to their schemas ({refs} refs)"
    );
    assert!(doc["paths"]["/v1/apps/{appid}/periodic-fetch"]["put"]["requestBody"].is_object());
    assert_eq!(
        svc.client
            .get(format!("{}/healthz", svc.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_sigkill_restart_loses_nothing_committed_and_never_redelivers_under_a_new_id() {
    let dir = temp_dir("restart");
    let provider = Provider::default();
    let refresh_url = provider.start().await;
    let epoch = epoch_now();
    let svc = Service::start(&dir, &epoch, &[]);
    let config = json!({"forms": [{"name": "w", "updateEnabled": true, "updateDuration": 1}]});
    let (_, device_key, _) = widget_setup(&svc, &refresh_url, config, false).await;
    let mut forms = Vec::new();
    for _ in 0..5 {
        let (_, form) = svc
            .call(
                "POST",
                "/v1/forms",
                &device_key,
                Some(json!({"provider": "com.example.weather", "form_name": "w"})),
            )
            .await;
        forms.push(form["form_id"].as_str().unwrap().to_string());
    }
    eventually(30, "some interval deliveries", || async {
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
    svc.kill9();
    let svc = Service::start(&dir, &epoch, &[]);
    // Everything committed is still there, and refreshes go on.
    let count_before = provider.deliveries.lock().unwrap().len();
    eventually(30, "deliveries after restart", || async {
        (provider.deliveries.lock().unwrap().len() >= count_before + 5).then_some(())
    })
    .await;
    for form in &forms {
        let (status, _) = svc
            .call(
                "GET",
                &format!("/v1/forms/{form}/explain"),
                &device_key,
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    // Each decision (form, trigger, instant) was delivered under exactly one id.
    let mut ids_per_slot: std::collections::HashMap<
        (String, String, String),
        std::collections::HashSet<String>,
    > = Default::default();
    for (id, _, body, _) in provider.deliveries.lock().unwrap().iter() {
        let slot = (
            body["form_id"].to_string(),
            body["trigger"].to_string(),
            body["decided_at"].to_string(),
        );
        ids_per_slot.entry(slot).or_default().insert(id.clone());
    }
    let duplicated: Vec<_> = ids_per_slot
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    assert!(duplicated.is_empty(), "{duplicated:?}");
    assert!(svc.stop().success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_replay_hidden_provider_data_rate_limit_and_metrics() {
    let dir = temp_dir("sse");
    let provider = Provider::default();
    // 204 answers keep the data, so only the provider's own updates change it here.
    *provider.no_data.lock().unwrap() = true;
    let refresh_url = provider.start().await;
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let svc = Service::start(
        &dir,
        &epoch_now(),
        &[
            "--metrics-listen",
            &metrics,
            "--rate-limit-per-second",
            "1",
            "--rate-limit-burst",
            "12",
        ],
    );
    let config = json!({"forms": [{"name": "note"}]});
    let (provider_key, device_key, _) = widget_setup(&svc, &refresh_url, config, false).await;
    let (_, form) = svc
        .call(
            "POST",
            "/v1/forms",
            &device_key,
            Some(json!({"provider": "com.example.weather", "form_name": "note", "hidden": true})),
        )
        .await;
    let form_id = form["form_id"].as_str().unwrap().to_string();

    // Data the provider sends while the form is hidden is kept, and announced on show.
    assert_eq!(
        svc.call(
            "PUT",
            &format!("/v1/forms/{form_id}/data"),
            &provider_key,
            Some(json!({"text": "while hidden"}))
        )
        .await
        .0,
        200
    );
    let mut first = svc
        .client
        .get(format!("{}/v1/events", svc.base))
        .bearer_auth(&device_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        svc.call(
            "POST",
            &format!("/v1/forms/{form_id}/visibility"),
            &device_key,
            Some(json!({"visible": true}))
        )
        .await
        .0,
        204
    );
    let seen = read_sse_until(&mut first, "while hidden").await;
    assert!(seen.contains("while hidden"), "{seen}");
    let last_id: i64 = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .filter_map(|v| v.trim().parse().ok())
        .max()
        .expect("events carry ids");
    drop(first);

    // Missed while disconnected: replayed after Last-Event-ID, and nothing older.
    assert_eq!(
        svc.call(
            "PUT",
            &format!("/v1/forms/{form_id}/data"),
            &provider_key,
            Some(json!({"text": "missed"}))
        )
        .await
        .0,
        200
    );
    let mut again = svc
        .client
        .get(format!("{}/v1/events", svc.base))
        .bearer_auth(&device_key)
        .header("last-event-id", last_id.to_string())
        .send()
        .await
        .unwrap();
    let replay = read_sse_until(&mut again, "missed").await;
    assert!(
        replay.contains("missed") && !replay.contains("while hidden"),
        "{replay}"
    );

    // `since` may not be before the previous network report.
    let health: Value = svc
        .client
        .get(format!("{}/healthz", svc.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now: jiff::Timestamp = health["now"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        svc.call(
            "POST",
            "/v1/device/network",
            &device_key,
            Some(json!({"online": false}))
        )
        .await
        .0,
        204
    );
    let earlier = now
        .checked_sub(jiff::SignedDuration::from_hours(2))
        .unwrap()
        .to_string();
    let (status, body) = svc
        .call(
            "POST",
            "/v1/device/network",
            &device_key,
            Some(json!({"online": true, "since": earlier})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    // A key over its limit gets 429 with Retry-After; another key is unaffected.
    let mut limited = None;
    for _ in 0..60 {
        let response = svc
            .client
            .get(format!("{}/v1/forms/{form_id}/data", svc.base))
            .bearer_auth(&device_key)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the burst of 12 runs out within 60 quick requests");
    assert!(limited.headers().get("retry-after").is_some());
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        svc.call(
            "GET",
            &format!("/v1/forms/{form_id}/explain"),
            &provider_key,
            None
        )
        .await
        .0,
        200
    );

    // Prometheus metrics on their own listener.
    let text = svc
        .client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "refreshd_deliveries_total",
        "refreshd_due_subjects",
        "refreshd_due_backlog",
        "refreshd_store_commit_seconds",
        "refreshd_sse_clients",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_cloud_source_via_config_file_and_f23a_zone_change() {
    let dir = temp_dir("cloud");
    let origin = Origin::default();
    origin.set(Behaviour::Body("from the cloud".into()));
    let feed = origin.start().await;
    let base = feed.trim_end_matches("/feed");
    let config = dir.join("refreshd.toml");
    std::fs::write(
        &config,
        format!("[cloud.envs.prod-7f3a]\nbase_url = \"{base}\"\n"),
    )
    .unwrap();
    let svc = Service::start(&dir, &epoch_now(), &["--config", config.to_str().unwrap()]);

    let (_, app) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &svc.operator,
            Some(json!({"appid": "ind1", "subject": "individual"})),
        )
        .await;
    let developer = app["developer_key"].as_str().unwrap().to_string();
    // Individuals may not use URL sources (P2); unknown cloud environments are refused.
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/apps/ind1/periodic-fetch",
            &developer,
            Some(json!({"enabled": true, "source": {"url": "https://data.example.com/feed"}})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("source_not_allowed")),
        "{body}"
    );
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/apps/ind1/periodic-fetch",
            &developer,
            Some(
                json!({"enabled": true, "source": {"cloud": {"env": "nope", "function": "feed"}}}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = svc.call("PUT", "/v1/apps/ind1/periodic-fetch", &developer, Some(json!({"enabled": true, "source": {"cloud": {"env": "prod-7f3a", "function": "feed"}}}))).await;
    assert_eq!(status, 200, "{body}");

    let (_, device) = svc
        .call(
            "POST",
            "/v1/admin/devices",
            &svc.operator,
            Some(json!({"device_id": "d1", "user_id": "u1", "zone": "UTC"})),
        )
        .await;
    let device_key = device["device_key"].as_str().unwrap().to_string();
    svc.call(
        "PUT",
        "/v1/apps/ind1/background-fetch/token",
        &device_key,
        Some(json!({"token": "t"})),
    )
    .await;
    let (_, report) = svc
        .call(
            "POST",
            "/v1/apps/ind1/periodic-fetch/fetch-now",
            &developer,
            Some(json!({"user_id": "u1"})),
        )
        .await;
    assert_eq!(report["outcome"], "ok", "{report}");
    let (_, cached) = svc
        .call("GET", "/v1/apps/ind1/background-fetch", &device_key, None)
        .await;
    assert_eq!(cached["fetched_data"], "from the cloud");

    // F23a: a new zone moves the device's midnight.
    let provider = Provider::default();
    let refresh_url = provider.start().await;
    let (_, p) = svc.call("POST", "/v1/admin/providers", &svc.operator, Some(json!({"provider": "p", "refresh_url": refresh_url, "system_app": false, "api_version": 11}))).await;
    let provider_key = p["provider_key"].as_str().unwrap();
    svc.call(
        "PUT",
        "/v1/providers/p/form-config",
        provider_key,
        Some(json!({"forms": [{"name": "w"}]})),
    )
    .await;
    let (_, form) = svc
        .call(
            "POST",
            "/v1/forms",
            &device_key,
            Some(json!({"provider": "p", "form_name": "w"})),
        )
        .await;
    let form_id = form["form_id"].as_str().unwrap().to_string();
    let resets = |e: &Value| e["quota_resets_at"].as_str().unwrap().to_string();
    let (_, before) = svc
        .call(
            "GET",
            &format!("/v1/forms/{form_id}/explain"),
            &device_key,
            None,
        )
        .await;
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/device/zone",
            &device_key,
            Some(json!({"zone": "Not/AZone"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_zone"))
    );
    assert_eq!(
        svc.call(
            "PUT",
            "/v1/device/zone",
            &device_key,
            Some(json!({"zone": "Pacific/Kiritimati"}))
        )
        .await
        .0,
        204
    );
    let (_, after) = svc
        .call(
            "GET",
            &format!("/v1/forms/{form_id}/explain"),
            &device_key,
            None,
        )
        .await;
    assert_ne!(resets(&before), resets(&after));
    assert!(
        resets(&after).ends_with("10:00:00Z"),
        "midnight at +14:00 is 10:00Z: {after}"
    );
}
