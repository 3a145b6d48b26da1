//! refreshd's HTTP API (api.md): the only place that knows the wire format.
//!
//! [`router`] builds every route; each is registered through [`Routes::add`], which also
//! records it in the OpenAPI document served at `/v1/openapi.json`, so the document
//! cannot miss a route. Requests pass [`auth::authenticate`] (key checked before the body
//! is read, per-key rate limit) and reach the handlers in [`admin`], [`apps`], [`forms`],
//! [`device`] and [`events`]. A handler reads its request, calls one engine command
//! with the authenticated caller, and writes the view the command answers as JSON; the
//! API never reads the store or the fetcher itself. Errors use one shape ([`error`]).

pub mod admin;
pub mod apps;
pub mod auth;
pub mod console;
pub mod device;
pub mod error;
pub mod events;
pub mod extract;
pub mod forms;
pub mod json_errors;
pub mod lifecycle;
pub mod openapi;
pub mod request_limits;
pub mod stats;
pub mod streams;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::{middleware, Json, Router};
use governor::DefaultKeyedRateLimiter;
use openapi::{Op, Routes};
use refreshd_engine::{Engine, KeyKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use streams::StreamRegistry;
use tower_http::compression::CompressionLayer;

/// Largest request body (api.md: 413 above 1 MiB).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub rate_limiter: Arc<DefaultKeyedRateLimiter<Vec<u8>>>,
    pub streams: Arc<StreamRegistry>,
    pub callers: Arc<Callers>,
    openapi: Arc<Value>,
}

/// Who may call which route, as declared in `Routes::add`; the authentication
/// middleware enforces it before the route's extractors read anything.
#[derive(Default)]
pub struct Callers {
    by_path: HashMap<String, Vec<(Method, &'static [KeyKind])>>,
}

impl Callers {
    fn add(&mut self, path: &str, method: Method, kinds: &'static [KeyKind]) {
        self.by_path
            .entry(path.to_string())
            .or_default()
            .push((method, kinds));
    }

    /// The kinds of key that may call `method` on the route `path` (as registered, with
    /// `{param}` placeholders); HEAD is answered by the GET route.
    pub fn kinds(&self, method: &Method, path: &str) -> Option<&'static [KeyKind]> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.by_path
            .get(path)?
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, kinds)| *kinds)
    }
}

const OPERATOR: &[KeyKind] = &[KeyKind::Operator];
const DEVELOPER: &[KeyKind] = &[KeyKind::App];
const PROVIDER: &[KeyKind] = &[KeyKind::Provider];
const DEVICE: &[KeyKind] = &[KeyKind::Device];
const DEVICE_OR_PROVIDER: &[KeyKind] = &[KeyKind::Device, KeyKind::Provider];
const OPERATOR_OR_PROVIDER: &[KeyKind] = &[KeyKind::Operator, KeyKind::Provider];
const OPERATOR_OR_DEVELOPER: &[KeyKind] = &[KeyKind::Operator, KeyKind::App];

/// Settings of the API that operators choose.
#[derive(Clone, Copy, Debug)]
pub struct ApiSettings {
    /// Requests per second per key.
    pub rate_limit_per_second: u32,
    /// Burst per key.
    pub rate_limit_burst: u32,
    /// Open SSE streams per key (429 `too_many_streams` past it).
    pub max_streams_per_key: usize,
    /// How long a request's body may take to arrive (408 `request_timeout` past it).
    pub body_read_timeout: std::time::Duration,
    /// Requests one key may have in progress (429 `rate_limited` past it).
    pub max_requests_in_flight_per_key: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            rate_limit_per_second: 50,
            rate_limit_burst: 100,
            max_streams_per_key: streams::DEFAULT_MAX_STREAMS_PER_KEY,
            body_read_timeout: std::time::Duration::from_secs(15),
            max_requests_in_flight_per_key: request_limits::DEFAULT_MAX_REQUESTS_IN_FLIGHT_PER_KEY,
        }
    }
}

/// What the server around the router needs: ending the SSE streams at shutdown.
#[derive(Clone)]
pub struct ApiHandle {
    streams: Arc<StreamRegistry>,
}

impl ApiHandle {
    /// Ends every open SSE stream (and any opened from now on), so that a graceful
    /// shutdown does not wait for clients that would listen forever.
    pub fn end_streams(&self) {
        self.streams.end_all();
    }

    /// How many SSE streams are open in this process.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}

/// The route table: every authenticated route of the API, with what it reads, what it
/// answers and who may call it. The router and the OpenAPI document are both built
/// from it.
fn routes() -> Routes {
    use Method as M;
    Routes::new()
        .add(
            Op::new(M::POST, "/v1/admin/apps", OPERATOR, "Create an app; returns its developer key and fetch-signing secret (shown once)")
                .describe("Every periodic fetch of the app carries `refreshd-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 keyed with signing_secret over \"<t>.<path and query>\">`, the path and query exactly as sent.")
                .body::<admin::NewAppBody>()
                .answers::<admin::CreatedAppView>(201)
                .errors(409, &["already_exists"]),
            post(admin::create_app),
        )
        .add(
            Op::new(M::POST, "/v1/admin/providers", OPERATOR, "Create a widget provider; returns its key and signing secret (shown once)")
                .describe("`refresh_url` must be a destination refreshd may reach: a public https:// address, or an address in a range the operator trusts (--allow-destination).")
                .body::<admin::NewProviderBody>()
                .answers::<admin::CreatedProviderView>(201)
                .errors(400, &["invalid_url"])
                .errors(409, &["already_exists"]),
            post(admin::create_provider),
        )
        .add(
            Op::new(M::PUT, "/v1/admin/providers/{provider}/market-update-duration", OPERATOR, "Set or clear the app market's interval (F10)")
                .describe("In half-hours; `null` clears it. Every form of the provider is planned again (F23a).")
                .body::<admin::MarketBody>()
                .answers::<admin::MarketView>(200)
                .errors(400, &["invalid_update_duration"])
                .errors(404, &["not_found"]),
            put(admin::set_market_update_duration),
        )
        .add(
            Op::new(M::POST, "/v1/admin/devices", OPERATOR, "Create a device of a user; returns its key (shown once)")
                .body::<admin::NewDeviceBody>()
                .answers::<admin::CreatedDeviceView>(201)
                .errors(400, &["invalid_zone"])
                .errors(409, &["already_exists"]),
            post(admin::create_device),
        )
        .add(
            Op::new(M::POST, "/v1/admin/providers/{provider}/rotate-signing-secret", OPERATOR, "Issue a new signing secret; the old one keeps signing beside it for the overlap")
                .describe("Until `previous_valid_until`, deliveries carry a `v1=` signature under each secret, the new one first.")
                .body::<admin::RotateSecretBody>()
                .answers::<admin::RotatedSecretView>(200)
                .errors(404, &["not_found"]),
            post(admin::rotate_signing_secret),
        )
        .add(
            Op::new(M::POST, "/v1/admin/apps/{appid}/rotate-signing-secret", OPERATOR, "Issue a new secret for the app's signed periodic fetches; the old one keeps signing beside it for the overlap")
                .describe("Until `previous_valid_until`, fetches carry a `v1=` signature under each secret, the new one first. An app created before apps had a secret gets its first one.")
                .body::<admin::RotateSecretBody>()
                .answers::<admin::RotatedAppSecretView>(200)
                .errors(404, &["app_not_found"]),
            post(admin::rotate_app_signing_secret),
        )
        .add(
            Op::new(M::GET, "/v1/admin/apps", OPERATOR, "List apps, a page at a time")
                .query::<lifecycle::PageQuery>()
                .answers::<lifecycle::PageView<lifecycle::AppItem>>(200),
            get(lifecycle::list_apps),
        )
        .add(
            Op::new(M::DELETE, "/v1/admin/apps/{appid}", OPERATOR, "Delete an app: its key, every user's token, cache and fetch log")
                .empty(204)
                .errors(404, &["app_not_found"]),
            delete(lifecycle::delete_app),
        )
        .add(
            Op::new(M::GET, "/v1/admin/providers", OPERATOR, "List widget providers, a page at a time")
                .query::<lifecycle::PageQuery>()
                .answers::<lifecycle::PageView<lifecycle::ProviderItem>>(200),
            get(lifecycle::list_providers),
        )
        .add(
            Op::new(M::DELETE, "/v1/admin/providers/{provider}", OPERATOR, "Delete a provider")
                .describe("Its forms leave their devices first (each host hears `form_removed`); its key and deliveries go. 409 `busy` if forms keep being added meanwhile.")
                .empty(204)
                .errors(404, &["not_found"])
                .errors(409, &["busy"]),
            delete(lifecycle::delete_provider),
        )
        .add(
            Op::new(M::GET, "/v1/providers/{provider}/form-definitions", OPERATOR_OR_PROVIDER, "A provider's form definitions and how many forms of each are placed")
                .answers::<lifecycle::DefinitionsView>(200)
                .errors(404, &["not_found"]),
            get(lifecycle::form_definitions),
        )
        .add(
            Op::new(M::GET, "/v1/admin/devices", OPERATOR, "List devices, of one user with user_id, a page at a time")
                .query::<lifecycle::DevicePageQuery>()
                .answers::<lifecycle::PageView<lifecycle::DeviceItem>>(200),
            get(lifecycle::list_devices),
        )
        .add(
            Op::new(M::DELETE, "/v1/admin/devices/{device_id}", OPERATOR, "Delete a device")
                .describe("Its key stops and its open event streams end at once; its forms, their data, deliveries and events go.")
                .empty(204)
                .errors(404, &["not_found"]),
            delete(lifecycle::delete_device),
        )
        .add(
            Op::new(M::GET, "/v1/admin/devices/{device_id}/forms", OPERATOR, "The forms placed on a device")
                .answers::<lifecycle::FormsView>(200)
                .errors(404, &["not_found"]),
            get(lifecycle::device_forms),
        )
        .add(
            Op::new(M::GET, "/v1/device/forms", DEVICE, "The forms placed on this device")
                .answers::<lifecycle::FormsView>(200),
            get(lifecycle::own_forms),
        )
        .add(
            Op::new(M::DELETE, "/v1/admin/users/{user_id}", OPERATOR, "Erase a user")
                .describe("Every device and form of the user, every token, cache and fetch-log row, and their place among rollout testers. On the embedded store the file keeps no byte of them; a 503 means the rows are gone but the write-ahead log could not be emptied yet (erase again). 404 when nothing of the user is stored.")
                .answers::<lifecycle::ErasedUserView>(200)
                .errors(404, &["not_found"]),
            delete(lifecycle::erase_user),
        )
        .add(
            Op::new(M::GET, "/v1/admin/cloud-envs", OPERATOR, "Cloud environments: those set through the API, and the configuration file's")
                .answers::<lifecycle::CloudEnvsView>(200),
            get(lifecycle::list_cloud_envs),
        )
        .add(
            Op::new(M::PUT, "/v1/admin/cloud-envs/{env}", OPERATOR, "Set a cloud environment's base URL")
                .describe("Overrides the configuration file's environment of that name; every node uses it from the next fetch. The URL must be one refreshd may reach (internal addresses need --allow-destination).")
                .body::<lifecycle::CloudEnvBody>()
                .answers::<lifecycle::CloudEnvView>(200)
                .errors(400, &["invalid_url"]),
            put(lifecycle::put_cloud_env),
        )
        .add(
            Op::new(M::DELETE, "/v1/admin/cloud-envs/{env}", OPERATOR, "Remove a cloud environment set through the API")
                .describe("The configuration file's environment of that name, if any, applies again.")
                .empty(204)
                .errors(404, &["not_found"]),
            delete(lifecycle::delete_cloud_env),
        )
        .add(
            Op::new(M::POST, "/v1/admin/{collection}/{id}/rotate-key", OPERATOR, "Issue a new key; the old one answers 401 from now on")
                .describe("Event streams opened with the old key end.")
                .answers::<admin::RotatedKeyView>(200)
                .errors(404, &["not_found"]),
            post(admin::rotate_key),
        )
        .add(
            Op::new(M::PUT, "/v1/apps/{appid}/periodic-fetch", DEVELOPER, "Replace the periodic-fetch setting (P1-P3)")
                .describe("Idempotent. Lowering the gray percentage, or `gray: null` while a rollout is active, is `gray_cannot_retract`; `percent: 100` promotes the gray URL to the source. URLs must be destinations refreshd may reach; a cloud environment must be configured on this platform.")
                .body::<apps::PeriodicBody>()
                .answers::<apps::SettingView>(200)
                .errors(400, &["invalid_url", "source_not_allowed", "gray_url_not_set"])
                .errors(404, &["app_not_found"])
                .errors(409, &["gray_cannot_retract"]),
            put(apps::put_periodic),
        )
        .add(
            Op::new(M::POST, "/v1/apps/{appid}/periodic-fetch/fetch-now", DEVELOPER, "Fetch a user's data now and answer when it is recorded (P11)")
                .body::<apps::UserBody>()
                .answers::<apps::FetchNowView>(200)
                .errors(404, &["app_not_found"])
                .errors(409, &["periodic_disabled", "token_not_set"]),
            post(apps::fetch_now),
        )
        .add(
            Op::new(M::GET, "/v1/apps/{appid}/periodic-fetch/log", DEVELOPER, "The last 100 fetch attempts for a user, newest first")
                .query::<apps::UserQuery>()
                .answers::<apps::FetchLogView>(200)
                .errors(404, &["app_not_found"]),
            get(apps::fetch_log),
        )
        .add(
            Op::new(M::GET, "/v1/apps/{appid}/periodic-fetch/explain", DEVELOPER, "Why a user's data was or was not fetched, and when it will be")
                .query::<apps::UserQuery>()
                .answers::<apps::FetchExplanationView>(200)
                .errors(404, &["app_not_found"]),
            get(apps::explain_fetch),
        )
        .add(
            Op::new(M::POST, "/v1/apps/{appid}/launch", DEVICE, "The device's user launched the app (P6)")
                .empty(204)
                .errors(404, &["app_not_found"]),
            post(apps::launch),
        )
        .add(
            Op::new(M::PUT, "/v1/apps/{appid}/background-fetch/token", DEVICE, "Set the user's token (P5)")
                .body::<apps::TokenBody>()
                .empty(204)
                .errors(400, &["invalid_token"])
                .errors(404, &["app_not_found"]),
            put(apps::set_token),
        )
        .add(
            Op::new(M::GET, "/v1/apps/{appid}/background-fetch", DEVICE, "Read the user's cached data (P15)")
                .describe("Never waits for a fetch in progress.")
                .query::<apps::FetchTypeQuery>()
                .answers::<apps::CachedView>(200)
                .errors(404, &["app_not_found", "no_cached_data"]),
            get(apps::read_cached),
        )
        .add(
            Op::new(M::PUT, "/v1/providers/{provider}/form-config", PROVIDER, "Upload form_config.json (F1-F5, F23a)")
                .describe("The whole document is applied or none of it: 400 `invalid_config` lists every error in `details`. Placed forms whose definition is gone are removed (F23a). With `dry_run=true` the answer says what would happen and nothing is applied.")
                .query::<forms::FormConfigQuery>()
                .document(forms::form_config_schema())
                .answers::<forms::ConfigAppliedView>(200)
                .errors(400, &["invalid_config"])
                .errors(404, &["not_found"]),
            put(forms::put_form_config),
        )
        .add(
            Op::new(M::POST, "/v1/forms", DEVICE, "Add a form (F19, F22, F23)")
                .describe("The provider is asked for the form's initial data once (trigger `add`, never counted).")
                .body::<forms::NewFormBody>()
                .answers::<forms::AddedFormView>(201)
                .errors(404, &["form_definition_not_found"])
                .errors(409, &["form_exists", "too_many_forms"]),
            post(forms::add_form),
        )
        .add(
            Op::new(M::DELETE, "/v1/forms/{form_id}", DEVICE, "Remove a form (F22)")
                .empty(204)
                .errors(404, &["form_not_found"]),
            delete(forms::remove_form),
        )
        .add(
            Op::new(M::POST, "/v1/forms/{form_id}/visibility", DEVICE, "Show or hide a form (F19-F21)")
                .body::<forms::VisibilityBody>()
                .empty(204)
                .errors(404, &["form_not_found"]),
            post(forms::set_visibility),
        )
        .add(
            Op::new(M::GET, "/v1/forms/{form_id}/data", DEVICE, "The form's latest data")
                .answers::<forms::FormDataResponse>(200)
                .errors(404, &["form_not_found", "no_form_data"]),
            get(forms::get_data).put(forms::put_data),
        )
        .also(
            Op::new(M::PUT, "/v1/forms/{form_id}/data", PROVIDER, "Update the form's data")
                .describe("Any JSON of at most 262,144 bytes. Delivered to the host at once, or when the form is shown if it is hidden.")
                .document(json!({"description": "any JSON document"}))
                .empty(200)
                .errors(404, &["form_not_found"]),
        )
        .add(
            Op::new(M::POST, "/v1/forms/{form_id}/next-refresh", PROVIDER, "Ask for a refresh in N minutes (F13, F14)")
                .describe("1 to 10,080 minutes for a system app's forms, 5 to 10,080 for others (`invalid_next_refresh`).")
                .body::<forms::NextRefreshBody>()
                .answers::<forms::NextRefreshView>(200)
                .errors(400, &["invalid_next_refresh"])
                .errors(404, &["form_not_found"])
                .errors(409, &["proxy_enabled"])
                .errors(429, &["quota_exhausted"]),
            post(forms::set_next_refresh),
        )
        .add(
            Op::new(M::GET, "/v1/forms/{form_id}/explain", DEVICE_OR_PROVIDER, "Why a form did or did not refresh, and what is next")
                .answers::<forms::FormExplanationView>(200)
                .errors(404, &["form_not_found"]),
            get(forms::explain_form),
        )
        .add(
            Op::new(M::POST, "/v1/device/network", DEVICE, "Report going offline, or an outage that ended (F16)")
                .describe("A device reports an outage after it ends, so `since` says when it went offline; it may not be in the future or before the previous report (`invalid_request`).")
                .body::<device::NetworkBody>()
                .empty(204),
            post(device::report_network),
        )
        .add(
            Op::new(M::PUT, "/v1/device/zone", DEVICE, "Change the device's time zone (F23a)")
                .body::<device::ZoneBody>()
                .empty(204)
                .errors(400, &["invalid_zone"]),
            put(device::set_zone),
        )
        .add(
            Op::new(M::GET, "/v1/apps/{appid}/stats", OPERATOR_OR_DEVELOPER, "An app's fetches over the last 24 hours, by hour")
                .describe("Outcomes, success rate and latency percentiles (upper bounds of the buckets holding them) per hour and in total, and the users eligible and due now. Read from counters kept beside the fetch log, so the cost does not grow with the number of users.")
                .answers::<stats::AppStatsView>(200)
                .errors(404, &["app_not_found"]),
            get(stats::app_stats),
        )
        .add(
            Op::new(M::GET, "/v1/providers/{provider}/stats", OPERATOR_OR_PROVIDER, "A provider's deliveries and decided refreshes over the last 24 hours, by hour")
                .describe("Delivery attempts by outcome with latency percentiles, and refreshes decided by trigger, per hour and in total.")
                .answers::<stats::ProviderStatsView>(200)
                .errors(404, &["not_found"]),
            get(stats::provider_stats),
        )
        .add(
            Op::new(M::GET, "/v1/device/sync", DEVICE, "Everything that changed for this device and its user after a cursor, in one answer")
                .describe("Cached periodic data per app, form data, removed forms, and the next cursor. Without a cursor, or with one older than the seven days events are kept, the whole state with `reset: true`. Compressed (gzip, deflate) when Accept-Encoding asks.")
                .query::<device::SyncQuery>()
                .answers::<device::SyncView>(200)
                .errors(400, &["invalid_cursor"]),
            get(device::sync).layer(CompressionLayer::new()),
        )
        .add(
            Op::new(M::GET, "/v1/events", DEVICE, "Server-Sent Events for this device, replayable with Last-Event-ID")
                .parameter(json!({
                    "name": "Last-Event-ID", "in": "header", "required": false,
                    "schema": {"type": "string"},
                    "description": "the id of the last event received: the stream replays what came after it"
                }))
                .event_stream(events::STREAM_DESCRIPTION, events::event_schema)
                .errors(429, &["too_many_streams"]),
            get(events::events),
        )
}

/// Builds the API router over `engine`, with a per-key rate limit and the other
/// settings at their defaults.
pub fn router(engine: Arc<Engine>, per_second: u32, burst: u32) -> Router {
    build(
        engine,
        ApiSettings {
            rate_limit_per_second: per_second,
            rate_limit_burst: burst,
            ..ApiSettings::default()
        },
    )
    .0
}

/// Builds the API router over `engine`, and the handle that ends its SSE streams.
pub fn build(engine: Arc<Engine>, api_settings: ApiSettings) -> (Router, ApiHandle) {
    let (authed_router, callers, openapi) = routes().finish_document();
    let streams = StreamRegistry::new(api_settings.max_streams_per_key);
    let state = AppState {
        engine,
        rate_limiter: Arc::new(auth::rate_limiter(
            api_settings.rate_limit_per_second,
            api_settings.rate_limit_burst,
        )),
        streams: streams.clone(),
        callers: Arc::new(callers),
        openapi: Arc::new(openapi),
    };
    let limits = request_limits::RequestLimits::new(
        api_settings.body_read_timeout,
        api_settings.max_requests_in_flight_per_key,
    );
    // Layers run outermost first: the key, then the key's share and the body's
    // deadline, then the handler.
    let authed = authed_router
        .route_layer(middleware::from_fn_with_state(
            limits,
            request_limits::limit_request,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi_document))
        // The web console's page and assets (no key: the page asks for one).
        .merge(console::routes())
        .merge(authed)
        .fallback(|| async { error::ApiError::not_found("not_found") })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        // Outermost: whatever answered an error without the API's JSON shape (axum's
        // own rejections, an empty 405) is given it.
        .layer(middleware::from_fn(json_errors::json_error_shape))
        .with_state(state);
    (router, ApiHandle { streams })
}

/// What `/healthz` answers.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Health {
    /// `ok`, or `store unreachable`.
    status: &'static str,
    /// The service's clock (present when healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<openapi::DateTime>")]
    now: Option<String>,
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.engine.access().health().await {
        // `now` is the engine's clock (warped under --time-warp), for operators and tests.
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                now: refreshd_engine::wire::rfc3339(state.engine.now()),
            }),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "store unreachable",
                now: None,
            }),
        ),
    }
}

async fn openapi_document(State(state): State<AppState>) -> Json<Value> {
    Json((*state.openapi).clone())
}
