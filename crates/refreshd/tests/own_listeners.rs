//! The quickstart trusts 127.0.0.1/32, where refreshd itself listens: a developer's
//! source or a provider's refresh_url naming refreshd's own API or metrics address is
//! still refused, so nobody can pull `/metrics` or the API into a user's cache.

mod support;

use serde_json::json;
use support::{epoch_now, temp_dir, Service};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_never_fetches_from_or_delivers_to_its_own_listeners() {
    let dir = temp_dir("own");
    let metrics = format!("127.0.0.1:{}", free_port());
    let svc = Service::start(
        &dir,
        &epoch_now(),
        &[
            "--allow-destination",
            "127.0.0.1/32",
            "--metrics-listen",
            &metrics,
        ],
    );
    let api = svc.base.trim_start_matches("http://").to_string();
    let (status, app) = svc
        .call(
            "POST",
            "/v1/admin/apps",
            &svc.operator,
            Some(json!({"appid": "wx1", "subject": "organization"})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let developer = app["developer_key"].as_str().unwrap().to_string();
    for own in [
        format!("http://{metrics}/metrics"),
        format!("http://{api}/healthz"),
        format!(
            "http://localhost:{}/metrics",
            metrics.rsplit(':').next().unwrap()
        ),
    ] {
        let (status, body) = svc
            .call(
                "PUT",
                "/v1/apps/wx1/periodic-fetch",
                &developer,
                Some(json!({"enabled": true, "source": {"url": own}, "gray": null})),
            )
            .await;
        if status == 200 {
            // A name is judged when it is resolved, at fetch time: the fetch is blocked.
            assert!(own.contains("localhost"), "{own} accepted: {body}");
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
                Some(json!({"token": "t"})),
            )
            .await;
            let (status, report) = svc
                .call(
                    "POST",
                    "/v1/apps/wx1/periodic-fetch/fetch-now",
                    &developer,
                    Some(json!({"user_id": "u1"})),
                )
                .await;
            assert_eq!(status, 200, "{report}");
            assert_eq!(report["outcome"], "blocked_address", "{own}: {report}");
            let (status, _) = svc
                .call("GET", "/v1/apps/wx1/background-fetch", &device_key, None)
                .await;
            assert_eq!(status, 404, "nothing of refreshd's own reached the cache");
        } else {
            assert_eq!(status, 400, "{own}: {body}");
            assert_eq!(body["error"]["code"], "invalid_url", "{body}");
            assert!(body.to_string().contains("own"), "{body}");
        }
    }
    let (status, body) = svc
        .call(
            "POST",
            "/v1/admin/providers",
            &svc.operator,
            Some(json!({"provider": "p", "refresh_url": format!("http://{api}/v1/events"), "system_app": false, "api_version": 11})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_url", "{body}");
}
