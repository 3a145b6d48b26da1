//! Operator endpoints: apps, providers, devices, market intervals, key rotation. Each
//! handler reads the request, calls one command of `engine.admin()` and writes its view.

use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path};
use crate::openapi::{DateTime, Id, Zone};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::commands::NewProviderInput;
use refreshd_engine::wire::rfc3339;
use refreshd_engine::{Caller, KeyKind};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppBody {
    appid: Id,
    /// Who publishes the app (P1); individuals may only use cloud sources (P2).
    subject: Subject,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Individual,
    Organization,
}

impl Subject {
    fn as_str(&self) -> &'static str {
        match self {
            Subject::Individual => "individual",
            Subject::Organization => "organization",
        }
    }
}

/// A new app, its developer key and the secret its periodic fetches are signed with
/// (both shown once).
#[derive(Serialize, schemars::JsonSchema)]
pub struct CreatedAppView {
    appid: String,
    developer_key: String,
    /// 64 hex characters: the HMAC-SHA256 key of the `refreshd-signature` on this app's
    /// periodic fetches.
    signing_secret: String,
}

pub async fn create_app(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewAppBody>,
) -> ApiResult<(StatusCode, Json<CreatedAppView>)> {
    let app = state
        .engine
        .admin()
        .create_app(&caller, &body.appid.0, body.subject.as_str())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAppView {
            appid: app.appid,
            developer_key: app.developer_key,
            signing_secret: app.signing_secret,
        }),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProviderBody {
    provider: Id,
    /// Where deliveries are POSTed (api.md's destination rules apply).
    #[schemars(extend("format" = "uri"), length(max = 2048))]
    refresh_url: String,
    system_app: bool,
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schemars(range(min = 0, max = 1_000_000))]
    api_version: i64,
}

/// A new provider, its key and its signing secret (both shown once).
#[derive(Serialize, schemars::JsonSchema)]
pub struct CreatedProviderView {
    provider: String,
    provider_key: String,
    /// 64 hex digits; deliveries are signed with it (`refreshd-signature`).
    signing_secret: String,
}

pub async fn create_provider(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewProviderBody>,
) -> ApiResult<(StatusCode, Json<CreatedProviderView>)> {
    let input = NewProviderInput {
        provider: body.provider.0,
        refresh_url: body.refresh_url,
        system_app: body.system_app,
        api_version: body.api_version,
    };
    let created = state.engine.admin().create_provider(&caller, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedProviderView {
            provider: created.provider,
            provider_key: created.provider_key,
            signing_secret: created.signing_secret,
        }),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketBody {
    /// Half-hours, 1 to 336; `null` (or leaving it out) clears it.
    #[serde(default, deserialize_with = "crate::extract::optional_integer")]
    #[schemars(range(min = 1, max = 336))]
    update_duration: Option<i64>,
}

/// A provider's market interval as now set (F10).
#[derive(Serialize, schemars::JsonSchema)]
pub struct MarketView {
    provider: String,
    /// Half-hours; `null` when cleared.
    #[schemars(range(min = 1, max = 336))]
    update_duration: Option<i64>,
}

/// F10: the app market's interval for a provider's forms (`null` clears it).
pub async fn set_market_update_duration(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
    Body(body): Body<MarketBody>,
) -> ApiResult<Json<MarketView>> {
    let set = state
        .engine
        .admin()
        .set_market_update_duration(&caller, &provider, body.update_duration)
        .await?;
    Ok(Json(MarketView {
        provider: set.provider,
        update_duration: set.update_duration,
    }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeviceBody {
    device_id: Id,
    user_id: Id,
    zone: Zone,
}

/// A new device and its key (shown once).
#[derive(Serialize, schemars::JsonSchema)]
pub struct CreatedDeviceView {
    device_id: String,
    device_key: String,
}

pub async fn create_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewDeviceBody>,
) -> ApiResult<(StatusCode, Json<CreatedDeviceView>)> {
    let device = state
        .engine
        .admin()
        .create_device(&caller, &body.device_id.0, &body.user_id.0, &body.zone.0)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedDeviceView {
            device_id: device.device_id,
            device_key: device.device_key,
        }),
    ))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretBody {
    /// How long the replaced secret keeps signing beside the new one, 0 to 10,080
    /// minutes (7 days) [default: 1,440].
    #[schemars(range(min = 0, max = 10080))]
    #[serde(default, deserialize_with = "crate::extract::optional_integer")]
    overlap_minutes: Option<i64>,
}

/// A provider's new signing secret, and until when the one it replaced still signs.
#[derive(Serialize, schemars::JsonSchema)]
pub struct RotatedSecretView {
    provider: String,
    signing_secret: String,
    /// RFC 3339; `null` only for an instant outside the years 0001-9999.
    #[schemars(with = "Option<DateTime>")]
    previous_valid_until: Option<String>,
}

/// A principal's new key, named for its kind; the old key answers 401 from now on.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RotatedKeyView {
    App { id: String, developer_key: String },
    Provider { id: String, provider_key: String },
    Device { id: String, device_key: String },
}

/// Issues a new signing secret for a provider. Until `previous_valid_until` deliveries
/// carry a `v1=` signature under each secret, the new one first.
pub async fn rotate_signing_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
    Body(body): Body<RotateSecretBody>,
) -> ApiResult<Json<RotatedSecretView>> {
    let rotated = state
        .engine
        .admin()
        .rotate_signing_secret(&caller, &provider, body.overlap_minutes)
        .await?;
    Ok(Json(RotatedSecretView {
        provider: rotated.owner,
        signing_secret: rotated.signing_secret,
        previous_valid_until: rfc3339(rotated.previous_valid_until),
    }))
}

/// An app's new fetch-signing secret, and until when the one it replaced still signs.
#[derive(Serialize, schemars::JsonSchema)]
pub struct RotatedAppSecretView {
    appid: String,
    signing_secret: String,
    /// RFC 3339; `null` only for an instant outside the years 0001-9999.
    #[schemars(with = "Option<DateTime>")]
    previous_valid_until: Option<String>,
}

/// Issues a new secret for an app's signed periodic fetches. Until
/// `previous_valid_until` fetches carry a `v1=` signature under each secret.
pub async fn rotate_app_signing_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Body(body): Body<RotateSecretBody>,
) -> ApiResult<Json<RotatedAppSecretView>> {
    let rotated = state
        .engine
        .admin()
        .rotate_app_signing_secret(&caller, &appid, body.overlap_minutes)
        .await?;
    Ok(Json(RotatedAppSecretView {
        appid: rotated.owner,
        signing_secret: rotated.signing_secret,
        previous_valid_until: rfc3339(rotated.previous_valid_until),
    }))
}

/// Issues a new key for a principal; the old one answers 401 from then on.
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((collection, id)): Path<(String, String)>,
) -> ApiResult<Json<RotatedKeyView>> {
    let kind = match collection.as_str() {
        "apps" => KeyKind::App,
        "providers" => KeyKind::Provider,
        "devices" => KeyKind::Device,
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
    let (id, key) = (rotated.id, rotated.key);
    Ok(Json(match kind {
        KeyKind::App => RotatedKeyView::App {
            id,
            developer_key: key,
        },
        KeyKind::Provider => RotatedKeyView::Provider {
            id,
            provider_key: key,
        },
        _ => RotatedKeyView::Device {
            id,
            device_key: key,
        },
    }))
}
