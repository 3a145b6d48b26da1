//! The wire shapes the engine itself must produce (api.md): the payloads of the host
//! events it stores for SSE (`form_data`, `form_removed`, `fetched_data`) and the body
//! of a delivery.
//! They are fixed when the change that caused them is committed, so every replay of an
//! event and every retry of a delivery carries the same bytes; that is why they are
//! written here and not by the API, which only relays them. Everything else on the wire
//! is the API's.

use refreshd_rules::Instant;
use refreshd_store::{FormData, FormRecord, NewEvent, PairAnnouncement};
use serde::Serialize;

/// An instant as api.md writes it (RFC 3339, UTC); `None` outside the years 0001–9999,
/// which no clock reaches.
pub fn rfc3339(at: Instant) -> Option<String> {
    at.to_timestamp().map(|t| t.to_string())
}

/// `event: form_data`: the form's latest data.
#[derive(Serialize)]
struct FormDataPayload<'a> {
    form_id: &'a str,
    /// The stored JSON text as a value, so the event carries it unquoted.
    data: serde_json::Value,
    updated_at: Option<String>,
    trigger: &'a str,
}

/// `event: form_removed`.
#[derive(Serialize)]
struct FormRemovedPayload<'a> {
    form_id: &'a str,
}

/// `event: fetched_data`: a user's newly cached periodic data, as the device reads it
/// (`GET /v1/apps/{appid}/background-fetch`) plus the app it belongs to.
#[derive(Serialize)]
struct FetchedDataPayload<'a> {
    appid: &'a str,
    fetched_data: &'a str,
    /// Epoch milliseconds, as the mini-program API writes it.
    time_stamp: i64,
}

/// The answer of `GET /v1/apps/{appid}/background-fetch` (P15), whole: encoded once
/// per change of the cache (`read_cache`) and sent as it is.
#[derive(Serialize)]
struct CachedDataBody<'a> {
    fetched_data: &'a str,
    time_stamp: i64,
}

/// The JSON body of a user's cached data as the device reads it.
pub fn cached_data_body(fetched_data: &str, time_stamp: i64) -> bytes::Bytes {
    let body = CachedDataBody {
        fetched_data,
        time_stamp,
    };
    // As `to_text`: these fields cannot fail to serialize.
    bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The JSON body POSTed to a provider's `refresh_url`.
#[derive(Serialize)]
struct DeliveryBody<'a> {
    form_id: &'a str,
    form_name: &'a str,
    trigger: &'a str,
    deferred: &'a [&'a str],
    decided_at: Option<String>,
}

fn to_text(payload: &impl Serialize) -> String {
    // Serializing these structs cannot fail: string keys, no maps, no floats.
    serde_json::to_string(payload).unwrap_or_default()
}

/// The host event announcing a form's data, stored for `device_id` at `at`.
pub fn form_data_event(data: &FormData, device_id: &str, at: Instant) -> NewEvent {
    let payload = FormDataPayload {
        form_id: &data.form_id,
        data: serde_json::from_str(&data.data).unwrap_or(serde_json::Value::Null),
        updated_at: rfc3339(Instant::from_millis(data.updated_at)),
        trigger: &data.trigger,
    };
    NewEvent {
        device_id: device_id.to_string(),
        form_id: Some(data.form_id.clone()),
        appid: None,
        kind: "form_data".into(),
        payload: to_text(&payload),
        at: at.as_millis(),
    }
}

/// The host event announcing that a form is gone.
pub fn form_removed_event(form: &FormRecord, at: Instant) -> NewEvent {
    NewEvent {
        device_id: form.device_id.clone(),
        form_id: Some(form.form_id.clone()),
        appid: None,
        kind: "form_removed".into(),
        payload: to_text(&FormRemovedPayload {
            form_id: &form.form_id,
        }),
        at: at.as_millis(),
    }
}

/// The announcement of a user's new cached data for `appid`, written to each of the
/// user's devices with the commit that stored it.
pub fn fetched_data_announcement(
    appid: &str,
    fetched_data: &str,
    time_stamp_ms: i64,
    at: Instant,
) -> PairAnnouncement {
    PairAnnouncement {
        kind: "fetched_data".into(),
        payload: to_text(&FetchedDataPayload {
            appid,
            fetched_data,
            time_stamp: time_stamp_ms,
        }),
        at: at.as_millis(),
    }
}

/// The `fetched_data` event of a user's cached data for one device (a device created
/// after the data was fetched starts with it).
pub fn fetched_data_event(
    device_id: &str,
    appid: &str,
    fetched_data: &str,
    time_stamp_ms: i64,
    at: Instant,
) -> NewEvent {
    let announcement = fetched_data_announcement(appid, fetched_data, time_stamp_ms, at);
    NewEvent {
        device_id: device_id.to_string(),
        form_id: None,
        appid: Some(appid.to_string()),
        kind: announcement.kind,
        payload: announcement.payload,
        at: announcement.at,
    }
}

/// The body of a delivery for a refresh of `form` decided at `decided_at`.
pub fn delivery_body(
    form: &FormRecord,
    trigger: &str,
    deferred: &[&str],
    decided_at: Instant,
) -> String {
    to_text(&DeliveryBody {
        form_id: &form.form_id,
        form_name: &form.form_name,
        trigger,
        deferred,
        decided_at: rfc3339(decided_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> FormRecord {
        FormRecord {
            form_id: "frm_1".into(),
            form_num: 1,
            device_id: "d1".into(),
            provider: "p".into(),
            form_name: "w".into(),
            created_at: 0,
        }
    }

    /// The bytes are part of the contract: a provider verifies its signature over them.
    #[test]
    fn delivery_body_bytes() {
        let body = delivery_body(
            &form(),
            "interval",
            &["scheduled"],
            Instant::from_millis(1_772_359_200_000),
        );
        assert_eq!(
            body,
            r#"{"form_id":"frm_1","form_name":"w","trigger":"interval","deferred":["scheduled"],"decided_at":"2026-03-01T10:00:00Z"}"#
        );
    }

    #[test]
    fn event_payloads() {
        let data = FormData {
            form_id: "frm_1".into(),
            data: r#"{"t":1}"#.into(),
            updated_at: 1_772_359_200_000,
            trigger: "provider".into(),
        };
        let event = form_data_event(&data, "d1", Instant::from_millis(5));
        assert_eq!(
            event.payload,
            r#"{"form_id":"frm_1","data":{"t":1},"updated_at":"2026-03-01T10:00:00Z","trigger":"provider"}"#
        );
        assert_eq!((event.kind.as_str(), event.at), ("form_data", 5));
        let removed = form_removed_event(&form(), Instant::from_millis(5));
        assert_eq!(removed.payload, r#"{"form_id":"frm_1"}"#);
        assert_eq!(removed.kind, "form_removed");
    }
}
