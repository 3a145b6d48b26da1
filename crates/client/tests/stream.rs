//! The event stream's reconnection against a scripted server: which `Last-Event-ID`
//! each reconnect sends, which errors end the stream and which are retried.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use refreshd_client::{ClientError, DeviceClient, HostEvent, ReconnectPolicy};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// What the n-th request (from 0) to `/v1/events` gets.
type Script = Arc<dyn Fn(usize) -> Response + Send + Sync>;

/// Serves `/v1/events` by `script`; returns the base URL and the headers of every
/// request received.
async fn scripted(script: Script) -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let handler = move |headers: HeaderMap| {
        let (seen, script) = (recorded.clone(), script.clone());
        async move {
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(headers);
                seen.len() - 1
            };
            script(n)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/v1/events", get(handler)))
            .await
            .unwrap()
    });
    (base, seen)
}

fn sse(body: &'static str) -> Response {
    ([("content-type", "text/event-stream")], body).into_response()
}

fn api_error(status: StatusCode, code: &str, retry_after: Option<&str>) -> Response {
    let body = format!(r#"{{"error":{{"code":"{code}","message":"m","details":[]}}}}"#);
    let mut response = (status, [("content-type", "application/json")], body).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.parse().unwrap());
    }
    response
}

fn quick() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ..ReconnectPolicy::default()
    }
}

fn last_event_ids(seen: &Mutex<Vec<HeaderMap>>) -> Vec<Option<String>> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|h| {
            h.get("last-event-id")
                .map(|v| v.to_str().unwrap().to_string())
        })
        .collect()
}

async fn next(events: &mut refreshd_client::EventStream) -> Option<Result<HostEvent, ClientError>> {
    tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("the stream answers in time")
}

#[tokio::test]
async fn reconnects_with_the_last_event_id_until_a_401() {
    let (base, seen) = scripted(Arc::new(|n| match n {
        0 => sse(": keep-alive\n\nid: 1\nevent: form_removed\ndata: {\"form_id\":\"a\"}\n\n"),
        // An event without an id keeps the one before.
        1 => sse("event: form_removed\ndata: {\"form_id\":\"b\"}\n\nid: 2\nevent: fetched_data\ndata: {\"appid\":\"wx1\",\"fetched_data\":\"x\",\"time_stamp\":5}\n\n"),
        _ => api_error(StatusCode::UNAUTHORIZED, "unauthorized", None),
    }))
    .await;
    let device = DeviceClient::new(&base, "rfdd_scripted_key").unwrap();
    let mut events = device.events_with(None, quick());

    let first = next(&mut events).await.unwrap().unwrap();
    assert!(
        matches!(&first, HostEvent::FormRemoved { id, event } if id == "1" && event.form_id == "a")
    );
    let second = next(&mut events).await.unwrap().unwrap();
    assert!(
        matches!(&second, HostEvent::FormRemoved { id, event } if id == "1" && event.form_id == "b")
    );
    let third = next(&mut events).await.unwrap().unwrap();
    assert!(
        matches!(&third, HostEvent::FetchedData { id, event } if id == "2" && event.time_stamp == 5)
    );
    assert_eq!(events.last_event_id().as_deref(), Some("2"));

    let error = next(&mut events).await.unwrap().unwrap_err();
    assert_eq!(
        (error.status(), error.code()),
        (Some(401), Some("unauthorized"))
    );
    assert!(next(&mut events).await.is_none(), "a 401 ends the stream");

    assert_eq!(
        last_event_ids(&seen),
        vec![None, Some("1".into()), Some("2".into())]
    );
    let seen = seen.lock().unwrap();
    assert!(seen
        .iter()
        .all(|h| h["authorization"] == "Bearer rfdd_scripted_key"
            && h["accept"] == "text/event-stream"
            && !h.contains_key("referer")));
}

#[tokio::test]
async fn resumes_from_a_given_id_and_retries_unavailable_and_rate_limited() {
    let (base, seen) = scripted(Arc::new(|n| match n {
        0 => api_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
        1 => api_error(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", Some("0")),
        _ => sse("id: 41\nevent: form_removed\ndata: {\"form_id\":\"z\"}\n\n"),
    }))
    .await;
    let device = DeviceClient::new(&base, "rfdd_k").unwrap();
    let mut events = device.events_with(Some("40".into()), quick());
    let event = next(&mut events).await.unwrap().unwrap();
    assert_eq!(event.id(), "41");
    assert_eq!(
        last_event_ids(&seen),
        vec![Some("40".into()), Some("40".into()), Some("40".into())]
    );
}

#[tokio::test]
async fn gives_up_after_max_failures_and_skips_undecodable_events() {
    let (base, seen) = scripted(Arc::new(|n| match n {
        0 => sse("id: 1\nevent: form_data\ndata: {not json\n\nid: 2\nevent: something_new\ndata: hello\n\n"),
        _ => api_error(StatusCode::BAD_GATEWAY, "bad_gateway", None),
    }))
    .await;
    let device = DeviceClient::new(&base, "rfdd_k").unwrap();
    let policy = ReconnectPolicy {
        max_failures: Some(3),
        ..quick()
    };
    let mut events = device.events_with(None, policy);
    let broken = next(&mut events).await.unwrap().unwrap_err();
    assert!(matches!(broken, ClientError::Decode { .. }), "{broken:?}");
    let other = next(&mut events).await.unwrap().unwrap();
    assert!(
        matches!(&other, HostEvent::Other { kind, data, .. } if kind == "something_new" && data == "hello")
    );
    // The connection's end is the first failure, then two 502s.
    let error = next(&mut events).await.unwrap().unwrap_err();
    assert_eq!(error.status(), Some(502));
    assert!(next(&mut events).await.is_none());
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_silent_connection_is_replaced_and_a_non_stream_answer_ends_it() {
    let (base, seen) = scripted(Arc::new(|n| match n {
        // Headers, then nothing at all: not even a keep-alive.
        0 => (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(futures_util::stream::pending::<
                Result<axum::body::Bytes, std::io::Error>,
            >()),
        )
            .into_response(),
        1 => sse("id: 7\nevent: form_removed\ndata: {\"form_id\":\"q\"}\n\n"),
        _ => ([("content-type", "application/json")], "{}").into_response(),
    }))
    .await;
    let device = DeviceClient::new(&base, "rfdd_k").unwrap();
    let policy = ReconnectPolicy {
        idle_timeout: Duration::from_millis(300),
        ..quick()
    };
    let mut events = device.events_with(None, policy);
    let event = next(&mut events).await.unwrap().unwrap();
    assert_eq!(event.id(), "7");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the silent connection was replaced"
    );
    let error = next(&mut events).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, ClientError::Decode { reason, .. } if reason.contains("application/json")),
        "{error:?}"
    );
    assert!(next(&mut events).await.is_none());
}
