//! refreshd's HTTP API (api.md): the only place that knows the wire format.
//!
//! [`router`] builds every route; each is registered through [`Routes::add`], which also
//! records it in the OpenAPI document served at `/v1/openapi.json`, so the document
//! cannot miss a route. Requests pass [`auth::authenticate`] (key checked before the body
//! is read, per-key rate limit) and reach the handlers in [`admin`], [`apps`], [`forms`],
//! [`device`] and [`events`], which call the engine. Errors use one shape ([`error`]).

pub mod admin;
pub mod apps;
pub mod auth;
pub mod device;
pub mod error;
pub mod events;
pub mod extract;
pub mod forms;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{middleware, Json, Router};
use governor::DefaultKeyedRateLimiter;
use refreshd_engine::Engine;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Largest request body (api.md: 413 above 1 MiB).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub rate_limiter: Arc<DefaultKeyedRateLimiter<Vec<u8>>>,
    openapi: Arc<Value>,
}

/// Routes with their documentation, collected together. Request bodies are described by
/// JSON Schemas derived from the very types the handlers deserialize.
struct Routes {
    router: Router<AppState>,
    paths: Map<String, Value>,
    schemas: schemars::SchemaGenerator,
}

impl Routes {
    fn add(
        mut self,
        method: &str,
        path: &str,
        caller: &str,
        summary: &str,
        success: u16,
        handler: MethodRouter<AppState>,
    ) -> Self {
        let security = if caller == "none" {
            json!([])
        } else {
            json!([{"bearer": []}])
        };
        let operation = json!({
            "summary": summary,
            "description": format!("Caller: {caller} key."),
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
        caller: &str,
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
    fn also(mut self, method: &str, path: &str, caller: &str, summary: &str, success: u16) -> Self {
        let router = std::mem::take(&mut self.router);
        let documented = self.add(method, path, caller, summary, success, MethodRouter::new());
        Routes {
            router,
            ..documented
        }
    }
}

/// Builds the API router over `engine`, with a per-key rate limit.
pub fn router(engine: Arc<Engine>, per_second: u32, burst: u32) -> Router {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "#/components/schemas/".into();
    let authed = Routes {
        router: Router::new(),
        paths: Map::new(),
        schemas: settings.into_generator(),
    }
    .add_json::<admin::NewAppBody>(
        "POST",
        "/v1/admin/apps",
        "operator",
        "Create an app; returns its developer key",
        201,
        post(admin::create_app),
    )
    .add_json::<admin::NewProviderBody>(
        "POST",
        "/v1/admin/providers",
        "operator",
        "Create a widget provider; returns its key and signing secret",
        201,
        post(admin::create_provider),
    )
    .add_json::<admin::MarketBody>(
        "PUT",
        "/v1/admin/providers/{provider}/market-update-duration",
        "operator",
        "Set or clear the app market's interval (F10)",
        200,
        put(admin::set_market_update_duration),
    )
    .add_json::<admin::NewDeviceBody>(
        "POST",
        "/v1/admin/devices",
        "operator",
        "Create a device; returns its key",
        201,
        post(admin::create_device),
    )
    .add_json::<admin::RotateSecretBody>(
        "POST",
        "/v1/admin/providers/{provider}/rotate-signing-secret",
        "operator",
        "Issue a new signing secret; the old one keeps signing beside it for the overlap",
        200,
        post(admin::rotate_signing_secret),
    )
    .add(
        "POST",
        "/v1/admin/{collection}/{id}/rotate-key",
        "operator",
        "Issue a new key; the old one stops working",
        200,
        post(admin::rotate_key),
    )
    .add_json::<apps::PeriodicBody>(
        "PUT",
        "/v1/apps/{appid}/periodic-fetch",
        "app developer",
        "Replace the periodic-fetch setting (P1-P3)",
        200,
        put(apps::put_periodic),
    )
    .add_json::<apps::UserBody>(
        "POST",
        "/v1/apps/{appid}/periodic-fetch/fetch-now",
        "app developer",
        "Fetch a user's data now (P11)",
        200,
        post(apps::fetch_now),
    )
    .add(
        "GET",
        "/v1/apps/{appid}/periodic-fetch/log",
        "app developer",
        "The last 100 fetch attempts for a user",
        200,
        get(apps::fetch_log),
    )
    .add(
        "GET",
        "/v1/apps/{appid}/periodic-fetch/explain",
        "app developer",
        "Why a user's data was or was not fetched",
        200,
        get(apps::explain_fetch),
    )
    .add(
        "POST",
        "/v1/apps/{appid}/launch",
        "device",
        "The user launched the app (P6)",
        204,
        post(apps::launch),
    )
    .add_json::<apps::TokenBody>(
        "PUT",
        "/v1/apps/{appid}/background-fetch/token",
        "device",
        "Set the user's token (P5)",
        204,
        put(apps::set_token),
    )
    .add(
        "GET",
        "/v1/apps/{appid}/background-fetch",
        "device",
        "Read the user's cached data (P15)",
        200,
        get(apps::read_cached),
    )
    .add(
        "PUT",
        "/v1/providers/{provider}/form-config",
        "widget provider",
        "Upload form_config.json (F1-F5, F23a)",
        200,
        put(forms::put_form_config),
    )
    .add_json::<forms::NewFormBody>(
        "POST",
        "/v1/forms",
        "device",
        "Add a form (F19, F22, F23)",
        201,
        post(forms::add_form),
    )
    .add(
        "DELETE",
        "/v1/forms/{form_id}",
        "device",
        "Remove a form (F22)",
        204,
        delete(forms::remove_form),
    )
    .add_json::<forms::VisibilityBody>(
        "POST",
        "/v1/forms/{form_id}/visibility",
        "device",
        "Show or hide a form (F19-F21)",
        204,
        post(forms::set_visibility),
    )
    .add(
        "GET",
        "/v1/forms/{form_id}/data",
        "device",
        "The form's latest data",
        200,
        get(forms::get_data).put(forms::put_data),
    )
    .also(
        "PUT",
        "/v1/forms/{form_id}/data",
        "widget provider",
        "Update the form's data",
        200,
    )
    .add_json::<forms::NextRefreshBody>(
        "POST",
        "/v1/forms/{form_id}/next-refresh",
        "widget provider",
        "Ask for a refresh in N minutes (F13, F14)",
        200,
        post(forms::set_next_refresh),
    )
    .add(
        "GET",
        "/v1/forms/{form_id}/explain",
        "device or widget provider",
        "Why a form did or did not refresh, and what is next",
        200,
        get(forms::explain_form),
    )
    .add_json::<device::NetworkBody>(
        "POST",
        "/v1/device/network",
        "device",
        "Report going offline or an outage that ended (F16)",
        204,
        post(device::report_network),
    )
    .add_json::<device::ZoneBody>(
        "PUT",
        "/v1/device/zone",
        "device",
        "Change the device's time zone (F23a)",
        204,
        put(device::set_zone),
    )
    .add(
        "GET",
        "/v1/events",
        "device",
        "Server-Sent Events for this device, replayable with Last-Event-ID",
        200,
        get(events::events),
    );
    let authed_router = authed.router;
    let mut paths = authed.paths;
    let mut schemas: Map<String, Value> =
        authed.schemas.definitions().clone().into_iter().collect();
    paths.insert("/healthz".into(), json!({"get": {"summary": "200 when the store is reachable", "security": [], "responses": {"200": {"description": "healthy"}, "503": {"description": "store unreachable"}}}}));
    paths.insert("/v1/openapi.json".into(), json!({"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}}));
    schemas.insert("Error".into(), json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "details"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}, "hint": {"type": "string"}}}}
    }}}}));
    let openapi = json!({
        "openapi": "3.1.0",
        "info": {"title": "refreshd", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "rfdo_ operator, rfda_ app developer, rfdp_ widget provider, rfdd_ device"}},
            "schemas": schemas,
        }
    });
    let state = AppState {
        engine,
        rate_limiter: Arc::new(auth::rate_limiter(per_second, burst)),
        openapi: Arc::new(openapi),
    };
    let authed = authed_router.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi_document))
        .merge(authed)
        .fallback(|| async { error::ApiError::not_found("not_found") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.engine.store().ping().await {
        // `now` is the engine's clock (warped under --time-warp), for operators and tests.
        Ok(()) => (
            StatusCode::OK,
            Json(
                json!({"status": "ok", "now": state.engine.now().to_timestamp().map(|t| t.to_string())}),
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
