//! Mini-program endpoints: the developer's periodic-fetch setting, fetch-now, log and
//! explain; the device's launch, token and cached-data read.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::extract::{Path, Query};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use refreshd_engine::EngineError;
use refreshd_fetch::FetchFailure;
use refreshd_rules::periodic::{
    check_cloud_name, gray_bucket, App, Gray, PeriodicSetting, Source, ACTIVE_FOR_MS,
};
use refreshd_rules::Instant;
use refreshd_store::KeyKind;
use serde::Deserialize;
use serde_json::{json, Value};

/// Checks a source or refresh URL when it is configured (P2, api.md). `path` is the
/// field's JSON path; the answer's detail carries a hint on what would make it work.
pub fn check_destination(state: &AppState, path: &str, url: &str) -> ApiResult<()> {
    let Err(failure) = state.engine.fetcher().check_url(url) else {
        return Ok(());
    };
    let (message, hint) = match failure {
        FetchFailure::InvalidUrl(problem) => (
            format!("the URL is not acceptable: {problem}"),
            "give an absolute https:// URL without user name or password, of at most \
             2048 bytes; refreshd appends appid, token and timestamp itself (P12)",
        ),
        FetchFailure::Blocked(blocked) => (blocked.to_string(), blocked.hint()),
        FetchFailure::PlainHttpNotTrusted => (
            "use https://; plain http:// only reaches destinations the operator trusts".into(),
            "use https://, or have the operator trust the range with --allow-destination CIDR",
        ),
        other => (other.to_string(), ""),
    };
    let mut error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_url", message.clone());
    error.details.push(json!({
        "path": path,
        "code": "invalid_url",
        "message": message,
        "hint": hint,
    }));
    Err(error)
}

fn rfc3339(ms: i64) -> String {
    Instant::from_millis(ms)
        .to_timestamp()
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The app of the calling developer key, or 404 for any other app.
async fn own_app(state: &AppState, caller: &Principal, appid: &str) -> ApiResult<App> {
    let own = caller.require(KeyKind::App)?;
    if own != appid {
        return Err(ApiError::not_found("app_not_found"));
    }
    Ok(state.engine.app(appid).await?)
}

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

fn setting_json(app: &App) -> Value {
    match app.periodic() {
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
    Extension(caller): Extension<Principal>,
    Path(appid): Path<String>,
    Body(body): Body<PeriodicBody>,
) -> ApiResult<Json<Value>> {
    let mut app = own_app(&state, &caller, &appid).await?;
    let source = match body.source {
        SourceBody::Url(url) => {
            check_destination(&state, "$.source.url", &url)?;
            Source::Url(url)
        }
        SourceBody::Cloud(cloud) => {
            // P2's name pattern first, so a bad name is reported as such whatever
            // environments this platform configures.
            check_cloud_name("env", &cloud.env).map_err(EngineError::from)?;
            check_cloud_name("function", &cloud.function).map_err(EngineError::from)?;
            if !state.engine.settings().cloud_envs.contains_key(&cloud.env) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_url",
                    format!(
                        "cloud environment \"{}\" is not configured on this platform",
                        cloud.env
                    ),
                ));
            }
            Source::Cloud {
                env: cloud.env,
                function: cloud.function,
            }
        }
    };
    let gray = match body.gray {
        None => None,
        Some(gray) => {
            check_destination(&state, "$.gray.url", &gray.url)?;
            let percent = u8::try_from(gray.percent)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| ApiError::invalid_request("gray.percent must be 0 to 100"))?;
            Some(Gray {
                url: gray.url,
                percent,
                testers: gray.testers,
            })
        }
    };
    app.put_periodic(PeriodicSetting {
        enabled: body.enabled,
        source,
        gray,
    })
    .map_err(EngineError::from)?;
    let text = serde_json::to_string(&app).map_err(EngineError::corrupt)?;
    state
        .engine
        .store()
        .put_app(&appid, &text)
        .await
        .map_err(EngineError::from)?;
    state.engine.replan_app(&app).await?;
    Ok(Json(setting_json(&app)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    user_id: String,
}

/// P11: fetch now and answer with the outcome.
pub async fn fetch_now(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(appid): Path<String>,
    Body(body): Body<UserBody>,
) -> ApiResult<Json<Value>> {
    own_app(&state, &caller, &appid).await?;
    let report = state.engine.fetch_now(&appid, &body.user_id).await?;
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
    Extension(caller): Extension<Principal>,
    Path(appid): Path<String>,
    Query(query): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    own_app(&state, &caller, &appid).await?;
    let entries = state
        .engine
        .store()
        .fetch_log(&appid, &query.user_id, 100)
        .await
        .map_err(EngineError::from)?;
    let attempts: Vec<Value> = entries
        .iter()
        .map(|e| json!({"at": rfc3339(e.at), "gray": e.gray, "outcome": e.outcome, "http_status": e.http_status, "bytes": e.bytes, "duration_ms": e.duration_ms}))
        .collect();
    Ok(Json(json!({"attempts": attempts})))
}

/// Why a user's data was or was not fetched, and when it will be.
pub async fn explain_fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(appid): Path<String>,
    Query(query): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    let app = own_app(&state, &caller, &appid).await?;
    let now = state.engine.now();
    let record = state
        .engine
        .store()
        .get_pair(&appid, &query.user_id)
        .await
        .map_err(EngineError::from)?;
    let pair: refreshd_rules::periodic::FetchPair = match &record {
        Some(r) => serde_json::from_str(&r.state).map_err(EngineError::corrupt)?,
        None => Default::default(),
    };
    let log = state
        .engine
        .store()
        .fetch_log(&appid, &query.user_id, 1)
        .await
        .map_err(EngineError::from)?;
    let ineligible = pair.ineligibility(now, &app);
    let next = pair.next_wakeup(now, &app);
    let why = pair.next_fetch_reason(now, &app).to_string();
    let gray = app.periodic().and_then(|p| p.gray.as_ref()).map(|g| {
        json!({"percent": g.percent, "tester": g.testers.contains(&query.user_id), "bucket": gray_bucket(&appid, &query.user_id)})
    });
    Ok(Json(json!({
        "enabled": app.periodic_enabled(),
        "activity": {
            "last_launch": pair.last_launch().map(|l| rfc3339(l.as_millis())),
            "active_until": pair.last_launch().map(|l| rfc3339(l.plus_millis(ACTIVE_FOR_MS).as_millis())),
        },
        "token_set": pair.has_token(),
        "eligible": ineligible.is_none(),
        "ineligible_reason": ineligible.map(|i| i.code()),
        "gray": gray,
        "last_outcome": log.first().map(|e| json!({"at": rfc3339(e.at), "outcome": e.outcome, "http_status": e.http_status, "hint": outcome_hint(&e.outcome)})),
        "consecutive_failures": pair.consecutive_failures(),
        "next_due": next.map(|n| rfc3339(n.as_millis())),
        "why": why,
    })))
}

/// What a developer can do about a failed fetch, where one thing helps.
fn outcome_hint(outcome: &str) -> Option<&'static str> {
    (outcome == "blocked_address").then_some(
        "the source resolved to a private, loopback or reserved address, or to refreshd's \
         own API or metrics address: use a public https:// URL, or have the operator trust \
         the range with --allow-destination CIDR (refreshd's own addresses stay refused)",
    )
}

/// The user behind a device key.
async fn device_user(state: &AppState, caller: &Principal) -> ApiResult<String> {
    let device_id = caller.require(KeyKind::Device)?;
    let device = state
        .engine
        .store()
        .get_device(device_id)
        .await
        .map_err(EngineError::from)?;
    device.map(|d| d.user_id).ok_or_else(ApiError::unauthorized)
}

/// P6: the user launched the app.
pub async fn launch(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(appid): Path<String>,
) -> ApiResult<StatusCode> {
    let user = device_user(&state, &caller).await?;
    state.engine.launch(&appid, &user).await?;
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
    Extension(caller): Extension<Principal>,
    Path(appid): Path<String>,
    Body(body): Body<TokenBody>,
) -> ApiResult<StatusCode> {
    let user = device_user(&state, &caller).await?;
    state.engine.set_token(&appid, &user, &body.token).await?;
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
    Extension(caller): Extension<Principal>,
    Path(appid): Path<String>,
    Query(query): Query<FetchTypeQuery>,
) -> ApiResult<Json<Value>> {
    let user = device_user(&state, &caller).await?;
    if query.fetch_type.as_deref().is_some_and(|t| t != "periodic") {
        return Err(ApiError::invalid_request("fetch_type must be \"periodic\""));
    }
    state.engine.app(&appid).await?;
    let pair = state
        .engine
        .store()
        .get_pair(&appid, &user)
        .await
        .map_err(EngineError::from)?;
    match pair.and_then(|p| Some((p.cached_data?, p.cached_at?))) {
        Some((data, at)) => Ok(Json(json!({"fetched_data": data, "time_stamp": at}))),
        None => Err(ApiError::not_found("no_cached_data")),
    }
}
