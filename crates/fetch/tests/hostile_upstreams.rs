//! The fetcher against real servers on loopback that misbehave on purpose.
//!
//! 127.0.0.2 is trusted and stands in for a public host; a sentinel listens on
//! 127.0.0.1, which stays blocked, and counts every connection it receives. Timeouts use
//! short deadlines configured for the test; no test sleeps or asserts a duration.

/// Test output is captured unless a test fails; a skip must be seen anyway, so it is
/// written to the process's stderr directly.
macro_rules! say_loudly {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use refreshd_fetch::client::{check_url, UrlProblem};
use refreshd_fetch::{
    fetch_periodic, DestinationPolicy, FetchFailure, FetchLimits, Fetcher, NameResolver,
};
use refreshd_rules::periodic::FetchOutcome;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CANARY: &str = "canary-token-7f3a9c";

/// A server on `ip` that reads each request head, keeps it, and answers with `respond`.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn serve<F, Fut>(ip: &str, respond: F) -> Server
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let respond = Arc::new(respond);
    let (count, seen) = (connections.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let respond = respond.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                seen.lock().unwrap().push(head.clone());
                respond(stream, head).await;
            });
        }
    });
    Server {
        port,
        connections,
        heads,
    }
}

/// A server answering every request with the same bytes.
async fn fixed(response: Vec<u8>) -> Server {
    let response = Arc::new(response);
    serve("127.0.0.2", move |mut stream, _| {
        let response = response.clone();
        async move {
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

fn ok_with_body(body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra_headers}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn fetcher(deadline: Duration) -> Fetcher {
    let policy =
        DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.2/32"]).unwrap());
    let limits = FetchLimits {
        deadline,
        connect_timeout: deadline,
        ..FetchLimits::default()
    };
    Fetcher::new(policy, limits).unwrap()
}

fn url(port: u16) -> String {
    format!("http://127.0.0.2:{port}/feed?appid=a&token={CANARY}&timestamp=1")
}

async fn get(fetcher: &Fetcher, url: &str) -> refreshd_fetch::FetchResult {
    fetch_periodic(fetcher, url, None, SystemTime::now()).await
}

#[tokio::test]
async fn p13_ok_body_is_returned_as_text_with_its_etag() {
    let server = fixed(ok_with_body("données".as_bytes(), "etag: \"v1\"\r\n")).await;
    let result = get(&fetcher(Duration::from_secs(5)), &url(server.port)).await;
    assert_eq!(result.outcome, FetchOutcome::Ok);
    assert_eq!(result.body.as_deref(), Some("données"));
    assert_eq!(result.etag.as_deref(), Some("\"v1\""));
    let head = server.heads.lock().unwrap()[0].to_lowercase();
    assert!(
        !head.contains("referer") && !head.contains("accept-encoding"),
        "{head}"
    );
}

#[tokio::test]
async fn p12_conditional_request_carries_if_none_match_and_304_is_not_modified() {
    let server = serve("127.0.0.2", |mut stream, head| async move {
        let answer: &[u8] = if head.to_lowercase().contains("if-none-match: \"v1\"") {
            b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\nconnection: close\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"
        };
        let _ = stream.write_all(answer).await;
    })
    .await;
    let f = fetcher(Duration::from_secs(5));
    let result = fetch_periodic(&f, &url(server.port), Some("\"v1\""), SystemTime::now()).await;
    assert_eq!(result.outcome, FetchOutcome::NotModified);
    assert_eq!(result.http_status, Some(304));
}

#[tokio::test]
async fn p13_p14_body_cap_is_exact() {
    let limit = 262_144;
    let exact = fixed(ok_with_body(&vec![b'a'; limit], "")).await;
    let over = fixed(ok_with_body(&vec![b'a'; limit + 1], "")).await;
    let f = fetcher(Duration::from_secs(10));
    assert_eq!(get(&f, &url(exact.port)).await.outcome, FetchOutcome::Ok);
    assert_eq!(
        get(&f, &url(over.port)).await.outcome,
        FetchOutcome::TooLarge
    );
}

#[tokio::test]
async fn p14_endless_body_is_cut_as_too_large() {
    let server = serve("127.0.0.2", |mut stream, _| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("{:x}\r\n{}\r\n", 8192, "z".repeat(8192));
        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let result = get(&fetcher(Duration::from_secs(10)), &url(server.port)).await;
    assert_eq!(result.outcome, FetchOutcome::TooLarge);
    assert_eq!(result.bytes, 262_145);
}

#[tokio::test]
async fn p14_short_body_for_its_content_length_is_invalid_response() {
    let server = fixed(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\nonly this".to_vec(),
    )
    .await;
    assert_eq!(
        get(&fetcher(Duration::from_secs(5)), &url(server.port))
            .await
            .outcome,
        FetchOutcome::InvalidResponse
    );
}

#[tokio::test]
async fn p14_invalid_utf8_and_utf16_bom_are_not_utf8() {
    let latin1 = fixed(ok_with_body(b"caf\xe9", "")).await;
    let utf16 = fixed(ok_with_body(&[0xff, 0xfe, b'h', 0, b'i', 0], "")).await;
    let f = fetcher(Duration::from_secs(5));
    assert_eq!(
        get(&f, &url(latin1.port)).await.outcome,
        FetchOutcome::NotUtf8
    );
    assert_eq!(
        get(&f, &url(utf16.port)).await.outcome,
        FetchOutcome::NotUtf8
    );
}

#[tokio::test]
async fn p14_gzip_bomb_is_never_decompressed() {
    // A gzip stream of zeros: tiny on the wire, huge if anyone inflated it.
    let mut bomb = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03];
    bomb.extend(std::iter::repeat_n(0xed, 4000));
    let server = fixed(ok_with_body(&bomb, "content-encoding: gzip\r\n")).await;
    let result = get(&fetcher(Duration::from_secs(5)), &url(server.port)).await;
    assert_eq!(result.outcome, FetchOutcome::NotUtf8);
    assert_eq!(result.bytes, bomb.len());
}

#[tokio::test]
async fn p14_megabyte_of_headers_is_invalid_response() {
    let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..16_384 {
        response.extend_from_slice(format!("x-filler-{i}: {}\r\n", "h".repeat(48)).as_bytes());
    }
    response.extend_from_slice(b"content-length: 0\r\n\r\n");
    let server = fixed(response).await;
    assert_eq!(
        get(&fetcher(Duration::from_secs(5)), &url(server.port))
            .await
            .outcome,
        FetchOutcome::InvalidResponse
    );
}

#[tokio::test]
async fn p14_listener_that_never_answers_times_out() {
    let server = serve("127.0.0.2", |stream, _| async move {
        // Keep the connection open and say nothing until the client gives up.
        let mut stream = stream;
        let mut sink = [0u8; 16];
        let _ = stream.read(&mut sink).await;
    })
    .await;
    let result = get(&fetcher(Duration::from_millis(300)), &url(server.port)).await;
    assert_eq!(result.outcome, FetchOutcome::Timeout);
}

#[tokio::test]
async fn p14_body_trickle_cannot_extend_the_deadline() {
    let server = serve("127.0.0.2", |mut stream, _| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            .await;
        let mut interval = tokio::time::interval(Duration::from_millis(50));
        loop {
            interval.tick().await;
            if stream.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
    .await;
    let result = get(&fetcher(Duration::from_millis(400)), &url(server.port)).await;
    assert_eq!(result.outcome, FetchOutcome::Timeout);
}

#[tokio::test]
async fn p12_redirects_are_never_followed_and_leak_nothing() {
    let sentinel = serve("127.0.0.1", |_, _| async {}).await;
    let target = format!("http://127.0.0.1:{}/steal", sentinel.port);
    let server = fixed(
        format!("HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n")
            .into_bytes(),
    )
    .await;
    let result = get(&fetcher(Duration::from_secs(5)), &url(server.port)).await;
    assert_eq!(result.outcome, FetchOutcome::Redirect);
    assert_eq!(result.http_status, Some(302));
    assert_eq!(sentinel.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn retry_after_is_read_from_failures() {
    let server =
        fixed(b"HTTP/1.1 503 Busy\r\nretry-after: 7200\r\ncontent-length: 0\r\n\r\n".to_vec())
            .await;
    let result = get(&fetcher(Duration::from_secs(5)), &url(server.port)).await;
    assert_eq!(result.outcome, FetchOutcome::HttpStatus);
    assert_eq!(result.retry_after, Some(Duration::from_secs(7200)));
}

#[tokio::test]
async fn encoded_loopback_literals_never_reach_the_sentinel() {
    let sentinel = serve("127.0.0.1", |_, _| async {}).await;
    let f = fetcher(Duration::from_secs(2));
    let port = sentinel.port;
    for host in [
        "127.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "127.1",
        "0x7f.1",
        "0x7f000001",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "0.0.0.0",
        "[::1]",
        "[::]",
        "localhost.localdomain.invalid",
    ] {
        for scheme in ["http", "https"] {
            let result = get(&f, &format!("{scheme}://{host}:{port}/?token={CANARY}")).await;
            assert!(
                matches!(
                    result.outcome,
                    FetchOutcome::BlockedAddress | FetchOutcome::Connect
                ),
                "{scheme}://{host}: {:?}",
                result.outcome
            );
        }
    }
    assert_eq!(sentinel.connections.load(Ordering::SeqCst), 0);
}

/// Answers each lookup from a list, in turn: a rebinding DNS server.
struct Rebinding {
    answers: Vec<Vec<IpAddr>>,
    next: AtomicUsize,
}

impl NameResolver for Rebinding {
    fn lookup(&self, _host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers[i % self.answers.len()].clone();
        Box::pin(async move { Ok(answer) })
    }
}

#[tokio::test]
async fn dns_rebinding_and_mixed_answers_only_dial_the_allowed_address() {
    let sentinel = serve("127.0.0.1", |_, _| async {}).await;
    // The public stand-in answers on the same port number as the sentinel would.
    let public = {
        let listener = TcpListener::bind(("127.0.0.2", sentinel.port)).await;
        match listener {
            Ok(l) => l,
            Err(_) => {
                return say_loudly!("SKIPPED: could not bind 127.0.0.2 on the sentinel's port")
            }
        }
    };
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = public.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&ok_with_body(b"ok", "")).await;
            });
        }
    });
    let allowed: IpAddr = "127.0.0.2".parse().unwrap();
    let blocked: IpAddr = "127.0.0.1".parse().unwrap();
    let resolver = Arc::new(Rebinding {
        answers: vec![
            vec![allowed],
            vec![blocked],
            vec![blocked, allowed],
            vec![allowed, blocked],
        ],
        next: AtomicUsize::new(0),
    });
    let policy =
        DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.2/32"]).unwrap());
    let f = Fetcher::with_resolver(policy, FetchLimits::default(), resolver).unwrap();
    let mut outcomes = std::collections::HashMap::new();
    for i in 0..1000 {
        // A fresh name each time, so no connection or lookup is reused.
        let u = format!("http://rebind-{i}.test:{}/?token={CANARY}", sentinel.port);
        *outcomes.entry(get(&f, &u).await.outcome).or_insert(0) += 1;
    }
    assert_eq!(
        sentinel.connections.load(Ordering::SeqCst),
        0,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get(&FetchOutcome::BlockedAddress),
        Some(&250),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.get(&FetchOutcome::Ok), Some(&750), "{outcomes:?}");
}

#[tokio::test]
async fn failures_never_carry_the_token() {
    let f = fetcher(Duration::from_millis(300));
    let silent = serve("127.0.0.2", |mut s, _| async move {
        let mut b = [0u8; 1];
        let _ = s.read(&mut b).await;
    })
    .await;
    let closed_port = {
        let l = TcpListener::bind(("127.0.0.2", 0)).await.unwrap();
        l.local_addr().unwrap().port()
    };
    for u in [
        url(silent.port),
        url(closed_port),
        format!("http://127.0.0.1:9/?token={CANARY}"),
        format!("ftp://x.example/?token={CANARY}"),
        format!("https://no-such-host.invalid/?token={CANARY}"),
    ] {
        let failure = f
            .send(refreshd_fetch::Outbound {
                method: reqwest::Method::GET,
                url: &u,
                headers: vec![],
                body: None,
            })
            .await
            .unwrap_err();
        let shown = format!("{failure} {failure:?}");
        assert!(!shown.contains(CANARY), "{shown}");
    }
}

#[test]
fn configuration_time_url_checks() {
    let policy =
        DestinationPolicy::new(DestinationPolicy::parse_trusted(&["10.1.0.0/16"]).unwrap());
    let problem = |u: &str| check_url(&policy, u).unwrap_err();
    for scheme in [
        "file:///etc/passwd",
        "gopher://x.example/",
        "ftp://x.example/",
        "data:text/plain,hi",
        "javascript:alert(1)",
    ] {
        assert_eq!(
            problem(scheme),
            FetchFailure::InvalidUrl(UrlProblem::Scheme),
            "{scheme}"
        );
    }
    assert_eq!(
        problem("https://user:pw@x.example/"),
        FetchFailure::InvalidUrl(UrlProblem::UserInfo)
    );
    assert_eq!(
        problem(&format!("https://x.example/{}", "a".repeat(2048))),
        FetchFailure::InvalidUrl(UrlProblem::TooLong)
    );
    assert_eq!(
        problem("http://93.184.216.34/"),
        FetchFailure::PlainHttpNotTrusted
    );
    assert!(matches!(
        problem("https://169.254.169.254/latest/meta-data"),
        FetchFailure::Blocked(_)
    ));
    assert!(check_url(&policy, "http://10.1.2.3:9000/fn").is_ok());
    assert!(check_url(&policy, "https://data.example.com/feed").is_ok());
    let no_trust = DestinationPolicy::default();
    assert_eq!(
        check_url(&no_trust, "http://data.example.com/").unwrap_err(),
        FetchFailure::PlainHttpNotTrusted
    );
}

/// Answers every name with one address.
struct Fixed(IpAddr);

impl NameResolver for Fixed {
    fn lookup(&self, _host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let answer = vec![self.0];
        Box::pin(async move { Ok(answer) })
    }
}

/// A server on 127.0.0.2 answering every request with a small 200 and closing.
async fn ok_server() -> Server {
    fixed(ok_with_body(b"ok", "")).await
}

#[tokio::test]
async fn idle_origins_are_forgotten() {
    let server = ok_server().await;
    let policy =
        DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.2/32"]).unwrap());
    let f = Fetcher::with_resolver(
        policy,
        FetchLimits::default(),
        Arc::new(Fixed("127.0.0.2".parse().unwrap())),
    )
    .unwrap();
    for i in 0..300 {
        // A distinct origin each time: the name differs, the server is the same.
        let u = format!("http://origin-{i}.test:{}/?token={CANARY}", server.port);
        assert_eq!(get(&f, &u).await.outcome, FetchOutcome::Ok, "{i}");
        assert_eq!(f.tracked_origins(), 0, "after origin {i}");
    }
    // Failures and timeouts let go of their origin too.
    let silent = serve("127.0.0.2", |stream, _| async move {
        // Holds the connection without answering until the client gives up.
        let mut stream = stream;
        let mut buf = [0u8; 16];
        let _ = stream.read(&mut buf).await;
    })
    .await;
    let short = Fetcher::with_resolver(
        DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.2/32"]).unwrap()),
        FetchLimits {
            deadline: Duration::from_millis(200),
            ..FetchLimits::default()
        },
        Arc::new(Fixed("127.0.0.2".parse().unwrap())),
    )
    .unwrap();
    for i in 0..5 {
        let u = format!("http://slow-{i}.test:{}/", silent.port);
        assert_eq!(get(&short, &u).await.outcome, FetchOutcome::Timeout);
    }
    assert_eq!(short.tracked_origins(), 0);
}

#[tokio::test]
async fn an_origin_is_tracked_while_a_request_to_it_is_in_flight() {
    let (release, released) = tokio::sync::watch::channel(false);
    let arrived = Arc::new(tokio::sync::Notify::new());
    let signal = arrived.clone();
    let holding = serve("127.0.0.2", move |mut stream, _| {
        let mut released = released.clone();
        let signal = signal.clone();
        async move {
            signal.notify_one();
            let _ = released.wait_for(|r| *r).await;
            let _ = stream.write_all(&ok_with_body(b"ok", "")).await;
        }
    })
    .await;
    let f = Arc::new(fetcher(Duration::from_secs(60)));
    let request = {
        let f = f.clone();
        let u = url(holding.port);
        tokio::spawn(async move { get(&f, &u).await.outcome })
    };
    // The server holds the request (a hang guard, not a timing).
    tokio::time::timeout(Duration::from_secs(30), arrived.notified())
        .await
        .expect("the request reaches the server");
    assert_eq!(f.tracked_origins(), 1, "its limit is kept while in use");
    release.send(true).unwrap();
    assert_eq!(request.await.unwrap(), FetchOutcome::Ok);
    assert_eq!(f.tracked_origins(), 0);
}

#[tokio::test]
async fn own_listeners_are_never_reached_whatever_is_trusted() {
    // Stands in for refreshd's API listener, on a trusted address.
    let own = ok_server().await;
    let other = ok_server().await;
    let own_address: std::net::SocketAddr = format!("127.0.0.2:{}", own.port).parse().unwrap();
    let f = Fetcher::with_resolver(
        DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.0/8"]).unwrap()),
        FetchLimits::default(),
        Arc::new(Fixed("127.0.0.2".parse().unwrap())),
    )
    .unwrap();
    let own_url = format!("http://127.0.0.2:{}/metrics", own.port);
    assert_eq!(get(&f, &own_url).await.outcome, FetchOutcome::Ok, "before");
    f.set_own_listeners(vec![own_address]).unwrap();
    let before = own.connections.load(Ordering::SeqCst);
    for u in [
        own_url.clone(),
        format!("http://[::ffff:127.0.0.2]:{}/metrics", own.port),
        format!("http://refreshd.test:{}/metrics", own.port),
        format!("https://refreshd.test:{}/metrics", own.port),
    ] {
        let failure = f
            .send(refreshd_fetch::Outbound {
                method: reqwest::Method::GET,
                url: &u,
                headers: Vec::new(),
                body: None,
            })
            .await
            .unwrap_err();
        let FetchFailure::Blocked(blocked) = &failure else {
            panic!("{u}: {failure:?}");
        };
        assert_eq!(
            blocked.reason,
            refreshd_fetch::BlockReason::OwnListener,
            "{u}"
        );
        assert!(blocked.hint().contains("--allow-destination"), "{u}");
        assert_eq!(
            get(&f, &u).await.outcome,
            FetchOutcome::BlockedAddress,
            "{u}"
        );
    }
    // Configuration is refused too, with its own reason.
    assert!(matches!(
        f.check_url(&own_url),
        Err(FetchFailure::Blocked(refreshd_fetch::Blocked {
            reason: refreshd_fetch::BlockReason::OwnListener,
            ..
        }))
    ));
    assert_eq!(own.connections.load(Ordering::SeqCst), before);
    // Other ports on the same trusted address are still reached, by address and name.
    for u in [
        format!("http://127.0.0.2:{}/", other.port),
        format!("http://other.test:{}/", other.port),
    ] {
        assert_eq!(get(&f, &u).await.outcome, FetchOutcome::Ok, "{u}");
    }

    // A listener on 0.0.0.0 is its port on every local address.
    let any: std::net::SocketAddr = format!("0.0.0.0:{}", own.port).parse().unwrap();
    f.set_own_listeners(vec![any]).unwrap();
    for u in [
        format!("http://127.0.0.2:{}/", own.port),
        format!("http://127.0.0.1:{}/", own.port),
        format!("http://refreshd.test:{}/", own.port),
    ] {
        assert_eq!(
            get(&f, &u).await.outcome,
            FetchOutcome::BlockedAddress,
            "{u}"
        );
    }
    assert_eq!(own.connections.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn p12_a_fetch_url_past_2048_bytes_is_sent_whole() {
    // A configured URL just under the limit and the longest token, in characters
    // that percent-encoding multiplies: the fetch URL is about 8 KB and must be sent.
    let server = ok_server().await;
    let f = fetcher(Duration::from_secs(10));
    let prefix = format!("http://127.0.0.2:{}/", server.port);
    let source = format!("{prefix}{}", "p".repeat(2000 - prefix.len()));
    assert_eq!(source.len(), 2000);
    assert!(
        f.check_url(&source).is_ok(),
        "the configured URL is accepted"
    );
    for token in ["é".repeat(1024), "/".repeat(1024)] {
        let fetch = refreshd_rules::periodic::fetch_url(&source, "wx1", &token, 1);
        assert!(fetch.len() > 2048, "{}", fetch.len());
        let result = get(&f, &fetch).await;
        assert_eq!(result.outcome, FetchOutcome::Ok, "{}", fetch.len());
        let heads = server.heads.lock().unwrap();
        let request_line = heads.last().unwrap().lines().next().unwrap().to_string();
        let path = fetch.strip_prefix(&format!("http://127.0.0.2:{}", server.port));
        assert_eq!(request_line, format!("GET {} HTTP/1.1", path.unwrap()));
    }
    // What the developer configures is still limited.
    let too_long = format!("{prefix}{}", "p".repeat(2049 - prefix.len()));
    assert_eq!(
        f.check_url(&too_long).unwrap_err(),
        FetchFailure::InvalidUrl(UrlProblem::TooLong)
    );
}
