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
        let app = refreshd_api::router(engine, 10_000, 10_000);
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
            _stop: stop,
        }
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
