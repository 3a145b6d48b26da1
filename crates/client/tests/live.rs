//! The client against the real refreshd binary, with a developer's data server and a
//! provider's refresh endpoint running in the test.

mod support;

use refreshd_client::{
    verify_fetch_signature, verify_signature, ClientError, CreatedApp, CreatedProvider, Delivery,
    DeveloperClient, DeviceClient, HostEvent, HostState, KeyOwner, NewProvider,
    PeriodicFetchSetting, ProviderClient, ReconnectPolicy, SignatureError, Source, Subject,
    DELIVERY_ID_HEADER,
};
use serde_json::json;
use std::time::{Duration, SystemTime};
use support::{eventually, next_item, Refreshd, TestServer};

const APPID: &str = "wxclient1";
const PROVIDER: &str = "com.example.weather";
const USER: &str = "user-1";
const TOKEN: &str = "tok-abc";

/// A server with an app (periodic fetch from `data`, which answers `{"n":N}` to its
/// N-th request), a provider (delivering to `refresh`, which answers `{"temp":N}`) with
/// one form definition, and a device whose user set a token and launched the app; the
/// fetch that the launch makes due is done (`{"n":1}` is cached).
struct World {
    server: Refreshd,
    _dir: tempfile::TempDir,
    app: CreatedApp,
    provider_created: CreatedProvider,
    developer: DeveloperClient,
    provider: ProviderClient,
    device: DeviceClient,
    device_key: String,
    data: TestServer,
    refresh: TestServer,
    /// The fetch the launch made due, as the developer's server received it.
    first_fetch: support::Received,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let server = Refreshd::start(dir.path(), 0).await;
        let data = TestServer::developer(|n| format!("{{\"n\":{n}}}")).await;
        let refresh = TestServer::provider(|n, _| json!({"temp": n})).await;
        let operator = server.operator();

        let app = operator
            .create_app(APPID, Subject::Organization)
            .await
            .unwrap();
        assert_eq!(app.appid, APPID);
        assert_eq!(
            app.signing_secret.len(),
            64,
            "a 64-hex-character signing secret"
        );
        let developer = DeveloperClient::new(&server.base, &app.developer_key).unwrap();
        let setting = developer
            .put_periodic_fetch(
                APPID,
                &PeriodicFetchSetting {
                    enabled: true,
                    source: Source::Url(data.url.clone()),
                    gray: None,
                },
            )
            .await
            .unwrap();
        assert!(setting.enabled);
        assert_eq!(setting.source, Some(Source::Url(data.url.clone())));
        assert_eq!(setting.gray, None);

        let provider_created = operator
            .create_provider(&NewProvider {
                provider: PROVIDER.into(),
                refresh_url: refresh.url.clone(),
                system_app: false,
                api_version: 1,
            })
            .await
            .unwrap();
        let provider = ProviderClient::new(&server.base, &provider_created.provider_key).unwrap();
        let applied = provider
            .put_form_config(PROVIDER, &json!({"forms": [{"name": "weather"}]}), false)
            .await
            .unwrap();
        assert!(!applied.dry_run);

        let created = operator
            .create_device("device-1", USER, "Asia/Shanghai")
            .await
            .unwrap();
        let device = DeviceClient::new(&server.base, &created.device_key).unwrap();
        let nothing_yet = device.cached_data(APPID).await.unwrap_err();
        assert_eq!(nothing_yet.status(), Some(404));
        assert_eq!(nothing_yet.code(), Some("no_cached_data"));
        device.set_token(APPID, TOKEN).await.unwrap();
        device.launch(APPID).await.unwrap();
        let mut data = data;
        let first_fetch = data.next("the fetch made due by the launch").await;
        let cached = eventually("the first fetch's data", || {
            let device = device.clone();
            async move { device.cached_data(APPID).await.ok() }
        })
        .await;
        assert_eq!(cached.fetched_data, r#"{"n":1}"#);
        World {
            server,
            _dir: dir,
            app,
            provider_created,
            developer,
            provider,
            device,
            device_key: created.device_key,
            data,
            refresh,
            first_fetch,
        }
    }

    /// Adds a form and answers its `add` delivery; returns the form id and the
    /// delivery as refreshd sent it.
    async fn add_form(&mut self) -> (String, support::Received) {
        let added = self
            .device
            .add_form(PROVIDER, "weather", false)
            .await
            .unwrap();
        let delivery = self.refresh.next("the add delivery").await;
        (added.form_id, delivery)
    }
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        ..ReconnectPolicy::default()
    }
}

#[tokio::test]
async fn periodic_fetch_is_signed_and_cached() {
    let mut world = World::new().await;
    let first = &world.first_fetch;
    assert_eq!(
        verify_fetch_signature(
            &world.app.signing_secret,
            &first.signature(),
            &first.target,
            SystemTime::now()
        ),
        Ok(())
    );

    let report = world.developer.fetch_now(APPID, USER).await.unwrap();
    assert_eq!(report.outcome, "ok");
    assert_eq!(report.http_status, Some(200));
    let time_stamp = report
        .time_stamp
        .expect("a fetch that stored data has a time_stamp");

    // The developer's server checks the signature over the request target it got.
    let fetch = world.data.next("the periodic fetch").await;
    assert!(fetch.target.starts_with("/data?"), "{}", fetch.target);
    assert!(
        fetch.target.contains(&format!("token={TOKEN}")),
        "{}",
        fetch.target
    );
    let header = fetch.signature();
    let secret = &world.app.signing_secret;
    let now = SystemTime::now();
    assert_eq!(
        verify_fetch_signature(secret, &header, &fetch.target, now),
        Ok(())
    );
    assert_eq!(
        verify_fetch_signature(&"0".repeat(64), &header, &fetch.target, now),
        Err(SignatureError::Mismatch)
    );
    let other_token = fetch.target.replace(TOKEN, "tok-forged");
    assert_eq!(
        verify_fetch_signature(secret, &header, &other_token, now),
        Err(SignatureError::Mismatch)
    );
    let later = now + Duration::from_secs(10 * 60);
    assert!(matches!(
        verify_fetch_signature(secret, &header, &fetch.target, later),
        Err(SignatureError::OutsideWindow { .. })
    ));

    let cached = world.device.cached_data(APPID).await.unwrap();
    assert_eq!(cached.fetched_data, r#"{"n":2}"#);
    assert_eq!(cached.time_stamp, time_stamp);

    let log = world.developer.fetch_log(APPID, USER).await.unwrap();
    let newest = log.attempts.first().expect("the fetch is logged");
    assert_eq!(
        (newest.outcome.as_str(), newest.http_status),
        ("ok", Some(200))
    );
    assert_eq!(newest.bytes, 7);
    let why = world.developer.explain_fetch(APPID, USER).await.unwrap();
    assert!(why.enabled && why.token_set);
    assert_eq!(why.last_outcome.map(|o| o.outcome).as_deref(), Some("ok"));
}

#[tokio::test]
async fn signing_secret_rotation_signs_with_both_secrets() {
    let mut world = World::new().await;
    let rotated = world
        .server
        .operator()
        .rotate_app_signing_secret(APPID, Some(60))
        .await
        .unwrap();
    assert_ne!(rotated.signing_secret, world.app.signing_secret);
    assert!(rotated.previous_valid_until.is_some());
    world.developer.fetch_now(APPID, USER).await.unwrap();
    let fetch = world.data.next("a fetch after rotation").await;
    let header = fetch.signature();
    assert_eq!(header.matches("v1=").count(), 2, "{header}");
    let now = SystemTime::now();
    for secret in [&rotated.signing_secret, &world.app.signing_secret] {
        assert_eq!(
            verify_fetch_signature(secret, &header, &fetch.target, now),
            Ok(())
        );
    }
}

#[tokio::test]
async fn events_carry_fetched_and_form_data() {
    let mut world = World::new().await;
    let mut events = world.device.events_with(None, fast_reconnect());
    // Without Last-Event-ID the stream starts with the latest event of each app.
    match next_item(&mut events, "the replayed fetched_data")
        .await
        .unwrap()
    {
        HostEvent::FetchedData { id, event } => {
            assert!(!id.is_empty());
            assert_eq!(event.appid, APPID);
            assert_eq!(event.fetched_data, r#"{"n":1}"#);
        }
        other => panic!("expected fetched_data, got {other:?}"),
    }

    let report = world.developer.fetch_now(APPID, USER).await.unwrap();
    match next_item(&mut events, "fetched_data").await.unwrap() {
        HostEvent::FetchedData { event, .. } => {
            assert_eq!(event.fetched_data, r#"{"n":2}"#);
            assert_eq!(Some(event.time_stamp), report.time_stamp);
        }
        other => panic!("expected fetched_data, got {other:?}"),
    }

    // The provider verifies the delivery; its answer reaches the host as form_data.
    let (form_id, delivery) = world.add_form().await;
    let header = delivery.signature();
    let secret = &world.provider_created.signing_secret;
    let now = SystemTime::now();
    assert_eq!(
        verify_signature(secret, &header, &delivery.body, now),
        Ok(())
    );
    let mut tampered = delivery.body.to_vec();
    tampered.push(b' ');
    assert_eq!(
        verify_signature(secret, &header, &tampered, now),
        Err(SignatureError::Mismatch)
    );
    assert!(!delivery.header(DELIVERY_ID_HEADER).is_empty());
    let body: Delivery = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(
        (body.form_id.as_str(), body.trigger.as_str()),
        (form_id.as_str(), "add")
    );
    assert_eq!(body.form_name, "weather");

    let first_form_event = match next_item(&mut events, "form_data").await.unwrap() {
        HostEvent::FormData { id, event } => {
            assert_eq!(event.form_id, form_id);
            assert_eq!(event.data, json!({"temp": 1}));
            assert_eq!(event.trigger, "add");
            id
        }
        other => panic!("expected form_data, got {other:?}"),
    };
    assert_eq!(
        events.last_event_id().as_deref(),
        Some(first_form_event.as_str())
    );
    let data = world.device.form_data(&form_id).await.unwrap();
    assert_eq!(data.data, json!({"temp": 1}));

    world
        .provider
        .put_form_data(&form_id, &json!({"temp": 99}))
        .await
        .unwrap();
    match next_item(&mut events, "the provider's own update")
        .await
        .unwrap()
    {
        HostEvent::FormData { event, .. } => assert_eq!(event.data, json!({"temp": 99})),
        other => panic!("expected form_data, got {other:?}"),
    }
    world.device.remove_form(&form_id).await.unwrap();
    match next_item(&mut events, "form_removed").await.unwrap() {
        HostEvent::FormRemoved { event, .. } => assert_eq!(event.form_id, form_id),
        other => panic!("expected form_removed, got {other:?}"),
    }
}

#[tokio::test]
async fn events_resume_with_last_event_id_after_a_restart() {
    let mut world = World::new().await;
    let mut events = world.device.events_with(None, fast_reconnect());
    let replayed = next_item(&mut events, "the replayed fetched_data")
        .await
        .unwrap();
    assert!(
        matches!(&replayed, HostEvent::FetchedData { .. }),
        "{replayed:?}"
    );
    world.developer.fetch_now(APPID, USER).await.unwrap();
    let fetched = next_item(&mut events, "the second fetched_data")
        .await
        .unwrap();
    assert!(
        matches!(&fetched, HostEvent::FetchedData { event, .. } if event.fetched_data == r#"{"n":2}"#)
    );
    // The last event before the restart is a form's: it stays kept (only the latest
    // fetched_data of an app is kept, so a fetched_data id would be superseded by the
    // fetch below and count as unknown, which replays everything).
    let (form_id, _) = world.add_form().await;
    let form_event = next_item(&mut events, "form_data").await.unwrap();
    assert!(matches!(&form_event, HostEvent::FormData { event, .. } if event.form_id == form_id));
    let before: i64 = form_event.id().parse().expect("numeric event ids");
    assert_eq!(events.last_event_id(), Some(before.to_string()));

    // Same data directory, same port: the stream reconnects by itself.
    let World {
        server,
        _dir,
        app,
        device,
        ..
    } = world;
    let server = server.restart().await;
    let developer = DeveloperClient::new(&server.base, &app.developer_key).unwrap();
    developer.fetch_now(APPID, USER).await.unwrap();

    // With Last-Event-ID the server sends only what came after it: the new fetch. A
    // reconnect without it (or with an id the server no longer has) would first replay
    // the form's latest form_data.
    let next = next_item(&mut events, "fetched_data after the restart")
        .await
        .unwrap();
    match &next {
        HostEvent::FetchedData { id, event } => {
            assert_eq!(event.fetched_data, r#"{"n":3}"#);
            assert!(id.parse::<i64>().unwrap() > before, "{id} after {before}");
        }
        other => panic!("expected only the new fetched_data after reconnecting, got {other:?}"),
    }
    assert_eq!(events.last_event_id().as_deref(), Some(next.id()));
    drop(device);
    server.stop().await;
}

#[tokio::test]
async fn sync_full_then_changes_then_a_bad_cursor() {
    let mut world = World::new().await;
    let (first, _) = world.add_form().await;
    let device = world.device.clone();
    eventually("the first form's data", || {
        let (device, first) = (device.clone(), first.clone());
        async move { device.form_data(&first).await.ok() }
    })
    .await;

    let full = world.device.sync(None).await.unwrap();
    assert!(full.reset);
    assert_eq!(full.apps.len(), 1);
    assert_eq!(
        (
            full.apps[0].appid.as_str(),
            full.apps[0].fetched_data.as_str()
        ),
        (APPID, r#"{"n":1}"#)
    );
    assert_eq!(full.forms.len(), 1);
    assert_eq!(full.forms[0].form_id, first);
    assert_eq!(full.forms[0].provider, PROVIDER);
    assert_eq!(full.forms[0].form_name, "weather");
    assert_eq!(full.forms[0].data, json!({"temp": 1}));
    assert!(full.removed_forms.is_empty());
    let mut host = HostState::default();
    host.apply_sync(full.clone());

    // Nothing changed: an empty delta.
    let same = world.device.sync(Some(&full.cursor)).await.unwrap();
    assert!(!same.reset);
    assert!(
        same.apps.is_empty() && same.forms.is_empty() && same.removed_forms.is_empty(),
        "{same:?}"
    );

    // A provider update, a new form and a removal.
    world
        .provider
        .put_form_data(&first, &json!({"temp": 42}))
        .await
        .unwrap();
    let delta = world.device.sync(Some(&same.cursor)).await.unwrap();
    assert!(!delta.reset);
    assert!(delta.apps.is_empty(), "{delta:?}");
    assert_eq!(delta.forms.len(), 1, "{delta:?}");
    assert_eq!(delta.forms[0].data, json!({"temp": 42}));
    host.apply_sync(delta.clone());

    let (second, _) = world.add_form().await;
    world.device.remove_form(&first).await.unwrap();
    world.developer.fetch_now(APPID, USER).await.unwrap();
    let delta2 = world.device.sync(Some(&delta.cursor)).await.unwrap();
    assert!(!delta2.reset);
    assert_eq!(delta2.removed_forms, vec![first.clone()]);
    assert!(
        delta2.forms.iter().any(|f| f.form_id == second),
        "{delta2:?}"
    );
    assert!(
        delta2.forms.iter().all(|f| f.form_id != first),
        "{delta2:?}"
    );
    assert_eq!(delta2.apps.len(), 1);
    assert_eq!(delta2.apps[0].fetched_data, r#"{"n":2}"#);
    host.apply_sync(delta2);
    assert_eq!(
        host.forms.keys().cloned().collect::<Vec<_>>(),
        vec![second.clone()]
    );
    assert_eq!(host.apps[APPID].fetched_data, r#"{"n":2}"#);

    // A cursor the server never issued.
    let bad = world.device.sync(Some("not a cursor!")).await.unwrap_err();
    match &bad {
        ClientError::Api { status, code, .. } => {
            assert_eq!((*status, code.as_str()), (400, "invalid_cursor"))
        }
        other => panic!("expected the API's invalid_cursor, got {other:?}"),
    }
    // HostState recovers from it with a full sync.
    host.cursor = Some("not a cursor!".into());
    assert!(host.sync_from(&world.device).await.unwrap());
    assert_eq!(host.forms.keys().cloned().collect::<Vec<_>>(), vec![second]);
}

#[tokio::test]
async fn errors_are_typed_and_keep_keys_out() {
    let world = World::new().await;
    let base = &world.server.base;

    let unknown_key = "rfdd_this_key_does_not_exist_0123456789abcdef";
    let stranger = DeviceClient::new(base, unknown_key).unwrap();
    let error = stranger.cached_data(APPID).await.unwrap_err();
    match &error {
        ClientError::Api {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((*status, code.as_str()), (401, "unauthorized"));
            assert!(!message.is_empty());
        }
        other => panic!("expected a 401 API error, got {other:?}"),
    }
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(unknown_key), "{shown}");
    }

    // A key of the wrong kind is refused the same way.
    let wrong_kind = DeveloperClient::new(base, &world.device_key).unwrap();
    let error = wrong_kind.fetch_log(APPID, USER).await.unwrap_err();
    assert_eq!(
        (error.status(), error.code()),
        (Some(401), Some("unauthorized"))
    );
    assert!(!format!("{error} {error:?}").contains(&world.device_key));

    let error = world.device.form_data("no-such-form").await.unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert!(
        matches!(error.code(), Some("not_found" | "form_not_found")),
        "{error:?}"
    );
    assert!(!error.is_retryable());

    // The event stream gives up at once on a key that cannot work.
    let mut events = stranger.events_with(None, fast_reconnect());
    let first = next_item(&mut events, "the stream's 401").await;
    assert_eq!(first.unwrap_err().status(), Some(401));
    let after = tokio::time::timeout(
        support::DEADLINE,
        futures_util::StreamExt::next(&mut events),
    )
    .await
    .expect("the stream ends");
    assert!(after.is_none(), "the stream ends after a 401");

    // Nothing listens there: a transport error, retryable.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let nobody = DeviceClient::new(&closed, &world.device_key).unwrap();
    let error = nobody.launch(APPID).await.unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
    assert!(!format!("{error} {error:?}").contains(&world.device_key));
}

/// The remaining calls, each decoded from the real server's answer.
#[tokio::test]
async fn every_other_call_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Refreshd::start(dir.path(), 0).await;
    let mut refresh = TestServer::provider(|n, _| json!({"temp": n})).await;
    let operator = server.operator();
    let created = operator
        .create_provider(&NewProvider {
            provider: PROVIDER.into(),
            refresh_url: refresh.url.clone(),
            system_app: false,
            api_version: 1,
        })
        .await
        .unwrap();
    let provider = ProviderClient::new(&server.base, &created.provider_key).unwrap();

    // A refused config lists every problem; a dry run applies nothing.
    let refused = provider
        .put_form_config(
            PROVIDER,
            &json!({"forms": [{"updateDuration": -1}, {"name": 5}]}),
            false,
        )
        .await
        .unwrap_err();
    match &refused {
        ClientError::Api {
            status,
            code,
            details,
            ..
        } => {
            assert_eq!((*status, code.as_str()), (400, "invalid_config"));
            assert!(details.len() >= 2, "{details:?}");
            assert!(
                details
                    .iter()
                    .all(|d| !d.path.is_empty() && !d.message.is_empty()),
                "{details:?}"
            );
        }
        other => panic!("expected invalid_config, got {other:?}"),
    }
    let config =
        json!({"forms": [{"name": "weather", "updateEnabled": true, "updateDuration": 2}]});
    assert!(
        provider
            .put_form_config(PROVIDER, &config, true)
            .await
            .unwrap()
            .dry_run
    );
    provider
        .put_form_config(PROVIDER, &config, false)
        .await
        .unwrap();

    let market = operator
        .set_market_update_duration(PROVIDER, Some(4))
        .await
        .unwrap();
    assert_eq!(
        (market.provider.as_str(), market.update_duration),
        (PROVIDER, Some(4))
    );
    let cleared = operator
        .set_market_update_duration(PROVIDER, None)
        .await
        .unwrap();
    assert_eq!(cleared.update_duration, None);

    let device_created = operator
        .create_device("device-9", "user-9", "Europe/Berlin")
        .await
        .unwrap();
    let device = DeviceClient::new(&server.base, &device_created.device_key).unwrap();
    device.set_zone("Asia/Shanghai").await.unwrap();
    device.report_network(true, None).await.unwrap();
    let bad_zone = device.set_zone("Mars/Olympus").await.unwrap_err();
    assert_eq!(
        (bad_zone.status(), bad_zone.code()),
        (Some(400), Some("invalid_zone"))
    );

    let form_id = device
        .add_form(PROVIDER, "weather", true)
        .await
        .unwrap()
        .form_id;
    device.set_visibility(&form_id, true).await.unwrap();
    refresh.next("the add delivery").await;
    let due = provider.next_refresh(&form_id, 5).await.unwrap();
    assert!(
        due.due_at.ends_with('Z') || due.due_at.contains('+'),
        "{}",
        due.due_at
    );
    let too_soon = provider.next_refresh(&form_id, 1).await.unwrap_err();
    assert_eq!(
        (too_soon.status(), too_soon.code()),
        (Some(400), Some("invalid_next_refresh"))
    );
    let from_device = device.explain_form(&form_id).await.unwrap();
    let from_provider = provider.explain_form(&form_id).await.unwrap();
    assert_eq!(from_device.form_id, form_id);
    assert_eq!(from_device.form_name, "weather");
    assert_eq!(from_provider.form_id, form_id);
    assert!(from_device.visible);
    assert_eq!(from_device.interval_minutes, Some(60));
    assert_eq!(from_device.pending_next_refresh, Some(due.due_at.clone()));

    // A rotated key: the old one answers 401, the new one works.
    let rotated = operator
        .rotate_key(KeyOwner::Device, "device-9")
        .await
        .unwrap();
    assert_eq!(rotated.id, "device-9");
    let new_key = rotated.device_key.clone().expect("a device key");
    assert_eq!(rotated.key(), Some(new_key.as_str()));
    assert!(!format!("{rotated:?}").contains(&new_key));
    let old = device.explain_form(&form_id).await.unwrap_err();
    assert_eq!(old.status(), Some(401));
    let renewed = DeviceClient::new(&server.base, &new_key).unwrap();
    assert_eq!(
        renewed.explain_form(&form_id).await.unwrap().form_id,
        form_id
    );

    let secret = operator
        .rotate_provider_signing_secret(PROVIDER, Some(0))
        .await
        .unwrap();
    assert_ne!(secret.signing_secret, created.signing_secret);
    server.stop().await;
}
