//! A full disk: nothing acknowledged is lost, nothing unacknowledged is half-kept, and
//! the service recovers by itself when space returns.
//!
//! The disk is "filled" without root by capping the SQLite file (`max_page_count`) a few
//! pages above its size: past the cap every write fails exactly as on a full disk
//! (`SQLITE_FULL`). The API runs in-process over real sockets on a real SQLite file.

mod support;

use refreshd_engine::secrets::hash_key;
use refreshd_store::{SqliteStore, Store};
use serde_json::{json, Value};
use support::Service;

fn blob(tag: &str) -> Value {
    json!({"tag": tag, "filler": "x".repeat(100_000)})
}

/// The whole sequence at one level of free space (pages above the file's size).
async fn full_disk_sequence(free_pages: u64) {
    let service = Service::start(&format!("full-{free_pages}")).await;
    let (status, provider) = service
        .call(
            "POST",
            "/v1/admin/providers",
            &service.operator,
            Some(json!({"provider": "p", "refresh_url": "http://127.0.0.2:9/refresh", "system_app": false, "api_version": 11})),
        )
        .await;
    assert_eq!(status, 201, "{provider}");
    let provider_key = provider["provider_key"].as_str().unwrap().to_string();
    let config = json!({"forms": [{"name": "w", "updateEnabled": true, "updateDuration": 1}]});
    let (status, _) = service
        .call(
            "PUT",
            "/v1/providers/p/form-config",
            &provider_key,
            Some(config),
        )
        .await;
    assert_eq!(status, 200);
    let (status, device_key) = service.create_device("d0").await;
    assert_eq!(status, 201);
    let device_key = device_key.unwrap();
    let (status, form) = service
        .call(
            "POST",
            "/v1/forms",
            &device_key,
            Some(json!({"provider": "p", "form_name": "w"})),
        )
        .await;
    assert_eq!(status, 201, "{form}");
    let form_id = form["form_id"].as_str().unwrap().to_string();
    let data_path = format!("/v1/forms/{form_id}/data");
    let (status, _) = service
        .call("PUT", &data_path, &provider_key, Some(blob("before")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(service.health().await, 200);

    // The disk fills up.
    let pages = service.store.page_count().await.unwrap();
    service
        .store
        .limit_pages(Some(pages + free_pages))
        .await
        .unwrap();
    for tag in ["full-1", "full-2"] {
        let (status, body) = service
            .call("PUT", &data_path, &provider_key, Some(blob(tag)))
            .await;
        assert_eq!(status, 503, "a 100 KB write cannot fit: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
    assert_eq!(service.health().await, 503, "commits fail: unhealthy");
    let mut acknowledged_devices = vec![("d0".to_string(), device_key.clone())];
    let mut refused_devices = Vec::new();
    match service.create_device("d1").await {
        (201, Some(key)) => {
            assert!(
                service.key_works(&key).await,
                "a 201 is visible to readers at once"
            );
            acknowledged_devices.push(("d1".into(), key));
        }
        (503, None) => refused_devices.push("d1"),
        other => panic!("unexpected answer to a device creation: {other:?}"),
    }
    let (status, data) = service.call("GET", &data_path, &device_key, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        data["data"]["tag"], "before",
        "refused writes left nothing behind"
    );

    // Space returns: the service recovers without a restart.
    service.store.limit_pages(None).await.unwrap();
    assert_eq!(service.health().await, 200, "healthy again once writes fit");
    for device_id in refused_devices {
        let (status, key) = service.create_device(device_id).await;
        assert_eq!(
            status, 201,
            "a refused creation left no half-made device behind"
        );
        acknowledged_devices.push((device_id.to_string(), key.unwrap()));
    }
    let (status, key) = service.create_device("d2").await;
    assert_eq!(status, 201);
    acknowledged_devices.push(("d2".into(), key.unwrap()));
    let (status, _) = service
        .call("PUT", &data_path, &provider_key, Some(blob("after")))
        .await;
    assert_eq!(status, 200);
    let acknowledged_data = "after";
    for (_, key) in &acknowledged_devices {
        assert!(service.key_works(key).await);
    }

    // Every acknowledged write is on disk: a fresh connection to the file sees it.
    let reopened = SqliteStore::open(&service.db).await.unwrap();
    for (device_id, key) in &acknowledged_devices {
        assert!(
            reopened.get_device(device_id).await.unwrap().is_some(),
            "device {device_id} was acknowledged"
        );
        assert!(reopened.find_key(&hash_key(key)).await.unwrap().is_some());
    }
    let stored = reopened.get_form_data(&form_id).await.unwrap().unwrap();
    let stored: Value = serde_json::from_str(&stored.data).unwrap();
    assert_eq!(stored["tag"], acknowledged_data);
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_with_no_page_free() {
    full_disk_sequence(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_with_a_few_pages_free() {
    full_disk_sequence(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_with_sixteen_pages_free() {
    full_disk_sequence(16).await;
}
