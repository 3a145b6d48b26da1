//! Who is calling: API keys are looked up by their hash, the hash compared in constant
//! time, and the kind named by the key's prefix must be the kind stored with it.

use super::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::secrets::{hash_key, kind_of_key};
use subtle::ConstantTimeEq;

pub struct AccessCommands<'a> {
    pub(crate) engine: &'a Engine,
}

impl AccessCommands<'_> {
    /// The caller a key stands for; `None` for a key that is malformed, unknown,
    /// rotated away, or of another kind than its prefix says.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Caller>, EngineError> {
        let Some(claimed_kind) = kind_of_key(key) else {
            return Ok(None);
        };
        let key_hash = hash_key(key);
        let cache = &self.engine.read_cache;
        if let Some(caller) = cache.caller(&key_hash) {
            return Ok((caller.kind == claimed_kind).then_some(caller));
        }
        // Read before the store is: a rotation committed meanwhile invalidates the entry.
        let epochs = cache.key_epochs();
        let Some(record) = self.engine.store.find_key(&key_hash).await? else {
            return Ok(None);
        };
        let same_hash: bool = record.key_hash.ct_eq(&key_hash).into();
        if !same_hash {
            return Ok(None);
        }
        let caller = Caller {
            kind: record.kind,
            id: record.principal,
            key_hash,
        };
        cache.put_caller(&caller, epochs);
        Ok((caller.kind == claimed_kind).then_some(caller))
    }

    /// Whether the caller's key still works (it is rotated away otherwise, perhaps
    /// through another node of a fleet).
    pub async fn key_is_current(&self, caller: &Caller) -> Result<bool, EngineError> {
        Ok(self
            .engine
            .store
            .find_key(&caller.key_hash)
            .await?
            .is_some())
    }

    /// Whether the store takes writes (`/healthz`).
    pub async fn health(&self) -> Result<(), EngineError> {
        Ok(self.engine.store.ping().await?)
    }
}
