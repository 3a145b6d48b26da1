//! The engine's boundary with the network. The engine reaches developer servers and
//! providers only through [`Transport`], so a test or the engine-driven simulator can
//! play the network in-process; the service plugs in `refreshd_fetch::Fetcher`.

use refreshd_fetch::{
    fetch_periodic_signed, FetchFailure, FetchResult, Fetcher, Inbound, Outbound,
};
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

/// A boxed future, so that the engine can hold any transport behind one pointer.
pub type TransportFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Carries out the engine's outbound requests.
pub trait Transport: Send + Sync + 'static {
    /// P12–P14: GETs `url` (already carrying the P12 query) with `If-None-Match` and a
    /// `refreshd-signature` when given; `now` reads a `Retry-After` given as an HTTP
    /// date.
    fn fetch_periodic<'a>(
        &'a self,
        url: &'a str,
        if_none_match: Option<&'a str>,
        signature: Option<&'a str>,
        now: SystemTime,
    ) -> TransportFuture<'a, FetchResult>;

    /// Sends one delivery's signed POST to a provider.
    fn deliver<'a>(
        &'a self,
        request: Outbound<'a>,
    ) -> TransportFuture<'a, Result<Inbound, FetchFailure>>;
}

impl Transport for Fetcher {
    fn fetch_periodic<'a>(
        &'a self,
        url: &'a str,
        if_none_match: Option<&'a str>,
        signature: Option<&'a str>,
        now: SystemTime,
    ) -> TransportFuture<'a, FetchResult> {
        Box::pin(fetch_periodic_signed(
            self,
            url,
            if_none_match,
            signature,
            now,
        ))
    }

    fn deliver<'a>(
        &'a self,
        request: Outbound<'a>,
    ) -> TransportFuture<'a, Result<Inbound, FetchFailure>> {
        Box::pin(self.send(request))
    }
}
