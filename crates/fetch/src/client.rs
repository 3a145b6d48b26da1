//! The outbound HTTP client.
//!
//! Every request goes through [`Fetcher::send`], which guarantees:
//! * the URL is `https://` (or `http://` to a trusted range only), without userinfo;
//! * IP-literal hosts are checked before the request is built (reqwest does not call a
//!   resolver for them), and every address a name resolves to is checked by the
//!   resolver reqwest dials with, so the connection goes to an address that passed;
//! * no redirects are followed, environment proxies are ignored, no `Referer` is sent,
//!   nothing is decompressed;
//! * one total deadline covers queueing for the origin, connecting, headers and body,
//!   so a server that drips bytes cannot extend it;
//! * the body is read in chunks and abandoned past the cap;
//! * errors are enums without text from the request: the URL (which carries a user's
//!   token) never reaches an error, a log line or a metric.

use crate::destination::{Blocked, DestinationPolicy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Limits of outbound requests.
#[derive(Clone, Debug)]
pub struct FetchLimits {
    /// Covers everything from queueing to the last body byte.
    pub deadline: Duration,
    pub connect_timeout: Duration,
    /// Requests in flight to one origin (scheme, host, port) at once.
    pub per_origin: usize,
    /// Bodies longer than this are abandoned at byte `max_body_bytes + 1`.
    pub max_body_bytes: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            deadline: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            per_origin: 8,
            max_body_bytes: refreshd_rules::periodic::MAX_BODY_BYTES,
        }
    }
}

/// Turns host names into addresses. Injectable so tests can answer as a hostile DNS
/// server would (rebinding, mixed answers).
pub trait NameResolver: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl NameResolver for SystemResolver {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_string();
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    }
}

/// Why a request did not produce a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchFailure {
    #[error("invalid URL: {0}")]
    InvalidUrl(UrlProblem),
    #[error(transparent)]
    Blocked(#[from] Blocked),
    #[error("plain http:// is only allowed to trusted destinations")]
    PlainHttpNotTrusted,
    #[error("the deadline passed")]
    Timeout,
    #[error("could not connect")]
    Connect,
    #[error("the response was malformed")]
    InvalidResponse,
    #[error("the response body was larger than allowed")]
    TooLarge { status: u16 },
}

/// What is wrong with a URL, without repeating the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("it does not parse")]
    Unparsable,
    #[error("it is longer than 2048 bytes")]
    TooLong,
    #[error("only http and https are allowed")]
    Scheme,
    #[error("it carries a user name or password")]
    UserInfo,
    #[error("it has no host")]
    NoHost,
}

/// An outbound request.
#[derive(Debug)]
pub struct Outbound<'a> {
    pub method: Method,
    /// Secret: may carry a token. Never logged.
    pub url: &'a str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Vec<u8>>,
}

/// A response whose body was read completely and within the cap.
#[derive(Debug)]
pub struct Inbound {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Checks every resolved address before reqwest may dial it.
struct CheckingResolver {
    names: Arc<dyn NameResolver>,
    policy: Arc<DestinationPolicy>,
    /// For plain http: only trusted addresses.
    trusted_only: bool,
}

/// The resolver found no address it may use; carried through reqwest's error chain.
#[derive(Debug, thiserror::Error)]
enum ResolveRefused {
    #[error(transparent)]
    Blocked(Blocked),
    #[error("plain http to an untrusted address")]
    NotTrusted,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.names.lookup(name.as_str());
        let policy = self.policy.clone();
        let trusted_only = self.trusted_only;
        Box::pin(async move {
            let addresses = lookup.await?;
            let mut first_refusal = None;
            let mut usable = Vec::new();
            for ip in addresses {
                let verdict = if trusted_only && !policy.is_trusted(ip) {
                    Err(ResolveRefused::NotTrusted)
                } else {
                    policy.check(ip).map_err(ResolveRefused::Blocked)
                };
                match verdict {
                    Ok(()) => usable.push(SocketAddr::new(ip, 0)),
                    Err(refusal) => {
                        first_refusal.get_or_insert(refusal);
                    }
                }
            }
            if usable.is_empty() {
                let refusal = first_refusal.unwrap_or(ResolveRefused::NotTrusted);
                return Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(usable.into_iter());
            Ok(addrs)
        })
    }
}

/// The safe outbound client; cheap to share (`Arc`).
pub struct Fetcher {
    https: reqwest::Client,
    plain_http: reqwest::Client,
    policy: Arc<DestinationPolicy>,
    limits: FetchLimits,
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Fetcher {
    pub fn new(policy: DestinationPolicy, limits: FetchLimits) -> Result<Self, reqwest::Error> {
        Self::with_resolver(policy, limits, Arc::new(SystemResolver))
    }

    pub fn with_resolver(
        policy: DestinationPolicy,
        limits: FetchLimits,
        names: Arc<dyn NameResolver>,
    ) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let build = |trusted_only: bool| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .referer(false)
                .connect_timeout(limits.connect_timeout)
                .pool_max_idle_per_host(limits.per_origin)
                .user_agent(concat!("refreshd/", env!("CARGO_PKG_VERSION")))
                .dns_resolver(Arc::new(CheckingResolver {
                    names: names.clone(),
                    policy: policy.clone(),
                    trusted_only,
                }))
                .https_only(!trusted_only)
                .build()
        };
        Ok(Fetcher {
            https: build(false)?,
            plain_http: build(true)?,
            policy,
            limits,
            origins: Mutex::new(HashMap::new()),
        })
    }

    pub fn policy(&self) -> &DestinationPolicy {
        &self.policy
    }

    pub fn limits(&self) -> &FetchLimits {
        &self.limits
    }

    /// Checks a URL as configuration (P2, api.md): scheme, userinfo, length, and for
    /// IP-literal hosts the destination. Names are checked again at every fetch.
    pub fn check_url(&self, url: &str) -> Result<Url, FetchFailure> {
        check_url(&self.policy, url)
    }

    fn origin_limit(&self, url: &Url) -> Arc<Semaphore> {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_origin.max(1))))
            .clone()
    }

    /// Sends a request and reads the whole response within the deadline.
    pub async fn send(&self, request: Outbound<'_>) -> Result<Inbound, FetchFailure> {
        let url = self.check_url(request.url)?;
        let client = if url.scheme() == "http" {
            &self.plain_http
        } else {
            &self.https
        };
        let limit = self.origin_limit(&url);
        let max_body = self.limits.max_body_bytes;
        let attempt = async move {
            let _permit = limit
                .acquire_owned()
                .await
                .map_err(|_| FetchFailure::Connect)?;
            let mut builder = client.request(request.method, url);
            for (name, value) in request.headers {
                builder = builder.header(name, value);
            }
            if let Some(body) = request.body {
                builder = builder.body(body);
            }
            let mut response = builder.send().await.map_err(failure_of)?;
            let status = response.status().as_u16();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            if (200..300).contains(&status) {
                while let Some(chunk) = response.chunk().await.map_err(failure_of)? {
                    if body.len() + chunk.len() > max_body {
                        return Err(FetchFailure::TooLarge { status });
                    }
                    body.extend_from_slice(&chunk);
                }
            }
            Ok(Inbound {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(self.limits.deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(FetchFailure::Timeout),
        }
    }
}

/// URL checks that need no network (see [`Fetcher::check_url`]).
pub fn check_url(policy: &DestinationPolicy, text: &str) -> Result<Url, FetchFailure> {
    if text.len() > MAX_URL_BYTES {
        return Err(FetchFailure::InvalidUrl(UrlProblem::TooLong));
    }
    let url = Url::parse(text).map_err(|_| FetchFailure::InvalidUrl(UrlProblem::Unparsable))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchFailure::InvalidUrl(UrlProblem::Scheme));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchFailure::InvalidUrl(UrlProblem::UserInfo));
    }
    let literal = match url.host() {
        None => return Err(FetchFailure::InvalidUrl(UrlProblem::NoHost)),
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = literal {
        policy.check(ip)?;
        if url.scheme() == "http" && !policy.is_trusted(ip) {
            return Err(FetchFailure::PlainHttpNotTrusted);
        }
    } else if url.scheme() == "http" && policy.trusted().is_empty() {
        // A name over plain http can only ever reach a trusted range; with none, it
        // can never work.
        return Err(FetchFailure::PlainHttpNotTrusted);
    }
    Ok(url)
}

/// Maps a reqwest error to a failure, dropping its text (which contains the URL).
fn failure_of(error: reqwest::Error) -> FetchFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<ResolveRefused>() {
            return match refused {
                ResolveRefused::Blocked(blocked) => FetchFailure::Blocked(blocked.clone()),
                ResolveRefused::NotTrusted => FetchFailure::PlainHttpNotTrusted,
            };
        }
        source = cause.source();
    }
    if error.is_timeout() {
        FetchFailure::Timeout
    } else if error.is_connect() {
        FetchFailure::Connect
    } else {
        FetchFailure::InvalidResponse
    }
}
