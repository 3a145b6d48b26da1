//! What one tenant does cannot corrupt or exhaust what others rely on: overlapping
//! fetches never move a cache backward, a provider writing as fast as it may keeps the
//! store bounded, and a rotated signing secret overlaps its successor.

mod support;

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use refreshd_engine::secrets::sign_delivery;
use refreshd_store::{Store, EVENTS_KEPT_PER_FORM};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Service;
use tokio::sync::{mpsc, oneshot};

const MINUTE: i64 = 60_000;

/// Polls `check` until it holds (a hang guard of 20 s, not a timing).
async fn until<F: FnMut() -> bool>(what: &str, mut check: F) {
    let guard = tokio::time::timeout(Duration::from_secs(20), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    assert!(guard.await.is_ok(), "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p11_overlapping_fetches_the_later_sent_wins_whichever_finishes_last() {
    let service = Service::start("overlap").await;
    // The developer's server: the first request is held until released and answers
    // "older"; every later one answers "newer" at once.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let (release_tx, release) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release)));
    let served = Arc::new(Mutex::new(0));
    let developer = Router::new().route(
        "/feed",
        get(move || {
            let (arrived_tx, release, served) =
                (arrived_tx.clone(), release.clone(), served.clone());
            async move {
                let first = {
                    let mut n = served.lock().unwrap();
                    *n += 1;
                    *n == 1
                };
                let _ = arrived_tx.send(());
                if first {
                    let wait = release.lock().unwrap().take().unwrap();
                    let _ = wait.await;
                    "older"
                } else {
                    "newer"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let feed = format!("http://{}/feed", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, developer).await.unwrap() });

    let (status, app) = service
        .call(
            "POST",
            "/v1/admin/apps",
            &service.operator,
            Some(json!({"appid": "wx1", "subject": "organization"})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let developer_key = app["developer_key"].as_str().unwrap().to_string();
    let (status, body) = service
        .call(
            "PUT",
            "/v1/apps/wx1/periodic-fetch",
            &developer_key,
            Some(json!({"enabled": true, "source": {"url": feed}, "gray": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, device_key) = service.create_device("u1").await;
    assert_eq!(status, 201);
    let device_key = device_key.unwrap();
    let (status, _) = service
        .call(
            "PUT",
            "/v1/apps/wx1/background-fetch/token",
            &device_key,
            Some(json!({"token": "t1"})),
        )
        .await;
    assert_eq!(status, 204);

    let older = {
        let (client, base, key) = (
            service.client.clone(),
            service.base.clone(),
            developer_key.clone(),
        );
        tokio::spawn(async move {
            client
                .post(format!("{base}/v1/apps/wx1/periodic-fetch/fetch-now"))
                .bearer_auth(key)
                .json(&json!({"user_id": "u1"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    arrived.recv().await.unwrap();
    service.clock.advance_ms(MINUTE);
    let (status, newer) = service
        .call(
            "POST",
            "/v1/apps/wx1/periodic-fetch/fetch-now",
            &developer_key,
            Some(json!({"user_id": "u1"})),
        )
        .await;
    assert_eq!(status, 200, "{newer}");
    assert_eq!(newer["outcome"], "ok");
    let (_, cached) = service
        .call(
            "GET",
            "/v1/apps/wx1/background-fetch?fetch_type=periodic",
            &device_key,
            None,
        )
        .await;
    assert_eq!(cached["fetched_data"], "newer");
    let newer_stamp = cached["time_stamp"].as_i64().unwrap();

    // The fetch sent first finishes last, a minute later.
    service.clock.advance_ms(MINUTE);
    release_tx.send(()).unwrap();
    assert_eq!(older.await.unwrap(), 200);
    let (_, cached) = service
        .call(
            "GET",
            "/v1/apps/wx1/background-fetch?fetch_type=periodic",
            &device_key,
            None,
        )
        .await;
    assert_eq!(
        cached["fetched_data"], "newer",
        "the older answer never replaces newer data"
    );
    assert_eq!(cached["time_stamp"].as_i64().unwrap(), newer_stamp);
    let (_, log) = service
        .call(
            "GET",
            "/v1/apps/wx1/periodic-fetch/log?user_id=u1",
            &developer_key,
            None,
        )
        .await;
    assert_eq!(
        log["attempts"].as_array().map(Vec::len),
        Some(2),
        "both attempts are logged: {log}"
    );
}

/// A provider that answers every delivery with 204 and keeps their signature headers.
async fn provider_server() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let provider = Router::new().route(
        "/refresh",
        post(move |headers: HeaderMap, body: String| {
            let kept = kept.clone();
            async move {
                let signature = headers["refreshd-signature"].to_str().unwrap().to_string();
                kept.lock().unwrap().push((signature, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let url = format!("http://{}/refresh", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, provider).await.unwrap() });
    (url, seen)
}

/// Creates provider `p` at `refresh_url` with one form definition; answers its key and
/// signing secret.
async fn provider_with_config(service: &Service, refresh_url: &str) -> (String, String) {
    let (status, provider) = service
        .call("POST", "/v1/admin/providers", &service.operator, Some(json!({"provider": "p", "refresh_url": refresh_url, "system_app": false, "api_version": 11})))
        .await;
    assert_eq!(status, 201, "{provider}");
    let key = provider["provider_key"].as_str().unwrap().to_string();
    let config = json!({"forms": [{"name": "w", "updateEnabled": true, "updateDuration": 1}]});
    let (status, _) = service
        .call("PUT", "/v1/providers/p/form-config", &key, Some(config))
        .await;
    assert_eq!(status, 200);
    (
        key,
        provider["signing_secret"].as_str().unwrap().to_string(),
    )
}

async fn add_form(service: &Service, device_key: &str) -> String {
    let (status, form) = service
        .call(
            "POST",
            "/v1/forms",
            device_key,
            Some(json!({"provider": "p", "form_name": "w"})),
        )
        .await;
    assert_eq!(status, 201, "{form}");
    form["form_id"].as_str().unwrap().to_string()
}

/// The `v1=` entries of a signature header that verify under `secret`.
fn verifies(header: &str, body: &str, secret: &str) -> bool {
    let t: i64 = header
        .split(',')
        .next()
        .unwrap()
        .strip_prefix("t=")
        .unwrap()
        .parse()
        .unwrap();
    let expected = sign_delivery(secret, t, body);
    let expected = expected.split_once(",v1=").unwrap().1;
    header
        .split(',')
        .skip(1)
        .any(|entry| entry == format!("v1={expected}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_secret_signs_beside_its_successor_until_the_overlap_ends() {
    let service = Service::start("secret").await;
    let (refresh_url, seen) = provider_server().await;
    let (_, old_secret) = provider_with_config(&service, &refresh_url).await;
    let (_, device_key) = service.create_device("d1").await;
    let device_key = device_key.unwrap();

    add_form(&service, &device_key).await;
    until("the first delivery", || seen.lock().unwrap().len() == 1).await;

    let (status, rotated) = service
        .call(
            "POST",
            "/v1/admin/providers/p/rotate-signing-secret",
            &service.operator,
            Some(json!({"overlap_minutes": 60})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["signing_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, old_secret);
    assert!(rotated["previous_valid_until"].as_str().is_some());

    add_form(&service, &device_key).await;
    until("the second delivery", || seen.lock().unwrap().len() == 2).await;
    service.clock.advance_ms(61 * MINUTE);
    add_form(&service, &device_key).await;
    until("the third delivery", || seen.lock().unwrap().len() >= 3).await;

    let seen = seen.lock().unwrap().clone();
    let (before, during, after) = (&seen[0], &seen[1], seen.last().unwrap());
    assert!(verifies(&before.0, &before.1, &old_secret));
    assert!(!verifies(&before.0, &before.1, &new_secret));
    assert!(verifies(&during.0, &during.1, &new_secret), "{}", during.0);
    assert!(
        verifies(&during.0, &during.1, &old_secret),
        "the overlap carries both: {}",
        during.0
    );
    assert!(verifies(&after.0, &after.1, &new_secret));
    assert!(
        !verifies(&after.0, &after.1, &old_secret),
        "the old secret stops after the overlap"
    );

    let (status, body) = service
        .call(
            "POST",
            "/v1/admin/providers/p/rotate-signing-secret",
            &service.operator,
            Some(json!({"overlap_minutes": 100000})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = service
        .call(
            "POST",
            "/v1/admin/providers/nobody/rotate-signing-secret",
            &service.operator,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);

    // Neither secret is in the database file as text.
    let bytes = std::fs::read(&service.db).unwrap();
    let mut wal = service.db.as_os_str().to_owned();
    wal.push("-wal");
    let bytes = [bytes, std::fs::read(wal).unwrap_or_default()].concat();
    for secret in [&old_secret, &new_secret] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a signing secret is stored in the clear"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_full_size_provider_puts_keep_the_store_bounded() {
    let service = Service::start("bounded").await;
    let (refresh_url, _) = provider_server().await;
    let (provider_key, _) = provider_with_config(&service, &refresh_url).await;
    let (_, device_key) = service.create_device("d1").await;
    let device_key = device_key.unwrap();
    let form_id = add_form(&service, &device_key).await;
    let path = format!("/v1/forms/{form_id}/data");
    let size_of_store = || {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut file = service.db.as_os_str().to_owned();
                file.push(suffix);
                std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = size_of_store();
    let mut largest = 0;
    for i in 0..1000 {
        // 262,000 bytes of JSON, each different.
        let data = json!({"i": i, "filler": "y".repeat(262_000 - 30)});
        let (status, body) = service.call("PUT", &path, &provider_key, Some(data)).await;
        assert_eq!(status, 200, "{body}");
        largest = largest.max(size_of_store());
    }
    // The bound: the form's data and its kept events (each at most 262,144 bytes), plus
    // the WAL, which SQLite checkpoints and reuses at about 1,000 pages (4 MiB) past
    // the transaction that crosses it.
    let per_form = (1 + EVENTS_KEPT_PER_FORM as u64) * 262_144;
    let bound = before + 2 * per_form + 8 * 1024 * 1024;
    assert!(
        largest <= bound,
        "the store grew to {largest} bytes, over the bound of {bound}"
    );
    let events = service.store.events_after("d1", 0, 10_000).await.unwrap();
    let of_form = events
        .iter()
        .filter(|e| e.payload.contains(&form_id))
        .count() as i64;
    assert!(
        of_form <= EVENTS_KEPT_PER_FORM,
        "{of_form} events kept for one form"
    );
    let (_, last) = service.call("GET", &path, &device_key, None).await;
    assert_eq!(last["data"]["i"], 999, "the latest data is kept");
}
