//! Proxy variables in the environment are ignored. In its own test binary because it
//! sets process-wide variables that would reach every other test in the process.

use refreshd_fetch::{fetch_periodic, DestinationPolicy, FetchLimits, Fetcher};
use refreshd_rules::periodic::FetchOutcome;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn environment_proxies_are_ignored() {
    let sink = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let sink_hits = Arc::new(AtomicUsize::new(0));
    let hits = sink_hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = sink.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    });
    let origin = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let origin_port = origin.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = origin.accept().await {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\ndirect",
                )
                .await;
        }
    });
    let proxy = format!("http://127.0.0.2:{sink_port}");
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        std::env::set_var(name, &proxy);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let policy =
        DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.2/32"]).unwrap());
    let fetcher = Fetcher::new(policy, FetchLimits::default()).unwrap();
    let url = format!("http://127.0.0.2:{origin_port}/feed?token=t");
    let result = fetch_periodic(&fetcher, &url, None, SystemTime::now()).await;
    assert_eq!(result.outcome, FetchOutcome::Ok);
    assert_eq!(result.body.as_deref(), Some("direct"));
    assert_eq!(sink_hits.load(Ordering::SeqCst), 0);
}
