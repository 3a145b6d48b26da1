//! The API and engine in-process on a manual clock: hours of schedule pass in
//! milliseconds, and nothing sleeps to wait for time. The store is a real SQLite file;
//! the provider is a real HTTP server on 127.0.0.2 (trusted).

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use refreshd_engine::secrets::{hash_key, new_api_key, SecretKey, TokenSealer};
use refreshd_engine::{Clock, Engine, EngineSettings, ManualClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_rules::Instant;
use refreshd_store::{KeyKind, KeyRecord, SqliteStore, Store};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

struct World {
    clock: Arc<ManualClock>,
    base: String,
    operator: String,
    client: reqwest::Client,
    /// (delivery id, trigger, decided_at) of every delivery the provider received.
    deliveries: Arc<Mutex<Vec<(String, String, String)>>>,
    refresh_url: String,
    engine: Arc<Engine>,
    /// The engine's store, for what a test reads underneath the API.
    store: Arc<dyn Store>,
    _stop: watch::Sender<bool>,
}

impl World {
    /// 2026-03-01T10:00:00Z, an engine, the API on a loopback port, and a provider.
    async fn start(name: &str) -> World {
        let dir =
            std::env::temp_dir().join(format!("refreshd-manual-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap());
        let clock = Arc::new(ManualClock::new(Instant::from_millis(1_772_359_200_000)));
        let policy =
            DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.2/32"]).unwrap());
        let fetcher = Arc::new(Fetcher::new(policy, FetchLimits::default()).unwrap());
        let engine = Engine::new(
            store.clone(),
            clock.clone() as Arc<dyn Clock>,
            fetcher,
            TokenSealer::new(&SecretKey([1; 32])),
            EngineSettings::default(),
        );
        let operator = new_api_key(KeyKind::Operator);
        store
            .insert_key(&KeyRecord {
                key_hash: hash_key(&operator),
                kind: KeyKind::Operator,
                principal: "operator".into(),
                created_at: 0,
            })
            .await
            .unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(engine.clone().run(stopped.clone()));
        tokio::spawn(engine.clone().run_deliveries(stopped));
        let app = refreshd_api::router(engine.clone(), 10_000, 10_000);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let seen = deliveries.clone();
        let provider = Router::new().route(
            "/refresh",
            post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let json: Value = serde_json::from_str(&body).unwrap();
                    let id = headers["refreshd-delivery-id"]
                        .to_str()
                        .unwrap()
                        .to_string();
                    seen.lock().unwrap().push((
                        id,
                        json["trigger"].as_str().unwrap().to_string(),
                        json["decided_at"].as_str().unwrap_or_default().to_string(),
                    ));
                    axum::Json(json!({"ok": true}))
                }
            }),
        );
        let provider_listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let refresh_url = format!("http://{}/refresh", provider_listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(provider_listener, provider).await.unwrap() });
        World {
            clock,
            base,
            operator,
            client: reqwest::Client::new(),
            deliveries,
            refresh_url,
            engine,
            store,
            _stop: stop,
        }
    }

    /// Sends a raw body (or none) with an optional content type.
    async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, HeaderMap, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!("{method} {path}: {status} with a body that is not JSON: {text:?}")
        });
        (status, headers, json)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    fn count(&self, trigger: &str) -> usize {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.1 == trigger)
            .count()
    }

    /// Waits (guarded, never timed) until the provider has `n` deliveries of `trigger`.
    async fn wait_for(&self, trigger: &str, n: usize) {
        let guard = tokio::time::timeout(Duration::from_secs(20), async {
            while self.count(trigger) < n {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        assert!(
            guard.await.is_ok(),
            "expected {n} {trigger} deliveries, got {}",
            self.count(trigger)
        );
    }

    /// A provider with one definition and a device in `zone` with one such form.
    async fn widget(&self, config: Value, zone: &str) -> (String, String, String) {
        let (_, _, provider) = self
            .call("POST", "/v1/admin/providers", &self.operator, Some(json!({"provider": "p", "refresh_url": self.refresh_url, "system_app": false, "api_version": 11})))
            .await;
        let provider_key = provider["provider_key"].as_str().unwrap().to_string();
        let (status, _, body) = self
            .call(
                "PUT",
                "/v1/providers/p/form-config",
                &provider_key,
                Some(config),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (_, _, device) = self
            .call(
                "POST",
                "/v1/admin/devices",
                &self.operator,
                Some(json!({"device_id": "d", "user_id": "u", "zone": zone})),
            )
            .await;
        let device_key = device["device_key"].as_str().unwrap().to_string();
        let (status, _, form) = self
            .call(
                "POST",
                "/v1/forms",
                &device_key,
                Some(json!({"provider": "p", "form_name": "w"})),
            )
            .await;
        assert_eq!(status, 201, "{form}");
        (
            provider_key,
            device_key,
            form["form_id"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_ten_hours_of_interval_refreshes_in_milliseconds() {
    let world = World::start("interval").await;
    world
        .widget(
            json!({"forms": [{"name": "w", "updateEnabled": true, "updateDuration": 1}]}),
            "UTC",
        )
        .await;
    world.wait_for("add", 1).await;
    for step in 1..=20 {
        world.clock.advance_ms(30 * MINUTE);
        world.wait_for("interval", step).await;
    }
    assert_eq!(world.count("interval"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_clock_jumps_forward_fire_once_and_backward_fire_nothing() {
    let world = World::start("jumps").await;
    world
        .widget(
            json!({"forms": [{"name": "w", "updateEnabled": true, "updateDuration": 1}]}),
            "UTC",
        )
        .await;
    world.wait_for("add", 1).await;
    world.clock.advance_ms(30 * MINUTE);
    world.wait_for("interval", 1).await;
    // +2 h at once: four missed ticks collapse into one refresh.
    world.clock.advance_ms(2 * HOUR);
    world.wait_for("interval", 2).await;
    // −2 h, then forward to where the clock was: nothing fires twice.
    world.clock.advance_ms(-2 * HOUR);
    world.clock.advance_ms(2 * HOUR);
    // The next ticks still fire once each. Deliveries go out in decision order, so once
    // the second of them has arrived, any repeat decided earlier would have too.
    world.clock.advance_ms(30 * MINUTE);
    world.wait_for("interval", 3).await;
    world.clock.advance_ms(30 * MINUTE);
    world.wait_for("interval", 4).await;
    assert_eq!(
        world.count("interval"),
        4,
        "{:?}",
        world.deliveries.lock().unwrap()
    );
    let ids: std::collections::HashSet<_> = world
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.0.clone())
        .collect();
    assert_eq!(
        ids.len(),
        world.deliveries.lock().unwrap().len(),
        "every decision has its own id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f17_f18_quota_exhausted_is_429_until_local_midnight_then_quota_reset() {
    let world = World::start("quota").await;
    // Shanghai: 2026-03-01T10:00Z is 18:00 local; midnight is 6 hours away.
    let (provider_key, _, form) = world
        .widget(json!({"forms": [{"name": "w"}]}), "Asia/Shanghai")
        .await;
    world.wait_for("add", 1).await;
    for n in 1..=50 {
        let (status, _, body) = world
            .call(
                "POST",
                &format!("/v1/forms/{form}/next-refresh"),
                &provider_key,
                Some(json!({"minutes": 5})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        world.clock.advance_ms(5 * MINUTE);
        world.wait_for("next", n).await;
    }
    let (status, headers, body) = world
        .call(
            "POST",
            &format!("/v1/forms/{form}/next-refresh"),
            &provider_key,
            Some(json!({"minutes": 5})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("quota_exhausted"))
    );
    let retry: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // 50 × 5 min = 4 h 10 min after 18:00 local: 1 h 50 min to midnight.
    assert_eq!(retry, 110 * 60);
    world.clock.advance_ms(retry * 1000);
    world.wait_for("quota_reset", 1).await;
}

/// The api.md error shape, with its code.
fn error_code(body: &Value) -> &str {
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["details"].is_array(), "{body}");
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f23a_config_upload_reports_removed_forms_and_a_dry_run_applies_nothing() {
    let world = World::start("removed").await;
    let (provider_key, device_key, kept) = world
        .widget(json!({"forms": [{"name": "w"}, {"name": "gone"}]}), "UTC")
        .await;
    let mut doomed = Vec::new();
    for _ in 0..2 {
        let (status, _, form) = world
            .call(
                "POST",
                "/v1/forms",
                &device_key,
                Some(json!({"provider": "p", "form_name": "gone"})),
            )
            .await;
        assert_eq!(status, 201, "{form}");
        doomed.push(form["form_id"].as_str().unwrap().to_string());
    }
    let explain = |form: String| {
        let world = &world;
        let device_key = device_key.clone();
        async move {
            world
                .call(
                    "GET",
                    &format!("/v1/forms/{form}/explain"),
                    &device_key,
                    None,
                )
                .await
                .0
        }
    };
    let dropped = json!({"forms": [{"name": "w", "updateDuraton": 1}]});

    // A dry run reports the effect, warnings included, and changes nothing.
    let (status, _, body) = world
        .call(
            "PUT",
            "/v1/providers/p/form-config?dry_run=true",
            &provider_key,
            Some(dropped.clone()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dry_run"], true);
    assert_eq!(
        body["removed_forms"],
        json!([{"form_name": "gone", "count": 2}])
    );
    assert_eq!(body["warnings"][0]["code"], "unknown_field", "{body}");
    for form in &doomed {
        assert_eq!(explain(form.clone()).await, 200, "a dry run removed {form}");
    }
    // A dry run of an invalid config reports its errors the same way.
    let (status, _, body) = world
        .call(
            "PUT",
            "/v1/providers/p/form-config?dry_run=true",
            &provider_key,
            Some(json!({"forms": [{"name": "w", "updateDuration": -1}]})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_config"));
    assert_eq!(
        body["error"]["details"][0]["path"],
        "$.forms[0].updateDuration"
    );

    // Applied: the response says what was removed, and it is gone.
    let (status, _, body) = world
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(dropped),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dry_run"], false);
    assert_eq!(
        body["removed_forms"],
        json!([{"form_name": "gone", "count": 2}])
    );
    for form in &doomed {
        assert_eq!(explain(form.clone()).await, 404);
    }
    assert_eq!(explain(kept).await, 200);
    // Nothing left to remove: an empty list, not a missing field.
    let (_, _, body) = world
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(json!({"forms": [{"name": "w"}]})),
        )
        .await;
    assert_eq!(body["removed_forms"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_config_limits_answer_with_their_path_and_parsed_definitions_are_cached() {
    let world = World::start("limits").await;
    let (provider_key, _, _) = world.widget(json!({"forms": [{"name": "w"}]}), "UTC").await;
    let many: Vec<Value> = (0..257).map(|i| json!({"name": format!("w{i}")})).collect();
    let (status, _, body) = world
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(json!({"forms": many})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_config"));
    assert_eq!(body["error"]["details"][0]["path"], "$.forms");
    assert_eq!(body["error"]["details"][0]["code"], "too_many_definitions");
    let padded = json!({"forms": [{"name": "w", "description": "x".repeat(300_000)}]});
    let (status, _, body) = world
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(padded),
        )
        .await;
    assert_eq!((status, error_code(&body)), (413, "payload_too_large"));

    // Adds read the definitions from the cache while the config is unchanged, and see a
    // new upload at once.
    let record = world.store.get_provider("p").await.unwrap().unwrap();
    let first = world.engine.definitions(&record).await.unwrap();
    let again = world.engine.definitions(&record).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the config was read again");
    let (status, _, _) = world
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(json!({"forms": [{"name": "w"}, {"name": "v"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let record = world.store.get_provider("p").await.unwrap().unwrap();
    let after_upload = world.engine.definitions(&record).await.unwrap();
    assert_eq!(after_upload.len(), 2);
    assert!(Arc::ptr_eq(
        &after_upload,
        &world.engine.definitions(&record).await.unwrap()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_in_the_api_shape() {
    let world = World::start("errors").await;
    let (provider_key, device_key, form) =
        world.widget(json!({"forms": [{"name": "w"}]}), "UTC").await;
    let (_, _, app) = world
        .call(
            "POST",
            "/v1/admin/apps",
            &world.operator,
            Some(json!({"appid": "wx1", "subject": "organization"})),
        )
        .await;
    let developer_key = app["developer_key"].as_str().unwrap().to_string();
    let over_a_mebibyte = vec![b' '; 1024 * 1024 + 1];

    // 413 past 1 MiB, on the routes that read raw bodies too.
    for (path, key) in [
        ("/v1/providers/p/form-config".to_string(), &provider_key),
        (format!("/v1/forms/{form}/data"), &provider_key),
        ("/v1/admin/apps".to_string(), &world.operator),
    ] {
        let method = if path.ends_with("apps") {
            "POST"
        } else {
            "PUT"
        };
        let (status, _, body) = world
            .send(method, &path, Some(key), Some(over_a_mebibyte.clone()))
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (413, "payload_too_large"),
            "{path}"
        );
    }
    // A query-string error names the parameter.
    let (status, _, body) = world
        .send(
            "GET",
            "/v1/apps/wx1/periodic-fetch/log",
            Some(&developer_key),
            None,
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_request"));
    assert_eq!(
        body["error"]["details"][0]["path"], "query.user_id",
        "{body}"
    );
    // Invalid UTF-8 in a path parameter.
    let (status, _, body) = world
        .send("GET", "/v1/forms/%FF%FE/data", Some(&device_key), None)
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_request"));
    // 405, with and without a key, keeps its Allow header.
    let (status, headers, body) = world
        .send(
            "PATCH",
            &format!("/v1/forms/{form}/data"),
            Some(&device_key),
            None,
        )
        .await;
    assert_eq!((status, error_code(&body)), (405, "method_not_allowed"));
    assert!(headers.contains_key("allow"), "{headers:?}");
    let (status, _, body) = world.send("DELETE", "/v1/openapi.json", None, None).await;
    assert_eq!((status, error_code(&body)), (405, "method_not_allowed"));
    // Unknown paths.
    let (status, _, body) = world.send("GET", "/v1/nothing", None, None).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_and_wrongly_typed_fields_are_named_by_path_with_a_hint() {
    let world = World::start("fields").await;
    let (_, device_key, form) = world.widget(json!({"forms": [{"name": "w"}]}), "UTC").await;
    let (status, _, body) = world
        .call(
            "POST",
            "/v1/admin/devices",
            &world.operator,
            Some(json!({"device_id": "d2", "user_id": "u2", "zon": "UTC"})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_request"));
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["path"], "$.zon", "{body}");
    assert_eq!(detail["code"], "unknown_field");
    assert!(
        detail["hint"].as_str().unwrap().contains("zone"),
        "the hint names the expected fields: {body}"
    );
    let (status, _, body) = world
        .call(
            "POST",
            &format!("/v1/forms/{form}/visibility"),
            &device_key,
            Some(json!({"visible": "yes"})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_request"));
    let detail = &body["error"]["details"][0];
    assert_eq!(
        (detail["path"].as_str(), detail["code"].as_str()),
        (Some("$.visible"), Some("wrong_type")),
        "{body}"
    );
    assert_eq!(detail["hint"], "send a boolean");
    let (status, _, body) = world
        .call(
            "POST",
            "/v1/admin/devices",
            &world.operator,
            Some(json!({"device_id": "d2", "zone": "UTC"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["details"][0]["path"], "$.user_id", "{body}");
    assert_eq!(body["error"]["details"][0]["code"], "missing_field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_kind_of_key_is_401_before_the_body_and_names_the_kind_needed() {
    let world = World::start("kinds").await;
    let (provider_key, device_key, _) =
        world.widget(json!({"forms": [{"name": "w"}]}), "UTC").await;
    // Malformed or oversized bodies are never looked at for a wrong kind of key.
    for (method, path, key, body, needed) in [
        (
            "POST",
            "/v1/forms",
            &world.operator,
            b"{not json".to_vec(),
            "device key (rfdd_",
        ),
        (
            "POST",
            "/v1/admin/apps",
            &device_key,
            b"{\"appid\": 5".to_vec(),
            "operator key (rfdo_",
        ),
        (
            "GET",
            "/v1/forms/frm_x/explain",
            &world.operator,
            Vec::new(),
            "device key (rfdd_…) or a widget provider key",
        ),
    ] {
        let body = (!body.is_empty()).then_some(body);
        let (status, _, answer) = world.send(method, path, Some(key), body).await;
        assert_eq!(
            (status, error_code(&answer)),
            (401, "unauthorized"),
            "{path}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needed), "{path}: {message}");
    }
    // A 2 MiB body announced and never sent: the answer comes from the key alone. (Sent
    // whole, the client could still be writing when the server answers and closes.)
    let mut stream = tokio::net::TcpStream::connect(world.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT /v1/providers/p/form-config HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {device_key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\nxxxx",
        2 * 1024 * 1024
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut answer))
        .await
        .expect("hang guard: the key alone decides")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("widget provider key (rfdp_"), "{answer}");
    // No key at all names the kind as well; the right kind gets through.
    let (status, _, answer) = world
        .send("POST", "/v1/forms", None, Some(b"{}".to_vec()))
        .await;
    assert_eq!(status, 401);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("device key"));
    let (status, _, _) = world
        .send(
            "PUT",
            "/v1/providers/p/form-config",
            Some(&provider_key),
            Some(b"{\"forms\": []}".to_vec()),
        )
        .await;
    assert_eq!(status, 200);
}
