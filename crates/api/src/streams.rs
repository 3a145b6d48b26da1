//! The open SSE streams of this process, by principal: capped per key, ended when their
//! key is rotated, and ended all at once when the service shuts down.

use refreshd_engine::KeyKind;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The default cap on open streams per key (`--max-streams-per-key`): enough for a host
/// that reconnects before its old connection is noticed gone, far below what would let
/// one device hold the server's connections.
pub const DEFAULT_MAX_STREAMS_PER_KEY: usize = 8;

struct OpenStream {
    id: u64,
    key_hash: Vec<u8>,
    end: CancellationToken,
}

pub struct StreamRegistry {
    /// Cancelled at shutdown; every stream's token is a child of it.
    shutdown: CancellationToken,
    max_per_key: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<(KeyKind, String), Vec<OpenStream>>>,
}

/// Refused: the key already has `max_per_key` open streams.
#[derive(Debug)]
pub struct TooManyStreams {
    pub max_per_key: usize,
}

/// A registered stream; dropping it (when the stream ends) unregisters it.
pub struct StreamTicket {
    registry: Arc<StreamRegistry>,
    principal: (KeyKind, String),
    id: u64,
    /// Cancelled when the stream must end: its key was rotated, or shutdown.
    pub end: CancellationToken,
}

impl StreamRegistry {
    pub fn new(max_per_key: usize) -> Arc<Self> {
        Arc::new(StreamRegistry {
            shutdown: CancellationToken::new(),
            max_per_key: max_per_key.max(1),
            next_id: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Registers a stream opened by `principal` with the key whose hash is `key_hash`.
    pub fn open(
        self: &Arc<Self>,
        kind: KeyKind,
        principal: &str,
        key_hash: &[u8],
    ) -> Result<StreamTicket, TooManyStreams> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let streams = open.entry((kind, principal.to_string())).or_default();
        if streams.iter().filter(|s| s.key_hash == key_hash).count() >= self.max_per_key {
            return Err(TooManyStreams {
                max_per_key: self.max_per_key,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let end = self.shutdown.child_token();
        streams.push(OpenStream {
            id,
            key_hash: key_hash.to_vec(),
            end: end.clone(),
        });
        Ok(StreamTicket {
            registry: self.clone(),
            principal: (kind, principal.to_string()),
            id,
            end,
        })
    }

    /// Ends the streams `principal` opened with any key other than `live_key_hash` (its
    /// key was just rotated); returns how many.
    pub fn end_streams_of(&self, kind: KeyKind, principal: &str, live_key_hash: &[u8]) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(streams) = open.get(&(kind, principal.to_string())) else {
            return 0;
        };
        let mut ended = 0;
        for stream in streams.iter().filter(|s| s.key_hash != live_key_hash) {
            stream.end.cancel();
            ended += 1;
        }
        ended
    }

    /// Ends every stream, now and any opened later (shutdown).
    pub fn end_all(&self) {
        self.shutdown.cancel();
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let mut open = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(streams) = open.get_mut(&self.principal) {
            streams.retain(|s| s.id != self.id);
            if streams.is_empty() {
                open.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_key_and_ended_by_rotation_and_shutdown() {
        let registry = StreamRegistry::new(2);
        let a = registry.open(KeyKind::Device, "d1", b"old").unwrap();
        let b = registry.open(KeyKind::Device, "d1", b"old").unwrap();
        assert!(registry.open(KeyKind::Device, "d1", b"old").is_err());
        let other = registry.open(KeyKind::Device, "d2", b"other").unwrap();
        drop(b);
        let b = registry.open(KeyKind::Device, "d1", b"old").unwrap();
        let fresh = registry.open(KeyKind::Device, "d1", b"new").unwrap();
        assert_eq!(registry.end_streams_of(KeyKind::Device, "d1", b"new"), 2);
        assert!(a.end.is_cancelled() && b.end.is_cancelled());
        assert!(!fresh.end.is_cancelled() && !other.end.is_cancelled());
        registry.end_all();
        assert!(fresh.end.is_cancelled() && other.end.is_cancelled());
        let late = registry.open(KeyKind::Device, "d3", b"k").unwrap();
        assert!(
            late.end.is_cancelled(),
            "a stream opened during shutdown ends at once"
        );
        drop((a, b, fresh, other, late));
        assert!(registry.is_empty());
    }
}
