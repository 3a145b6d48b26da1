//! The host events of a device (`form_data`, `form_removed`), as stored: an event
//! stream reads everything after the last id it sent, then waits for a notice that the
//! device has more, so replay and live delivery are one path.

use super::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use refreshd_store::KeyKind;
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
