//! A lane's queue: what the worker holds for one endpoint and has not started sending.
//! Unordered deliveries go in the order they came; ordered ones wait in their key, in
//! the key's order, and only the first of a key may start, one at a time: the next
//! starts only once the one before it was sent with success. A key whose send failed
//! gives up the rest of its queue (back to the store), to go out after the failed one,
//! and takes nothing more until the failed one's attempt is recorded: until then the
//! store does not know it failed, and a claim made meanwhile may bring what follows it.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::store::deliveries::Claimed;

#[derive(Default)]
pub(super) struct Queue {
    /// Unordered deliveries, first come first.
    free: VecDeque<Claimed>,
    /// Ordered deliveries by key, each key's in its order (`seq`).
    keys: HashMap<String, VecDeque<Claimed>>,
    /// Keys with a send in flight: nothing more of theirs starts until it ends.
    busy: HashSet<String>,
    /// Keys that hold deliveries and are not busy, in the order they became so.
    ready: VecDeque<String>,
    /// Keys whose send failed, by the failed delivery, until its attempt is recorded.
    blocked: HashMap<String, String>,
    len: usize,
}

impl Queue {
    /// How many deliveries wait.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether a delivery may start now.
    pub(super) fn has_ready(&self) -> bool {
        !self.free.is_empty() || !self.ready.is_empty()
    }

    /// Whether deliveries of `key` wait here.
    pub(super) fn holds(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Queues `c`; or refuses it (to go back to the store) when its key is blocked by
    /// a failed delivery other than `c` itself.
    pub(super) fn push(&mut self, c: Claimed) -> Result<(), Box<Claimed>> {
        let Some(key) = c.order_key.clone() else {
            self.len += 1;
            self.free.push_back(c);
            return Ok(());
        };
        match self.blocked.get(&key) {
            // The failed one itself, claimed again: the key is as the store says.
            Some(failed) if *failed == c.id => {
                self.blocked.remove(&key);
            }
            Some(_) => return Err(Box::new(c)),
            None => {}
        }
        self.len += 1;
        let q = self.keys.entry(key.clone()).or_default();
        let was_empty = q.is_empty();
        // Usually after the last: a key's deliveries arrive in order.
        let at = q.partition_point(|d| d.seq < c.seq);
        q.insert(at, c);
        if was_empty && !self.busy.contains(&key) {
            self.ready.push_back(key);
        }
        Ok(())
    }

    /// The next delivery that may start: an unordered one, or the first of a key with
    /// nothing in flight (which then has one in flight until [`Queue::ended`]).
    pub(super) fn next(&mut self) -> Option<Claimed> {
        if let Some(c) = self.free.pop_front() {
            self.len -= 1;
            return Some(c);
        }
        let key = self.ready.pop_front()?;
        let q = self.keys.get_mut(&key)?;
        let c = q.pop_front()?;
        if q.is_empty() {
            self.keys.remove(&key);
        }
        self.len -= 1;
        self.busy.insert(key);
        Some(c)
    }

    /// The send of `delivery`, of `key`, ended, with success when `ok`. Returns what
    /// the key gives up: the rest of its queue when the send failed (it waits in the
    /// store behind the failed delivery, which is retried first). A failed send blocks
    /// its key until [`Queue::recorded`] says so of `delivery`, unless `recorded`
    /// already (its attempt is in the store).
    pub(super) fn ended(
        &mut self,
        key: &str,
        delivery: &str,
        ok: bool,
        recorded: bool,
    ) -> Vec<Claimed> {
        self.busy.remove(key);
        if !ok {
            let rest: Vec<Claimed> = self.keys.remove(key).into_iter().flatten().collect();
            self.len -= rest.len();
            self.ready.retain(|k| k != key);
            if !recorded {
                self.blocked.insert(key.to_string(), delivery.to_string());
            }
            return rest;
        }
        if self.keys.contains_key(key) && !self.ready.iter().any(|k| k == key) {
            self.ready.push_back(key.to_string());
        }
        Vec::new()
    }

    /// The attempts of `deliveries` are in the store: keys they blocked take deliveries
    /// again.
    pub(super) fn recorded(&mut self, deliveries: &[String]) {
        if !self.blocked.is_empty() {
            self.blocked
                .retain(|_, failed| !deliveries.contains(failed));
        }
    }

    /// Everything waiting (sends in flight keep their keys busy until they end).
    pub(super) fn drain(&mut self) -> Vec<Claimed> {
        let mut all: Vec<Claimed> = self.free.drain(..).collect();
        all.extend(self.keys.drain().flat_map(|(_, q)| q));
        self.ready.clear();
        self.len = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Event;

    fn delivery(id: &str, key: Option<&str>, seq: i64) -> Claimed {
        Claimed {
            id: id.into(),
            endpoint_id: "ep".into(),
            attempts: 0,
            event: Event {
                id: format!("evt_{id}"),
                event_type: "order.checkout".into(),
                created: chrono::DateTime::UNIX_EPOCH,
                scheduled_at: None,
                data: serde_json::value::RawValue::NULL.to_owned(),
                seq,
                entity_kind: "order".into(),
                entity_id: "o".into(),
            },
            order_key: key.map(str::to_string),
            seq,
        }
    }

    fn push(q: &mut Queue, c: Claimed) {
        assert!(q.push(c).is_ok(), "queued");
    }

    fn ids(q: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| q.next()).map(|c| c.id).collect()
    }

    #[test]
    fn one_at_a_time_per_key_in_the_keys_order() {
        let mut q = Queue::default();
        // Out of order on arrival (a run read back by due time): the key's order wins.
        push(&mut q, delivery("a2", Some("order/a"), 20));
        push(&mut q, delivery("a1", Some("order/a"), 10));
        push(&mut q, delivery("b1", Some("order/b"), 15));
        push(&mut q, delivery("u", None, 30));
        assert_eq!(q.len(), 4);
        assert_eq!(
            ids(&mut q),
            ["u", "a1", "b1"],
            "one of each key, unordered first"
        );
        assert!(!q.has_ready(), "a2 waits for a1");
        assert!(q.ended("order/a", "a1", true, false).is_empty());
        assert_eq!(ids(&mut q), ["a2"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_failed_send_gives_up_the_rest_of_its_key() {
        let mut q = Queue::default();
        for (id, seq) in [("a1", 1), ("a2", 2), ("a3", 3)] {
            push(&mut q, delivery(id, Some("*"), seq));
        }
        push(&mut q, delivery("b1", Some("order/b"), 4));
        assert_eq!(ids(&mut q), ["a1", "b1"]);
        let back: Vec<String> = q
            .ended("*", "a1", false, false)
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(back, ["a2", "a3"]);
        assert_eq!(q.len(), 0);
        assert!(!q.has_ready());
        // Brought by a claim made before the failure was recorded: refused.
        assert!(q.push(delivery("a2", Some("*"), 2)).is_err());
        // The failed one itself, claimed again for its retry: the key goes on.
        push(&mut q, delivery("a1", Some("*"), 1));
        push(&mut q, delivery("a2", Some("*"), 2));
        assert_eq!(ids(&mut q), ["a1"]);
        q.ended("*", "a1", true, false);
        assert_eq!(ids(&mut q), ["a2"]);
    }

    #[test]
    fn a_recorded_failure_unblocks_its_key() {
        let mut q = Queue::default();
        push(&mut q, delivery("a1", Some("*"), 1));
        assert_eq!(ids(&mut q), ["a1"]);
        q.ended("*", "a1", false, false);
        q.recorded(&["a1".to_string()]);
        // Failed for good and moved on from: the next is the key's first now.
        push(&mut q, delivery("a2", Some("*"), 2));
        assert_eq!(ids(&mut q), ["a2"]);
        // A failure whose attempt was recorded before its send was seen to end blocks
        // nothing.
        q.ended("*", "a2", false, true);
        push(&mut q, delivery("a3", Some("*"), 3));
        assert_eq!(ids(&mut q), ["a3"]);
    }

    #[test]
    fn a_key_in_flight_takes_no_second_send_even_when_refilled() {
        let mut q = Queue::default();
        push(&mut q, delivery("a1", Some("k"), 1));
        assert_eq!(ids(&mut q), ["a1"]);
        push(&mut q, delivery("a2", Some("k"), 2));
        assert!(!q.has_ready(), "a1 is still in flight");
        q.ended("k", "a1", true, false);
        assert_eq!(ids(&mut q), ["a2"]);
        let drained = q.drain();
        assert!(drained.is_empty());
    }
}
