//! Periodic fetch (P1–P15): the developer's setting, fetch-now, log and explanation;
//! the device's launch, token and cached-data read. A developer key sees only its own
//! app; a device key acts for the user who owns the device.

use super::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::run::FetchReport;
use crate::wire;
use bytes::Bytes;
use refreshd_rules::periodic::{
    check_cloud_name, validate_token, App, Gray, PeriodicSetting, Source,
};
use refreshd_rules::Instant;
use refreshd_store::KeyKind;
use std::sync::Arc;

/// Attempts a fetch log answers with, newest first.
const FETCH_LOG_LENGTH: i64 = 100;

pub struct AppCommands<'a> {
    pub(crate) engine: &'a Engine,
}

/// Where a developer's data comes from, as given (P2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceInput {
    Url(String),
    Cloud { env: String, function: String },
}

/// A gray release as given (P3); the percent is checked by the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayInput {
    pub url: String,
    pub percent: i64,
    pub testers: Vec<String>,
}

/// A whole periodic-fetch setting as given (P1–P3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodicInput {
    pub enabled: bool,
    pub source: SourceInput,
    pub gray: Option<GrayInput>,
}

/// The app's periodic-fetch setting as stored; `None` when never set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodicView {
    pub setting: Option<PeriodicSetting>,
}

/// One fetch attempt of the log; never the token or the full URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchAttempt {
    pub at: Instant,
    pub gray: bool,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub bytes: i64,
    pub duration_ms: i64,
}

/// Where a user stands in the app's gray release (P3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayStatus {
    pub percent: u8,
    pub tester: bool,
    pub bucket: u64,
}

/// The last fetch's outcome, with what a developer can do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOutcomeNote {
    pub at: Instant,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub hint: Option<&'static str>,
}

/// Why a user's data was or was not fetched, and when it will be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchExplanation {
    pub enabled: bool,
    pub last_launch: Option<Instant>,
    pub active_until: Option<Instant>,
    pub token_set: bool,
    /// Why the user is not eligible now (P7); `None` when eligible.
    pub ineligible_reason: Option<&'static str>,
    pub gray: Option<GrayStatus>,
    pub last_outcome: Option<FetchOutcomeNote>,
    pub consecutive_failures: u32,
    pub next_due: Option<Instant>,
    pub why: String,
}

/// The user's cached data (P15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedData {
    pub fetched_data: String,
    /// When the data was fetched (ms since the epoch), as the developer's server sent it.
    pub time_stamp: i64,
}

impl Engine {
    /// P6: `user_id` launched the app. A subject input without a caller, for drivers
    /// that play users directly (benchmarks); the API goes through
    /// [`AppCommands::launch`].
    pub async fn launch(&self, appid: &str, user_id: &str) -> Result<(), EngineError> {
        let app = self.app(appid).await?;
        self.with_pair(&app, user_id, |pair, _, now| {
            pair.launch(now);
            Ok(())
        })
        .await
    }

    /// P5: `user_id`'s token, sealed at rest. A subject input without a caller, like
    /// [`Engine::launch`].
    pub async fn set_token(
        &self,
        appid: &str,
        user_id: &str,
        token: &str,
    ) -> Result<(), EngineError> {
        validate_token(token)?;
        let app = self.app(appid).await?;
        let sealed = self.sealer.seal(token);
        self.with_pair(&app, user_id, |pair, record, _| {
            pair.token_set();
            record.token_sealed = Some(sealed.clone());
            Ok(())
        })
        .await
    }

    /// P3, P10: after an app's setting changed, every pair's next fetch is planned again.
    pub async fn replan_app(&self, app: &App) -> Result<(), EngineError> {
        for record in self.store.all_pairs_of_app(app.appid()).await? {
            self.with_pair(app, &record.user_id, |_, _, _| Ok(()))
                .await?;
        }
        Ok(())
    }
}

impl AppCommands<'_> {
    /// The app of the calling developer key; any other app is "not found".
    async fn own_app(&self, caller: &Caller, appid: &str) -> Result<App, EngineError> {
        if caller.require(KeyKind::App)? != appid {
            return Err(EngineError::NotFound("app_not_found"));
        }
        self.engine.app(appid).await
    }

    /// The user behind the calling device key.
    async fn device_user(&self, caller: &Caller) -> Result<String, EngineError> {
        let device_id = caller.require(KeyKind::Device)?;
        let device = self.engine.store.get_device(device_id).await?;
        device.map(|d| d.user_id).ok_or(EngineError::Unauthorized)
    }

    /// Replaces the whole periodic-fetch setting (P1–P3); idempotent. Every URL must be
    /// a destination refreshd may reach, every cloud environment one the platform has.
    pub async fn put_periodic(
        &self,
        caller: &Caller,
        appid: &str,
        input: PeriodicInput,
    ) -> Result<PeriodicView, EngineError> {
        let engine = self.engine;
        let mut app = self.own_app(caller, appid).await?;
        let source = match input.source {
            SourceInput::Url(url) => {
                engine.check_destination("$.source.url", &url)?;
                Source::Url(url)
            }
            SourceInput::Cloud { env, function } => {
                // P2's name pattern first, so a bad name is reported as such whatever
                // environments this platform configures.
                check_cloud_name("env", &env)?;
                check_cloud_name("function", &function)?;
                if engine.cloud_base_url(&env).await?.is_none() {
                    return Err(EngineError::invalid(
                        "invalid_url",
                        format!("cloud environment \"{env}\" is not configured on this platform"),
                    ));
                }
                Source::Cloud { env, function }
            }
        };
        let gray = match input.gray {
            None => None,
            Some(gray) => {
                engine.check_destination("$.gray.url", &gray.url)?;
                let percent = u8::try_from(gray.percent)
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| EngineError::invalid_request("gray.percent must be 0 to 100"))?;
                Some(Gray {
                    url: gray.url,
                    percent,
                    testers: gray.testers,
                })
            }
        };
        app.put_periodic(PeriodicSetting {
            enabled: input.enabled,
            source,
            gray,
        })?;
        let text = serde_json::to_string(&app).map_err(EngineError::corrupt)?;
        let put = engine.store.put_app(appid, &text).await;
        engine.read_cache.app_changed(appid);
        put?;
        engine.replan_app(&app).await?;
        Ok(PeriodicView {
            setting: app.periodic().cloned(),
        })
    }

    /// P11: fetches `user_id`'s data now and answers when the fetch is recorded.
    pub async fn fetch_now(
        &self,
        caller: &Caller,
        appid: &str,
        user_id: &str,
    ) -> Result<FetchReport, EngineError> {
        let app = self.own_app(caller, appid).await?;
        let (order, pair) = self
            .engine
            .with_pair_committed(&app, user_id, None, |pair, _, _| {
                Ok(pair.fetch_now(&app, user_id)?)
            })
            .await?;
        let app = self.engine.with_signing(app).await?;
        self.engine
            .execute_fetch(crate::run::DueFetch {
                appid: appid.to_string(),
                user_id: user_id.to_string(),
                order,
                due_at: None,
                app: Some(std::sync::Arc::new(app)),
                pair: Some(pair),
            })
            .await
    }

    /// The last 100 fetch attempts for `user_id`, newest first.
    pub async fn fetch_log(
        &self,
        caller: &Caller,
        appid: &str,
        user_id: &str,
    ) -> Result<Vec<FetchAttempt>, EngineError> {
        self.own_app(caller, appid).await?;
        let entries = self
            .engine
            .store
            .fetch_log(appid, user_id, FETCH_LOG_LENGTH)
            .await?;
        Ok(entries
            .into_iter()
            .map(|e| FetchAttempt {
                at: Instant::from_millis(e.at),
                gray: e.gray,
                outcome: e.outcome,
                http_status: e.http_status,
                bytes: e.bytes,
                duration_ms: e.duration_ms,
            })
            .collect())
    }

    /// Why `user_id`'s data was or was not fetched, and when it will be.
    pub async fn explain_fetch(
        &self,
        caller: &Caller,
        appid: &str,
        user_id: &str,
    ) -> Result<FetchExplanation, EngineError> {
        let app = self.own_app(caller, appid).await?;
        let store = &self.engine.store;
        let now = self.engine.now();
        let pair: refreshd_rules::periodic::FetchPair = match store.get_pair(appid, user_id).await?
        {
            Some(r) => serde_json::from_str(&r.state).map_err(EngineError::corrupt)?,
            None => Default::default(),
        };
        let last = store.fetch_log(appid, user_id, 1).await?.into_iter().next();
        // The same facts as `refreshd explain --app`, from the rules' one explainer.
        let why = refreshd_rules::explain::explain_pair(&app, &pair, user_id, now);
        Ok(FetchExplanation {
            enabled: why.enabled,
            last_launch: why.last_launch,
            active_until: why.active_until,
            token_set: why.token_set,
            ineligible_reason: why.ineligible.map(|i| i.code()),
            gray: why.gray.map(|g| GrayStatus {
                percent: g.percent,
                tester: g.tester,
                bucket: g.bucket,
            }),
            last_outcome: last.map(|e| FetchOutcomeNote {
                at: Instant::from_millis(e.at),
                hint: outcome_hint(&e.outcome),
                outcome: e.outcome,
                http_status: e.http_status,
            }),
            consecutive_failures: why.consecutive_failures,
            next_due: why.next_due,
            why: why.why.to_string(),
        })
    }

    /// P6: the user of the calling device launched the app.
    pub async fn launch(&self, caller: &Caller, appid: &str) -> Result<(), EngineError> {
        let user = self.device_user(caller).await?;
        self.engine.launch(appid, &user).await
    }

    /// P5: the token of the calling device's user.
    pub async fn set_token(
        &self,
        caller: &Caller,
        appid: &str,
        token: &str,
    ) -> Result<(), EngineError> {
        let user = self.device_user(caller).await?;
        self.engine.set_token(appid, &user, token).await
    }

    /// P15 as the API answers it: the whole JSON body of the calling device's user's
    /// cached data (`wire::cached_data_body`), from the read cache when it holds it,
    /// else read from the store, encoded once and kept there. Errors as `read_cached`.
    pub async fn read_cached_body(
        &self,
        caller: &Caller,
        appid: &str,
        fetch_type: Option<&str>,
    ) -> Result<Bytes, EngineError> {
        let cache = &self.engine.read_cache;
        let device_id = caller.require(KeyKind::Device)?;
        let user = match cache.device_user(device_id) {
            Some(user) => user,
            None => {
                let epochs = cache.device_epochs();
                let user = self.device_user(caller).await?;
                cache.put_device_user(device_id, &user, epochs);
                Arc::from(user)
            }
        };
        if fetch_type.is_some_and(|t| t != "periodic") {
            return Err(EngineError::invalid_request(
                "fetch_type must be \"periodic\"",
            ));
        }
        let body = match cache.body(appid, &user) {
            Some(body) => body,
            None => {
                let epochs = cache.body_epochs(appid, &user);
                self.engine.app(appid).await?;
                let pair = self.engine.store.get_pair(appid, &user).await?;
                let body = pair
                    .and_then(|p| Some((p.cached_data?, p.cached_at?)))
                    .map(|(data, at)| wire::cached_data_body(&data, at));
                cache.put_body(appid, &user, body.clone(), epochs);
                body
            }
        };
        body.ok_or(EngineError::NotFound("no_cached_data"))
    }

    /// P15: the calling device's user's cached data; never waits for a fetch in
    /// progress. `fetch_type`, when given, must be "periodic".
    pub async fn read_cached(
        &self,
        caller: &Caller,
        appid: &str,
        fetch_type: Option<&str>,
    ) -> Result<CachedData, EngineError> {
        let user = self.device_user(caller).await?;
        if fetch_type.is_some_and(|t| t != "periodic") {
            return Err(EngineError::invalid_request(
                "fetch_type must be \"periodic\"",
            ));
        }
        self.engine.app(appid).await?;
        let pair = self.engine.store.get_pair(appid, &user).await?;
        match pair.and_then(|p| Some((p.cached_data?, p.cached_at?))) {
            Some((fetched_data, time_stamp)) => Ok(CachedData {
                fetched_data,
                time_stamp,
            }),
            None => Err(EngineError::NotFound("no_cached_data")),
        }
    }
}

/// What a developer can do about a failed fetch, where one thing helps.
fn outcome_hint(outcome: &str) -> Option<&'static str> {
    (outcome == "blocked_address").then_some(
        "the source resolved to a private, loopback or reserved address, or to refreshd's \
         own API or metrics address: use a public https:// URL, or have the operator trust \
         the range with --allow-destination CIDR (refreshd's own addresses stay refused)",
    )
}
