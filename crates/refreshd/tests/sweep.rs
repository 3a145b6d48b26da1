//! Every endpoint, called with every principal's key against every other principal's
//! ids: nothing that is not the caller's may answer anything but 401 or 404, and nothing
//! may change. Also: a provider verifies a delivery's signature, and rejects a replay
//! outside the five-minute window.

mod support;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::*;

/// How a provider should check `refreshd-signature` (api.md): HMAC-SHA256 of
/// `"<t>.<body>"` with its signing secret, and `t` within five minutes of its own clock.
fn provider_accepts(secret: &str, header: &str, body: &str, provider_now: i64) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Ok(t_seconds) = t.parse::<i64>() else {
        return false;
    };
    if (provider_now - t_seconds).abs() > 300 {
        return false;
    }
    let Ok(expected) = hex::decode(v1) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&expected).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_principal_reaches_another_principals_objects() {
    let dir = temp_dir("sweep");
    let provider_server = Provider::default();
    let refresh_url = provider_server.start().await;
    let origin = Origin::default();
    let feed = origin.start().await;
    let svc = Service::start(
        &dir,
        &epoch_now(),
        &[
            "--rate-limit-per-second",
            "100000",
            "--rate-limit-burst",
            "100000",
        ],
    );
    let op = svc.operator.clone();

    let mut developer = Vec::new();
    for appid in ["wx1", "wx2"] {
        let (_, app) = svc
            .call(
                "POST",
                "/v1/admin/apps",
                &op,
                Some(json!({"appid": appid, "subject": "organization"})),
            )
            .await;
        let key = app["developer_key"].as_str().unwrap().to_string();
        svc.call(
            "PUT",
            &format!("/v1/apps/{appid}/periodic-fetch"),
            &key,
            Some(json!({"enabled": true, "source": {"url": feed}})),
        )
        .await;
        developer.push(key);
    }
    let mut provider = Vec::new();
    let mut secrets = Vec::new();
    for name in ["p1", "p2"] {
        let (_, p) = svc.call("POST", "/v1/admin/providers", &op, Some(json!({"provider": name, "refresh_url": refresh_url, "system_app": false, "api_version": 11}))).await;
        let key = p["provider_key"].as_str().unwrap().to_string();
        svc.call(
            "PUT",
            &format!("/v1/providers/{name}/form-config"),
            &key,
            Some(json!({"forms": [{"name": "w"}]})),
        )
        .await;
        provider.push(key);
        secrets.push(p["signing_secret"].as_str().unwrap().to_string());
    }
    let mut device = Vec::new();
    let mut form = Vec::new();
    for (i, (id, user)) in [("d1", "u1"), ("d2", "u2")].into_iter().enumerate() {
        let (_, d) = svc
            .call(
                "POST",
                "/v1/admin/devices",
                &op,
                Some(json!({"device_id": id, "user_id": user, "zone": "UTC"})),
            )
            .await;
        let key = d["device_key"].as_str().unwrap().to_string();
        let (_, f) = svc
            .call(
                "POST",
                "/v1/forms",
                &key,
                Some(json!({"provider": format!("p{}", i + 1), "form_name": "w"})),
            )
            .await;
        form.push(f["form_id"].as_str().unwrap().to_string());
        // u2 has data cached for wx2; u1 for wx1.
        let appid = format!("wx{}", i + 1);
        svc.call(
            "PUT",
            &format!("/v1/apps/{appid}/background-fetch/token"),
            &key,
            Some(json!({"token": format!("secret-{user}")})),
        )
        .await;
        svc.call("POST", &format!("/v1/apps/{appid}/launch"), &key, None)
            .await;
        device.push(key);
    }
    eventually(30, "both users' data cached", || async {
        let a = svc
            .call("GET", "/v1/apps/wx1/background-fetch", &device[0], None)
            .await
            .0;
        let b = svc
            .call("GET", "/v1/apps/wx2/background-fetch", &device[1], None)
            .await
            .0;
        (a == 200 && b == 200).then_some(())
    })
    .await;
    let (_, u2_cache_before) = svc
        .call("GET", "/v1/apps/wx2/background-fetch", &device[1], None)
        .await;

    // Each probe: (caller, method, path, body), all aimed at objects the caller does not own.
    let f2 = &form[1];
    let mut probes: Vec<(&str, &str, String, Option<Value>)> = Vec::new();
    let gray = json!({"enabled": false, "source": {"url": "https://evil.example/x"}});
    for key in [
        &developer[0],
        &provider[0],
        &provider[1],
        &device[0],
        &device[1],
    ] {
        probes.push((
            key,
            "POST",
            "/v1/admin/apps".into(),
            Some(json!({"appid": "x", "subject": "organization"})),
        ));
        probes.push((
            key,
            "POST",
            "/v1/admin/devices".into(),
            Some(json!({"device_id": "x", "user_id": "x", "zone": "UTC"})),
        ));
        probes.push((key, "POST", "/v1/admin/providers".into(), Some(json!({"provider": "x", "refresh_url": "https://x.example/", "system_app": true, "api_version": 11}))));
        probes.push((key, "POST", "/v1/admin/apps/wx2/rotate-key".into(), None));
        probes.push((
            key,
            "POST",
            "/v1/admin/providers/p2/rotate-signing-secret".into(),
            Some(json!({})),
        ));
        probes.push((
            key,
            "PUT",
            "/v1/admin/providers/p2/market-update-duration".into(),
            Some(json!({"update_duration": 336})),
        ));
    }
    for key in [&op, &developer[0], &provider[0], &device[0]] {
        probes.push((
            key,
            "PUT",
            "/v1/apps/wx2/periodic-fetch".into(),
            Some(gray.clone()),
        ));
        probes.push((
            key,
            "POST",
            "/v1/apps/wx2/periodic-fetch/fetch-now".into(),
            Some(json!({"user_id": "u2"})),
        ));
        probes.push((
            key,
            "GET",
            "/v1/apps/wx2/periodic-fetch/log?user_id=u2".into(),
            None,
        ));
        probes.push((
            key,
            "GET",
            "/v1/apps/wx2/periodic-fetch/explain?user_id=u2".into(),
            None,
        ));
        probes.push((
            key,
            "PUT",
            "/v1/providers/p2/form-config".into(),
            Some(json!({"forms": []})),
        ));
        probes.push((
            key,
            "POST",
            format!("/v1/forms/{f2}/next-refresh"),
            Some(json!({"minutes": 5})),
        ));
        probes.push((
            key,
            "PUT",
            format!("/v1/forms/{f2}/data"),
            Some(json!({"stolen": true})),
        ));
        probes.push((key, "GET", format!("/v1/forms/{f2}/explain"), None));
        probes.push((key, "GET", format!("/v1/forms/{f2}/data"), None));
        probes.push((key, "DELETE", format!("/v1/forms/{f2}"), None));
        probes.push((
            key,
            "POST",
            format!("/v1/forms/{f2}/visibility"),
            Some(json!({"visible": false})),
        ));
    }
    // A device reads its own user's data only: u1 has nothing cached for wx2.
    probes.push((
        &device[0],
        "GET",
        "/v1/apps/wx2/background-fetch".into(),
        None,
    ));
    // Wrong kinds for device endpoints.
    for key in [&op, &developer[1], &provider[1]] {
        probes.push((
            key,
            "POST",
            "/v1/forms".into(),
            Some(json!({"provider": "p2", "form_name": "w"})),
        ));
        probes.push((
            key,
            "POST",
            "/v1/device/network".into(),
            Some(json!({"online": false})),
        ));
        probes.push((
            key,
            "PUT",
            "/v1/device/zone".into(),
            Some(json!({"zone": "UTC"})),
        ));
        probes.push((key, "GET", "/v1/events".into(), None));
        probes.push((key, "POST", "/v1/apps/wx2/launch".into(), None));
        probes.push((
            key,
            "PUT",
            "/v1/apps/wx2/background-fetch/token".into(),
            Some(json!({"token": "mine"})),
        ));
    }
    let mut leaks = Vec::new();
    for (key, method, path, body) in &probes {
        let (status, answer) = svc.call(method, path, key, body.clone()).await;
        if status != 401 && status != 404 {
            leaks.push(format!("{method} {path} -> {status} {answer}"));
        }
        assert!(
            !answer.to_string().contains("secret-u2"),
            "a token in an answer: {answer}"
        );
    }
    say(&format!(
        "FIGURES api sweep: {} probes across 7 principals, leaks {}",
        probes.len(),
        leaks.len()
    ));
    assert!(leaks.is_empty(), "{leaks:#?}");

    // Nothing changed for the owners.
    assert_eq!(
        svc.call(
            "GET",
            &format!("/v1/forms/{f2}/explain"),
            &provider[1],
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        svc.call("GET", &format!("/v1/forms/{f2}/explain"), &device[1], None)
            .await
            .1["visible"],
        true
    );
    assert_eq!(
        svc.call(
            "GET",
            "/v1/apps/wx2/periodic-fetch/log?user_id=u2",
            &developer[1],
            None
        )
        .await
        .0,
        200
    );
    let (_, u2_cache_after) = svc
        .call("GET", "/v1/apps/wx2/background-fetch", &device[1], None)
        .await;
    assert_eq!(u2_cache_before, u2_cache_after);

    // The provider verifies deliveries, and rejects replays outside the window.
    let (_, signature, _, raw) = provider_server.deliveries.lock().unwrap()[0].clone();
    let now = jiff::Timestamp::now().as_second();
    let secret_of_p1 = &secrets[0];
    let secret_of_p2 = &secrets[1];
    let accepted = provider_accepts(secret_of_p1, &signature, &raw, now)
        || provider_accepts(secret_of_p2, &signature, &raw, now);
    assert!(accepted, "a fresh delivery verifies");
    assert!(
        !provider_accepts(secret_of_p1, &signature, &raw, now + 301)
            && !provider_accepts(secret_of_p2, &signature, &raw, now + 301),
        "a replay six minutes later is rejected"
    );
    let tampered = raw.replace("\"add\"", "\"interval\"");
    assert!(
        !provider_accepts(secret_of_p1, &signature, &tampered, now)
            && !provider_accepts(secret_of_p2, &signature, &tampered, now)
    );
}

fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{text}");
}
