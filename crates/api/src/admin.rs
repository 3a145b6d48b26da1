//! Operator endpoints: apps, providers, devices, market intervals, key rotation.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::AppState;
use axum::extract::{Path, State};
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

async fn issue_key(state: &AppState, kind: KeyKind, principal: &str) -> ApiResult<String> {
    let key = new_api_key(kind);
    let record = KeyRecord {
        key_hash: hash_key(&key),
        kind,
        principal: principal.to_string(),
        created_at: state.engine.now().as_millis(),
    };
    state
        .engine
        .store()
        .insert_key(&record)
        .await
        .map_err(EngineError::from)?;
    Ok(key)
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
    match state.engine.store().insert_app(&body.appid, &text).await {
        Err(StoreError::Exists) => return Err(exists("an app with this appid")),
        other => other.map_err(EngineError::from)?,
    }
    let key = issue_key(&state, KeyKind::App, &body.appid).await?;
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
        signing_secret: signing_secret.clone(),
    };
    match state.engine.store().insert_provider(&provider).await {
        Err(StoreError::Exists) => return Err(exists("a provider with this name")),
        other => other.map_err(EngineError::from)?,
    };
    let key = issue_key(&state, KeyKind::Provider, &body.provider).await?;
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
    match state
        .engine
        .create_device(&body.device_id, &body.user_id, &body.zone)
        .await
    {
        Err(EngineError::Exists(_)) => return Err(exists("a device with this device_id")),
        other => other?,
    }
    let key = issue_key(&state, KeyKind::Device, &body.device_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"device_id": body.device_id, "device_key": key})),
    ))
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
    Ok(Json(json!({"id": id, field: key})))
}
