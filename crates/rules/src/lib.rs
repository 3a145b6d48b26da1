//! refreshd's refresh rules as a sans-IO state machine.
//!
//! Everything here is plain data and pure functions: no clock, no I/O, no async, no
//! global state. Callers hand in inputs with the instant they happen at and get back
//! decisions and the subject's next wake-up. The service and the simulator both drive
//! these same types; only their clocks differ.
//!
//! The subjects:
//! * [`device::Device`] — one device's forms (widget passive refresh, F11–F24, T5);
//! * [`periodic::FetchPair`] with its [`periodic::App`] — one user's periodic data
//!   prefetch for one mini-program (P1–P15).
//!
//! Retries of refresh deliveries to providers are planned by [`delivery`].
//!
//! Inputs are checked by [`form_config`] (F1–F5, `form_config.json`), [`hhmm`] (F2, F3)
//! and [`json`] (strict JSON: no duplicate keys). Time zones and DST (T1–T3) are in
//! [`time`]. Rule ids from the contract (`refresh-rules.md`) are cited where each rule
//! lives and in the names of the tests that check it.

pub mod decision;
pub mod delivery;
pub mod device;
pub mod error;
pub mod explain;
pub mod form_config;
pub mod hhmm;
pub mod json;
pub mod periodic;
pub mod plan;
pub mod time;

pub use decision::{FormDecision, FormId, ProviderId, SkipReason, Trigger, TriggerSet};
pub use device::{Accepted, Device, DeviceInput, DeviceSettings, FormState, NewForm, Step};
pub use error::RuleError;
pub use plan::{ProviderTraits, RefreshPlan};
pub use time::{Instant, LocalTime};
