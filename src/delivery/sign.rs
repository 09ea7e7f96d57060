//! Webhook signatures: which headers a request carries so its receiver can tell
//! that duehook sent it and that the body was not changed on the way.
//!
//! This module owns the signature schemes an endpoint can choose ([`Scheme`]),
//! the creation of new endpoint secrets ([`generate_secret`]), the validation of
//! secrets and custom header names that endpoints are configured with, and the
//! computation of the signature headers themselves ([`sign`]). It is pure: no
//! I/O, no clock (the timestamp is an argument), and it signs the exact bytes
//! that will be sent, whatever their format.
//!
//! # Schemes
//!
//! * [`Scheme::StandardWebhooks`] (the default): the [Standard Webhooks]
//!   specification. Headers `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64> [v1,<base64> …]`, an HMAC-SHA256 over
//!   `{msg_id}.{timestamp}.{body}`. Verifiable with the official libraries and
//!   the endpoint's `whsec_…` secret.
//! * [`Scheme::Hex`] (Cheqroom `X-CHEQROOM-Signature`, House Check `signature`)
//!   and [`Scheme::Base64`] (Storeganise `sg-signature`): HMAC-SHA256 of the raw
//!   body, keyed with the secret's full UTF-8 bytes, hex (lower case) or base64
//!   (standard alphabet, padded) encoded, in the header the endpoint names
//!   ([`DEFAULT_SIGNATURE_HEADER`] when it names none).
//!
//! # Secret rotation
//!
//! During a rotation grace period an endpoint has two valid secrets, passed
//! newest first. With Standard Webhooks the spec already allows several
//! space-separated signatures, so every secret signs and receivers holding
//! either secret verify. The hex/base64 receivers modelled here (Cheqroom,
//! Storeganise, House Check) compare the header to one value, so a list would
//! break all of them. Instead the newest secret's signature goes alone in the
//! named header, and the previous secret's signature in `{header}-Previous`
//! (for example `sg-signature-Previous`): a receiver that has not switched to
//! the new secret yet can check that header. More than two secrets is an
//! error for these schemes, because there is no header to put a third one in.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore as _;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the message id (the event id, stable across retries).
pub const HEADER_WEBHOOK_ID: &str = "webhook-id";
/// Header carrying the signing time as Unix seconds.
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the Standard Webhooks signatures.
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// Header carrying the event's sequence number: it grows with each event of the same
/// entity, in the order the events were written, and is the same across retries, so a
/// receiver can drop an event older than one it already applied.
pub const HEADER_SEQUENCE: &str = "duehook-sequence";
/// Header used by the hex and base64 schemes when the endpoint names none.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Duehook-Signature";
/// Appended to the signature header name to carry the previous secret's
/// signature during a rotation (hex and base64 schemes only).
pub const PREVIOUS_SUFFIX: &str = "-Previous";
/// Prefix of Standard Webhooks secrets; the rest is base64.
pub const SECRET_PREFIX: &str = "whsec_";

/// Decoded key length bounds for `whsec_` secrets. 24 bytes is the shortest
/// key the Standard Webhooks spec allows; 64 bytes is SHA-256's block size,
/// beyond which HMAC hashes the key down anyway.
pub const MIN_STANDARD_KEY_BYTES: usize = 24;
/// See [`MIN_STANDARD_KEY_BYTES`].
pub const MAX_STANDARD_KEY_BYTES: usize = 64;
/// Shortest secret accepted for the hex and base64 schemes, in characters.
pub const MIN_RAW_SECRET_CHARS: usize = 16;
/// Longest secret accepted for any scheme, in bytes. Only there to keep
/// configuration sane; HMAC itself accepts any length.
pub const MAX_SECRET_BYTES: usize = 1024;
/// Longest custom signature header name accepted.
pub const MAX_HEADER_NAME_LEN: usize = 100;
/// Longest message id accepted.
pub const MAX_MSG_ID_LEN: usize = 256;

/// Random bytes in a secret made by [`generate_secret`].
const GENERATED_SECRET_BYTES: usize = 32;

/// Headers that must not be chosen as the signature header: hop-by-hop and
/// framing headers (changing them breaks or smuggles the request), headers the
/// delivery worker sets itself (a second value would be ambiguous), and the
/// Standard Webhooks names, which always keep their standard meaning.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "expect",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    HEADER_WEBHOOK_ID,
    HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP,
    HEADER_SEQUENCE,
];

pub use crate::domain::endpoint::Scheme;

/// Why a secret, header name or signing request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("no signing secret given")]
    NoSecret,
    #[error("{count} secrets given; the {scheme} scheme signs with at most {max}")]
    TooManySecrets {
        scheme: Scheme,
        count: usize,
        max: usize,
    },
    #[error("invalid secret: {0}")]
    InvalidSecret(String),
    #[error("invalid header name {name:?}: {reason}")]
    InvalidHeaderName { name: String, reason: &'static str },
    #[error("invalid message id {id:?}: {reason}")]
    InvalidMessageId { id: String, reason: &'static str },
}

/// A new random endpoint secret: `whsec_` followed by 32 random bytes in
/// base64. It is valid for every scheme: Standard Webhooks uses the decoded
/// bytes, hex and base64 use the whole string as the key.
pub fn generate_secret() -> String {
    let mut key = [0u8; GENERATED_SECRET_BYTES];
    // ThreadRng is a CSPRNG seeded from the operating system, suitable for keys.
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", BASE64.encode(key))
}

/// Checks that `secret` can sign with `scheme`, so a bad secret is refused
/// when an endpoint is configured rather than at delivery time.
///
/// * Standard Webhooks: `whsec_` + standard padded base64 (what the official
///   libraries decode) of 24 to 64 bytes.
/// * Hex and base64: at least 16 characters, used verbatim.
pub fn validate_secret(scheme: Scheme, secret: &str) -> Result<(), SignError> {
    if secret.is_empty() {
        return Err(SignError::InvalidSecret("empty".into()));
    }
    if secret.len() > MAX_SECRET_BYTES {
        return Err(SignError::InvalidSecret(format!(
            "longer than {MAX_SECRET_BYTES} bytes"
        )));
    }
    match scheme {
        Scheme::StandardWebhooks => {
            let Some(encoded) = secret.strip_prefix(SECRET_PREFIX) else {
                return Err(SignError::InvalidSecret(format!(
                    "a standard_webhooks secret starts with {SECRET_PREFIX:?}"
                )));
            };
            let key = decode_standard_key(encoded)?;
            if !(MIN_STANDARD_KEY_BYTES..=MAX_STANDARD_KEY_BYTES).contains(&key.len()) {
                return Err(SignError::InvalidSecret(format!(
                    "decodes to {} bytes; expected {MIN_STANDARD_KEY_BYTES} to {MAX_STANDARD_KEY_BYTES}",
                    key.len()
                )));
            }
            Ok(())
        }
        Scheme::Hex | Scheme::Base64 => {
            if secret.chars().count() < MIN_RAW_SECRET_CHARS {
                return Err(SignError::InvalidSecret(format!(
                    "shorter than {MIN_RAW_SECRET_CHARS} characters"
                )));
            }
            Ok(())
        }
    }
}

/// Checks a custom signature header name: an RFC 7230 token, not longer
/// than [`MAX_HEADER_NAME_LEN`], and not one of the headers that framing,
/// proxies or the delivery worker own (see the list in the source).
pub fn validate_header_name(name: &str) -> Result<(), SignError> {
    let invalid = |reason| SignError::InvalidHeaderName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    // Leave room for the rotation suffix, which must fit as well.
    if name.len() + PREVIOUS_SUFFIX.len() > MAX_HEADER_NAME_LEN {
        return Err(invalid("too long"));
    }
    if !name.bytes().all(is_tchar) {
        return Err(invalid(
            "not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(invalid("reserved header"));
    }
    // Header families that proxies and servers interpret or strip.
    if lower.starts_with("proxy-") || lower.starts_with("sec-") {
        return Err(invalid("reserved header prefix"));
    }
    Ok(())
}

/// The headers to add to a request whose exact body bytes are `body`.
///
/// `secrets` are the endpoint's currently valid secrets, newest first (two
/// during a rotation grace period). `msg_id` is the event id, stable across
/// retries, so receivers can deduplicate; `timestamp_secs` is the signing
/// time in Unix seconds (the caller's clock, normally the attempt time).
///
/// Every scheme returns `webhook-id` and `webhook-timestamp` first. Then:
/// * Standard Webhooks: `webhook-signature` with one `v1,<base64>` per
///   secret, space-separated, over `{msg_id}.{timestamp_secs}.{body}`. The key
///   of a `whsec_` secret is its base64-decoded remainder; a secret without
///   the prefix is used as its raw UTF-8 bytes. `header` is ignored: the spec
///   fixes the header names.
/// * Hex / Base64: the newest secret's HMAC of `body` in `header` (default
///   [`DEFAULT_SIGNATURE_HEADER`]) and, with a second secret, its HMAC in
///   `{header}-Previous`.
pub fn sign(
    scheme: Scheme,
    header: Option<&str>,
    secrets: &[&str],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> Result<Vec<(String, String)>, SignError> {
    if secrets.is_empty() {
        return Err(SignError::NoSecret);
    }
    validate_msg_id(msg_id)?;
    let mut headers = vec![
        (HEADER_WEBHOOK_ID.to_owned(), msg_id.to_owned()),
        (
            HEADER_WEBHOOK_TIMESTAMP.to_owned(),
            timestamp_secs.to_string(),
        ),
    ];
    match scheme {
        Scheme::StandardWebhooks => {
            let signed_prefix = format!("{msg_id}.{timestamp_secs}.");
            let mut values = Vec::with_capacity(secrets.len());
            for secret in secrets {
                let key = standard_key(secret)?;
                let mac = hmac_sha256(&key, &[signed_prefix.as_bytes(), body])?;
                values.push(format!("v1,{}", BASE64.encode(mac)));
            }
            headers.push((HEADER_WEBHOOK_SIGNATURE.to_owned(), values.join(" ")));
        }
        Scheme::Hex | Scheme::Base64 => {
            const MAX: usize = 2;
            if secrets.len() > MAX {
                return Err(SignError::TooManySecrets {
                    scheme,
                    count: secrets.len(),
                    max: MAX,
                });
            }
            let name = header.unwrap_or(DEFAULT_SIGNATURE_HEADER);
            validate_header_name(name)?;
            let encode = |mac: &[u8]| match scheme {
                Scheme::Hex => to_hex(mac),
                _ => BASE64.encode(mac),
            };
            for (i, secret) in secrets.iter().enumerate() {
                if secret.is_empty() {
                    return Err(SignError::InvalidSecret("empty".into()));
                }
                let mac = hmac_sha256(secret.as_bytes(), &[body])?;
                let header_name = if i == 0 {
                    name.to_owned()
                } else {
                    format!("{name}{PREVIOUS_SUFFIX}")
                };
                headers.push((header_name, encode(&mac)));
            }
        }
    }
    Ok(headers)
}

/// The message id becomes a header value and part of the signed content, so
/// it must be visible ASCII: no spaces, no control characters (which would
/// allow header injection), not empty.
fn validate_msg_id(id: &str) -> Result<(), SignError> {
    let invalid = |reason| SignError::InvalidMessageId {
        id: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("empty"));
    }
    if id.len() > MAX_MSG_ID_LEN {
        return Err(invalid("too long"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("only visible ASCII characters are allowed"));
    }
    Ok(())
}

/// The HMAC key of a Standard Webhooks secret.
fn standard_key(secret: &str) -> Result<Vec<u8>, SignError> {
    if secret.is_empty() {
        return Err(SignError::InvalidSecret("empty".into()));
    }
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(encoded) => decode_standard_key(encoded),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

fn decode_standard_key(encoded: &str) -> Result<Vec<u8>, SignError> {
    BASE64.decode(encoded).map_err(|e| {
        SignError::InvalidSecret(format!(
            "the part after {SECRET_PREFIX:?} is not base64: {e}"
        ))
    })
}

/// HMAC-SHA256 of the concatenation of `parts`, without copying the body.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, SignError> {
    // HMAC accepts keys of any length; the error branch is unreachable in
    // practice but is mapped rather than unwrapped.
    let mut mac = HmacSha256::new_from_slice(key)
        .map_err(|_| SignError::InvalidSecret("unusable HMAC key".into()))?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    // reqwest re-exports the `http` crate types that standardwebhooks takes.
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    use standardwebhooks::Webhook;

    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    /// The official library rejects timestamps more than five minutes from
    /// its own clock, so tests that verify with it sign at the real time.
    fn now_secs() -> i64 {
        use crate::clock::Clock;
        crate::clock::SystemClock.now().timestamp()
    }

    fn header_map(headers: &[(String, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("valid name"),
                HeaderValue::from_str(v).expect("valid value"),
            );
        }
        map
    }

    fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn hmac_hex(key: &[u8], body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).expect("key");
        mac.update(body);
        to_hex(&mac.finalize().into_bytes())
    }

    fn hmac_b64(key: &[u8], body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).expect("key");
        mac.update(body);
        BASE64.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        // Test vector from the Standard Webhooks reference implementation.
        let headers = sign(
            Scheme::StandardWebhooks,
            None,
            &[SPEC_SECRET],
            SPEC_MSG_ID,
            1_649_367_553,
            SPEC_BODY,
        )
        .expect("sign");
        assert_eq!(get(&headers, "webhook-id"), Some(SPEC_MSG_ID));
        assert_eq!(get(&headers, "webhook-timestamp"), Some("1649367553"));
        assert_eq!(
            get(&headers, "webhook-signature"),
            Some("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn standard_verifies_with_official_library() {
        let secret = generate_secret();
        let body = br#"{"id":"evt_1","type":"order.overdue_1_day","data":{"id":"o1"}}"#;
        let headers = sign(
            Scheme::StandardWebhooks,
            None,
            &[&secret],
            "evt_1",
            now_secs(),
            body,
        )
        .expect("sign");
        let map = header_map(&headers);
        Webhook::new(&secret)
            .expect("secret")
            .verify(body, &map)
            .expect("verifies");

        // Another secret, a changed body, or a changed id must not verify.
        let other = generate_secret();
        assert!(
            Webhook::new(&other)
                .expect("secret")
                .verify(body, &map)
                .is_err()
        );
        let wh = Webhook::new(&secret).expect("secret");
        assert!(wh.verify(b"{}", &map).is_err());
        let mut tampered = map.clone();
        tampered.insert("webhook-id", HeaderValue::from_static("evt_2"));
        assert!(wh.verify(body, &tampered).is_err());
    }

    #[test]
    fn standard_rotation_both_secrets_verify() {
        let new = generate_secret();
        let old = generate_secret();
        let body = "<webhook><id>é</id></webhook>".as_bytes();
        let headers = sign(
            Scheme::StandardWebhooks,
            None,
            &[&new, &old],
            "msg_rot",
            now_secs(),
            body,
        )
        .expect("sign");
        let sig = get(&headers, "webhook-signature").expect("signature");
        assert_eq!(sig.split(' ').count(), 2);
        assert!(sig.split(' ').all(|s| s.starts_with("v1,")));
        let map = header_map(&headers);
        for secret in [&new, &old] {
            Webhook::new(secret)
                .expect("secret")
                .verify(body, &map)
                .expect("each valid secret verifies");
        }
        let stranger = generate_secret();
        assert!(
            Webhook::new(&stranger)
                .expect("secret")
                .verify(body, &map)
                .is_err()
        );
    }

    #[test]
    fn standard_secret_without_prefix_uses_raw_bytes() {
        let headers = sign(
            Scheme::StandardWebhooks,
            None,
            &["plain-secret-value"],
            "msg_1",
            now_secs(),
            b"{}",
        )
        .expect("sign");
        Webhook::from_bytes(b"plain-secret-value".to_vec())
            .expect("key")
            .verify(b"{}", &header_map(&headers))
            .expect("verifies with the raw bytes as key");
    }

    #[test]
    fn standard_ignores_custom_header() {
        let headers = sign(
            Scheme::StandardWebhooks,
            Some("X-Custom"),
            &[SPEC_SECRET],
            "m",
            1,
            b"",
        )
        .expect("sign");
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        );
    }

    #[test]
    fn hex_matches_hand_computed_hmac() {
        let secret = "cheqroom-shared-secret";
        let body = br#"{"event":"order.checkout"}"#;
        let headers = sign(
            Scheme::Hex,
            Some("X-CHEQROOM-Signature"),
            &[secret],
            "evt_9",
            1_700_000_000,
            body,
        )
        .expect("sign");
        assert_eq!(
            headers,
            vec![
                ("webhook-id".to_owned(), "evt_9".to_owned()),
                ("webhook-timestamp".to_owned(), "1700000000".to_owned()),
                (
                    "X-CHEQROOM-Signature".to_owned(),
                    hmac_hex(secret.as_bytes(), body)
                ),
            ]
        );
        let wrong = hmac_hex(b"another-secret-value", body);
        assert_ne!(get(&headers, "X-CHEQROOM-Signature"), Some(wrong.as_str()));
    }

    #[test]
    fn hex_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // "Jefe" is too short for validate_secret but sign() only refuses empty keys.
        let headers = sign(
            Scheme::Hex,
            Some("signature"),
            &["Jefe"],
            "m",
            0,
            b"what do ya want for nothing?",
        )
        .expect("sign");
        assert_eq!(
            get(&headers, "signature"),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn base64_matches_hand_computed_hmac_with_default_header() {
        let secret = generate_secret();
        let body = b"a=1&b=%C3%A9";
        let headers = sign(Scheme::Base64, None, &[&secret], "evt", 5, body).expect("sign");
        assert_eq!(
            get(&headers, DEFAULT_SIGNATURE_HEADER),
            Some(hmac_b64(secret.as_bytes(), body).as_str())
        );
        // The whole string, prefix included, is the key for this scheme.
        let decoded = BASE64
            .decode(secret.trim_start_matches(SECRET_PREFIX))
            .expect("b64");
        assert_ne!(
            get(&headers, DEFAULT_SIGNATURE_HEADER),
            Some(hmac_b64(&decoded, body).as_str())
        );
    }

    #[test]
    fn hex_and_base64_rotation_use_previous_header() {
        let (new, old) = ("new-secret-0123456789", "old-secret-0123456789");
        let body = b"{}";
        let headers = sign(
            Scheme::Base64,
            Some("sg-signature"),
            &[new, old],
            "evt",
            5,
            body,
        )
        .expect("sign");
        assert_eq!(headers.len(), 4);
        assert_eq!(
            get(&headers, "sg-signature"),
            Some(hmac_b64(new.as_bytes(), body).as_str())
        );
        assert_eq!(
            get(&headers, "sg-signature-Previous"),
            Some(hmac_b64(old.as_bytes(), body).as_str())
        );
        let err = sign(
            Scheme::Hex,
            None,
            &[new, old, "third-secret-0123456"],
            "e",
            1,
            body,
        );
        assert!(matches!(
            err,
            Err(SignError::TooManySecrets { count: 3, .. })
        ));
    }

    #[test]
    fn refuses_bad_input_without_panicking() {
        assert_eq!(
            sign(Scheme::Hex, None, &[], "m", 0, b""),
            Err(SignError::NoSecret)
        );
        assert!(matches!(
            sign(Scheme::Hex, None, &[""], "m", 0, b""),
            Err(SignError::InvalidSecret(_))
        ));
        assert!(matches!(
            sign(
                Scheme::StandardWebhooks,
                None,
                &["whsec_!!notbase64"],
                "m",
                0,
                b""
            ),
            Err(SignError::InvalidSecret(_))
        ));
        for id in ["", "a b", "evt\r\nX-Evil: 1", "é"] {
            assert!(
                matches!(
                    sign(Scheme::Hex, None, &["k"], id, 0, b""),
                    Err(SignError::InvalidMessageId { .. })
                ),
                "{id:?}"
            );
        }
        assert!(matches!(
            sign(Scheme::Hex, Some("Bad Header"), &["k"], "m", 0, b""),
            Err(SignError::InvalidHeaderName { .. })
        ));
        // Non-UTF-8 bodies are signed as bytes.
        assert!(
            sign(
                Scheme::StandardWebhooks,
                None,
                &[SPEC_SECRET],
                "m",
                -1,
                &[0xff, 0]
            )
            .is_ok()
        );
    }

    #[test]
    fn secret_validation() {
        assert!(validate_secret(Scheme::StandardWebhooks, &generate_secret()).is_ok());
        assert!(validate_secret(Scheme::StandardWebhooks, SPEC_SECRET).is_ok());
        // 16 bytes decoded: too short.
        let short = format!("whsec_{}", BASE64.encode([7u8; 16]));
        assert!(validate_secret(Scheme::StandardWebhooks, &short).is_err());
        let long = format!("whsec_{}", BASE64.encode([7u8; 65]));
        assert!(validate_secret(Scheme::StandardWebhooks, &long).is_err());
        let max = format!("whsec_{}", BASE64.encode([7u8; 64]));
        assert!(validate_secret(Scheme::StandardWebhooks, &max).is_ok());
        assert!(validate_secret(Scheme::StandardWebhooks, "whsec_not base64!").is_err());
        assert!(validate_secret(Scheme::StandardWebhooks, "plain-secret-without-prefix").is_err());
        assert!(validate_secret(Scheme::StandardWebhooks, "").is_err());

        for scheme in [Scheme::Hex, Scheme::Base64] {
            assert!(validate_secret(scheme, "0123456789abcdef").is_ok());
            assert!(validate_secret(scheme, "0123456789abcde").is_err());
            assert!(validate_secret(scheme, "").is_err());
            assert!(validate_secret(scheme, &generate_secret()).is_ok());
            assert!(validate_secret(scheme, &"x".repeat(MAX_SECRET_BYTES + 1)).is_err());
        }
    }

    #[test]
    fn header_name_validation() {
        for ok in [
            "X-CHEQROOM-Signature",
            "sg-signature",
            "signature",
            "X-Duehook-Signature",
            "x_sig.v2",
        ] {
            assert!(validate_header_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Host",
            "content-length",
            "Transfer-Encoding",
            "connection",
            "Content-Type",
            "webhook-signature",
            "Webhook-Id",
            "Proxy-Foo",
            "Sec-Fetch-Mode",
            "bad header",
            "x:y",
            "x\r\ny",
            "é",
            "(sig)",
        ] {
            assert!(validate_header_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_header_name(&"a".repeat(MAX_HEADER_NAME_LEN)).is_err());
    }

    #[test]
    fn scheme_parsing_and_serde() {
        assert_eq!("standard".parse::<Scheme>(), Ok(Scheme::StandardWebhooks));
        assert_eq!(
            "standard_webhooks".parse::<Scheme>(),
            Ok(Scheme::StandardWebhooks)
        );
        assert_eq!("HEX".parse::<Scheme>(), Ok(Scheme::Hex));
        assert_eq!("base64".parse::<Scheme>(), Ok(Scheme::Base64));
        assert!("sha1".parse::<Scheme>().is_err());
        for s in [Scheme::StandardWebhooks, Scheme::Hex, Scheme::Base64] {
            let json = serde_json::to_string(&s).expect("ser");
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Scheme>(&json).expect("de"), s);
        }
    }

    #[test]
    fn generated_secrets_are_distinct_and_32_bytes() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        let key = BASE64
            .decode(a.strip_prefix(SECRET_PREFIX).expect("prefix"))
            .expect("b64");
        assert_eq!(key.len(), 32);
    }
}
