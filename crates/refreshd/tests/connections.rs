//! The running service's connections over real sockets: shutdown with SSE clients open,
//! the grace period and a second signal, the header-read timeout, the connection cap,
//! the cap on event streams per key, and rotation ending a key's streams.
//!
//! Nothing waits for time to pass: each step waits for a signal (a line on stderr, a
//! stream's end, the process's exit) under a hang guard several times wider than any
//! setting involved.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client with no connection pool: each request has its own connection, closed after.
fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn new_device(svc: &Service, client: &reqwest::Client, device_id: &str) -> String {
    let response = client
        .post(format!("{}/v1/admin/devices", svc.base))
        .bearer_auth(&svc.operator)
        .json(&json!({"device_id": device_id, "user_id": format!("u-{device_id}"), "zone": "UTC"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["device_key"].as_str().unwrap().to_string()
}

async fn open_events(svc: &Service, key: &str) -> reqwest::Response {
    unpooled()
        .get(format!("{}/v1/events", svc.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// Reads an SSE response until it ends; `None` if it has not ended within `seconds`.
async fn stream_end(response: &mut reqwest::Response, seconds: u64) -> Option<String> {
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(seconds), async {
        while let Ok(Some(chunk)) = response.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .ok()
    .map(|()| seen)
}

/// Sends `request` on a new connection and reads until the server closes it.
async fn raw_exchange(address: &str, request: &str, seconds: u64) -> Option<String> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(seconds), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).to_string())
}

/// A request whose body never arrives: it holds a handler (and so a graceful shutdown)
/// until the connection is abandoned. Returns once the handler is reading the body
/// (the server sent `100 Continue`).
async fn stuck_request(svc: &Service) -> TcpStream {
    let mut stream = TcpStream::connect(svc.address()).await.unwrap();
    let head = format!(
        "POST /v1/admin/devices HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\nexpect: 100-continue\r\n\r\n",
        svc.operator
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let continued = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("100 Continue") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
        true
    })
    .await;
    assert_eq!(
        continued.ok(),
        Some(true),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    stream.write_all(b"{\"dev").await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_sse_streams_and_exits() {
    let dir = temp_dir("shutdown-sse");
    // A grace period far longer than the guard below: the exit must come from the
    // streams ending, not from the grace period running out.
    let mut svc = Service::start(&dir, &epoch_now(), &["--shutdown-grace-seconds", "600"]);
    let client = unpooled();
    let first = new_device(&svc, &client, "d1").await;
    let second = new_device(&svc, &client, "d2").await;
    let mut streams = Vec::new();
    for key in [&first, &first, &second] {
        let response = open_events(&svc, key).await;
        assert_eq!(response.status(), 200);
        streams.push(response);
    }

    svc.signal("TERM");
    for stream in &mut streams {
        assert!(
            stream_end(stream, 30).await.is_some(),
            "an SSE stream was not ended by SIGTERM"
        );
    }
    let status = svc.exit_status(30).await.unwrap_or_else(|| {
        panic!(
            "refreshd did not exit after SIGTERM with SSE clients open; stderr: {}",
            svc.stderr()
        )
    });
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_abandons_a_stuck_request_and_a_second_signal_exits_at_once() {
    // A request that never finishes is abandoned when the grace period ends.
    let dir = temp_dir("shutdown-grace");
    let mut svc = Service::start(&dir, &epoch_now(), &["--shutdown-grace-seconds", "1"]);
    let _stuck = stuck_request(&svc).await;
    svc.signal("TERM");
    let status = svc.exit_status(5).await.unwrap_or_else(|| {
        panic!(
            "no exit within 5x the grace period; stderr: {}",
            svc.stderr()
        )
    });
    assert!(status.success(), "{status:?}");
    assert!(
        svc.stderr().contains("grace period ended"),
        "{}",
        svc.stderr()
    );

    // With a long grace period, a second signal exits at once, with 128 + SIGTERM.
    let dir = temp_dir("shutdown-twice");
    let mut svc = Service::start(&dir, &epoch_now(), &["--shutdown-grace-seconds", "600"]);
    let _stuck = stuck_request(&svc).await;
    svc.signal("TERM");
    eventually(30, "the first signal was taken", || async {
        svc.stderr().contains("shutting down").then_some(())
    })
    .await;
    assert!(
        svc.exit_status(0).await.is_none(),
        "the stuck request holds the first, graceful shutdown"
    );
    svc.signal("TERM");
    let status = svc
        .exit_status(30)
        .await
        .expect("a second signal exits at once");
    assert_eq!(status.code(), Some(143), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_is_closed_after_the_header_timeout_and_connection_and_stream_caps_answer_clearly(
) {
    let dir = temp_dir("connections");
    let svc = Service::start(
        &dir,
        &epoch_now(),
        &[
            "--header-read-timeout-seconds",
            "1",
            "--max-connections",
            "2",
            "--max-streams-per-key",
            "1",
        ],
    );
    let address = svc.address();

    // Headers that never finish: the connection is closed after the 1 s timeout.
    let closed = raw_exchange(&address, "GET /healthz HTTP/1.1\r\nhost: x\r\n", 5).await;
    assert!(
        closed.is_some(),
        "a slow-loris connection stayed open past 5x the header timeout"
    );

    // One event stream per key here: a second answers 429 too_many_streams.
    let client = unpooled();
    let first_key = new_device(&svc, &client, "d1").await;
    let second_key = new_device(&svc, &client, "d2").await;
    let first_stream = open_events(&svc, &first_key).await;
    assert_eq!(first_stream.status(), 200);
    let refused = eventually(30, "an answer to a second stream", || async {
        let response = open_events(&svc, &first_key).await;
        // 503 while the previous request's connection is still being closed.
        (response.status() != 503).then_some(response)
    })
    .await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");

    // Two connections at most: with two streams open, a third connection is answered
    // 503 too_many_connections and closed.
    let second_stream = eventually(30, "a stream for another device", || async {
        let response = open_events(&svc, &second_key).await;
        (response.status() == 200).then_some(response)
    })
    .await;
    // An HTTP client gets the refusal as an answer.
    let refused = unpooled()
        .get(format!("{}/healthz", svc.base))
        .send()
        .await
        .expect("a refused connection is answered");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let answer = raw_exchange(&address, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 10)
        .await
        .expect("the refused connection is closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(json).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{answer}");

    // Once a stream's client goes away its connection and its place are freed.
    drop(first_stream);
    eventually(30, "a connection after one was freed", || async {
        let answer = raw_exchange(
            &address,
            "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            10,
        )
        .await?;
        answer.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    drop(second_stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_device_key_ends_its_open_event_streams() {
    let dir = temp_dir("rotate-sse");
    let provider = Provider::default();
    let refresh_url = provider.start().await;
    let svc = Service::start(&dir, &epoch_now(), &[]);
    let (_, created) = svc
        .call("POST", "/v1/admin/providers", &svc.operator, Some(json!({"provider": "p", "refresh_url": refresh_url, "system_app": false, "api_version": 11})))
        .await;
    let provider_key = created["provider_key"].as_str().unwrap().to_string();
    let (status, _) = svc
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(json!({"forms": [{"name": "note"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let client = unpooled();
    let old_key = new_device(&svc, &client, "d1").await;
    let (status, form) = svc
        .call(
            "POST",
            "/v1/forms",
            &old_key,
            Some(json!({"provider": "p", "form_name": "note"})),
        )
        .await;
    assert_eq!(status, 201, "{form}");
    let form_id = form["form_id"].as_str().unwrap().to_string();
    let mut old_stream = open_events(&svc, &old_key).await;
    assert_eq!(old_stream.status(), 200);

    let (status, rotated) = svc
        .call(
            "POST",
            "/v1/admin/devices/d1/rotate-key",
            &svc.operator,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let new_key = rotated["device_key"].as_str().unwrap().to_string();
    let seen = stream_end(&mut old_stream, 10)
        .await
        .expect("the stream opened with the rotated key ended");

    // New data reaches a stream opened with the new key, never the old one.
    let (status, _) = svc
        .call(
            "PUT",
            &format!("/v1/forms/{form_id}/data"),
            &provider_key,
            Some(json!({"text": "after rotation"})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!seen.contains("after rotation"), "{seen}");
    assert_eq!(open_events(&svc, &old_key).await.status(), 401);
    let mut new_stream = open_events(&svc, &new_key).await;
    assert_eq!(new_stream.status(), 200);
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(chunk)) = new_stream.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("after rotation") {
                return;
            }
        }
    })
    .await;
    assert!(text.contains("after rotation"), "{text}");
}

/// Reads from `stream` until the server closes it (or `seconds` pass: a hang guard).
async fn rest_of(stream: &mut TcpStream, seconds: u64) -> String {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(seconds), async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&seen).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_times_out_and_one_key_holds_only_its_share_of_requests() {
    let dir = temp_dir("trickle");
    let svc = Service::start(&dir, &epoch_now(), &["--header-read-timeout-seconds", "3"]);
    // The operator key's share: 32 requests whose bodies stop arriving.
    let mut stuck = Vec::new();
    for _ in 0..32 {
        stuck.push(stuck_request(&svc).await);
    }
    let (status, body) = svc
        .call(
            "POST",
            "/v1/admin/devices",
            &svc.operator,
            Some(json!({"device_id": "d1", "user_id": "u1", "zone": "UTC"})),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Another caller is not held up by them.
    let (status, _) = svc.call("GET", "/healthz", "", None).await;
    assert_eq!(status, 200);
    // Each trickled body is answered 408 once the deadline (the header timeout) ends.
    for mut stream in stuck {
        let answer = rest_of(&mut stream, 15).await;
        assert!(answer.contains("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    // A new connection: the service closes idle ones after the (short) header timeout.
    let answer = unpooled()
        .post(format!("{}/v1/admin/devices", svc.base))
        .bearer_auth(&svc.operator)
        .json(&json!({"device_id": "d1", "user_id": "u1", "zone": "UTC"}))
        .send()
        .await
        .expect("the service answers");
    assert_eq!(answer.status(), 201, "the key's places are free again");
}
