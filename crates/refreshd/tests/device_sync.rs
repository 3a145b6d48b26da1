//! Data on the device, end to end through the running binary: periodic data pushed to
//! every device of its user (`event: fetched_data`), the one-request catch-up
//! (`GET /v1/device/sync`), where an event stream starts, and periodic fetches signed
//! for the developer's server.

mod support;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::*;

/// An organization app fetching from `url`, and devices `d1`, `d2` of user `u1` and
/// `d3` of user `u2`. Returns (developer key, app signing secret, device keys).
async fn app_and_devices(svc: &Service, url: &str) -> (String, String, Vec<String>) {
    let app = svc
        .create(
            "/v1/admin/apps",
            json!({"appid": "wx1", "subject": "organization"}),
        )
        .await;
    let secret = app["signing_secret"].as_str().expect("a signing secret");
    assert_eq!(secret.len(), 64, "{app}");
    let developer = app["developer_key"].as_str().unwrap().to_string();
    svc.fetch_from(&developer, "wx1", url).await;
    let mut keys = Vec::new();
    for (device_id, user_id) in [("d1", "u1"), ("d2", "u1"), ("d3", "u2")] {
        keys.push(svc.create_device(device_id, user_id, "Asia/Shanghai").await);
    }
    (developer, secret.to_string(), keys)
}

async fn sync(svc: &Service, key: &str, cursor: Option<&str>) -> Value {
    let path = match cursor {
        Some(cursor) => format!("/v1/device/sync?cursor={cursor}"),
        None => "/v1/device/sync".to_string(),
    };
    let (status, body) = svc.call("GET", &path, key, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn open_events(svc: &Service, key: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = svc
        .client
        .get(format!("{}/v1/events", svc.base))
        .bearer_auth(key);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// Checks `header` (`t=…,v1=…[,v1=…]`) over `"<t>.<signed>"`; answers the `v1` values
/// that `secret` produced.
fn signatures_matching(secret: &str, header: &str, signed: &str) -> usize {
    let mut parts = header.split(',');
    let t = parts
        .next()
        .and_then(|p| p.strip_prefix("t="))
        .expect("the header starts with t=");
    let now = jiff::Timestamp::now().as_second();
    assert!(
        (now - t.parse::<i64>().unwrap()).abs() <= 300,
        "stamped with the real clock, not the warped one: {header}"
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{signed}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    parts
        .filter_map(|p| p.strip_prefix("v1="))
        .filter(|v| *v == expected)
        .count()
}

fn fetch_now<'a>(
    svc: &'a Service,
    developer: &'a str,
) -> impl std::future::Future<Output = (u16, Value)> + 'a {
    svc.call(
        "POST",
        "/v1/apps/wx1/periodic-fetch/fetch-now",
        developer,
        Some(json!({"user_id": "u1"})),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_data_reaches_every_device_of_the_user_by_push_and_by_sync() {
    let dir = temp_dir("device-sync");
    let origin = Origin::default();
    origin.set(Behaviour::Body("first body".into()));
    let url = origin.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let (developer, secret, keys) = app_and_devices(&svc, &url).await;
    let (d1, d2, d3) = (&keys[0], &keys[1], &keys[2]);

    // Nothing cached yet: a sync is the (empty) whole state.
    let empty = sync(&svc, d2, None).await;
    assert_eq!(empty["reset"], true, "{empty}");
    assert_eq!(empty["apps"], json!([]), "{empty}");

    let mut stream = open_events(&svc, d1, None).await;
    assert_eq!(
        svc.call("POST", "/v1/apps/wx1/launch", d1, None).await.0,
        204
    );
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/apps/wx1/background-fetch/token",
            d1,
            Some(json!({"token": "tok en&1"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, report) = fetch_now(&svc, &developer).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["outcome"], "ok", "{report}");

    // Pushed to the open stream of d1, with the body and its time stamp.
    let seen = read_events_until(&mut stream, "first body").await;
    let pushed: Vec<_> = seen.iter().filter(|e| e.event == "fetched_data").collect();
    let last = pushed
        .last()
        .unwrap_or_else(|| panic!("no fetched_data: {seen:?}"));
    assert_eq!(last.data["appid"], "wx1");
    assert_eq!(last.data["fetched_data"], "first body");
    assert!(last.data["time_stamp"].as_i64().unwrap() > 0);
    drop(stream);

    // d2 (same user, no stream open) catches up in one request; d3 (another user) has
    // nothing.
    let caught_up = sync(&svc, d2, None).await;
    assert_eq!(caught_up["reset"], true);
    assert_eq!(caught_up["apps"][0]["appid"], "wx1", "{caught_up}");
    assert_eq!(caught_up["apps"][0]["fetched_data"], "first body");
    let (_, cached) = svc
        .call(
            "GET",
            "/v1/apps/wx1/background-fetch?fetch_type=periodic",
            d2,
            None,
        )
        .await;
    assert_eq!(caught_up["apps"][0]["time_stamp"], cached["time_stamp"]);
    assert_eq!(sync(&svc, d3, None).await["apps"], json!([]));
    let cursor = caught_up["cursor"].as_str().unwrap().to_string();

    // Nothing new since the cursor: nothing listed.
    let unchanged = sync(&svc, d2, Some(&cursor)).await;
    assert_eq!(unchanged["reset"], false, "{unchanged}");
    assert_eq!(unchanged["apps"], json!([]), "{unchanged}");

    // New data upstream: the sync after the cursor lists exactly it.
    origin.set(Behaviour::Body("second body".into()));
    assert_eq!(fetch_now(&svc, &developer).await.1["outcome"], "ok");
    let changed = sync(&svc, d2, Some(&cursor)).await;
    assert_eq!(changed["reset"], false, "{changed}");
    assert_eq!(
        changed["apps"][0]["fetched_data"], "second body",
        "{changed}"
    );
    assert_ne!(changed["cursor"], cursor.as_str());

    // A device created after the fetch starts with the data as its first event.
    let d4 = svc.create_device("d4", "u1", "Asia/Shanghai").await;
    let mut fresh = open_events(&svc, &d4, None).await;
    let seen = read_events_until(&mut fresh, "second body").await;
    assert!(seen.iter().any(|e| e.event == "fetched_data"), "{seen:?}");
    drop(fresh);

    // A malformed cursor is a clear 400; the answer is compressed when asked.
    let (status, body) = svc
        .call("GET", "/v1/device/sync?cursor=not-a-cursor", d2, None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_cursor", "{body}");
    let compressed = svc
        .client
        .get(format!("{}/v1/device/sync", svc.base))
        .bearer_auth(d2)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(compressed.status(), 200);
    assert_eq!(compressed.headers()["content-encoding"], "gzip");
    // A provider or developer key is the wrong kind.
    assert_eq!(
        svc.call("GET", "/v1/device/sync", &developer, None).await.0,
        401
    );

    // Every fetch was signed over the request target as the developer's server saw it.
    let targets = origin.targets.lock().unwrap().clone();
    let requests = origin.requests.lock().unwrap().clone();
    assert!(!targets.is_empty());
    for (target, (query, headers)) in targets.iter().zip(&requests) {
        assert_eq!(query["token"], "tok en&1", "the P12 query is unchanged");
        let header = headers["refreshd-signature"].to_str().unwrap();
        assert_eq!(signatures_matching(&secret, header, target), 1, "{header}");
        assert_eq!(signatures_matching("wrong", header, target), 0);
    }

    // After a rotation the fetches carry both signatures until the overlap ends.
    let (status, rotated) = svc
        .call(
            "POST",
            "/v1/admin/apps/wx1/rotate-signing-secret",
            &svc.operator,
            Some(json!({"overlap_minutes": 10080})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["appid"], "wx1");
    let new_secret = rotated["signing_secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    let before = origin.count();
    assert_eq!(fetch_now(&svc, &developer).await.1["outcome"], "ok");
    let target = origin.targets.lock().unwrap()[before].clone();
    let header = origin.requests.lock().unwrap()[before].1["refreshd-signature"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(header.matches("v1=").count(), 2, "{header}");
    assert_eq!(signatures_matching(new_secret, &header, &target), 1);
    assert_eq!(signatures_matching(&secret, &header, &target), 1);
    let (status, body) = svc
        .call(
            "POST",
            "/v1/admin/apps/nope/rotate-signing-secret",
            &svc.operator,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("app_not_found"))
    );
    assert!(svc.stop().success());
}

/// A provider with one definition, a device of `u1` and three forms: `a`, `b` shown
/// and `h` hidden. Returns (provider key, device key, [a, b, h]).
async fn widgets(svc: &Service, refresh_url: &str) -> (String, String, Vec<String>) {
    let (status, provider) = svc
        .call("POST", "/v1/admin/providers", &svc.operator, Some(json!({"provider": "p", "refresh_url": refresh_url, "system_app": false, "api_version": 11})))
        .await;
    assert_eq!(status, 201, "{provider}");
    let provider_key = provider["provider_key"].as_str().unwrap().to_string();
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(json!({"forms": [{"name": "note"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let device = svc.create_device("d1", "u1", "Asia/Shanghai").await;
    let mut forms = Vec::new();
    for hidden in [false, false, true] {
        let (status, form) = svc
            .call(
                "POST",
                "/v1/forms",
                &device,
                Some(json!({"provider": "p", "form_name": "note", "hidden": hidden})),
            )
            .await;
        assert_eq!(status, 201, "{form}");
        forms.push(form["form_id"].as_str().unwrap().to_string());
    }
    (provider_key, device, forms)
}

async fn put_data(svc: &Service, provider_key: &str, form_id: &str, text: &str) {
    let (status, body) = svc
        .call(
            "PUT",
            &format!("/v1/forms/{form_id}/data"),
            provider_key,
            Some(json!({"text": text})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_starts_with_the_latest_event_of_each_form_unless_it_resumes_a_known_id() {
    let dir = temp_dir("stream-start");
    let provider = Provider::default();
    // 204 answers: only the provider's own updates change the data here.
    *provider.no_data.lock().unwrap() = true;
    let refresh_url = provider.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let (provider_key, device, forms) = widgets(&svc, &refresh_url).await;
    let (a, b, h) = (&forms[0], &forms[1], &forms[2]);
    // Texts hold a space so that no random id can contain one: `read_events_until`
    // stops at the first event whose JSON contains the marker.
    for text in ["text a1", "text a2", "text a3"] {
        put_data(&svc, &provider_key, a, text).await;
    }
    put_data(&svc, &provider_key, b, "text b1").await;
    // Data for the hidden form waits for it to be shown.
    put_data(&svc, &provider_key, h, "text h1").await;

    // Without Last-Event-ID, and with a malformed or unknown one: the latest event of
    // each form, oldest first, then live events (the marker).
    let mut b_latest = "text b1".to_string();
    for last_event_id in [None, Some("garbage"), Some("987654321")] {
        let mut stream = open_events(&svc, &device, last_event_id).await;
        let marker = format!("text marker-{}", last_event_id.unwrap_or("none"));
        put_data(&svc, &provider_key, b, &marker).await;
        let events = read_events_until(&mut stream, &marker).await;
        let seen = format!("{events:?}");
        let texts: Vec<&str> = events
            .iter()
            .map(|e| e.data["data"]["text"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            texts,
            vec!["text a3", b_latest.as_str(), marker.as_str()],
            "no history, no hidden data: {seen}"
        );
        assert!(events.windows(2).all(|w| w[0].id < w[1].id), "{seen}");
        b_latest = marker;
    }

    // With a kept id: exactly what came after it.
    put_data(&svc, &provider_key, a, "text a4").await;
    let known = read_events_until(&mut open_events(&svc, &device, None).await, "text a4").await;
    let a4 = known
        .iter()
        .find(|e| e.data["data"]["text"] == "text a4")
        .unwrap()
        .id;
    put_data(&svc, &provider_key, a, "text a5").await;
    let mut stream = open_events(&svc, &device, Some(&a4.to_string())).await;
    let seen = read_events_until(&mut stream, "text a5").await;
    let texts: Vec<_> = seen
        .iter()
        .map(|e| {
            e.data["data"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(texts, vec!["text a5"], "{seen:?}");
    drop(stream);

    // A sync without cursor: every form, the hidden one without its unannounced data.
    let state = sync(&svc, &device, None).await;
    assert_eq!(state["reset"], true);
    let listed: Vec<&str> = state["forms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["form_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![a.as_str(), b.as_str(), h.as_str()], "{state}");
    assert_eq!(state["forms"][0]["data"]["text"], "text a5", "{state}");
    assert_eq!(state["forms"][0]["provider"], "p");
    assert_eq!(state["forms"][0]["form_name"], "note");
    assert!(state["forms"][2]["data"].is_null(), "hidden: {state}");
    let cursor = state["cursor"].as_str().unwrap().to_string();

    // Shown: the hidden data is announced, and the sync after the cursor lists that
    // form, a removed one and an added one, nothing else.
    let (status, _) = svc
        .call(
            "POST",
            &format!("/v1/forms/{h}/visibility"),
            &device,
            Some(json!({"visible": true})),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        svc.call("DELETE", &format!("/v1/forms/{b}"), &device, None)
            .await
            .0,
        204
    );
    let (status, added) = svc
        .call(
            "POST",
            "/v1/forms",
            &device,
            Some(json!({"provider": "p", "form_name": "note"})),
        )
        .await;
    assert_eq!(status, 201);
    let added = added["form_id"].as_str().unwrap();
    let changes = sync(&svc, &device, Some(&cursor)).await;
    assert_eq!(changes["reset"], false, "{changes}");
    assert_eq!(changes["removed_forms"], json!([b]), "{changes}");
    let listed: Vec<&str> = changes["forms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["form_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![h.as_str(), added], "{changes}");
    assert_eq!(changes["forms"][0]["data"]["text"], "text h1", "{changes}");
    assert!(svc.stop().success());
}
