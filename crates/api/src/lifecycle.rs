//! Listing and deleting: the operator's apps, providers and devices (cursor pages), a
//! provider's definitions with their placed counts, a device's forms, and a user erased
//! on request. Each handler calls one command of `engine.lifecycle()`; a deleted
//! device's open event streams end at once.

use crate::error::ApiResult;
use crate::extract::{Path, Query};
use crate::openapi::Id;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::commands::Page;
use refreshd_engine::{Caller, KeyKind};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<Id>,
    /// Items per page, 1 to 1,000 [default: 100].
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<i64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePageQuery {
    /// Only the devices of this user.
    #[serde(default)]
    user_id: Option<Id>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<Id>,
    /// Items per page, 1 to 1,000 [default: 100].
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<i64>,
}

/// One page of a listing; `next_cursor` is `null` on the last page.
#[derive(Serialize, schemars::JsonSchema)]
pub struct PageView<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

impl<T> PageView<T> {
    fn of<S>(page: Page<S>, item: impl Fn(S) -> T) -> Json<PageView<T>> {
        Json(PageView {
            items: page.items.into_iter().map(item).collect(),
            next_cursor: page.next_cursor,
        })
    }
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct AppItem {
    appid: String,
    /// "individual" or "organization".
    subject: String,
    periodic_enabled: bool,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ProviderItem {
    provider: String,
    refresh_url: String,
    system_app: bool,
    api_version: i64,
    /// The app market's interval in half-hours (F10), when set.
    market_update_duration: Option<i64>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct DeviceItem {
    device_id: String,
    user_id: String,
    zone: String,
    /// Forms placed on the device.
    forms: usize,
}

pub async fn list_apps(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<PageView<AppItem>>> {
    let page = state
        .engine
        .lifecycle()
        .list_apps(
            &caller,
            query.cursor.as_ref().map(|c| c.0.as_str()),
            query.limit,
        )
        .await?;
    Ok(PageView::of(page, |a| AppItem {
        appid: a.appid,
        subject: a.subject,
        periodic_enabled: a.periodic_enabled,
    }))
}

pub async fn list_providers(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<PageView<ProviderItem>>> {
    let page = state
        .engine
        .lifecycle()
        .list_providers(
            &caller,
            query.cursor.as_ref().map(|c| c.0.as_str()),
            query.limit,
        )
        .await?;
    Ok(PageView::of(page, |p| ProviderItem {
        provider: p.provider,
        refresh_url: p.refresh_url,
        system_app: p.system_app,
        api_version: p.api_version,
        market_update_duration: p.market_update_duration,
    }))
}

pub async fn list_devices(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<DevicePageQuery>,
) -> ApiResult<Json<PageView<DeviceItem>>> {
    let page = state
        .engine
        .lifecycle()
        .list_devices(
            &caller,
            query.user_id.as_ref().map(|id| id.0.as_str()),
            query.cursor.as_ref().map(|c| c.0.as_str()),
            query.limit,
        )
        .await?;
    Ok(PageView::of(page, |d| DeviceItem {
        device_id: d.device_id,
        user_id: d.user_id,
        zone: d.zone,
        forms: d.forms,
    }))
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct DefinitionView {
    form_name: String,
    /// Forms of this definition placed on devices.
    placed: i64,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct DefinitionsView {
    provider: String,
    definitions: Vec<DefinitionView>,
}

/// A provider's definitions and how many forms of each are placed.
pub async fn form_definitions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
) -> ApiResult<Json<DefinitionsView>> {
    let counts = state
        .engine
        .lifecycle()
        .definitions(&caller, &provider)
        .await?;
    Ok(Json(DefinitionsView {
        provider,
        definitions: counts
            .into_iter()
            .map(|c| DefinitionView {
                form_name: c.form_name,
                placed: c.placed,
            })
            .collect(),
    }))
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct PlacedFormView {
    form_id: String,
    provider: String,
    form_name: String,
    visible: bool,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct FormsView {
    forms: Vec<PlacedFormView>,
}

fn forms_view(forms: Vec<refreshd_engine::commands::PlacedForm>) -> Json<FormsView> {
    Json(FormsView {
        forms: forms
            .into_iter()
            .map(|f| PlacedFormView {
                form_id: f.form_id,
                provider: f.provider,
                form_name: f.form_name,
                visible: f.visible,
            })
            .collect(),
    })
}

/// The calling device's forms.
pub async fn own_forms(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<FormsView>> {
    let forms = state.engine.lifecycle().device_forms(&caller, None).await?;
    Ok(forms_view(forms))
}

/// Any device's forms, for the operator.
pub async fn device_forms(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(device_id): Path<String>,
) -> ApiResult<Json<FormsView>> {
    let forms = state
        .engine
        .lifecycle()
        .device_forms(&caller, Some(&device_id))
        .await?;
    Ok(forms_view(forms))
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

/// What erasing a user removed.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ErasedUserView {
    user_id: String,
    devices: Vec<String>,
    apps: Vec<String>,
}

/// Erases every trace of a user; answers what went.
pub async fn erase_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user_id): Path<String>,
) -> ApiResult<Json<ErasedUserView>> {
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
    Ok(Json(ErasedUserView {
        user_id: erased.user_id,
        devices: erased.devices,
        apps: erased.apps,
    }))
}
