//! Secrets at rest: when `[store] secret_key` is set, endpoint signing secrets are
//! stored sealed with ChaCha20-Poly1305 (a random nonce per value), so a copy of the
//! database or a backup does not hand out the keys that sign webhooks.
//!
//! A sealed value reads `sealed:v1:<base64(nonce ‖ ciphertext)>`. Values without the
//! prefix are plaintext from before a key was set; they keep working and are sealed
//! when next written (rotation). A sealed value without the key, or with a wrong key,
//! is an error: the service must not sign with garbage.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

// The key must never reach a log line.
impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "`[store] secret_key` must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)"
    )]
    BadKey,
    #[error("a stored secret is sealed but `[store] secret_key` is not set")]
    NoKey,
    #[error(
        "a stored secret cannot be opened: wrong `[store] secret_key`, or the value is damaged"
    )]
    Open,
}

impl Sealer {
    /// From the base64 key of `[store] secret_key`.
    pub fn from_base64(key: &str) -> Result<Self, SealError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| SealError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?,
        })
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let ct = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    fn open_sealed(&self, encoded: &str) -> Result<String, SealError> {
        let raw = STANDARD.decode(encoded).map_err(|_| SealError::Open)?;
        if raw.len() <= NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Open)?;
        let pt = self
            .cipher
            .decrypt(&Nonce::from(nonce), ct)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(pt).map_err(|_| SealError::Open)
    }
}

/// Seals `plaintext` when a sealer is configured.
pub fn seal(sealer: Option<&Sealer>, plaintext: &str) -> String {
    match sealer {
        Some(s) => s.seal(plaintext),
        None => plaintext.to_string(),
    }
}

/// The plaintext of a stored value (sealed or not).
pub fn open(sealer: Option<&Sealer>, stored: &str) -> Result<String, SealError> {
    match (stored.strip_prefix(PREFIX), sealer) {
        (None, _) => Ok(stored.to_string()),
        (Some(enc), Some(s)) => s.open_sealed(enc),
        (Some(_), None) => Err(SealError::NoKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let key = STANDARD.encode([7u8; 32]);
        let s = Sealer::from_base64(&key).expect("key");
        let sealed = seal(Some(&s), "whsec_abc");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("whsec_abc"));
        assert_ne!(
            sealed,
            seal(Some(&s), "whsec_abc"),
            "a fresh nonce each time"
        );
        assert_eq!(open(Some(&s), &sealed).as_deref(), Ok("whsec_abc"));
        assert_eq!(open(Some(&s), "plain-old").as_deref(), Ok("plain-old"));
        assert_eq!(open(None, &sealed), Err(SealError::NoKey));
        let other = Sealer::from_base64(&STANDARD.encode([8u8; 32])).expect("key");
        assert_eq!(open(Some(&other), &sealed), Err(SealError::Open));
        assert_eq!(
            Sealer::from_base64("c2hvcnQ=").err(),
            Some(SealError::BadKey)
        );
        assert!(!format!("{s:?}").contains('7'));
    }
}
