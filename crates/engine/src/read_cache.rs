//! The read cache: what the hot read, `GET /v1/apps/{appid}/background-fetch`, needs,
//! kept in memory so that a read that hits does no store query at all.
//!
//! Three kinds of entries share one cache, bounded by bytes (`ReadCacheSettings::max_bytes`,
//! each entry weighed as its body and ids plus a fixed overhead) and evicted by
//! quick_cache's policy (S3-FIFO: scan resistant, so a burst of one-off reads does not
//! flush the devices that read often):
//!
//! * a key's hash → the principal it authenticates (kind and id);
//! * a device → its user;
//! * an app and a user → the whole response body of the read, encoded once when the
//!   entry is filled (`wire::cached_data_body`), or the fact that the app exists and the
//!   user has no data yet. A read that hits clones a `Bytes` (a reference count).
//!
//! **Invalidation is exact on this node and needs no lock on the read path.** Every
//! entry carries the epochs it was filled under, read *before* the store was queried;
//! a change bumps the epochs it affects *after* its commit, so an entry filled from
//! the old state (even one inserted after the bump) no longer matches and is read
//! again. Keys are one epoch (rotations and deletions are rare operator actions), as
//! are devices; pairs are striped by app and user, and apps by app id, so a fetch
//! recorded for one user leaves the other users' entries alone.
//!
//! **In a fleet** (a store shared by nodes) another node's change bumps nothing here,
//! so entries also expire `ttl` after they were filled: a rotated or deleted key, or a
//! new fetch recorded by another node, is seen here within `ttl` (1 s by default).

use crate::commands::Caller;
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use refreshd_store::KeyKind;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an operator chooses for the read cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCacheSettings {
    /// The most bytes its entries may weigh; 0 turns the cache off.
    pub max_bytes: u64,
    /// How long an entry is trusted when other nodes share the store (a single-node
    /// store sees every change and needs none).
    pub fleet_ttl: Duration,
}

/// 64 MiB.
pub const DEFAULT_READ_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// 1 s.
pub const DEFAULT_READ_CACHE_FLEET_TTL: Duration = Duration::from_secs(1);

impl Default for ReadCacheSettings {
    fn default() -> Self {
        ReadCacheSettings {
            max_bytes: DEFAULT_READ_CACHE_BYTES,
            fleet_ttl: DEFAULT_READ_CACHE_FLEET_TTL,
        }
    }
}

/// What an entry costs beyond its variable parts: the key and value enums, the
/// cache's own slot, the `Arc`/`Bytes` headers.
const ENTRY_OVERHEAD: u64 = 128;
/// Stripes of pair epochs (by app and user) and of app epochs (by app).
const PAIR_STRIPES: usize = 1024;
const APP_STRIPES: usize = 64;

#[derive(Clone, PartialEq, Eq)]
enum EntryKey {
    ApiKey([u8; 32]),
    Device(Box<str>),
    Body { appid: Box<str>, user: Box<str> },
}

// Hashed by hand so that the borrowed forms below hash the same way.
impl Hash for EntryKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            EntryKey::ApiKey(hash) => ApiKeyRef(hash).hash(state),
            EntryKey::Device(id) => DeviceRef(id).hash(state),
            EntryKey::Body { appid, user } => BodyRef { appid, user }.hash(state),
        }
    }
}

struct ApiKeyRef<'a>(&'a [u8; 32]);
struct DeviceRef<'a>(&'a str);
struct BodyRef<'a> {
    appid: &'a str,
    user: &'a str,
}

impl Hash for ApiKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(0);
        state.write(self.0);
    }
}
impl Hash for DeviceRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(1);
        self.0.hash(state);
    }
}
impl Hash for BodyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(2);
        self.appid.hash(state);
        self.user.hash(state);
    }
}
impl Equivalent<EntryKey> for ApiKeyRef<'_> {
    fn equivalent(&self, key: &EntryKey) -> bool {
        matches!(key, EntryKey::ApiKey(hash) if hash == self.0)
    }
}
impl Equivalent<EntryKey> for DeviceRef<'_> {
    fn equivalent(&self, key: &EntryKey) -> bool {
        matches!(key, EntryKey::Device(id) if **id == *self.0)
    }
}
impl Equivalent<EntryKey> for BodyRef<'_> {
    fn equivalent(&self, key: &EntryKey) -> bool {
        matches!(key, EntryKey::Body { appid, user } if **appid == *self.appid && **user == *self.user)
    }
}

#[derive(Clone)]
enum Value {
    ApiKey {
        kind: KeyKind,
        principal: Arc<str>,
        filled: Filled,
    },
    Device {
        user: Arc<str>,
        filled: Filled,
    },
    /// `None`: the app exists and the user has no cached data.
    Body {
        body: Option<Bytes>,
        filled: Filled,
    },
}

/// When and under which epochs an entry was filled.
#[derive(Clone, Copy)]
struct Filled {
    epochs: Epochs,
    at: Instant,
}

/// The epochs an entry depends on, read before the store was; compared whole.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Epochs(u64, u64);

#[derive(Clone)]
struct Weigh;

impl Weighter<EntryKey, Value> for Weigh {
    fn weight(&self, key: &EntryKey, value: &Value) -> u64 {
        let key = match key {
            EntryKey::ApiKey(_) => 32,
            EntryKey::Device(id) => id.len(),
            EntryKey::Body { appid, user } => appid.len() + user.len(),
        };
        let value = match value {
            Value::ApiKey { principal, .. } => principal.len(),
            Value::Device { user, .. } => user.len(),
            Value::Body { body, .. } => body.as_ref().map_or(0, Bytes::len),
        };
        ENTRY_OVERHEAD + (key + value) as u64
    }
}

/// The engine's read cache (see the module's documentation).
pub struct ReadCache {
    entries: Option<Cache<EntryKey, Value, Weigh>>,
    max_bytes: u64,
    /// `Some` when other nodes may change the store behind this one.
    ttl: Option<Duration>,
    keys: AtomicU64,
    devices: AtomicU64,
    pairs: Box<[AtomicU64]>,
    apps: Box<[AtomicU64]>,
    stripes: std::hash::BuildHasherDefault<std::hash::DefaultHasher>,
}

/// What the cache holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCacheUsage {
    pub bytes: u64,
    pub entries: usize,
    pub max_bytes: u64,
}

impl ReadCache {
    pub(crate) fn new(settings: &ReadCacheSettings, single_node: bool) -> Self {
        let entries = (settings.max_bytes > 0).then(|| {
            // A guess of the entry count for the initial table; it grows as needed.
            let estimated = (settings.max_bytes / 4096).clamp(64, 1 << 20) as usize;
            Cache::with_weighter(estimated, settings.max_bytes, Weigh)
        });
        let stripes = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        ReadCache {
            entries,
            max_bytes: settings.max_bytes,
            ttl: (!single_node).then_some(settings.fleet_ttl),
            keys: AtomicU64::new(0),
            devices: AtomicU64::new(0),
            pairs: stripes(PAIR_STRIPES),
            apps: stripes(APP_STRIPES),
            stripes: Default::default(),
        }
    }

    /// The cache an engine with `settings` over `store` keeps.
    pub(crate) fn for_engine(
        settings: &crate::EngineSettings,
        store: &Arc<dyn refreshd_store::Store>,
    ) -> Self {
        Self::new(&settings.read_cache, store.single_node())
    }

    pub fn usage(&self) -> ReadCacheUsage {
        ReadCacheUsage {
            bytes: self.entries.as_ref().map_or(0, Cache::weight),
            entries: self.entries.as_ref().map_or(0, Cache::len),
            max_bytes: self.max_bytes,
        }
    }

    fn fresh(&self, filled: &Filled, epochs: Epochs) -> bool {
        filled.epochs == epochs && self.ttl.is_none_or(|ttl| filled.at.elapsed() < ttl)
    }

    fn filled(epochs: Epochs) -> Filled {
        Filled {
            epochs,
            at: Instant::now(),
        }
    }

    fn insert(&self, key: EntryKey, value: Value) {
        if let Some(entries) = &self.entries {
            entries.insert(key, value);
        }
    }

    fn pair_stripe(&self, appid: &str, user: &str) -> &AtomicU64 {
        &self.pairs[self.stripes.hash_one(BodyRef { appid, user }) as usize % PAIR_STRIPES]
    }

    fn app_stripe(&self, appid: &str) -> &AtomicU64 {
        &self.apps[self.stripes.hash_one(appid) as usize % APP_STRIPES]
    }

    // ---- keys

    /// The epochs to fill a key's entry under: read before the store is.
    pub(crate) fn key_epochs(&self) -> Epochs {
        Epochs(self.keys.load(Ordering::Acquire), 0)
    }

    /// The caller a key's hash stands for, when cached and still valid.
    pub(crate) fn caller(&self, key_hash: &[u8]) -> Option<Caller> {
        let hash: &[u8; 32] = key_hash.try_into().ok()?;
        let Value::ApiKey {
            kind,
            principal,
            filled,
        } = self.entries.as_ref()?.get(&ApiKeyRef(hash))?
        else {
            return None;
        };
        self.fresh(&filled, self.key_epochs()).then(|| Caller {
            kind,
            id: principal.to_string(),
            key_hash: key_hash.to_vec(),
        })
    }

    pub(crate) fn put_caller(&self, caller: &Caller, epochs: Epochs) {
        let Ok(hash) = <[u8; 32]>::try_from(caller.key_hash.as_slice()) else {
            return;
        };
        self.insert(
            EntryKey::ApiKey(hash),
            Value::ApiKey {
                kind: caller.kind,
                principal: Arc::from(caller.id.as_str()),
                filled: Self::filled(epochs),
            },
        );
    }

    /// After a key was rotated away or a principal deleted with its keys: every cached
    /// key is looked up again.
    pub(crate) fn keys_changed(&self) {
        self.keys.fetch_add(1, Ordering::AcqRel);
    }

    // ---- devices

    pub(crate) fn device_epochs(&self) -> Epochs {
        Epochs(self.devices.load(Ordering::Acquire), 0)
    }

    /// The user of a device, when cached and still valid.
    pub(crate) fn device_user(&self, device_id: &str) -> Option<Arc<str>> {
        let Value::Device { user, filled } = self.entries.as_ref()?.get(&DeviceRef(device_id))?
        else {
            return None;
        };
        self.fresh(&filled, self.device_epochs()).then_some(user)
    }

    pub(crate) fn put_device_user(&self, device_id: &str, user: &str, epochs: Epochs) {
        self.insert(
            EntryKey::Device(device_id.into()),
            Value::Device {
                user: Arc::from(user),
                filled: Self::filled(epochs),
            },
        );
    }

    /// After devices were deleted.
    pub(crate) fn devices_changed(&self) {
        self.devices.fetch_add(1, Ordering::AcqRel);
    }

    // ---- bodies

    pub(crate) fn body_epochs(&self, appid: &str, user: &str) -> Epochs {
        Epochs(
            self.pair_stripe(appid, user).load(Ordering::Acquire),
            self.app_stripe(appid).load(Ordering::Acquire),
        )
    }

    /// The encoded answer of a user's cached data for an app: `Some(None)` when the
    /// app exists and the user has none; `None` when not cached.
    pub(crate) fn body(&self, appid: &str, user: &str) -> Option<Option<Bytes>> {
        let Value::Body { body, filled } = self.entries.as_ref()?.get(&BodyRef { appid, user })?
        else {
            return None;
        };
        self.fresh(&filled, self.body_epochs(appid, user))
            .then_some(body)
    }

    pub(crate) fn put_body(&self, appid: &str, user: &str, body: Option<Bytes>, epochs: Epochs) {
        self.insert(
            EntryKey::Body {
                appid: appid.into(),
                user: user.into(),
            },
            Value::Body {
                body,
                filled: Self::filled(epochs),
            },
        );
    }

    /// After a pair of `appid` and `user` was committed (or its commit failed, which
    /// may still have written it) or deleted.
    pub fn pair_changed(&self, appid: &str, user: &str) {
        self.pair_stripe(appid, user).fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = &self.entries {
            entries.remove(&BodyRef { appid, user });
        }
    }

    /// After an app was changed or deleted (with its pairs).
    pub(crate) fn app_changed(&self, appid: &str) {
        self.app_stripe(appid).fetch_add(1, Ordering::AcqRel);
    }
}

impl crate::Engine {
    /// How many bytes and entries the read cache holds, and its budget.
    pub fn read_cache_usage(&self) -> ReadCacheUsage {
        self.read_cache.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_bytes: u64, single_node: bool) -> ReadCache {
        ReadCache::new(
            &ReadCacheSettings {
                max_bytes,
                fleet_ttl: Duration::from_secs(3600),
            },
            single_node,
        )
    }

    #[test]
    fn an_entry_filled_before_a_change_is_not_used_after_it() {
        let cache = cache(1 << 20, true);
        let before = cache.body_epochs("wx1", "u1");
        // The change commits and bumps while the read that started before it still
        // holds the old state; its late insert must not be served.
        cache.pair_changed("wx1", "u1");
        cache.put_body("wx1", "u1", Some(Bytes::from_static(b"old")), before);
        assert_eq!(cache.body("wx1", "u1"), None);
        let after = cache.body_epochs("wx1", "u1");
        cache.put_body("wx1", "u1", Some(Bytes::from_static(b"new")), after);
        assert_eq!(
            cache.body("wx1", "u1"),
            Some(Some(Bytes::from_static(b"new")))
        );
        // Another user's entry is not touched by this user's change.
        let other = cache.body_epochs("wx1", "u2");
        cache.put_body("wx1", "u2", None, other);
        cache.pair_changed("wx1", "u1");
        assert_eq!(cache.body("wx1", "u2"), Some(None));
        // An app change drops its users' bodies.
        cache.app_changed("wx1");
        assert_eq!(cache.body("wx1", "u2"), None);
    }

    #[test]
    fn keys_and_devices_are_dropped_by_their_changes() {
        let cache = cache(1 << 20, true);
        let caller = Caller {
            kind: KeyKind::Device,
            id: "p1".into(),
            key_hash: vec![7; 32],
        };
        cache.put_caller(&caller, cache.key_epochs());
        cache.put_device_user("p1", "u1", cache.device_epochs());
        assert_eq!(cache.caller(&[7; 32]), Some(caller));
        assert_eq!(cache.device_user("p1").as_deref(), Some("u1"));
        cache.keys_changed();
        cache.devices_changed();
        assert_eq!(cache.caller(&[7; 32]), None);
        assert_eq!(cache.device_user("p1"), None);
    }

    #[test]
    fn the_bytes_stay_under_the_budget() {
        let cache = cache(1 << 20, true);
        let body = Bytes::from(vec![b'x'; 64 * 1024]);
        for user in 0..200 {
            let user = format!("u{user}");
            cache.put_body(
                "wx1",
                &user,
                Some(body.clone()),
                cache.body_epochs("wx1", &user),
            );
            assert!(cache.usage().bytes <= 1 << 20, "{:?}", cache.usage());
        }
        assert!(cache.usage().entries > 0);
    }

    #[test]
    fn a_budget_of_zero_keeps_nothing() {
        let cache = cache(0, true);
        cache.put_body("wx1", "u1", None, cache.body_epochs("wx1", "u1"));
        assert_eq!(cache.body("wx1", "u1"), None);
    }

    #[test]
    fn in_a_fleet_entries_expire() {
        let cache = ReadCache::new(
            &ReadCacheSettings {
                max_bytes: 1 << 20,
                fleet_ttl: Duration::ZERO,
            },
            false,
        );
        cache.put_device_user("p1", "u1", cache.device_epochs());
        assert_eq!(cache.device_user("p1"), None);
    }
}
