//! Operator endpoints: apps, providers, devices, market intervals, key rotation. Each
//! handler reads the request, calls one command of `engine.admin()` and writes its view.

use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::commands::NewProviderInput;
use refreshd_engine::wire::rfc3339;
use refreshd_engine::{Caller, KeyKind};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppBody {
    appid: String,
    subject: String,
}

pub async fn create_app(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewAppBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let app = state
        .engine
        .admin()
        .create_app(&caller, &body.appid, &body.subject)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"appid": app.appid, "developer_key": app.developer_key, "signing_secret": app.signing_secret}),
        ),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProviderBody {
    provider: String,
    refresh_url: String,
    system_app: bool,
    api_version: i64,
}

pub async fn create_provider(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewProviderBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let input = NewProviderInput {
        provider: body.provider,
        refresh_url: body.refresh_url,
        system_app: body.system_app,
        api_version: body.api_version,
    };
    let created = state.engine.admin().create_provider(&caller, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "provider": created.provider,
            "provider_key": created.provider_key,
            "signing_secret": created.signing_secret,
        })),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketBody {
    update_duration: Option<i64>,
}

/// F10: the app market's interval for a provider's forms (`null` clears it).
pub async fn set_market_update_duration(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
    Body(body): Body<MarketBody>,
) -> ApiResult<Json<Value>> {
    let set = state
        .engine
        .admin()
        .set_market_update_duration(&caller, &provider, body.update_duration)
        .await?;
    Ok(Json(
        json!({"provider": set.provider, "update_duration": set.update_duration}),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeviceBody {
    device_id: String,
    user_id: String,
    zone: String,
}

pub async fn create_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewDeviceBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let device = state
        .engine
        .admin()
        .create_device(&caller, &body.device_id, &body.user_id, &body.zone)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"device_id": device.device_id, "device_key": device.device_key})),
    ))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretBody {
    /// How long the replaced secret keeps signing beside the new one, 0 to 10,080
    /// minutes (7 days) [default: 1,440].
    #[schemars(range(min = 0, max = 10080))]
    overlap_minutes: Option<i64>,
}

/// Issues a new signing secret for a provider. Until `previous_valid_until` deliveries
/// carry a `v1=` signature under each secret, the new one first.
pub async fn rotate_signing_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
    Body(body): Body<RotateSecretBody>,
) -> ApiResult<Json<Value>> {
    let rotated = state
        .engine
        .admin()
        .rotate_signing_secret(&caller, &provider, body.overlap_minutes)
        .await?;
    Ok(Json(json!({
        "provider": rotated.owner,
        "signing_secret": rotated.signing_secret,
        "previous_valid_until": rfc3339(rotated.previous_valid_until),
    })))
}

/// Issues a new secret for an app's signed periodic fetches. Until
/// `previous_valid_until` fetches carry a `v1=` signature under each secret.
pub async fn rotate_app_signing_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Body(body): Body<RotateSecretBody>,
) -> ApiResult<Json<Value>> {
    let rotated = state
        .engine
        .admin()
        .rotate_app_signing_secret(&caller, &appid, body.overlap_minutes)
        .await?;
    Ok(Json(json!({
        "appid": rotated.owner,
        "signing_secret": rotated.signing_secret,
        "previous_valid_until": rfc3339(rotated.previous_valid_until),
    })))
}

/// Issues a new key for a principal; the old one answers 401 from then on.
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((collection, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (kind, field) = match collection.as_str() {
        "apps" => (KeyKind::App, "developer_key"),
        "providers" => (KeyKind::Provider, "provider_key"),
        "devices" => (KeyKind::Device, "device_key"),
        _ => return Err(ApiError::not_found("not_found")),
    };
    let rotated = state.engine.admin().rotate_key(&caller, kind, &id).await?;
    // The old key answers 401 from now on, so what it opened ends now too.
    let ended = state
        .streams
        .end_streams_of(kind, &rotated.id, &rotated.key_hash);
    if ended > 0 {
        tracing::info!(ended, "key rotated: its open event streams were ended");
    }
    Ok(Json(json!({"id": rotated.id, field: rotated.key})))
}
