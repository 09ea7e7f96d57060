//! JSON kept as text. An event's `data` is written once, as the JSON text that is
//! stored, handed to the delivery worker and sent; nothing on that way builds a tree
//! of it again. What must be known of such a text is read off it here, each with one
//! pass over its bytes: how deep it nests, the same text without the whitespace
//! between its tokens, and what a posted event's `data` must be.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::DomainError;

/// The deepest bracket nesting of a JSON text, brackets inside strings not counted.
pub fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `text` without whitespace between its tokens: the same JSON value, keys in the
/// order written, strings and numbers exactly as written.
pub fn compact(text: &RawValue) -> Box<RawValue> {
    let bytes = text.get().as_bytes();
    let (mut in_str, mut escaped) = (false, false);
    let mut out: Option<Vec<u8>> = None;
    for (i, &b) in bytes.iter().enumerate() {
        let keep = if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            true
        } else {
            in_str = b == b'"';
            !matches!(b, b' ' | b'\t' | b'\n' | b'\r')
        };
        match (&mut out, keep) {
            (Some(out), true) => out.push(b),
            (None, false) => out = Some(bytes[..i].to_vec()),
            _ => {}
        }
    }
    match out {
        None => text.to_owned(),
        // Only ASCII whitespace outside strings was left out: still UTF-8, still JSON.
        Some(out) => String::from_utf8(out)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
            .unwrap_or_else(|| text.to_owned()),
    }
}

/// Checks a posted event's `data`: a JSON object whose numbers all fit a double (so
/// every body format can render it), with an `id`, when present, that is a string or
/// a number. Returns that id (a number as JSON writes it), empty when absent.
pub fn posted_entity_id(data: &RawValue) -> Result<String, DomainError> {
    let mut de = serde_json::Deserializer::from_str(data.get());
    let id = de
        .deserialize_map(PostedData)
        .map_err(|e| DomainError::invalid("data", strip_position(&e.to_string())))?;
    let Some(id) = id else {
        return Ok(String::new());
    };
    let text = id.get();
    if text.starts_with('"') {
        let s: String = serde_json::from_str(text)
            .map_err(|e| DomainError::invalid("data.id", strip_position(&e.to_string())))?;
        super::input::check_id("data.id", &s)?;
        Ok(s)
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        let n: serde_json::Number = serde_json::from_str(text)
            .map_err(|e| DomainError::invalid("data.id", strip_position(&e.to_string())))?;
        Ok(n.to_string())
    } else {
        Err(DomainError::invalid(
            "data.id",
            "must be a string or a number",
        ))
    }
}

/// serde_json appends " at line L column C" to its messages; the field says more.
pub fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Reads a posted `data` object: its `id`'s text (the last one, as a JSON object
/// read into a map would keep), every other value checked and dropped.
struct PostedData;

impl<'de> Visitor<'de> for PostedData {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(is_id) = map.next_key_seed(IsId)? {
            if is_id {
                id = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value_seed(Checked)?;
            }
        }
        Ok(id)
    }
}

/// A key: whether it is `id` (escapes decoded).
struct IsId;

impl<'de> DeserializeSeed<'de> for IsId {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IsId {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == "id")
    }
}

/// Any JSON value, read through and dropped: serde_json parses every number on the
/// way, so one outside a double's range is refused here rather than when rendered.
struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Checked)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Checked)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn raw(s: &str) -> Box<RawValue> {
        serde_json::from_str(s).expect("JSON")
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(depth(br#"{"a": "[[[[["}"#), 1);
        assert_eq!(depth(br#"{"a": [{"b": "\"]"}]}"#), 3);
        assert_eq!(depth(b"1"), 0);
    }

    #[test]
    fn compact_leaves_strings_and_order_alone() {
        let text = raw("{ \"b\" : [1, 2 ] ,\n\t\"a\": \"x y \\\" z\" }");
        assert_eq!(compact(&text).get(), r#"{"b":[1,2],"a":"x y \" z"}"#);
        let tight = raw(r#"{"z":1,"a":{"s":" "}}"#);
        assert_eq!(compact(&tight).get(), tight.get());
    }

    #[test]
    fn posted_data_is_an_object_with_a_string_or_number_id() {
        let id = |s: &str| posted_entity_id(&raw(s));
        assert_eq!(
            id(r#"{"id": "ord-1", "n": [1, {"x": null}]}"#),
            Ok("ord-1".into())
        );
        assert_eq!(id(r#"{"id": 42}"#), Ok("42".into()));
        assert_eq!(id(r#"{"i\u0064": "esc"}"#), Ok("esc".into()));
        assert_eq!(id(r#"{"id": "a", "id": "b"}"#), Ok("b".into()));
        assert_eq!(id(r#"{"name": "no id"}"#), Ok(String::new()));
        let field = |s: &str| match posted_entity_id(&raw(s)) {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(field(r#"[1, 2]"#), "data");
        assert_eq!(field(r#""text""#), "data");
        assert_eq!(field(r#"{"n": 1e400}"#), "data");
        assert_eq!(field(r#"{"id": null}"#), "data.id");
        assert_eq!(field(r#"{"id": {"a": 1}}"#), "data.id");
        assert_eq!(field(r#"{"id": "a b"}"#), "data.id");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[ a-z\\\\\"\n\t{}\\[\\]:,]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[ a-z\"]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Compacting pretty-printed JSON gives the compact serialisation, byte for byte.
        #[test]
        fn compact_matches_serde_json(v in arb_json()) {
            let pretty = raw(&serde_json::to_string_pretty(&v).expect("JSON"));
            let compacted = compact(&pretty);
            prop_assert_eq!(compacted.get(), serde_json::to_string(&v).expect("JSON"));
            prop_assert_eq!(depth(pretty.get().as_bytes()), value_depth(&v));
        }
    }

    fn value_depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
            Value::Object(m) => 1 + m.values().map(value_depth).max().unwrap_or(0),
            _ => 0,
        }
    }
}
