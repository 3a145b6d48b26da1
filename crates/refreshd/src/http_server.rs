//! The API's HTTP/1 server: axum's router served by hyper with the limits `axum::serve`
//! does not offer.
//!
//! - **Header-read timeout**: a connection must send a request's complete headers
//!   within `header_read_timeout` of starting to (or of finishing the previous
//!   request), or it is closed; a slow-loris client cannot hold a connection.
//! - **Connection cap**: at most `max_connections` at once. Past it, a new connection
//!   is accepted, its request answered `503 too_many_connections` (with
//!   `Retry-After: 1`) and closed, so clients see why instead of hanging in the listen
//!   backlog.
//! - **Graceful shutdown**: when `shutdown` is cancelled the listener closes, idle
//!   connections close, and requests in progress finish; [`HttpServer::drained`] tells
//!   when the last connection is gone (the caller bounds the wait with its grace period).

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Limits on the API's connections (settings of `refreshd serve`).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub max_connections: u32,
}

/// Connections being refused at once; past this a refused connection is closed
/// without an answer, so refusing cannot itself pile up work.
const REFUSING_AT_ONCE: usize = 64;

/// How long a refused connection gets to take its 503.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);

const TOO_MANY_CONNECTIONS: &str = r#"{"error":{"code":"too_many_connections","message":"the server holds the most connections it accepts; try again shortly","details":[]}}"#;

/// The connections of a server whose listener has closed.
pub struct HttpServer {
    permits: Arc<Semaphore>,
    max_connections: u32,
}

impl HttpServer {
    /// Resolves when every connection has closed.
    pub async fn drained(&self) {
        let _ = self.permits.acquire_many(self.max_connections).await;
    }

    /// Connections still open.
    pub fn open_connections(&self) -> usize {
        self.max_connections as usize - self.permits.available_permits()
    }
}

/// Accepts connections on `listener` until `shutdown` is cancelled, then returns
/// (connections may still be finishing: see [`HttpServer::drained`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> HttpServer {
    let max_connections = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max_connections as usize));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning,
                // as axum::serve does.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve_connection(
                    stream,
                    router.clone(),
                    limits.header_read_timeout,
                    permit,
                    shutdown.clone(),
                ));
            }
            Err(_) => {
                metrics::counter!("refreshd_connections_refused_total").increment(1);
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(refuse(stream, permit));
                }
            }
        }
    }
    drop(listener);
    HttpServer {
        permits,
        max_connections,
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    header_read_timeout: Duration,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            // Finishes the request in progress (SSE streams were ended by the API), then
            // closes; an idle connection closes at once.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Answers 503 on a connection over the cap and closes it. The request's head is read
/// first (HTTP clients treat an answer that comes before their request as a broken
/// connection, not as a 503), and whatever else the client sends is drained after the
/// answer (closing a socket with unread bytes resets it, and the client could lose the
/// answer). All of it within `REFUSAL_DEADLINE`.
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{TOO_MANY_CONNECTIONS}",
        TOO_MANY_CONNECTIONS.len()
    );
    let _ = tokio::time::timeout(REFUSAL_DEADLINE, async {
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..n]);
        }
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        while stream.read(&mut buffer).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
