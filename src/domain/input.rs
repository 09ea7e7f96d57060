//! Checks shared by every entity input: identifiers, time zones, free-form `data`.

use chrono_tz::Tz;
use serde_json::Value;

use super::DomainError;

/// Longest identifier accepted from the application.
pub const MAX_ID_LEN: usize = 128;

/// Identifiers come from the application's own database: letters, digits and `-_.:@`,
/// 1 to 128 of them. Anything else (spaces, slashes, control characters) is refused so
/// that ids are safe in URLs, logs and headers.
pub fn check_id(field: &str, id: &str) -> Result<(), DomainError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(DomainError::invalid(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')))
    {
        return Err(DomainError::invalid(
            field,
            format!("character {c:?} is not allowed (use letters, digits and - _ . : @)"),
        ));
    }
    Ok(())
}

pub fn check_ids(field: &str, ids: &[String]) -> Result<(), DomainError> {
    let mut seen = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        check_id(&format!("{field}[{i}]"), id)?;
        if !seen.insert(id) {
            return Err(DomainError::invalid(
                format!("{field}[{i}]"),
                format!("`{id}` is listed twice"),
            ));
        }
    }
    Ok(())
}

/// An IANA time zone name such as `Europe/Brussels`.
pub fn check_timezone(field: &str, tz: Option<&str>) -> Result<Option<Tz>, DomainError> {
    tz.map(|name| {
        name.parse::<Tz>().map_err(|_| {
            DomainError::invalid(
                field,
                format!("unknown time zone `{name}` (use an IANA name such as Europe/Brussels)"),
            )
        })
    })
    .transpose()
}

/// `data` carries the application's own fields; it must be a JSON object when present.
pub fn check_data(data: &Option<Value>) -> Result<(), DomainError> {
    match data {
        None | Some(Value::Object(_)) | Some(Value::Null) => Ok(()),
        Some(_) => Err(DomainError::invalid("data", "must be a JSON object")),
    }
}

/// An instant at millisecond precision, the precision the store keeps: the API returns
/// exactly what the scheduler plans from.
pub fn millis(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// `data` as stored: an object, empty when absent.
pub fn data_or_empty(data: Option<Value>) -> Value {
    match data {
        Some(Value::Object(m)) => Value::Object(m),
        _ => Value::Object(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("id", "ord-42_a.b:c@d").is_ok());
        assert!(check_id("id", "").is_err());
        assert!(check_id("id", "a b").is_err());
        assert!(check_id("id", "a/b").is_err());
        assert!(check_id("id", &"x".repeat(129)).is_err());
        let err = check_ids("item_ids", &["a".into(), "a".into()]).unwrap_err();
        assert_eq!(
            err,
            DomainError::invalid("item_ids[1]", "`a` is listed twice")
        );
    }

    #[test]
    fn timezones_are_checked() {
        assert!(check_timezone("timezone", Some("Europe/Brussels")).is_ok());
        assert!(check_timezone("timezone", Some("Mars/Olympus")).is_err());
        assert_eq!(check_timezone("timezone", None), Ok(None));
    }
}
