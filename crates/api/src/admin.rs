//! Operator endpoints: apps, providers, devices, market intervals, key rotation.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::extract::Path;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::secrets::{hash_key, new_api_key, random_bytes};
use refreshd_engine::EngineError;
use refreshd_rules::periodic::{App, SubjectType};
use refreshd_store::{KeyKind, KeyRecord, NewProvider, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

/// Ids chosen by operators: 1 to 128 of `A–Z a–z 0–9 . _ -`.
pub fn check_id(field: &str, id: &str) -> ApiResult<()> {
    let ok = (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_request(format!(
            "{field} must be 1 to 128 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// A new key for `principal` and the record that stores its hash. The record is
/// written in the same transaction as the principal, so a failure leaves neither and a
/// retry does not meet a keyless principal.
fn new_key(state: &AppState, kind: KeyKind, principal: &str) -> (String, KeyRecord) {
    let key = new_api_key(kind);
    let record = KeyRecord {
        key_hash: hash_key(&key),
        kind,
        principal: principal.to_string(),
        created_at: state.engine.now().as_millis(),
    };
    (key, record)
}

fn exists(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_exists",
        format!("{what} already exists"),
    )
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppBody {
    appid: String,
    subject: String,
}

pub async fn create_app(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(body): Body<NewAppBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(KeyKind::Operator)?;
    check_id("appid", &body.appid)?;
    let subject = match body.subject.as_str() {
        "individual" => SubjectType::Individual,
        "organization" => SubjectType::Organization,
        _ => {
            return Err(ApiError::invalid_request(
                "subject must be \"individual\" or \"organization\"",
            ))
        }
    };
    let app = App::new(body.appid.clone(), subject, None).map_err(EngineError::from)?;
    let text = serde_json::to_string(&app).map_err(EngineError::corrupt)?;
    let (key, record) = new_key(&state, KeyKind::App, &body.appid);
    match state
        .engine
        .store()
        .insert_app(&body.appid, &text, Some(&record))
        .await
    {
        Err(StoreError::Exists) => return Err(exists("an app with this appid")),
        other => other.map_err(EngineError::from)?,
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"appid": body.appid, "developer_key": key})),
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
    Extension(caller): Extension<Principal>,
    Body(body): Body<NewProviderBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(KeyKind::Operator)?;
    check_id("provider", &body.provider)?;
    crate::apps::check_destination(&state, "$.refresh_url", &body.refresh_url)?;
    if !(0..=1_000_000).contains(&body.api_version) {
        return Err(ApiError::invalid_request("api_version must be 0 or more"));
    }
    let signing_secret = hex_string(random_bytes::<32>());
    let provider = NewProvider {
        provider: body.provider.clone(),
        refresh_url: body.refresh_url,
        system_app: body.system_app,
        api_version: body.api_version,
        signing_secret: state.engine.seal_signing_secret(&signing_secret),
    };
    let (key, record) = new_key(&state, KeyKind::Provider, &body.provider);
    match state
        .engine
        .store()
        .insert_provider(&provider, Some(&record))
        .await
    {
        Err(StoreError::Exists) => return Err(exists("a provider with this name")),
        other => other.map_err(EngineError::from)?,
    };
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"provider": body.provider, "provider_key": key, "signing_secret": signing_secret}),
        ),
    ))
}

fn hex_string(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketBody {
    update_duration: Option<i64>,
}

/// F10: the app market's interval for a provider's forms (`null` clears it).
pub async fn set_market_update_duration(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(provider): Path<String>,
    Body(body): Body<MarketBody>,
) -> ApiResult<Json<Value>> {
    caller.require(KeyKind::Operator)?;
    if let Some(d) = body.update_duration {
        if !(1..=336).contains(&d) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_update_duration",
                "update_duration must be 1 to 336 (half-hours), or null",
            ));
        }
    }
    let store = state.engine.store();
    let mut record = store
        .get_provider(&provider)
        .await
        .map_err(EngineError::from)?
        .ok_or(ApiError::not_found("not_found"))?;
    record.market_update_duration = body.update_duration;
    store
        .update_provider(&record)
        .await
        .map_err(EngineError::from)?;
    state.engine.replan_provider(&record).await?;
    Ok(Json(
        json!({"provider": provider, "update_duration": body.update_duration}),
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
    Extension(caller): Extension<Principal>,
    Body(body): Body<NewDeviceBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(KeyKind::Operator)?;
    check_id("device_id", &body.device_id)?;
    check_id("user_id", &body.user_id)?;
    let (key, record) = new_key(&state, KeyKind::Device, &body.device_id);
    match state
        .engine
        .create_device(&body.device_id, &body.user_id, &body.zone, &record)
        .await
    {
        Err(EngineError::Exists(_)) => return Err(exists("a device with this device_id")),
        other => other?,
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"device_id": body.device_id, "device_key": key})),
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

/// Longest overlap of a rotated signing secret with its successor.
const MAX_SECRET_OVERLAP_MINUTES: i64 = 7 * 24 * 60;

/// Issues a new signing secret for a provider. Until `previous_valid_until` deliveries
/// carry a `v1=` signature under each secret, the new one first.
pub async fn rotate_signing_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(provider): Path<String>,
    Body(body): Body<RotateSecretBody>,
) -> ApiResult<Json<Value>> {
    caller.require(KeyKind::Operator)?;
    let minutes = body.overlap_minutes.unwrap_or(24 * 60);
    if !(0..=MAX_SECRET_OVERLAP_MINUTES).contains(&minutes) {
        return Err(ApiError::invalid_request(format!(
            "overlap_minutes must be 0 to {MAX_SECRET_OVERLAP_MINUTES}"
        )));
    }
    let (secret, until) = state
        .engine
        .rotate_signing_secret(&provider, minutes * 60_000)
        .await?;
    Ok(Json(json!({
        "provider": provider,
        "signing_secret": secret,
        "previous_valid_until": until.to_timestamp().map(|t| t.to_string()),
    })))
}

/// Issues a new key for a principal; the old one answers 401 from then on.
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((collection, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(KeyKind::Operator)?;
    let store = state.engine.store();
    let (kind, field, exists) = match collection.as_str() {
        "apps" => (
            KeyKind::App,
            "developer_key",
            store
                .get_app(&id)
                .await
                .map_err(EngineError::from)?
                .is_some(),
        ),
        "providers" => (
            KeyKind::Provider,
            "provider_key",
            store
                .get_provider(&id)
                .await
                .map_err(EngineError::from)?
                .is_some(),
        ),
        "devices" => (
            KeyKind::Device,
            "device_key",
            store
                .get_device(&id)
                .await
                .map_err(EngineError::from)?
                .is_some(),
        ),
        _ => return Err(ApiError::not_found("not_found")),
    };
    if !exists {
        return Err(ApiError::not_found("not_found"));
    }
    let key = new_api_key(kind);
    let record = KeyRecord {
        key_hash: hash_key(&key),
        kind,
        principal: id.clone(),
        created_at: state.engine.now().as_millis(),
    };
    store
        .rotate_key(&record, state.engine.now().as_millis())
        .await
        .map_err(EngineError::from)?;
    // The old key answers 401 from now on, so what it opened ends now too.
    let ended = state.streams.end_streams_of(kind, &id, &record.key_hash);
    if ended > 0 {
        tracing::info!(ended, "key rotated: its open event streams were ended");
    }
    Ok(Json(json!({"id": id, field: key})))
}
