//! The engine's driver steps, called directly on a manual clock with the network played
//! in-process at the `Transport` boundary: no loop, no sleep, no real socket.

use refreshd_engine::secrets::{SecretKey, TokenSealer};
use refreshd_engine::transport::TransportFuture;
use refreshd_engine::{Engine, EngineSettings, ManualClock, Transport};
use refreshd_fetch::{
    DestinationPolicy, FetchFailure, FetchLimits, FetchResult, Fetcher, Inbound, Outbound,
};
use refreshd_rules::periodic::{App, FetchOutcome, PeriodicSetting, Source, SubjectType};
use refreshd_rules::time::HOUR_MS;
use refreshd_rules::Instant;
use refreshd_store::{SqliteStore, Store};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Answers every fetch with 200 and `{}` (or with its `status`), and keeps the URLs.
struct Origin {
    status: Mutex<u16>,
    fetched: Mutex<Vec<String>>,
}

impl Transport for Origin {
    fn fetch_periodic<'a>(
        &'a self,
        url: &'a str,
        _if_none_match: Option<&'a str>,
        _signature: Option<&'a str>,
        _now: SystemTime,
    ) -> TransportFuture<'a, FetchResult> {
        self.fetched.lock().unwrap().push(url.to_string());
        let status = *self.status.lock().unwrap();
        let outcome = refreshd_rules::periodic::classify_response(status, 2, true);
        Box::pin(std::future::ready(FetchResult {
            outcome,
            http_status: Some(status),
            body: Some("{}".into()),
            etag: None,
            retry_after: None,
            bytes: 2,
        }))
    }

    fn deliver<'a>(
        &'a self,
        _request: Outbound<'a>,
    ) -> TransportFuture<'a, Result<Inbound, FetchFailure>> {
        Box::pin(std::future::ready(Err(FetchFailure::Connect)))
    }
}

const T0: Instant = Instant::from_millis(1_772_352_000_000);

/// An engine on a fresh SQLite store and a manual clock at `T0`, its network played by
/// an `Origin`, with app `wx1` fetching periodically from a fixed URL.
async fn engine_with_app(
    name: &str,
) -> (
    Arc<Engine>,
    Arc<ManualClock>,
    Arc<Origin>,
    std::path::PathBuf,
) {
    let dir = std::env::temp_dir().join(format!("refreshd-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let origin = Arc::new(Origin {
        status: Mutex::new(200),
        fetched: Mutex::new(Vec::new()),
    });
    let fetcher =
        Arc::new(Fetcher::new(DestinationPolicy::new(Vec::new()), FetchLimits::default()).unwrap());
    let engine = Engine::with_transport(
        store.clone(),
        clock.clone(),
        fetcher,
        origin.clone(),
        TokenSealer::new(&SecretKey([3; 32])),
        EngineSettings::default(),
    );
    let app = App::new(
        "wx1",
        SubjectType::Organization,
        Some(PeriodicSetting {
            enabled: true,
            source: Source::Url("https://data.example.com/feed".into()),
            gray: None,
        }),
    )
    .unwrap();
    store
        .insert_app("wx1", &serde_json::to_string(&app).unwrap(), None, None)
        .await
        .unwrap();
    (engine, clock, origin, dir)
}

#[tokio::test]
async fn p8_p9_the_wake_step_orders_due_fetches_and_execute_fetch_records_them() {
    let (engine, clock, origin, dir) = engine_with_app("drivers").await;

    // Nothing is due before the pair is eligible (P7).
    assert!(engine.wake_due_once().await.fetches.is_empty());
    engine.launch("wx1", "u1").await.unwrap();
    engine.set_token("wx1", "u1", "t-1").await.unwrap();
    assert_eq!(
        engine.next_wakeup().await.unwrap(),
        Some(T0),
        "P8: due once eligible"
    );

    let step = engine.wake_due_once().await;
    assert_eq!(step.fetches.len(), 1);
    assert!(
        origin.fetched.lock().unwrap().is_empty(),
        "ordered, not yet sent"
    );
    let fetch = step.fetches.into_iter().next().unwrap();
    let report = engine.execute_fetch(fetch).await.unwrap();
    assert_eq!(report.outcome, FetchOutcome::Ok);
    assert!(!report.gray);
    assert_eq!(report.time_stamp, Some(T0.as_millis()));
    assert_eq!(
        origin.fetched.lock().unwrap().as_slice(),
        [format!(
            "https://data.example.com/feed?appid=wx1&token=t-1&timestamp={}",
            T0.as_millis()
        )]
    );
    let next = T0.plus_millis(12 * HOUR_MS);
    assert_eq!(
        engine.next_wakeup().await.unwrap(),
        Some(next),
        "P8: 12 h after a success"
    );

    // P9: a failure at the next wake-up retries 5 minutes later.
    clock.set(next);
    *origin.status.lock().unwrap() = 503;
    let step = engine.wake_due_once().await;
    for fetch in step.fetches {
        let report = engine.execute_fetch(fetch).await.unwrap();
        assert_eq!(report.outcome, FetchOutcome::HttpStatus);
    }
    assert_eq!(
        engine.next_wakeup().await.unwrap(),
        Some(next.plus_millis(5 * 60_000))
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// An imported user base is planned by the rules as the inputs it stands for would have
/// planned it: launched users with a token and no success are due at once (P8), those
/// with a recent success 12 h after it, those without a token or inactive not at all
/// (P7); tokens are sealed and sent as set.
#[tokio::test]
async fn p5_p8_imported_users_are_planned_as_their_launch_token_and_success_say() {
    use refreshd_engine::import::ImportedUser;
    let (engine, _clock, origin, dir) = engine_with_app("import").await;
    let user =
        |id: &str, token: Option<&str>, launch_hours_ago: i64, success: Option<i64>| ImportedUser {
            user_id: id.into(),
            token: token.map(str::to_string),
            last_launch: Instant::from_millis(T0.as_millis() - launch_hours_ago * HOUR_MS),
            last_success: success.map(|h| Instant::from_millis(T0.as_millis() - h * HOUR_MS)),
        };
    let users = [
        user("due-now", Some("tok-a"), 1, None),
        user("after-success", Some("tok-b"), 1, Some(2)),
        user("no-token", None, 1, None),
        user("inactive", Some("tok-c"), 8 * 24, None),
    ];
    assert_eq!(engine.import_users("wx1", &users).await.unwrap(), 4);
    assert_eq!(
        engine.import_users("wx1", &users[..1]).await.unwrap(),
        0,
        "a user with a pair already is left as it is"
    );
    assert!(
        engine
            .import_users("wx1", &[user("bad", Some(""), 1, None)])
            .await
            .is_err(),
        "an empty token is refused (P5)"
    );
    assert!(engine.import_users("nope", &users).await.is_err());
    assert_eq!(engine.next_wakeup().await.unwrap(), Some(T0));

    let step = engine.wake_due_once().await;
    let due: Vec<&str> = step.fetches.iter().map(|f| f.user_id.as_str()).collect();
    assert_eq!(due, ["due-now"]);
    for fetch in step.fetches {
        engine.execute_fetch(fetch).await.unwrap();
    }
    assert!(origin.fetched.lock().unwrap()[0].contains("token=tok-a"));
    // The one with a success two hours ago is next, ten hours from now.
    assert_eq!(
        engine.next_wakeup().await.unwrap(),
        Some(T0.plus_millis(10 * HOUR_MS))
    );
    let _ = std::fs::remove_dir_all(dir);
}
