//! Checking the `refreshd-signature` header.
//!
//! refreshd signs two kinds of outbound requests with the same header,
//! `refreshd-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=<hex>…]`, keyed with
//! the UTF-8 bytes of a signing secret:
//! - deliveries to a widget provider's `refresh_url`, over `"<t>.<body>"`
//!   ([`verify_signature`]);
//! - periodic fetches to an app developer's server, over `"<t>.<path and query>"`, the
//!   request target exactly as received ([`verify_fetch_signature`]).
//!
//! After a secret rotation the header carries one `v1=` value per valid secret, so a
//! verifier holding either secret accepts. A signature is accepted when any `v1=`
//! value matches (compared in constant time) and `t` is within five minutes of `now`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "refreshd-signature";
/// The header of a delivery's id, the same across retries of one delivery.
pub const DELIVERY_ID_HEADER: &str = "refreshd-delivery-id";
/// How far `t` may be from the verifier's clock, either way.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// Why a signature was refused. None of them carries the secret or the expected value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is missing its `t=` or `v1=` parts, or they do not parse.
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    /// `t` is more than five minutes away from now (a replay, or a wrong clock).
    #[error("signature timestamp {t} is {skew_seconds} s away from now (at most 300 allowed)")]
    OutsideWindow { t: i64, skew_seconds: u64 },
    /// No `v1=` value matches the secret.
    #[error("no signature matches")]
    Mismatch,
}

/// Verifies a delivery to a provider: `header` is the `refreshd-signature` value and
/// `body` the raw request body, byte for byte as received (before any JSON parsing).
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<(), SignatureError> {
    verify(secret, header, body, now)
}

/// Verifies a periodic fetch to a developer's server: `path_and_query` is the request
/// target exactly as received, e.g. `/data?appid=wx1&token=abc&timestamp=1764250000000`
/// (not re-encoded, not re-ordered).
pub fn verify_fetch_signature(
    secret: &str,
    header: &str,
    path_and_query: &str,
    now: SystemTime,
) -> Result<(), SignatureError> {
    verify(secret, header, path_and_query.as_bytes(), now)
}

/// The header value refreshd would send for `payload` at `t` under `secret`; for tests
/// of a verifier.
pub fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    let tag = mac(secret, t, payload).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

fn mac(secret: &str, t: i64, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

struct Parsed {
    t: i64,
    candidates: Vec<Vec<u8>>,
}

fn parse(header: &str) -> Result<Parsed, SignatureError> {
    let mut t = None;
    let mut candidates = Vec::new();
    let mut saw_v1 = false;
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                if t.is_some() {
                    return Err(SignatureError::Malformed("more than one t="));
                }
                let value = value.trim();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed("t= is not a number of seconds"));
                }
                t = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t= is out of range"))?,
                );
            }
            "v1" => {
                saw_v1 = true;
                // A value that is not 32 bytes of hex can match nothing; skip it so
                // that a well-formed sibling can still match.
                if let Ok(bytes) = hex::decode(value.trim()) {
                    if bytes.len() == 32 {
                        candidates.push(bytes);
                    }
                }
            }
            // Other schemes may be added later; they are not ours to judge.
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no t="))?;
    if !saw_v1 {
        return Err(SignatureError::Malformed("no v1="));
    }
    Ok(Parsed { t, candidates })
}

fn verify(
    secret: &str,
    header: &str,
    payload: &[u8],
    now: SystemTime,
) -> Result<(), SignatureError> {
    let parsed = parse(header)?;
    let now_seconds: i64 = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    };
    let skew = now_seconds.abs_diff(parsed.t);
    if skew > TOLERANCE.as_secs() {
        return Err(SignatureError::OutsideWindow {
            t: parsed.t,
            skew_seconds: skew,
        });
    }
    let expected = mac(secret, parsed.t, payload);
    // Check every candidate (each in constant time) rather than stopping at the first
    // match, so the time taken does not tell which one matched.
    let mut matched = false;
    for candidate in &parsed.candidates {
        matched |= expected.clone().verify_slice(candidate).is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    const T: i64 = 1_764_250_000;

    #[test]
    fn accepts_its_own_signature_within_the_window() {
        let header = sign("s3cret", T, b"{\"form_id\":\"f\"}");
        for now in [T - 300, T, T + 300] {
            assert_eq!(
                verify_signature("s3cret", &header, b"{\"form_id\":\"f\"}", at(now as u64)),
                Ok(())
            );
        }
    }

    #[test]
    fn refuses_outside_the_window_both_ways() {
        let header = sign("s3cret", T, b"x");
        assert_eq!(
            verify_signature("s3cret", &header, b"x", at((T + 301) as u64)),
            Err(SignatureError::OutsideWindow {
                t: T,
                skew_seconds: 301
            })
        );
        assert_eq!(
            verify_signature("s3cret", &header, b"x", at((T - 301) as u64)),
            Err(SignatureError::OutsideWindow {
                t: T,
                skew_seconds: 301
            })
        );
    }

    #[test]
    fn refuses_another_secret_or_another_body() {
        let header = sign("s3cret", T, b"x");
        assert_eq!(
            verify_signature("other", &header, b"x", at(T as u64)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature("s3cret", &header, b"y", at(T as u64)),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = header.replace(&format!("t={T}"), &format!("t={}", T + 1));
        assert_eq!(
            verify_signature("s3cret", &moved, b"x", at(T as u64)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_of_several_v1_values_may_match() {
        let new = sign("new", T, b"body");
        let old = sign("old", T, b"body");
        let old_v1 = old.split_once(",v1=").unwrap().1;
        let both = format!("{new},v1={old_v1}");
        assert_eq!(
            verify_signature("new", &both, b"body", at(T as u64)),
            Ok(())
        );
        assert_eq!(
            verify_signature("old", &both, b"body", at(T as u64)),
            Ok(())
        );
        assert_eq!(
            verify_signature("neither", &both, b"body", at(T as u64)),
            Err(SignatureError::Mismatch)
        );
        // Spaces after commas and a garbage sibling do not stop a good value matching.
        let spaced = format!("t={T}, v1=zz, v1={old_v1}");
        assert_eq!(
            verify_signature("old", &spaced, b"body", at(T as u64)),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        for (header, why) in [
            ("", "no t="),
            ("v1=00", "no t="),
            ("t=12", "no v1="),
            ("t=abc,v1=00", "t= is not a number of seconds"),
            ("t=-5,v1=00", "t= is not a number of seconds"),
            ("t=1,t=2,v1=00", "more than one t="),
        ] {
            assert_eq!(
                verify_signature("s", header, b"", at(T as u64)),
                Err(SignatureError::Malformed(why)),
                "{header}"
            );
        }
    }

    #[test]
    fn fetch_signatures_cover_the_exact_request_target() {
        let target = "/data?appid=wx1&token=abc&timestamp=1764250000000";
        let header = sign("k", T, target.as_bytes());
        assert_eq!(
            verify_fetch_signature("k", &header, target, at(T as u64)),
            Ok(())
        );
        let reordered = "/data?token=abc&appid=wx1&timestamp=1764250000000";
        assert_eq!(
            verify_fetch_signature("k", &header, reordered, at(T as u64)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn matches_independent_hmac_vectors() {
        // Computed with another HMAC-SHA256 implementation.
        assert_eq!(
            sign("key", 1, b"x"),
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
        let header =
            "t=1764250000,v1=f13a33b69352eb7a564d71d54fe2c5b81dcaebd9b7f4d6f9bdad7f27c049e091";
        assert_eq!(
            verify_fetch_signature(
                "whsec",
                header,
                "/data?appid=wx1&token=abc&timestamp=1764250000000",
                at(1_764_250_100)
            ),
            Ok(())
        );
    }
}
