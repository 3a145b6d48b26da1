//! Listing and deleting through the running binary: pages of apps, providers and
//! devices, a provider's placed counts, cascading deletes that revoke keys and close
//! streams, and a user erased so that the store file holds no byte of them.

mod support;

use serde_json::{json, Value};
use support::*;

async fn get(svc: &Service, path: &str, key: &str) -> Value {
    let (status, body) = svc.call("GET", path, key, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn ids(page: &Value, field: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_and_deletes_cascade_to_keys_forms_and_streams() {
    let dir = temp_dir("lifecycle");
    let provider = Provider::default();
    *provider.no_data.lock().unwrap() = true;
    let refresh_url = provider.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);

    for appid in ["wx3", "wx1", "wx2"] {
        svc.create(
            "/v1/admin/apps",
            json!({"appid": appid, "subject": "organization"}),
        )
        .await;
    }
    let first = get(&svc, "/v1/admin/apps?limit=2", &svc.operator).await;
    assert_eq!(ids(&first, "appid"), vec!["wx1", "wx2"], "{first}");
    let cursor = first["next_cursor"].as_str().expect("another page");
    let second = get(
        &svc,
        &format!("/v1/admin/apps?limit=2&cursor={cursor}"),
        &svc.operator,
    )
    .await;
    assert_eq!(ids(&second, "appid"), vec!["wx3"]);
    assert!(second["next_cursor"].is_null(), "{second}");
    let (status, body) = svc
        .call("GET", "/v1/admin/apps?limit=0", &svc.operator, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let mut provider_keys = Vec::new();
    for name in ["p1", "p2"] {
        let created = svc.create("/v1/admin/providers", json!({"provider": name, "refresh_url": refresh_url, "system_app": false, "api_version": 11})).await;
        let key = created["provider_key"].as_str().unwrap().to_string();
        let (status, body) = svc
            .call(
                "PUT",
                &format!("/v1/providers/{name}/form-config"),
                &key,
                Some(json!({"forms": [{"name": "big"}, {"name": "small"}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        provider_keys.push(key);
    }
    let providers = get(&svc, "/v1/admin/providers", &svc.operator).await;
    assert_eq!(ids(&providers, "provider"), vec!["p1", "p2"]);
    assert_eq!(providers["items"][0]["refresh_url"], refresh_url.as_str());

    let mut device_keys = Vec::new();
    for (device_id, user_id) in [("d1", "u1"), ("d2", "u1"), ("d3", "u2")] {
        let created = svc
            .create(
                "/v1/admin/devices",
                json!({"device_id": device_id, "user_id": user_id, "zone": "Europe/Berlin"}),
            )
            .await;
        device_keys.push(created["device_key"].as_str().unwrap().to_string());
    }
    let of_u1 = get(&svc, "/v1/admin/devices?user_id=u1", &svc.operator).await;
    assert_eq!(ids(&of_u1, "device_id"), vec!["d1", "d2"]);
    assert_eq!(of_u1["items"][0]["zone"], "Europe/Berlin");

    // d1 places two "big" and one "small" of p1, and one of p2.
    let d1 = &device_keys[0];
    let mut p1_forms = Vec::new();
    for (provider_name, form_name) in [("p1", "big"), ("p1", "big"), ("p1", "small"), ("p2", "big")]
    {
        let (status, form) = svc
            .call(
                "POST",
                "/v1/forms",
                d1,
                Some(json!({"provider": provider_name, "form_name": form_name})),
            )
            .await;
        assert_eq!(status, 201, "{form}");
        if provider_name == "p1" {
            p1_forms.push(form["form_id"].as_str().unwrap().to_string());
        }
    }
    let counts = get(&svc, "/v1/providers/p1/form-definitions", &provider_keys[0]).await;
    assert_eq!(
        counts["definitions"],
        json!([{"form_name": "big", "placed": 2}, {"form_name": "small", "placed": 1}])
    );
    assert_eq!(
        get(&svc, "/v1/providers/p1/form-definitions", &svc.operator).await,
        counts
    );
    let (status, _) = svc
        .call(
            "GET",
            "/v1/providers/p1/form-definitions",
            &provider_keys[1],
            None,
        )
        .await;
    assert_eq!(status, 404, "another provider's definitions are not found");
    let own = get(&svc, "/v1/device/forms", d1).await;
    assert_eq!(own["forms"].as_array().unwrap().len(), 4, "{own}");
    assert_eq!(own["forms"][0]["visible"], true);
    assert_eq!(
        get(&svc, "/v1/admin/devices/d1/forms", &svc.operator).await,
        own
    );
    let listed = get(&svc, "/v1/admin/devices?user_id=u1", &svc.operator).await;
    assert_eq!(listed["items"][0]["forms"], 4);

    // Deleting p1: d1's host hears form_removed for each of its forms, p1's key stops.
    let mut stream = svc
        .client
        .get(format!("{}/v1/events", svc.base))
        .bearer_auth(d1)
        .send()
        .await
        .unwrap();
    let (status, body) = svc
        .call("DELETE", "/v1/admin/providers/p1", &svc.operator, None)
        .await;
    assert_eq!(status, 204, "{body}");
    let last = p1_forms.last().unwrap().clone();
    let seen = read_events_until(&mut stream, &last).await;
    let removed: Vec<String> = seen
        .iter()
        .filter(|e| e.event == "form_removed")
        .map(|e| e.data["form_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed, p1_forms, "{seen:?}");
    assert_eq!(
        svc.call(
            "GET",
            "/v1/providers/p1/form-definitions",
            &provider_keys[0],
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        get(&svc, "/v1/device/forms", d1).await["forms"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        svc.call("DELETE", "/v1/admin/providers/p1", &svc.operator, None)
            .await
            .0,
        404
    );

    // Deleting d1 ends its open stream and its key.
    let (status, _) = svc
        .call("DELETE", "/v1/admin/devices/d1", &svc.operator, None)
        .await;
    assert_eq!(status, 204);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the deleted device's stream ends");
    assert_eq!(svc.call("GET", "/v1/device/forms", d1, None).await.0, 401);
    assert_eq!(
        ids(
            &get(&svc, "/v1/admin/devices", &svc.operator).await,
            "device_id"
        ),
        vec!["d2", "d3"]
    );

    // Deleting an app stops its developer key; unknown ids are 404 with their code.
    let created = svc
        .create(
            "/v1/admin/apps",
            json!({"appid": "gone", "subject": "organization"}),
        )
        .await;
    let developer = created["developer_key"].as_str().unwrap();
    assert_eq!(
        svc.call("DELETE", "/v1/admin/apps/gone", &svc.operator, None)
            .await
            .0,
        204
    );
    assert_eq!(
        svc.call(
            "GET",
            "/v1/apps/gone/periodic-fetch/log?user_id=u1",
            developer,
            None
        )
        .await
        .0,
        401
    );
    let (status, body) = svc
        .call("DELETE", "/v1/admin/apps/gone", &svc.operator, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("app_not_found"))
    );
    assert_eq!(
        svc.call("DELETE", "/v1/admin/devices/nope", &svc.operator, None)
            .await
            .0,
        404
    );
    // Only the operator lists and deletes.
    assert_eq!(svc.call("GET", "/v1/admin/apps", d1, None).await.0, 401);
    assert!(svc.stop().success());
}

/// Every file of the store (the database and its write-ahead log), concatenated.
fn store_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("refreshd.sqlite3") {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn occurrences(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_user_leaves_no_trace_in_the_store_file() {
    const USER: &str = "erase-me-7f3a91";
    const TOKEN: &str = "token-of-the-erased-c0ffee";
    let dir = temp_dir("erase");
    let origin = Origin::default();
    origin.set(Behaviour::Body("cached data".into()));
    let url = origin.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let app = svc
        .create(
            "/v1/admin/apps",
            json!({"appid": "wx1", "subject": "organization"}),
        )
        .await;
    let developer = app["developer_key"].as_str().unwrap().to_string();
    let gray = json!({"url": url, "percent": 10, "testers": [USER, "someone-else"]});
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(json!({"enabled": true, "source": {"url": url}, "gray": gray})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut keys = Vec::new();
    for device_id in ["phone-of-erased", "tablet-of-erased"] {
        let created = svc
            .create(
                "/v1/admin/devices",
                json!({"device_id": device_id, "user_id": USER, "zone": "Asia/Shanghai"}),
            )
            .await;
        keys.push(created["device_key"].as_str().unwrap().to_string());
    }
    let other = svc
        .create(
            "/v1/admin/devices",
            json!({"device_id": "kept", "user_id": "u-kept", "zone": "UTC"}),
        )
        .await;
    let kept_key = other["device_key"].as_str().unwrap().to_string();
    for key in [&keys[0], &kept_key] {
        assert_eq!(
            svc.call("POST", "/v1/apps/wx1/launch", key, None).await.0,
            204
        );
    }
    let (status, _) = svc
        .call(
            "PUT",
            "/v1/apps/wx1/background-fetch/token",
            &keys[0],
            Some(json!({"token": TOKEN})),
        )
        .await;
    assert_eq!(status, 204);
    for user in [USER, "u-kept"] {
        if user == "u-kept" {
            let (status, _) = svc
                .call(
                    "PUT",
                    "/v1/apps/wx1/background-fetch/token",
                    &kept_key,
                    Some(json!({"token": "kept-token"})),
                )
                .await;
            assert_eq!(status, 204);
        }
        let (status, report) = svc
            .call(
                "POST",
                "/v1/apps/wx1/periodic-fetch/fetch-now",
                &developer,
                Some(json!({"user_id": user})),
            )
            .await;
        assert_eq!(
            (status, report["outcome"].as_str()),
            (200, Some("ok")),
            "{report}"
        );
    }
    // The user is in the file before (so the search below can find them).
    assert!(occurrences(&store_bytes(&dir), USER) > 0);

    let (status, erased) = svc
        .call(
            "DELETE",
            &format!("/v1/admin/users/{USER}"),
            &svc.operator,
            None,
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(
        erased["devices"],
        json!(["phone-of-erased", "tablet-of-erased"])
    );
    assert_eq!(erased["apps"], json!(["wx1"]));
    for key in &keys {
        assert_eq!(svc.call("GET", "/v1/device/forms", key, None).await.0, 401);
    }
    let (_, setting) = svc
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(json!({"enabled": true, "source": {"url": url}, "gray": {"url": url, "percent": 10, "testers": ["someone-else"]}})),
        )
        .await;
    assert_eq!(
        setting["gray"]["testers"],
        json!(["someone-else"]),
        "{setting}"
    );
    // Another user's data is untouched.
    let (status, cached) = svc
        .call(
            "GET",
            "/v1/apps/wx1/background-fetch?fetch_type=periodic",
            &kept_key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{cached}");
    let (status, body) = svc
        .call(
            "DELETE",
            &format!("/v1/admin/users/{USER}"),
            &svc.operator,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Stopped (the write-ahead log folded into the file): no byte of the user remains.
    assert!(svc.stop().success());
    let bytes = store_bytes(&dir);
    for trace in [USER, TOKEN, "phone-of-erased", "tablet-of-erased"] {
        assert_eq!(
            occurrences(&bytes, trace),
            0,
            "{trace} is still in the store file"
        );
    }
    assert!(
        occurrences(&bytes, "u-kept") > 0,
        "the search does find what is there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_environments_are_managed_through_the_api_without_a_restart() {
    let dir = temp_dir("cloud-envs");
    let origin = Origin::default();
    let feed = origin.start().await;
    let base = feed.trim_end_matches("/feed").to_string();
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let app = svc
        .create(
            "/v1/admin/apps",
            json!({"appid": "mini", "subject": "individual"}),
        )
        .await;
    let developer = app["developer_key"].as_str().unwrap().to_string();
    let setting = json!({"enabled": true, "source": {"cloud": {"env": "prod", "function": "feed"}}, "gray": null});

    // Not configured yet: the setting is refused, naming the environment.
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/apps/mini/periodic-fetch",
            &developer,
            Some(setting.clone()),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_url")),
        "{body}"
    );

    // Bad URLs and names are refused; a good one is listed as set through the API.
    for (env, url) in [
        ("prod", "ftp://10.0.0.1"),
        ("prod", "http://127.0.0.2:1/x?y=1"),
        ("-bad", base.as_str()),
    ] {
        let (status, body) = svc
            .call(
                "PUT",
                &format!("/v1/admin/cloud-envs/{env}"),
                &svc.operator,
                Some(json!({"base_url": url})),
            )
            .await;
        assert_eq!(status, 400, "{env} {url}: {body}");
    }
    let (status, put) = svc
        .call(
            "PUT",
            "/v1/admin/cloud-envs/prod",
            &svc.operator,
            Some(json!({"base_url": base})),
        )
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["source"], "api");
    let listed = get(&svc, "/v1/admin/cloud-envs", &svc.operator).await;
    assert_eq!(
        listed["envs"],
        json!([{"env": "prod", "base_url": base, "source": "api"}])
    );

    // Used at once: the setting is accepted and a fetch goes to base_url/FUNCTION.
    let (status, body) = svc
        .call(
            "PUT",
            "/v1/apps/mini/periodic-fetch",
            &developer,
            Some(setting),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let device = svc
        .create(
            "/v1/admin/devices",
            json!({"device_id": "d1", "user_id": "u1", "zone": "UTC"}),
        )
        .await;
    let device_key = device["device_key"].as_str().unwrap();
    assert_eq!(
        svc.call("POST", "/v1/apps/mini/launch", device_key, None)
            .await
            .0,
        204
    );
    let (status, _) = svc
        .call(
            "PUT",
            "/v1/apps/mini/background-fetch/token",
            device_key,
            Some(json!({"token": "t"})),
        )
        .await;
    assert_eq!(status, 204);
    let (_, report) = svc
        .call(
            "POST",
            "/v1/apps/mini/periodic-fetch/fetch-now",
            &developer,
            Some(json!({"user_id": "u1"})),
        )
        .await;
    assert_eq!(report["outcome"], "ok", "{report}");
    assert!(origin
        .targets
        .lock()
        .unwrap()
        .iter()
        .all(|t| t.starts_with("/feed?appid=mini&")));

    // Removed: fetches cannot reach it any more; a second removal is 404.
    assert_eq!(
        svc.call("DELETE", "/v1/admin/cloud-envs/prod", &svc.operator, None)
            .await
            .0,
        204
    );
    let (_, report) = svc
        .call(
            "POST",
            "/v1/apps/mini/periodic-fetch/fetch-now",
            &developer,
            Some(json!({"user_id": "u1"})),
        )
        .await;
    assert_eq!(report["outcome"], "connect", "{report}");
    assert_eq!(
        svc.call("DELETE", "/v1/admin/cloud-envs/prod", &svc.operator, None)
            .await
            .0,
        404
    );
    assert!(svc.stop().success());
}
