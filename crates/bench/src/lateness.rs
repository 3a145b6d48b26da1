//! Lateness of scheduled periodic fetches, and its reference.
//!
//! `refreshd-bench lateness`: `count` pairs planned to wake at instants spread evenly
//! over `spread` seconds (starting two seconds after setup), in an in-process engine on
//! a real store; each user's token names the user, so the loopback origin sees which
//! fetch arrived when. Lateness = arrival at the origin − planned instant: it includes
//! claiming, ordering (one commit) and the HTTP hop.
//!
//! `refreshd-bench lateness-reference`: the same schedule slept through by one bare
//! `tokio::time::sleep_until` loop. Prints figures; never a test.

use crate::db::{emit, import_users, insert_url_app, loopback_engine, quantile, BenchDb};
use crate::servers::{now_ms, spawn_origin, OriginLog};
use anyhow::{bail, Result};
use refreshd_engine::import::ImportedUser;
use refreshd_fetch::FetchLimits;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Milliseconds from the start of the schedule to the `i`-th of `count` instants.
fn offset_ms(i: u32, count: u32, spread_seconds: f64) -> i64 {
    i64::from(i) * spread_ms(spread_seconds) / i64::from(count)
}

fn spread_ms(spread_seconds: f64) -> i64 {
    (spread_seconds * 1000.0) as i64
}

fn report(bench: &str, what: &str, count: u32, spread_seconds: f64, mut late: Vec<f64>) {
    late.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        quantile(&late, 0.5),
        quantile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN),
    );
    println!("refreshd-bench {bench}: {what}");
    println!(
        "  {} of {count} instants over {spread_seconds} s: lateness p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        late.len()
    );
    emit(serde_json::json!({
        "bench": bench,
        "count": count,
        "observed": late.len(),
        "spread_seconds": spread_seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
    }));
}

pub async fn reference(count: u32, spread_seconds: f64) -> Result<()> {
    let start = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut late = Vec::with_capacity(count as usize);
    for i in 0..count {
        let due = start + Duration::from_millis(offset_ms(i, count, spread_seconds) as u64);
        tokio::time::sleep_until(due).await;
        late.push(
            tokio::time::Instant::now()
                .duration_since(due)
                .as_secs_f64()
                * 1000.0,
        );
    }
    report(
        "lateness-reference",
        "a bare tokio::time::sleep_until loop over the same schedule",
        count,
        spread_seconds,
        late,
    );
    Ok(())
}

pub async fn refreshd(count: u32, spread_seconds: f64, database_url: Option<String>) -> Result<()> {
    let log = Arc::new(OriginLog {
        arrivals: Some(Mutex::new(Vec::with_capacity(count as usize))),
        ..OriginLog::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    spawn_origin(listener, 1024, log.clone());

    let (db, store) = BenchDb::open(database_url.as_deref(), "lateness").await?;
    let (engine, clock) = loopback_engine(store.clone(), FetchLimits::default())?;
    insert_url_app(
        store.as_ref(),
        "late",
        format!("http://127.0.0.1:{port}/feed"),
    )
    .await?;
    // Each user's last success is set so that its next fetch (12 h later, no jitter)
    // falls on its instant of the schedule, which starts two seconds after the import
    // would take at its slowest pace seen here.
    let start = now_ms() + 2_000 + i64::from(count) / 20;
    let half_day = 12 * 3_600_000;
    let launched = clock.now();
    let users: Vec<ImportedUser> = (0..count)
        .map(|i| ImportedUser {
            user_id: format!("u{i}"),
            token: Some(format!("t{i}")),
            last_launch: launched,
            last_success: Some(refreshd_rules::Instant::from_millis(
                start + offset_ms(i, count, spread_seconds) - half_day,
            )),
        })
        .collect();
    import_users(&engine, &["late".to_string()], &users).await?;
    if now_ms() > start {
        bail!("importing {count} users took longer than the schedule's lead; use fewer");
    }
    let planned: std::collections::HashMap<String, i64> = (0..count)
        .map(|i| (format!("t{i}"), start + offset_ms(i, count, spread_seconds)))
        .collect();
    engine.load_due_index().await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let loop_task = tokio::spawn(engine.clone().run(stop_rx));
    let deadline = start + spread_ms(spread_seconds) + 60_000;
    loop {
        let seen = log
            .arrivals
            .as_ref()
            .map_or(0, |a| a.lock().unwrap_or_else(|e| e.into_inner()).len());
        if seen >= count as usize {
            break;
        }
        if now_ms() > deadline {
            let _ = stop_tx.send(true);
            bail!("{seen} of {count} fetches arrived by the deadline");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    let _ = loop_task.await;
    drop(engine);
    drop(store);
    let kind = db.kind();
    db.remove().await?;

    let arrivals = log
        .arrivals
        .as_ref()
        .map(|a| std::mem::take(&mut *a.lock().unwrap_or_else(|e| e.into_inner())))
        .unwrap_or_default();
    let mut first = std::collections::HashMap::with_capacity(arrivals.len());
    for (token, at) in arrivals {
        first.entry(token).or_insert(at);
    }
    let late: Vec<f64> = first
        .iter()
        .filter_map(|(token, at)| planned.get(token).map(|due| (at - due) as f64))
        .collect();
    report(
        "lateness",
        &format!("scheduled periodic fetches (engine + {kind} + fetcher), planned instant to arrival at the origin"),
        count,
        spread_seconds,
        late,
    );
    Ok(())
}
