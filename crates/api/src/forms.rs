//! Widget endpoints: the device's forms, the provider's configuration, next-refresh and
//! data, and explanations for both. Each handler reads the request, calls one command
//! of `engine.forms()` and writes its view.

use crate::error::{issue_json, ApiError, ApiResult};
use crate::extract::{Body, Path, Query, RawBody};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::commands::{NotedDecision, RemovedForms};
use refreshd_engine::wire::rfc3339;
use refreshd_engine::{Caller, EngineError};
use refreshd_rules::RuleError;
use serde::Deserialize;
use serde_json::{json, Value};

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
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewFormBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let added = state
        .engine
        .forms()
        .add_form(&caller, &body.provider, &body.form_name, body.hidden)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"form_id": added.form_id}))))
}

/// F22.
pub async fn remove_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
) -> ApiResult<StatusCode> {
    state.engine.forms().remove_form(&caller, &form_id).await?;
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
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
    Body(body): Body<VisibilityBody>,
) -> ApiResult<StatusCode> {
    state
        .engine
        .forms()
        .set_visibility(&caller, &form_id, body.visible)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The form's latest data, for the host.
pub async fn get_data(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let data = state.engine.forms().form_data(&caller, &form_id).await?;
    Ok(Json(json!({
        "data": data.data,
        "updated_at": rfc3339(data.updated_at),
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
    Extension(caller): Extension<Caller>,
    Path(provider): Path<String>,
    Query(query): Query<FormConfigQuery>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let applied = state
        .engine
        .forms()
        .put_form_config(&caller, &provider, &body, query.dry_run)
        .await?;
    Ok(Json(json!({
        "warnings": applied.warnings.iter().map(issue_json).collect::<Vec<_>>(),
        "removed_forms": removed_json(&applied.removed_forms),
        "dry_run": applied.dry_run,
    })))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NextRefreshBody {
    minutes: i64,
}

/// F13, F14.
pub async fn set_next_refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
    Body(body): Body<NextRefreshBody>,
) -> ApiResult<Json<Value>> {
    match state
        .engine
        .forms()
        .set_next_refresh(&caller, &form_id, body.minutes)
        .await
    {
        Ok(next) => Ok(Json(json!({"due_at": rfc3339(next.due_at)}))),
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
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<StatusCode> {
    state
        .engine
        .forms()
        .put_form_data(&caller, &form_id, &body)
        .await?;
    Ok(StatusCode::OK)
}

fn decision_json(decision: &NotedDecision) -> Value {
    json!({"at": rfc3339(decision.at), "decision": decision.decision, "rule": decision.rule})
}

/// Today's count, deferred kinds, pending next-refresh, recent decisions with their
/// rules, and the next 10 planned refreshes — for the device or the form's provider.
pub async fn explain_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let why = state.engine.forms().explain_form(&caller, &form_id).await?;
    Ok(Json(json!({
        "form_id": why.form_id,
        "form_name": why.form_name,
        "visible": why.visible,
        "counted_today": why.counted_today,
        "daily_quota": why.daily_quota,
        "quota_resets_at": why.quota_resets_at.map(rfc3339),
        "deferred": why.deferred,
        "pending_next_refresh": why.pending_next_refresh.map(rfc3339),
        "interval_minutes": why.interval_minutes,
        "scheduled_times": why.scheduled_times,
        "network_recovery": why.network_recovery,
        "data_proxy": why.data_proxy,
        "recent_decisions": why.recent_decisions.iter().map(decision_json).collect::<Vec<_>>(),
        "next_planned": why.next_planned.iter().map(decision_json).collect::<Vec<_>>(),
    })))
}
