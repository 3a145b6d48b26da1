//! Scenario files, the virtual-clock simulator and the explainer for refreshd's rules.
//!
//! [`scenario::Scenario`] parses and validates a file (section S of the rules);
//! [`run::Simulation`] drives `refreshd-rules` over it with a virtual clock that jumps
//! from one instant that matters to the next; [`output`] renders the records as JSON
//! lines, as a timeline, or as an HTML page ([`html`]); [`explain`] answers "why did (or didn't) this refresh?".

pub mod explain;
pub mod html;
pub mod output;
mod reader;
pub mod run;
pub mod scenario;

pub use run::{Record, RecordKind, Simulation};
pub use scenario::{Scenario, ScenarioError};
