//! How an entity's instants are written in its JSON: RFC 3339 in UTC with `Z` and as
//! many fraction digits as the instant needs (none, 3, 6 or 9), the text chrono's own
//! `Serialize` writes, byte for byte (a property test holds the two together).
//!
//! Why not chrono's: it writes through `fmt` and serde_json's `collect_str`, which
//! escapes every fragment, and an entity's JSON is written twice at every change (its
//! row and its event's data) by the one writer every change waits for: timed in a
//! bulk import, those instants were most of the cost of writing an entity. Here the
//! digits go into a buffer on the stack and serde gets one string. Years outside
//! 0–9999 and leap seconds, which need chrono's rules, go to chrono.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// `#[serde(serialize_with = "…::serialize")]` for a `DateTime<Utc>` field.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match write(t, &mut buf) {
        // Only ASCII digits and separators were written.
        Some(n) => match std::str::from_utf8(&buf[..n]) {
            Ok(text) => s.serialize_str(text),
            Err(_) => t.serialize(s),
        },
        None => t.serialize(s),
    }
}

/// [`serialize`] for an `Option<DateTime<Utc>>` field (`null` when absent).
pub fn serialize_option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, the longest text [`write`] makes.
const MAX_LEN: usize = 30;

/// Writes `t` into `out`; the length written, or `None` for an instant chrono must
/// write (a year outside 0–9999, a leap second).
fn write(t: &DateTime<Utc>, out: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = t.year();
    let nano = t.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    digits(&mut out[0..4], year as u32);
    out[4] = b'-';
    digits(&mut out[5..7], t.month());
    out[7] = b'-';
    digits(&mut out[8..10], t.day());
    out[10] = b'T';
    digits(&mut out[11..13], t.hour());
    out[13] = b':';
    digits(&mut out[14..16], t.minute());
    out[16] = b':';
    digits(&mut out[17..19], t.second());
    let mut n = 19;
    let fraction = match nano {
        0 => None,
        _ if nano.is_multiple_of(1_000_000) => Some((nano / 1_000_000, 3)),
        _ if nano.is_multiple_of(1_000) => Some((nano / 1_000, 6)),
        _ => Some((nano, 9)),
    };
    if let Some((value, width)) = fraction {
        out[n] = b'.';
        digits(&mut out[n + 1..n + 1 + width], value);
        n += 1 + width;
    }
    out[n] = b'Z';
    Some(n + 1)
}

/// `value` in decimal, zero-padded to fill `out`.
fn digits(out: &mut [u8], mut value: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Fields {
        #[serde(serialize_with = "serialize")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "serialize_option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(Serialize)]
    struct ChronoFields {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
    }

    fn both(at: DateTime<Utc>, maybe: Option<DateTime<Utc>>) -> (String, String) {
        let ours = serde_json::to_string(&Fields { at, maybe }).expect("ours");
        let chrono = serde_json::to_string(&ChronoFields { at, maybe }).expect("chrono");
        (ours, chrono)
    }

    proptest! {
        /// Any instant, with any fraction (whole seconds, milliseconds, microseconds,
        /// nanoseconds), is written exactly as chrono writes it.
        #[test]
        fn writes_what_chrono_writes(
            secs in -70_000_000_000_i64..300_000_000_000,
            nanos in prop_oneof![
                Just(0_u32),
                (0_u32..1000).prop_map(|ms| ms * 1_000_000),
                (0_u32..1_000_000).prop_map(|us| us * 1_000),
                0_u32..1_000_000_000,
            ],
            absent in any::<bool>(),
        ) {
            let at = Utc.timestamp_opt(secs, nanos).single().expect("in range");
            let maybe = (!absent).then_some(at);
            let (ours, chrono) = both(at, maybe);
            prop_assert_eq!(ours, chrono);
        }
    }

    #[test]
    fn instants_chrono_must_write_are_left_to_it() {
        let far = Utc.with_ymd_and_hms(12_345, 6, 7, 8, 9, 10).unwrap();
        let before_zero = Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap();
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .map(|n| n.and_utc())
            .expect("leap second");
        for at in [far, before_zero, leap] {
            let (ours, chrono) = both(at, None);
            assert_eq!(ours, chrono);
        }
        assert!(
            both(far, None).0.contains("+12345-06-07"),
            "a far year keeps its sign"
        );
    }

    #[test]
    fn an_instant_reads_as_expected() {
        let at = Utc.with_ymd_and_hms(2030, 3, 1, 8, 0, 0).unwrap();
        let (ours, _) = both(at, None);
        assert_eq!(ours, r#"{"at":"2030-03-01T08:00:00Z","maybe":null}"#);
        let at = at + chrono::TimeDelta::milliseconds(7);
        let (ours, _) = both(at, Some(at));
        assert_eq!(
            ours,
            r#"{"at":"2030-03-01T08:00:00.007Z","maybe":"2030-03-01T08:00:00.007Z"}"#
        );
    }
}
