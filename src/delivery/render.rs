//! Webhook bodies: the exact bytes an endpoint receives for an event.
//!
//! This module owns the body [`Format`]s (JSON, XML, form) and the
//! [`Envelope`]s (which keys surround the event data, to match what receivers
//! of Standard Webhooks / Storeganise, House Check and Checkfront expect). It
//! is pure: the event is passed in as an [`EventView`], times are formatted,
//! never read from a clock, and the output is deterministic, so a retry sends
//! (and signs) the same bytes as the first attempt.
//!
//! # Envelopes and key order
//!
//! Keys come out in the order below in every format (envelope metadata before
//! the usually large data), and times are RFC 3339 UTC with milliseconds and
//! `Z` (`2024-05-01T09:00:00.000Z`). `scheduled_at` is present only for
//! time-based events.
//!
//! * [`Envelope::Standard`]: `id`, `type`, `created`, `scheduled_at`, `data`.
//! * [`Envelope::TypePayload`] (House Check): `id`, `type`, `scheduled_at`,
//!   `payload`.
//! * [`Envelope::EventEntity`] (Checkfront): `event`, `<entity>`, `id`,
//!   `created`, `scheduled_at`, where `<entity>` is the event type's prefix
//!   before the first `.` (`booking.create` → `booking`, `unitRental.markOverdue`
//!   → `unitRental`). When that prefix is empty or is one of the envelope's
//!   own keys (`event`, `id`, `created`, `scheduled_at`), `data` is used
//!   instead, so no key is ever written twice.
//!
//! The envelope keys keep their order because this module writes them one by
//! one. `data` is the JSON text the event was stored with: in JSON bodies it is
//! written as it is, so its keys keep the order they were stored in (a posted
//! event's as the application sent them, an entity's as the API returns it). XML
//! and form bodies are written from that text read into a `serde_json::Map`,
//! which without serde_json's `preserve_order` feature (not enabled, because it
//! would change every map in the crate) is sorted by key: there the data keys
//! come out in lexicographic order.
//!
//! # Formats
//!
//! * [`Format::Json`]: compact JSON, `application/json`.
//! * [`Format::Xml`]: `application/xml`, an XML declaration and a root
//!   element [`XML_ROOT`] with one child element per key. Objects become
//!   nested elements, arrays repeated [`XML_ARRAY_ITEM`] elements, `null` an
//!   empty element, booleans `true`/`false`. Keys that are not XML names are
//!   sanitised deterministically (see [`xml_name`]). Characters XML 1.0 cannot
//!   carry at all (NUL and other C0 controls besides tab, LF and CR, and
//!   U+FFFE/U+FFFF) are replaced with U+FFFD; CR is written as `&#13;` so that
//!   parsers' line-end normalisation does not turn it into LF.
//! * [`Format::Form`]: `application/x-www-form-urlencoded`, nested keys
//!   flattened PHP-style (`data[customer][name]=…`, arrays indexed
//!   `data[items][0][id]=…`), `null` as an empty value, booleans as
//!   `true`/`false`, empty objects and arrays as one empty value (so the key is
//!   still present). `[` and `]` inside a key would be read as nesting by the
//!   receiver, so they are replaced with `_`.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::Deserialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Root element of XML bodies.
pub const XML_ROOT: &str = "webhook";
/// Element name of each array entry in XML bodies.
pub const XML_ARRAY_ITEM: &str = "item";
/// Deepest nesting of objects and arrays accepted in `data`, so that the
/// recursive XML and form writers cannot overflow the stack. The API refuses
/// bodies nested deeper than this long before (see `http::json`).
pub const MAX_DATA_DEPTH: usize = 128;

/// Key used for the entity in [`Envelope::EventEntity`] when the event type
/// gives no usable one.
const FALLBACK_ENTITY_KEY: &str = "data";

pub use crate::domain::endpoint::{Envelope, Format};
use crate::domain::json;

/// The event being rendered, borrowed from wherever the caller keeps it.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// Event id, stable across retries.
    pub id: &'a str,
    /// Event type, e.g. `order.overdue_1_day`.
    pub event_type: &'a str,
    /// When the event was created (for a timer: when it actually fired).
    pub created: DateTime<Utc>,
    /// For a time-based event, the instant its timer was due.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The event's `data`, as the JSON text it was stored with.
    pub data: &'a RawValue,
}

/// A rendered body and the content type to send it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

/// Why an event could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("event data nests deeper than {MAX_DATA_DEPTH} levels")]
    TooDeep,
    #[error("JSON rendering failed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("XML rendering failed: {0}")]
    Xml(#[from] std::io::Error),
    #[error("form rendering failed: {0}")]
    Form(#[from] serde_urlencoded::ser::Error),
}

/// Renders `ev` in `format` inside `envelope`. The bytes are what must be
/// signed and sent.
pub fn render(format: Format, envelope: Envelope, ev: &EventView) -> Result<Rendered, RenderError> {
    if json::depth(ev.data.get().as_bytes()) > MAX_DATA_DEPTH {
        return Err(RenderError::TooDeep);
    }
    let body = match format {
        Format::Json => serde_json::to_vec(&Ordered(&envelope_fields(envelope, ev, ev.data)))?,
        Format::Xml | Format::Form => {
            // Bounded by the depth check above, not by serde_json's own limit.
            let mut de = serde_json::Deserializer::from_str(ev.data.get());
            de.disable_recursion_limit();
            let data = Value::deserialize(&mut de)?;
            let fields = envelope_fields(envelope, ev, &data);
            match format {
                Format::Xml => render_xml(&fields)?,
                _ => render_form(&fields)?.into_bytes(),
            }
        }
    };
    Ok(Rendered {
        body,
        content_type: format.content_type(),
    })
}

/// The key `Envelope::EventEntity` uses for the data of `event_type`.
pub fn entity_key(event_type: &str) -> &str {
    let prefix = event_type.split('.').next().unwrap_or_default();
    match prefix {
        "" | "event" | "id" | "created" | "scheduled_at" => FALLBACK_ENTITY_KEY,
        p => p,
    }
}

/// One top-level value of the envelope; the data is JSON text (`RawValue`) or, for
/// the XML and form writers, that text read (`Value`).
enum Field<'a, D: ?Sized> {
    Text(String),
    Json(&'a D),
}

type Fields<'a, D> = Vec<(&'a str, Field<'a, D>)>;

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn envelope_fields<'a, D: ?Sized>(
    envelope: Envelope,
    ev: &EventView<'a>,
    data: &'a D,
) -> Fields<'a, D> {
    let id = ("id", Field::Text(ev.id.to_owned()));
    let created = ("created", Field::Text(timestamp(ev.created)));
    let scheduled = ev
        .scheduled_at
        .map(|t| ("scheduled_at", Field::Text(timestamp(t))));
    let mut fields = Vec::with_capacity(5);
    match envelope {
        Envelope::Standard => {
            fields.push(id);
            fields.push(("type", Field::Text(ev.event_type.to_owned())));
            fields.push(created);
            fields.extend(scheduled);
            fields.push(("data", Field::Json(data)));
        }
        Envelope::TypePayload => {
            fields.push(id);
            fields.push(("type", Field::Text(ev.event_type.to_owned())));
            fields.extend(scheduled);
            fields.push(("payload", Field::Json(data)));
        }
        Envelope::EventEntity => {
            fields.push(("event", Field::Text(ev.event_type.to_owned())));
            fields.push((entity_key(ev.event_type), Field::Json(data)));
            fields.push(id);
            fields.push(created);
            fields.extend(scheduled);
        }
    }
    fields
}

/// Serialises the fields as a JSON object in their given order.
struct Ordered<'f, 'a>(&'f [(&'a str, Field<'a, RawValue>)]);

impl serde::Serialize for Ordered<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, field) in self.0 {
            match field {
                Field::Text(s) => map.serialize_entry(key, s)?,
                Field::Json(v) => map.serialize_entry(key, v)?,
            }
        }
        map.end()
    }
}

// ---------------------------------------------------------------- XML

fn render_xml(fields: &Fields<Value>) -> Result<Vec<u8>, RenderError> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.write_event(Event::Start(BytesStart::new(XML_ROOT)))?;
    for (key, field) in fields {
        let name = xml_name(key);
        match field {
            Field::Text(s) => write_text_element(&mut w, &name, s)?,
            Field::Json(v) => write_xml_value(&mut w, &name, v)?,
        }
    }
    w.write_event(Event::End(BytesEnd::new(XML_ROOT)))?;
    Ok(w.into_inner())
}

fn write_text_element(w: &mut Writer<Vec<u8>>, name: &str, text: &str) -> std::io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(name)))?;
    w.write_event(Event::Text(BytesText::from_escaped(xml_escape(text))))?;
    w.write_event(Event::End(BytesEnd::new(name)))
}

fn write_xml_value(w: &mut Writer<Vec<u8>>, name: &str, v: &Value) -> std::io::Result<()> {
    match v {
        Value::Null => w.write_event(Event::Empty(BytesStart::new(name))),
        Value::Bool(b) => write_text_element(w, name, if *b { "true" } else { "false" }),
        Value::Number(n) => write_text_element(w, name, &n.to_string()),
        Value::String(s) => write_text_element(w, name, s),
        Value::Array(items) if items.is_empty() => {
            w.write_event(Event::Empty(BytesStart::new(name)))
        }
        Value::Object(map) if map.is_empty() => w.write_event(Event::Empty(BytesStart::new(name))),
        Value::Array(items) => {
            w.write_event(Event::Start(BytesStart::new(name)))?;
            for item in items {
                write_xml_value(w, XML_ARRAY_ITEM, item)?;
            }
            w.write_event(Event::End(BytesEnd::new(name)))
        }
        Value::Object(map) => {
            w.write_event(Event::Start(BytesStart::new(name)))?;
            for (key, value) in map {
                write_xml_value(w, &xml_name(key), value)?;
            }
            w.write_event(Event::End(BytesEnd::new(name)))
        }
    }
}

/// Turns any JSON key into a valid XML 1.0 element name, deterministically:
/// every character that may not appear in a name becomes `_`; a first
/// character that may not start a name (a digit, `-`, `.`) gets a `_` put in
/// front; an empty key becomes `_`; and names starting with `xml` in any case
/// (reserved by the XML spec) get a `_` in front. `:` is replaced too, because
/// it would declare a namespace prefix. Distinct keys may map to the same
/// name (`a b` and `a_b`); both elements are then written, in key order.
pub fn xml_name(key: &str) -> Cow<'_, str> {
    let valid = key.chars().enumerate().all(|(i, c)| {
        if i == 0 {
            is_name_start_char(c)
        } else {
            is_name_char(c)
        }
    });
    if valid && !key.is_empty() && !starts_with_xml(key) {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 1);
    match key.chars().next() {
        None => out.push('_'),
        Some(c) if !is_name_start_char(c) && is_name_char(c) => out.push('_'),
        Some(_) if starts_with_xml(key) => out.push('_'),
        Some(_) => {}
    }
    for c in key.chars() {
        out.push(if is_name_char(c) { c } else { '_' });
    }
    Cow::Owned(out)
}

fn starts_with_xml(key: &str) -> bool {
    key.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("xml"))
}

/// XML 1.0 (5th edition) `NameStartChar`, without `:`.
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 `NameChar`, without `:`.
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Escapes text content. Besides the markup characters, CR is written as a
/// character reference (a literal CR would be normalised to LF by the
/// receiver's parser) and characters XML 1.0 forbids even as references are
/// replaced with U+FFFD, so the document always parses.
fn xml_escape(s: &str) -> Cow<'_, str> {
    let needs = |c: char| matches!(c, '&' | '<' | '>' | '\r') || !is_xml_char(c);
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// XML 1.0 `Char` (surrogates cannot occur in a Rust `char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

// ---------------------------------------------------------------- form

fn render_form(fields: &Fields<Value>) -> Result<String, RenderError> {
    let mut pairs = Vec::new();
    for (key, field) in fields {
        let key = form_key(key).into_owned();
        match field {
            Field::Text(s) => pairs.push((key, s.clone())),
            Field::Json(v) => flatten_form(key, v, &mut pairs),
        }
    }
    Ok(serde_urlencoded::to_string(&pairs)?)
}

fn flatten_form(prefix: String, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Null => out.push((prefix, String::new())),
        Value::Bool(b) => out.push((prefix, b.to_string())),
        Value::Number(n) => out.push((prefix, n.to_string())),
        Value::String(s) => out.push((prefix, s.clone())),
        Value::Array(items) if items.is_empty() => out.push((prefix, String::new())),
        Value::Object(map) if map.is_empty() => out.push((prefix, String::new())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_form(format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                flatten_form(format!("{prefix}[{}]", form_key(k)), item, out);
            }
        }
    }
}

/// A key segment with the bracket characters (which mean nesting to the
/// receiver) replaced by `_`.
fn form_key(key: &str) -> Cow<'_, str> {
    if key.contains(['[', ']']) {
        Cow::Owned(key.replace(['[', ']'], "_"))
    } else {
        Cow::Borrowed(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use quick_xml::Reader;
    use serde_json::json;

    fn at(secs: i64, millis: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, millis * 1_000_000)
            .single()
            .expect("valid time")
    }

    fn sample_data() -> Value {
        json!({
            "id": 123456,
            "status": "CONFIRMED",
            "customer": {"name": "John Doe", "email": "john@example.com"},
            "items": [{"id": 987, "name": "City Tour", "quantity": 2}],
            "paid": false,
            "note": null
        })
    }

    fn raw(v: &Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(v).expect("JSON")
    }

    fn view<'a>(event_type: &'a str, data: &'a RawValue, scheduled: bool) -> EventView<'a> {
        EventView {
            id: "evt_1",
            event_type,
            created: at(1_714_554_000, 5),
            scheduled_at: scheduled.then(|| at(1_714_553_940, 0)),
            data,
        }
    }

    fn keys_in_order(body: &[u8]) -> Vec<String> {
        // Reads top-level keys in document order without relying on a map.
        let text = std::str::from_utf8(body).expect("utf8");
        let mut de = serde_json::Deserializer::from_str(text);
        struct Keys(Vec<String>);
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut m: A,
                    ) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                            keys.push(k);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(V)
            }
        }
        let keys: Keys = serde::Deserialize::deserialize(&mut de).expect("object");
        keys.0
    }

    #[test]
    fn json_standard_envelope() {
        let data = sample_data();
        let r = render(
            Format::Json,
            Envelope::Standard,
            &view("order.overdue_1_day", &raw(&data), true),
        )
        .expect("render");
        assert_eq!(r.content_type, "application/json");
        assert_eq!(
            keys_in_order(&r.body),
            ["id", "type", "created", "scheduled_at", "data"]
        );
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(
            v,
            json!({
                "id": "evt_1",
                "type": "order.overdue_1_day",
                "created": "2024-05-01T09:00:00.005Z",
                "scheduled_at": "2024-05-01T08:59:00.000Z",
                "data": data,
            })
        );
        let immediate = render(
            Format::Json,
            Envelope::Standard,
            &view("order.checkout", &raw(&data), false),
        )
        .expect("render");
        assert_eq!(
            keys_in_order(&immediate.body),
            ["id", "type", "created", "data"]
        );
    }

    #[test]
    fn json_type_payload_envelope() {
        let data = json!({"id": 9001, "status": "to schedule"});
        let r = render(
            Format::Json,
            Envelope::TypePayload,
            &view("order.update", &raw(&data), false),
        )
        .expect("render");
        assert_eq!(keys_in_order(&r.body), ["id", "type", "payload"]);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["type"], "order.update");
        assert_eq!(v["payload"], data);
        let r = render(
            Format::Json,
            Envelope::TypePayload,
            &view("order.update", &raw(&data), true),
        )
        .expect("render");
        assert_eq!(
            keys_in_order(&r.body),
            ["id", "type", "scheduled_at", "payload"]
        );
    }

    #[test]
    fn json_event_entity_envelope() {
        let data = sample_data();
        let r = render(
            Format::Json,
            Envelope::EventEntity,
            &view("booking.create", &raw(&data), true),
        )
        .expect("render");
        assert_eq!(
            keys_in_order(&r.body),
            ["event", "booking", "id", "created", "scheduled_at"]
        );
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["event"], "booking.create");
        assert_eq!(v["booking"], data);

        assert_eq!(entity_key("unitRental.markOverdue"), "unitRental");
        assert_eq!(entity_key("unitRental.invoice.created"), "unitRental");
        assert_eq!(entity_key("order.checkout"), "order");
        assert_eq!(entity_key("ping"), "ping");
        for odd in [
            "",
            ".x",
            "id.created",
            "event.x",
            "created",
            "scheduled_at.y",
        ] {
            assert_eq!(entity_key(odd), "data", "{odd:?}");
            let r = render(
                Format::Json,
                Envelope::EventEntity,
                &view(odd, &raw(&data), true),
            )
            .expect("render");
            let keys = keys_in_order(&r.body);
            let mut dedup = keys.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), keys.len(), "duplicate key for {odd:?}");
        }
    }

    #[test]
    fn json_is_deterministic() {
        let data = sample_data();
        let data = raw(&data);
        let ev = view("order.checkout", &data, true);
        let a = render(Format::Json, Envelope::Standard, &ev).expect("render");
        let b = render(Format::Json, Envelope::Standard, &ev).expect("render");
        assert_eq!(a, b);
    }

    /// A minimal XML reader for tests: element path → text, collecting all
    /// text (including entity references) inside each leaf.
    fn xml_leaves(body: &[u8]) -> Vec<(String, String)> {
        let text = std::str::from_utf8(body).expect("utf8");
        let mut reader = Reader::from_str(text);
        let mut path: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut out = Vec::new();
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) => {
                    path.push(String::from_utf8(e.name().as_ref().to_vec()).expect("utf8"));
                    current.clear();
                }
                Event::Empty(e) => {
                    let name = String::from_utf8(e.name().as_ref().to_vec()).expect("utf8");
                    out.push((format!("{}/{name}", path.join("/")), String::new()));
                }
                Event::Text(t) => current.push_str(&t.xml10_content().expect("text")),
                Event::GeneralRef(r) => {
                    if let Some(c) = r.resolve_char_ref().expect("char ref") {
                        current.push(c);
                    } else {
                        let name = r.decode().expect("name");
                        current.push(match name.as_ref() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => panic!("unexpected entity {other}"),
                        });
                    }
                }
                Event::End(_) => {
                    out.push((path.join("/"), std::mem::take(&mut current)));
                    path.pop();
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert!(path.is_empty());
        out
    }

    fn leaf<'a>(leaves: &'a [(String, String)], path: &str) -> Option<&'a str> {
        leaves
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn xml_structure_and_values() {
        let data = sample_data();
        let r = render(
            Format::Xml,
            Envelope::EventEntity,
            &view("booking.create", &raw(&data), false),
        )
        .expect("render");
        assert_eq!(r.content_type, "application/xml");
        let body = std::str::from_utf8(&r.body).expect("utf8");
        assert!(body.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><webhook><event>booking.create</event><booking>"#), "{body}");
        let leaves = xml_leaves(&r.body);
        assert_eq!(leaf(&leaves, "webhook/event"), Some("booking.create"));
        assert_eq!(leaf(&leaves, "webhook/booking/id"), Some("123456"));
        assert_eq!(
            leaf(&leaves, "webhook/booking/customer/name"),
            Some("John Doe")
        );
        assert_eq!(
            leaf(&leaves, "webhook/booking/items/item/quantity"),
            Some("2")
        );
        assert_eq!(leaf(&leaves, "webhook/booking/paid"), Some("false"));
        assert_eq!(leaf(&leaves, "webhook/booking/note"), Some(""));
        assert_eq!(
            leaf(&leaves, "webhook/created"),
            Some("2024-05-01T09:00:00.005Z")
        );
        assert!(body.contains("<note/>"));
    }

    #[test]
    fn xml_arrays_repeat_item() {
        let data = json!({"tags": ["a", "b", ["c"]], "empty": [], "obj": {}});
        let r = render(
            Format::Xml,
            Envelope::Standard,
            &view("item.update", &raw(&data), false),
        )
        .expect("render");
        let body = std::str::from_utf8(&r.body).expect("utf8");
        assert!(body.contains(
            "<data><empty/><obj/><tags><item>a</item><item>b</item><item><item>c</item></item></tags></data>"
        ), "{body}");
    }

    #[test]
    fn xml_escapes_and_sanitises() {
        let data = json!({
            "text": "a < b && c > \"d\" 'e' ünï©ødé 🎉",
            "cr": "line1\r\nline2",
            "ctl": "nul\u{0}bell\u{7}",
            "1st": 1,
            "with space": 2,
            "ns:key": 3,
            "": 4,
            "xmlish": 5,
            "-dash": 6,
            "ключ": 7,
            "a<b": 8,
        });
        let r = render(
            Format::Xml,
            Envelope::Standard,
            &view("item.update", &raw(&data), false),
        )
        .expect("render");
        let leaves = xml_leaves(&r.body);
        assert_eq!(
            leaf(&leaves, "webhook/data/text"),
            Some("a < b && c > \"d\" 'e' ünï©ødé 🎉")
        );
        assert_eq!(leaf(&leaves, "webhook/data/cr"), Some("line1\r\nline2"));
        assert_eq!(
            leaf(&leaves, "webhook/data/ctl"),
            Some("nul\u{FFFD}bell\u{FFFD}")
        );
        assert_eq!(leaf(&leaves, "webhook/data/_1st"), Some("1"));
        assert_eq!(leaf(&leaves, "webhook/data/with_space"), Some("2"));
        assert_eq!(leaf(&leaves, "webhook/data/ns_key"), Some("3"));
        assert_eq!(leaf(&leaves, "webhook/data/_"), Some("4"));
        assert_eq!(leaf(&leaves, "webhook/data/_xmlish"), Some("5"));
        assert_eq!(leaf(&leaves, "webhook/data/_-dash"), Some("6"));
        assert_eq!(leaf(&leaves, "webhook/data/ключ"), Some("7"));
        assert_eq!(leaf(&leaves, "webhook/data/a_b"), Some("8"));
    }

    #[test]
    fn xml_name_rules() {
        assert_eq!(xml_name("booking"), "booking");
        assert_eq!(xml_name("unitRental"), "unitRental");
        assert_eq!(xml_name("a.b-c_d"), "a.b-c_d");
        assert_eq!(xml_name("9"), "_9");
        assert_eq!(xml_name(".x"), "_.x");
        assert_eq!(xml_name("XmL"), "_XmL");
        assert_eq!(xml_name("a/b"), "a_b");
        assert_eq!(xml_name("@id"), "_id");
        assert_eq!(xml_name(""), "_");
    }

    #[test]
    fn form_flattens_nested_keys() {
        let data = sample_data();
        let r = render(
            Format::Form,
            Envelope::Standard,
            &view("order.checkout", &raw(&data), true),
        )
        .expect("render");
        assert_eq!(r.content_type, "application/x-www-form-urlencoded");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&r.body).expect("form");
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(pairs[0], ("id".to_owned(), "evt_1".to_owned()));
        assert_eq!(get("type"), Some("order.checkout"));
        assert_eq!(get("created"), Some("2024-05-01T09:00:00.005Z"));
        assert_eq!(get("scheduled_at"), Some("2024-05-01T08:59:00.000Z"));
        assert_eq!(get("data[id]"), Some("123456"));
        assert_eq!(get("data[customer][name]"), Some("John Doe"));
        assert_eq!(get("data[customer][email]"), Some("john@example.com"));
        assert_eq!(get("data[items][0][id]"), Some("987"));
        assert_eq!(get("data[items][0][quantity]"), Some("2"));
        assert_eq!(get("data[paid]"), Some("false"));
        assert_eq!(get("data[note]"), Some(""));
    }

    #[test]
    fn form_special_characters() {
        let data = json!({"q": "a&b=c d+é/?#", "k[x]": 1, "e": [], "o": {}, "t": true});
        let r = render(
            Format::Form,
            Envelope::EventEntity,
            &view("booking.update", &raw(&data), false),
        )
        .expect("render");
        let body = std::str::from_utf8(&r.body).expect("ascii");
        assert!(body.is_ascii());
        assert!(!body.contains(' '));
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&r.body).expect("form");
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("event"), Some("booking.update"));
        assert_eq!(get("booking[q]"), Some("a&b=c d+é/?#"));
        assert_eq!(get("booking[k_x_]"), Some("1"));
        assert_eq!(get("booking[e]"), Some(""));
        assert_eq!(get("booking[o]"), Some(""));
        assert_eq!(get("booking[t]"), Some("true"));
    }

    #[test]
    fn scalar_data_and_formats_parse() {
        let data = json!("just a string");
        for format in [Format::Json, Format::Xml, Format::Form] {
            let r = render(format, Envelope::Standard, &view("x.y", &raw(&data), false))
                .expect("render");
            assert!(!r.body.is_empty());
        }
        let r = render(
            Format::Form,
            Envelope::Standard,
            &view("x.y", &raw(&data), false),
        )
        .expect("render");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&r.body).expect("form");
        assert!(pairs.contains(&("data".to_owned(), "just a string".to_owned())));
        assert_eq!("XML".parse::<Format>().expect("format"), Format::Xml);
        assert!("yaml".parse::<Format>().is_err());
        assert_eq!(
            "event_entity".parse::<Envelope>().expect("envelope"),
            Envelope::EventEntity
        );
        assert_eq!(
            serde_json::to_string(&Envelope::TypePayload).expect("ser"),
            "\"type_payload\""
        );
        assert_eq!(
            serde_json::to_string(&Format::Form).expect("ser"),
            "\"form\""
        );
    }

    #[test]
    fn too_deep_is_an_error_not_a_crash() {
        let mut v = json!(1);
        for _ in 0..=MAX_DATA_DEPTH {
            v = json!([v]);
        }
        for format in [Format::Json, Format::Xml, Format::Form] {
            assert!(matches!(
                render(format, Envelope::Standard, &view("a.b", &raw(&v), false)),
                Err(RenderError::TooDeep)
            ));
        }
        let mut ok = json!(1);
        for _ in 0..MAX_DATA_DEPTH {
            ok = json!({ "k": ok });
        }
        for format in [Format::Json, Format::Xml, Format::Form] {
            assert!(render(format, Envelope::Standard, &view("a.b", &raw(&ok), false)).is_ok());
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(32, 256, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn render_never_panics_and_outputs_parse(
            data in arb_json(),
            event_type in any::<String>(),
            id in any::<String>(),
        ) {
            let data = raw(&data);
            let ev = EventView { id: &id, event_type: &event_type, created: at(0, 0), scheduled_at: Some(at(1, 1)), data: &data };
            for envelope in [Envelope::Standard, Envelope::TypePayload, Envelope::EventEntity] {
                let json = render(Format::Json, envelope, &ev).expect("json");
                let parsed: Value = serde_json::from_slice(&json.body).expect("valid JSON");
                prop_assert!(parsed.is_object());

                let xml = render(Format::Xml, envelope, &ev).expect("xml");
                let _ = xml_leaves(&xml.body);

                let form = render(Format::Form, envelope, &ev).expect("form");
                let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&form.body).expect("valid form");
                prop_assert!(!pairs.is_empty());
            }
        }
    }
}
