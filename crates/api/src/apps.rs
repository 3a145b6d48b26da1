//! Mini-program endpoints: the developer's periodic-fetch setting, fetch-now, log and
//! explain; the device's launch, token and cached-data read. Each handler reads the
//! request, calls one command of `engine.apps()` and writes its view.

use crate::error::ApiResult;
use crate::extract::{Body, Path, Query};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::commands::{GrayInput, PeriodicInput, PeriodicView, SourceInput};
use refreshd_engine::wire::rfc3339;
use refreshd_engine::Caller;
use refreshd_rules::periodic::Source;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudBody {
    env: String,
    function: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SourceBody {
    Url(String),
    Cloud(CloudBody),
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrayBody {
    url: String,
    percent: i64,
    #[serde(default)]
    testers: Vec<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodicBody {
    enabled: bool,
    source: SourceBody,
    #[serde(default)]
    gray: Option<GrayBody>,
}

fn setting_json(view: &PeriodicView) -> Value {
    match &view.setting {
        None => json!({"enabled": false, "source": null, "gray": null}),
        Some(setting) => {
            let source = match &setting.source {
                Source::Url(url) => json!({"url": url}),
                Source::Cloud { env, function } => {
                    json!({"cloud": {"env": env, "function": function}})
                }
            };
            let gray = setting
                .gray
                .as_ref()
                .map(|g| json!({"url": g.url, "percent": g.percent, "testers": g.testers}));
            json!({"enabled": setting.enabled, "source": source, "gray": gray})
        }
    }
}

/// PUT replaces the whole setting (P1–P3); it is idempotent.
pub async fn put_periodic(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Body(body): Body<PeriodicBody>,
) -> ApiResult<Json<Value>> {
    let input = PeriodicInput {
        enabled: body.enabled,
        source: match body.source {
            SourceBody::Url(url) => SourceInput::Url(url),
            SourceBody::Cloud(cloud) => SourceInput::Cloud {
                env: cloud.env,
                function: cloud.function,
            },
        },
        gray: body.gray.map(|gray| GrayInput {
            url: gray.url,
            percent: gray.percent,
            testers: gray.testers,
        }),
    };
    let view = state
        .engine
        .apps()
        .put_periodic(&caller, &appid, input)
        .await?;
    Ok(Json(setting_json(&view)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    user_id: String,
}

/// P11: fetch now and answer with the outcome.
pub async fn fetch_now(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Body(body): Body<UserBody>,
) -> ApiResult<Json<Value>> {
    let report = state
        .engine
        .apps()
        .fetch_now(&caller, &appid, &body.user_id)
        .await?;
    Ok(Json(json!({
        "outcome": report.outcome.as_str(),
        "http_status": report.http_status,
        "time_stamp": report.time_stamp,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    user_id: String,
}

/// The last 100 attempts, newest first; never the token or the full URL.
pub async fn fetch_log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Query(query): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    let attempts = state
        .engine
        .apps()
        .fetch_log(&caller, &appid, &query.user_id)
        .await?;
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|e| json!({"at": rfc3339(e.at), "gray": e.gray, "outcome": e.outcome, "http_status": e.http_status, "bytes": e.bytes, "duration_ms": e.duration_ms}))
        .collect();
    Ok(Json(json!({"attempts": attempts})))
}

/// Why a user's data was or was not fetched, and when it will be.
pub async fn explain_fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Query(query): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    let why = state
        .engine
        .apps()
        .explain_fetch(&caller, &appid, &query.user_id)
        .await?;
    Ok(Json(json!({
        "enabled": why.enabled,
        "activity": {
            "last_launch": why.last_launch.map(rfc3339),
            "active_until": why.active_until.map(rfc3339),
        },
        "token_set": why.token_set,
        "eligible": why.ineligible_reason.is_none(),
        "ineligible_reason": why.ineligible_reason,
        "gray": why.gray.map(|g| json!({"percent": g.percent, "tester": g.tester, "bucket": g.bucket})),
        "last_outcome": why.last_outcome.map(|e| json!({"at": rfc3339(e.at), "outcome": e.outcome, "http_status": e.http_status, "hint": e.hint})),
        "consecutive_failures": why.consecutive_failures,
        "next_due": why.next_due.map(rfc3339),
        "why": why.why,
    })))
}

/// P6: the user launched the app.
pub async fn launch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
) -> ApiResult<StatusCode> {
    state.engine.apps().launch(&caller, &appid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    token: String,
}

/// P5: the user's token.
pub async fn set_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Body(body): Body<TokenBody>,
) -> ApiResult<StatusCode> {
    state
        .engine
        .apps()
        .set_token(&caller, &appid, &body.token)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchTypeQuery {
    #[serde(default)]
    fetch_type: Option<String>,
}

/// P15: the user's cached data; never waits for a fetch in progress.
pub async fn read_cached(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Query(query): Query<FetchTypeQuery>,
) -> ApiResult<Json<Value>> {
    let cached = state
        .engine
        .apps()
        .read_cached(&caller, &appid, query.fetch_type.as_deref())
        .await?;
    Ok(Json(
        json!({"fetched_data": cached.fetched_data, "time_stamp": cached.time_stamp}),
    ))
}
