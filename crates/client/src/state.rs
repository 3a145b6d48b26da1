//! A host's own copy of what refreshd prefetched for it: kept current by sync answers
//! and by events, and serializable so a host can store it as it likes.

use crate::error::ClientError;
use crate::types::{CachedData, HostEvent, SyncResponse};
use crate::DeviceClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One placed form as the host holds it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FormEntry {
    /// Known from a sync; `None` for a form first heard of through an event.
    pub provider: Option<String>,
    pub form_name: Option<String>,
    /// `null` while the form has no data yet.
    pub data: Value,
    pub updated_at: Option<String>,
    pub trigger: Option<String>,
}

/// What a host holds: each app's cached data, each placed form's data, and the cursor
/// of the last sync.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub cursor: Option<String>,
    pub apps: BTreeMap<String, CachedData>,
    pub forms: BTreeMap<String, FormEntry>,
}

impl HostState {
    /// Applies a sync answer: a reset replaces everything, otherwise the changes are
    /// merged and removed forms dropped. The answer's cursor is kept for next time.
    pub fn apply_sync(&mut self, sync: SyncResponse) {
        if sync.reset {
            self.apps.clear();
            self.forms.clear();
        }
        for app in sync.apps {
            self.apps.insert(
                app.appid,
                CachedData {
                    fetched_data: app.fetched_data,
                    time_stamp: app.time_stamp,
                },
            );
        }
        for form in sync.forms {
            self.forms.insert(
                form.form_id,
                FormEntry {
                    provider: Some(form.provider),
                    form_name: Some(form.form_name),
                    data: form.data,
                    updated_at: form.updated_at,
                    trigger: form.trigger,
                },
            );
        }
        for form_id in sync.removed_forms {
            self.forms.remove(&form_id);
        }
        self.cursor = Some(sync.cursor);
    }

    /// Applies an event of the device's stream. Data older than what is held (an
    /// event replayed after a sync already brought newer data) is ignored.
    pub fn apply_event(&mut self, event: &HostEvent) {
        match event {
            HostEvent::FetchedData { event, .. } => {
                let newer = self
                    .apps
                    .get(&event.appid)
                    .is_none_or(|held| held.time_stamp <= event.time_stamp);
                if newer {
                    self.apps.insert(
                        event.appid.clone(),
                        CachedData {
                            fetched_data: event.fetched_data.clone(),
                            time_stamp: event.time_stamp,
                        },
                    );
                }
            }
            HostEvent::FormData { event, .. } => {
                let entry = self.forms.entry(event.form_id.clone()).or_default();
                // RFC 3339 instants in UTC, as refreshd writes them, order as text.
                let newer = match (&entry.updated_at, &event.updated_at) {
                    (Some(held), Some(new)) => held <= new,
                    _ => true,
                };
                if newer {
                    entry.data = event.data.clone();
                    entry.updated_at = event.updated_at.clone();
                    entry.trigger = Some(event.trigger.clone());
                }
            }
            HostEvent::FormRemoved { event, .. } => {
                self.forms.remove(&event.form_id);
            }
            HostEvent::Other { .. } => {}
        }
    }

    /// Syncs from the server with the held cursor and applies the answer; returns
    /// whether it was a reset. A cursor the server no longer reads (`invalid_cursor`)
    /// is dropped and the whole state fetched instead.
    pub async fn sync_from(&mut self, device: &DeviceClient) -> Result<bool, ClientError> {
        let answer = match device.sync(self.cursor.as_deref()).await {
            Err(error) if error.code() == Some("invalid_cursor") => device.sync(None).await?,
            other => other?,
        };
        let reset = answer.reset;
        self.apply_sync(answer);
        Ok(reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FetchedData, FormDataEvent, FormRemoved, SyncApp, SyncForm};
    use serde_json::json;

    fn form(id: &str, data: Value, at: &str) -> SyncForm {
        SyncForm {
            form_id: id.into(),
            provider: "p".into(),
            form_name: "w".into(),
            data,
            updated_at: Some(at.into()),
            trigger: Some("add".into()),
        }
    }

    #[test]
    fn reset_replaces_and_deltas_merge() {
        let mut state = HostState::default();
        state.forms.insert("stale".into(), FormEntry::default());
        state.apply_sync(SyncResponse {
            cursor: "c1".into(),
            reset: true,
            apps: vec![SyncApp {
                appid: "wx1".into(),
                fetched_data: "a".into(),
                time_stamp: 10,
            }],
            forms: vec![
                form("f1", json!(1), "2026-11-27T10:00:00Z"),
                form("f2", Value::Null, "2026-11-27T10:00:00Z"),
            ],
            removed_forms: vec![],
        });
        assert_eq!(state.cursor.as_deref(), Some("c1"));
        assert_eq!(state.forms.keys().collect::<Vec<_>>(), ["f1", "f2"]);
        state.apply_sync(SyncResponse {
            cursor: "c2".into(),
            reset: false,
            apps: vec![],
            forms: vec![form("f1", json!(2), "2026-11-27T11:00:00Z")],
            removed_forms: vec!["f2".into()],
        });
        assert_eq!(state.cursor.as_deref(), Some("c2"));
        assert_eq!(state.forms["f1"].data, json!(2));
        assert!(!state.forms.contains_key("f2"));
        assert_eq!(state.apps["wx1"].fetched_data, "a");
    }

    #[test]
    fn events_update_but_never_go_back_in_time() {
        let mut state = HostState::default();
        let fetched = |s: &str, t: i64| HostEvent::FetchedData {
            id: "1".into(),
            event: FetchedData {
                appid: "wx1".into(),
                fetched_data: s.into(),
                time_stamp: t,
            },
        };
        state.apply_event(&fetched("new", 20));
        state.apply_event(&fetched("old", 10));
        assert_eq!(state.apps["wx1"].fetched_data, "new");
        let data = |v: i64, at: &str| HostEvent::FormData {
            id: "2".into(),
            event: FormDataEvent {
                form_id: "f1".into(),
                data: json!(v),
                updated_at: Some(at.into()),
                trigger: "next".into(),
            },
        };
        state.apply_event(&data(2, "2026-11-27T11:00:00Z"));
        state.apply_event(&data(1, "2026-11-27T10:00:00Z"));
        assert_eq!(state.forms["f1"].data, json!(2));
        state.apply_event(&HostEvent::FormRemoved {
            id: "3".into(),
            event: FormRemoved {
                form_id: "f1".into(),
            },
        });
        assert!(state.forms.is_empty());
    }
}
