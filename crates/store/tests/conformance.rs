//! One conformance suite for every store backend: SQLite always, PostgreSQL when
//! `REFRESHD_TEST_DATABASE_URL` is set (each run in a schema of its own). Without the
//! variable the PostgreSQL half says loudly that it was skipped.

/// Test output is captured unless a test fails; a skip must be seen anyway, so it is
/// written to the process's stderr directly.
macro_rules! say_loudly {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use refreshd_store::*;
use std::collections::HashSet;
use std::sync::Arc;

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

async fn sqlite() -> Arc<dyn Store> {
    let dir = std::env::temp_dir().join(unique("refreshd-conformance"));
    std::fs::create_dir_all(&dir).unwrap();
    Arc::new(SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap())
}

/// A fresh PostgreSQL schema, or `None` (after saying so) when no database is given.
async fn postgres(test: &str) -> Option<Arc<dyn Store>> {
    let Ok(url) = std::env::var("REFRESHD_TEST_DATABASE_URL") else {
        say_loudly!("SKIPPED PostgreSQL half of {test}: REFRESHD_TEST_DATABASE_URL is not set (.ci/run sets it)");
        return None;
    };
    let schema = unique("t");
    Some(Arc::new(
        PgStore::open_in_schema(&url, Some(&schema))
            .await
            .expect("PostgreSQL reachable at REFRESHD_TEST_DATABASE_URL"),
    ))
}

/// Runs `check` against every backend available.
macro_rules! conformance {
    ($name:ident, $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $check(sqlite().await).await;
            if let Some(store) = postgres(stringify!($name)).await {
                $check(store).await;
            }
        }
    };
}

const TIMING: AttemptTiming = AttemptTiming {
    at: 0,
    duration_ms: 5,
};

fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        device_id: id.into(),
        user_id: "u".into(),
        state: "{}".into(),
        version: 1,
    }
}

fn form(id: &str, num: i64, device: &str) -> FormRecord {
    FormRecord {
        form_id: id.into(),
        form_num: num,
        device_id: device.into(),
        provider: "p".into(),
        form_name: "w".into(),
        created_at: 1,
    }
}

async fn provider(store: &dyn Store) -> ProviderRecord {
    store
        .insert_provider(
            &NewProvider {
                provider: "p".into(),
                refresh_url: "https://p.example/r".into(),
                system_app: false,
                api_version: 11,
                signing_secret: "s".into(),
            },
            None,
        )
        .await
        .unwrap()
}

async fn keys_are_found_by_hash_and_rotation_revokes(store: Arc<dyn Store>) {
    let key = |hash: &[u8]| KeyRecord {
        key_hash: hash.to_vec(),
        kind: KeyKind::App,
        principal: "wx1".into(),
        created_at: 1,
    };
    store.insert_key(&key(b"old")).await.unwrap();
    assert_eq!(
        store.find_key(b"old").await.unwrap().unwrap().principal,
        "wx1"
    );
    assert!(matches!(
        store.insert_key(&key(b"old")).await,
        Err(StoreError::Exists)
    ));
    store.rotate_key(&key(b"new"), 2).await.unwrap();
    assert!(store.find_key(b"old").await.unwrap().is_none());
    assert_eq!(
        store.find_key(b"new").await.unwrap().unwrap().kind,
        KeyKind::App
    );
    // Rotating back to a revoked key of the same principal revives it (an operator key
    // given once by the environment, then by its file again).
    store.rotate_key(&key(b"old"), 3).await.unwrap();
    assert!(store.find_key(b"old").await.unwrap().is_some());
    assert!(store.find_key(b"new").await.unwrap().is_none());
    // Another principal's key is never taken over.
    let theirs = KeyRecord {
        principal: "wx2".into(),
        ..key(b"old")
    };
    assert!(matches!(
        store.rotate_key(&theirs, 4).await,
        Err(StoreError::Exists)
    ));
    assert_eq!(
        store.find_key(b"old").await.unwrap().unwrap().principal,
        "wx1"
    );
}
conformance!(keys, keys_are_found_by_hash_and_rotation_revokes);

async fn apps_and_providers_keep_what_was_written(store: Arc<dyn Store>) {
    store
        .insert_app("wx1", "{\"a\":1}", None, None)
        .await
        .unwrap();
    assert!(matches!(
        store.insert_app("wx1", "{}", None, None).await,
        Err(StoreError::Exists)
    ));
    assert!(matches!(
        store.put_app("nope", "{}").await,
        Err(StoreError::NotFound)
    ));
    store.put_app("wx1", "{\"a\":2}").await.unwrap();
    assert_eq!(
        store.get_app("wx1").await.unwrap().as_deref(),
        Some("{\"a\":2}")
    );
    let p = provider(store.as_ref()).await;
    let second = store
        .insert_provider(
            &NewProvider {
                provider: "q".into(),
                refresh_url: "https://q.example/".into(),
                system_app: true,
                api_version: 9,
                signing_secret: "t".into(),
            },
            None,
        )
        .await
        .unwrap();
    assert!(second.provider_num > p.provider_num);
    let mut changed = p.clone();
    changed.market_update_duration = Some(4);
    changed.form_config = Some("{\"forms\":[]}".into());
    store.update_provider(&changed).await.unwrap();
    assert_eq!(store.get_provider("p").await.unwrap().unwrap(), changed);
    assert_eq!(
        store
            .provider_by_num(second.provider_num)
            .await
            .unwrap()
            .unwrap()
            .provider,
        "q"
    );
}
conformance!(apps_and_providers, apps_and_providers_keep_what_was_written);

async fn device_commits_are_atomic_and_versioned(store: Arc<dyn Store>) {
    provider(store.as_ref()).await;
    store
        .insert_device(&device("d1"), Some(100), None, &[])
        .await
        .unwrap();
    let n1 = store.next_form_num().await.unwrap();
    let n2 = store.next_form_num().await.unwrap();
    assert!(n2 > n1, "form numbers are never reused");
    let commit = DeviceCommit {
        device_id: "d1".into(),
        expected_version: 1,
        state: "{\"v\":2}".into(),
        next_wake_at: Some(200),
        add_forms: vec![form("f1", n1, "d1")],
        deliveries: vec![NewDelivery {
            delivery_id: "dl1".into(),
            form_id: "f1".into(),
            device_id: "d1".into(),
            provider: "p".into(),
            body: "{}".into(),
            trigger: "interval".into(),
            next_attempt_at: 150,
            created_at: 100,
        }],
        events: vec![NewEvent {
            device_id: "d1".into(),
            form_id: None,
            appid: None,
            kind: "k".into(),
            payload: "{}".into(),
            at: 100,
        }],
        decisions: vec![DecisionNote {
            form_id: "f1".into(),
            at: 100,
            decision: "refresh".into(),
            rule: "F12".into(),
        }],
        ..DeviceCommit::default()
    };
    store.commit_device(commit.clone()).await.unwrap();
    // The same version again: someone else already moved it on.
    assert!(matches!(
        store.commit_device(commit.clone()).await,
        Err(StoreError::Conflict)
    ));
    let saved = store.get_device("d1").await.unwrap().unwrap();
    assert_eq!((saved.version, saved.state.as_str()), (2, "{\"v\":2}"));
    assert_eq!(store.forms_of_device("d1").await.unwrap().len(), 1);
    assert_eq!(store.form_by_num(n1).await.unwrap().unwrap().form_id, "f1");
    assert_eq!(
        store.recent_decisions("f1", 10).await.unwrap()[0].rule,
        "F12"
    );
    assert_eq!(
        store.claim_deliveries(149, 500, 10).await.unwrap().len(),
        0,
        "not due yet"
    );
    let claimed = store.claim_deliveries(150, 500, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].trigger, "interval",
        "the trigger comes back with it"
    );
    assert_eq!(
        store.claim_deliveries(150, 500, 10).await.unwrap().len(),
        0,
        "claimed until 500"
    );
    assert_eq!(
        store.claim_deliveries(501, 900, 10).await.unwrap().len(),
        1,
        "the lease ended: sent again"
    );
    assert_eq!(store.events_after("d1", 0, 10).await.unwrap().len(), 1);
    // A failed commit writes nothing: a form that references a missing provider.
    let bad = DeviceCommit {
        device_id: "d1".into(),
        expected_version: 2,
        state: "{\"v\":3}".into(),
        add_forms: vec![FormRecord {
            provider: "missing".into(),
            ..form("f2", n2, "d1")
        }],
        ..DeviceCommit::default()
    };
    assert!(store.commit_device(bad).await.is_err());
    assert_eq!(store.get_device("d1").await.unwrap().unwrap().version, 2);
    assert!(store.get_form("f2").await.unwrap().is_none());
    // Removing a form takes its data and pending deliveries with it.
    let remove = DeviceCommit {
        device_id: "d1".into(),
        expected_version: 2,
        state: "{}".into(),
        remove_forms: vec!["f1".into()],
        ..DeviceCommit::default()
    };
    store.commit_device(remove).await.unwrap();
    assert!(store.get_form("f1").await.unwrap().is_none());
    assert!(store
        .claim_deliveries(10_000, 20_000, 10)
        .await
        .unwrap()
        .is_empty());
}
conformance!(device_commits, device_commits_are_atomic_and_versioned);

async fn deliveries_finish_once_and_data_waits_for_show(store: Arc<dyn Store>) {
    provider(store.as_ref()).await;
    store
        .insert_device(&device("d1"), None, None, &[])
        .await
        .unwrap();
    let delivery = |id: &str| NewDelivery {
        delivery_id: id.into(),
        form_id: "f1".into(),
        device_id: "d1".into(),
        provider: "p".into(),
        body: "{}".into(),
        trigger: "interval".into(),
        next_attempt_at: 10,
        created_at: 10,
    };
    let commit = DeviceCommit {
        device_id: "d1".into(),
        expected_version: 1,
        state: "{}".into(),
        add_forms: vec![form("f1", 1, "d1")],
        deliveries: vec![delivery("a"), delivery("b")],
        ..DeviceCommit::default()
    };
    store.commit_device(commit.clone()).await.unwrap();
    let data = FormData {
        form_id: "f1".into(),
        data: "{\"n\":1}".into(),
        updated_at: 20,
        trigger: "interval".into(),
    };
    let event = NewEvent {
        device_id: "d1".into(),
        form_id: None,
        appid: None,
        kind: "form_data".into(),
        payload: "{}".into(),
        at: 20,
    };
    let done = DeliveryFinish::Done {
        data: Some((data.clone(), Some(event))),
        attempts: 1,
    };
    store.finish_delivery("a", &done, &TIMING).await.unwrap();
    store.finish_delivery("a", &done, &TIMING).await.unwrap(); // a repeat changes nothing
    assert_eq!(store.events_after("d1", 0, 10).await.unwrap().len(), 1);
    store
        .finish_delivery(
            "b",
            &DeliveryFinish::Retry {
                attempts: 1,
                next_attempt_at: 50,
            },
            &TIMING,
        )
        .await
        .unwrap();
    let due = store.claim_deliveries(50, 60, 10).await.unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 1));
    store
        .finish_delivery("b", &DeliveryFinish::GiveUp { attempts: 4 }, &TIMING)
        .await
        .unwrap();
    assert!(store
        .claim_deliveries(1_000, 2_000, 10)
        .await
        .unwrap()
        .is_empty());
    // Data for a hidden form: stored now, announced once when shown.
    let hidden = FormData {
        data: "{\"n\":2}".into(),
        ..data
    };
    store.put_form_data(&hidden, None).await.unwrap();
    assert_eq!(
        store.get_form_data("f1").await.unwrap().unwrap().data,
        "{\"n\":2}"
    );
    let builder = |d: &FormData| NewEvent {
        device_id: "d1".into(),
        form_id: None,
        appid: None,
        kind: "form_data".into(),
        payload: d.data.clone(),
        at: 30,
    };
    assert!(store.announce_pending_data("f1", &builder).await.unwrap());
    assert!(!store.announce_pending_data("f1", &builder).await.unwrap());
    let events = store.events_after("d1", 0, 10).await.unwrap();
    assert_eq!(events.last().unwrap().payload, "{\"n\":2}");
    assert!(events.windows(2).all(|w| w[0].event_id < w[1].event_id));
    store.prune(1_000).await.unwrap();
    assert!(store.events_after("d1", 0, 10).await.unwrap().is_empty());
}
conformance!(deliveries, deliveries_finish_once_and_data_waits_for_show);

async fn pairs_are_versioned_and_logs_keep_the_last_100(store: Arc<dyn Store>) {
    let record = PairRecord {
        appid: "wx1".into(),
        user_id: "u1".into(),
        state: "{}".into(),
        next_wake_at: Some(5),
        token_sealed: Some(vec![1, 2, 3]),
        ..PairRecord::default()
    };
    store
        .commit_pair(PairCommit {
            record: record.clone(),
            expected_version: 0,
            log: None,
            announce: None,
            lateness_ms: None,
            write_cache: false,
        })
        .await
        .unwrap();
    assert!(matches!(
        store
            .commit_pair(PairCommit {
                record: record.clone(),
                expected_version: 0,
                log: None,
                announce: None,
                lateness_ms: None,
                write_cache: false,
            })
            .await,
        Err(StoreError::Conflict)
    ));
    for i in 0..105 {
        let current = store.get_pair("wx1", "u1").await.unwrap().unwrap();
        let log = FetchLogEntry {
            at: i,
            gray: false,
            outcome: "ok".into(),
            http_status: Some(200),
            bytes: 1,
            duration_ms: 1,
        };
        store
            .commit_pair(PairCommit {
                expected_version: current.version,
                record: PairRecord {
                    cached_data: Some(format!("v{i}")),
                    cached_at: Some(i),
                    ..current
                },
                log: Some(log),
                announce: None,
                lateness_ms: Some(2_000),
                write_cache: true,
            })
            .await
            .unwrap();
    }
    let saved = store.get_pair("wx1", "u1").await.unwrap().unwrap();
    assert_eq!(
        (saved.cached_data.as_deref(), saved.token_sealed.as_deref()),
        (Some("v104"), Some(&[1u8, 2, 3][..]))
    );
    let log = store.fetch_log("wx1", "u1", 1000).await.unwrap();
    assert_eq!(log.len(), 100);
    assert_eq!((log[0].at, log[99].at), (104, 5), "newest first");
    assert_eq!(store.all_pairs_of_app("wx1").await.unwrap().len(), 1);
    // States without the body, many users at once; missing users are left out.
    let state = store.get_pair_state("wx1", "u1").await.unwrap().unwrap();
    assert_eq!(
        state,
        PairRecord {
            cached_data: None,
            ..saved.clone()
        }
    );
    let states = store
        .get_pair_states("wx1", &["nobody", "u1", "u2"])
        .await
        .unwrap();
    assert_eq!(states, vec![state]);
    assert!(store
        .get_pair_states("other", &["u1"])
        .await
        .unwrap()
        .is_empty());
    // Every logged fetch was counted in the hour's statistics, beyond the log's 100,
    // with its latency and its lateness in their buckets.
    let mut stats = store.fetch_stats("wx1", 0).await.unwrap();
    stats.sort_by(|a, b| a.what.cmp(&b.what));
    let counted: Vec<(&str, i64, i64)> = stats
        .iter()
        .map(|r| (r.what.as_str(), r.bucket, r.count))
        .collect();
    assert_eq!(
        counted,
        vec![
            (LATENESS_STAT, lateness_bucket(2_000), 105),
            ("ok", latency_bucket(1), 105)
        ]
    );
    assert!(store
        .fetch_stats("wx1", 3_600_000)
        .await
        .unwrap()
        .is_empty());
}
conformance!(pairs, pairs_are_versioned_and_logs_keep_the_last_100);

/// A bulk import inserts new pairs many rows at a time: a pair that exists is left as
/// it is, a pair listed twice is inserted as first listed, and only inserted pairs get
/// their cache rows.
async fn bulk_inserts_skip_existing_pairs_and_keep_the_first_listing(store: Arc<dyn Store>) {
    let pair = |user: &str, data: Option<&str>| PairRecord {
        appid: "imp".into(),
        user_id: user.into(),
        state: "{}".into(),
        next_wake_at: Some(7),
        cached_data: data.map(str::to_string),
        cached_at: data.map(|_| 1),
        ..PairRecord::default()
    };
    assert_eq!(
        store
            .insert_pairs(&[pair("old", Some("kept"))])
            .await
            .unwrap(),
        1
    );
    let mut batch = vec![
        pair("old", Some("ignored")),
        pair("twice", Some("first")),
        pair("twice", Some("second")),
    ];
    batch.extend((0..600).map(|i| pair(&format!("n{i:03}"), None)));
    assert_eq!(store.insert_pairs(&batch).await.unwrap(), 601);
    let data = |user: &'static str| {
        let store = store.clone();
        async move {
            let saved = store.get_pair("imp", user).await.unwrap().unwrap();
            (saved.version, saved.cached_data)
        }
    };
    assert_eq!(data("old").await, (1, Some("kept".into())));
    assert_eq!(data("twice").await, (1, Some("first".into())));
    assert_eq!(data("n599").await, (1, None));
    assert_eq!(store.all_pairs_of_app("imp").await.unwrap().len(), 602);
}
conformance!(
    bulk_inserts,
    bulk_inserts_skip_existing_pairs_and_keep_the_first_listing
);

async fn claims_are_exclusive_expire_and_are_released_by_commits(store: Arc<dyn Store>) {
    for i in 0..20 {
        store
            .insert_device(&device(&format!("d{i}")), Some(100 + i), None, &[])
            .await
            .unwrap();
    }
    store
        .insert_device(&device("later"), Some(10_000), None, &[])
        .await
        .unwrap();
    assert_eq!(store.count_planned().await.unwrap(), 21);
    assert_eq!(store.earliest_wake_at(0).await.unwrap(), Some(100));
    assert_eq!(
        store.count_due(109).await.unwrap(),
        10,
        "d0..d9 are due at 109"
    );
    let a = store.claim_due("node-a", 200, 1_000, 8).await.unwrap();
    let b = store.claim_due("node-b", 200, 1_000, 100).await.unwrap();
    assert_eq!((a.len(), b.len()), (8, 12));
    let a_ids: HashSet<_> = a.iter().map(|(k, _)| k.clone()).collect();
    assert!(
        b.iter().all(|(k, _)| !a_ids.contains(k)),
        "no subject claimed twice"
    );
    assert!(a.windows(2).all(|w| w[0].1 <= w[1].1), "earliest first");
    assert!(
        store
            .claim_due("node-c", 500, 2_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "held until the lease ends"
    );
    // Node a commits one device: its claim is released, so it can be claimed again.
    let SubjectKey::Device(first) = &a[0].0 else {
        panic!()
    };
    let current = store.get_device(first).await.unwrap().unwrap();
    store
        .commit_device(DeviceCommit {
            device_id: first.clone(),
            expected_version: current.version,
            state: "{}".into(),
            next_wake_at: Some(400),
            ..DeviceCommit::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_due("node-c", 500, 2_000, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    // After the leases end (node a died), everything due is claimable again.
    let after = store.claim_due("node-c", 1_500, 3_000, 100).await.unwrap();
    assert_eq!(after.len(), 19);
}
conformance!(
    claims,
    claims_are_exclusive_expire_and_are_released_by_commits
);

async fn concurrent_claimers_never_share_a_subject(store: Arc<dyn Store>) {
    for i in 0..200 {
        store
            .insert_device(&device(&format!("c{i}")), Some(i), None, &[])
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store
                        .claim_due(&format!("node-{n}"), 1_000, 10_000, 7)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|(k, _)| k));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200));
}
conformance!(concurrent_claims, concurrent_claimers_never_share_a_subject);

/// A store's `Debug` names its backend and nothing else: a PostgreSQL URL may carry a
/// password, and a store is the kind of value that ends up in a `{:?}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_names_the_backend_only() {
    let dir = std::env::temp_dir().join(unique("refreshd-debug"));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap();
    assert_eq!(format!("{sqlite:?}"), "SqliteStore { .. }");
    let Ok(url) = std::env::var("REFRESHD_TEST_DATABASE_URL") else {
        say_loudly!("SKIPPED PostgreSQL half of debug_output_names_the_backend_only: REFRESHD_TEST_DATABASE_URL is not set");
        return;
    };
    let pg = PgStore::open_in_schema(&url, Some(&unique("t")))
        .await
        .expect("PostgreSQL reachable at REFRESHD_TEST_DATABASE_URL");
    assert_eq!(format!("{pg:?}"), "PgStore { .. }");
    pg.close().await;
}

/// A URL that cannot be used is refused with what is wrong in it, never its text.
#[tokio::test]
async fn a_bad_postgres_url_is_refused_without_showing_it() {
    const PASSWORD: &str = "never-shown-0451";
    for url in [
        format!("postgres://refreshd:{PASSWORD}@127.0.0.1:notaport/db"),
        format!("postgres://refreshd:{PASSWORD}@127.0.0.1/db?sslmode=sometimes"),
        format!("postgres://refreshd:{PASSWORD}%ff@127.0.0.1/db"),
    ] {
        let error = PgStore::open(&url).await.unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(matches!(error, StoreError::Unavailable(_)), "{shown}");
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

fn device_of(id: &str, user_id: &str) -> DeviceRecord {
    DeviceRecord {
        user_id: user_id.into(),
        ..device(id)
    }
}

fn form_event(device_id: &str, form_id: &str, text: &str) -> NewEvent {
    NewEvent {
        device_id: device_id.into(),
        form_id: Some(form_id.into()),
        appid: None,
        kind: "form_data".into(),
        payload: format!("{{\"text\":\"{text}\"}}"),
        at: 1,
    }
}

async fn announced_data_reaches_the_users_devices_and_streams_start_at_the_latest(
    store: Arc<dyn Store>,
) {
    // An app's signing secrets: none for an app without, rotation kept whole.
    store.insert_app("old", "{}", None, None).await.unwrap();
    assert_eq!(store.app_signing("old").await.unwrap(), None);
    let signing = SigningSecrets {
        current: "sealed-a".into(),
        previous: None,
        previous_until: None,
    };
    store
        .insert_app("wx1", "{}", Some(&signing), None)
        .await
        .unwrap();
    assert_eq!(store.app_signing("wx1").await.unwrap(), Some(signing));
    let rotated = SigningSecrets {
        current: "sealed-b".into(),
        previous: Some("sealed-a".into()),
        previous_until: Some(99),
    };
    store.set_app_signing("wx1", &rotated).await.unwrap();
    assert_eq!(store.app_signing("wx1").await.unwrap(), Some(rotated));
    assert!(matches!(
        store.app_signing("nope").await,
        Err(StoreError::NotFound)
    ));

    // Two devices of u1, one of u2; d1 starts with an event given at creation.
    let first = NewEvent {
        device_id: "d1".into(),
        form_id: None,
        appid: Some("wx1".into()),
        kind: "fetched_data".into(),
        payload: "{\"fetched_data\":\"old\"}".into(),
        at: 1,
    };
    store
        .insert_device(&device_of("d1", "u1"), None, None, &[first])
        .await
        .unwrap();
    store
        .insert_device(&device_of("d2", "u1"), None, None, &[])
        .await
        .unwrap();
    store
        .insert_device(&device_of("d3", "u2"), None, None, &[])
        .await
        .unwrap();
    assert_eq!(store.last_event_id("d2").await.unwrap(), 0);

    // A pair's commit announces to u1's devices only, replacing d1's older event.
    let record = PairRecord {
        appid: "wx1".into(),
        user_id: "u1".into(),
        state: "{}".into(),
        cached_data: Some("new".into()),
        cached_at: Some(5),
        ..PairRecord::default()
    };
    let announced = store
        .commit_pair(PairCommit {
            record,
            expected_version: 0,
            log: None,
            announce: Some(PairAnnouncement {
                kind: "fetched_data".into(),
                payload: "{\"fetched_data\":\"new\"}".into(),
                at: 5,
            }),
            lateness_ms: None,
            write_cache: false,
        })
        .await
        .unwrap();
    assert_eq!(announced, vec!["d1".to_string(), "d2".to_string()]);
    for device_id in ["d1", "d2"] {
        let events = store.events_after(device_id, 0, 10).await.unwrap();
        assert_eq!(events.len(), 1, "{device_id}: {events:?}");
        assert_eq!(events[0].payload, "{\"fetched_data\":\"new\"}");
    }
    assert!(store.events_after("d3", 0, 10).await.unwrap().is_empty());
    let pairs = store.pairs_of_user("u1").await.unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].cached_data.as_deref(), Some("new"));
    assert!(store.pairs_of_user("u2").await.unwrap().is_empty());

    // Form events beside it: the latest of each form and app, oldest first.
    let mut ids = Vec::new();
    for (form_id, text) in [("f1", "a"), ("f2", "b"), ("f1", "c")] {
        let commit = DeviceCommit {
            device_id: "d1".into(),
            expected_version: store.get_device("d1").await.unwrap().unwrap().version,
            state: "{}".into(),
            events: vec![form_event("d1", form_id, text)],
            ..DeviceCommit::default()
        };
        store.commit_device(commit.clone()).await.unwrap();
        ids.push(store.last_event_id("d1").await.unwrap());
    }
    let latest: Vec<String> = store
        .latest_events("d1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(
        latest,
        vec![
            "{\"fetched_data\":\"new\"}".to_string(),
            "{\"text\":\"b\"}".to_string(),
            "{\"text\":\"c\"}".to_string()
        ]
    );
    assert!(store.event_exists("d1", ids[0]).await.unwrap());
    assert!(!store.event_exists("d2", ids[0]).await.unwrap(), "not d2's");
    assert!(!store.event_exists("d1", ids[2] + 1).await.unwrap());
    let subjects = store.event_subjects_after("d1", ids[0]).await.unwrap();
    let about: Vec<(Option<&str>, Option<&str>)> = subjects
        .iter()
        .map(|s| (s.form_id.as_deref(), s.appid.as_deref()))
        .collect();
    assert_eq!(about, vec![(Some("f2"), None), (Some("f1"), None)]);
    assert_eq!(store.last_event_id("d1").await.unwrap(), ids[2]);
}
conformance!(
    announced_data,
    announced_data_reaches_the_users_devices_and_streams_start_at_the_latest
);

async fn a_devices_form_data_says_what_waits_for_show(store: Arc<dyn Store>) {
    store
        .insert_device(&device("d1"), None, None, &[])
        .await
        .unwrap();
    store
        .insert_device(&device("d2"), None, None, &[])
        .await
        .unwrap();
    provider(store.as_ref()).await;
    let commit = DeviceCommit {
        device_id: "d1".into(),
        expected_version: 1,
        state: "{}".into(),
        add_forms: vec![form("f1", 1, "d1"), form("f2", 2, "d1")],
        ..DeviceCommit::default()
    };
    store.commit_device(commit.clone()).await.unwrap();
    let data = |form_id: &str, text: &str| FormData {
        form_id: form_id.into(),
        data: format!("{{\"text\":\"{text}\"}}"),
        updated_at: 10,
        trigger: "provider".into(),
    };
    store
        .put_form_data(&data("f1", "shown"), Some(&form_event("d1", "f1", "shown")))
        .await
        .unwrap();
    store
        .put_form_data(&data("f2", "hidden"), None)
        .await
        .unwrap();
    let stored = store.form_data_of_device("d1").await.unwrap();
    let seen: Vec<(&str, bool)> = stored
        .iter()
        .map(|d| (d.data.form_id.as_str(), d.announce_pending))
        .collect();
    assert_eq!(seen, vec![("f1", false), ("f2", true)]);
    assert!(store.form_data_of_device("d2").await.unwrap().is_empty());
}
conformance!(
    device_form_data,
    a_devices_form_data_says_what_waits_for_show
);

/// Commits that arrive together share transactions (group commit), yet each keeps its
/// own answer: every new pair is written, every lost race answers `Conflict` and writes
/// nothing, and counters add up whether or not their increments were grouped.
async fn commits_arriving_together_each_keep_their_answer(store: Arc<dyn Store>) {
    let fresh = |user: usize| PairCommit {
        record: PairRecord {
            appid: "grp".into(),
            user_id: format!("u{user:04}"),
            state: "{}".into(),
            next_wake_at: Some(1_000 + user as i64),
            ..PairRecord::default()
        },
        expected_version: 0,
        log: Some(FetchLogEntry {
            at: 3_600_000,
            gray: false,
            outcome: "ok".into(),
            http_status: Some(200),
            bytes: 1,
            duration_ms: 3,
        }),
        announce: None,
        lateness_ms: None,
        write_cache: false,
    };
    // 400 new pairs, and each inserted a second time: of each two, exactly one wins.
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..400 {
        for _ in 0..2 {
            let store = store.clone();
            let commit = fresh(user);
            tasks.spawn(async move { (user, store.commit_pair(commit).await) });
        }
    }
    let mut won = vec![0; 400];
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (user, Ok(_)) => won[user] += 1,
            (_, Err(StoreError::Conflict)) => {}
            (_, Err(other)) => panic!("unexpected answer: {other}"),
        }
    }
    assert!(won.iter().all(|n| *n == 1), "one insert of each pair wins");
    assert_eq!(store.count_planned().await.unwrap(), 400);
    assert_eq!(store.earliest_wake_at(0).await.unwrap(), Some(1_000));
    // Every winner's log entry was counted once, whatever the grouping.
    let ok: i64 = store
        .fetch_stats("grp", 0)
        .await
        .unwrap()
        .iter()
        .filter(|row| row.what == "ok")
        .map(|row| row.count)
        .sum();
    assert_eq!(ok, 400);
    // Updates against a stale version lose without touching the row.
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..400 {
        let store = store.clone();
        let mut commit = fresh(user);
        commit.expected_version = if user % 2 == 0 { 1 } else { 7 };
        commit.record.state = "{\"moved\":true}".into();
        commit.log = None;
        tasks.spawn(async move { (user, store.commit_pair(commit).await.is_ok()) });
    }
    while let Some(done) = tasks.join_next().await {
        let (user, committed) = done.unwrap();
        assert_eq!(committed, user % 2 == 0, "u{user}");
        let saved = store
            .get_pair("grp", &format!("u{user:04}"))
            .await
            .unwrap()
            .unwrap();
        let expected = if user % 2 == 0 {
            (2, "{\"moved\":true}")
        } else {
            (1, "{}")
        };
        assert_eq!((saved.version, saved.state.as_str()), expected);
    }
}
conformance!(
    group_commit,
    commits_arriving_together_each_keep_their_answer
);

/// A commit that fails for a reason other than a lost race (here a form id that is
/// taken) fails alone: the commits written in the same group still stand.
async fn a_failing_commit_does_not_fail_its_group(store: Arc<dyn Store>) {
    provider(store.as_ref()).await;
    for i in 0..50 {
        store
            .insert_device(&device(&format!("g{i}")), None, None, &[])
            .await
            .unwrap();
    }
    store
        .insert_device(&device("owner"), None, None, &[])
        .await
        .unwrap();
    store
        .commit_device(DeviceCommit {
            device_id: "owner".into(),
            expected_version: 1,
            state: "{}".into(),
            add_forms: vec![form("taken", 1, "owner")],
            ..DeviceCommit::default()
        })
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        let form_id = if i == 25 {
            "taken".to_string()
        } else {
            format!("f{i}")
        };
        let commit = DeviceCommit {
            device_id: format!("g{i}"),
            expected_version: 1,
            state: "{\"n\":1}".into(),
            next_wake_at: Some(50 + i),
            add_forms: vec![form(&form_id, 100 + i, &format!("g{i}"))],
            ..DeviceCommit::default()
        };
        tasks.spawn(async move { (i, store.commit_device(commit).await) });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, result) = done.unwrap();
        if i == 25 {
            assert!(result.is_err(), "the taken form id is refused");
        } else {
            result.unwrap();
        }
        let saved = store.get_device(&format!("g{i}")).await.unwrap().unwrap();
        assert_eq!(saved.version, if i == 25 { 1 } else { 2 }, "g{i}");
    }
    assert_eq!(store.forms_of_device("g25").await.unwrap(), Vec::new());
    assert_eq!(store.forms_of_device("g24").await.unwrap().len(), 1);
}
conformance!(
    group_commit_failures,
    a_failing_commit_does_not_fail_its_group
);
