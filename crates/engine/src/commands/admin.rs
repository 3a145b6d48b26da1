//! The operator's commands: apps, providers, devices, market intervals, keys and
//! signing secrets. A principal is written in one transaction with its first key, so a
//! failure leaves neither and a retry does not meet a keyless principal.

use super::{check_id, time_zone, Caller};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::secrets::{hash_key, new_api_key, random_bytes};
use crate::wire::fetched_data_event;
use refreshd_rules::periodic::{App, SubjectType};
use refreshd_rules::{Device, Instant};
use refreshd_store::{DeviceRecord, KeyKind, KeyRecord, NewProvider, SigningSecrets, StoreError};

/// Longest overlap of a rotated signing secret with its successor (7 days).
pub const MAX_SECRET_OVERLAP_MINUTES: i64 = 7 * 24 * 60;
/// How long a rotated signing secret keeps signing when the operator does not say.
pub const DEFAULT_SECRET_OVERLAP_MINUTES: i64 = 24 * 60;

pub struct AdminCommands<'a> {
    pub(crate) engine: &'a Engine,
}

/// A new app, its developer key and the secret its periodic fetches are signed with
/// (both shown once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedApp {
    pub appid: String,
    pub developer_key: String,
    pub signing_secret: String,
}

/// What an operator gives for a new widget provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProviderInput {
    pub provider: String,
    pub refresh_url: String,
    pub system_app: bool,
    pub api_version: i64,
}

/// A new provider, its key and its signing secret (both shown once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedProvider {
    pub provider: String,
    pub provider_key: String,
    pub signing_secret: String,
}

/// A new device and its key (shown once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedDevice {
    pub device_id: String,
    pub device_key: String,
}

/// A provider's market interval as now set (F10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketUpdateDuration {
    pub provider: String,
    /// Half-hours; `None` when cleared.
    pub update_duration: Option<i64>,
}

/// A provider's or an app's new signing secret, and until when the one it replaces
/// still signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotatedSecret {
    /// The provider's name or the app's appid.
    pub owner: String,
    pub signing_secret: String,
    pub previous_valid_until: Instant,
}

/// A principal's new key; the old one answers 401 from now on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotatedKey {
    pub kind: KeyKind,
    pub id: String,
    pub key: String,
    /// The new key's hash: what was opened with any other key of the principal must end.
    pub key_hash: Vec<u8>,
}

impl AdminCommands<'_> {
    /// A new key of `kind` for `principal`, and the record that stores its hash.
    fn new_key(&self, kind: KeyKind, principal: &str) -> (String, KeyRecord) {
        let key = new_api_key(kind);
        let record = KeyRecord {
            key_hash: hash_key(&key),
            kind,
            principal: principal.to_string(),
            created_at: self.engine.now().as_millis(),
        };
        (key, record)
    }

    /// An app with its developer key (P1–P3 start with periodic fetch unset).
    pub async fn create_app(
        &self,
        caller: &Caller,
        appid: &str,
        subject: &str,
    ) -> Result<CreatedApp, EngineError> {
        caller.require(KeyKind::Operator)?;
        check_id("appid", appid)?;
        let subject = match subject {
            "individual" => SubjectType::Individual,
            "organization" => SubjectType::Organization,
            _ => {
                return Err(EngineError::invalid_request(
                    "subject must be \"individual\" or \"organization\"",
                ))
            }
        };
        let app = App::new(appid.to_string(), subject, None)?;
        let text = serde_json::to_string(&app).map_err(EngineError::corrupt)?;
        let (key, record) = self.new_key(KeyKind::App, appid);
        let signing_secret = hex::encode(random_bytes::<32>());
        let signing = SigningSecrets {
            current: self.engine.seal_signing_secret(&signing_secret),
            previous: None,
            previous_until: None,
        };
        match self
            .engine
            .store
            .insert_app(appid, &text, Some(&signing), Some(&record))
            .await
        {
            Err(StoreError::Exists) => return Err(EngineError::Exists("an app with this appid")),
            other => other?,
        }
        Ok(CreatedApp {
            appid: appid.to_string(),
            developer_key: key,
            signing_secret,
        })
    }

    /// A widget provider with its key and signing secret; its `refresh_url` must be
    /// a destination refreshd may reach.
    pub async fn create_provider(
        &self,
        caller: &Caller,
        input: NewProviderInput,
    ) -> Result<CreatedProvider, EngineError> {
        caller.require(KeyKind::Operator)?;
        check_id("provider", &input.provider)?;
        self.engine
            .check_destination("$.refresh_url", &input.refresh_url)?;
        if !(0..=1_000_000).contains(&input.api_version) {
            return Err(EngineError::invalid_request(
                "api_version must be 0 or more",
            ));
        }
        let signing_secret = hex::encode(random_bytes::<32>());
        let provider = NewProvider {
            provider: input.provider.clone(),
            refresh_url: input.refresh_url,
            system_app: input.system_app,
            api_version: input.api_version,
            signing_secret: self.engine.seal_signing_secret(&signing_secret),
        };
        let (key, record) = self.new_key(KeyKind::Provider, &input.provider);
        match self
            .engine
            .store
            .insert_provider(&provider, Some(&record))
            .await
        {
            Err(StoreError::Exists) => {
                return Err(EngineError::Exists("a provider with this name"))
            }
            other => {
                other?;
            }
        }
        Ok(CreatedProvider {
            provider: input.provider,
            provider_key: key,
            signing_secret,
        })
    }

    /// F10: the app market's interval for a provider's forms (`None` clears it); every
    /// form of the provider is planned again.
    pub async fn set_market_update_duration(
        &self,
        caller: &Caller,
        provider: &str,
        update_duration: Option<i64>,
    ) -> Result<MarketUpdateDuration, EngineError> {
        caller.require(KeyKind::Operator)?;
        if update_duration.is_some_and(|d| !(1..=336).contains(&d)) {
            return Err(EngineError::invalid(
                "invalid_update_duration",
                "update_duration must be 1 to 336 (half-hours), or null",
            ));
        }
        let mut record = self
            .engine
            .store
            .get_provider(provider)
            .await?
            .ok_or(EngineError::NotFound("not_found"))?;
        record.market_update_duration = update_duration;
        self.engine.store.update_provider(&record).await?;
        self.engine.replan_provider(&record).await?;
        Ok(MarketUpdateDuration {
            provider: provider.to_string(),
            update_duration,
        })
    }

    /// A device of `user_id` in `zone` (T1), with its key.
    pub async fn create_device(
        &self,
        caller: &Caller,
        device_id: &str,
        user_id: &str,
        zone: &str,
    ) -> Result<CreatedDevice, EngineError> {
        caller.require(KeyKind::Operator)?;
        check_id("device_id", device_id)?;
        check_id("user_id", user_id)?;
        let (key, key_record) = self.new_key(KeyKind::Device, device_id);
        let zone = time_zone(zone)?;
        let engine = self.engine;
        let device = Device::new(zone, engine.settings.device, engine.now());
        let record = DeviceRecord {
            device_id: device_id.to_string(),
            user_id: user_id.to_string(),
            state: serde_json::to_string(&device).map_err(EngineError::corrupt)?,
            version: 1,
        };
        let next_wake_at = device.next_wakeup().map(Instant::as_millis);
        // The user's data already cached reaches the new device like any later fetch:
        // as its first `fetched_data` events.
        let now = engine.now();
        let events: Vec<_> = engine
            .store
            .pairs_of_user(user_id)
            .await?
            .into_iter()
            .filter_map(|pair| {
                let (data, at) = (pair.cached_data?, pair.cached_at?);
                Some(fetched_data_event(device_id, &pair.appid, &data, at, now))
            })
            .collect();
        match engine
            .store
            .insert_device(&record, next_wake_at, Some(&key_record), &events)
            .await
        {
            Err(StoreError::Exists) => {
                return Err(EngineError::Exists("a device with this device_id"))
            }
            other => other?,
        }
        Ok(CreatedDevice {
            device_id: device_id.to_string(),
            device_key: key,
        })
    }

    /// Issues a new signing secret for `provider`. The secret it replaces keeps signing
    /// beside it for `overlap_minutes` (a day unless given), so the provider can switch
    /// without rejecting a delivery: until then deliveries carry a `v1=` signature under
    /// each secret, the new one first.
    pub async fn rotate_signing_secret(
        &self,
        caller: &Caller,
        provider: &str,
        overlap_minutes: Option<i64>,
    ) -> Result<RotatedSecret, EngineError> {
        caller.require(KeyKind::Operator)?;
        let until = self.overlap_until(overlap_minutes)?;
        let store = &self.engine.store;
        let mut record = store
            .get_provider(provider)
            .await?
            .ok_or(EngineError::NotFound("not_found"))?;
        let secret = hex::encode(random_bytes::<32>());
        let sealed = self.engine.seal_signing_secret(&secret);
        record.previous_signing_secret =
            Some(std::mem::replace(&mut record.signing_secret, sealed));
        record.previous_secret_until = Some(until.as_millis());
        store.update_provider(&record).await?;
        Ok(RotatedSecret {
            owner: provider.to_string(),
            signing_secret: secret,
            previous_valid_until: until,
        })
    }

    /// Issues a new secret for an app's signed periodic fetches, with the same overlap
    /// as a provider's. An app created before apps had a secret gets its first one
    /// (nothing to overlap).
    pub async fn rotate_app_signing_secret(
        &self,
        caller: &Caller,
        appid: &str,
        overlap_minutes: Option<i64>,
    ) -> Result<RotatedSecret, EngineError> {
        caller.require(KeyKind::Operator)?;
        let until = self.overlap_until(overlap_minutes)?;
        let store = &self.engine.store;
        let previous = match store.app_signing(appid).await {
            Err(StoreError::NotFound) => return Err(EngineError::NotFound("app_not_found")),
            other => other?,
        };
        let secret = hex::encode(random_bytes::<32>());
        let signing = SigningSecrets {
            current: self.engine.seal_signing_secret(&secret),
            previous_until: previous.as_ref().map(|_| until.as_millis()),
            previous: previous.map(|p| p.current),
        };
        match store.set_app_signing(appid, &signing).await {
            Err(StoreError::NotFound) => return Err(EngineError::NotFound("app_not_found")),
            other => other?,
        }
        Ok(RotatedSecret {
            owner: appid.to_string(),
            signing_secret: secret,
            previous_valid_until: until,
        })
    }

    /// When a rotated secret stops signing: `overlap_minutes` from now (a day unless
    /// given, at most a week).
    fn overlap_until(&self, overlap_minutes: Option<i64>) -> Result<Instant, EngineError> {
        let minutes = overlap_minutes.unwrap_or(DEFAULT_SECRET_OVERLAP_MINUTES);
        if !(0..=MAX_SECRET_OVERLAP_MINUTES).contains(&minutes) {
            return Err(EngineError::invalid_request(format!(
                "overlap_minutes must be 0 to {MAX_SECRET_OVERLAP_MINUTES}"
            )));
        }
        Ok(self.engine.now().plus_millis(minutes * 60_000))
    }

    /// Issues a new key for the app, provider or device `id`; the old key answers 401
    /// from now on.
    pub async fn rotate_key(
        &self,
        caller: &Caller,
        kind: KeyKind,
        id: &str,
    ) -> Result<RotatedKey, EngineError> {
        caller.require(KeyKind::Operator)?;
        let store = &self.engine.store;
        let exists = match kind {
            KeyKind::App => store.get_app(id).await?.is_some(),
            KeyKind::Provider => store.get_provider(id).await?.is_some(),
            KeyKind::Device => store.get_device(id).await?.is_some(),
            // The operator's own key lives in the data directory, not behind the API.
            KeyKind::Operator => false,
        };
        if !exists {
            return Err(EngineError::NotFound("not_found"));
        }
        let (key, record) = self.new_key(kind, id);
        let rotated = store
            .rotate_key(&record, self.engine.now().as_millis())
            .await;
        // Whatever the outcome: a failed commit may still have been written.
        self.engine.read_cache.keys_changed();
        rotated?;
        Ok(RotatedKey {
            kind,
            id: id.to_string(),
            key,
            key_hash: record.key_hash,
        })
    }
}
