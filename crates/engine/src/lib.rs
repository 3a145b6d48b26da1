//! refreshd's engine: the only part that reads a clock or sleeps.
//!
//! The store is its due-index of subjects (devices, user-app pairs) by next wake-up; it
//! wakes the earliest, loads its state, runs the rules, and commits the new state with every
//! decision it caused in one transaction *before* carrying anything out. Deliveries are
//! rows in that commit, sent by a worker with retries under a stable id; fetch orders
//! are marked in the pair's state with a lease, so a crash re-orders them once (T5).
//!
//! * [`clock`] — system time, time-warp, and a manual clock for tests;
//! * [`engine::Engine`] — subjects, inputs, commits;
//! * [`commands`] — one command per API operation, each answering a typed view;
//! * [`wire`] — the JSON the engine itself stores or sends: host event payloads and
//!   delivery bodies;
//! * [`run`] — the wake-up loop, fetch execution, the delivery worker, each with a
//!   step (`wake_due_once`, `execute_fetch`, `dispatch_deliveries`) that tests drive;
//! * [`transport`] — the network boundary (the fetcher, or a stub);
//! * [`secrets`] — API keys, sealed tokens, delivery signatures.

pub mod clock;
pub mod commands;
pub mod due;
pub mod engine;
pub mod error;
pub mod import;
pub mod read_cache;
pub mod run;
pub mod running;
pub mod secrets;
pub mod transport;
pub mod wire;

pub use clock::{Clock, ManualClock, SystemClock, WarpClock};
pub use commands::Caller;
pub use engine::{Engine, EngineSettings, TappedDecision};
pub use error::EngineError;
pub use read_cache::{ReadCacheSettings, ReadCacheUsage};
/// The store's kinds of key and its errors, as callers of commands meet them.
pub use refreshd_store::{KeyKind, StoreError};
pub use run::{DeliveryDispatcher, DispatchStep, DueFetch, FetchReport, FetchingApp, WakeStep};
pub use transport::Transport;
