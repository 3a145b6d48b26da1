//! A Rust client for refreshd's HTTP API.
//!
//! One client per kind of key, each with the calls that kind may make:
//! [`OperatorClient`] (`rfdo_`), [`DeveloperClient`] (`rfda_`), [`ProviderClient`]
//! (`rfdp_`) and [`DeviceClient`] (`rfdd_`). Every call answers a typed value or a
//! [`ClientError`], whose `Api` variant carries the API's `{status, code, message,
//! details}`. Keys are sent as sensitive headers and never appear in an error or in
//! `Debug` output.
//!
//! A host keeps its own copy of prefetched data with [`DeviceClient::sync`] (see
//! [`HostState`]) and learns of changes at once from [`DeviceClient::events`], a
//! stream that reconnects by itself and resumes with `Last-Event-ID`.
//!
//! Servers that refreshd calls check its signatures with [`verify_signature`]
//! (deliveries to providers) and [`verify_fetch_signature`] (periodic fetches to
//! developers).

mod error;
mod http;
pub mod sse;
mod state;
mod types;
pub mod verify;

pub use error::{ClientError, ErrorDetail};
pub use http::{default_http_client, ClientConfig};
pub use sse::{EventStream, ReconnectPolicy};
pub use state::{FormEntry, HostState};
pub use types::*;
pub use verify::{
    verify_fetch_signature, verify_signature, SignatureError, DELIVERY_ID_HEADER, SIGNATURE_HEADER,
};

use http::{erased, json, Http};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

type Result<T> = std::result::Result<T, ClientError>;

macro_rules! role_client {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            http: Http,
        }

        impl $name {
            /// A client of the server at `base_url` (e.g. `http://127.0.0.1:8080`)
            /// calling with `key`.
            pub fn new(base_url: &str, key: &str) -> Result<Self> {
                Self::with_config(base_url, key, ClientConfig::default())
            }

            /// Like `new`, with a timeout or an HTTP client of your own.
            pub fn with_config(base_url: &str, key: &str, config: ClientConfig) -> Result<Self> {
                Ok($name {
                    http: Http::new(base_url, key, config)?,
                })
            }

            /// The server's base URL.
            pub fn base_url(&self) -> &str {
                self.http.base_url().as_str()
            }
        }
    };
}

role_client!(
    /// Operator calls (an `rfdo_` key): creating apps, providers and devices, and
    /// rotating their keys and secrets.
    OperatorClient
);
role_client!(
    /// App developer calls (an `rfda_` key): the periodic-fetch setting, fetch-now,
    /// the fetch log and its explanation.
    DeveloperClient
);
role_client!(
    /// Widget provider calls (an `rfdp_` key): form config, next refresh, form data.
    ProviderClient
);
role_client!(
    /// Device calls (an `rfdd_` key): apps, forms, network and zone reports, the event
    /// stream and sync.
    DeviceClient
);

impl OperatorClient {
    /// `POST /v1/admin/apps`.
    pub async fn create_app(&self, appid: &str, subject: Subject) -> Result<CreatedApp> {
        let body = NewApp {
            appid: appid.into(),
            subject,
        };
        self.http
            .call(
                "create app",
                Method::POST,
                &["v1", "admin", "apps"],
                &[],
                Some(&json(&body)),
            )
            .await
    }

    /// `POST /v1/admin/providers`.
    pub async fn create_provider(&self, provider: &NewProvider) -> Result<CreatedProvider> {
        self.http
            .call(
                "create provider",
                Method::POST,
                &["v1", "admin", "providers"],
                &[],
                Some(&json(provider)),
            )
            .await
    }

    /// `PUT /v1/admin/providers/{provider}/market-update-duration`: hours, or `None`
    /// to clear (F10).
    pub async fn set_market_update_duration(
        &self,
        provider: &str,
        update_duration: Option<i64>,
    ) -> Result<MarketUpdateDuration> {
        #[derive(Serialize)]
        struct Body {
            update_duration: Option<i64>,
        }
        self.http
            .call(
                "set market update duration",
                Method::PUT,
                &[
                    "v1",
                    "admin",
                    "providers",
                    provider,
                    "market-update-duration",
                ],
                &[],
                Some(&json(&Body { update_duration })),
            )
            .await
    }

    /// `POST /v1/admin/devices`.
    pub async fn create_device(
        &self,
        device_id: &str,
        user_id: &str,
        zone: &str,
    ) -> Result<CreatedDevice> {
        let body = NewDevice {
            device_id: device_id.into(),
            user_id: user_id.into(),
            zone: zone.into(),
        };
        self.http
            .call(
                "create device",
                Method::POST,
                &["v1", "admin", "devices"],
                &[],
                Some(&json(&body)),
            )
            .await
    }

    /// `POST /v1/admin/{apps|providers|devices}/{id}/rotate-key`: the old key answers
    /// 401 from then on.
    pub async fn rotate_key(&self, owner: KeyOwner, id: &str) -> Result<RotatedKey> {
        self.http
            .call(
                "rotate key",
                Method::POST,
                &["v1", "admin", owner.collection(), id, "rotate-key"],
                &[],
                None,
            )
            .await
    }

    /// `POST /v1/admin/providers/{provider}/rotate-signing-secret`; the old secret
    /// keeps signing beside the new one for `overlap_minutes` (server default when
    /// `None`).
    pub async fn rotate_provider_signing_secret(
        &self,
        provider: &str,
        overlap_minutes: Option<i64>,
    ) -> Result<RotatedProviderSecret> {
        self.http
            .call(
                "rotate provider signing secret",
                Method::POST,
                &[
                    "v1",
                    "admin",
                    "providers",
                    provider,
                    "rotate-signing-secret",
                ],
                &[],
                Some(&json(&OverlapBody { overlap_minutes })),
            )
            .await
    }

    /// `POST /v1/admin/apps/{appid}/rotate-signing-secret`; as for providers.
    pub async fn rotate_app_signing_secret(
        &self,
        appid: &str,
        overlap_minutes: Option<i64>,
    ) -> Result<RotatedAppSecret> {
        self.http
            .call(
                "rotate app signing secret",
                Method::POST,
                &["v1", "admin", "apps", appid, "rotate-signing-secret"],
                &[],
                Some(&json(&OverlapBody { overlap_minutes })),
            )
            .await
    }
}

#[derive(Serialize)]
struct OverlapBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    overlap_minutes: Option<i64>,
}

#[derive(Serialize)]
struct UserBody<'a> {
    user_id: &'a str,
}

impl DeveloperClient {
    /// `PUT /v1/apps/{appid}/periodic-fetch`: replaces the whole setting.
    pub async fn put_periodic_fetch(
        &self,
        appid: &str,
        setting: &PeriodicFetchSetting,
    ) -> Result<PeriodicFetch> {
        self.http
            .call(
                "put periodic fetch",
                Method::PUT,
                &["v1", "apps", appid, "periodic-fetch"],
                &[],
                Some(&json(setting)),
            )
            .await
    }

    /// `POST /v1/apps/{appid}/periodic-fetch/fetch-now`: answers once the fetch is
    /// over, whatever its outcome (P11).
    pub async fn fetch_now(&self, appid: &str, user_id: &str) -> Result<FetchNowReport> {
        self.http
            .call(
                "fetch now",
                Method::POST,
                &["v1", "apps", appid, "periodic-fetch", "fetch-now"],
                &[],
                Some(&json(&UserBody { user_id })),
            )
            .await
    }

    /// `GET /v1/apps/{appid}/periodic-fetch/log?user_id=`: the last 100 attempts,
    /// newest first.
    pub async fn fetch_log(&self, appid: &str, user_id: &str) -> Result<FetchLog> {
        self.http
            .call(
                "fetch log",
                Method::GET,
                &["v1", "apps", appid, "periodic-fetch", "log"],
                &[("user_id", user_id)],
                None,
            )
            .await
    }

    /// `GET /v1/apps/{appid}/periodic-fetch/explain?user_id=`.
    pub async fn explain_fetch(&self, appid: &str, user_id: &str) -> Result<FetchExplanation> {
        self.http
            .call(
                "explain fetch",
                Method::GET,
                &["v1", "apps", appid, "periodic-fetch", "explain"],
                &[("user_id", user_id)],
                None,
            )
            .await
    }
}

impl ProviderClient {
    /// `PUT /v1/providers/{provider}/form-config` with a `form_config.json` document;
    /// with `dry_run` nothing is applied and the answer says what would happen. A
    /// refused document is an `Api` error with code `invalid_config` and every
    /// problem in `details`.
    pub async fn put_form_config(
        &self,
        provider: &str,
        config: &Value,
        dry_run: bool,
    ) -> Result<FormConfigResult> {
        let query: &[(&str, &str)] = if dry_run { &[("dry_run", "true")] } else { &[] };
        self.http
            .call(
                "put form config",
                Method::PUT,
                &["v1", "providers", provider, "form-config"],
                query,
                Some(&json(config)),
            )
            .await
    }

    /// `POST /v1/forms/{form_id}/next-refresh` (F13, F14).
    pub async fn next_refresh(&self, form_id: &str, minutes: i64) -> Result<NextRefresh> {
        #[derive(Serialize)]
        struct Body {
            minutes: i64,
        }
        self.http
            .call(
                "next refresh",
                Method::POST,
                &["v1", "forms", form_id, "next-refresh"],
                &[],
                Some(&json(&Body { minutes })),
            )
            .await
    }

    /// `PUT /v1/forms/{form_id}/data`: the provider's own update (at most 262,144
    /// bytes of JSON), delivered to the host at once, or when shown if hidden.
    pub async fn put_form_data<T: Serialize + ?Sized>(
        &self,
        form_id: &str,
        data: &T,
    ) -> Result<()> {
        self.http
            .call_empty(
                Method::PUT,
                &["v1", "forms", form_id, "data"],
                &[],
                Some(&json(data)),
            )
            .await
    }

    /// Like [`put_form_data`](Self::put_form_data), with JSON text sent as it is.
    pub async fn put_form_data_raw(&self, form_id: &str, json_text: &[u8]) -> Result<()> {
        self.http
            .call_empty(
                Method::PUT,
                &["v1", "forms", form_id, "data"],
                &[],
                Some(&erased::Raw(json_text)),
            )
            .await
    }

    /// `GET /v1/forms/{form_id}/explain`.
    pub async fn explain_form(&self, form_id: &str) -> Result<FormExplanation> {
        explain_form(&self.http, form_id).await
    }
}

async fn explain_form(http: &Http, form_id: &str) -> Result<FormExplanation> {
    http.call(
        "explain form",
        Method::GET,
        &["v1", "forms", form_id, "explain"],
        &[],
        None,
    )
    .await
}

impl DeviceClient {
    /// `POST /v1/apps/{appid}/launch` (P6).
    pub async fn launch(&self, appid: &str) -> Result<()> {
        self.http
            .call_empty(Method::POST, &["v1", "apps", appid, "launch"], &[], None)
            .await
    }

    /// `PUT /v1/apps/{appid}/background-fetch/token` (P5).
    pub async fn set_token(&self, appid: &str, token: &str) -> Result<()> {
        #[derive(Serialize)]
        struct Body<'a> {
            token: &'a str,
        }
        self.http
            .call_empty(
                Method::PUT,
                &["v1", "apps", appid, "background-fetch", "token"],
                &[],
                Some(&json(&Body { token })),
            )
            .await
    }

    /// `GET /v1/apps/{appid}/background-fetch?fetch_type=periodic` (P15); an `Api`
    /// error with code `no_cached_data` when nothing was fetched yet.
    pub async fn cached_data(&self, appid: &str) -> Result<CachedData> {
        self.http
            .call(
                "cached data",
                Method::GET,
                &["v1", "apps", appid, "background-fetch"],
                &[("fetch_type", "periodic")],
                None,
            )
            .await
    }

    /// `POST /v1/forms` (F19, F22, F23).
    pub async fn add_form(
        &self,
        provider: &str,
        form_name: &str,
        hidden: bool,
    ) -> Result<AddedForm> {
        let body = NewForm {
            provider: provider.into(),
            form_name: form_name.into(),
            hidden,
        };
        self.http
            .call(
                "add form",
                Method::POST,
                &["v1", "forms"],
                &[],
                Some(&json(&body)),
            )
            .await
    }

    /// `DELETE /v1/forms/{form_id}`.
    pub async fn remove_form(&self, form_id: &str) -> Result<()> {
        self.http
            .call_empty(Method::DELETE, &["v1", "forms", form_id], &[], None)
            .await
    }

    /// `POST /v1/forms/{form_id}/visibility` (F20, F21).
    pub async fn set_visibility(&self, form_id: &str, visible: bool) -> Result<()> {
        #[derive(Serialize)]
        struct Body {
            visible: bool,
        }
        self.http
            .call_empty(
                Method::POST,
                &["v1", "forms", form_id, "visibility"],
                &[],
                Some(&json(&Body { visible })),
            )
            .await
    }

    /// `GET /v1/forms/{form_id}/data`; an `Api` error with code `no_form_data` while
    /// the form has none.
    pub async fn form_data(&self, form_id: &str) -> Result<FormData> {
        self.http
            .call(
                "form data",
                Method::GET,
                &["v1", "forms", form_id, "data"],
                &[],
                None,
            )
            .await
    }

    /// `GET /v1/forms/{form_id}/explain`.
    pub async fn explain_form(&self, form_id: &str) -> Result<FormExplanation> {
        explain_form(&self.http, form_id).await
    }

    /// `POST /v1/device/network` (F16): `since` (RFC 3339) says when an outage that
    /// has ended began; `None` means now.
    pub async fn report_network(&self, online: bool, since: Option<&str>) -> Result<()> {
        #[derive(Serialize)]
        struct Body<'a> {
            online: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            since: Option<&'a str>,
        }
        self.http
            .call_empty(
                Method::POST,
                &["v1", "device", "network"],
                &[],
                Some(&json(&Body { online, since })),
            )
            .await
    }

    /// `PUT /v1/device/zone` (F23a).
    pub async fn set_zone(&self, zone: &str) -> Result<()> {
        #[derive(Serialize)]
        struct Body<'a> {
            zone: &'a str,
        }
        self.http
            .call_empty(
                Method::PUT,
                &["v1", "device", "zone"],
                &[],
                Some(&json(&Body { zone })),
            )
            .await
    }

    /// `GET /v1/device/sync?cursor=`: without a cursor the whole state (`reset:
    /// true`); with the cursor of the previous answer, what changed since. A cursor
    /// the server cannot read is an `Api` error with code `invalid_cursor`.
    pub async fn sync(&self, cursor: Option<&str>) -> Result<SyncResponse> {
        let query: Vec<(&str, &str)> = cursor.map(|c| ("cursor", c)).into_iter().collect();
        self.http
            .call("sync", Method::GET, &["v1", "device", "sync"], &query, None)
            .await
    }

    /// `GET /v1/events` as a stream of typed events, resuming after `last_event_id`
    /// when given, with the default [`ReconnectPolicy`].
    pub fn events(&self, last_event_id: Option<String>) -> EventStream {
        self.events_with(last_event_id, ReconnectPolicy::default())
    }

    /// Like [`events`](Self::events), with a reconnect policy of your own.
    pub fn events_with(
        &self,
        last_event_id: Option<String>,
        policy: ReconnectPolicy,
    ) -> EventStream {
        EventStream::new(self.http.clone(), last_event_id, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_out_of_debug_output() {
        let client = DeviceClient::new("http://127.0.0.1:1/", "rfdd_very_secret_key").unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("very_secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
        let created = CreatedApp {
            appid: "wx1".into(),
            developer_key: "rfda_very_secret_key".into(),
            signing_secret: "abcdef0123".into(),
        };
        let shown = format!("{created:?}");
        assert!(
            !shown.contains("very_secret") && !shown.contains("abcdef0123"),
            "{shown}"
        );
    }

    #[test]
    fn bad_configuration_is_refused_without_echoing_the_key() {
        let error = DeviceClient::new("not a url", "rfdd_k").unwrap_err();
        assert!(matches!(error, ClientError::Config(_)));
        let error = DeviceClient::new("http://127.0.0.1:1", "rfdd_bad\nkey").unwrap_err();
        assert!(!error.to_string().contains("rfdd_bad"), "{error}");
        let error = DeviceClient::new("mailto:x@example.com", "rfdd_k").unwrap_err();
        assert!(matches!(error, ClientError::Config(_)));
    }

    #[test]
    fn periodic_setting_has_the_wire_shape() {
        let setting = PeriodicFetchSetting {
            enabled: true,
            source: Source::Url("http://127.0.0.1:9/data".into()),
            gray: None,
        };
        assert_eq!(
            serde_json::to_value(&setting).unwrap(),
            serde_json::json!({"enabled": true, "source": {"url": "http://127.0.0.1:9/data"}, "gray": null})
        );
        let cloud = Source::Cloud {
            env: "prod".into(),
            function: "getData".into(),
        };
        assert_eq!(
            serde_json::to_value(&cloud).unwrap(),
            serde_json::json!({"cloud": {"env": "prod", "function": "getData"}})
        );
    }
}

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
