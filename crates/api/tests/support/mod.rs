//! An in-process refreshd for API tests: the real engine and router over real sockets
//! on loopback, a real SQLite file, and a manual clock (nothing sleeps to wait for time).

#![allow(dead_code)]

use refreshd_engine::secrets::{hash_key, new_api_key, SecretKey, TokenSealer};
use refreshd_engine::{Clock, Engine, EngineSettings, ManualClock};
use refreshd_fetch::{DestinationPolicy, FetchLimits, Fetcher};
use refreshd_rules::Instant;
use refreshd_store::{KeyKind, KeyRecord, SqliteStore, Store};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// 2026-03-01T10:00:00Z.
pub const START_MS: i64 = 1_772_359_200_000;

pub struct Service {
    pub engine: Arc<Engine>,
    pub store: Arc<SqliteStore>,
    pub clock: Arc<ManualClock>,
    pub db: PathBuf,
    pub base: String,
    pub operator: String,
    pub client: reqwest::Client,
    _stop: watch::Sender<bool>,
}

impl Service {
    pub async fn start(name: &str) -> Service {
        Service::start_with(name, EngineSettings::default()).await
    }

    pub async fn start_with(name: &str, settings: EngineSettings) -> Service {
        let dir = std::env::temp_dir().join(format!("refreshd-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db.sqlite3");
        let store = Arc::new(SqliteStore::open(&db).await.unwrap());
        let clock = Arc::new(ManualClock::new(Instant::from_millis(START_MS)));
        let policy =
            DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.2/32"]).unwrap());
        let engine = Engine::new(
            store.clone() as Arc<dyn Store>,
            clock.clone() as Arc<dyn Clock>,
            Arc::new(Fetcher::new(policy, FetchLimits::default()).unwrap()),
            TokenSealer::new(&SecretKey([1; 32])),
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
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(engine.clone().run(stopped.clone()));
        tokio::spawn(engine.clone().run_deliveries(stopped));
        let app = refreshd_api::router(engine.clone(), 10_000, 10_000);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Service {
            engine,
            store,
            clock,
            db,
            base,
            operator,
            client: reqwest::Client::new(),
            _stop: stop,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
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

    pub async fn health(&self) -> u16 {
        let response = self
            .client
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    pub async fn create_device(&self, device_id: &str) -> (u16, Option<String>) {
        let (status, body) = self
            .call(
                "POST",
                "/v1/admin/devices",
                &self.operator,
                Some(json!({"device_id": device_id, "user_id": device_id, "zone": "UTC"})),
            )
            .await;
        (status, body["device_key"].as_str().map(str::to_string))
    }

    /// A key the API accepts: a read-only call passes authentication (404 for the
    /// unknown form, where an unknown key would answer 401).
    pub async fn key_works(&self, key: &str) -> bool {
        let (status, _) = self.call("GET", "/v1/forms/frm_none/data", key, None).await;
        assert!(status == 404 || status == 401, "unexpected {status}");
        status == 404
    }
}
