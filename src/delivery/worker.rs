//! The delivery worker: claims due deliveries with a lease, queues them per endpoint
//! (a lane), starts sends from the lanes (render → sign → POST, see [`super::send`])
//! and hands each finished attempt to the recorder ([`super::record`]), which writes
//! them in batches.
//!
//! Sends to different endpoints proceed concurrently: at most
//! `[delivery] max_concurrent_sends` in all, at most `max_in_flight_per_endpoint` to
//! one endpoint, so a slow or dead endpoint never holds back the healthy ones. Each
//! endpoint's rate limit is enforced when a send starts; an open circuit (see
//! [`super::health`]) keeps an endpoint's deliveries out of the claim, and the
//! deliveries queued for it go back when it opens.
//!
//! Claiming is one statement for many deliveries, and it runs in a task beside the
//! loop: on SQLite a claim waits its turn behind the other writers (firing, ingest,
//! the recorder), and a loop that waited with it started no sends meanwhile — during
//! a burst of firing it would start sends only between claims. A lane holds more than its
//! in-flight cap only for an endpoint that has been answering with success quickly:
//! about what it takes in [`PREFETCH_WINDOW`] at its recent pace, at most
//! [`PREFETCH_MAX`]. A slow, failing or new endpoint gets no more than it can have in
//! flight, so nothing waits in memory behind it while its lease runs.
//!
//! Crash safety: a delivery is claimed (`claimed_by`, the node's id, and a lease of its
//! endpoint's timeout plus the cluster lease, renewed with the heartbeat) before it is
//! queued, and released only by recording its attempt (or giving it back). A crash in
//! between leaves the claim to whoever learns the node is dead (the next start on
//! SQLite, a survivor a lease after the last heartbeat, see `crate::store::cluster`);
//! the delivery is then sent again with the same `webhook-id` (at least once). A
//! graceful stop gives back what is queued at once and lets the sends in flight
//! finish, so nothing it started is sent twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::endpoint::Endpoint;
use super::guard::DestinationGuard;
use super::health::AttemptResult;
use super::pipeline::Pipeline;
use super::queue::Queue;
use super::ratelimit::RateLimiter;
use super::record::{self, Finished, Recorded};
use super::send;
use crate::store::deliveries::{self, Claimed, Record};
use crate::store::{Store, StoreError, endpoints};

/// A fast endpoint's lane holds about what it takes in this long.
const PREFETCH_WINDOW: Duration = Duration::from_millis(500);
/// At most this many deliveries wait in one lane beyond its in-flight cap.
const PREFETCH_MAX: usize = 1024;
/// A fast endpoint's lane takes about what it sends in this long from hand-offs
/// ([`crate::outbox`]): they cost no claim, so more of them may wait in memory.
const HANDOFF_WINDOW: Duration = Duration::from_secs(1);
/// At most this many handed-off deliveries wait in one lane beyond its in-flight cap.
const HANDOFF_MAX: usize = 4096;
/// At most this many deliveries are claimed by one statement.
const CLAIM_MAX: usize = 1024;
/// An ordered key's run: at most this many of its deliveries claimed at once, sent one
/// after another as each succeeds, without a claim in between.
const RUN_MAX: usize = 256;

/// The deliveries claimed for one endpoint and not yet sent, and how it has been doing.
struct Lane {
    endpoint: Arc<Endpoint>,
    /// The endpoint's URL as the destination guard last checked it, with the text it
    /// checked: parsed and checked again only when the endpoint's URL changes.
    url: Option<(String, Result<Url, String>)>,
    queue: Queue,
    in_flight: usize,
    /// The recent duration of a successful send (a moving average); none until one
    /// succeeds and after any failure.
    pace: Option<Duration>,
    /// The last claim gave this lane all it asked for: more may be due.
    more: bool,
    /// Its circuit opened or it was disabled (see [`super::health`]): deliveries handed
    /// off before the worker knew go back to the store. Cleared when a claim, which
    /// leaves such endpoints out, brings it deliveries again.
    stopped: bool,
}

impl Lane {
    /// The endpoint's URL, checked by `guard`, or why it is refused.
    fn checked_url(&mut self, guard: &DestinationGuard) -> Result<Url, String> {
        let text = &self.endpoint.settings.url;
        match &self.url {
            Some((checked, url)) if checked == text => url.clone(),
            _ => {
                let url = guard.check_url(text).map_err(|e| e.to_string());
                self.url = Some((text.clone(), url.clone()));
                url
            }
        }
    }

    /// How many deliveries this lane may hold (queued and in flight).
    fn budget(&self, per_endpoint: usize) -> usize {
        let prefetch = self.pace.map_or(0, |pace| {
            let ahead =
                per_endpoint as f64 * PREFETCH_WINDOW.as_secs_f64() / pace.as_secs_f64().max(1e-5);
            (ahead as usize).min(PREFETCH_MAX)
        });
        per_endpoint + prefetch
    }

    /// How many more deliveries this lane takes from hand-offs: about a second of work
    /// for an endpoint answering with success quickly and without a rate limit (whose
    /// sends would be held back and given back), none for any other.
    fn handoff_room(&self, per_endpoint: usize) -> usize {
        let Some(pace) = self.pace else {
            return 0;
        };
        if self.endpoint.settings.rate_limit.is_some() {
            return 0;
        }
        let ahead =
            per_endpoint as f64 * HANDOFF_WINDOW.as_secs_f64() / pace.as_secs_f64().max(1e-5);
        (per_endpoint + (ahead as usize).min(HANDOFF_MAX))
            .saturating_sub(self.queue.len() + self.in_flight)
    }

    fn room(&self, per_endpoint: usize) -> usize {
        self.budget(per_endpoint)
            .saturating_sub(self.queue.len() + self.in_flight)
    }

    fn sent(&mut self, pace: Option<Duration>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.pace = pace.map(|d| match self.pace {
            Some(old) => old.mul_f64(0.8) + d.mul_f64(0.2),
            None => d,
        });
    }
}

/// A send's HTTP exchange ended: its lane's slot is free (the attempt itself went to
/// the recorder). `pace` is its duration when it succeeded; `key` its ordering key.
struct SendEnded {
    endpoint: String,
    delivery: String,
    key: Option<String>,
    pace: Option<Duration>,
}

struct Worker {
    p: Pipeline,
    client: reqwest::Client,
    node: String,
    per_endpoint: usize,
    /// The most deliveries held at once (queued and in flight).
    max_held: usize,
    permits: Arc<Semaphore>,
    lanes: HashMap<String, Lane>,
    /// Every delivery held (queued, in flight or being recorded).
    claimed: HashSet<String>,
    limiter: RateLimiter,
    tasks: JoinSet<()>,
    ended_tx: mpsc::UnboundedSender<SendEnded>,
    finished_tx: Option<mpsc::UnboundedSender<Finished>>,
    /// New work may be due anywhere (woken, or the poll interval passed).
    poked: bool,
    /// The last claim, made at this instant, found nothing: the store is asked when
    /// to wake.
    idle_since: Option<DateTime<Utc>>,
    /// When the store said, after that empty claim, that work comes due next (asked
    /// once per empty claim: the answer only changes with new work, which pokes).
    store_wake: Option<Option<DateTime<Utc>>>,
    /// The earliest retry recorded since the last claim.
    retry_at: Option<DateTime<Utc>>,
    /// Handed-off deliveries taken per endpoint since the room was last published.
    arrived: HashMap<String, usize>,
    /// Endpoints whose due deliveries a claim took all of, since the room was last
    /// published (writers may hand off to them again).
    drained: Vec<String>,
    /// The last claim left out endpoints at their rate limit; the first of them may
    /// send again at this instant, and what it held back is claimed then. (The clock
    /// may pass it while a claim is out, so the limiter, asked afterwards, no longer
    /// knows.)
    limit_lifts_at: Option<DateTime<Utc>>,
    /// Deliveries this worker no longer works on whose claims could not be given back
    /// (the store was unreachable): tried again at the next poll, since the heartbeat
    /// renews every claim of this node for as long as it lives.
    unreleased: Vec<String>,
    /// When to try giving them back again.
    release_at: Option<DateTime<Utc>>,
    /// Ordered deliveries sent whose key has nothing more queued here: once their
    /// attempts are recorded, the store may hold the key's next (written or claimed
    /// back while they were in flight, so no claim could take it), and a claim asks.
    key_ends: HashSet<String>,
    /// Held deliveries that a claim took again, so that the store says this node holds
    /// them: their lease lapsed (the clock jumped), a node that took this one for dead
    /// released them, or their attempt was recorded and they came due again before
    /// the recorder's report reached the worker. The claim left them out (they are
    /// held); once the recorder reports them, their claim goes back for the next claim
    /// to take them, or nobody would send them while the heartbeat renews it.
    reclaimed: HashSet<String>,
}

pub async fn run(p: Pipeline, shutdown: CancellationToken) {
    let client = match send::client(&p) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; no webhooks will be sent");
            return;
        }
    };
    let node = p.outbox.handoff().node().to_string();
    let mut handoffs = p.outbox.handoff().take_receiver();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    let (recorded_tx, mut recorded_rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record::run(
        p.clone(),
        node.clone(),
        finished_rx,
        recorded_tx,
    ));
    let mut w = Worker {
        client,
        node,
        per_endpoint: p.config.max_in_flight_per_endpoint,
        max_held: p.config.max_concurrent_sends + PREFETCH_MAX + HANDOFF_MAX,
        permits: Arc::new(Semaphore::new(p.config.max_concurrent_sends)),
        lanes: HashMap::new(),
        claimed: HashSet::new(),
        limiter: RateLimiter::default(),
        tasks: JoinSet::new(),
        ended_tx,
        finished_tx: Some(finished_tx),
        poked: true,
        idle_since: None,
        store_wake: None,
        retry_at: None,
        arrived: HashMap::new(),
        drained: Vec::new(),
        limit_lifts_at: None,
        key_ends: HashSet::new(),
        reclaimed: HashSet::new(),
        unreleased: Vec::new(),
        release_at: None,
        p,
    };

    // The claim in progress, if any. It runs beside the loop so that sends keep
    // starting while it waits for the store (on SQLite, behind other writers).
    let mut claiming: Option<tokio::task::JoinHandle<ClaimDone>> = None;
    // A claim that failed is tried again at the next wake-up, not at once (a store
    // that is down would otherwise be asked in a tight loop).
    let mut hold_claims = false;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        while let Ok(m) = ended_rx.try_recv() {
            w.ended(m).await;
        }
        // Recorded attempts release their ids from `claimed`, which a claim's result
        // is checked against; they wait while a claim is out.
        if claiming.is_none() {
            while let Ok(r) = recorded_rx.try_recv() {
                w.recorded(r).await;
            }
        }
        while w.tasks.try_join_next().is_some() {}
        let now = w.p.clock.now();
        if !w.unreleased.is_empty() && w.release_at.is_none_or(|at| now >= at) {
            let ids = std::mem::take(&mut w.unreleased);
            w.release_at = None;
            if deliveries::release(&w.p.store, &w.node, &ids)
                .await
                .is_err()
            {
                w.unreleased = ids;
                w.release_at = Some(now + w.p.poll_interval());
            }
        }
        w.start_sends(now).await;
        w.publish_room();
        if w.limit_lifts_at.is_some_and(|t| t <= now) {
            w.limit_lifts_at = None;
            w.poked = true;
        }
        if claiming.is_none() && !hold_claims && w.should_claim() {
            claiming = w.start_claim(now);
        }
        hold_claims = false;
        let (_, limiter_wake) = w.limiter.blocked(now);
        let mut wake_at = now + w.p.poll_interval();
        if w.idle_since.is_some() && claiming.is_none() && w.store_wake.is_none() {
            w.store_wake = Some(
                deliveries::next_wake(w.p.store.pool(), now)
                    .await
                    .ok()
                    .flatten(),
            );
        }
        if let Some(looked_at) = w.idle_since
            && claiming.is_none()
            && let Some(Some(at)) = w.store_wake
        {
            if at > now {
                wake_at = wake_at.min(at);
            } else if at > looked_at {
                // Came due after the last claim looked (the clock moved while it was
                // out): claim again now rather than at the next poll. What was due
                // when it looked and not taken is held back (a limit) and waits.
                // No longer idle: the claim that follows (as soon as there is room)
                // says what is left.
                w.poked = true;
                w.idle_since = None;
                continue;
            }
        }
        for at in [limiter_wake, w.retry_at, w.limit_lifts_at, w.release_at]
            .into_iter()
            .flatten()
        {
            wake_at = wake_at.min(at);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = w.p.outbox.delivery_wake().notified() => w.poked = true,
            Some(m) = ended_rx.recv() => w.ended(m).await,
            Some(batch) = async {
                match handoffs.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => w.handed(batch).await,
            Some(r) = recorded_rx.recv(), if claiming.is_none() => w.recorded(r).await,
            done = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                claiming = None;
                match done {
                    Ok(done) => hold_claims = w.claimed(done).await.is_none(),
                    Err(e) => {
                        tracing::warn!(error = %e, "a delivery claim failed; what it took goes back when this node stops");
                        hold_claims = true;
                    }
                }
            }
            // Wake-ups are for claiming; while a claim is out, its end is the wake-up
            // (a retry already due would otherwise spin this loop and starve the claim).
            _ = w.p.clock.sleep_until(wake_at), if claiming.is_none() => w.poked = true,
        }
    }
    // Stop taking work and hand it over: what is queued (in the lanes, handed off and
    // not taken, or brought by a claim still out) goes back to the store at once, for
    // the other nodes (or the next start) to send now. Sends in flight finish within
    // their endpoint's timeout and are recorded: cut off, the receiver may have had
    // them already, and a re-send elsewhere would deliver them twice. The app's
    // shutdown deadline bounds the wait; what it cuts off is released when the app
    // has stopped (see `App::shutdown_within`).
    w.p.outbox.handoff().close();
    let mut back = Vec::new();
    if let Some(rx) = handoffs.as_mut() {
        while let Ok(batch) = rx.try_recv() {
            back.extend(batch.into_iter().map(|c| c.id));
        }
    }
    if let Some(h) = claiming
        && let Ok(done) = h.await
    {
        // Ids this worker holds already (re-claimed past their lease) are queued or in
        // flight: they go with their lane, or finish.
        back.extend(done.ids.into_iter().filter(|id| !w.claimed.contains(id)));
    }
    for lane in w.lanes.values_mut() {
        back.extend(lane.queue.drain().into_iter().map(|c| c.id));
    }
    w.give_back(back).await;
    while w.tasks.join_next().await.is_some() {}
    w.finished_tx = None;
    let _ = recorder.await;
    while let Ok(r) = recorded_rx.try_recv() {
        for id in r.ids {
            w.claimed.remove(&id);
        }
    }
    let mut ids: Vec<String> = w.claimed.drain().collect();
    ids.append(&mut w.unreleased);
    w.p.sending.store(0, Ordering::Release);
    if let Err(e) = deliveries::release(&w.p.store, &w.node, &ids).await {
        tracing::warn!(error = %e, "could not release held deliveries; the app tries again as it stops");
    }
}

impl Worker {
    fn held(&self) -> usize {
        self.lanes
            .values()
            .map(|l| l.queue.len() + l.in_flight)
            .sum()
    }

    /// Whether to ask the store for more: there is room, and either new work may be
    /// anywhere or a lane that was left wanting has room for a good batch again.
    fn should_claim(&self) -> bool {
        if self.held() >= self.max_held {
            return false;
        }
        self.poked
            || self.lanes.values().any(|l| {
                let budget = l.budget(self.per_endpoint);
                l.more && l.room(self.per_endpoint) * 2 >= budget.max(2)
            })
    }

    /// Tells writers how many deliveries each lane would take from hand-offs.
    fn publish_room(&mut self) {
        let per_endpoint = self.per_endpoint;
        let spare = self.max_held.saturating_sub(self.held());
        self.p.outbox.handoff().publish(
            self.lanes
                .iter()
                .map(|(ep, lane)| (ep.clone(), lane.handoff_room(per_endpoint).min(spare))),
            &self.arrived,
            &self.drained,
        );
        self.arrived.clear();
        self.drained.clear();
    }

    /// Queues deliveries a writer created already claimed for this worker.
    async fn handed(&mut self, batch: Vec<Claimed>) {
        self.p.outbox.handoff().count_taken(batch.len());
        let mut give_back = Vec::new();
        for c in batch {
            *self.arrived.entry(c.endpoint_id.clone()).or_default() += 1;
            let Some(lane) = self
                .lanes
                .get_mut(&c.endpoint_id)
                .filter(|lane| !lane.stopped)
            else {
                // Room is published only for lanes that exist (a lane is never
                // dropped); a lane that stopped since its room was published takes
                // nothing more: back to the store, for a claim once it recovers.
                give_back.push(c.id);
                continue;
            };
            self.claimed.insert(c.id.clone());
            if let Err(c) = lane.queue.push(c) {
                give_back.push(c.id);
                continue;
            }
        }
        self.p.sending.store(self.claimed.len(), Ordering::Release);
        self.give_back(give_back).await;
    }

    async fn ended(&mut self, m: SendEnded) {
        let Some(lane) = self.lanes.get_mut(&m.endpoint) else {
            return;
        };
        let ok = m.pace.is_some();
        lane.sent(m.pace);
        if let Some(key) = &m.key {
            // The next of its key goes now, or (after a failure) after the failed one.
            let recorded = !self.claimed.contains(&m.delivery);
            let rest = lane.queue.ended(key, &m.delivery, ok, recorded);
            if !lane.queue.holds(key) {
                if recorded {
                    self.poked = true;
                } else {
                    self.key_ends.insert(m.delivery.clone());
                }
            }
            self.give_back(rest.into_iter().map(|c| c.id).collect())
                .await;
        }
    }

    async fn recorded(&mut self, r: Recorded) {
        if let Some(at) = r.retry_at {
            // The store keeps milliseconds; so must the wake-up, or a manual clock set
            // to the stored instant would stop just short of it.
            let at = at.trunc_subsecs(3);
            self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
        }
        let mut give_back = Vec::new();
        for id in &r.ids {
            self.claimed.remove(id);
            if self.key_ends.remove(id) {
                self.poked = true;
            }
            if self.reclaimed.remove(id) && !r.unrecorded {
                // Released only where this node still holds it; no claim is out now,
                // so it is in no lane again.
                tracing::debug!(delivery = %id, "a claim took it again while it was held; it goes back");
                give_back.push(id.clone());
                self.poked = true;
            }
        }
        if r.unrecorded {
            self.unreleased.extend(r.ids.iter().cloned());
            self.release_at = None;
        }
        for lane in self.lanes.values_mut() {
            lane.queue.recorded(&r.ids);
        }
        for ep in &r.stopped {
            if let Some(lane) = self.lanes.get_mut(ep) {
                give_back.extend(lane.queue.drain().into_iter().map(|c| c.id));
                lane.pace = None;
                lane.more = false;
                lane.stopped = true;
            }
        }
        self.give_back(give_back).await;
    }

    /// Releases `ids` (claimed, not sent) back to the store.
    async fn give_back(&mut self, ids: Vec<String>) {
        for id in &ids {
            self.claimed.remove(id);
            self.reclaimed.remove(id);
        }
        self.p.sending.store(self.claimed.len(), Ordering::Release);
        if ids.is_empty() {
            return;
        }
        if let Err(e) = deliveries::release(&self.p.store, &self.node, &ids).await {
            tracing::warn!(error = %e, "could not release deliveries; trying again at the next poll");
            self.unreleased.extend(ids);
            self.release_at = Some(self.p.clock.now() + self.p.poll_interval());
        }
    }

    /// Starts a claim of what the lanes have room for, in a task of its own: one
    /// statement claims, one query reads the claimed deliveries with their events and
    /// endpoints. None when there is no room.
    fn start_claim(&mut self, now: DateTime<Utc>) -> Option<tokio::task::JoinHandle<ClaimDone>> {
        let per_endpoint = self.per_endpoint;
        let (mut exclude, limit_lifts) = self.limiter.blocked(now);
        let limited: HashSet<String> = exclude.iter().cloned().collect();
        let mut cap = per_endpoint;
        let mut full = HashSet::new();
        for (ep, lane) in &self.lanes {
            match lane.room(per_endpoint) {
                0 => {
                    exclude.push(ep.clone());
                    full.insert(ep.clone());
                }
                room => cap = cap.max(room),
            }
        }
        // Lanes that have not shown a quick pace hold no more than can be sent at once
        // (the free permits); fast lanes may take their room ahead.
        let waiting_unpaced: usize = self
            .lanes
            .values()
            .filter(|l| l.pace.is_none())
            .map(|l| l.queue.len())
            .sum();
        let ahead: usize = self
            .lanes
            .values()
            .filter(|l| l.pace.is_some())
            .map(|l| l.room(per_endpoint))
            .sum();
        let limit = (self
            .permits
            .available_permits()
            .saturating_sub(waiting_unpaced)
            + ahead)
            .min(self.max_held - self.held())
            .min(CLAIM_MAX);
        if limit == 0 {
            return None;
        }
        // Whatever is poked from now on is for the next claim.
        let poked = std::mem::take(&mut self.poked);
        let (store, node) = (self.p.store.clone(), self.node.clone());
        let lease_from = self.p.outbox.handoff().lease_from(now);
        Some(tokio::spawn(async move {
            let taken = deliveries::claim(
                &store,
                &node,
                now,
                lease_from,
                i64::try_from(limit).unwrap_or(1),
                i64::try_from(cap).unwrap_or(1),
                i64::try_from(RUN_MAX).unwrap_or(1),
                &exclude,
            )
            .await;
            let (ids, read) = match taken {
                Ok(batch) => {
                    let ids: Vec<String> = batch.into_iter().map(|(id, _)| id).collect();
                    let read = if ids.is_empty() {
                        Ok((Vec::new(), Vec::new()))
                    } else {
                        read_claimed(&store, &node, &ids).await
                    };
                    (ids, Some(read))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming deliveries failed; will retry");
                    (Vec::new(), None)
                }
            };
            ClaimDone {
                at: now,
                poked,
                limit,
                cap,
                full,
                limited,
                limit_lifts,
                ids,
                read,
            }
        }))
    }

    /// Queues what a claim brought in its lanes and gives back what they have no room
    /// for; returns how many deliveries were queued, None when the claim failed.
    async fn claimed(&mut self, done: ClaimDone) -> Option<usize> {
        let per_endpoint = self.per_endpoint;
        let ClaimDone {
            at,
            poked,
            limit,
            cap,
            full,
            limited,
            limit_lifts,
            ids,
            read,
        } = done;
        self.limit_lifts_at = limit_lifts;
        let Some(read) = read else {
            // The claim statement failed: ask again at the next wake-up.
            self.poked = true;
            return None;
        };
        self.retry_at = None;
        self.idle_since = ids.is_empty().then_some(at);
        self.store_wake = None;
        // A claim cut short by its limit says nothing about what is left: every lane it
        // served may have more. Otherwise a lane has more only if it got its cap.
        let filled = ids.len() >= limit;
        if ids.is_empty() {
            self.settle_lanes(&HashMap::new(), filled, cap, poked, &full, &limited);
            return Some(0);
        }
        // Our own deliveries, still held (see `reclaimed`): not sent twice.
        let (again, ids): (Vec<String>, Vec<String>) =
            ids.into_iter().partition(|id| self.claimed.contains(id));
        self.reclaimed.extend(again);
        let (claimed, found) = match read {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "reading claimed deliveries failed; giving them back");
                self.give_back(ids).await;
                return Some(0);
            }
        };
        let found: HashMap<String, Arc<Endpoint>> = found
            .into_iter()
            .filter(|ep| ep.enabled)
            .map(|ep| (ep.id.clone(), Arc::new(ep)))
            .collect();
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut per_lane: HashMap<String, usize> = HashMap::new();
        let mut queued = 0;
        let mut give_back = Vec::new();
        let mut kept: HashSet<String> = HashSet::with_capacity(claimed.len());
        // Unordered first, as read; then each key's run in its order, so that a lane
        // out of room keeps the start of a run and gives back its end, never the
        // reverse (what is kept must not go ahead of what went back).
        let mut claimed = claimed;
        claimed.sort_by(|a, b| match (&a.order_key, &b.order_key) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(ka), Some(kb)) => (&a.endpoint_id, ka, a.seq).cmp(&(&b.endpoint_id, kb, b.seq)),
        });
        let mut cut: HashSet<(String, String)> = HashSet::new();
        for c in claimed {
            if !wanted.contains(c.id.as_str()) {
                continue;
            }
            if let Some(key) = &c.order_key
                && cut.contains(&(c.endpoint_id.clone(), key.clone()))
            {
                give_back.push(c.id);
                continue;
            }
            let Some(endpoint) = found.get(&c.endpoint_id).cloned() else {
                give_back.push(c.id);
                continue;
            };
            let lane = self
                .lanes
                .entry(c.endpoint_id.clone())
                .or_insert_with(|| Lane {
                    endpoint: endpoint.clone(),
                    url: None,
                    queue: Queue::default(),
                    in_flight: 0,
                    pace: None,
                    more: false,
                    stopped: false,
                });
            lane.endpoint = endpoint;
            lane.stopped = false;
            let got = per_lane.entry(c.endpoint_id.clone()).or_default();
            *got += 1;
            if lane.room(per_endpoint) == 0 {
                if let Some(key) = &c.order_key {
                    cut.insert((c.endpoint_id.clone(), key.clone()));
                }
                give_back.push(c.id);
                continue;
            }
            let id = c.id.clone();
            if let Err(c) = lane.queue.push(c) {
                // Behind a send that failed and is not recorded yet: after it.
                if let Some(key) = &c.order_key {
                    cut.insert((c.endpoint_id.clone(), key.clone()));
                }
                give_back.push(c.id);
                continue;
            }
            kept.insert(id);
            queued += 1;
        }
        self.claimed.extend(kept.iter().cloned());
        self.settle_lanes(&per_lane, filled, cap, poked, &full, &limited);
        // Claimed, but gone from the store before it could be read (deleted), or
        // handed back above: not ours to keep.
        give_back.extend(ids.iter().filter(|id| !kept.contains(*id)).cloned());
        give_back.sort();
        give_back.dedup();
        self.give_back(give_back).await;
        Some(queued)
    }

    /// What each lane learnt from a claim that brought it `got` deliveries: it may have
    /// more if it got its cap or the claim was cut short by its limit (`filled`);
    /// otherwise the store holds no more due for it, and writers may hand off to it
    /// again (unless it was left out for its rate limit). A lane left out for being full
    /// learnt nothing: it keeps what it knew, and after a claim asked for because new
    /// work may be anywhere (`poked`: a writer left deliveries for it in the store, say)
    /// it may have more, to claim as soon as it has room again rather than at the next
    /// poll. Hand-offs alone never set it: they come with a poke whenever their writer
    /// left deliveries in the store, and a claim after every hand-off would find
    /// nothing most of the time.
    fn settle_lanes(
        &mut self,
        got: &HashMap<String, usize>,
        filled: bool,
        cap: usize,
        poked: bool,
        full: &HashSet<String>,
        limited: &HashSet<String>,
    ) {
        for (ep, lane) in &mut self.lanes {
            if full.contains(ep) {
                lane.more |= poked;
                continue;
            }
            lane.more = got.get(ep).is_some_and(|n| filled || *n >= cap);
            if !lane.more && !limited.contains(ep) {
                self.drained.push(ep.clone());
            }
        }
    }

    /// Starts sends from the lanes while slots and permits allow.
    async fn start_sends(&mut self, now: DateTime<Utc>) {
        let mut give_back = Vec::new();
        'lanes: for (ep, lane) in &mut self.lanes {
            while lane.in_flight < self.per_endpoint && lane.queue.has_ready() {
                let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                    break 'lanes;
                };
                if !self
                    .limiter
                    .try_take(ep, lane.endpoint.settings.rate_limit, now)
                {
                    // At its rate limit: what is queued goes back to the store until a
                    // slot frees (the claim leaves this endpoint out meanwhile).
                    give_back.extend(lane.queue.drain().into_iter().map(|c| c.id));
                    lane.more = false;
                    break;
                }
                let Some(claimed) = lane.queue.next() else {
                    break;
                };
                lane.in_flight += 1;
                let Some(finished) = self.finished_tx.clone() else {
                    break 'lanes;
                };
                let url = lane.checked_url(&self.p.guard);
                let (p, client, endpoint, ended) = (
                    self.p.clone(),
                    self.client.clone(),
                    lane.endpoint.clone(),
                    self.ended_tx.clone(),
                );
                self.tasks.spawn(async move {
                    let started_at = p.clock.now();
                    let sent =
                        send::send(&p, &client, &endpoint, url, &claimed.event, started_at).await;
                    let verdict = send::judge(
                        &endpoint,
                        claimed.attempts + 1,
                        started_at,
                        sent,
                        p.clock.now(),
                    );
                    let ok = verdict.result == AttemptResult::Success;
                    let _ = ended.send(SendEnded {
                        endpoint: endpoint.id.clone(),
                        delivery: claimed.id.clone(),
                        key: claimed.order_key.clone(),
                        pace: ok.then_some(verdict.duration),
                    });
                    let _ = finished.send(Finished {
                        record: Record {
                            delivery_id: claimed.id,
                            attempt: verdict.attempt,
                            outcome: verdict.outcome,
                        },
                        endpoint_id: endpoint.id.clone(),
                        result: verdict.result,
                        class: verdict.class,
                        duration: verdict.duration,
                    });
                    drop(permit);
                });
            }
        }
        self.give_back(give_back).await;
    }
}

/// What a claim brought back to the loop.
struct ClaimDone {
    /// The instant it claimed at (what was due then).
    at: DateTime<Utc>,
    /// It was asked for because new work may be anywhere (a writer left deliveries in
    /// the store, a retry came due, a poll), not only for lanes known to have more.
    poked: bool,
    /// The most it asked for, and the most for one endpoint.
    limit: usize,
    cap: usize,
    /// The lanes it left out for having no room, and for their rate limit.
    full: HashSet<String>,
    limited: HashSet<String>,
    /// When the first endpoint it left out at its rate limit may send again.
    limit_lifts: Option<DateTime<Utc>>,
    /// The deliveries it claimed.
    ids: Vec<String>,
    /// Those deliveries with their events, and their endpoints; None when the claim
    /// statement itself failed.
    read: Option<Result<ClaimedRead, StoreError>>,
}

/// Claimed deliveries with their events, and their endpoints.
type ClaimedRead = (Vec<Claimed>, Vec<Endpoint>);

/// The deliveries among `ids` that `node` holds, with their events, and their
/// endpoints.
async fn read_claimed(
    store: &Store,
    node: &str,
    ids: &[String],
) -> Result<ClaimedRead, StoreError> {
    let claimed = deliveries::claimed(store, node, ids).await?;
    let endpoint_ids: HashSet<&str> = claimed.iter().map(|d| d.endpoint_id.as_str()).collect();
    let endpoint_ids: Vec<String> = endpoint_ids.into_iter().map(str::to_string).collect();
    let found = endpoints::get_many(store, &endpoint_ids).await?;
    Ok((claimed, found))
}
