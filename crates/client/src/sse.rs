//! The device's event stream, `GET /v1/events`: an event-stream parser, and a
//! `Stream` of typed events that reconnects with backoff and `Last-Event-ID`.

use crate::error::ClientError;
use crate::http::Http;
use crate::types::{FetchedData, FormDataEvent, FormRemoved, HostEvent};
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// One dispatched event of an event stream, before it is given a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// The last event id in force when the event was dispatched ("" if none).
    pub id: String,
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An incremental parser of the `text/event-stream` format: feed it bytes as they
/// arrive, in chunks split anywhere, and it hands back the events they complete.
#[derive(Debug)]
pub struct EventStreamParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    event: String,
    last_id: String,
    retry: Option<Duration>,
    max_line: usize,
}

/// A line longer than the parser accepts (the server would never send one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event-stream line longer than {0} bytes")]
pub struct LineTooLong(pub usize);

impl Default for EventStreamParser {
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl EventStreamParser {
    /// A parser whose last event id starts as `last_id` (what the connection was
    /// opened with), so events without an `id:` field keep it.
    pub fn new(last_id: String) -> Self {
        EventStreamParser {
            line: Vec::new(),
            after_cr: false,
            started: false,
            data: String::new(),
            has_data: false,
            event: String::new(),
            last_id,
            retry: None,
            // Form data is at most 256 KiB of JSON; escaped into a fetched_data
            // string it can grow several times over. Far above that is a broken peer.
            max_line: 8 * 1024 * 1024,
        }
    }

    /// The last event id seen (what a reconnect should send).
    pub fn last_id(&self) -> &str {
        &self.last_id
    }

    /// The reconnection delay the server asked for with `retry:`, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<RawEvent>, LineTooLong> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\n' => {
                    self.line.extend_from_slice(&rest[start..i]);
                    self.end_line(&mut events);
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    self.line.extend_from_slice(&rest[start..i]);
                    self.end_line(&mut events);
                    i += 1;
                    if i == rest.len() {
                        self.after_cr = true;
                    } else if rest[i] == b'\n' {
                        i += 1;
                    }
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.line.extend_from_slice(&rest[start..]);
        if self.line.len() > self.max_line {
            self.line.clear();
            return Err(LineTooLong(self.max_line));
        }
        Ok(events)
    }

    fn end_line(&mut self, events: &mut Vec<RawEvent>) {
        let bytes = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if !self.started {
            self.started = true;
            if let Some(stripped) = line.strip_prefix('\u{feff}') {
                line = stripped.to_string();
            }
        }
        if line.is_empty() {
            // Dispatch.
            let event = std::mem::take(&mut self.event);
            if self.has_data {
                self.has_data = false;
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                events.push(RawEvent {
                    id: self.last_id.clone(),
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return; // a comment: keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }
}

/// Gives a raw event its type. A known kind whose data does not parse is an error.
pub fn host_event(raw: RawEvent) -> Result<HostEvent, ClientError> {
    fn decode<T: serde::de::DeserializeOwned>(
        kind: &'static str,
        data: &str,
    ) -> Result<T, ClientError> {
        serde_json::from_str(data).map_err(|e| ClientError::Decode {
            operation: kind,
            reason: e.to_string(),
        })
    }
    Ok(match raw.event.as_str() {
        "fetched_data" => HostEvent::FetchedData {
            event: decode::<FetchedData>("event fetched_data", &raw.data)?,
            id: raw.id,
        },
        "form_data" => HostEvent::FormData {
            event: decode::<FormDataEvent>("event form_data", &raw.data)?,
            id: raw.id,
        },
        "form_removed" => HostEvent::FormRemoved {
            event: decode::<FormRemoved>("event form_removed", &raw.data)?,
            id: raw.id,
        },
        _ => HostEvent::Other {
            id: raw.id,
            kind: raw.event,
            data: raw.data,
        },
    })
}

/// How the event stream reconnects.
#[derive(Clone, Debug)]
pub struct ReconnectPolicy {
    /// The delay after the first failure (or the server's `retry:` when it sent one).
    pub initial_delay: Duration,
    /// The delay doubles with each failure in a row, up to this.
    pub max_delay: Duration,
    /// A connection that sends nothing (not even a keep-alive comment) for this long
    /// is taken as dead and replaced. refreshd sends a comment every 15 s.
    pub idle_timeout: Duration,
    /// After this many failures in a row the stream yields the last error and ends;
    /// `None` retries for ever. Errors that cannot heal (401, 404, other 4xx) always
    /// end the stream at once.
    pub max_failures: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
            max_failures: None,
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt number `failures` (1 after the first failure), without
    /// jitter: `initial × 2^(failures−1)`, capped at `max_delay`.
    pub fn delay(&self, failures: u32, initial: Duration) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        initial
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// `GET /v1/events` as a stream of typed events. It reconnects by itself (with
/// backoff and `Last-Event-ID`) when the connection ends or fails; what cannot heal
/// (a revoked key: 401) is yielded as an error, after which the stream ends. An event
/// of a known kind whose data does not parse is yielded as an error and the stream goes
/// on.
pub struct EventStream {
    inner: BoxStream<'static, Result<HostEvent, ClientError>>,
    last_id: Arc<Mutex<String>>,
}

impl EventStream {
    pub(crate) fn new(http: Http, last_event_id: Option<String>, policy: ReconnectPolicy) -> Self {
        let last_id = Arc::new(Mutex::new(last_event_id.unwrap_or_default()));
        let state = State {
            http,
            policy,
            last_id: last_id.clone(),
            body: None,
            parser: EventStreamParser::default(),
            pending: VecDeque::new(),
            failures: 0,
            last_error: None,
            min_wait: None,
            done: false,
        };
        EventStream {
            inner: futures_util::stream::unfold(state, next).boxed(),
            last_id,
        }
    }

    /// The id of the last event received (or the one the stream was opened with):
    /// keep it to resume a later stream where this one stopped.
    pub fn last_event_id(&self) -> Option<String> {
        let id = self
            .last_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (!id.is_empty()).then_some(id)
    }
}

impl Stream for EventStream {
    type Item = Result<HostEvent, ClientError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("last_event_id", &self.last_event_id())
            .finish_non_exhaustive()
    }
}

struct State {
    http: Http,
    policy: ReconnectPolicy,
    last_id: Arc<Mutex<String>>,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    parser: EventStreamParser,
    pending: VecDeque<Result<HostEvent, ClientError>>,
    /// Failures in a row since the last connection that delivered something.
    failures: u32,
    last_error: Option<ClientError>,
    /// The server's Retry-After, which the next delay must not undercut.
    min_wait: Option<Duration>,
    done: bool,
}

impl State {
    fn current_id(&self) -> String {
        self.last_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_id(&self, id: &str) {
        *self.last_id.lock().unwrap_or_else(|e| e.into_inner()) = id.to_string();
    }

    /// Counts a failure; `Some(error)` when the policy says to give up.
    fn failed(&mut self, error: ClientError) -> Option<ClientError> {
        self.body = None;
        self.failures = self.failures.saturating_add(1);
        if let Some(max) = self.policy.max_failures {
            if self.failures >= max {
                self.done = true;
                return Some(error);
            }
        }
        self.last_error = Some(error);
        None
    }

    async fn wait_before_reconnect(&mut self) {
        if self.failures == 0 {
            return;
        }
        let initial = self.parser.retry().unwrap_or(self.policy.initial_delay);
        let full = self.policy.delay(self.failures, initial);
        // Jitter: somewhere in the upper half, so that many hosts dropped at once
        // (a server restart) do not all come back in the same instant.
        let jittered = full.mul_f64(0.5 + fastrand::f64() * 0.5);
        let wait = jittered.max(self.min_wait.take().unwrap_or_default());
        tokio::time::sleep(wait).await;
    }
}

async fn next(mut state: State) -> Option<(Result<HostEvent, ClientError>, State)> {
    loop {
        if let Some(item) = state.pending.pop_front() {
            return Some((item, state));
        }
        if state.done {
            return None;
        }
        let Some(body) = state.body.as_mut() else {
            state.wait_before_reconnect().await;
            let last_id = state.current_id();
            let opened =
                tokio::time::timeout(state.policy.idle_timeout, state.http.open_events(&last_id))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClientError::Transport(
                            "no answer to the event stream request in time".into(),
                        ))
                    });
            match opened {
                Ok(response) => {
                    state.parser = EventStreamParser::new(last_id);
                    state.body = Some(response.bytes_stream().boxed());
                    state.last_error = None;
                }
                Err(error) if error.is_retryable() => {
                    state.min_wait = error.retry_after();
                    if let Some(error) = state.failed(error) {
                        return Some((Err(error), state));
                    }
                }
                Err(error) => {
                    state.done = true;
                    return Some((Err(error), state));
                }
            }
            continue;
        };
        match tokio::time::timeout(state.policy.idle_timeout, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                // Anything from the server, a keep-alive included, shows the
                // connection is healthy: the next failure starts the backoff afresh.
                state.failures = 0;
                match state.parser.push(&chunk) {
                    Ok(events) => {
                        for raw in events {
                            state.set_id(&raw.id);
                            state.pending.push_back(host_event(raw));
                        }
                    }
                    Err(too_long) => {
                        let error = ClientError::Decode {
                            operation: "event stream",
                            reason: too_long.to_string(),
                        };
                        if let Some(error) = state.failed(error) {
                            return Some((Err(error), state));
                        }
                    }
                }
            }
            Ok(Some(Err(error))) => {
                if let Some(error) = state.failed(ClientError::transport(error)) {
                    return Some((Err(error), state));
                }
            }
            Ok(None) => {
                let error = ClientError::Transport("the event stream ended".into());
                if let Some(error) = state.failed(error) {
                    return Some((Err(error), state));
                }
            }
            Err(_) => {
                let error = ClientError::Transport(format!(
                    "the event stream was silent for {:?}",
                    state.policy.idle_timeout
                ));
                if let Some(error) = state.failed(error) {
                    return Some((Err(error), state));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<RawEvent> {
        let mut parser = EventStreamParser::default();
        chunks
            .iter()
            .flat_map(|c| parser.push(c).unwrap())
            .collect()
    }

    fn raw(id: &str, event: &str, data: &str) -> RawEvent {
        RawEvent {
            id: id.into(),
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn fields_comments_and_multi_line_data() {
        let text = b": keep-alive\n\nid: 7\nevent: form_data\ndata: {\"a\":\ndata:1}\n\n:x\ndata: plain\n\n";
        assert_eq!(
            parse_all(&[text]),
            vec![
                raw("7", "form_data", "{\"a\":\n1}"),
                raw("7", "message", "plain")
            ]
        );
    }

    #[test]
    fn every_split_and_every_line_ending_gives_the_same_events() {
        let lf = "id: 1\nevent: a\ndata: x\n\nid: 2\ndata: y\ndata:  z\n\n";
        let expected = vec![raw("1", "a", "x"), raw("2", "message", "y\n z")];
        for text in [
            lf.to_string(),
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
        ] {
            let bytes = text.as_bytes();
            for split in 0..=bytes.len() {
                let (a, b) = bytes.split_at(split);
                assert_eq!(parse_all(&[a, b]), expected, "{text:?} split at {split}");
            }
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(parse_all(&singles), expected, "{text:?} byte by byte");
        }
    }

    #[test]
    fn id_persists_resets_and_ignores_nul() {
        let text = b"id: 5\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 6\0x\ndata: d\n\n";
        assert_eq!(
            parse_all(&[text]),
            vec![
                raw("5", "message", "a"),
                raw("5", "message", "b"),
                raw("", "message", "c"),
                raw("", "message", "d"),
            ]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched_but_its_id_counts() {
        let mut parser = EventStreamParser::new("3".into());
        assert_eq!(parser.push(b"id: 9\nevent: x\n\n").unwrap(), vec![]);
        assert_eq!(parser.last_id(), "9");
        // The event name does not leak into the next event.
        assert_eq!(
            parser.push(b"data: q\n\n").unwrap(),
            vec![raw("9", "message", "q")]
        );
    }

    #[test]
    fn retry_field_and_bom_and_unfinished_event() {
        let mut parser = EventStreamParser::default();
        let events = parser
            .push("\u{feff}retry: 1500\nretry: x\ndata: a\n\ndata: never dispatched".as_bytes())
            .unwrap();
        assert_eq!(events, vec![raw("", "message", "a")]);
        assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut parser = EventStreamParser {
            max_line: 16,
            ..EventStreamParser::default()
        };
        assert!(parser.push(b"data: 0123456789").is_ok());
        assert_eq!(parser.push(b"abcdef"), Err(LineTooLong(16)));
    }

    #[test]
    fn typed_events() {
        let fetched = host_event(raw(
            "4",
            "fetched_data",
            r#"{"appid":"wx1","fetched_data":"{\"t\":1}","time_stamp":1764250000000}"#,
        ))
        .unwrap();
        assert_eq!(fetched.id(), "4");
        assert!(matches!(&fetched, HostEvent::FetchedData { event, .. }
            if event.appid == "wx1" && event.fetched_data == "{\"t\":1}" && event.time_stamp == 1_764_250_000_000));
        let data = host_event(raw(
            "5",
            "form_data",
            r#"{"form_id":"f1","data":{"temp":3},"updated_at":"2026-11-27T10:00:00Z","trigger":"add"}"#,
        ))
        .unwrap();
        assert!(matches!(&data, HostEvent::FormData { event, .. }
            if event.form_id == "f1" && event.data["temp"] == 3 && event.trigger == "add"));
        let removed = host_event(raw("6", "form_removed", r#"{"form_id":"f1"}"#)).unwrap();
        assert!(matches!(&removed, HostEvent::FormRemoved { event, .. } if event.form_id == "f1"));
        let other = host_event(raw("7", "something_new", "x")).unwrap();
        assert!(matches!(&other, HostEvent::Other { kind, .. } if kind == "something_new"));
        let broken = host_event(raw("8", "form_data", "{")).unwrap_err();
        assert!(matches!(broken, ClientError::Decode { .. }));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..ReconnectPolicy::default()
        };
        let initial = policy.initial_delay;
        let delays: Vec<u128> = (0..7)
            .map(|n| policy.delay(n, initial).as_millis())
            .collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.delay(u32::MAX, initial), Duration::from_secs(1));
    }
}
