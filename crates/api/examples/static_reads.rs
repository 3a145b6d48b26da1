//! The yardstick of `bench/reads.sh`: axum on the same HTTP stack answering
//! `GET /v1/apps/{appid}/background-fetch` with a body of the same shape held in memory,
//! with no key lookup, no engine and no store. What refreshd's cached read should come
//! close to.
//!
//! `cargo run --release -p refreshd-api --example static_reads -- ADDRESS KIB`

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::routing::get;
use axum::Router;

/// `{"fetched_data":"xxx…","time_stamp":N}` with `kib` KiB of data.
fn body_of(kib: usize) -> axum::body::Bytes {
    let data = "x".repeat(kib * 1024);
    let text = serde_json::json!({"fetched_data": data, "time_stamp": 1_772_359_200_000_i64});
    axum::body::Bytes::from(serde_json::to_vec(&text).unwrap())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:18996".into());
    let kib: usize = args.next().and_then(|k| k.parse().ok()).unwrap_or(1);
    let body = body_of(kib);
    let app = Router::new().route(
        "/v1/apps/{appid}/background-fetch",
        get(move || {
            let body = body.clone();
            async move {
                (
                    [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    println!("listening on {address}");
    axum::serve(listener, app).await.unwrap();
}
