//! A JSON body extractor whose every rejection is an [`ApiError`] naming the field:
//! malformed JSON, a wrong type or a bad instant at `due_at`, an unknown field, a body
//! over the size limit, or a wrong content type.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::json::{self, strip_position};

/// Deepest JSON nesting accepted; serde_json itself stops at 128, we stop earlier so the
/// error is ours and clear.
const MAX_DEPTH: usize = 64;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state, "[server] max_body_bytes").await?;
        parse(&bytes).map(JsonBody)
    }
}

/// The body of a JSON request: refused when its content type is not JSON, or when it
/// is over the route's limit (named by `limit` in the error).
pub async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
    limit: &str,
) -> Result<Bytes, ApiError> {
    let content_type_ok = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/json") || ct.contains("+json")
        });
    if !content_type_ok {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is over the limit ({limit})"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text())
        }
    })
}

/// Parses a request whose parts are parsed again on their own with [`parse`] (a
/// batch's operations): the NUL check is left to each part, so that one part's NUL
/// refuses that part alone.
pub fn parse_request<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_checked(bytes, false)
}

/// Parses `bytes` as `T`, naming the offending field on failure.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_checked(bytes, true)
}

fn parse_checked<T: DeserializeOwned>(bytes: &[u8], refuse_nul: bool) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    // PostgreSQL text cannot hold NUL, and no field of ours needs one: refuse it here
    // rather than fail in the store.
    if refuse_nul && bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(ApiError::invalid(
            "body",
            "strings must not contain NUL (\\u0000)",
        ));
    }
    if json::depth(bytes) > MAX_DEPTH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("JSON nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("body is not valid JSON: {inner}"),
            )
        } else {
            // serde_path_to_error already ends the path with an unknown field's own name.
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            ApiError::invalid(field, strip_position(&inner.to_string()))
        }
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::api::ingest::OrderInput;

    #[test]
    fn names_the_field() {
        let e = parse::<OrderInput>(br#"{"contact_id": 5, "item_ids": [], "due_at": "x"}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("contact_id"));
        let e =
            parse::<OrderInput>(br#"{"contact_id": "c", "item_ids": [], "due_at": "tomorrow"}"#)
                .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("due_at"));
        let e = parse::<OrderInput>(br#"{"contact_id": "c", "item_ids": [], "due_at": "2030-01-01T00:00:00Z", "colour": 1}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
        let e = parse::<OrderInput>(br#"{"contact_id": "c""#).unwrap_err();
        assert_eq!(
            (e.status, e.error),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        let e = parse::<OrderInput>(br#"{"contact_id": "c"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        assert!(e.detail.contains("item_ids"), "{}", e.detail);
    }

    #[test]
    fn refuses_deep_nesting() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let e = parse::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.error, "malformed_json");
    }
}
