//! Periodic data prefetch for mini-programs (P1–P15).
//!
//! Two kinds of state: an [`App`] (its subject type and periodic-fetch setting, with the
//! grayscale rollout) and a [`FetchPair`] per user of an app (activity, token presence,
//! failure count and the next planned fetch). The pair decides *when*; the app decides
//! *where* (P4). What a response means for the pair's schedule is [`FetchOutcome`], and
//! what it means for the cached data is [`FetchCache`].

use crate::error::RuleError;
use crate::time::{Instant, HOUR_MS, MINUTE_MS};
use sha2::{Digest, Sha256};

/// A user stays active this long after their last launch (P6).
pub const ACTIVE_FOR_MS: i64 = 168 * HOUR_MS;
/// Time between successful fetches, before jitter (P8).
pub const SUCCESS_INTERVAL_MS: i64 = 12 * HOUR_MS;
/// Retry delays after the first, second and third consecutive failure (P9).
pub const RETRY_DELAYS_MS: [i64; 3] = [5 * MINUTE_MS, 15 * MINUTE_MS, 45 * MINUTE_MS];
/// The delay after the fourth and later consecutive failures (P9).
pub const LONG_RETRY_MS: i64 = 12 * HOUR_MS;
/// The largest cached body (P13).
pub const MAX_BODY_BYTES: usize = 262_144;
/// The longest token, in Unicode code points (P5).
pub const MAX_TOKEN_CHARS: usize = 1024;

/// P1: who publishes the app; individuals may only use cloud sources (P2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    Individual,
    Organization,
}

/// Where an app's data comes from (P2).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An `https://` URL (or an operator-trusted destination), organizations only.
    Url(String),
    /// A cloud function the platform maps to an internal endpoint.
    Cloud { env: String, function: String },
}

/// A grayscale rollout to a second URL (P3).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gray {
    pub url: String,
    pub percent: u8,
    pub testers: Vec<String>,
}

/// An app's periodic-fetch setting.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeriodicSetting {
    pub enabled: bool,
    pub source: Source,
    /// An active rollout; `None` when there is none (never started, or promoted).
    pub gray: Option<Gray>,
}

/// A mini-program app (P1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct App {
    appid: String,
    subject: SubjectType,
    periodic: Option<PeriodicSetting>,
}

/// Where one fetch goes (P4), before the query of P12 is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchTarget {
    pub source: Source,
    pub gray: bool,
}

impl App {
    /// An app with an optional setting, validated as [`App::put_periodic`] would.
    pub fn new(
        appid: impl Into<String>,
        subject: SubjectType,
        periodic: Option<PeriodicSetting>,
    ) -> Result<Self, RuleError> {
        let mut app = App {
            appid: appid.into(),
            subject,
            periodic: None,
        };
        if let Some(setting) = periodic {
            app.put_periodic(setting)?;
        }
        Ok(app)
    }

    pub fn appid(&self) -> &str {
        &self.appid
    }
    pub fn subject(&self) -> SubjectType {
        self.subject
    }
    pub fn periodic(&self) -> Option<&PeriodicSetting> {
        self.periodic.as_ref()
    }
    /// P7: periodic fetch is configured and enabled.
    pub fn periodic_enabled(&self) -> bool {
        self.periodic.as_ref().is_some_and(|p| p.enabled)
    }

    /// Drops `user_id` from the rollout's testers (a user erased on request); true when
    /// it was one. The percentage is untouched, so this never retracts a rollout (P3).
    pub fn forget_tester(&mut self, user_id: &str) -> bool {
        let Some(gray) = self.periodic.as_mut().and_then(|p| p.gray.as_mut()) else {
            return false;
        };
        let before = gray.testers.len();
        gray.testers.retain(|t| t != user_id);
        gray.testers.len() != before
    }

    /// Replaces the whole setting (P2, P3): individuals may not use URL sources; gray
    /// needs a URL source; an active rollout may not be lowered or withdrawn; 100 %
    /// promotes the gray URL to the main URL.
    pub fn put_periodic(&mut self, setting: PeriodicSetting) -> Result<(), RuleError> {
        check_source(self.subject, &setting.source)?;
        let current_gray = self.periodic.as_ref().and_then(|p| p.gray.as_ref());
        if let Some(gray) = &setting.gray {
            if !matches!(setting.source, Source::Url(_)) {
                return Err(RuleError::SourceNotAllowed(
                    "grayscale needs a URL source (P3a)",
                ));
            }
            if gray.percent > 100 {
                return Err(RuleError::InvalidGrayPercent);
            }
            if current_gray.is_some_and(|c| gray.percent < c.percent) {
                return Err(RuleError::GrayCannotRetract);
            }
        } else if current_gray.is_some() {
            return Err(RuleError::GrayCannotRetract);
        }
        let mut setting = setting;
        promote_if_complete(&mut setting);
        self.periodic = Some(setting);
        Ok(())
    }

    /// P3, P3a: raises (or keeps) the rollout percentage, optionally replacing the gray
    /// URL and the testers. A lowering is rejected whole.
    pub fn set_gray(
        &mut self,
        percent: i64,
        url: Option<String>,
        testers: Option<Vec<String>>,
    ) -> Result<(), RuleError> {
        let Some(setting) = self.periodic.as_mut() else {
            return Err(RuleError::SourceNotAllowed(
                "grayscale needs a periodic URL source (P3a)",
            ));
        };
        if !matches!(setting.source, Source::Url(_)) {
            return Err(RuleError::SourceNotAllowed(
                "grayscale needs a URL source (P3a)",
            ));
        }
        let percent = u8::try_from(percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or(RuleError::InvalidGrayPercent)?;
        let mut gray = match (setting.gray.take(), url) {
            (Some(current), _) if percent < current.percent => {
                setting.gray = Some(current);
                return Err(RuleError::GrayCannotRetract);
            }
            (Some(mut current), url) => {
                if let Some(url) = url {
                    current.url = url;
                }
                current
            }
            (None, Some(url)) => Gray {
                url,
                percent,
                testers: Vec::new(),
            },
            (None, None) => return Err(RuleError::GrayUrlNotSet),
        };
        gray.percent = percent;
        if let Some(testers) = testers {
            gray.testers = testers;
        }
        setting.gray = Some(gray);
        promote_if_complete(setting);
        Ok(())
    }

    /// P4: which URL this user's fetch goes to.
    pub fn target_for(&self, user: &str) -> Option<FetchTarget> {
        let setting = self.periodic.as_ref()?;
        if let Some(gray) = &setting.gray {
            if self.in_gray_group(gray, user) {
                return Some(FetchTarget {
                    source: Source::Url(gray.url.clone()),
                    gray: true,
                });
            }
        }
        Some(FetchTarget {
            source: setting.source.clone(),
            gray: false,
        })
    }
}

/// P2: individual apps may only use cloud sources; a cloud source names a valid
/// environment and function.
fn check_source(subject: SubjectType, source: &Source) -> Result<(), RuleError> {
    match (subject, source) {
        (SubjectType::Individual, Source::Url(_)) => Err(RuleError::SourceNotAllowed(
            "individual apps may only use cloud sources (P2)",
        )),
        (_, Source::Cloud { env, function }) => {
            check_cloud_name("env", env)?;
            check_cloud_name("function", function)
        }
        _ => Ok(()),
    }
}

/// The longest cloud environment id or function name (P2).
pub const MAX_CLOUD_NAME_CHARS: usize = 128;

/// P2: a cloud environment id or function name (`field` says which) is 1 to 128
/// characters of `A–Z a–z 0–9 _ . -`, does not start with `.` or `-`, and holds no
/// `..`. The platform fetches `base_url/FUNCTION`, so the function is a path segment:
/// `..` or `.` would climb out of the environment's base path (`/fn/..` is `/`), and a
/// leading `-` reads as an option to tools that handle these names.
pub fn check_cloud_name(field: &'static str, name: &str) -> Result<(), RuleError> {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let valid = (1..=MAX_CLOUD_NAME_CHARS).contains(&bytes.len())
        && !matches!(bytes[0], b'.' | b'-')
        && bytes.iter().all(allowed)
        && !name.contains("..");
    if valid {
        Ok(())
    } else {
        Err(RuleError::InvalidCloudName { field })
    }
}

/// P3: a rollout at 100 % makes the gray URL the main URL and ends the rollout.
fn promote_if_complete(setting: &mut PeriodicSetting) {
    if setting.gray.as_ref().is_some_and(|g| g.percent >= 100) {
        if let Some(gray) = setting.gray.take() {
            setting.source = Source::Url(gray.url);
        }
    }
}

fn sha256_prefix_u64(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}

/// P4: the user's stable bucket 0..100 for an app.
impl App {
    /// P4: a tester, or a user whose bucket is below the rollout's percentage.
    pub fn in_gray_group(&self, gray: &Gray, user: &str) -> bool {
        gray.testers.iter().any(|t| t == user)
            || gray_bucket(&self.appid, user) < gray.percent as u64
    }
}

pub fn gray_bucket(appid: &str, user: &str) -> u64 {
    sha256_prefix_u64(&format!("{appid}\n{user}")) % 100
}

/// P8: the user's stable jitter, in milliseconds, below `jitter_minutes`.
pub fn fetch_jitter_ms(appid: &str, user: &str, jitter_minutes: u32) -> i64 {
    let window_seconds = jitter_minutes as u64 * 60;
    if window_seconds == 0 {
        return 0;
    }
    let seconds = sha256_prefix_u64(&format!("{appid}\n{user}\njitter")) % window_seconds;
    seconds as i64 * 1000
}

/// P5: a token is 1 to 1024 Unicode code points.
pub fn validate_token(token: &str) -> Result<(), RuleError> {
    let chars = token.chars().count();
    if (1..=MAX_TOKEN_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(RuleError::InvalidToken)
    }
}

/// How one fetch ended (P13, P14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FetchOutcome {
    Ok,
    NotModified,
    InvalidResponse,
    Redirect,
    HttpStatus,
    TooLarge,
    NotUtf8,
    Timeout,
    Connect,
    BlockedAddress,
}

impl FetchOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            FetchOutcome::Ok => "ok",
            FetchOutcome::NotModified => "not_modified",
            FetchOutcome::InvalidResponse => "invalid_response",
            FetchOutcome::Redirect => "redirect",
            FetchOutcome::HttpStatus => "http_status",
            FetchOutcome::TooLarge => "too_large",
            FetchOutcome::NotUtf8 => "not_utf8",
            FetchOutcome::Timeout => "timeout",
            FetchOutcome::Connect => "connect",
            FetchOutcome::BlockedAddress => "blocked_address",
        }
    }

    /// P13: a 2xx with an acceptable body, or a 304.
    pub const fn is_success(self) -> bool {
        matches!(self, FetchOutcome::Ok | FetchOutcome::NotModified)
    }

    /// P9: a `Retry-After` counts on failures that got a well-formed HTTP response.
    pub const fn had_http_response(self) -> bool {
        matches!(
            self,
            FetchOutcome::Redirect
                | FetchOutcome::HttpStatus
                | FetchOutcome::TooLarge
                | FetchOutcome::NotUtf8
        )
    }
}

/// P13, P14: the outcome of a response with `status` and a body of `body_len` bytes whose
/// validity as UTF-8 is `body_is_utf8`. Size is judged before encoding.
pub fn classify_response(status: u16, body_len: usize, body_is_utf8: bool) -> FetchOutcome {
    match status {
        304 => FetchOutcome::NotModified,
        200..=299 if body_len > MAX_BODY_BYTES => FetchOutcome::TooLarge,
        200..=299 if !body_is_utf8 => FetchOutcome::NotUtf8,
        200..=299 => FetchOutcome::Ok,
        300..=399 => FetchOutcome::Redirect,
        100..=199 => FetchOutcome::InvalidResponse,
        400..=599 => FetchOutcome::HttpStatus,
        _ => FetchOutcome::InvalidResponse,
    }
}

/// P12: the fetch URL: `appid`, `token` and `timestamp` appended to the query in that
/// order, form-urlencoded; the fragment dropped.
pub fn fetch_url(base: &str, appid: &str, token: &str, timestamp_ms: i64) -> String {
    let without_fragment = base.split_once('#').map_or(base, |(b, _)| b);
    let mut url = String::with_capacity(without_fragment.len() + token.len() + 64);
    url.push_str(without_fragment);
    match without_fragment.split_once('?') {
        None => url.push('?'),
        Some((_, "")) => {}
        Some(_) => url.push('&'),
    }
    url.push_str("appid=");
    form_urlencode_into(&mut url, appid);
    url.push_str("&token=");
    form_urlencode_into(&mut url, token);
    url.push_str("&timestamp=");
    url.push_str(&timestamp_ms.to_string());
    url
}

/// WHATWG `application/x-www-form-urlencoded` byte serializer (P12).
pub fn form_urlencode_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(byte >> 4) as usize] as char);
                out.push(HEX[(byte & 15) as usize] as char);
            }
        }
    }
}

/// One user's periodic fetch for one app (P5–P11).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FetchPair {
    last_launch: Option<Instant>,
    has_token: bool,
    attempted: bool,
    consecutive_failures: u32,
    /// P8/P9: the next fetch time, set by every attempt.
    planned: Option<Instant>,
    /// A fetch was ordered and its outcome is not yet recorded.
    in_flight: bool,
}

/// An order to fetch, produced by [`FetchPair::wake`] or [`FetchPair::fetch_now`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOrder {
    pub target: FetchTarget,
}

/// Why a pair has no fetch planned, for explanations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ineligible {
    PeriodicDisabled,
    NeverLaunched,
    Inactive { since: Instant },
    TokenNotSet,
}

impl Ineligible {
    pub fn code(self) -> &'static str {
        match self {
            Ineligible::PeriodicDisabled => "periodic_disabled",
            Ineligible::NeverLaunched => "never_launched",
            Ineligible::Inactive { .. } => "inactive",
            Ineligible::TokenNotSet => "token_not_set",
        }
    }
}

/// Why a pair's next fetch is planned when it is, for explanations (P7–P9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextFetchReason {
    /// P7: no fetch until this changes.
    Ineligible(Ineligible),
    /// P8: never attempted, so due as soon as it is eligible.
    FirstFetch,
    /// P8: twelve hours after the last success.
    AfterSuccess,
    /// P9: backing off after this many consecutive failures.
    Retry { failures: u32 },
}

impl std::fmt::Display for NextFetchReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextFetchReason::Ineligible(why) => write!(f, "not eligible: {} (P7)", why.code()),
            NextFetchReason::FirstFetch => {
                f.write_str("never attempted: due as soon as eligible (P8)")
            }
            NextFetchReason::AfterSuccess => {
                f.write_str("12 h after the last success, plus jitter (P8)")
            }
            NextFetchReason::Retry { failures } => write!(f, "retry after failure {failures} (P9)"),
        }
    }
}

impl FetchPair {
    /// Why the next fetch is planned when it is, seen from `now`.
    pub fn next_fetch_reason(&self, now: Instant, app: &App) -> NextFetchReason {
        if let Some(why) = self.ineligibility(now, app) {
            return NextFetchReason::Ineligible(why);
        }
        match (self.attempted, self.consecutive_failures) {
            (false, _) => NextFetchReason::FirstFetch,
            (true, 0) => NextFetchReason::AfterSuccess,
            (true, failures) => NextFetchReason::Retry { failures },
        }
    }

    pub fn last_launch(&self) -> Option<Instant> {
        self.last_launch
    }
    pub fn has_token(&self) -> bool {
        self.has_token
    }
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
    pub fn planned(&self) -> Option<Instant> {
        self.planned
    }
    pub fn is_in_flight(&self) -> bool {
        self.in_flight
    }

    /// A pair carried over from elsewhere (an operator importing a user base): as if
    /// the user launched at `last_launch`, set a token when `has_token`, and had a
    /// successful fetch complete at `last_success` (P8: the next one is due 12 h after
    /// it, plus the user's `jitter_ms`). Without a success it is due once eligible.
    pub fn imported(
        last_launch: Instant,
        has_token: bool,
        last_success: Option<Instant>,
        jitter_ms: i64,
    ) -> FetchPair {
        let mut pair = FetchPair::default();
        pair.launch(last_launch);
        if has_token {
            pair.token_set();
        }
        if let Some(at) = last_success {
            pair.record_outcome(at, FetchOutcome::Ok, None, jitter_ms);
        }
        pair
    }

    /// P6: records a launch.
    pub fn launch(&mut self, now: Instant) {
        self.last_launch = Some(self.last_launch.map_or(now, |l| l.max(now)));
    }

    /// After a crash, a fetch that was ordered but never recorded is ordered again: it is
    /// overdue, and an overdue fetch runs once (T5).
    pub fn abandon_in_flight(&mut self) {
        self.in_flight = false;
    }

    /// P5: the token itself is kept by the caller (a secret); the rules only need to
    /// know that one is set.
    pub fn token_set(&mut self) {
        self.has_token = true;
    }

    /// P7: why the pair is not eligible at `now`, or `None` when it is.
    pub fn ineligibility(&self, now: Instant, app: &App) -> Option<Ineligible> {
        if !app.periodic_enabled() {
            return Some(Ineligible::PeriodicDisabled);
        }
        let Some(launch) = self.last_launch else {
            return Some(Ineligible::NeverLaunched);
        };
        let active_until = launch.plus_millis(ACTIVE_FOR_MS);
        if now >= active_until {
            return Some(Ineligible::Inactive {
                since: active_until,
            });
        }
        if !self.has_token {
            return Some(Ineligible::TokenNotSet);
        }
        None
    }

    /// P8, P10: when the next fetch is due, seen from `now` (never earlier than `now`),
    /// or `None` when the pair will not be eligible then.
    pub fn next_wakeup(&self, now: Instant, app: &App) -> Option<Instant> {
        if self.in_flight || !app.periodic_enabled() || !self.has_token {
            return None;
        }
        let active_until = self.last_launch?.plus_millis(ACTIVE_FOR_MS);
        let due = self
            .planned
            .filter(|_| self.attempted)
            .unwrap_or(now)
            .max(now);
        (due < active_until).then_some(due)
    }

    /// Orders the fetch if one is due at `now` (an overdue fetch runs once, T5).
    pub fn wake(&mut self, now: Instant, app: &App, user: &str) -> Option<FetchOrder> {
        if self.next_wakeup(now, app)? > now {
            return None;
        }
        self.order(app, user)
    }

    /// P11: a developer's immediate fetch, ignoring activity and schedule.
    pub fn fetch_now(&mut self, app: &App, user: &str) -> Result<FetchOrder, RuleError> {
        if !app.periodic_enabled() {
            return Err(RuleError::PeriodicDisabled);
        }
        if !self.has_token {
            return Err(RuleError::TokenNotSet);
        }
        self.order(app, user).ok_or(RuleError::PeriodicDisabled)
    }

    fn order(&mut self, app: &App, user: &str) -> Option<FetchOrder> {
        let target = app.target_for(user)?;
        self.in_flight = true;
        Some(FetchOrder { target })
    }

    /// P8, P9: plans the next fetch from an attempt that completed at `now`.
    /// `retry_after_ms` is the response's `Retry-After`, if any.
    pub fn record_outcome(
        &mut self,
        now: Instant,
        outcome: FetchOutcome,
        retry_after_ms: Option<i64>,
        jitter_ms: i64,
    ) -> Instant {
        self.in_flight = false;
        self.attempted = true;
        let delay = if outcome.is_success() {
            self.consecutive_failures = 0;
            SUCCESS_INTERVAL_MS + jitter_ms
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            let computed = RETRY_DELAYS_MS
                .get(self.consecutive_failures as usize - 1)
                .copied()
                .unwrap_or(LONG_RETRY_MS);
            match retry_after_ms {
                Some(retry) if outcome.had_http_response() && retry > computed => retry,
                _ => computed,
            }
        };
        let next = now.plus_millis(delay);
        self.planned = Some(next);
        next
    }
}

/// How a fetch of a pair ended, as the network answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchAnswer {
    /// The URL fetched, as configured (before the P12 query): ETags belong to it.
    pub url: String,
    pub outcome: FetchOutcome,
    /// The whole body of a success (empty otherwise).
    pub body: String,
    pub etag: Option<String>,
    /// The response's `Retry-After`, if it had one (P9).
    pub retry_after_ms: Option<i64>,
    /// When the request was sent and when its answer was complete.
    pub sent_at: Instant,
    pub completed_at: Instant,
}

/// What a completed fetch changed (P8, P9, P13, P14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The instant P8 or P9 plans for the next attempt.
    pub planned: Instant,
    /// When the pair must be woken next, seen from the completion (P10: `None` when it
    /// will not be eligible then).
    pub next_wakeup: Option<Instant>,
    /// Whether the cached data, time stamp or ETag moved (P13; failures never do).
    pub cache_changed: bool,
}

impl FetchPair {
    /// P8, P9, P13, P14: records a completed fetch of `user`'s pair of `app` in the
    /// pair's schedule (with the user's P8 jitter, of `jitter_minutes`) and in its
    /// cache, and says when the pair is due next. Every driver (the service's engine,
    /// the simulator) completes fetches through here, so they cannot compose these
    /// rules differently.
    pub fn complete(
        &mut self,
        app: &App,
        user: &str,
        answer: FetchAnswer,
        jitter_minutes: u32,
        cache: &mut FetchCache,
    ) -> Completion {
        let jitter = fetch_jitter_ms(app.appid(), user, jitter_minutes);
        let planned = self.record_outcome(
            answer.completed_at,
            answer.outcome,
            answer.retry_after_ms,
            jitter,
        );
        let cache_changed = cache.apply(
            answer.outcome,
            &answer.url,
            answer.body,
            answer.etag,
            answer.sent_at.as_millis(),
            answer.completed_at.as_millis(),
        );
        Completion {
            planned,
            next_wakeup: self.next_wakeup(answer.completed_at, app),
            cache_changed,
        }
    }
}

/// The cached data of one user and app (P13, P15) with the ETag it was served with.
/// An ETag belongs to the URL it came from (section S).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchCache {
    pub data: Option<String>,
    pub time_stamp_ms: Option<i64>,
    /// When the fetch that last changed the cache was sent (ms).
    pub sent_at_ms: Option<i64>,
    pub etag: Option<(String, String)>,
}

impl FetchCache {
    /// P15: the cached data and its time stamp (ms), or `None` (`no_cached_data`). A read
    /// never waits for a fetch in progress: it sees the last completed one.
    pub fn read(&self) -> Option<(&str, i64)> {
        Some((self.data.as_deref()?, self.time_stamp_ms?))
    }

    /// P12: the `If-None-Match` for a fetch of `url`.
    pub fn if_none_match(&self, url: &str) -> Option<&str> {
        match &self.etag {
            Some((for_url, etag)) if for_url == url => Some(etag),
            _ => None,
        }
    }

    /// P13, P14: applies a fetch of `url` sent at `sent_at_ms` and completed at
    /// `completed_at_ms`; true when the cache changed. Failures change nothing.
    ///
    /// The cache only moves forward: two fetches of one user may overlap (a fetch-now
    /// beside a scheduled one, P11), and the answer of the fetch sent later is the
    /// fresher one whichever finishes last, so a fetch sent before the one that last
    /// changed the cache changes nothing.
    pub fn apply(
        &mut self,
        outcome: FetchOutcome,
        url: &str,
        body: String,
        etag: Option<String>,
        sent_at_ms: i64,
        completed_at_ms: i64,
    ) -> bool {
        if !matches!(outcome, FetchOutcome::Ok | FetchOutcome::NotModified) {
            return false;
        }
        if self.sent_at_ms.is_some_and(|last| sent_at_ms < last) {
            return false;
        }
        self.sent_at_ms = Some(sent_at_ms);
        // A later-sent fetch that completed first keeps its (later) time stamp.
        let time_stamp = self
            .time_stamp_ms
            .map_or(completed_at_ms, |t| t.max(completed_at_ms));
        self.time_stamp_ms = Some(time_stamp);
        if outcome == FetchOutcome::Ok {
            self.data = Some(body);
            self.etag = etag.map(|e| (url.to_string(), e));
        } else if let Some(e) = etag {
            self.etag = Some((url.to_string(), e));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_app(gray: Option<Gray>) -> App {
        App::new(
            "wx1",
            SubjectType::Organization,
            Some(PeriodicSetting {
                enabled: true,
                source: Source::Url("https://data.example.com/feed".into()),
                gray,
            }),
        )
        .unwrap()
    }

    fn gray(percent: u8) -> Gray {
        Gray {
            url: "https://gray.example.com/feed".into(),
            percent,
            testers: vec!["tester".into()],
        }
    }

    const T0: Instant = Instant::from_millis(1_772_352_000_000);

    #[test]
    fn p1_app_without_periodic_setting_never_fetches() {
        let app = App::new("wx0", SubjectType::Organization, None).unwrap();
        assert!(!app.periodic_enabled());
        assert_eq!(app.target_for("u"), None);
        let mut pair = FetchPair::default();
        pair.launch(T0);
        pair.token_set();
        assert_eq!(pair.next_wakeup(T0, &app), None);
        assert_eq!(
            pair.ineligibility(T0, &app),
            Some(Ineligible::PeriodicDisabled)
        );
        assert_eq!(pair.fetch_now(&app, "u"), Err(RuleError::PeriodicDisabled));
    }

    #[test]
    fn p15_read_returns_last_completed_fetch_or_nothing() {
        let mut cache = FetchCache::default();
        assert_eq!(cache.read(), None, "no_cached_data");
        cache.apply(FetchOutcome::Ok, "u", String::new(), None, 5, 5);
        assert_eq!(
            cache.read(),
            Some(("", 5)),
            "an empty 200 is cached data too"
        );
        cache.apply(FetchOutcome::TooLarge, "u", "x".into(), None, 6, 6);
        assert_eq!(cache.read(), Some(("", 5)));
    }

    #[test]
    fn p2_cloud_names_that_could_leave_the_base_path_are_rejected() {
        let cloud = |env: &str, function: &str| {
            App::new(
                "i",
                SubjectType::Individual,
                Some(PeriodicSetting {
                    enabled: true,
                    source: Source::Cloud {
                        env: env.into(),
                        function: function.into(),
                    },
                    gray: None,
                }),
            )
        };
        let long = "f".repeat(MAX_CLOUD_NAME_CHARS);
        for good in [
            "f",
            "getData",
            "v1.2-beta_3",
            "_x",
            "9",
            "a.b",
            long.as_str(),
        ] {
            assert!(cloud("prod-7f3a", good).is_ok(), "{good}");
        }
        let too_long = "f".repeat(MAX_CLOUD_NAME_CHARS + 1);
        for bad in [
            "",
            "..",
            ".",
            "a..b",
            "fn/..",
            "../etc",
            "%2e%2e",
            ".hidden",
            "-rf",
            "a/b",
            "a b",
            "é",
            "a?x=1",
            too_long.as_str(),
        ] {
            let error = cloud("prod", bad).unwrap_err();
            assert_eq!(
                error,
                RuleError::InvalidCloudName { field: "function" },
                "{bad:?}"
            );
            assert_eq!(error.code(), "invalid_url");
        }
        assert_eq!(
            cloud("..", "f").unwrap_err(),
            RuleError::InvalidCloudName { field: "env" }
        );
    }

    #[test]
    fn p2_individual_apps_may_only_use_cloud() {
        let err = App::new(
            "i",
            SubjectType::Individual,
            Some(PeriodicSetting {
                enabled: true,
                source: Source::Url("https://x.example/".into()),
                gray: None,
            }),
        )
        .unwrap_err();
        assert_eq!(err.code(), "source_not_allowed");
        assert!(App::new(
            "i",
            SubjectType::Individual,
            Some(PeriodicSetting {
                enabled: true,
                source: Source::Cloud {
                    env: "e".into(),
                    function: "f".into()
                },
                gray: None,
            }),
        )
        .is_ok());
    }

    #[test]
    fn p3_gray_cannot_be_lowered_and_rejection_changes_nothing() {
        let mut app = url_app(Some(gray(30)));
        let before = app.clone();
        assert_eq!(
            app.set_gray(20, Some("https://other.example/".into()), None),
            Err(RuleError::GrayCannotRetract)
        );
        assert_eq!(app, before);
        assert_eq!(app.set_gray(30, None, None), Ok(()));
    }

    #[test]
    fn p3_hundred_percent_promotes_and_ends_rollout() {
        let mut app = url_app(Some(gray(30)));
        app.set_gray(100, None, None).unwrap();
        let setting = app.periodic().unwrap();
        assert_eq!(
            setting.source,
            Source::Url("https://gray.example.com/feed".into())
        );
        assert!(setting.gray.is_none());
        assert!(!app.target_for("tester").unwrap().gray);
        // P3a: after a promotion, a new rollout needs a URL and may start anywhere.
        assert_eq!(app.set_gray(5, None, None), Err(RuleError::GrayUrlNotSet));
        assert_eq!(
            app.set_gray(0, Some("https://g2.example/".into()), None),
            Ok(())
        );
    }

    #[test]
    fn p3a_put_cannot_withdraw_active_rollout() {
        let mut app = url_app(Some(gray(10)));
        let err = app
            .put_periodic(PeriodicSetting {
                enabled: true,
                source: Source::Url("https://data.example.com/feed".into()),
                gray: None,
            })
            .unwrap_err();
        assert_eq!(err, RuleError::GrayCannotRetract);
    }

    #[test]
    fn p4_testers_and_buckets() {
        let app = url_app(Some(gray(0)));
        assert!(app.target_for("tester").unwrap().gray);
        assert!(!app.target_for("someone").unwrap().gray);
        let everyone = url_app(Some(Gray {
            percent: 99,
            ..gray(0)
        }));
        let in_group = (0..1000)
            .filter(|i| everyone.target_for(&format!("u{i}")).unwrap().gray)
            .count();
        assert!(in_group > 950, "{in_group}");
    }

    #[test]
    fn p4_bucket_is_sha256_prefix_mod_100() {
        // sha256("wx1\nu1") starts with these 8 bytes; computed independently.
        let digest = Sha256::digest(b"wx1\nu1");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 100;
        assert_eq!(gray_bucket("wx1", "u1"), expected);
        assert!(gray_bucket("wx1", "u1") < 100);
    }

    #[test]
    fn p5_token_length_in_code_points() {
        assert!(validate_token("").is_err());
        assert!(validate_token(&"é".repeat(1024)).is_ok());
        assert!(validate_token(&"é".repeat(1025)).is_err());
    }

    #[test]
    fn p6_p7_eligibility() {
        let app = url_app(None);
        let mut pair = FetchPair::default();
        assert_eq!(
            pair.ineligibility(T0, &app),
            Some(Ineligible::NeverLaunched)
        );
        pair.launch(T0);
        assert_eq!(pair.ineligibility(T0, &app), Some(Ineligible::TokenNotSet));
        pair.token_set();
        assert_eq!(pair.ineligibility(T0, &app), None);
        let week_later = T0.plus_millis(ACTIVE_FOR_MS);
        assert!(matches!(
            pair.ineligibility(week_later, &app),
            Some(Ineligible::Inactive { .. })
        ));
        assert_eq!(pair.next_wakeup(week_later, &app), None);
    }

    #[test]
    fn p8_first_fetch_due_when_eligible_then_every_12h() {
        let app = url_app(None);
        let mut pair = FetchPair::default();
        pair.launch(T0);
        pair.token_set();
        assert_eq!(pair.next_wakeup(T0, &app), Some(T0));
        assert!(pair.wake(T0, &app, "u1").is_some());
        assert_eq!(pair.next_wakeup(T0, &app), None, "in flight");
        let next = pair.record_outcome(T0, FetchOutcome::Ok, Some(999_999_999), 0);
        assert_eq!(
            next,
            T0.plus_millis(12 * HOUR_MS),
            "Retry-After ignored on success"
        );
    }

    #[test]
    fn p8_p9_p13_complete_plans_and_caches_in_one_step() {
        let app = url_app(None);
        let mut pair = FetchPair::default();
        let mut cache = FetchCache::default();
        pair.launch(T0);
        pair.token_set();
        assert!(pair.wake(T0, &app, "u1").is_some());
        let answer = |outcome, sent_at: Instant, completed_at: Instant| FetchAnswer {
            url: "https://data.example.com/feed".into(),
            outcome,
            body: "data".into(),
            etag: Some("\"v1\"".into()),
            retry_after_ms: Some(HOUR_MS),
            sent_at,
            completed_at,
        };
        let later = T0.plus_millis(1_000);
        let done = pair.complete(
            &app,
            "u1",
            answer(FetchOutcome::Ok, T0, later),
            60,
            &mut cache,
        );
        let jitter = fetch_jitter_ms("wx1", "u1", 60);
        assert_eq!(done.planned, later.plus_millis(12 * HOUR_MS + jitter));
        assert_eq!(done.next_wakeup, Some(done.planned));
        assert!(done.cache_changed);
        assert_eq!(cache.read(), Some(("data", later.as_millis())));

        // P9: a failure keeps the cache and honours a longer Retry-After.
        let failed = pair.complete(
            &app,
            "u1",
            answer(FetchOutcome::HttpStatus, later, later),
            60,
            &mut cache,
        );
        assert!(!failed.cache_changed);
        assert_eq!(failed.planned, later.plus_millis(HOUR_MS));
        // P13: a fetch sent before the one that last changed the cache changes nothing.
        let stale = pair.complete(
            &app,
            "u1",
            answer(
                FetchOutcome::Ok,
                Instant::from_millis(T0.as_millis() - 1),
                later,
            ),
            60,
            &mut cache,
        );
        assert!(!stale.cache_changed);
    }

    #[test]
    fn p9_backoff_and_retry_after() {
        let app = url_app(None);
        let mut pair = FetchPair::default();
        pair.launch(T0);
        pair.token_set();
        let delays: Vec<i64> = (0..5)
            .map(|_| {
                pair.fetch_now(&app, "u").unwrap();
                pair.record_outcome(T0, FetchOutcome::HttpStatus, None, 0)
                    .millis_since(T0)
                    / MINUTE_MS
            })
            .collect();
        assert_eq!(delays, [5, 15, 45, 720, 720]);
        let mut fresh = FetchPair::default();
        let hour = HOUR_MS;
        assert_eq!(
            fresh
                .record_outcome(T0, FetchOutcome::HttpStatus, Some(hour), 0)
                .millis_since(T0),
            hour
        );
        let mut no_response = FetchPair::default();
        assert_eq!(
            no_response
                .record_outcome(T0, FetchOutcome::Timeout, Some(hour), 0)
                .millis_since(T0),
            5 * MINUTE_MS
        );
    }

    #[test]
    fn p7_p8_p9_next_fetch_reason_names_its_rule() {
        let app = url_app(None);
        let mut pair = FetchPair::default();
        assert_eq!(
            pair.next_fetch_reason(T0, &app),
            NextFetchReason::Ineligible(Ineligible::NeverLaunched)
        );
        pair.launch(T0);
        pair.token_set();
        assert_eq!(
            pair.next_fetch_reason(T0, &app),
            NextFetchReason::FirstFetch
        );
        pair.fetch_now(&app, "u").unwrap();
        pair.record_outcome(T0, FetchOutcome::Timeout, None, 0);
        assert_eq!(
            pair.next_fetch_reason(T0, &app).to_string(),
            "retry after failure 1 (P9)"
        );
        pair.fetch_now(&app, "u").unwrap();
        pair.record_outcome(T0, FetchOutcome::Ok, None, 0);
        assert_eq!(
            pair.next_fetch_reason(T0, &app),
            NextFetchReason::AfterSuccess
        );
    }

    #[test]
    fn p10_reeligible_pair_due_at_later_of_now_and_plan() {
        let app = url_app(None);
        let mut pair = FetchPair::default();
        pair.launch(T0);
        pair.token_set();
        pair.wake(T0, &app, "u").unwrap();
        let planned = pair.record_outcome(T0, FetchOutcome::Ok, None, 0);
        let much_later = T0.plus_millis(10 * 24 * HOUR_MS);
        assert_eq!(pair.next_wakeup(much_later, &app), None);
        pair.launch(much_later);
        assert_eq!(pair.next_wakeup(much_later, &app), Some(much_later));
        assert!(planned < much_later);
    }

    #[test]
    fn p11_fetch_now_errors() {
        let mut disabled = url_app(None);
        disabled.periodic.as_mut().unwrap().enabled = false;
        let mut pair = FetchPair::default();
        assert_eq!(
            pair.fetch_now(&disabled, "u"),
            Err(RuleError::PeriodicDisabled)
        );
        assert_eq!(
            pair.fetch_now(&url_app(None), "u"),
            Err(RuleError::TokenNotSet)
        );
        pair.token_set();
        assert!(pair.fetch_now(&url_app(None), "u").is_ok());
    }

    #[test]
    fn p12_query_encoding_and_order() {
        assert_eq!(
            fetch_url("https://d.example/feed", "wx1", "a b+c/é", 17),
            "https://d.example/feed?appid=wx1&token=a+b%2Bc%2F%C3%A9&timestamp=17"
        );
        assert_eq!(
            fetch_url("https://d.example/feed?x=1#frag", "wx1", "t*-._~", 1),
            "https://d.example/feed?x=1&appid=wx1&token=t*-._%7E&timestamp=1"
        );
        assert_eq!(
            fetch_url("https://d.example/feed?", "a", "t", 1),
            "https://d.example/feed?appid=a&token=t&timestamp=1"
        );
    }

    #[test]
    fn p13_p14_classification() {
        assert_eq!(
            classify_response(200, MAX_BODY_BYTES, true),
            FetchOutcome::Ok
        );
        assert_eq!(
            classify_response(200, MAX_BODY_BYTES + 1, false),
            FetchOutcome::TooLarge
        );
        assert_eq!(classify_response(200, 10, false), FetchOutcome::NotUtf8);
        assert_eq!(classify_response(204, 0, true), FetchOutcome::Ok);
        assert_eq!(classify_response(304, 0, true), FetchOutcome::NotModified);
        assert_eq!(classify_response(302, 0, true), FetchOutcome::Redirect);
        assert_eq!(classify_response(503, 0, true), FetchOutcome::HttpStatus);
        assert_eq!(
            classify_response(101, 0, true),
            FetchOutcome::InvalidResponse
        );
    }

    #[test]
    fn p13_cache_keeps_data_on_failure_and_moves_timestamp_on_304() {
        let mut cache = FetchCache::default();
        cache.apply(
            FetchOutcome::Ok,
            "u1",
            "v1".into(),
            Some("\"e\"".into()),
            1,
            1,
        );
        cache.apply(FetchOutcome::HttpStatus, "u1", "oops".into(), None, 2, 2);
        assert_eq!(cache.data.as_deref(), Some("v1"));
        assert_eq!(cache.time_stamp_ms, Some(1));
        cache.apply(FetchOutcome::NotModified, "u1", String::new(), None, 3, 3);
        assert_eq!(cache.time_stamp_ms, Some(3));
        assert_eq!(cache.if_none_match("u1"), Some("\"e\""));
        assert_eq!(
            cache.if_none_match("u2"),
            None,
            "an ETag belongs to its URL"
        );
        cache.apply(FetchOutcome::Ok, "u1", "v2".into(), None, 4, 4);
        assert_eq!(
            cache.if_none_match("u1"),
            None,
            "a 2xx without ETag clears it"
        );
    }

    #[test]
    fn p11_overlapping_fetches_the_later_sent_wins_whichever_finishes_last() {
        // Sent at 10 and at 20; the one sent at 20 finishes first.
        let mut cache = FetchCache::default();
        assert!(cache.apply(FetchOutcome::Ok, "u", "newer".into(), None, 20, 30));
        assert!(!cache.apply(FetchOutcome::Ok, "u", "older".into(), None, 10, 40));
        assert_eq!(cache.read(), Some(("newer", 30)));
        assert!(!cache.apply(FetchOutcome::NotModified, "u", String::new(), None, 10, 50));
        assert_eq!(
            cache.read(),
            Some(("newer", 30)),
            "a stale 304 confirms nothing"
        );
        // Sent at 60 and at 70; the one sent at 60 finishes first: both apply in turn.
        assert!(cache.apply(FetchOutcome::Ok, "u", "a".into(), None, 60, 80));
        assert!(cache.apply(FetchOutcome::Ok, "u", "b".into(), None, 70, 75));
        assert_eq!(
            cache.read(),
            Some(("b", 80)),
            "the time stamp never goes back"
        );
    }
}
