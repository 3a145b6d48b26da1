//! Listing and deleting: the operator's apps, providers and devices (cursor pages), a
//! provider's definitions with their placed counts, a device's forms, and a user erased
//! on request. Each handler calls one command of `engine.lifecycle()`; a deleted
//! device's open event streams end at once.

use crate::error::ApiResult;
use crate::extract::{Path, Query};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::commands::Page;
use refreshd_engine::{Caller, KeyKind};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePageQuery {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

fn page_json<T>(page: Page<T>, item: impl Fn(T) -> Value) -> Json<Value> {
    let items: Vec<Value> = page.items.into_iter().map(item).collect();
    Json(json!({"items": items, "next_cursor": page.next_cursor}))
}

pub async fn list_apps(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = state
        .engine
        .lifecycle()
        .list_apps(&caller, query.cursor.as_deref(), query.limit)
        .await?;
    Ok(page_json(
        page,
        |a| json!({"appid": a.appid, "subject": a.subject, "periodic_enabled": a.periodic_enabled}),
    ))
}

pub async fn list_providers(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = state
        .engine
        .lifecycle()
        .list_providers(&caller, query.cursor.as_deref(), query.limit)
        .await?;
    Ok(page_json(page, |p| {
        json!({
            "provider": p.provider,
            "refresh_url": p.refresh_url,
            "system_app": p.system_app,
            "api_version": p.api_version,
            "market_update_duration": p.market_update_duration,
        })
    }))
}

pub async fn list_devices(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<DevicePageQuery>,
) -> ApiResult<Json<Value>> {
    let page = state
        .engine
        .lifecycle()
        .list_devices(
            &caller,
            query.user_id.as_deref(),
            query.cursor.as_deref(),
            query.limit,
        )
        .await?;
    Ok(page_json(
        page,
        |d| json!({"device_id": d.device_id, "user_id": d.user_id, "zone": d.zone, "forms": d.forms}),
    ))
}

/// A provider's definitions and how many forms of each are placed.
pub async fn form_definitions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
) -> ApiResult<Json<Value>> {
    let counts = state
        .engine
        .lifecycle()
        .definitions(&caller, &provider)
        .await?;
    let definitions: Vec<Value> = counts
        .into_iter()
        .map(|c| json!({"form_name": c.form_name, "placed": c.placed}))
        .collect();
    Ok(Json(
        json!({"provider": provider, "definitions": definitions}),
    ))
}

fn forms_json(forms: Vec<refreshd_engine::commands::PlacedForm>) -> Json<Value> {
    let forms: Vec<Value> = forms
        .into_iter()
        .map(|f| {
            json!({"form_id": f.form_id, "provider": f.provider, "form_name": f.form_name, "visible": f.visible})
        })
        .collect();
    Json(json!({"forms": forms}))
}

/// The calling device's forms.
pub async fn own_forms(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let forms = state.engine.lifecycle().device_forms(&caller, None).await?;
    Ok(forms_json(forms))
}

/// Any device's forms, for the operator.
pub async fn device_forms(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(device_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let forms = state
        .engine
        .lifecycle()
        .device_forms(&caller, Some(&device_id))
        .await?;
    Ok(forms_json(forms))
}

pub async fn delete_app(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
) -> ApiResult<StatusCode> {
    state.engine.lifecycle().delete_app(&caller, &appid).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_provider(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .engine
        .lifecycle()
        .delete_provider(&caller, &provider)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(device_id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .engine
        .lifecycle()
        .delete_device(&caller, &device_id)
        .await?;
    // Its keys are gone, so what they opened ends now.
    state
        .streams
        .end_streams_of(KeyKind::Device, &device_id, &[]);
    Ok(StatusCode::NO_CONTENT)
}

/// Erases every trace of a user; answers what went.
pub async fn erase_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let erased = state
        .engine
        .lifecycle()
        .erase_user(&caller, &user_id)
        .await?;
    for device_id in &erased.devices {
        state
            .streams
            .end_streams_of(KeyKind::Device, device_id, &[]);
    }
    Ok(Json(json!({
        "user_id": erased.user_id,
        "devices": erased.devices,
        "apps": erased.apps,
    })))
}
