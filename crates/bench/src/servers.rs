//! Loopback servers for the benchmarks: the origin the fetch benchmarks fetch from (also
//! run alone as `refreshd-bench origin`, the reference wrk measures), and
//! `refreshd-bench memory-server`, the reference for reads of cached data: the same
//! route, authorization check and JSON shape as refreshd's, answered from memory.

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// What an origin has seen.
#[derive(Default)]
pub struct OriginLog {
    pub requests: AtomicU64,
    /// When set, (token, arrival in ms since the epoch) of every request.
    pub arrivals: Option<Mutex<Vec<(String, i64)>>>,
}

#[derive(Clone)]
struct OriginState {
    body: Bytes,
    log: Arc<OriginLog>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A query parameter's raw value (the bench's tokens and sizes need no decoding).
fn param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

async fn feed(State(state): State<OriginState>, uri: Uri) -> Response {
    state.log.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(arrivals) = &state.log.arrivals {
        let token = param(&uri, "token").unwrap_or_default().to_string();
        arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((token, now_ms()));
    }
    // `size` (bytes) picks another body length: one origin serves several apps.
    let body = match param(&uri, "size").and_then(|s| s.parse::<usize>().ok()) {
        Some(size) if size != state.body.len() => Bytes::from(vec![b'x'; size]),
        _ => state.body.clone(),
    };
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// Serves `body_bytes` of text at `/feed` on `listener` until the process ends.
pub fn spawn_origin(listener: tokio::net::TcpListener, body_bytes: usize, log: Arc<OriginLog>) {
    let state = OriginState {
        body: Bytes::from(vec![b'x'; body_bytes]),
        log,
    };
    let router = axum::Router::new()
        .route("/feed", axum::routing::get(feed))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// `refreshd-bench origin`: the origin alone, for wrk.
pub async fn origin(listen: SocketAddr, body_bytes: usize) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    spawn_origin(listener, body_bytes, Arc::new(OriginLog::default()));
    std::future::pending::<()>().await;
    Ok(())
}

#[derive(Clone)]
struct MemoryState {
    keys: Arc<HashSet<String>>,
    answers: Arc<HashMap<String, Bytes>>,
}

async fn cached(
    State(state): State<MemoryState>,
    Path(appid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !key.is_some_and(|k| state.keys.contains(k)) {
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    match state.answers.get(&appid) {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such app").into_response(),
    }
}

/// `refreshd-bench memory-server`: `GET /v1/apps/{appid}/background-fetch` answered from
/// prebuilt bytes, one answer per app (`NAME=BYTES` of cached body), for any key listed
/// in `keys_file` (one per line).
pub async fn memory_server(
    listen: SocketAddr,
    apps: &[String],
    keys_file: &std::path::Path,
) -> Result<()> {
    let keys: HashSet<String> = std::fs::read_to_string(keys_file)
        .with_context(|| format!("reading {}", keys_file.display()))?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if keys.is_empty() {
        bail!("{} lists no keys", keys_file.display());
    }
    let mut answers = HashMap::new();
    for app in apps {
        let (name, bytes) = app.split_once('=').context("--app takes NAME=BYTES")?;
        let bytes: usize = bytes.parse().context("--app takes NAME=BYTES")?;
        let body = serde_json::json!({
            "fetched_data": "x".repeat(bytes),
            "time_stamp": now_ms(),
        });
        answers.insert(name.to_string(), Bytes::from(serde_json::to_vec(&body)?));
    }
    let state = MemoryState {
        keys: Arc::new(keys),
        answers: Arc::new(answers),
    };
    let router = axum::Router::new()
        .route(
            "/v1/apps/{appid}/background-fetch",
            axum::routing::get(cached),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
