//! The host events of a device (`form_data`, `form_removed`, `fetched_data`), as
//! stored: an event stream reads everything after the last id it sent, then waits for a
//! notice that the device has more, so replay and live delivery are one path. A sync
//! answers the same news in one response: what changed after a cursor, read from which
//! forms and apps the events after it are about, with their current state.

use super::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use refreshd_rules::Instant;
use refreshd_store::{DeviceFormData, KeyKind};
use std::collections::{HashMap, HashSet};
use tokio::sync::broadcast;

pub struct EventCommands<'a> {
    pub(crate) engine: &'a Engine,
}

/// One stored host event; `payload` is JSON text fixed when it was stored
/// ([`crate::wire`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEvent {
    pub id: i64,
    pub kind: String,
    pub payload: String,
}

impl EventCommands<'_> {
    /// The calling device's events after `after_id`, oldest first, at most `limit`.
    pub async fn read(
        &self,
        caller: &Caller,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<HostEvent>, EngineError> {
        let device_id = caller.require(KeyKind::Device)?;
        let rows = self
            .engine
            .store
            .events_after(device_id, after_id, limit)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| HostEvent {
                id: row.event_id,
                kind: row.kind,
                payload: row.payload,
            })
            .collect())
    }

    /// Notices naming devices with new events, from this node and (through the store)
    /// the others; a stream re-reads its own device's events on each.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.engine.subscribe_host_events()
    }
}

/// Where a device's event stream starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStart {
    /// Sent first: empty when the stream resumes after a kept event; otherwise the
    /// latest event of each form and of each app, oldest first.
    pub first: Vec<HostEvent>,
    /// The stream continues with the events after this id.
    pub after_id: i64,
}

/// Everything a device needs to catch up, in one answer (`GET /v1/device/sync`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncView {
    /// Opaque; the next sync passes it back.
    pub cursor: String,
    /// True when this is the whole current state (no cursor, or one too old to answer
    /// from): the device replaces what it holds.
    pub reset: bool,
    pub apps: Vec<SyncedApp>,
    pub forms: Vec<SyncedForm>,
    pub removed_forms: Vec<String>,
}

/// A user's cached periodic data for one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncedApp {
    pub appid: String,
    pub fetched_data: String,
    /// Epoch milliseconds.
    pub time_stamp: i64,
}

/// A placed form and the data its host may show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncedForm {
    pub form_id: String,
    pub provider: String,
    pub form_name: String,
    /// JSON text; `None` before the form has data its host may see.
    pub data: Option<String>,
    pub updated_at: Option<Instant>,
    pub trigger: Option<String>,
}

/// A sync cursor: the newest event the answer covered, and when it was issued (a
/// cursor older than the events kept cannot say what changed since).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SyncCursor {
    event_id: i64,
    issued_ms: i64,
}

impl SyncCursor {
    fn parse(text: &str) -> Result<SyncCursor, EngineError> {
        let invalid = || {
            EngineError::invalid(
                "invalid_cursor",
                "cursor is not one this server issued; sync without a cursor to start over",
            )
        };
        let (id, issued) = text.split_once('.').ok_or_else(invalid)?;
        let event_id: i64 = id.parse().map_err(|_| invalid())?;
        let issued_ms: i64 = issued.parse().map_err(|_| invalid())?;
        if event_id < 0 || issued_ms < 0 {
            return Err(invalid());
        }
        Ok(SyncCursor {
            event_id,
            issued_ms,
        })
    }

    fn text(&self) -> String {
        format!("{}.{}", self.event_id, self.issued_ms)
    }
}

/// The `data`, `updated_at` and `trigger` of a stored `form_data` event payload.
#[derive(serde::Deserialize)]
struct AnnouncedData {
    form_id: String,
    data: serde_json::Value,
    updated_at: Option<String>,
    trigger: Option<String>,
}

impl EventCommands<'_> {
    /// Where the calling device's stream starts. A `Last-Event-ID` naming an event the
    /// device still has resumes after it; none, a malformed one or an unknown one (from
    /// another server, or pruned) starts with the latest event of each form and app:
    /// never the whole history, and never nothing.
    pub async fn stream_start(
        &self,
        caller: &Caller,
        last_event_id: Option<&str>,
    ) -> Result<StreamStart, EngineError> {
        let device_id = caller.require(KeyKind::Device)?;
        let store = &self.engine.store;
        if let Some(id) = last_event_id.and_then(|v| v.trim().parse::<i64>().ok()) {
            if id > 0 && store.event_exists(device_id, id).await? {
                return Ok(StreamStart {
                    first: Vec::new(),
                    after_id: id,
                });
            }
        }
        let first: Vec<HostEvent> = store
            .latest_events(device_id)
            .await?
            .into_iter()
            .map(|row| HostEvent {
                id: row.event_id,
                kind: row.kind,
                payload: row.payload,
            })
            .collect();
        // The latest events include the device's newest one, so nothing is skipped.
        let after_id = first.last().map_or(0, |e| e.id);
        Ok(StreamStart { first, after_id })
    }

    /// What changed for the calling device (its forms) and its user (cached periodic
    /// data) after `cursor`, or everything without one.
    pub async fn sync(
        &self,
        caller: &Caller,
        cursor: Option<&str>,
    ) -> Result<SyncView, EngineError> {
        let device_id = caller.require(KeyKind::Device)?;
        let cursor = cursor.map(SyncCursor::parse).transpose()?;
        let store = &self.engine.store;
        let device = store
            .get_device(device_id)
            .await?
            .ok_or(EngineError::NotFound("not_found"))?;
        let now = self.engine.now().as_millis();
        // Read first: whatever is written after this is newer than the next cursor and
        // comes again in the next sync, so nothing falls between two answers.
        let last_id = store.last_event_id(device_id).await?;
        let since = cursor
            .filter(|c| c.event_id <= last_id && c.issued_ms >= now - crate::run::RETENTION_MS);
        let forms = store.forms_of_device(device_id).await?;
        let stored: HashMap<String, DeviceFormData> = store
            .form_data_of_device(device_id)
            .await?
            .into_iter()
            .map(|d| (d.data.form_id.clone(), d))
            .collect();
        // What a host was told of a form whose newer data waits for it to be shown.
        let announced: HashMap<String, AnnouncedData> =
            if stored.values().any(|d| d.announce_pending) {
                store
                    .latest_events(device_id)
                    .await?
                    .into_iter()
                    .filter(|e| e.kind == "form_data")
                    .filter_map(|e| serde_json::from_str::<AnnouncedData>(&e.payload).ok())
                    .map(|a| (a.form_id.clone(), a))
                    .collect()
            } else {
                HashMap::new()
            };
        let pairs = store.pairs_of_user(&device.user_id).await?;
        let (changed_forms, changed_apps) = match since {
            None => (None, None),
            Some(c) => {
                let subjects = store.event_subjects_after(device_id, c.event_id).await?;
                let forms: HashSet<String> =
                    subjects.iter().filter_map(|s| s.form_id.clone()).collect();
                let apps: HashSet<String> =
                    subjects.iter().filter_map(|s| s.appid.clone()).collect();
                (Some((forms, c.issued_ms)), Some(apps))
            }
        };
        let form_ids: HashSet<&str> = forms.iter().map(|f| f.form_id.as_str()).collect();
        let removed_forms = match &changed_forms {
            None => Vec::new(),
            Some((changed, _)) => {
                let mut removed: Vec<String> = changed
                    .iter()
                    .filter(|id| !form_ids.contains(id.as_str()))
                    .cloned()
                    .collect();
                removed.sort();
                removed
            }
        };
        let forms = forms
            .into_iter()
            .filter(|f| match &changed_forms {
                None => true,
                Some((changed, issued_ms)) => {
                    changed.contains(&f.form_id) || f.created_at > *issued_ms
                }
            })
            .map(|f| {
                let (data, updated_at, trigger) = match stored.get(&f.form_id) {
                    Some(d) if !d.announce_pending => (
                        Some(d.data.data.clone()),
                        Some(Instant::from_millis(d.data.updated_at)),
                        Some(d.data.trigger.clone()),
                    ),
                    _ => match announced.get(&f.form_id) {
                        Some(a) => (
                            Some(a.data.to_string()),
                            a.updated_at
                                .as_deref()
                                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                                .map(Instant::from_timestamp),
                            a.trigger.clone(),
                        ),
                        None => (None, None, None),
                    },
                };
                SyncedForm {
                    form_id: f.form_id,
                    provider: f.provider,
                    form_name: f.form_name,
                    data,
                    updated_at,
                    trigger,
                }
            })
            .collect();
        let apps = pairs
            .into_iter()
            .filter(|p| {
                changed_apps
                    .as_ref()
                    .is_none_or(|apps| apps.contains(&p.appid))
            })
            .filter_map(|p| {
                Some(SyncedApp {
                    fetched_data: p.cached_data?,
                    time_stamp: p.cached_at?,
                    appid: p.appid,
                })
            })
            .collect();
        Ok(SyncView {
            cursor: SyncCursor {
                event_id: last_id,
                issued_ms: now,
            }
            .text(),
            reset: since.is_none(),
            apps,
            forms,
            removed_forms,
        })
    }
}
