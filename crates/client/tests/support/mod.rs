//! Runs the real refreshd binary, and the developer and provider servers it calls,
//! for the client's tests.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::{Stream, StreamExt};
use refreshd_client::{OperatorClient, SIGNATURE_HEADER};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Long enough for a loaded 2-core machine; only there to turn a hang into a failure.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub const ADMIN_KEY: &str = "rfdo_client_tests_0123456789abcdef0123456789abcdef";

/// The binary under test: `REFRESHD_BIN`, else the workspace's release build.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("REFRESHD_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "REFRESHD_BIN is set to {} but no file is there; build refreshd \
             (cargo build --release -p refreshd) or point REFRESHD_BIN at a binary",
            path.display()
        );
        return path;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = workspace.join("target/release/refreshd");
    assert!(
        path.is_file(),
        "no refreshd binary to test against: REFRESHD_BIN is unset and {} does not exist; \
         run `cargo build --release -p refreshd` or set REFRESHD_BIN",
        path.display()
    );
    path
}

/// A running refreshd on a data directory of its own.
pub struct Refreshd {
    child: Child,
    pub base: String,
    pub port: u16,
    data_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Refreshd {
    /// Starts refreshd on `data_dir`, on `port` (0: any free one), and waits for its
    /// `listening on http://…` line.
    pub async fn start(data_dir: &Path, port: u16) -> Refreshd {
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--allow-destination", "127.0.0.0/8"])
            .args([
                "--rate-limit-per-second",
                "10000",
                "--rate-limit-burst",
                "10000",
            ])
            .env("REFRESHD_ADMIN_KEY", ADMIN_KEY)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("refreshd starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut all = stderr.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let found = tokio::time::timeout(DEADLINE, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if let Some(at) = line.find("listening on http://") {
                    let url = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .trim_end_matches('/')
                        .to_string();
                    return Some(url);
                }
            }
            None
        })
        .await;
        let base = match found {
            Ok(Some(base)) => base,
            other => {
                let _ = child.start_kill();
                panic!(
                    "refreshd did not print `listening on http://…` ({}); stderr:\n{}",
                    if other.is_err() {
                        "timed out"
                    } else {
                        "stdout closed"
                    },
                    stderr.lock().unwrap()
                );
            }
        };
        // Keep reading stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        Refreshd {
            child,
            base,
            port,
            data_dir: data_dir.to_path_buf(),
            stderr,
        }
    }

    pub fn operator(&self) -> OperatorClient {
        OperatorClient::new(&self.base, ADMIN_KEY).unwrap()
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
        }
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("refreshd stops on SIGTERM")
            .unwrap();
    }

    /// Stops and starts again on the same data directory and port.
    pub async fn restart(self) -> Refreshd {
        let (dir, port) = (self.data_dir.clone(), self.port);
        self.stop().await;
        Refreshd::start(&dir, port).await
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether this binary has the device-sync contract's endpoints.
    pub async fn openapi(&self) -> serde_json::Value {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{}/v1/openapi.json", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }
}

/// One request refreshd made to a test server.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request target as it arrived, e.g. `/data?appid=…`.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    pub fn signature(&self) -> String {
        self.header(SIGNATURE_HEADER)
    }
}

/// A server on 127.0.0.1 that records each request and answers with `answer`.
pub struct TestServer {
    pub url: String,
    requests: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// A developer's data server: `GET /data` answers the text `body(n)` for its
    /// n-th request (from 1).
    pub async fn developer(body: impl Fn(usize) -> String + Send + Sync + 'static) -> TestServer {
        let body = Arc::new(body);
        Self::serve("/data", move |n, _| {
            let text = body(n);
            (StatusCode::OK, text).into_response()
        })
        .await
    }

    /// A provider's refresh endpoint: `POST /refresh` answers `answer(n, body)` as JSON.
    pub async fn provider(
        answer: impl Fn(usize, &Bytes) -> serde_json::Value + Send + Sync + 'static,
    ) -> TestServer {
        let answer = Arc::new(answer);
        Self::serve("/refresh", move |n, body| {
            let json = answer(n, body);
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                json.to_string(),
            )
                .into_response()
        })
        .await
    }

    async fn serve(
        path: &'static str,
        answer: impl Fn(usize, &Bytes) -> axum::response::Response + Send + Sync + 'static,
    ) -> TestServer {
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(Mutex::new(0usize));
        let answer = Arc::new(answer);
        let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (tx, count, answer) = (tx.clone(), count.clone(), answer.clone());
            async move {
                let n = {
                    let mut count = count.lock().unwrap();
                    *count += 1;
                    *count
                };
                let response = answer(n, &body);
                let target = uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                let _ = tx.send(Received {
                    target,
                    headers,
                    body,
                });
                response
            }
        };
        let router = Router::new().route(path, get(handler.clone()).post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestServer {
            url,
            requests: rx,
            task,
        }
    }

    /// The next request, within the deadline.
    pub async fn next(&mut self, what: &str) -> Received {
        tokio::time::timeout(DEADLINE, self.requests.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("server running")
    }

    /// Every request received so far.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut all = Vec::new();
        while let Ok(r) = self.requests.try_recv() {
            all.push(r);
        }
        all
    }
}

/// The next item of a stream, within the deadline.
pub async fn next_item<S: Stream + Unpin>(stream: &mut S, what: &str) -> S::Item {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("stream ended while waiting for {what}"))
}

/// Polls `check` until it answers `Some`, within the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
