//! What an operator lists and deletes: apps, providers, devices and their forms, and a
//! user erased on request. Listings are pages in id order with an opaque cursor (the
//! last id listed); deletions cascade in the store's transactions, and what a deleted
//! device held on its rules state (forms of a deleted provider) is removed through the
//! device like any other removal, so its host hears `form_removed`.

use super::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::wire::form_removed_event;
use refreshd_rules::{Device, DeviceInput, FormId};
use refreshd_store::{FormRecord, KeyKind, StoreError, SubjectKey};
use std::collections::BTreeMap;

/// Items listed per page unless the caller asks for fewer.
pub const DEFAULT_PAGE: i64 = 100;
/// The most items a page may list.
pub const MAX_PAGE: i64 = 1000;

pub struct LifecycleCommands<'a> {
    pub(crate) engine: &'a Engine,
}

/// One page of a listing; `next_cursor` is `None` on the last page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSummary {
    pub appid: String,
    /// "individual" or "organization".
    pub subject: String,
    pub periodic_enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSummary {
    pub provider: String,
    pub refresh_url: String,
    pub system_app: bool,
    pub api_version: i64,
    pub market_update_duration: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSummary {
    pub device_id: String,
    pub user_id: String,
    pub zone: String,
    pub forms: usize,
}

/// A form definition of a provider and how many of its forms are placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionCount {
    pub form_name: String,
    pub placed: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedForm {
    pub form_id: String,
    pub provider: String,
    pub form_name: String,
    pub visible: bool,
}

/// What erasing a user removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasedUser {
    pub user_id: String,
    pub devices: Vec<String>,
    pub apps: Vec<String>,
}

fn page_size(limit: Option<i64>) -> Result<i64, EngineError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(EngineError::invalid_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        ))),
    }
}

/// Turns `limit + 1` rows into a page: the extra row only says another page exists.
fn paged<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(id) } else { None };
    Page { items, next_cursor }
}

impl LifecycleCommands<'_> {
    pub async fn list_apps(
        &self,
        caller: &Caller,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<AppSummary>, EngineError> {
        caller.require(KeyKind::Operator)?;
        let limit = page_size(limit)?;
        let rows = self.engine.store.list_apps(cursor, limit + 1).await?;
        let mut items = Vec::with_capacity(rows.len());
        for (appid, text) in rows {
            let app: refreshd_rules::periodic::App =
                serde_json::from_str(&text).map_err(EngineError::corrupt)?;
            items.push(AppSummary {
                appid,
                subject: match app.subject() {
                    refreshd_rules::periodic::SubjectType::Individual => "individual",
                    refreshd_rules::periodic::SubjectType::Organization => "organization",
                }
                .to_string(),
                periodic_enabled: app.periodic_enabled(),
            });
        }
        Ok(paged(items, limit, |a| a.appid.clone()))
    }

    pub async fn list_providers(
        &self,
        caller: &Caller,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<ProviderSummary>, EngineError> {
        caller.require(KeyKind::Operator)?;
        let limit = page_size(limit)?;
        let rows = self.engine.store.list_providers(cursor, limit + 1).await?;
        let items = rows
            .into_iter()
            .map(|p| ProviderSummary {
                provider: p.provider,
                refresh_url: p.refresh_url,
                system_app: p.system_app,
                api_version: p.api_version,
                market_update_duration: p.market_update_duration,
            })
            .collect();
        Ok(paged(items, limit, |p| p.provider.clone()))
    }

    /// Devices, of one user when `user_id` is given.
    pub async fn list_devices(
        &self,
        caller: &Caller,
        user_id: Option<&str>,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<DeviceSummary>, EngineError> {
        caller.require(KeyKind::Operator)?;
        let limit = page_size(limit)?;
        let rows = self
            .engine
            .store
            .list_devices(user_id, cursor, limit + 1)
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for record in rows {
            let device: Device =
                serde_json::from_str(&record.state).map_err(EngineError::corrupt)?;
            items.push(DeviceSummary {
                device_id: record.device_id,
                user_id: record.user_id,
                zone: device.zone().iana_name().unwrap_or("UTC").to_string(),
                forms: device.forms().len(),
            });
        }
        Ok(paged(items, limit, |d| d.device_id.clone()))
    }

    /// A provider's form definitions and how many forms of each are placed: the
    /// operator's view of any provider, or a provider's of its own.
    pub async fn definitions(
        &self,
        caller: &Caller,
        provider: &str,
    ) -> Result<Vec<DefinitionCount>, EngineError> {
        if caller.kind == KeyKind::Provider && caller.id != provider {
            return Err(EngineError::NotFound("not_found"));
        }
        if !matches!(caller.kind, KeyKind::Operator | KeyKind::Provider) {
            caller.require(KeyKind::Operator)?;
        }
        let engine = self.engine;
        let record = engine
            .store
            .get_provider(provider)
            .await?
            .ok_or(EngineError::NotFound("not_found"))?;
        let placed: BTreeMap<String, i64> = engine
            .store
            .placed_form_counts(provider)
            .await?
            .into_iter()
            .collect();
        let definitions = engine.definitions(&record).await?;
        let mut counts: Vec<DefinitionCount> = definitions
            .iter()
            .map(|d| DefinitionCount {
                form_name: d.name.clone(),
                placed: placed.get(&d.name).copied().unwrap_or(0),
            })
            .collect();
        counts.sort_by(|a, b| a.form_name.cmp(&b.form_name));
        Ok(counts)
    }

    /// The forms placed on a device: the operator's view of any device, or a device's
    /// of itself (`device_id` `None`).
    pub async fn device_forms(
        &self,
        caller: &Caller,
        device_id: Option<&str>,
    ) -> Result<Vec<PlacedForm>, EngineError> {
        let device_id = match device_id {
            Some(id) => {
                caller.require(KeyKind::Operator)?;
                id
            }
            None => caller.require(KeyKind::Device)?,
        };
        let store = &self.engine.store;
        let record = store
            .get_device(device_id)
            .await?
            .ok_or(EngineError::NotFound("not_found"))?;
        let device: Device = serde_json::from_str(&record.state).map_err(EngineError::corrupt)?;
        Ok(store
            .forms_of_device(device_id)
            .await?
            .into_iter()
            .map(|form| {
                let id = FormId(form.form_num as u64);
                let visible = device
                    .forms()
                    .iter()
                    .find(|f| f.id() == id)
                    .is_some_and(|f| f.is_visible());
                PlacedForm {
                    form_id: form.form_id,
                    provider: form.provider,
                    form_name: form.form_name,
                    visible,
                }
            })
            .collect())
    }

    /// An app with its keys, every user's pair, token, cache and fetch log, and the
    /// `fetched_data` events it caused. Its developer key answers 401 from now on.
    pub async fn delete_app(&self, caller: &Caller, appid: &str) -> Result<(), EngineError> {
        caller.require(KeyKind::Operator)?;
        let deleted = self.engine.store.delete_app(appid).await;
        self.engine.read_cache.keys_changed();
        self.engine.read_cache.app_changed(appid);
        // The app's pairs leave the store's due-index with their rows.
        match deleted {
            Err(StoreError::NotFound) => Err(EngineError::NotFound("app_not_found")),
            other => other.map(drop).map_err(Into::into),
        }
    }

    /// A provider: its forms are first removed from their devices (each host hears
    /// `form_removed`), then the provider, its keys and its deliveries go.
    pub async fn delete_provider(
        &self,
        caller: &Caller,
        provider: &str,
    ) -> Result<(), EngineError> {
        caller.require(KeyKind::Operator)?;
        let engine = self.engine;
        if engine.store.get_provider(provider).await?.is_none() {
            return Err(EngineError::NotFound("not_found"));
        }
        // A form added meanwhile keeps the provider (the store refuses the delete while
        // forms are placed): remove again, a few times, before giving up.
        for _ in 0..3 {
            let forms = engine.store.forms_of_provider(provider).await?;
            let mut by_device: BTreeMap<String, Vec<FormRecord>> = BTreeMap::new();
            for form in forms {
                by_device
                    .entry(form.device_id.clone())
                    .or_default()
                    .push(form);
            }
            for (device_id, forms) in by_device {
                let removed = engine
                    .with_device(&device_id, |device, now, out, extras| {
                        for form in &forms {
                            let id = FormId(form.form_num as u64);
                            let _ = device.apply(now, DeviceInput::RemoveForm(id), out);
                            extras.remove_forms.push(form.form_id.clone());
                            extras.events.push(form_removed_event(form, now));
                        }
                        Ok(())
                    })
                    .await;
                match removed {
                    // The device went meanwhile, with its forms.
                    Err(EngineError::NotFound(_)) | Ok(()) => {}
                    Err(other) => return Err(other),
                }
            }
            let deleted = engine.store.delete_provider(provider).await;
            engine.read_cache.keys_changed();
            match deleted {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Err(EngineError::NotFound("not_found")),
                Err(other) => return Err(other.into()),
            }
        }
        Err(EngineError::Busy(
            "forms of this provider keep being added; try again",
        ))
    }

    /// A device with its keys, forms, their data, deliveries and events.
    pub async fn delete_device(&self, caller: &Caller, device_id: &str) -> Result<(), EngineError> {
        caller.require(KeyKind::Operator)?;
        let engine = self.engine;
        {
            let _guard = engine.lock(SubjectKey::Device(device_id.to_string())).await;
            let deleted = engine.store.delete_device(device_id).await;
            engine.read_cache.keys_changed();
            engine.read_cache.devices_changed();
            match deleted {
                Err(StoreError::NotFound) => return Err(EngineError::NotFound("not_found")),
                other => other?,
            }
        }
        Ok(())
    }

    /// Every trace of a user: devices (as `delete_device`), tokens, caches, fetch logs,
    /// and their place in any rollout's testers. Answers what went; a user with nothing
    /// stored is `not_found`.
    pub async fn erase_user(
        &self,
        caller: &Caller,
        user_id: &str,
    ) -> Result<ErasedUser, EngineError> {
        caller.require(KeyKind::Operator)?;
        let engine = self.engine;
        let erased = engine.store.erase_user(user_id).await;
        engine.read_cache.keys_changed();
        engine.read_cache.devices_changed();
        let (devices, apps) = erased?;
        for appid in &apps {
            engine.read_cache.pair_changed(appid, user_id);
        }
        let forgotten_as_tester = self.forget_tester(user_id).await?;
        if devices.is_empty() && apps.is_empty() && !forgotten_as_tester {
            return Err(EngineError::NotFound("not_found"));
        }
        Ok(ErasedUser {
            user_id: user_id.to_string(),
            devices,
            apps,
        })
    }

    /// Removes `user_id` from every app's rollout testers; true when it was in one.
    async fn forget_tester(&self, user_id: &str) -> Result<bool, EngineError> {
        let store = &self.engine.store;
        let mut cursor: Option<String> = None;
        let mut forgotten = false;
        loop {
            let rows = store.list_apps(cursor.as_deref(), MAX_PAGE).await?;
            let Some((last, _)) = rows.last() else {
                return Ok(forgotten);
            };
            cursor = Some(last.clone());
            for (appid, text) in rows {
                let mut app: refreshd_rules::periodic::App =
                    serde_json::from_str(&text).map_err(EngineError::corrupt)?;
                if app.forget_tester(user_id) {
                    let text = serde_json::to_string(&app).map_err(EngineError::corrupt)?;
                    let put = store.put_app(&appid, &text).await;
                    self.engine.read_cache.app_changed(&appid);
                    put?;
                    forgotten = true;
                }
            }
        }
    }
}

/// A cloud environment and where it is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEnv {
    pub env: String,
    pub base_url: String,
    /// "api" (managed here, overriding the file) or "file" (the configuration file).
    pub source: &'static str,
}

impl LifecycleCommands<'_> {
    /// Every cloud environment: those set through the API, then the configuration
    /// file's that no API one overrides.
    pub async fn list_cloud_envs(&self, caller: &Caller) -> Result<Vec<CloudEnv>, EngineError> {
        caller.require(KeyKind::Operator)?;
        let engine = self.engine;
        let managed = engine.store.list_cloud_envs().await?;
        let mut envs: BTreeMap<String, CloudEnv> = engine
            .settings
            .cloud_envs
            .iter()
            .map(|(env, base_url)| {
                let entry = CloudEnv {
                    env: env.clone(),
                    base_url: base_url.clone(),
                    source: "file",
                };
                (env.clone(), entry)
            })
            .collect();
        for (env, base_url) in managed {
            envs.insert(
                env.clone(),
                CloudEnv {
                    env,
                    base_url,
                    source: "api",
                },
            );
        }
        Ok(envs.into_values().collect())
    }

    /// Sets a cloud environment's base URL (P2's env name; an absolute http(s) URL
    /// without query or fragment that refreshd may reach). Takes effect for the next
    /// fetch on every node.
    pub async fn put_cloud_env(
        &self,
        caller: &Caller,
        env: &str,
        base_url: &str,
    ) -> Result<CloudEnv, EngineError> {
        caller.require(KeyKind::Operator)?;
        refreshd_rules::periodic::check_cloud_name("env", env)?;
        let parsed = reqwest::Url::parse(base_url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.query().is_none()
                && u.fragment().is_none()
        });
        if parsed.is_none() {
            return Err(EngineError::invalid(
                "invalid_url",
                "base_url must be an absolute http(s) URL with a host and no query or fragment",
            ));
        }
        self.engine.check_destination("$.base_url", base_url)?;
        self.engine.store.put_cloud_env(env, base_url).await?;
        Ok(CloudEnv {
            env: env.to_string(),
            base_url: base_url.to_string(),
            source: "api",
        })
    }

    /// Removes a cloud environment set through the API (the file's, if it has one of
    /// that name, applies again).
    pub async fn delete_cloud_env(&self, caller: &Caller, env: &str) -> Result<(), EngineError> {
        caller.require(KeyKind::Operator)?;
        match self.engine.store.delete_cloud_env(env).await {
            Err(StoreError::NotFound) => Err(EngineError::NotFound("not_found")),
            other => Ok(other?),
        }
    }
}
