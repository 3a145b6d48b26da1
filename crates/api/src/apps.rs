//! Mini-program endpoints: the developer's periodic-fetch setting, fetch-now, log and
//! explain; the device's launch, token and cached-data read. Each handler reads the
//! request, calls one command of `engine.apps()` and writes its view.

use crate::error::ApiResult;
use crate::extract::{Body, Path, Query};
use crate::openapi::{DateTime, Id};
use crate::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use refreshd_engine::commands::{GrayInput, PeriodicInput, PeriodicView, SourceInput};
use refreshd_engine::wire::rfc3339;
use refreshd_engine::Caller;
use refreshd_rules::periodic::Source;
use serde::{Deserialize, Serialize};

/// Pattern of a cloud environment id or function name (P2): 1 to 128 of `A–Z a–z 0–9
/// _ . -`, not starting with `.` or `-`, without `..`.
pub(crate) const CLOUD_NAME_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.?$";

#[derive(Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudBody {
    /// An environment the platform configures.
    #[schemars(regex(pattern = CLOUD_NAME_PATTERN), length(min = 1, max = 128))]
    env: String,
    /// The function, one path segment after the environment's base URL.
    #[schemars(regex(pattern = CLOUD_NAME_PATTERN), length(min = 1, max = 128))]
    function: String,
}

/// Where the data comes from (P2): a URL, or a cloud function.
#[derive(Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SourceBody {
    Url(#[schemars(extend("format" = "uri"), length(max = 2048))] String),
    Cloud(CloudBody),
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrayBody {
    #[schemars(extend("format" = "uri"), length(max = 2048))]
    url: String,
    /// Share of users fetched from the gray URL (P3); 100 promotes it to the source.
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schemars(range(min = 0, max = 100))]
    percent: i64,
    /// Users always fetched from the gray URL.
    #[serde(default)]
    testers: Vec<String>,
}

/// A gray release as stored (P3).
#[derive(Serialize, schemars::JsonSchema)]
pub struct GrayView {
    url: String,
    #[schemars(range(max = 100))]
    percent: u8,
    testers: Vec<String>,
}

/// The app's periodic-fetch setting; `source` is `null` when it was never set.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SettingView {
    enabled: bool,
    source: Option<SourceBody>,
    gray: Option<GrayView>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodicBody {
    enabled: bool,
    source: SourceBody,
    /// A gray release (P3), or `null` for none.
    #[serde(default)]
    gray: Option<GrayBody>,
}

fn setting_view(view: &PeriodicView) -> SettingView {
    match &view.setting {
        None => SettingView {
            enabled: false,
            source: None,
            gray: None,
        },
        Some(setting) => SettingView {
            enabled: setting.enabled,
            source: Some(match &setting.source {
                Source::Url(url) => SourceBody::Url(url.clone()),
                Source::Cloud { env, function } => SourceBody::Cloud(CloudBody {
                    env: env.clone(),
                    function: function.clone(),
                }),
            }),
            gray: setting.gray.as_ref().map(|g| GrayView {
                url: g.url.clone(),
                percent: g.percent,
                testers: g.testers.clone(),
            }),
        },
    }
}

/// PUT replaces the whole setting (P1–P3); it is idempotent.
pub async fn put_periodic(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Body(body): Body<PeriodicBody>,
) -> ApiResult<Json<SettingView>> {
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
    Ok(Json(setting_view(&view)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    user_id: Id,
}

/// How a fetch ended (P13, P14).
#[derive(Serialize, schemars::JsonSchema)]
pub struct FetchNowView {
    #[schemars(extend("enum" = OUTCOMES))]
    outcome: &'static str,
    /// The developer server's status, when it answered.
    http_status: Option<u16>,
    /// When the data was fetched (ms since the epoch), when it was.
    time_stamp: Option<i64>,
}

/// Every fetch outcome (P13, P14).
const OUTCOMES: &[&str] = &[
    "ok",
    "not_modified",
    "invalid_response",
    "redirect",
    "http_status",
    "too_large",
    "not_utf8",
    "timeout",
    "connect",
    "blocked_address",
];

/// P11: fetch now and answer with the outcome.
pub async fn fetch_now(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Body(body): Body<UserBody>,
) -> ApiResult<Json<FetchNowView>> {
    let report = state
        .engine
        .apps()
        .fetch_now(&caller, &appid, &body.user_id.0)
        .await?;
    Ok(Json(FetchNowView {
        outcome: report.outcome.as_str(),
        http_status: report.http_status,
        time_stamp: report.time_stamp,
    }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// The user, as the operator named it when creating a device.
    user_id: Id,
}

/// One fetch attempt; never the token or the full URL.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AttemptView {
    /// RFC 3339; `null` only for an instant outside the years 0001-9999.
    #[schemars(with = "Option<DateTime>")]
    at: Option<String>,
    /// Whether the gray URL was fetched.
    gray: bool,
    #[schemars(extend("enum" = OUTCOMES))]
    outcome: String,
    http_status: Option<i64>,
    bytes: i64,
    duration_ms: i64,
}

/// The last 100 attempts, newest first.
#[derive(Serialize, schemars::JsonSchema)]
pub struct FetchLogView {
    #[schemars(length(max = 100))]
    attempts: Vec<AttemptView>,
}

/// The last 100 attempts, newest first; never the token or the full URL.
pub async fn fetch_log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Query(query): Query<UserQuery>,
) -> ApiResult<Json<FetchLogView>> {
    let attempts = state
        .engine
        .apps()
        .fetch_log(&caller, &appid, &query.user_id.0)
        .await?;
    let attempts = attempts
        .into_iter()
        .map(|e| AttemptView {
            at: rfc3339(e.at),
            gray: e.gray,
            outcome: e.outcome,
            http_status: e.http_status,
            bytes: e.bytes,
            duration_ms: e.duration_ms,
        })
        .collect();
    Ok(Json(FetchLogView { attempts }))
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ActivityView {
    /// When the user last launched the app (P6).
    #[schemars(with = "Option<DateTime>")]
    last_launch: Option<String>,
    /// Until when the user counts as active (P7).
    #[schemars(with = "Option<DateTime>")]
    active_until: Option<String>,
}

/// Where the user stands in the gray release (P3).
#[derive(Serialize, schemars::JsonSchema)]
pub struct GrayStatusView {
    #[schemars(range(max = 100))]
    percent: u8,
    tester: bool,
    bucket: u64,
}

/// The last fetch's outcome, with what a developer can do about it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct OutcomeView {
    /// RFC 3339; `null` only for an instant outside the years 0001-9999.
    #[schemars(with = "Option<DateTime>")]
    at: Option<String>,
    #[schemars(extend("enum" = OUTCOMES))]
    outcome: String,
    http_status: Option<i64>,
    hint: Option<&'static str>,
}

/// Why a user's data was or was not fetched, and when it will be.
#[derive(Serialize, schemars::JsonSchema)]
pub struct FetchExplanationView {
    enabled: bool,
    activity: ActivityView,
    token_set: bool,
    eligible: bool,
    /// Why the user is not eligible now (P7); `null` when eligible.
    ineligible_reason: Option<&'static str>,
    gray: Option<GrayStatusView>,
    last_outcome: Option<OutcomeView>,
    consecutive_failures: u32,
    #[schemars(with = "Option<DateTime>")]
    next_due: Option<String>,
    /// The explanation in words.
    why: String,
}

/// Why a user's data was or was not fetched, and when it will be.
pub async fn explain_fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Query(query): Query<UserQuery>,
) -> ApiResult<Json<FetchExplanationView>> {
    let why = state
        .engine
        .apps()
        .explain_fetch(&caller, &appid, &query.user_id.0)
        .await?;
    Ok(Json(FetchExplanationView {
        enabled: why.enabled,
        activity: ActivityView {
            last_launch: why.last_launch.and_then(rfc3339),
            active_until: why.active_until.and_then(rfc3339),
        },
        token_set: why.token_set,
        eligible: why.ineligible_reason.is_none(),
        ineligible_reason: why.ineligible_reason,
        gray: why.gray.map(|g| GrayStatusView {
            percent: g.percent,
            tester: g.tester,
            bucket: g.bucket,
        }),
        last_outcome: why.last_outcome.map(|e| OutcomeView {
            at: rfc3339(e.at),
            outcome: e.outcome,
            http_status: e.http_status,
            hint: e.hint,
        }),
        consecutive_failures: why.consecutive_failures,
        next_due: why.next_due.and_then(rfc3339),
        why: why.why,
    }))
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
    /// 1 to 1,024 characters.
    #[schemars(length(min = 1, max = 1024))]
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

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchTypeQuery {
    /// Only `periodic` is known (P15).
    #[serde(default)]
    fetch_type: Option<FetchType>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FetchType {
    Periodic,
}

/// The user's cached data (P15).
#[derive(Serialize, schemars::JsonSchema)]
pub struct CachedView {
    /// The developer server's body, as text.
    fetched_data: String,
    /// When it was fetched (ms since the epoch).
    time_stamp: i64,
}

/// P15: the user's cached data; never waits for a fetch in progress. The engine
/// answers the body already encoded as a [`CachedView`] (it keeps it so in its read
/// cache), so it is sent as it is, without being copied or escaped again.
pub async fn read_cached(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(appid): Path<String>,
    Query(query): Query<FetchTypeQuery>,
) -> ApiResult<Response> {
    let fetch_type = query.fetch_type.map(|FetchType::Periodic| "periodic");
    let body = state
        .engine
        .apps()
        .read_cached_body(&caller, &appid, fetch_type)
        .await?;
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::CachedView;

    /// The engine writes the body of `GET /v1/apps/{appid}/background-fetch` itself;
    /// it must be exactly what serializing this documented type gives.
    #[test]
    fn the_engines_cached_body_is_the_documented_view_byte_for_byte() {
        for (data, at) in [
            ("", 0),
            ("plain", 1_772_359_200_000),
            ("\"quoted\" \\ back/slash \n\t\r\u{0} \u{1f} é 天气 🌧", -1),
            ("{\"json\": [1, 2.5, null]}", i64::MAX),
        ] {
            let view = CachedView {
                fetched_data: data.to_string(),
                time_stamp: at,
            };
            assert_eq!(
                refreshd_engine::wire::cached_data_body(data, at).as_ref(),
                serde_json::to_vec(&view).unwrap().as_slice(),
                "{data:?}"
            );
        }
    }
}
