//! Secrets: API keys (random, prefixed, stored as hashes), tokens sealed at rest, and
//! the signatures on deliveries to providers. Nothing here logs or prints a secret.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use refreshd_store::KeyKind;
use sha2::{Digest, Sha256};
use std::fmt;

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
    bytes
}

/// The prefix that names a key's kind (api.md).
pub fn key_prefix(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Operator => "rfdo_",
        KeyKind::App => "rfda_",
        KeyKind::Provider => "rfdp_",
        KeyKind::Device => "rfdd_",
    }
}

/// The kind a key's prefix names.
pub fn kind_of_key(key: &str) -> Option<KeyKind> {
    [
        KeyKind::Operator,
        KeyKind::App,
        KeyKind::Provider,
        KeyKind::Device,
    ]
    .into_iter()
    .find(|kind| key.starts_with(key_prefix(*kind)))
}

/// A new API key: its prefix and 256 random bits, hex-encoded.
pub fn new_api_key(kind: KeyKind) -> String {
    format!("{}{}", key_prefix(kind), hex::encode(random_bytes::<32>()))
}

/// How keys are stored: SHA-256 of the key text. Keys carry 256 random bits, so a fast
/// hash is enough; the stored form cannot be turned back into a key.
pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A secret that must never be printed.
#[derive(Clone)]
pub struct SecretKey(pub [u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Seals user tokens at rest (P5) with ChaCha20-Poly1305 and a random nonce.
pub struct TokenSealer {
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSealer(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a sealed token could not be opened (wrong REFRESHD_SECRET_KEY, or damaged data)")]
pub struct UnsealError;

impl TokenSealer {
    pub fn new(key: &SecretKey) -> Self {
        TokenSealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key.0)),
        }
    }

    /// Nonce (12 bytes) followed by the ciphertext.
    pub fn seal(&self, token: &str) -> Vec<u8> {
        let nonce = random_bytes::<12>();
        let mut sealed = nonce.to_vec();
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), token.as_bytes())
            .expect("encryption of a short token cannot fail");
        sealed.extend(ciphertext);
        sealed
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, UnsealError> {
        if sealed.len() < 12 {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| UnsealError)?;
        String::from_utf8(plain).map_err(|_| UnsealError)
    }

    /// A secret sealed for a text column: `sealed1:` and the hex of [`TokenSealer::seal`].
    pub fn seal_text(&self, secret: &str) -> String {
        format!("{SEALED_TEXT_PREFIX}{}", hex::encode(self.seal(secret)))
    }

    /// Opens what [`TokenSealer::seal_text`] stored. Text without the prefix was written
    /// before secrets were sealed and is taken as it is.
    pub fn open_text(&self, stored: &str) -> Result<String, UnsealError> {
        match stored.strip_prefix(SEALED_TEXT_PREFIX) {
            Some(sealed) => self.open(&hex::decode(sealed).map_err(|_| UnsealError)?),
            None => Ok(stored.to_string()),
        }
    }
}

/// Marks a sealed secret in a text column (provider signing secrets).
const SEALED_TEXT_PREFIX: &str = "sealed1:";

/// `refreshd-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (api.md).
pub fn sign_delivery(signing_secret: &str, unix_seconds: i64, body: &str) -> String {
    signature_header(&[signing_secret], unix_seconds, body)
}

/// The `refreshd-signature` header over `signed` (a delivery's body, or a periodic
/// fetch's path and query) under several secrets at once: one `v1=` entry per secret,
/// the current one first. While a rotated secret overlaps its successor, requests carry
/// both, so a receiver that still checks the old secret keeps accepting them.
pub fn signature_header(secrets: &[&str], unix_seconds: i64, signed: &str) -> String {
    let signed = format!("{unix_seconds}.{signed}");
    let mut header = format!("t={unix_seconds}");
    for secret in secrets {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(signed.as_bytes());
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p5_sealed_tokens_open_only_with_their_key() {
        let sealer = TokenSealer::new(&SecretKey([7; 32]));
        let sealed = sealer.seal("tok-ü");
        assert!(!sealed.windows(3).any(|w| w == b"tok"));
        assert_eq!(sealer.open(&sealed).unwrap(), "tok-ü");
        assert!(TokenSealer::new(&SecretKey([8; 32])).open(&sealed).is_err());
        assert!(sealer.open(&sealed[..5]).is_err());
    }

    #[test]
    fn keys_carry_their_kind() {
        let key = new_api_key(KeyKind::Device);
        assert!(key.starts_with("rfdd_") && key.len() == 5 + 64);
        assert_eq!(kind_of_key(&key), Some(KeyKind::Device));
        assert_eq!(kind_of_key("bearer"), None);
        assert_ne!(hash_key(&key), hash_key(&new_api_key(KeyKind::Device)));
    }

    #[test]
    fn signing_secrets_are_sealed_and_legacy_text_still_opens() {
        let sealer = TokenSealer::new(&SecretKey([9; 32]));
        let stored = sealer.seal_text("whsec-1");
        assert!(stored.starts_with("sealed1:"), "{stored}");
        assert!(!stored.contains("whsec-1"));
        assert_eq!(sealer.open_text(&stored).unwrap(), "whsec-1");
        assert_eq!(sealer.open_text("plain-legacy").unwrap(), "plain-legacy");
        let other = TokenSealer::new(&SecretKey([8; 32]));
        assert!(other.open_text(&stored).is_err());
    }

    #[test]
    fn overlapping_secrets_sign_with_one_entry_each_current_first() {
        let both = signature_header(&["new", "old"], 1_700_000_000, "{}");
        let new_only = sign_delivery("new", 1_700_000_000, "{}");
        let old_only = sign_delivery("old", 1_700_000_000, "{}");
        let old_entry = old_only.split_once(",v1=").unwrap().1;
        assert_eq!(both, format!("{new_only},v1={old_entry}"));
    }

    #[test]
    fn signature_is_hmac_of_timestamp_and_body() {
        let sig = sign_delivery("secret", 1_700_000_000, "{}");
        assert!(sig.starts_with("t=1700000000,v1="));
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(sig, sign_delivery("other", 1_700_000_000, "{}"));
    }
}
