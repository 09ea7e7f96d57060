//! Per-endpoint rate limit (messages per second), kept in memory by the delivery
//! worker: a sliding one-second window of send times on the service clock. At most
//! `limit` requests to an endpoint start within any one second. Per node: several
//! nodes sharing one PostgreSQL each allow `limit`.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Default)]
pub struct RateLimiter {
    sent: HashMap<String, (u32, VecDeque<DateTime<Utc>>)>,
}

impl RateLimiter {
    fn prune(q: &mut VecDeque<DateTime<Utc>>, now: DateTime<Utc>) {
        while q.front().is_some_and(|t| *t + TimeDelta::seconds(1) <= now) {
            q.pop_front();
        }
    }

    /// Takes a slot for `endpoint` at `now` if its limit allows one.
    pub fn try_take(&mut self, endpoint: &str, limit: Option<u32>, now: DateTime<Utc>) -> bool {
        let Some(limit) = limit else {
            self.sent.remove(endpoint);
            return true;
        };
        let (l, q) = self
            .sent
            .entry(endpoint.to_string())
            .or_insert_with(|| (limit, VecDeque::new()));
        *l = limit;
        Self::prune(q, now);
        if q.len() >= limit as usize {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Endpoints with no slot left at `now`, and the earliest instant one frees up.
    pub fn blocked(&mut self, now: DateTime<Utc>) -> (Vec<String>, Option<DateTime<Utc>>) {
        let mut out = Vec::new();
        let mut next = None::<DateTime<Utc>>;
        self.sent.retain(|ep, (limit, q)| {
            Self::prune(q, now);
            if q.len() >= *limit as usize {
                out.push(ep.clone());
                if let Some(first) = q.front() {
                    let free = *first + TimeDelta::seconds(1);
                    next = Some(next.map_or(free, |n| n.min(free)));
                }
            }
            !q.is_empty()
        });
        (out, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_limit_per_second() {
        let t0 = DateTime::from_timestamp(1_900_000_000, 0).expect("valid");
        let mut r = RateLimiter::default();
        assert!(r.try_take("a", Some(2), t0));
        assert!(r.try_take("a", Some(2), t0 + TimeDelta::milliseconds(500)));
        assert!(!r.try_take("a", Some(2), t0 + TimeDelta::milliseconds(900)));
        assert!(r.try_take("b", None, t0));
        let (blocked, next) = r.blocked(t0 + TimeDelta::milliseconds(900));
        assert_eq!(blocked, vec!["a".to_string()]);
        assert_eq!(next, Some(t0 + TimeDelta::seconds(1)));
        assert!(r.try_take("a", Some(2), t0 + TimeDelta::seconds(1)));
    }
}
