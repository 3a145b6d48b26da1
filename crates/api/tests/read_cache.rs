//! The read cache behind `GET /v1/apps/{appid}/background-fetch`, through real HTTP and
//! a real SQLite file: what a read answers follows every change at once (a rotated or
//! deleted key, a new fetch, a deleted app), the bytes are those of the documented
//! view, and the cache keeps to its byte budget however many large bodies are read.

mod support;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use refreshd_engine::{EngineSettings, ReadCacheSettings};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use support::Service;

const MINUTE: i64 = 60_000;

/// A developer server on 127.0.0.2 (trusted) that answers whatever `body` holds.
async fn developer_server(body: Arc<Mutex<String>>) -> String {
    let developer =
        Router::new()
            .route(
                "/feed",
                get(|State(body): State<Arc<Mutex<String>>>| async move {
                    body.lock().unwrap().clone()
                }),
            )
            .with_state(body);
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let feed = format!("http://{}/feed", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, developer).await.unwrap() });
    feed
}

/// The app `wx1` fetching from `feed`; answers its developer key.
async fn app(service: &Service, feed: &str) -> String {
    let (status, app) = service
        .call(
            "POST",
            "/v1/admin/apps",
            &service.operator,
            Some(json!({"appid": "wx1", "subject": "organization"})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let developer = app["developer_key"].as_str().unwrap().to_string();
    let (status, body) = service
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(json!({"enabled": true, "source": {"url": feed}, "gray": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    developer
}

/// A device of user `device_id` whose token for `wx1` is set; answers its key.
async fn device(service: &Service, device_id: &str) -> String {
    let (status, key) = service.create_device(device_id).await;
    assert_eq!(status, 201);
    let key = key.unwrap();
    let (status, body) = service
        .call(
            "PUT",
            "/v1/apps/wx1/background-fetch/token",
            &key,
            Some(json!({"token": "t"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    key
}

async fn fetch_now(service: &Service, developer: &str, user: &str) {
    let (status, body) = service
        .call(
            "POST",
            "/v1/apps/wx1/periodic-fetch/fetch-now",
            developer,
            Some(json!({"user_id": user})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ok", "{body}");
}

/// The read as the device gets it: status, content type and the body's bytes.
async fn read(service: &Service, key: &str) -> (u16, String, Vec<u8>) {
    let response = service
        .client
        .get(format!("{}/v1/apps/wx1/background-fetch", service.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

fn code(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).unwrap();
    value["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_fetch_is_read_right_after_it_is_recorded_in_the_documented_bytes() {
    let service = Service::start("read-cache-fresh").await;
    let served = Arc::new(Mutex::new("first \"quoted\" é 🌧\n".to_string()));
    let feed = developer_server(served.clone()).await;
    let developer = app(&service, &feed).await;
    let phone = device(&service, "u1").await;

    // Before any fetch: no data, and that answer is cached too.
    for _ in 0..2 {
        let (status, _, body) = read(&service, &phone).await;
        assert_eq!((status, code(&body).as_str()), (404, "no_cached_data"));
    }
    for (round, text) in ["first \"quoted\" é 🌧\n", "second", "third"]
        .iter()
        .enumerate()
    {
        *served.lock().unwrap() = text.to_string();
        service.clock.advance_ms(MINUTE);
        fetch_now(&service, &developer, "u1").await;
        let stamp = refreshd_engine::Clock::now(&*service.clock).as_millis();
        // Read twice: once filling the cache, once from it; both the same bytes.
        for _ in 0..2 {
            let (status, content_type, body) = read(&service, &phone).await;
            assert_eq!(status, 200, "round {round}");
            assert_eq!(content_type, "application/json");
            // Byte for byte what the handler wrote before the cache: the view's two
            // fields, in order, compact.
            let expected =
                serde_json::to_vec(&json!({"fetched_data": text, "time_stamp": stamp})).unwrap();
            assert_eq!(
                String::from_utf8(body).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
    // Another device of another user reads its own (absent) data, not this one's.
    let tablet = device(&service, "u2").await;
    let (status, _, body) = read(&service, &tablet).await;
    assert_eq!((status, code(&body).as_str()), (404, "no_cached_data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_or_deleted_key_stops_working_at_once() {
    let service = Service::start("read-cache-keys").await;
    let served = Arc::new(Mutex::new("data".to_string()));
    let feed = developer_server(served).await;
    let developer = app(&service, &feed).await;
    let phone = device(&service, "u1").await;
    fetch_now(&service, &developer, "u1").await;
    assert_eq!(read(&service, &phone).await.0, 200);
    assert_eq!(
        read(&service, &phone).await.0,
        200,
        "read again, from the cache"
    );

    // Rotation: the old key is refused by the very next request.
    let (status, rotated) = service
        .call(
            "POST",
            "/v1/admin/devices/u1/rotate-key",
            &service.operator,
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let (status, _, body) = read(&service, &phone).await;
    assert_eq!((status, code(&body).as_str()), (401, "unauthorized"));
    let phone = rotated["device_key"].as_str().unwrap().to_string();
    assert_eq!(read(&service, &phone).await.0, 200);
    assert_eq!(read(&service, &phone).await.0, 200);

    // A developer key rotated: the same.
    let log = "/v1/apps/wx1/periodic-fetch/log?user_id=u1";
    assert_eq!(service.call("GET", log, &developer, None).await.0, 200);
    let (status, rotated) = service
        .call(
            "POST",
            "/v1/admin/apps/wx1/rotate-key",
            &service.operator,
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(service.call("GET", log, &developer, None).await.0, 401);

    // The device deleted: its key stops at once.
    let (status, _) = service
        .call("DELETE", "/v1/admin/devices/u1", &service.operator, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(read(&service, &phone).await.0, 401);

    // The app deleted: another device of the user no longer reads its data.
    let tablet = device(&service, "u2").await;
    let developer = rotated["developer_key"].as_str().unwrap().to_string();
    fetch_now(&service, &developer, "u2").await;
    assert_eq!(read(&service, &tablet).await.0, 200);
    assert_eq!(read(&service, &tablet).await.0, 200);
    let (status, _) = service
        .call("DELETE", "/v1/admin/apps/wx1", &service.operator, None)
        .await;
    assert_eq!(status, 204);
    let (status, _, body) = read(&service, &tablet).await;
    assert_eq!((status, code(&body).as_str()), (404, "app_not_found"));

    // The user erased: their device's key stops at once.
    let (status, _) = service
        .call("DELETE", "/v1/admin/users/u2", &service.operator, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(read(&service, &tablet).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_to_its_byte_budget_with_many_large_bodies() {
    const BUDGET: u64 = 1024 * 1024;
    let service = Service::start_with(
        "read-cache-budget",
        EngineSettings {
            read_cache: ReadCacheSettings {
                max_bytes: BUDGET,
                ..ReadCacheSettings::default()
            },
            ..EngineSettings::default()
        },
    )
    .await;
    let served = Arc::new(Mutex::new(String::new()));
    let feed = developer_server(served.clone()).await;
    let developer = app(&service, &feed).await;
    // 40 users, each with 100 KiB of its own data: four times the budget.
    let mut devices = Vec::new();
    for n in 0..40 {
        let user = format!("u{n}");
        let key = device(&service, &user).await;
        *served.lock().unwrap() = format!("{n:03}{}", "x".repeat(100 * 1024));
        fetch_now(&service, &developer, &user).await;
        devices.push((n, key));
    }
    for _ in 0..2 {
        for (n, key) in &devices {
            let (status, _, body) = read(&service, key).await;
            assert_eq!(status, 200);
            let value: Value = serde_json::from_slice(&body).unwrap();
            let data = value["fetched_data"].as_str().unwrap();
            assert!(
                data.starts_with(&format!("{n:03}x")),
                "user {n} read another's data"
            );
            let usage = service.engine.read_cache_usage();
            assert!(usage.bytes <= BUDGET, "{usage:?}");
        }
    }
    let usage = service.engine.read_cache_usage();
    assert!(usage.entries > 0, "{usage:?}");
}
