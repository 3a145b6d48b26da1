//! refreshd's outbound HTTP, made safe to point at URLs chosen by third parties.
//!
//! * [`destination`] — which addresses may be dialled (block list, trusted ranges,
//!   IPv4 carried inside IPv6);
//! * [`client`] — the [`Fetcher`]: checked resolution, no redirects or proxies, one
//!   total deadline, a streamed body cap, per-origin concurrency, errors without URLs;
//! * [`periodic`] — a periodic data fetch and its outcome (P12–P14).
//!
//! It performs requests and reports outcomes; it never decides when to retry (the
//! rules do).

pub mod client;
pub mod destination;
pub mod periodic;

pub use client::{
    FetchFailure, FetchLimits, Fetcher, Inbound, NameResolver, Outbound, SystemResolver,
};
pub use destination::{BlockReason, Blocked, DestinationPolicy};
pub use periodic::{fetch_periodic, fetch_periodic_signed, request_target, FetchResult};
