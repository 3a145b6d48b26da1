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
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The longest URL a developer or operator may configure, in bytes. It bounds what was
/// configured, not the fetch URL: P12 appends `appid`, the token (up to 1,024 code
/// points, so up to 12,288 bytes once percent-encoded) and `timestamp`, and that URL is
/// always sent (see [`Fetcher::send`]).
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
    /// The port this client dials when it is the client for one of refreshd's own
    /// ports. A resolver is only given the host name, so the port it will be dialled on
    /// is fixed per client instead; `None` for the clients of all other ports.
    own_port: Option<u16>,
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
        let own_port = self.own_port;
        Box::pin(async move {
            let addresses = lookup.await?;
            let mut first_refusal = None;
            let mut usable = Vec::new();
            for ip in addresses {
                let verdict = if trusted_only && !policy.is_trusted(ip) {
                    Err(ResolveRefused::NotTrusted)
                } else {
                    match own_port {
                        Some(port) => policy.check_socket(SocketAddr::new(ip, port)),
                        None => policy.check(ip),
                    }
                    .map_err(ResolveRefused::Blocked)
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

/// An https client and a plain-http client (trusted destinations only).
struct ClientPair {
    https: reqwest::Client,
    plain_http: reqwest::Client,
}

impl ClientPair {
    fn build(
        policy: &Arc<DestinationPolicy>,
        limits: &FetchLimits,
        names: &Arc<dyn NameResolver>,
        own_port: Option<u16>,
    ) -> Result<Self, reqwest::Error> {
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
                    own_port,
                }))
                .https_only(!trusted_only)
                .build()
        };
        Ok(ClientPair {
            https: build(false)?,
            plain_http: build(true)?,
        })
    }

    fn for_scheme(&self, scheme: &str) -> &reqwest::Client {
        if scheme == "http" {
            &self.plain_http
        } else {
            &self.https
        }
    }
}

/// The policy and the clients built on it, replaced whole when the policy changes.
struct Clients {
    policy: Arc<DestinationPolicy>,
    /// For URLs on any port that is not one of refreshd's own.
    any_port: ClientPair,
    /// For URLs on one of refreshd's own ports: their resolvers also refuse the
    /// addresses where refreshd listens on that port.
    own_ports: HashMap<u16, ClientPair>,
}

impl Clients {
    fn build(
        policy: DestinationPolicy,
        limits: &FetchLimits,
        names: &Arc<dyn NameResolver>,
    ) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let mut own_ports = HashMap::new();
        for own in policy.own_listeners() {
            if let std::collections::hash_map::Entry::Vacant(slot) = own_ports.entry(own.port()) {
                slot.insert(ClientPair::build(&policy, limits, names, Some(own.port()))?);
            }
        }
        Ok(Clients {
            any_port: ClientPair::build(&policy, limits, names, None)?,
            own_ports,
            policy,
        })
    }

    fn for_url(&self, url: &Url) -> &reqwest::Client {
        let port = url.port_or_known_default().unwrap_or(0);
        self.own_ports
            .get(&port)
            .unwrap_or(&self.any_port)
            .for_scheme(url.scheme())
    }
}

/// The safe outbound client; cheap to share (`Arc`).
pub struct Fetcher {
    clients: RwLock<Arc<Clients>>,
    names: Arc<dyn NameResolver>,
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
        let clients = Clients::build(policy, &limits, &names)?;
        Ok(Fetcher {
            clients: RwLock::new(Arc::new(clients)),
            names,
            limits,
            origins: Mutex::new(HashMap::new()),
        })
    }

    fn clients(&self) -> Arc<Clients> {
        self.clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The destination policy in force.
    pub fn policy(&self) -> Arc<DestinationPolicy> {
        self.clients().policy.clone()
    }

    /// From now on, refuses to connect to refreshd's own listening sockets (see
    /// [`DestinationPolicy::with_own_listeners`]). The service calls it once its
    /// listeners are bound, before any fetch or delivery; the clients are rebuilt, so
    /// calling it later only drops pooled idle connections.
    pub fn set_own_listeners(&self, listeners: Vec<SocketAddr>) -> Result<(), reqwest::Error> {
        let policy = DestinationPolicy::clone(&self.policy()).with_own_listeners(listeners);
        let clients = Clients::build(policy, &self.limits, &self.names)?;
        *self.clients.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(clients);
        Ok(())
    }

    pub fn limits(&self) -> &FetchLimits {
        &self.limits
    }

    /// Checks a URL as configuration (P2, api.md): scheme, userinfo, length, and for
    /// IP-literal hosts the destination. Names are checked again at every fetch.
    pub fn check_url(&self, url: &str) -> Result<Url, FetchFailure> {
        check_url(&self.policy(), url)
    }

    /// The origin's concurrency limit, held until the returned slot is dropped. The
    /// entry lives only while a request to that origin is queued or in flight: a map
    /// that kept every origin ever fetched would grow with the developers' URLs forever.
    fn origin_limit(&self, url: &Url) -> OriginSlot<'_> {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let limit = origins
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_origin.max(1))))
            .clone();
        OriginSlot {
            origins: &self.origins,
            key,
            limit: Some(limit),
        }
    }

    /// Origins with a request queued or in flight (idle origins are not tracked).
    pub fn tracked_origins(&self) -> usize {
        self.origins.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Sends a request and reads the whole response within the deadline.
    ///
    /// The URL is checked like configuration except for its length: a fetch URL is a
    /// configured URL (at most [`MAX_URL_BYTES`]) plus the P12 query, and refusing it
    /// here would fail every fetch of a valid setting without sending anything.
    pub async fn send(&self, request: Outbound<'_>) -> Result<Inbound, FetchFailure> {
        let clients = self.clients();
        let url = check_request_url(&clients.policy, request.url)?;
        let client = clients.for_url(&url);
        let slot = self.origin_limit(&url);
        let max_body = self.limits.max_body_bytes;
        let attempt = async {
            let _permit = slot
                .semaphore()
                .acquire()
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

/// A request's hold on its origin's limit. Dropping it (the request finished, failed,
/// timed out or was abandoned) forgets the origin when nobody else holds its limit.
struct OriginSlot<'a> {
    origins: &'a Mutex<HashMap<String, Arc<Semaphore>>>,
    key: String,
    limit: Option<Arc<Semaphore>>,
}

impl OriginSlot<'_> {
    fn semaphore(&self) -> &Semaphore {
        self.limit.as_deref().expect("held until drop")
    }
}

impl Drop for OriginSlot<'_> {
    fn drop(&mut self) {
        // Our clone goes first, then the map's count is read under the lock. Clones are
        // only made under that lock, so a count of one means no request holds or waits
        // for this limit, and a new request for the origin will simply start a new one.
        drop(self.limit.take());
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        if origins
            .get(&self.key)
            .is_some_and(|limit| Arc::strong_count(limit) == 1)
        {
            origins.remove(&self.key);
            // A burst of many origins leaves a large table behind; give it back.
            if origins.capacity() > 64 && origins.len() < origins.capacity() / 4 {
                origins.shrink_to_fit();
            }
        }
    }
}

/// URL checks that need no network (see [`Fetcher::check_url`]), for a URL being
/// configured: everything [`check_request_url`] checks, and its length.
pub fn check_url(policy: &DestinationPolicy, text: &str) -> Result<Url, FetchFailure> {
    if text.len() > MAX_URL_BYTES {
        return Err(FetchFailure::InvalidUrl(UrlProblem::TooLong));
    }
    check_request_url(policy, text)
}

/// URL checks that need no network, for a URL about to be requested: scheme, userinfo,
/// host, and the destination of an IP literal. No length limit (see [`Fetcher::send`]).
pub fn check_request_url(policy: &DestinationPolicy, text: &str) -> Result<Url, FetchFailure> {
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
        let port = url.port_or_known_default().unwrap_or(0);
        policy.check_socket(SocketAddr::new(ip, port))?;
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
