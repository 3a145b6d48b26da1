//! What refreshd sends out, through the API and the engine in-process: deliveries to
//! one provider are not held up by another provider that hangs, and the URLs a
//! developer or operator configures are checked with answers that say what to change.
//! Real SQLite, real providers on 127.0.0.2 (trusted); nothing sleeps to wait for time,
//! and every wait has a wide hang guard.

use refreshd_engine::secrets::{hash_key, new_api_key, SecretKey, TokenSealer};
use refreshd_engine::{Clock, Engine, EngineSettings, SystemClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_store::{KeyKind, KeyRecord, SqliteStore, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Longer than any hang guard below: a hanging provider's request stays open for the
/// whole test unless refreshd abandons it.
const FETCH_DEADLINE: Duration = Duration::from_secs(120);
const GUARD: Duration = Duration::from_secs(20);

struct World {
    base: String,
    api: SocketAddr,
    operator: String,
    client: reqwest::Client,
    /// The engine's fetcher, as `refreshd serve` holds it to name its own listeners.
    fetcher: Arc<Fetcher>,
    _stop: watch::Sender<bool>,
}

impl World {
    async fn start(name: &str, trusted: &[&str]) -> World {
        let dir =
            std::env::temp_dir().join(format!("refreshd-outbound-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap());
        let policy = DestinationPolicy::new(DestinationPolicy::parse_trusted(trusted).unwrap());
        let limits = FetchLimits {
            deadline: FETCH_DEADLINE,
            ..FetchLimits::default()
        };
        let fetcher = Arc::new(Fetcher::new(policy, limits).unwrap());
        let settings = EngineSettings {
            cloud_envs: HashMap::from([("prod".to_string(), "http://127.0.0.2:9/fn".into())]),
            delivery_lease_ms: 4 * FETCH_DEADLINE.as_millis() as i64,
            ..EngineSettings::default()
        };
        let engine = Engine::new(
            store.clone(),
            Arc::new(SystemClock) as Arc<dyn Clock>,
            fetcher.clone(),
            TokenSealer::new(&SecretKey([3; 32])),
            settings,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap();
        // As `refreshd serve` does once its listeners are bound.
        fetcher.set_own_listeners(vec![api]).unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(engine.clone().run(stopped.clone()));
        tokio::spawn(engine.clone().run_deliveries(stopped));
        let app = refreshd_api::router(engine, 10_000, 10_000);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        World {
            base: format!("http://{api}"),
            api,
            operator,
            client: reqwest::Client::new(),
            fetcher,
            _stop: stop,
        }
    }

    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A provider with one definition "w"; returns its key.
    async fn provider(&self, name: &str, refresh_url: &str) -> String {
        let (status, provider) = self
            .call(
                "POST",
                "/v1/admin/providers",
                &self.operator,
                Some(json!({"provider": name, "refresh_url": refresh_url, "system_app": false, "api_version": 11})),
            )
            .await;
        assert_eq!(status, 201, "{provider}");
        let key = provider["provider_key"].as_str().unwrap().to_string();
        let (status, body) = self
            .call(
                "PUT",
                &format!("/v1/providers/{name}/form-config"),
                &key,
                Some(json!({"forms": [{"name": "w"}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        key
    }

    async fn device(&self, id: &str) -> String {
        let (status, device) = self
            .call(
                "POST",
                "/v1/admin/devices",
                &self.operator,
                Some(json!({"device_id": id, "user_id": id, "zone": "UTC"})),
            )
            .await;
        assert_eq!(status, 201, "{device}");
        device["device_key"].as_str().unwrap().to_string()
    }

    async fn add_form(&self, device_key: &str, provider: &str) {
        let (status, form) = self
            .call(
                "POST",
                "/v1/forms",
                device_key,
                Some(json!({"provider": provider, "form_name": "w"})),
            )
            .await;
        assert_eq!(status, 201, "{form}");
    }
}

/// A provider's `refresh_url` on 127.0.0.2. Each request head is sent on the channel;
/// a hanging provider then holds the connection open without answering (and records
/// when refreshd closes it), an answering one replies 204.
struct ProviderServer {
    url: String,
    requests: mpsc::UnboundedReceiver<String>,
    closed_by_refreshd: Arc<AtomicBool>,
}

async fn provider_server(hang: bool) -> ProviderServer {
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let url = format!("http://{}/refresh", listener.local_addr().unwrap());
    let (tx, requests) = mpsc::unbounded_channel();
    let closed = Arc::new(AtomicBool::new(false));
    let closed_flag = closed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let closed = closed_flag.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                if hang {
                    // Read (and drop) whatever comes until refreshd closes.
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    closed.store(true, Ordering::SeqCst);
                } else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                        .await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    ProviderServer {
        url,
        requests,
        closed_by_refreshd: closed,
    }
}

async fn next_request(server: &mut ProviderServer, what: &str) -> String {
    tokio::time::timeout(GUARD, server.requests.recv())
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what} never arrived"))
        .expect("server running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_does_not_hold_up_another_providers_deliveries() {
    let world = World::start("isolation", &["127.0.0.2/32"]).await;
    let mut slow = provider_server(true).await;
    let mut fast = provider_server(false).await;
    world.provider("slow", &slow.url).await;
    world.provider("fast", &fast.url).await;
    let device = world.device("d1").await;

    // The slow provider's "add" delivery is sent and held open.
    world.add_form(&device, "slow").await;
    next_request(&mut slow, "the slow provider's delivery").await;

    // While it hangs, another provider's deliveries arrive, one after the other.
    for i in 0..3 {
        let other = world.device(&format!("d-fast-{i}")).await;
        world.add_form(&other, "fast").await;
        let head = next_request(&mut fast, "the fast provider's delivery").await;
        assert!(head.starts_with("POST /refresh"), "{head}");
        assert!(
            !world_slow_closed(&slow),
            "delivery {i} arrived only after the hanging request was abandoned"
        );
    }
    drop(world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_with_more_hanging_deliveries_than_the_node_sends_at_once_still_starves_nobody()
{
    let world = World::start("many-hanging", &["127.0.0.2/32"]).await;
    let mut slow = provider_server(true).await;
    let mut fast = provider_server(false).await;
    world.provider("slow", &slow.url).await;
    world.provider("fast", &fast.url).await;
    // More "add" deliveries due for the hanging provider than the node keeps in
    // flight in all (1,024), spread over devices (512 forms each at most).
    for d in 0..3 {
        let device = world.device(&format!("slow-{d}")).await;
        for _ in 0..350 {
            world.add_form(&device, "slow").await;
        }
    }
    next_request(&mut slow, "the slow provider's first delivery").await;
    let other = world.device("d-fast").await;
    world.add_form(&other, "fast").await;
    let head = next_request(&mut fast, "the fast provider's delivery").await;
    assert!(head.starts_with("POST /refresh"), "{head}");
    assert!(
        !world_slow_closed(&slow),
        "the delivery arrived only after the hanging requests were abandoned"
    );
    drop(world);
}

fn world_slow_closed(slow: &ProviderServer) -> bool {
    slow.closed_by_refreshd.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshd_never_delivers_to_or_fetches_from_its_own_api() {
    // Loopback is trusted, as in the quickstart; refreshd's own API is still refused.
    let world = World::start("own", &["127.0.0.0/8"]).await;
    for path in ["/metrics", "/v1/openapi.json"] {
        let url = format!("http://{}{path}", world.api);
        let (status, body) = world
            .call(
                "POST",
                "/v1/admin/providers",
                &world.operator,
                Some(json!({"provider": "p", "refresh_url": url, "system_app": false, "api_version": 11})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_url", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("refreshd's own listener"),
            "{body}"
        );
        assert_eq!(body["error"]["details"][0]["path"], "$.refresh_url");
        let hint = body["error"]["details"][0]["hint"].as_str().unwrap();
        assert!(hint.contains("--allow-destination"), "{hint}");
    }
    // By name, at send time: the engine's fetcher refuses it the same way.
    let by_name = format!("http://localhost:{}/v1/openapi.json", world.api.port());
    let failure = world
        .fetcher
        .send(refreshd_fetch::Outbound {
            method: reqwest::Method::GET,
            url: &by_name,
            headers: Vec::new(),
            body: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &failure,
            refreshd_fetch::FetchFailure::Blocked(refreshd_fetch::Blocked {
                reason: refreshd_fetch::BlockReason::OwnListener,
                ..
            })
        ),
        "{failure:?}"
    );
}

/// An app with a developer key, for periodic-fetch settings.
async fn app(world: &World, subject: &str) -> String {
    let (status, app) = world
        .call(
            "POST",
            "/v1/admin/apps",
            &world.operator,
            Some(json!({"appid": "wx1", "subject": subject})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    app["developer_key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_cloud_function_names_that_leave_the_base_path_are_400() {
    let world = World::start("cloud", &["127.0.0.2/32"]).await;
    let developer = app(&world, "individual").await;
    let put = |function: &str| json!({"enabled": true, "source": {"cloud": {"env": "prod", "function": function}}});
    for bad in ["..", ".", "a..b", "-x", "a/b"] {
        let (status, body) = world
            .call(
                "PUT",
                "/v1/apps/wx1/periodic-fetch",
                &developer,
                Some(put(bad)),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_url", "{bad}: {body}");
        assert_eq!(
            body["error"]["details"][0]["path"], "$.source.cloud.function",
            "{bad}: {body}"
        );
        assert!(body["error"]["details"][0]["hint"].is_string(), "{body}");
    }
    let (status, body) = world
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(put("getData")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_urls_are_limited_to_2048_bytes_and_blocked_ones_hint_at_allow_destination() {
    let world = World::start("urls", &["127.0.0.2/32"]).await;
    let developer = app(&world, "organization").await;
    let put = |url: String| json!({"enabled": true, "source": {"url": url}});
    let prefix = "http://127.0.0.2:9/";
    let (status, body) = world
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(put(format!("{prefix}{}", "a".repeat(2049 - prefix.len())))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_url");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("2048"),
        "{body}"
    );
    assert_eq!(body["error"]["details"][0]["path"], "$.source.url");
    let (status, body) = world
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(put(format!("{prefix}{}", "a".repeat(2048 - prefix.len())))),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // 127.0.0.1 is loopback and not trusted here.
    let (status, body) = world
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(put("http://127.0.0.1:8000/feed".into())),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{body}"
    );
    let hint = body["error"]["details"][0]["hint"].as_str().unwrap();
    assert!(hint.contains("--allow-destination"), "{hint}");

    // A name that resolves to loopback passes configuration and is blocked at the
    // fetch; explain says what to do about it.
    let (status, body) = world
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(put("https://localhost:9/feed".into())),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let device = world.device("u1").await;
    let (status, body) = world
        .call(
            "PUT",
            "/v1/apps/wx1/background-fetch/token",
            &device,
            Some(json!({"token": "t"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = world
        .call(
            "POST",
            "/v1/apps/wx1/periodic-fetch/fetch-now",
            &developer,
            Some(json!({"user_id": "u1"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "blocked_address", "{body}");
    let (status, body) = world
        .call(
            "GET",
            "/v1/apps/wx1/periodic-fetch/explain?user_id=u1",
            &developer,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["last_outcome"]["outcome"], "blocked_address", "{body}");
    let hint = body["last_outcome"]["hint"].as_str().unwrap();
    assert!(hint.contains("--allow-destination"), "{hint}");
}
