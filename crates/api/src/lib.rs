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
pub mod request_limits;
pub mod streams;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{middleware, Json, Router};
use governor::DefaultKeyedRateLimiter;
use refreshd_engine::{Engine, KeyKind};
use serde_json::{json, Map, Value};
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

/// Routes with their documentation, collected together. Request bodies are described by
/// JSON Schemas derived from the very types the handlers deserialize.
struct Routes {
    router: Router<AppState>,
    paths: Map<String, Value>,
    schemas: schemars::SchemaGenerator,
    callers: Callers,
}

impl Routes {
    /// Routes `method path` to `handler`, callable with a key of one of `caller`'s kinds.
    fn add(
        mut self,
        method: &str,
        path: &str,
        caller: &'static [KeyKind],
        summary: &str,
        success: u16,
        handler: MethodRouter<AppState>,
    ) -> Self {
        let method_name: Method = method.parse().expect("route methods are valid");
        self.callers
            .by_path
            .entry(path.to_string())
            .or_default()
            .push((method_name, caller));
        let security = json!([{"bearer": []}]);
        let operation = json!({
            "summary": summary,
            "description": format!("Caller: {}.", auth::needs_message(caller).trim_start_matches("this endpoint needs ")),
            "security": security,
            "responses": {
                success.to_string(): {"description": "success"},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        let entry = self
            .paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}));
        entry[method.to_lowercase()] = operation;
        self.router = self.router.route(path, handler);
        self
    }

    /// Like `add`, for a route whose JSON request body is a `T`.
    fn add_json<T: schemars::JsonSchema>(
        mut self,
        method: &str,
        path: &str,
        caller: &'static [KeyKind],
        summary: &str,
        success: u16,
        handler: MethodRouter<AppState>,
    ) -> Self {
        let schema = serde_json::to_value(self.schemas.subschema_for::<T>()).unwrap_or(Value::Null);
        self = self.add(method, path, caller, summary, success, handler);
        self.paths[path][method.to_lowercase()]["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
        self
    }

    /// Documents another method of a path already routed with `add`.
    fn also(
        mut self,
        method: &str,
        path: &str,
        caller: &'static [KeyKind],
        summary: &str,
        success: u16,
    ) -> Self {
        let router = std::mem::take(&mut self.router);
        let documented = self.add(method, path, caller, summary, success, MethodRouter::new());
        Routes {
            router,
            ..documented
        }
    }
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
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "#/components/schemas/".into();
    let authed = Routes {
        router: Router::new(),
        paths: Map::new(),
        schemas: settings.into_generator(),
        callers: Callers::default(),
    }
    .add_json::<admin::NewAppBody>(
        "POST",
        "/v1/admin/apps",
        OPERATOR,
        "Create an app; returns its developer key",
        201,
        post(admin::create_app),
    )
    .add_json::<admin::NewProviderBody>(
        "POST",
        "/v1/admin/providers",
        OPERATOR,
        "Create a widget provider; returns its key and signing secret",
        201,
        post(admin::create_provider),
    )
    .add_json::<admin::MarketBody>(
        "PUT",
        "/v1/admin/providers/{provider}/market-update-duration",
        OPERATOR,
        "Set or clear the app market's interval (F10)",
        200,
        put(admin::set_market_update_duration),
    )
    .add_json::<admin::NewDeviceBody>(
        "POST",
        "/v1/admin/devices",
        OPERATOR,
        "Create a device; returns its key",
        201,
        post(admin::create_device),
    )
    .add_json::<admin::RotateSecretBody>(
        "POST",
        "/v1/admin/providers/{provider}/rotate-signing-secret",
        OPERATOR,
        "Issue a new signing secret; the old one keeps signing beside it for the overlap",
        200,
        post(admin::rotate_signing_secret),
    )
    .add_json::<admin::RotateSecretBody>(
        "POST",
        "/v1/admin/apps/{appid}/rotate-signing-secret",
        OPERATOR,
        "Issue a new secret for the app's signed periodic fetches; the old one keeps signing beside it for the overlap",
        200,
        post(admin::rotate_app_signing_secret),
    )
    .add(
        "POST",
        "/v1/admin/{collection}/{id}/rotate-key",
        OPERATOR,
        "Issue a new key; the old one stops working",
        200,
        post(admin::rotate_key),
    )
    .add_json::<apps::PeriodicBody>(
        "PUT",
        "/v1/apps/{appid}/periodic-fetch",
        DEVELOPER,
        "Replace the periodic-fetch setting (P1-P3)",
        200,
        put(apps::put_periodic),
    )
    .add_json::<apps::UserBody>(
        "POST",
        "/v1/apps/{appid}/periodic-fetch/fetch-now",
        DEVELOPER,
        "Fetch a user's data now (P11)",
        200,
        post(apps::fetch_now),
    )
    .add(
        "GET",
        "/v1/apps/{appid}/periodic-fetch/log",
        DEVELOPER,
        "The last 100 fetch attempts for a user",
        200,
        get(apps::fetch_log),
    )
    .add(
        "GET",
        "/v1/apps/{appid}/periodic-fetch/explain",
        DEVELOPER,
        "Why a user's data was or was not fetched",
        200,
        get(apps::explain_fetch),
    )
    .add(
        "POST",
        "/v1/apps/{appid}/launch",
        DEVICE,
        "The user launched the app (P6)",
        204,
        post(apps::launch),
    )
    .add_json::<apps::TokenBody>(
        "PUT",
        "/v1/apps/{appid}/background-fetch/token",
        DEVICE,
        "Set the user's token (P5)",
        204,
        put(apps::set_token),
    )
    .add(
        "GET",
        "/v1/apps/{appid}/background-fetch",
        DEVICE,
        "Read the user's cached data (P15)",
        200,
        get(apps::read_cached),
    )
    .add(
        "PUT",
        "/v1/providers/{provider}/form-config",
        PROVIDER,
        "Upload form_config.json (F1-F5, F23a)",
        200,
        put(forms::put_form_config),
    )
    .add_json::<forms::NewFormBody>(
        "POST",
        "/v1/forms",
        DEVICE,
        "Add a form (F19, F22, F23)",
        201,
        post(forms::add_form),
    )
    .add(
        "DELETE",
        "/v1/forms/{form_id}",
        DEVICE,
        "Remove a form (F22)",
        204,
        delete(forms::remove_form),
    )
    .add_json::<forms::VisibilityBody>(
        "POST",
        "/v1/forms/{form_id}/visibility",
        DEVICE,
        "Show or hide a form (F19-F21)",
        204,
        post(forms::set_visibility),
    )
    .add(
        "GET",
        "/v1/forms/{form_id}/data",
        DEVICE,
        "The form's latest data",
        200,
        get(forms::get_data).put(forms::put_data),
    )
    .also(
        "PUT",
        "/v1/forms/{form_id}/data",
        PROVIDER,
        "Update the form's data",
        200,
    )
    .add_json::<forms::NextRefreshBody>(
        "POST",
        "/v1/forms/{form_id}/next-refresh",
        PROVIDER,
        "Ask for a refresh in N minutes (F13, F14)",
        200,
        post(forms::set_next_refresh),
    )
    .add(
        "GET",
        "/v1/forms/{form_id}/explain",
        DEVICE_OR_PROVIDER,
        "Why a form did or did not refresh, and what is next",
        200,
        get(forms::explain_form),
    )
    .add_json::<device::NetworkBody>(
        "POST",
        "/v1/device/network",
        DEVICE,
        "Report going offline or an outage that ended (F16)",
        204,
        post(device::report_network),
    )
    .add_json::<device::ZoneBody>(
        "PUT",
        "/v1/device/zone",
        DEVICE,
        "Change the device's time zone (F23a)",
        204,
        put(device::set_zone),
    )
    .add(
        "GET",
        "/v1/device/sync",
        DEVICE,
        "Everything that changed for this device and its user after a cursor: cached periodic data per app, form data, removed forms",
        200,
        get(device::sync).layer(CompressionLayer::new()),
    )
    .add(
        "GET",
        "/v1/admin/apps",
        OPERATOR,
        "List apps, a page at a time (cursor, limit)",
        200,
        get(lifecycle::list_apps),
    )
    .add(
        "DELETE",
        "/v1/admin/apps/{appid}",
        OPERATOR,
        "Delete an app: its key, every user's token, cache and fetch log",
        204,
        delete(lifecycle::delete_app),
    )
    .add(
        "GET",
        "/v1/admin/providers",
        OPERATOR,
        "List widget providers, a page at a time (cursor, limit)",
        200,
        get(lifecycle::list_providers),
    )
    .add(
        "DELETE",
        "/v1/admin/providers/{provider}",
        OPERATOR,
        "Delete a provider: its forms leave their devices (form_removed), its key and deliveries go",
        204,
        delete(lifecycle::delete_provider),
    )
    .add(
        "GET",
        "/v1/providers/{provider}/form-definitions",
        OPERATOR_OR_PROVIDER,
        "A provider's form definitions and how many forms of each are placed",
        200,
        get(lifecycle::form_definitions),
    )
    .add(
        "GET",
        "/v1/admin/devices",
        OPERATOR,
        "List devices, of one user with user_id, a page at a time (cursor, limit)",
        200,
        get(lifecycle::list_devices),
    )
    .add(
        "DELETE",
        "/v1/admin/devices/{device_id}",
        OPERATOR,
        "Delete a device: its key, open streams, forms, data, deliveries and events",
        204,
        delete(lifecycle::delete_device),
    )
    .add(
        "GET",
        "/v1/admin/devices/{device_id}/forms",
        OPERATOR,
        "The forms placed on a device",
        200,
        get(lifecycle::device_forms),
    )
    .add(
        "GET",
        "/v1/device/forms",
        DEVICE,
        "The forms placed on this device",
        200,
        get(lifecycle::own_forms),
    )
    .add(
        "DELETE",
        "/v1/admin/users/{user_id}",
        OPERATOR,
        "Erase a user: every device, form, token, cache and fetch log row, and their place among rollout testers",
        200,
        delete(lifecycle::erase_user),
    )
    .add(
        "GET",
        "/v1/events",
        DEVICE,
        "Server-Sent Events for this device, replayable with Last-Event-ID",
        200,
        get(events::events),
    );
    let authed_router = authed.router;
    let callers = authed.callers;
    let mut paths = authed.paths;
    document_additions(&mut paths);
    let mut schemas: Map<String, Value> =
        authed.schemas.definitions().clone().into_iter().collect();
    paths.insert("/healthz".into(), json!({"get": {"summary": "200 when the store is reachable", "security": [], "responses": {"200": {"description": "healthy"}, "503": {"description": "store unreachable"}}}}));
    paths.insert("/v1/openapi.json".into(), json!({"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}}));
    console::document(&mut paths);
    schemas.insert("Error".into(), json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "details"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}}
    }}}}));
    schemas.insert("ErrorDetail".into(), json!({"type": "object", "properties": {"path": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}, "hint": {"type": "string"}}}));
    let openapi = json!({
        "openapi": "3.1.0",
        "info": {"title": "refreshd", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "rfdo_ operator, rfda_ app developer, rfdp_ widget provider, rfdd_ device"}},
            "schemas": schemas,
        }
    });
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

/// Parameters and response fields the route table cannot derive: the form-config
/// upload's `dry_run` and `removed_forms`, and the 429 of the event stream.
fn document_additions(paths: &mut Map<String, Value>) {
    if let Some(put) = paths
        .get_mut("/v1/providers/{provider}/form-config")
        .and_then(|p| p.get_mut("put"))
    {
        put["parameters"] = json!([{
            "name": "dry_run", "in": "query", "required": false,
            "schema": {"type": "boolean", "default": false},
            "description": "Check the document and report its effect (warnings, errors, removed_forms) without applying anything."
        }]);
        put["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "description": "form_config.json (F1-F5); at most 256 definitions and 262,144 bytes"}}}});
        put["responses"]["200"] = json!({"description": "applied (or, with dry_run, would be applied)", "content": {"application/json": {"schema": {
            "type": "object", "required": ["warnings", "removed_forms", "dry_run"],
            "properties": {
                "warnings": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
                "removed_forms": {"type": "array", "description": "placed forms removed because their definition is gone (F23a), per definition", "items": {"type": "object", "required": ["form_name", "count"], "properties": {"form_name": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}}},
                "dry_run": {"type": "boolean"}
            }
        }}}});
    }
    if let Some(get) = paths.get_mut("/v1/events").and_then(|p| p.get_mut("get")) {
        get["responses"]["429"] = json!({"description": "too_many_streams: the key already has the most open streams allowed (--max-streams-per-key)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    }
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.engine.access().health().await {
        // `now` is the engine's clock (warped under --time-warp), for operators and tests.
        Ok(()) => (
            StatusCode::OK,
            Json(
                json!({"status": "ok", "now": refreshd_engine::wire::rfc3339(state.engine.now())}),
            ),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "store unreachable"})),
        ),
    }
}

async fn openapi_document(State(state): State<AppState>) -> Json<Value> {
    Json((*state.openapi).clone())
}
