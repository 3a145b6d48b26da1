//! Widget endpoints: the device's forms, the provider's configuration, next-refresh and
//! data, and explanations for both. Each handler reads the request, calls one command
//! of `engine.forms()` and writes its view.

use crate::error::{issue_detail, ApiError, ApiResult, Detail};
use crate::extract::{Body, Path, Query, RawBody};
use crate::openapi::{DateTime, Id};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::commands::{NotedDecision, RemovedForms};
use refreshd_engine::wire::rfc3339;
use refreshd_engine::{Caller, EngineError};
use refreshd_rules::RuleError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFormBody {
    provider: Id,
    /// A form definition's name in the provider's form_config.json.
    form_name: String,
    /// Placed hidden (F19); false unless given.
    #[serde(default)]
    hidden: bool,
}

/// A form placed on the device.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AddedFormView {
    #[schemars(regex(pattern = crate::openapi::FORM_ID_PATTERN))]
    form_id: String,
}

/// F19, F22, F23: a host adds a widget.
pub async fn add_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewFormBody>,
) -> ApiResult<(StatusCode, Json<AddedFormView>)> {
    let added = state
        .engine
        .forms()
        .add_form(&caller, &body.provider.0, &body.form_name, body.hidden)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(AddedFormView {
            form_id: added.form_id,
        }),
    ))
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

/// A form's latest data.
#[derive(Serialize, schemars::JsonSchema)]
pub struct FormDataResponse {
    /// The provider's JSON, as delivered.
    data: Value,
    /// RFC 3339; `null` only for an instant outside the years 0001-9999.
    #[schemars(with = "Option<DateTime>")]
    updated_at: Option<String>,
    /// What produced it: a delivery's trigger (such as `add`), or `provider`.
    trigger: String,
}

/// The form's latest data, for the host.
pub async fn get_data(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
) -> ApiResult<Json<FormDataResponse>> {
    let data = state.engine.forms().form_data(&caller, &form_id).await?;
    Ok(Json(FormDataResponse {
        data: data.data,
        updated_at: rfc3339(data.updated_at),
        trigger: data.trigger,
    }))
}

/// The shape of form_config.json (F1-F4a) as the engine reads it. Fields other than
/// these are kept or ignored with a warning; the rules between fields (F2-F4a, unique
/// names, the kinds of app that may use a condition) are checked by the engine, which
/// answers `invalid_config` with every problem in `details`.
pub fn form_config_schema() -> Value {
    let time = r"^([0-9]|[01][0-9]|2[0-4]):[0-5][0-9]$";
    serde_json::json!({
        "type": "object",
        "description": "form_config.json (F1-F5): at most 256 definitions and 262,144 bytes; \
            integers are written without a fraction",
        "required": ["forms"],
        "properties": {
            "forms": {
                "type": "array",
                "maxItems": refreshd_rules::form_config::MAX_DEFINITIONS,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "description": "unique in the document"},
                        "updateEnabled": {"type": "boolean"},
                        "updateDuration": {"type": "integer", "minimum": 0, "description": "N x 30 minutes; 0 for none; above 336 is read as 336"},
                        "scheduledUpdateTime": {"type": "string", "pattern": time, "description": "HH:MM, local time"},
                        "multiScheduledUpdateTime": {"type": "string", "description": "HH:MM,HH:MM,... local times"},
                        "conditionUpdate": {"type": "array", "items": {"type": "string"}, "description": "\"network\" (system apps only)"},
                        "dataProxyEnabled": {"type": "boolean"},
                    }
                }
            }
        }
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct FormConfigQuery {
    /// Check the document and report its effect (warnings, errors, removed_forms)
    /// without applying anything.
    #[serde(default)]
    dry_run: bool,
}

/// Placed forms of one definition removed because the definition is gone (F23a).
#[derive(Serialize, schemars::JsonSchema)]
pub struct RemovedFormsView {
    form_name: String,
    #[schemars(range(min = 1))]
    count: usize,
}

/// A form configuration applied (or, with `dry_run`, that would be).
#[derive(Serialize, schemars::JsonSchema)]
pub struct ConfigAppliedView {
    warnings: Vec<Detail>,
    removed_forms: Vec<RemovedFormsView>,
    dry_run: bool,
}

/// `[{"form_name", "count"}]`, by form name.
fn removed_view(removed: &RemovedForms) -> Vec<RemovedFormsView> {
    removed
        .iter()
        .map(|(name, count)| RemovedFormsView {
            form_name: name.clone(),
            count: *count,
        })
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
) -> ApiResult<Json<ConfigAppliedView>> {
    let applied = state
        .engine
        .forms()
        .put_form_config(&caller, &provider, &body, query.dry_run)
        .await?;
    Ok(Json(ConfigAppliedView {
        warnings: applied.warnings.iter().map(issue_detail).collect(),
        removed_forms: removed_view(&applied.removed_forms),
        dry_run: applied.dry_run,
    }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NextRefreshBody {
    /// 1 to 10,080 for a system app's forms, 5 to 10,080 for others (F13).
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schemars(range(min = 1, max = 10_080))]
    minutes: i64,
}

/// When the requested refresh is due (F14).
#[derive(Serialize, schemars::JsonSchema)]
pub struct NextRefreshView {
    /// RFC 3339; `null` only for an instant outside the years 0001-9999.
    #[schemars(with = "Option<DateTime>")]
    due_at: Option<String>,
}

/// F13, F14.
pub async fn set_next_refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
    Body(body): Body<NextRefreshBody>,
) -> ApiResult<Json<NextRefreshView>> {
    match state
        .engine
        .forms()
        .set_next_refresh(&caller, &form_id, body.minutes)
        .await
    {
        Ok(next) => Ok(Json(NextRefreshView {
            due_at: rfc3339(next.due_at),
        })),
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

/// A decision, made or planned, in words with the rule that made it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DecisionView {
    /// RFC 3339; `null` only for an instant outside the years 0001-9999.
    #[schemars(with = "Option<DateTime>")]
    at: Option<String>,
    decision: String,
    rule: String,
}

fn decision_view(decision: &NotedDecision) -> DecisionView {
    DecisionView {
        at: rfc3339(decision.at),
        decision: decision.decision.clone(),
        rule: decision.rule.clone(),
    }
}

/// Why a form did or did not refresh, and what is next.
#[derive(Serialize, schemars::JsonSchema)]
pub struct FormExplanationView {
    form_id: String,
    form_name: String,
    visible: bool,
    /// Counted refreshes today (F17).
    counted_today: u8,
    daily_quota: u8,
    #[schemars(with = "Option<DateTime>")]
    quota_resets_at: Option<String>,
    /// Kinds of refresh deferred until the form is shown.
    deferred: Vec<&'static str>,
    #[schemars(with = "Option<DateTime>")]
    pending_next_refresh: Option<String>,
    interval_minutes: Option<i64>,
    /// "HH:MM", in the device's zone.
    scheduled_times: Vec<String>,
    network_recovery: bool,
    data_proxy: bool,
    recent_decisions: Vec<DecisionView>,
    /// The next 10 planned refreshes.
    #[schemars(length(max = 10))]
    next_planned: Vec<DecisionView>,
}

/// Today's count, deferred kinds, pending next-refresh, recent decisions with their
/// rules, and the next 10 planned refreshes — for the device or the form's provider.
pub async fn explain_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(form_id): Path<String>,
) -> ApiResult<Json<FormExplanationView>> {
    let why = state.engine.forms().explain_form(&caller, &form_id).await?;
    Ok(Json(FormExplanationView {
        quota_resets_at: why.quota_resets_at.and_then(rfc3339),
        pending_next_refresh: why.pending_next_refresh.and_then(rfc3339),
        recent_decisions: why.recent_decisions.iter().map(decision_view).collect(),
        next_planned: why.next_planned.iter().map(decision_view).collect(),
        form_id: why.form_id,
        form_name: why.form_name,
        visible: why.visible,
        counted_today: why.counted_today,
        daily_quota: why.daily_quota,
        deferred: why.deferred,
        interval_minutes: why.interval_minutes,
        scheduled_times: why.scheduled_times,
        network_recovery: why.network_recovery,
        data_proxy: why.data_proxy,
    }))
}
