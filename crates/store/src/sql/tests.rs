//! The grouped pair writes, driven through `write_batch` with a batch built by hand so
//! that the grouped path is taken whatever the timing (a store's own writer forms its
//! batches from whatever happens to be queued).

use super::*;
use crate::{PgStore, SqliteStore, Store};

fn log_at(at: i64) -> FetchLogEntry {
    FetchLogEntry {
        at,
        gray: false,
        outcome: "ok".into(),
        http_status: Some(200),
        bytes: 10,
        duration_ms: 4,
    }
}

fn update(user: &str, version: i64, state: &str) -> PairCommit {
    PairCommit {
        record: PairRecord {
            appid: "app".into(),
            user_id: user.into(),
            state: state.into(),
            next_wake_at: Some(500),
            ..PairRecord::default()
        },
        expected_version: version,
        log: None,
        announce: None,
        lateness_ms: None,
        write_cache: false,
    }
}

/// One batch holding grouped updates with caches, logs and an announcement, a stale
/// update, two later commits of pairs already in the group, a new pair and a device:
/// each gets the answer it would get written alone, in the batch's order.
/// Writing one batch by hand, as a store's writer task does.
trait WritesBatches: Store {
    async fn write(&self, jobs: &[&WriteJob]) -> StoreResult<Vec<JobResult>>;
}

impl WritesBatches for SqliteStore {
    async fn write(&self, jobs: &[&WriteJob]) -> StoreResult<Vec<JobResult>> {
        SqlStore::write_batch(&self.backend, jobs).await
    }
}

impl WritesBatches for PgStore {
    async fn write(&self, jobs: &[&WriteJob]) -> StoreResult<Vec<JobResult>> {
        SqlStore::write_batch(&self.backend, jobs).await
    }
}

async fn grouped_pair_updates_answer_as_if_written_one_by_one(store: &impl WritesBatches) {
    let users: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    let pairs: Vec<PairRecord> = users
        .iter()
        .map(|user| PairRecord {
            appid: "app".into(),
            user_id: user.clone(),
            state: "{}".into(),
            next_wake_at: Some(100),
            ..PairRecord::default()
        })
        .collect();
    assert_eq!(store.insert_pairs(&pairs).await.unwrap(), 8);
    for (device, user) in [("d0a", "u0"), ("d0b", "u0"), ("d7", "u7")] {
        let record = DeviceRecord {
            device_id: device.into(),
            user_id: user.into(),
            state: "{}".into(),
            version: 1,
        };
        store.insert_device(&record, None, None, &[]).await.unwrap();
    }
    // u3 has a full log already: the grouped entry pushes its oldest out.
    let mut u3 = update("u3", 1, "{}");
    for at in 1..=FETCH_LOG_KEPT {
        u3.expected_version = at;
        u3.log = Some(log_at(at));
        store.commit_pair(u3.clone()).await.unwrap();
    }
    let u3_version = FETCH_LOG_KEPT + 1;

    let mut jobs = Vec::new();
    // u0: new data, announced to its two devices.
    let mut c = update("u0", 1, "{\"n\":0}");
    c.record.cached_data = Some("body0".into());
    c.record.cached_at = Some(1_000);
    c.record.cached_sent_at = Some(990);
    c.record.etag = Some("e0".into());
    c.record.etag_url = Some("https://example.com/feed".into());
    c.write_cache = true;
    c.log = Some(log_at(3_600_000));
    c.lateness_ms = Some(20);
    c.announce = Some(PairAnnouncement {
        kind: "fetched_data".into(),
        payload: "{\"fetched_data\":\"body0\"}".into(),
        at: 1_000,
    });
    jobs.push(WriteJob::Pair(c));
    // u1: state only, then a second commit on the same (now old) version: it loses.
    jobs.push(WriteJob::Pair(update("u1", 1, "{\"n\":1}")));
    jobs.push(WriteJob::Pair(update("u1", 1, "{\"n\":\"late\"}")));
    // u2: state only, then a second commit on the version the first one made: it wins.
    jobs.push(WriteJob::Pair(update("u2", 1, "{\"n\":2}")));
    jobs.push(WriteJob::Pair(update("u2", 2, "{\"n\":\"second\"}")));
    // u3: a log entry beyond the kept hundred.
    let mut c = update("u3", u3_version, "{\"n\":3}");
    c.log = Some(log_at(3_600_000 + 1));
    jobs.push(WriteJob::Pair(c));
    // u4: stale.
    jobs.push(WriteJob::Pair(update("u4", 9, "{\"n\":\"stale\"}")));
    // u5: a cache cleared (no data, no ETag left).
    let mut c = update("u5", 1, "{\"n\":5}");
    c.write_cache = true;
    jobs.push(WriteJob::Pair(c));
    // u6: new data for a user without devices.
    let mut c = update("u6", 1, "{\"n\":6}");
    c.record.cached_data = Some("body6".into());
    c.record.cached_at = Some(2_000);
    c.write_cache = true;
    c.announce = Some(PairAnnouncement {
        kind: "fetched_data".into(),
        payload: "{\"fetched_data\":\"body6\"}".into(),
        at: 2_000,
    });
    jobs.push(WriteJob::Pair(c));
    // A new pair, and a device commit.
    jobs.push(WriteJob::Pair(update("u9", 0, "{\"n\":9}")));
    jobs.push(WriteJob::Device(DeviceCommit {
        device_id: "d7".into(),
        expected_version: 1,
        state: "{\"device\":true}".into(),
        ..DeviceCommit::default()
    }));
    jobs.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let refs: Vec<&WriteJob> = jobs.iter().collect();
    assert!(grouped_pair_updates(&refs).len() >= GROUPED_PAIRS_MIN);

    let results = store.write(&refs).await.unwrap();
    let answers: Vec<(String, Result<Vec<String>, String>)> = jobs
        .iter()
        .zip(results)
        .map(|(job, result)| {
            let (a, b) = job.sort_key();
            (format!("{a}/{b}"), result.map_err(|e| e.to_string()))
        })
        .collect();
    let conflict = Err(StoreError::Conflict.to_string());
    let told = |devices: &[&str]| Ok(devices.iter().map(|d| d.to_string()).collect());
    assert_eq!(
        answers,
        vec![
            ("/d7".into(), Ok(vec![])),
            ("app/u0".into(), told(&["d0a", "d0b"])),
            ("app/u1".into(), Ok(vec![])),
            ("app/u1".into(), conflict.clone()),
            ("app/u2".into(), Ok(vec![])),
            ("app/u2".into(), Ok(vec![])),
            ("app/u3".into(), Ok(vec![])),
            ("app/u4".into(), conflict),
            ("app/u5".into(), Ok(vec![])),
            ("app/u6".into(), Ok(vec![])),
            ("app/u9".into(), Ok(vec![])),
        ]
    );

    let pair =
        |user: &'static str| async move { store.get_pair("app", user).await.unwrap().unwrap() };
    let u0 = pair("u0").await;
    assert_eq!((u0.version, u0.state.as_str()), (2, "{\"n\":0}"));
    assert_eq!(u0.next_wake_at, Some(500));
    assert_eq!(
        (u0.cached_data.as_deref(), u0.cached_at, u0.cached_sent_at),
        (Some("body0"), Some(1_000), Some(990))
    );
    assert_eq!(
        (u0.etag.as_deref(), u0.etag_url.as_deref()),
        (Some("e0"), Some("https://example.com/feed"))
    );
    assert_eq!(pair("u1").await.state, "{\"n\":1}");
    let u2 = pair("u2").await;
    assert_eq!((u2.version, u2.state.as_str()), (3, "{\"n\":\"second\"}"));
    let u4 = pair("u4").await;
    assert_eq!(
        (u4.version, u4.state.as_str()),
        (1, "{}"),
        "a loser writes nothing"
    );
    assert_eq!(pair("u5").await.cached_at, None);
    assert_eq!(pair("u6").await.cached_data.as_deref(), Some("body6"));
    assert_eq!(pair("u9").await.version, 1);
    assert_eq!(store.get_device("d7").await.unwrap().unwrap().version, 2);

    for device in ["d0a", "d0b"] {
        let events = store.events_after(device, 0, 10).await.unwrap();
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        assert_eq!(payloads, vec!["{\"fetched_data\":\"body0\"}"], "{device}");
    }
    assert!(store.events_after("d7", 0, 10).await.unwrap().is_empty());

    let log = store.fetch_log("app", "u3", 1_000).await.unwrap();
    assert_eq!(
        log.len() as i64,
        FETCH_LOG_KEPT,
        "the log keeps its last hundred"
    );
    assert_eq!(log[0].at, 3_600_001);
    assert_eq!(log.last().unwrap().at, 2, "the oldest entry went");
    assert_eq!(store.fetch_log("app", "u0", 10).await.unwrap().len(), 1);
    assert!(store.fetch_log("app", "u1", 10).await.unwrap().is_empty());
    // The hour's counters: u0's and u3's outcomes, and u0's lateness.
    let stats = store.fetch_stats("app", 0).await.unwrap();
    let count = |what: &str, hour: i64| -> i64 {
        stats
            .iter()
            .filter(|row| row.what == what && row.hour == hour)
            .map(|row| row.count)
            .sum()
    };
    assert_eq!(count("ok", 3_600_000), 2);
    assert_eq!(count(LATENESS_STAT, 3_600_000), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_pair_updates_on_sqlite() {
    let dir = std::env::temp_dir().join(format!(
        "refreshd-grouped-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap();
    grouped_pair_updates_answer_as_if_written_one_by_one(&store).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_pair_updates_on_postgres() {
    let Ok(url) = std::env::var("REFRESHD_TEST_DATABASE_URL") else {
        eprintln!(
            "\n!!!!!!!! SKIPPED grouped_pair_updates_on_postgres: REFRESHD_TEST_DATABASE_URL is not set (.ci/run sets it) !!!!!!!!\n"
        );
        return;
    };
    let schema = format!(
        "grouped_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let store = PgStore::open_in_schema(&url, Some(&schema)).await.unwrap();
    grouped_pair_updates_answer_as_if_written_one_by_one(&store).await;
    store.close().await;
}
