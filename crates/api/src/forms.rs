//! Widget endpoints: the device's forms, the provider's configuration, next-refresh and
//! data, and explanations for both.

use crate::auth::Principal;
use crate::error::{issue_json, ApiError, ApiResult};
use crate::extract::Body;
use crate::extract::{Path, Query, RawBody};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::engine::{parse_form_config, RemovedForms};
use refreshd_engine::EngineError;
use refreshd_rules::explain::{self as rules_explain, deferred_names, PLANNED};
use refreshd_rules::form_config::{FormDefinition, MAX_CONFIG_BYTES};
use refreshd_rules::periodic::MAX_BODY_BYTES;
use refreshd_rules::{FormId, Instant, RuleError};
use refreshd_store::{FormRecord, KeyKind};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

fn rfc3339(at: Instant) -> String {
    at.to_timestamp().map(|t| t.to_string()).unwrap_or_default()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFormBody {
    provider: String,
    form_name: String,
    #[serde(default)]
    hidden: bool,
}

/// F19, F22, F23: a host adds a widget.
pub async fn add_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(body): Body<NewFormBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let device_id = caller.require(KeyKind::Device)?;
    let form_id = state
        .engine
        .add_form(device_id, &body.provider, &body.form_name, body.hidden)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"form_id": form_id}))))
}

async fn device_form(state: &AppState, caller: &Principal, form_id: &str) -> ApiResult<FormRecord> {
    let device_id = caller.require(KeyKind::Device)?;
    Ok(state.engine.form_of_device(form_id, device_id).await?)
}

/// F22.
pub async fn remove_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(form_id): Path<String>,
) -> ApiResult<StatusCode> {
    let form = device_form(&state, &caller, &form_id).await?;
    state.engine.remove_form(&form).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VisibilityBody {
    visible: bool,
}

/// F19–F21.
pub async fn set_visibility(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(form_id): Path<String>,
    Body(body): Body<VisibilityBody>,
) -> ApiResult<StatusCode> {
    let form = device_form(&state, &caller, &form_id).await?;
    state.engine.set_visibility(&form, body.visible).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The form's latest data, for the host.
pub async fn get_data(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(form_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let form = device_form(&state, &caller, &form_id).await?;
    let data = state
        .engine
        .store()
        .get_form_data(&form.form_id)
        .await
        .map_err(EngineError::from)?;
    let data = data.ok_or(ApiError::not_found("no_form_data"))?;
    Ok(Json(json!({
        "data": serde_json::from_str::<Value>(&data.data).unwrap_or(Value::Null),
        "updated_at": rfc3339(Instant::from_millis(data.updated_at)),
        "trigger": data.trigger,
    })))
}

#[derive(Deserialize)]
pub struct FormConfigQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `[{"form_name", "count"}]`, by form name.
fn removed_json(removed: &RemovedForms) -> Value {
    removed
        .iter()
        .map(|(name, count)| json!({"form_name": name, "count": count}))
        .collect()
}

/// The provider's own form_config.json: every error at once, or applied whole (F5,
/// F23a). The answer says how many placed forms were removed because their definition
/// is gone; with `?dry_run=true` it says what would happen and nothing is applied.
pub async fn put_form_config(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(provider): Path<String>,
    Query(query): Query<FormConfigQuery>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let own = caller.require(KeyKind::Provider)?;
    if own != provider {
        return Err(ApiError::not_found("not_found"));
    }
    if body.len() > MAX_CONFIG_BYTES {
        return Err(ApiError::too_large(format!(
            "a form configuration is limited to {MAX_CONFIG_BYTES} bytes"
        )));
    }
    let text: Arc<str> = Arc::from(
        std::str::from_utf8(&body)
            .map_err(|_| ApiError::invalid_request("the body must be UTF-8 JSON"))?,
    );
    let store = state.engine.store();
    let mut record = store
        .get_provider(&provider)
        .await
        .map_err(EngineError::from)?
        .ok_or(ApiError::not_found("not_found"))?;
    // Reading a config is CPU work proportional to its size: off the async workers.
    let system_app = record.system_app;
    let parsing = text.clone();
    let report = tokio::task::spawn_blocking(move || parse_form_config(&parsing, system_app))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the form configuration could not be read",
            )
        })?;
    if report.has_errors() {
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_config",
            if query.dry_run {
                "the form configuration has errors; it would not be applied (dry run)"
            } else {
                "the form configuration has errors; nothing was applied"
            },
        );
        error.details = report.errors().map(issue_json).collect();
        return Err(error);
    }
    let warnings: Vec<Value> = report.warnings().map(issue_json).collect();
    let definitions: Arc<[FormDefinition]> = Arc::from(report.value.unwrap_or_default());
    if query.dry_run {
        let removed = state
            .engine
            .forms_removed_by(&provider, &definitions)
            .await?;
        return Ok(Json(json!({
            "warnings": warnings,
            "removed_forms": removed_json(&removed),
            "dry_run": true,
        })));
    }
    record.form_config = Some(text.to_string());
    store
        .update_provider(&record)
        .await
        .map_err(EngineError::from)?;
    state
        .engine
        .remember_definitions(&provider, text, system_app, definitions);
    let removed = state.engine.replan_provider(&record).await?;
    Ok(Json(json!({
        "warnings": warnings,
        "removed_forms": removed_json(&removed),
        "dry_run": false,
    })))
}

async fn provider_form(
    state: &AppState,
    caller: &Principal,
    form_id: &str,
) -> ApiResult<(FormRecord, i64)> {
    let provider = caller.require(KeyKind::Provider)?;
    let form = state.engine.form_of_provider(form_id, provider).await?;
    let record = state
        .engine
        .store()
        .get_provider(provider)
        .await
        .map_err(EngineError::from)?
        .ok_or_else(ApiError::unauthorized)?;
    Ok((form, record.provider_num))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NextRefreshBody {
    minutes: i64,
}

/// F13, F14.
pub async fn set_next_refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(form_id): Path<String>,
    Body(body): Body<NextRefreshBody>,
) -> ApiResult<Json<Value>> {
    let (form, provider_num) = provider_form(&state, &caller, &form_id).await?;
    match state
        .engine
        .set_next_refresh(&form, provider_num, body.minutes)
        .await
    {
        Ok(due) => Ok(Json(json!({"due_at": rfc3339(due)}))),
        Err(EngineError::Rule(RuleError::QuotaExhausted { resets_at })) => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exhausted",
                "the form used its 50 counted refreshes today",
            );
            error.retry_after_seconds =
                Some((resets_at.millis_since(state.engine.now()) + 999) / 1000);
            Err(error)
        }
        Err(other) => Err(other.into()),
    }
}

/// The provider's own update of a form's data, delivered to the host at once.
pub async fn put_data(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(form_id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<StatusCode> {
    let (form, _) = provider_form(&state, &caller, &form_id).await?;
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large("form data is limited to 262,144 bytes"));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_request(format!("the body must be JSON: {e}")))?;
    state.engine.provider_data(&form, value.to_string()).await?;
    Ok(StatusCode::OK)
}

/// Today's count, deferred kinds, pending next-refresh, recent decisions with their
/// rules, and the next 10 planned refreshes — for the device or the form's provider.
pub async fn explain_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(form_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let form = match caller.kind {
        KeyKind::Device => state.engine.form_of_device(&form_id, &caller.id).await?,
        KeyKind::Provider => state.engine.form_of_provider(&form_id, &caller.id).await?,
        _ => return Err(ApiError::unauthorized()),
    };
    let device = state.engine.device_state(&form.device_id).await?;
    let explained = rules_explain::explain_form(
        &device,
        FormId(form.form_num as u64),
        state.engine.now(),
        PLANNED,
    )
    .ok_or(ApiError::not_found("form_not_found"))?;
    let decisions = state
        .engine
        .store()
        .recent_decisions(&form.form_id, 20)
        .await
        .map_err(EngineError::from)?;
    let planned: Vec<Value> = explained
        .planned
        .iter()
        .map(|p| json!({"at": rfc3339(p.at), "decision": p.decision.to_string(), "rule": p.decision.rule()}))
        .collect();
    Ok(Json(json!({
        "form_id": form.form_id,
        "form_name": form.form_name,
        "visible": explained.visible,
        "counted_today": explained.counted_today,
        "daily_quota": explained.daily_quota,
        "quota_resets_at": explained.quota_resets_at.map(rfc3339),
        "deferred": deferred_names(explained.deferred),
        "pending_next_refresh": explained.pending_next_refresh.map(rfc3339),
        "interval_minutes": explained.interval_period_ms.map(|ms| ms / 60_000),
        "scheduled_times": explained.scheduled_times.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "network_recovery": explained.network_recovery,
        "data_proxy": explained.data_proxy,
        "recent_decisions": decisions.iter().map(|d| json!({"at": rfc3339(Instant::from_millis(d.at)), "decision": d.decision, "rule": d.rule})).collect::<Vec<_>>(),
        "next_planned": planned,
    })))
}
