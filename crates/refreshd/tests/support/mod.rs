//! Shared harness for tests of the running service: the real binary on port 0, a real
//! SQLite file in a temporary directory, and real HTTP servers on 127.0.0.2 (trusted by
//! `--allow-destination`) standing in for developers' and providers' servers.
//!
//! Nothing here sleeps for a fixed time: the harness waits for the "listening on" line
//! and tests wait for conditions with a deadline (`eventually`).

#![allow(dead_code)]

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Virtual time runs this much faster than real time in service tests: an hour a second.
pub const WARP: f64 = 3600.0;

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "refreshd-test-{name}-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

pub struct Service {
    child: Child,
    pub base: String,
    pub operator: String,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    stderr_log: PathBuf,
}

impl Service {
    /// Starts `refreshd serve` on `data_dir` and waits until it listens.
    pub fn start(data_dir: &Path, epoch: &str, extra: &[&str]) -> Service {
        Self::start_with_env(data_dir, epoch, extra, &[])
    }

    /// As `start`, with extra environment variables (shared secrets of a fleet).
    pub fn start_with_env(
        data_dir: &Path,
        epoch: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Service {
        let stderr_log = data_dir.join(format!("stderr-{}.log", fastrand_suffix()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_refreshd"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--allow-destination",
                "127.0.0.2/32",
            ])
            .args(if extra.contains(&"--metrics-listen") {
                &[][..]
            } else {
                &["--metrics-listen", "127.0.0.1:0"][..]
            })
            .arg("--data-dir")
            .arg(data_dir.join("data"))
            .args(if extra.contains(&"--time-warp") {
                vec!["--time-warp-epoch".to_string(), epoch.to_string()]
            } else {
                vec![
                    "--time-warp".to_string(),
                    WARP.to_string(),
                    "--time-warp-epoch".to_string(),
                    epoch.to_string(),
                ]
            })
            .args(extra)
            .env_remove("REFRESHD_ADMIN_KEY")
            .env_remove("REFRESHD_SECRET_KEY")
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "refreshd did not start; stderr: {}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                )
            });
        let operator = match env.iter().find(|(k, _)| *k == "REFRESHD_ADMIN_KEY") {
            Some((_, key)) => key.to_string(),
            None => std::fs::read_to_string(data_dir.join("data/operator.key"))
                .unwrap()
                .trim()
                .to_string(),
        };
        Service {
            child,
            base,
            operator,
            data_dir: data_dir.to_path_buf(),
            client: reqwest::Client::new(),
            stderr_log,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs `body` to an operator path and answers the created object (201 asserted).
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, created) = self.call("POST", path, &self.operator, Some(body)).await;
        assert_eq!(status, 201, "{path}: {created}");
        created
    }

    /// An app of `subject` ("individual" or "organization"); answers its developer key.
    pub async fn create_app(&self, appid: &str, subject: &str) -> String {
        let app = self
            .create(
                "/v1/admin/apps",
                serde_json::json!({"appid": appid, "subject": subject}),
            )
            .await;
        app["developer_key"].as_str().unwrap().to_string()
    }

    /// A device of `user_id` in `zone`; answers its key.
    pub async fn create_device(&self, device_id: &str, user_id: &str, zone: &str) -> String {
        let device = self
            .create(
                "/v1/admin/devices",
                serde_json::json!({"device_id": device_id, "user_id": user_id, "zone": zone}),
            )
            .await;
        device["device_key"].as_str().unwrap().to_string()
    }

    /// Sets `appid`'s periodic fetch to the URL `url` (200 asserted).
    pub async fn fetch_from(&self, developer: &str, appid: &str, url: &str) {
        let (status, body) = self
            .call(
                "PUT",
                &format!("/v1/apps/{appid}/periodic-fetch"),
                developer,
                Some(serde_json::json!({"enabled": true, "source": {"url": url}, "gray": null})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal (`"TERM"`, `"INT"`) to the process.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, or gives up after `seconds` (a hang guard).
    pub async fn exit_status(&mut self, seconds: u64) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The API's address, for raw TCP connections.
    pub fn address(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `check` returns `Some`, or panics after `seconds` (a hang guard, not a
/// timing assertion).
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request a test server saw: its query and headers.
pub type SeenRequest = (HashMap<String, String>, HeaderMap);
/// One delivery a provider saw: (delivery id, signature header, parsed body, raw body).
pub type SeenDelivery = (String, String, Value, String);

/// A developer's data server: answers `GET /feed` as `behaviour` says and records every
/// request's query and headers.
#[derive(Clone, Default)]
pub struct Origin {
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
    /// Each request's target (path and query) exactly as received.
    pub targets: Arc<Mutex<Vec<String>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
}

#[derive(Clone, Debug)]
pub enum Behaviour {
    Body(String),
    WithEtag(String, String),
    Status(u16, Option<u64>),
    Huge,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::Body("hello".into())
    }
}

async fn feed(
    State(origin): State<Origin>,
    Query(query): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(target) = uri.path_and_query() {
        origin.targets.lock().unwrap().push(target.to_string());
    }
    origin
        .requests
        .lock()
        .unwrap()
        .push((query, headers.clone()));
    let behaviour = origin.behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::Body(body) => body.into_response(),
        Behaviour::WithEtag(etag, body) => {
            if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
                (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response()
            } else {
                ([("etag", etag)], body).into_response()
            }
        }
        Behaviour::Status(status, retry_after) => {
            let mut response = StatusCode::from_u16(status).unwrap().into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().unwrap());
            }
            response
        }
        Behaviour::Huge => "x".repeat(262_145).into_response(),
    }
}

impl Origin {
    /// Serves on 127.0.0.2; returns the feed URL.
    pub async fn start(&self) -> String {
        let app = Router::new()
            .route("/feed", get(feed))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://127.0.0.2:{port}/feed")
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// A widget provider's refresh endpoint: records each delivery and answers with data.
#[derive(Clone, Default)]
pub struct Provider {
    /// (delivery id, signature header, body)
    pub deliveries: Arc<Mutex<Vec<SeenDelivery>>>,
    /// Fail this many deliveries first (500).
    pub fail_first: Arc<Mutex<usize>>,
    /// Answer 204 (keep the data) instead of JSON.
    pub no_data: Arc<Mutex<bool>>,
}

async fn refresh(State(provider): State<Provider>, headers: HeaderMap, body: String) -> Response {
    let id = headers
        .get("refreshd-delivery-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let signature = headers
        .get("refreshd-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let n = {
        let mut deliveries = provider.deliveries.lock().unwrap();
        deliveries.push((id, signature, json.clone(), body));
        deliveries.len()
    };
    {
        let mut fail = provider.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    if *provider.no_data.lock().unwrap() {
        return StatusCode::NO_CONTENT.into_response();
    }
    axum::Json(serde_json::json!({"n": n, "trigger": json["trigger"]})).into_response()
}

impl Provider {
    pub async fn start(&self) -> String {
        let app = Router::new()
            .route("/refresh", post(refresh))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://127.0.0.2:{port}/refresh")
    }

    pub fn triggers(&self, form_id: &str) -> Vec<String> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, body, _)| body["form_id"] == form_id)
            .map(|(_, _, body, _)| body["trigger"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// An epoch for `--time-warp-epoch`: now, so virtual time starts at the present.
pub fn epoch_now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Reads an SSE response until `until` appears in the text (or the guard deadline).
pub async fn read_sse_until(response: &mut reqwest::Response, until: &str) -> String {
    let mut seen = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(chunk)) = response.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(until) {
                return;
            }
        }
    })
    .await;
    seen
}

/// Reads an SSE response until a complete event mentions `marker` (or the guard
/// deadline); answers the complete events read. Pick a marker no generated id can
/// contain (ids are alphanumeric), or the read may stop at the wrong event.
pub async fn read_events_until(response: &mut reqwest::Response, marker: &str) -> Vec<SseEvent> {
    let mut seen = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(chunk)) = response.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if sse_events(&seen)
                .iter()
                .any(|e| e.data.to_string().contains(marker))
            {
                return;
            }
        }
    })
    .await;
    sse_events(&seen)
}

/// One server-sent event: its id, its name and its data as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// The complete events in an SSE text (comments and keep-alives skipped).
pub fn sse_events(text: &str) -> Vec<SseEvent> {
    // A block counts once the blank line that ends it has arrived.
    let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
    complete
        .split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            Some(SseEvent {
                id: id?,
                event: event?,
                data: data?,
            })
        })
        .collect()
}
