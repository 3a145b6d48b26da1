//! A canary token through every failure path of a periodic fetch: it must not appear in
//! logs at any level, in metrics, in any API response, or in what a redirect target
//! receives.

mod support;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use std::sync::{Arc, Mutex};
use support::*;

const CANARY: &str = "canary-7f3a9c2e41b8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_token_never_leaks_on_any_failure_path() {
    let dir = temp_dir("canary");
    // A redirect target that records everything it receives.
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = received.clone();
    let target = Router::new().route(
        "/steal",
        get(move |headers: HeaderMap, uri: axum::http::Uri| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(format!("{uri} {headers:?}"));
                "gotcha"
            }
        }),
    );
    let target_listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let steal = format!("http://{}/steal", target_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(target_listener, target).await.unwrap() });
    // Origins for each failure.
    let silent = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let silent_url = format!("http://{}/feed", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream); // accept and never answer
        }
    });
    let origin = Origin::default();
    let feed = origin.start().await;

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let svc = Service::start_with_env(
        &dir,
        &epoch_now(),
        &[
            "--metrics-listen",
            &metrics,
            "--fetch-deadline-seconds",
            "1",
        ],
        &[("RUST_LOG", "trace")],
    );
    let (_, app) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &svc.operator,
            Some(json!({"appid": "wx1", "subject": "organization"})),
        )
        .await;
    let developer = app["developer_key"].as_str().unwrap().to_string();
    let (_, device) = svc
        .call(
            "POST",
            "/v1/admin/devices",
            &svc.operator,
            Some(json!({"device_id": "d1", "user_id": "u1", "zone": "UTC"})),
        )
        .await;
    let device_key = device["device_key"].as_str().unwrap().to_string();
    svc.call(
        "PUT",
        "/v1/apps/wx1/background-fetch/token",
        &device_key,
        Some(json!({"token": CANARY})),
    )
    .await;

    let mut responses = String::new();
    let mut outcomes = Vec::new();
    let cases: Vec<(&str, String, Option<Behaviour>)> = vec![
        ("timeout", silent_url.clone(), None),
        (
            "dns failure",
            "https://no-such-host.invalid/feed".to_string(),
            None,
        ),
        ("500", feed.clone(), Some(Behaviour::Status(500, None))),
        ("too large", feed.clone(), Some(Behaviour::Huge)),
        ("redirect", feed.clone(), Some(Behaviour::Status(302, None))),
    ];
    for (name, url, behaviour) in cases {
        if let Some(behaviour) = behaviour {
            origin.set(behaviour);
        }
        let (status, body) = svc
            .call(
                "PUT",
                "/v1/apps/wx1/periodic-fetch",
                &developer,
                Some(json!({"enabled": true, "source": {"url": url}})),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let (_, report) = svc
            .call(
                "POST",
                "/v1/apps/wx1/periodic-fetch/fetch-now",
                &developer,
                Some(json!({"user_id": "u1"})),
            )
            .await;
        outcomes.push((
            name,
            report["outcome"].as_str().unwrap_or_default().to_string(),
        ));
        responses.push_str(&report.to_string());
    }
    // A redirect whose Location points at the recording target, and a body that is not UTF-8.
    let redirector = Router::new()
        .route(
            "/feed",
            get(move || {
                let steal = steal.clone();
                async move { (axum::http::StatusCode::FOUND, [("location", steal)], "") }
            }),
        )
        .route("/latin1", get(|| async { vec![0x63u8, 0x61, 0x66, 0xe9] }));
    let redirector_listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let redirector_base = format!("http://{}", redirector_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(redirector_listener, redirector).await.unwrap() });
    for (name, path) in [
        ("redirect to a recorder", "/feed"),
        ("not utf-8", "/latin1"),
    ] {
        svc.call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer,
            Some(json!({"enabled": true, "source": {"url": format!("{redirector_base}{path}")}})),
        )
        .await;
        let (_, report) = svc
            .call(
                "POST",
                "/v1/apps/wx1/periodic-fetch/fetch-now",
                &developer,
                Some(json!({"user_id": "u1"})),
            )
            .await;
        outcomes.push((
            name,
            report["outcome"].as_str().unwrap_or_default().to_string(),
        ));
        responses.push_str(&report.to_string());
    }
    let expected = [
        "timeout",
        "connect",
        "http_status",
        "too_large",
        "redirect",
        "redirect",
        "not_utf8",
    ];
    let got: Vec<&str> = outcomes.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(got, expected, "{outcomes:?}");

    for path in [
        "/v1/apps/wx1/periodic-fetch/log?user_id=u1",
        "/v1/apps/wx1/periodic-fetch/explain?user_id=u1",
    ] {
        let (_, body) = svc.call("GET", path, &developer, None).await;
        responses.push_str(&body.to_string());
    }
    let metrics_text = svc
        .client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logs = svc.stderr();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "logs were captured at fine levels"
    );
    let stolen = received.lock().unwrap().join("\n");
    for (place, text) in [
        ("logs", &logs),
        ("metrics", &metrics_text),
        ("API responses", &responses),
        ("redirect target", &stolen),
    ] {
        assert_eq!(
            text.matches(CANARY).count(),
            0,
            "the token leaked into {place}"
        );
    }
    assert!(stolen.is_empty(), "the redirect was followed: {stolen}");
}
