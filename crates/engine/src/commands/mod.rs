//! The engine's use cases: one command per API operation, grouped by area. Each takes
//! the authenticated [`Caller`], checks what the caller may see (anything not theirs is
//! "not found"), validates its input, runs the rules through the engine's subject
//! changes, and answers a view: a plain struct the API serializes as it likes. Nothing
//! outside the engine reads the store or the fetcher.
//!
//! * [`access`] — authenticating keys, the store's health;
//! * [`admin`] — the operator's apps, providers, devices, keys and signing secrets;
//! * [`apps`] — periodic fetch: the developer's setting, fetch-now, log and explanation;
//!   the device's launch, token and cached data;
//! * [`forms`] — widgets: forms on devices, the provider's config, data and next
//!   refresh, explanations;
//! * [`device`] — a device's network and time zone;
//! * [`lifecycle`] — listing and deleting apps, providers and devices, erasing a user;
//! * [`stats`] — hourly statistics of an app's fetches and a provider's deliveries;
//! * [`events`] — the host events of a device: where its event stream starts, and the
//!   one-request catch-up of a sync.

pub mod access;
pub mod admin;
pub mod apps;
pub mod device;
pub mod events;
pub mod forms;
pub mod lifecycle;
pub mod stats;

use crate::engine::Engine;
use crate::error::EngineError;
use refreshd_fetch::FetchFailure;
use refreshd_store::KeyKind;

pub use access::AccessCommands;
pub use admin::{
    AdminCommands, CreatedApp, CreatedDevice, CreatedProvider, MarketUpdateDuration,
    NewProviderInput, RotatedKey, RotatedSecret,
};
pub use apps::{
    AppCommands, CachedData, FetchAttempt, FetchExplanation, FetchOutcomeNote, GrayInput,
    GrayStatus, PeriodicInput, PeriodicView, SourceInput,
};
pub use device::DeviceCommands;
pub use events::{EventCommands, HostEvent, StreamStart, SyncView, SyncedApp, SyncedForm};
pub use forms::{
    AddedForm, ConfigApplied, FormCommands, FormDataView, FormExplanation, NextRefresh,
    NotedDecision, RemovedForms,
};
pub use lifecycle::{
    AppSummary, DefinitionCount, DeviceSummary, ErasedUser, LifecycleCommands, Page, PlacedForm,
    ProviderSummary,
};
pub use stats::{AppStats, HourStats, ProviderStats, StatsCommands};

/// Who calls a command: the principal an API key authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub kind: KeyKind,
    /// The app id, provider name, device id, or "operator".
    pub id: String,
    /// The SHA-256 of the key used (never the key): streams opened with a key end when
    /// it is rotated.
    pub key_hash: Vec<u8>,
}

impl Caller {
    /// The caller's id when it is of `kind`; any other kind is refused (api.md: 401 for
    /// a wrong kind of key).
    pub fn require(&self, kind: KeyKind) -> Result<&str, EngineError> {
        if self.kind == kind {
            Ok(&self.id)
        } else {
            Err(EngineError::Unauthorized)
        }
    }
}

impl Engine {
    /// Authentication and health.
    pub fn access(&self) -> AccessCommands<'_> {
        AccessCommands { engine: self }
    }

    /// The operator's commands.
    pub fn admin(&self) -> AdminCommands<'_> {
        AdminCommands { engine: self }
    }

    /// Periodic-fetch commands, for developers and devices.
    pub fn apps(&self) -> AppCommands<'_> {
        AppCommands { engine: self }
    }

    /// Widget commands, for devices and providers.
    pub fn forms(&self) -> FormCommands<'_> {
        FormCommands { engine: self }
    }

    /// A device's own settings.
    pub fn device(&self) -> DeviceCommands<'_> {
        DeviceCommands { engine: self }
    }

    /// Host events, for a device's event stream and sync.
    pub fn events(&self) -> EventCommands<'_> {
        EventCommands { engine: self }
    }

    /// Listing and deleting what the operator created; erasing a user.
    pub fn lifecycle(&self) -> LifecycleCommands<'_> {
        LifecycleCommands { engine: self }
    }

    /// Statistics for developers, providers and the operator.
    pub fn stats(&self) -> StatsCommands<'_> {
        StatsCommands { engine: self }
    }
}

impl Engine {
    /// Checks a source or refresh URL when it is configured (P2, api.md), so that a
    /// URL refreshd would refuse at send time is refused now, with what to change.
    /// `path` is the field's JSON path.
    pub(crate) fn check_destination(
        &self,
        path: &'static str,
        url: &str,
    ) -> Result<(), EngineError> {
        let Err(failure) = self.fetcher.check_url(url) else {
            return Ok(());
        };
        let (message, hint) = match failure {
            FetchFailure::InvalidUrl(problem) => (
                format!("the URL is not acceptable: {problem}"),
                "give an absolute https:// URL without user name or password, of at most \
                 2048 bytes; refreshd appends appid, token and timestamp itself (P12)",
            ),
            FetchFailure::Blocked(blocked) => (blocked.to_string(), blocked.hint()),
            FetchFailure::PlainHttpNotTrusted => (
                "use https://; plain http:// only reaches destinations the operator trusts".into(),
                "use https://, or have the operator trust the range with --allow-destination CIDR",
            ),
            other => (other.to_string(), ""),
        };
        Err(EngineError::Destination {
            path,
            message,
            hint,
        })
    }
}

/// Ids chosen by operators: 1 to 128 of `A–Z a–z 0–9 . _ -`.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), EngineError> {
    let ok = (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::invalid_request(format!(
            "{field} must be 1 to 128 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// A time zone by its IANA name (T1).
pub(crate) fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, EngineError> {
    jiff::tz::TimeZone::get(name).map_err(|_| {
        EngineError::invalid(
            "invalid_zone",
            format!("\"{name}\" is not an IANA time zone"),
        )
    })
}
