//! Retry policy: what an attempt's result means and when the next attempt is.
//!
//! This module owns the retry schedule of an endpoint ([`RetryPolicy`]), the
//! classification of an attempt's HTTP result ([`classify`] → [`Outcome`]),
//! the parsing of `Retry-After` ([`parse_retry_after`]) and the choice of the
//! next delay ([`next_delay`]). It is pure: randomness (jitter) comes from the
//! caller's RNG and the current time is an argument, so tests are exact.
//!
//! # How attempts are counted
//!
//! `schedule[0]` is the delay before the *first* attempt, counted from when
//! the delivery is created (0 = immediately), and `schedule[n]` is the delay
//! between the failure of attempt `n` and attempt `n + 1`. So the number of
//! attempts is `schedule.len()`, and "5 retries" is a schedule of 6 entries.
//! The default, modelled on Svix's, is 10 attempts:
//!
//! | attempt | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 |
//! |---|---|---|---|---|---|---|---|---|---|---|
//! | delay before it | 0 | 5 s | 5 min | 30 min | 2 h | 5 h | 10 h | 14 h | 20 h | 24 h |
//!
//! i.e. about 3 days of trying (75 h 35 min 5 s before jitter) before the
//! delivery fails. The textual form ([`RetryPolicy::parse_schedule`]) lists
//! only the retry delays, as people write them ("retry after 5s, then 5m"),
//! and the immediate first attempt is added in front.
//!
//! # Jitter
//!
//! Every scheduled delay is multiplied by a uniform factor in
//! `[1 - jitter, 1 + jitter]` (default ±20 %), so endpoints that failed
//! together (an outage) are not retried in one burst. A zero delay stays zero.
//!
//! # Throttling and Retry-After
//!
//! 429, 502, 503 and 504 are throttles: the receiver is overloaded or down
//! for a while. Their `Retry-After` is honoured, clamped to
//! [`MIN_RETRY_AFTER`]..=[`MAX_RETRY_AFTER`] (1 s to 1 h: a receiver cannot
//! make us hammer it, nor park a delivery for days), but it only ever
//! *lengthens* the wait: the next attempt is at the later of the jittered
//! schedule delay and Retry-After. Otherwise a receiver answering
//! `Retry-After: 1` would burn through every attempt in seconds. Throttled
//! attempts count towards the maximum like any other failure, so an endpoint
//! that is throttled forever still fails in bounded time. `Retry-After` on
//! other statuses is ignored.
//!
//! 410 Gone means the receiver wants no more webhooks: no retry, and the
//! caller disables the endpoint.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// Shortest wait a `Retry-After` can ask for.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest wait a `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);
/// Default jitter: ±20 %.
pub const DEFAULT_JITTER: f64 = 0.2;
/// Most attempts a schedule may have.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest single delay a schedule may have.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}
const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 60 * 60)
}

/// The default schedule: see the module docs.
pub const DEFAULT_SCHEDULE: [Duration; 10] = [
    Duration::ZERO,
    Duration::from_secs(5),
    mins(5),
    mins(30),
    hours(2),
    hours(5),
    hours(10),
    hours(14),
    hours(20),
    hours(24),
];

/// Why a schedule string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    #[error("empty retry schedule (write \"none\" for no retries)")]
    Empty,
    #[error("invalid delay {entry:?} in retry schedule: {reason}")]
    InvalidDelay { entry: String, reason: &'static str },
    #[error("delay {entry:?} is longer than the maximum of 7 days")]
    DelayTooLong { entry: String },
    #[error("retry schedule has more than {MAX_ATTEMPTS} attempts")]
    TooManyAttempts,
}

/// When to try a delivery again, and when to give up.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// `schedule[0]`: delay before the first attempt; `schedule[n]`: delay
    /// after attempt `n` failed, before attempt `n + 1`. An empty schedule is
    /// taken as one immediate attempt and no retries.
    pub schedule: Vec<Duration>,
    /// Relative jitter applied to each delay, clamped to `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            schedule: DEFAULT_SCHEDULE.to_vec(),
            jitter: DEFAULT_JITTER,
        }
    }
}

impl FromStr for RetryPolicy {
    type Err = RetryError;

    /// A policy from a textual schedule (see [`RetryPolicy::parse_schedule`])
    /// with the default jitter.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            schedule: Self::parse_schedule(s)?,
            jitter: DEFAULT_JITTER,
        })
    }
}

impl fmt::Display for RetryPolicy {
    /// The schedule in the form [`RetryPolicy::parse_schedule`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_schedule(&self.schedule))
    }
}

impl RetryPolicy {
    /// How many attempts a delivery gets in total, the first included.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len().max(1)).unwrap_or(u32::MAX)
    }

    /// This policy cut or extended to `n` attempts in total (at least 1, at
    /// most [`MAX_ATTEMPTS`]). Extending repeats the last delay, as Svix does.
    /// "Retries up to 5 times" (Checkfront) is `with_max_attempts(6)`;
    /// "retried 2 more times" (Storeganise) is `with_max_attempts(3)`.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        let n = usize::try_from(n.clamp(1, MAX_ATTEMPTS)).unwrap_or(1);
        if self.schedule.is_empty() {
            self.schedule.push(Duration::ZERO);
        }
        let last = self.schedule.last().copied().unwrap_or(Duration::ZERO);
        self.schedule.resize(n, last);
        self
    }

    /// Parses a comma-separated list of *retry* delays, e.g. `"5s,5m,30m,2h"`,
    /// and returns the full schedule with the immediate first attempt in
    /// front (`[0, 5s, 5m, 30m, 2h]`: 5 attempts). Each delay is a
    /// non-negative integer with a unit `ms`, `s`, `m`, `h` or `d` (a bare
    /// number is seconds); spaces around entries are ignored. `"none"` means
    /// no retries (one attempt). A `0` entry is an immediate retry.
    pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, RetryError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RetryError::Empty);
        }
        let mut schedule = vec![Duration::ZERO];
        if s.eq_ignore_ascii_case("none") {
            return Ok(schedule);
        }
        for entry in s.split(',') {
            if schedule.len() >= MAX_ATTEMPTS as usize {
                return Err(RetryError::TooManyAttempts);
            }
            schedule.push(parse_delay(entry.trim())?);
        }
        Ok(schedule)
    }

    /// The jittered delay before attempt `attempts_made + 1`, or `None` when
    /// `attempts_made` attempts are all the policy allows (give up).
    /// `attempts_made = 0` gives the delay before the first attempt.
    pub fn delay_after(&self, attempts_made: u32, rng: &mut impl rand::Rng) -> Option<Duration> {
        let base = self.base_delay(attempts_made)?;
        Some(self.jittered(base, rng))
    }

    /// The schedule's delay before attempt `attempts_made + 1`, unjittered.
    fn base_delay(&self, attempts_made: u32) -> Option<Duration> {
        if self.schedule.is_empty() {
            return (attempts_made == 0).then_some(Duration::ZERO);
        }
        self.schedule
            .get(usize::try_from(attempts_made).ok()?)
            .copied()
    }

    fn jittered(&self, base: Duration, rng: &mut impl rand::Rng) -> Duration {
        // NaN or out-of-range jitter from a hand-built policy is made harmless.
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if jitter == 0.0 || base.is_zero() {
            return base;
        }
        let factor = 1.0 + rng.random_range(-jitter..=jitter);
        // try_from_secs_f64 refuses overflow instead of panicking like mul_f64.
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }
}

/// Writes a schedule in the form [`RetryPolicy::parse_schedule`] reads: the
/// retry delays (the first attempt's delay is implied), largest exact unit.
pub fn format_schedule(schedule: &[Duration]) -> String {
    let retries = schedule.get(1..).unwrap_or_default();
    if retries.is_empty() {
        return "none".to_owned();
    }
    retries
        .iter()
        .map(|d| format_delay(*d))
        .collect::<Vec<_>>()
        .join(",")
}

fn format_delay(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s != 0 && s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

fn parse_delay(entry: &str) -> Result<Duration, RetryError> {
    let invalid = |reason| RetryError::InvalidDelay {
        entry: entry.to_owned(),
        reason,
    };
    if entry.is_empty() {
        return Err(invalid("empty entry"));
    }
    let split = entry
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(entry.len());
    let (digits, unit) = entry.split_at(split);
    if digits.is_empty() {
        return Err(invalid("expected a number followed by ms, s, m, h or d"));
    }
    let n: u64 = digits.parse().map_err(|_| invalid("number too large"))?;
    let unit_ms: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid("unknown unit (use ms, s, m, h or d)")),
    };
    let too_long = || RetryError::DelayTooLong {
        entry: entry.to_owned(),
    };
    let delay = Duration::from_millis(n.checked_mul(unit_ms).ok_or_else(too_long)?);
    if delay > MAX_DELAY {
        return Err(too_long());
    }
    Ok(delay)
}

/// Why a failed attempt is retried on the normal schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// No HTTP response: connect error, TLS error, timeout, refused address.
    Network,
    /// A non-2xx status that is neither a throttle nor 410.
    Status(u16),
}

/// What an attempt's result means for the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: delivered.
    Success,
    /// Failed; try again on the schedule.
    Retry { reason: RetryReason },
    /// 429, 502, 503 or 504: try again, honouring `Retry-After` (passed to
    /// [`next_delay`] separately, since it is a header, not a status).
    Throttled { status: u16 },
    /// 410: the receiver is gone for good; stop and disable the endpoint.
    Gone,
}

/// Classifies an attempt by its HTTP status (`None`: no response at all).
/// Only 2xx is success; redirects are not followed by the sender and count
/// as failures, like every other status not named here.
pub fn classify(status: Option<u16>) -> Outcome {
    match status {
        None => Outcome::Retry {
            reason: RetryReason::Network,
        },
        Some(200..=299) => Outcome::Success,
        Some(410) => Outcome::Gone,
        Some(s @ (429 | 502 | 503 | 504)) => Outcome::Throttled { status: s },
        Some(s) => Outcome::Retry {
            reason: RetryReason::Status(s),
        },
    }
}

/// Parses a `Retry-After` value, either delta-seconds (`120`) or an
/// HTTP-date (IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, or the obsolete
/// RFC 850 and asctime forms), relative to `now`. The result is clamped to
/// [`MIN_RETRY_AFTER`]..=[`MAX_RETRY_AFTER`]; a date in the past gives the
/// minimum. `None` when the value is neither form.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) {
        // A huge number of seconds is still a valid "later": saturate.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = parse_http_date(value)?;
        // A date in the past means "now", which the clamp turns into the minimum.
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(clamp_retry_after(wait))
}

/// `d` limited to the Retry-After bounds.
pub fn clamp_retry_after(d: Duration) -> Duration {
    d.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
}

fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    // IMF-fixdate is a subset of RFC 2822, which chrono parses (GMT included).
    if let Ok(t) = DateTime::parse_from_rfc2822(value) {
        return Some(t.with_timezone(&Utc));
    }
    // RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
    // (`Sun Nov  6 08:49:37 1994`), which RFC 9110 says recipients must accept.
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(value, fmt).ok())
        .map(|t| t.and_utc())
}

/// The delay before the next attempt after `attempts_made` attempts, the last
/// of which had `outcome`, or `None` when there is none: success, 410, or the
/// policy's attempts are used up. For a throttle the wait is the later of
/// the schedule's jittered delay and `retry_after` (clamped to the bounds);
/// `retry_after` is ignored for other outcomes.
pub fn next_delay(
    policy: &RetryPolicy,
    attempts_made: u32,
    outcome: Outcome,
    retry_after: Option<Duration>,
    rng: &mut impl rand::Rng,
) -> Option<Duration> {
    match outcome {
        Outcome::Success | Outcome::Gone => None,
        Outcome::Retry { .. } => policy.delay_after(attempts_made, rng),
        Outcome::Throttled { .. } => {
            let scheduled = policy.delay_after(attempts_made, rng)?;
            Some(match retry_after {
                Some(ra) => scheduled.max(clamp_retry_after(ra)),
                None => scheduled,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn no_jitter(schedule: Vec<Duration>) -> RetryPolicy {
        RetryPolicy {
            schedule,
            jitter: 0.0,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn default_schedule() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 10);
        assert_eq!(p.jitter, 0.2);
        let p = RetryPolicy { jitter: 0.0, ..p };
        let mut r = rng();
        let delays: Vec<_> = (0..=10).map(|n| p.delay_after(n, &mut r)).collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::ZERO),
                Some(secs(5)),
                Some(mins(5)),
                Some(mins(30)),
                Some(hours(2)),
                Some(hours(5)),
                Some(hours(10)),
                Some(hours(14)),
                Some(hours(20)),
                Some(hours(24)),
                None,
            ]
        );
        assert_eq!(p.delay_after(u32::MAX, &mut r), None);
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert_eq!(total, hours(75) + mins(35) + secs(5));
        assert_eq!(p.to_string(), "5s,5m,30m,2h,5h,10h,14h,20h,1d");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = RetryPolicy::default();
        let mut r = rng();
        let mut saw_low = false;
        let mut saw_high = false;
        for attempts in 1..10 {
            let base = DEFAULT_SCHEDULE[attempts as usize].as_secs_f64();
            for _ in 0..500 {
                let d = p
                    .delay_after(attempts, &mut r)
                    .expect("delay")
                    .as_secs_f64();
                assert!(
                    d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                    "{d} vs {base}"
                );
                saw_low |= d < base * 0.9;
                saw_high |= d > base * 1.1;
            }
        }
        assert!(saw_low && saw_high, "jitter should spread both ways");
        // Immediate stays immediate.
        assert_eq!(p.delay_after(0, &mut r), Some(Duration::ZERO));
    }

    #[test]
    fn odd_jitter_values_are_harmless() {
        let mut r = rng();
        for jitter in [f64::NAN, f64::INFINITY, -1.0, 5.0] {
            let p = RetryPolicy {
                schedule: vec![Duration::ZERO, Duration::MAX],
                jitter,
            };
            let d = p.delay_after(1, &mut r).expect("delay");
            assert!(d <= Duration::MAX);
        }
    }

    #[test]
    fn custom_attempt_counts() {
        // Checkfront: "retries up to 5 times before disabling" = 6 attempts.
        let p = RetryPolicy::default().with_max_attempts(6);
        assert_eq!(p.max_attempts(), 6);
        assert_eq!(p.schedule, DEFAULT_SCHEDULE[..6].to_vec());
        // Storeganise: "retried 2 more times" = 3 attempts.
        let p = RetryPolicy::default().with_max_attempts(3);
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(p.schedule, vec![Duration::ZERO, secs(5), mins(5)]);
        // Longer than the default: the last delay repeats.
        let p = RetryPolicy::default().with_max_attempts(12);
        assert_eq!(p.schedule[10..], [hours(24), hours(24)]);
        // Bounds.
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).max_attempts(),
            1
        );
        assert_eq!(
            RetryPolicy::default()
                .with_max_attempts(u32::MAX)
                .max_attempts(),
            MAX_ATTEMPTS
        );
        let empty = no_jitter(vec![]);
        assert_eq!(empty.max_attempts(), 1);
        assert_eq!(empty.delay_after(0, &mut rng()), Some(Duration::ZERO));
        assert_eq!(empty.delay_after(1, &mut rng()), None);
        assert_eq!(empty.with_max_attempts(2).schedule, vec![Duration::ZERO; 2]);
    }

    #[test]
    fn parse_schedules() {
        assert_eq!(
            RetryPolicy::parse_schedule("5s,5m,30m,2h"),
            Ok(vec![Duration::ZERO, secs(5), mins(5), mins(30), hours(2)])
        );
        assert_eq!(
            RetryPolicy::parse_schedule(" 500ms , 10 , 1d, 0 "),
            Ok(vec![
                Duration::ZERO,
                Duration::from_millis(500),
                secs(10),
                hours(24),
                Duration::ZERO
            ])
        );
        assert_eq!(
            RetryPolicy::parse_schedule("NONE"),
            Ok(vec![Duration::ZERO])
        );
        assert_eq!(
            RetryPolicy::parse_schedule("2H"),
            Ok(vec![Duration::ZERO, hours(2)])
        );
        // Five retries = six attempts.
        let p: RetryPolicy = "1m,1m,1m,1m,1m".parse().expect("policy");
        assert_eq!(p.max_attempts(), 6);
        assert_eq!(p.jitter, DEFAULT_JITTER);
        assert_eq!(p.to_string(), "1m,1m,1m,1m,1m");
        assert_eq!(no_jitter(vec![Duration::ZERO]).to_string(), "none");
        assert_eq!(
            no_jitter(vec![Duration::ZERO, Duration::from_millis(1500), secs(90)]).to_string(),
            "1500ms,90s"
        );
        for s in ["5s,5m,30m,2h", "none", "1500ms,0s,3d"] {
            let sched = RetryPolicy::parse_schedule(s).expect("parse");
            assert_eq!(
                RetryPolicy::parse_schedule(&format_schedule(&sched)),
                Ok(sched)
            );
        }
    }

    #[test]
    fn parse_schedule_errors() {
        assert_eq!(RetryPolicy::parse_schedule(""), Err(RetryError::Empty));
        assert_eq!(RetryPolicy::parse_schedule("  "), Err(RetryError::Empty));
        for bad in [
            "5s,",
            ",5s",
            "5x",
            "-5s",
            "1.5s",
            "s",
            "5 s s",
            "99999999999999999999s",
        ] {
            assert!(
                matches!(
                    RetryPolicy::parse_schedule(bad),
                    Err(RetryError::InvalidDelay { .. })
                ),
                "{bad:?}: {:?}",
                RetryPolicy::parse_schedule(bad)
            );
        }
        assert!(matches!(
            RetryPolicy::parse_schedule("8d"),
            Err(RetryError::DelayTooLong { .. })
        ));
        assert!(matches!(
            RetryPolicy::parse_schedule("18446744073709551615d"),
            Err(RetryError::DelayTooLong { .. })
        ));
        assert_eq!(
            RetryPolicy::parse_schedule(&vec!["1s"; 100].join(",")),
            Err(RetryError::TooManyAttempts)
        );
        assert!(RetryPolicy::parse_schedule(&vec!["1s"; 99].join(",")).is_ok());
    }

    #[test]
    fn classification_table() {
        let table: &[(Option<u16>, Outcome)] = &[
            (Some(200), Outcome::Success),
            (Some(201), Outcome::Success),
            (Some(204), Outcome::Success),
            (Some(299), Outcome::Success),
            (
                None,
                Outcome::Retry {
                    reason: RetryReason::Network,
                },
            ),
            (
                Some(100),
                Outcome::Retry {
                    reason: RetryReason::Status(100),
                },
            ),
            (
                Some(301),
                Outcome::Retry {
                    reason: RetryReason::Status(301),
                },
            ),
            (
                Some(400),
                Outcome::Retry {
                    reason: RetryReason::Status(400),
                },
            ),
            (
                Some(401),
                Outcome::Retry {
                    reason: RetryReason::Status(401),
                },
            ),
            (
                Some(404),
                Outcome::Retry {
                    reason: RetryReason::Status(404),
                },
            ),
            (
                Some(408),
                Outcome::Retry {
                    reason: RetryReason::Status(408),
                },
            ),
            (Some(410), Outcome::Gone),
            (Some(429), Outcome::Throttled { status: 429 }),
            (
                Some(500),
                Outcome::Retry {
                    reason: RetryReason::Status(500),
                },
            ),
            (
                Some(501),
                Outcome::Retry {
                    reason: RetryReason::Status(501),
                },
            ),
            (Some(502), Outcome::Throttled { status: 502 }),
            (Some(503), Outcome::Throttled { status: 503 }),
            (Some(504), Outcome::Throttled { status: 504 }),
            (
                Some(999),
                Outcome::Retry {
                    reason: RetryReason::Status(999),
                },
            ),
        ];
        for (status, expected) in table {
            assert_eq!(classify(*status), *expected, "{status:?}");
        }
        assert_eq!(classify(Some(200)), Outcome::Success);
        assert_eq!(classify(Some(410)), Outcome::Gone);
        assert_ne!(classify(Some(503)), Outcome::Gone);
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = now();
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 30 ", now), Some(secs(30)));
        assert_eq!(parse_retry_after("0", now), Some(MIN_RETRY_AFTER));
        assert_eq!(parse_retry_after("3600", now), Some(secs(3600)));
        assert_eq!(parse_retry_after("3601", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["", "-5", "1.5", "soon", "12s", "+3"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_http_dates() {
        let now = now(); // 1994-11-06 08:49:00 UTC
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(secs(37))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            Some(secs(37))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:37 1994", now),
            Some(secs(37))
        );
        // In the past: the minimum.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(MIN_RETRY_AFTER)
        );
        // Far future: the maximum.
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Sun, 32 Nov 1994 08:49:37 GMT", now),
            None
        );
    }

    #[test]
    fn next_delay_rules() {
        let p = no_jitter(vec![Duration::ZERO, secs(5), mins(5), mins(30)]);
        let mut r = rng();
        let retry = classify(Some(500));
        let throttled = classify(Some(429));
        // Success and Gone never schedule anything.
        assert_eq!(next_delay(&p, 1, classify(Some(200)), None, &mut r), None);
        assert_eq!(
            next_delay(&p, 1, classify(Some(410)), Some(secs(9)), &mut r),
            None
        );
        // Plain failures follow the schedule and ignore Retry-After.
        assert_eq!(next_delay(&p, 1, retry, None, &mut r), Some(secs(5)));
        assert_eq!(
            next_delay(&p, 1, retry, Some(mins(10)), &mut r),
            Some(secs(5))
        );
        assert_eq!(next_delay(&p, 3, retry, None, &mut r), Some(mins(30)));
        assert_eq!(next_delay(&p, 4, retry, None, &mut r), None);
        // Throttles: Retry-After lengthens, never shortens.
        assert_eq!(next_delay(&p, 1, throttled, None, &mut r), Some(secs(5)));
        assert_eq!(
            next_delay(&p, 1, throttled, Some(secs(60)), &mut r),
            Some(secs(60))
        );
        assert_eq!(
            next_delay(&p, 2, throttled, Some(secs(1)), &mut r),
            Some(mins(5))
        );
        // ... within bounds ...
        assert_eq!(
            next_delay(&p, 1, throttled, Some(hours(5)), &mut r),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            next_delay(
                &no_jitter(vec![Duration::ZERO; 2]),
                1,
                throttled,
                Some(Duration::ZERO),
                &mut r
            ),
            Some(MIN_RETRY_AFTER)
        );
        // ... and do not grant extra attempts.
        assert_eq!(next_delay(&p, 4, throttled, Some(secs(60)), &mut r), None);
        // With jitter the throttle wait is still at least Retry-After.
        let jittery = RetryPolicy::default();
        for _ in 0..200 {
            let d = next_delay(&jittery, 1, throttled, Some(secs(5)), &mut r).expect("delay");
            assert!(d >= secs(5));
        }
    }
}
