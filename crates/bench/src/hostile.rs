//! `refreshd-bench hostile`: figures for the fetcher against hostile servers on loopback.
//! Prints figures; asserts nothing (SECURITY.md records them).
//!
//! * abort time minus deadline: a server that trickles one byte every 500 ms;
//! * resident memory growth per fetch: many fetches of a full 256 KiB body;
//! * other origins' latency: a healthy origin while another origin holds every
//!   connection open without answering.

use anyhow::Result;
use refreshd_fetch::{fetch_periodic, DestinationPolicy, FetchLimits, Fetcher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Resident set size of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn serve(
    respond: fn(tokio::net::TcpStream) -> tokio::task::JoinHandle<()>,
) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = [0u8; 2048];
            let _ = stream.read(&mut head).await;
            respond(stream);
        }
    });
    Ok(format!("http://{address}/feed?token=t"))
}

fn trickle(mut stream: tokio::net::TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            .await;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if stream.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
}

fn silent(stream: tokio::net::TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _held = stream;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    })
}

fn full_body(mut stream: tokio::net::TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let body = vec![b'a'; 262_144];
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
    })
}

fn small_body(mut stream: tokio::net::TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
    })
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(fetches: usize) -> Result<()> {
    let policy = || {
        DestinationPolicy::new(
            DestinationPolicy::parse_trusted(&["127.0.0.1/32"]).expect("constant"),
        )
    };
    let deadline = Duration::from_secs(2);
    let fetcher = Arc::new(Fetcher::new(
        policy(),
        FetchLimits {
            deadline,
            connect_timeout: deadline,
            ..FetchLimits::default()
        },
    )?);
    println!("refreshd-bench hostile: the fetcher against hostile servers on loopback");

    // Abort time minus the deadline, against a trickling body.
    let trickler = serve(trickle).await?;
    let mut overshoot = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let result = fetch_periodic(&fetcher, &trickler, None, SystemTime::now()).await;
        assert_eq!(result.outcome.as_str(), "timeout");
        overshoot.push((started.elapsed().as_secs_f64() - deadline.as_secs_f64()) * 1000.0);
    }
    println!(
        "  trickle (1 byte / 500 ms), deadline 2 s, 10 fetches: abort time minus deadline p50 {:.1} ms, max {:.1} ms",
        percentile(&mut overshoot, 0.5),
        percentile(&mut overshoot, 1.0)
    );

    // Resident memory growth per fetch of a full-size body.
    let big = serve(full_body).await?;
    for _ in 0..50 {
        fetch_periodic(&fetcher, &big, None, SystemTime::now()).await;
    }
    let before = rss_kib().unwrap_or(0);
    for _ in 0..fetches {
        let result = fetch_periodic(&fetcher, &big, None, SystemTime::now()).await;
        assert_eq!(result.outcome.as_str(), "ok");
    }
    let after = rss_kib().unwrap_or(0);
    println!(
        "  {fetches} fetches of 262,144-byte bodies: resident memory {before} KiB -> {after} KiB, growth per fetch {:.2} KiB",
        (after as f64 - before as f64) / fetches as f64
    );

    // A healthy origin's latency, alone and while another origin holds its 8 slots.
    let healthy = serve(small_body).await?;
    let hung = serve(silent).await?;
    let measure = |fetcher: Arc<Fetcher>, url: String| async move {
        let mut latencies = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            fetch_periodic(&fetcher, &url, None, SystemTime::now()).await;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        latencies
    };
    let mut alone = measure(fetcher.clone(), healthy.clone()).await;
    let mut hogs = Vec::new();
    for _ in 0..32 {
        let (fetcher, hung) = (fetcher.clone(), hung.clone());
        hogs.push(tokio::spawn(async move {
            fetch_periodic(&fetcher, &hung, None, SystemTime::now()).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut beside = measure(fetcher.clone(), healthy.clone()).await;
    for hog in hogs {
        let _ = hog.await;
    }
    println!(
        "  healthy origin p50/p99: alone {:.2}/{:.2} ms; while 32 fetches hang on another origin (per-origin limit 8) {:.2}/{:.2} ms",
        percentile(&mut alone, 0.5),
        percentile(&mut alone, 0.99),
        percentile(&mut beside, 0.5),
        percentile(&mut beside, 0.99)
    );
    Ok(())
}
