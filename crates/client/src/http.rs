//! The HTTP plumbing shared by the role clients: one `reqwest::Client`, the base URL,
//! the key as a sensitive header, and the mapping of answers to results.

use crate::error::{self, ClientError};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Settings shared by every role client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The whole-call deadline of ordinary requests (not of the event stream, which
    /// has its own idle timeout). Fetch-now waits for the fetch, so allow for it.
    pub request_timeout: Duration,
    /// Bring your own `reqwest::Client` (it should not follow redirects or use a
    /// proxy you do not trust: the key travels in every request).
    pub http: Option<reqwest::Client>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(60),
            http: None,
        }
    }
}

/// A `reqwest::Client` as this crate wants it: rustls, no proxy from the
/// environment, no redirects (a redirect could carry the key elsewhere), no
/// `Referer`.
pub fn default_http_client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .referer(false)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("refreshd-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Config(format!("could not build the HTTP client: {e}")))
}

#[derive(Clone)]
pub(crate) struct Http {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    timeout: Duration,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Http {
    pub(crate) fn new(
        base_url: &str,
        key: &str,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let base = Url::parse(base_url)
            .map_err(|e| ClientError::Config(format!("base URL does not parse: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ClientError::Config(
                "base URL must be an http:// or https:// URL".into(),
            ));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ClientError::Config("the key is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let http = match config.http {
            Some(http) => http,
            None => default_http_client()?,
        };
        Ok(Http {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                timeout: config.request_timeout,
            }),
        })
    }

    pub(crate) fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The URL of `segments` under the base, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        {
            // Checked in `new`: the base can be a base.
            let mut path = url.path_segments_mut().expect("base URL has a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.inner.auth.clone());
        self.inner
            .http
            .request(method, self.url(segments))
            .headers(headers)
    }

    async fn send(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        let response = builder
            .timeout(self.inner.timeout)
            .send()
            .await
            .map_err(ClientError::transport)?;
        check(response).await
    }

    /// Sends a request and decodes a JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&(dyn erased::Body + '_)>,
    ) -> Result<T, ClientError> {
        let response = self
            .send(self.build(method, segments, query, body)?)
            .await?;
        let bytes = response.bytes().await.map_err(ClientError::transport)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            operation,
            reason: e.to_string(),
        })
    }

    /// Sends a request whose answer has no body worth reading (204, or 200 with `{}`).
    pub(crate) async fn call_empty(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&(dyn erased::Body + '_)>,
    ) -> Result<(), ClientError> {
        let response = self
            .send(self.build(method, segments, query, body)?)
            .await?;
        // Read to the end so the connection can be reused.
        let _ = response.bytes().await.map_err(ClientError::transport)?;
        Ok(())
    }

    fn build(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&(dyn erased::Body + '_)>,
    ) -> Result<RequestBuilder, ClientError> {
        let mut builder = self.request(method, segments);
        if !query.is_empty() {
            builder = builder.query(query);
        }
        if let Some(body) = body {
            let bytes = body.to_json()?;
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        Ok(builder)
    }

    /// Opens `GET /v1/events` (no overall deadline: the stream lives long).
    pub(crate) async fn open_events(&self, last_event_id: &str) -> Result<Response, ClientError> {
        let mut builder = self
            .request(Method::GET, &["v1", "events"])
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if !last_event_id.is_empty() {
            builder = builder.header("last-event-id", last_event_id);
        }
        let response = builder.send().await.map_err(ClientError::transport)?;
        let response = check(response).await?;
        // A 200 that is not an event stream (a proxy's page, a wrong base URL) would
        // never yield an event; say so instead of waiting on it.
        let media = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !media.trim_start().starts_with("text/event-stream") {
            return Err(ClientError::Decode {
                operation: "event stream",
                reason: format!("the answer is {media:?}, not text/event-stream"),
            });
        }
        Ok(response)
    }
}

/// Passes a success through; turns anything else into the API's error.
async fn check(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = error::retry_after(response.headers());
    // An error body is small; a huge one is not the API's and is cut short.
    let body = read_capped(response, 1 << 20).await;
    Err(error::from_response_parts(
        status.as_u16(),
        retry_after,
        &body,
    ))
}

async fn read_capped(mut response: Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > cap {
            break;
        }
    }
    body
}

/// Request bodies: anything serializable, or JSON text already in hand.
pub(crate) mod erased {
    use crate::error::ClientError;

    pub trait Body {
        fn to_json(&self) -> Result<Vec<u8>, ClientError>;
    }

    /// A `Serialize` value.
    pub struct Json<'a, T: ?Sized>(pub &'a T);

    impl<T: serde::Serialize + ?Sized> Body for Json<'_, T> {
        fn to_json(&self) -> Result<Vec<u8>, ClientError> {
            serde_json::to_vec(self.0)
                .map_err(|e| ClientError::Config(format!("request body does not serialize: {e}")))
        }
    }

    /// JSON text sent byte for byte.
    pub struct Raw<'a>(pub &'a [u8]);

    impl Body for Raw<'_> {
        fn to_json(&self) -> Result<Vec<u8>, ClientError> {
            Ok(self.0.to_vec())
        }
    }
}

pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> erased::Json<'_, T> {
    erased::Json(value)
}
