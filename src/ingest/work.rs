//! One transaction of many ops. The entities the ops name are read first, in a few
//! multi-row statements, with their pending and done timers; each op then runs in
//! order against what the transaction holds so far (an op sees the ops before it,
//! as if each had been sent alone); at the end the changed entities, the timers and
//! the events are written in multi-row statements and the transaction commits.
//!
//! An op refused by its entity's state (missing, or a transition the state forbids)
//! leaves nothing behind: each op works on copies and changes the working set only
//! once nothing can refuse it any more. Planning stays one pure decision per entity
//! ([`Planner::plan`]); only the reading and the writing of timers are gathered.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Applied, Core, Op, Outcome, Results, to_value};
use crate::domain::contact::Contact;
use crate::domain::event::NewEvent;
use crate::domain::item::Item;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::reservation::Reservation;
use crate::domain::unit_rental::{Invoice, UnitRental};
use crate::domain::{DomainError, EntityKind};
use crate::error::ServiceError;
use crate::outbox::Written;
use crate::runtime::telemetry::names::INGEST_TRANSACTIONS;
use crate::schedule::plan::{PendingTimer, Planner, Subject};
use crate::store::timers::{self, NewTimer, TimerRow, TimerState};
use crate::store::{StoreError, Tx, entities as db};

/// Applies `ops` in one transaction and commits it. A refused op is its own result;
/// the store failing fails them all (nothing is stored).
pub(super) async fn run(core: &Core, ops: &[&Op]) -> Result<Results, StoreError> {
    let (results, _) = Prepared::start(core, ops)
        .await?
        .finish(core, false)
        .await?;
    Ok(results)
}

/// A group of ops applied to their transaction's working set, not written yet.
pub(super) struct Prepared<'c> {
    work: Work<'c>,
    staged: Vec<Result<Staged, ServiceError>>,
    /// Applied while the transaction before it was written.
    ahead: bool,
}

impl<'c> Prepared<'c> {
    /// Begins a transaction, reads what `ops` name and applies them.
    pub(super) async fn start(core: &'c Core, ops: &[&Op]) -> Result<Self, StoreError> {
        let now = core.clock.now();
        let mut tx = core.store.begin().await?;
        core.store.plan_for_values(&mut tx).await?;
        let keys: BTreeSet<String> = ops.iter().filter_map(|op| op.entity_key()).collect();
        core.store.lock_entities(&mut tx, keys).await?;
        let mut work = Work::new(Some(tx), now, &core.planner);
        work.prefetch(ops).await?;
        let staged = work.apply_all(ops).await?;
        Ok(Self {
            work,
            staged,
            ahead: false,
        })
    }

    /// Writes this group and commits it; its results.
    ///
    /// With `next`, the ops queued behind it, the writer may apply those while this
    /// transaction is written: SQLite runs the statements on a thread of its own, and
    /// applying a group (planning its timers, building its events) is CPU work of the
    /// same order, which the writer would otherwise do while that thread waits. It
    /// does so when the store lets the writer keep its turn from this transaction to
    /// the next ([`crate::store::Tx::commit_keeping_turn`], SQLite) and no other
    /// writer waits for it: what `next` names is read in this transaction, before its
    /// writes, and `next` is applied to a working set of its own while they run. It
    /// comes back begun in the kept turn, ready to write, unless it names a row this
    /// group read or changed (then it is applied afresh once this one committed), or
    /// applying it needed a read it could not make (the same).
    pub(super) async fn write(
        mut self,
        core: &'c Core,
        next: Option<&[&Op]>,
    ) -> (Result<Results, StoreError>, Option<Prepared<'c>>) {
        let mut ahead = None;
        if let Some(next) = next
            && self.work.tx.as_ref().is_some_and(|tx| tx.holds_writer())
            && !core.store.writer_wanted()
        {
            let mut w = Work::new(self.work.tx.take(), core.clock.now(), &core.planner);
            let read = w.prefetch(next).await;
            self.work.tx = w.tx.take();
            if let Err(e) = read {
                return (Err(e), None);
            }
            if !w.overlaps(&self.work) {
                ahead = Some((w, next));
            }
        }
        let keep_turn = ahead.is_some();
        let (written, applied) = futures::join!(self.finish(core, keep_turn), async {
            match ahead {
                Some((mut w, next)) => {
                    let staged = w.apply_all(next).await;
                    Some((w, staged))
                }
                None => None,
            }
        });
        let (results, turn) = match written {
            Ok(done) => done,
            Err(e) => return (Err(e), None),
        };
        let ahead = match (turn, applied) {
            (Some(turn), Some((mut work, Ok(staged)))) if !work.unread => {
                match core.store.begin_in_turn(turn).await {
                    Ok(tx) => {
                        work.tx = Some(tx);
                        Some(Prepared {
                            work,
                            staged,
                            ahead: true,
                        })
                    }
                    // The next group meets the same store when it starts afresh.
                    Err(_) => None,
                }
            }
            _ => None,
        };
        (Ok(results), ahead)
    }

    /// Writes the working set and the events and commits; the results, and the
    /// writer's turn when `keep_turn` asks for it (see [`Prepared::write`]).
    async fn finish(
        self,
        core: &Core,
        keep_turn: bool,
    ) -> Result<(Results, Option<crate::store::Turn>), StoreError> {
        let Prepared {
            mut work,
            staged,
            ahead,
        } = self;
        let now = work.now;
        let mut tx = work.tx.take().ok_or_else(|| {
            StoreError::Corrupt("a group to write without its transaction".into())
        })?;
        // The reads are done: the writes need no plans made for their values.
        core.store.plan_for_any_values(&mut tx).await?;
        let (events, wake, planned) = work.flush(&mut tx).await?;
        if wake {
            timers::notify_planned(&mut tx).await?;
        }
        let written = core.outbox.write(&mut tx, events, now).await?;
        let turn = if keep_turn {
            tx.commit_keeping_turn().await?
        } else {
            tx.commit().await?;
            None
        };
        let results = staged
            .into_iter()
            .map(|s| s.and_then(|s| s.outcome(&written)))
            .collect();
        written.committed();
        let applied = if ahead { "ahead" } else { "in_turn" };
        metrics::counter!(INGEST_TRANSACTIONS, "applied" => applied).increment(1);
        core.store.timers_planned(planned);
        if wake {
            core.planner.wake.notify_one();
        }
        Ok((results, turn))
    }
}

/// An op's result before commit: its entity, and the index of the event that names
/// it among the transaction's events.
struct Staged {
    entity: Entity,
    created: bool,
    event: Option<usize>,
}

enum Entity {
    Reservation(Reservation),
    Order(Order),
    UnitRental(UnitRental),
    Invoice(Invoice),
    Item(Item),
    Contact(Contact),
    Event,
}

impl Staged {
    fn outcome(self, written: &Written<'_>) -> Result<Outcome, ServiceError> {
        let event_id = self.event.and_then(|i| written.id(i)).map(str::to_string);
        let created = self.created;
        Ok(match self.entity {
            Entity::Reservation(entity) => Outcome::Reservation(Applied {
                entity,
                event_id,
                created,
            }),
            Entity::Order(entity) => Outcome::Order(Applied {
                entity,
                event_id,
                created,
            }),
            Entity::UnitRental(entity) => Outcome::UnitRental(Applied {
                entity,
                event_id,
                created,
            }),
            Entity::Invoice(entity) => Outcome::Invoice(Applied {
                entity,
                event_id,
                created,
            }),
            Entity::Item(entity) => Outcome::Item(Applied {
                entity,
                event_id,
                created,
            }),
            Entity::Contact(entity) => Outcome::Contact(Applied {
                entity,
                event_id,
                created,
            }),
            Entity::Event => Outcome::Event(
                self.event
                    .and_then(|i| written.event(i))
                    .ok_or_else(|| StoreError::Corrupt("event written without its data".into()))?,
            ),
        })
    }
}

/// A table's rows as the transaction holds them so far: `None` for an id read and
/// absent; `dirty` the ids changed, to write at the end.
struct Rows<T> {
    rows: HashMap<String, Option<T>>,
    dirty: BTreeSet<String>,
}

impl<T: Clone> Rows<T> {
    fn new() -> Self {
        Self {
            rows: HashMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    fn known(&self, id: &str) -> Option<Option<T>> {
        self.rows.get(id).cloned()
    }

    fn put(&mut self, id: &str, row: T) {
        self.rows.insert(id.to_string(), Some(row));
        self.dirty.insert(id.to_string());
    }

    fn loaded(&mut self, ids: &[&str], found: Vec<T>, id_of: impl Fn(&T) -> &str) {
        for id in ids {
            self.rows.entry(id.to_string()).or_insert(None);
        }
        for row in found {
            let id = id_of(&row).to_string();
            if !self.dirty.contains(&id) {
                self.rows.insert(id, Some(row));
            }
        }
    }

    fn changed(&self) -> Vec<&T> {
        self.dirty
            .iter()
            .filter_map(|id| self.rows.get(id).and_then(Option::as_ref))
            .collect()
    }
}

/// Where a pending timer is: stored (its id), or planned in this transaction (its
/// index among the rows to insert).
#[derive(Debug, Clone, Copy)]
enum Slot {
    Stored(i64),
    New(usize),
}

struct Pending {
    slot: Slot,
    rule: String,
    anchor_at: DateTime<Utc>,
    fire_at: DateTime<Utc>,
}

/// One entity's timers as planning weighs them.
#[derive(Default)]
struct EntityTimers {
    pending: Vec<Pending>,
    /// (rule, fire instant in ms) of the moments that fired or were skipped.
    done: HashSet<(String, i64)>,
}

/// A timer row to insert, by the index of its rule.
struct NewRow {
    kind: &'static str,
    entity_id: String,
    rule: usize,
    anchor_at: DateTime<Utc>,
    fire_at: DateTime<Utc>,
    state: TimerState,
    reason: Option<String>,
}

/// The working set of one transaction.
struct Work<'a> {
    /// The transaction it reads from and is written in; none while a group is applied
    /// ahead (see [`Prepared::write`]).
    tx: Option<Tx>,
    /// Applying needed a read without a transaction to read from.
    unread: bool,
    now: DateTime<Utc>,
    planner: &'a Planner,
    reservations: Rows<Reservation>,
    orders: Rows<Order>,
    items: Rows<Item>,
    contacts: Rows<Contact>,
    rentals: Rows<UnitRental>,
    invoices: Rows<Invoice>,
    timers: HashMap<(&'static str, String), EntityTimers>,
    new_timers: Vec<NewRow>,
    cancels: Vec<(i64, String)>,
    events: Vec<NewEvent>,
    wake: bool,
}

/// `Work::$name(id)`: the row as the transaction holds it, read from the store the
/// first time.
macro_rules! row {
    ($name:ident, $field:ident, $load:path, $t:ty) => {
        async fn $name(&mut self, id: &str) -> Result<Option<$t>, StoreError> {
            if let Some(known) = self.$field.known(id) {
                return Ok(known);
            }
            let row = $load(self.reader()?, id).await?;
            self.$field.rows.insert(id.to_string(), row.clone());
            Ok(row)
        }
    };
}

impl<'a> Work<'a> {
    fn new(tx: Option<Tx>, now: DateTime<Utc>, planner: &'a Planner) -> Self {
        Self {
            tx,
            unread: false,
            now,
            planner,
            reservations: Rows::new(),
            orders: Rows::new(),
            items: Rows::new(),
            contacts: Rows::new(),
            rentals: Rows::new(),
            invoices: Rows::new(),
            timers: HashMap::new(),
            new_timers: Vec::new(),
            cancels: Vec::new(),
            events: Vec::new(),
            wake: false,
        }
    }

    row!(reservation, reservations, db::load_reservation, Reservation);
    row!(order, orders, db::load_order, Order);
    row!(item, items, db::load_item, Item);
    row!(contact, contacts, db::load_contact, Contact);
    row!(rental, rentals, db::load_unit_rental, UnitRental);
    row!(invoice, invoices, db::load_invoice, Invoice);

    /// The transaction to read from. A group applied ahead has none: a read it would
    /// need is noted, and the group is applied afresh in its own transaction.
    fn reader(&mut self) -> Result<&mut Tx, StoreError> {
        match self.tx.as_mut() {
            Some(tx) => Ok(tx),
            None => {
                self.unread = true;
                Err(unread())
            }
        }
    }

    /// Applies `ops` in order, each against what the ops before it left. The store
    /// failing fails them all.
    async fn apply_all(
        &mut self,
        ops: &[&Op],
    ) -> Result<Vec<Result<Staged, ServiceError>>, StoreError> {
        let mut staged = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            if self.tx.is_none() && i % AHEAD_YIELD_EVERY == AHEAD_YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
            let mark = self.events.len();
            match self.apply(op).await {
                Ok(s) => staged.push(Ok(s)),
                Err(ServiceError::Store(e)) => return Err(e),
                Err(refused) => {
                    self.events.truncate(mark);
                    staged.push(Err(refused));
                }
            }
        }
        Ok(staged)
    }

    /// Whether this working set holds a row (present or read absent) or an entity's
    /// timers that `other` holds too.
    fn overlaps(&self, other: &Work<'_>) -> bool {
        fn shared<T>(a: &Rows<T>, b: &Rows<T>) -> bool {
            a.rows.keys().any(|id| b.rows.contains_key(id))
        }
        shared(&self.reservations, &other.reservations)
            || shared(&self.orders, &other.orders)
            || shared(&self.items, &other.items)
            || shared(&self.contacts, &other.contacts)
            || shared(&self.rentals, &other.rentals)
            || shared(&self.invoices, &other.invoices)
            || self.timers.keys().any(|k| other.timers.contains_key(k))
    }

    /// Reads what `ops` name, a few statements per table.
    async fn prefetch(&mut self, ops: &[&Op]) -> Result<(), StoreError> {
        let mut reservations = BTreeSet::new();
        let mut orders = BTreeSet::new();
        let mut items = BTreeSet::new();
        let mut contacts = BTreeSet::new();
        let mut rentals = BTreeSet::new();
        let mut invoices = BTreeSet::new();
        for op in ops {
            match op {
                Op::PutReservation(id, _) | Op::CancelReservation(id) => {
                    reservations.insert(id.as_str());
                }
                Op::PutOrder(id, i) => {
                    orders.insert(id.as_str());
                    if let Some(r) = &i.reservation_id {
                        reservations.insert(r.as_str());
                    }
                }
                Op::PatchOrder(id, _)
                | Op::Checkout(id)
                | Op::Checkin(id, _)
                | Op::UndoCheckout(id) => {
                    orders.insert(id.as_str());
                }
                Op::PutItem(id, _) => {
                    items.insert(id.as_str());
                }
                Op::PutContact(id, _) => {
                    contacts.insert(id.as_str());
                }
                Op::PutUnitRental(id, _) => {
                    rentals.insert(id.as_str());
                }
                Op::PutInvoice(id, i) => {
                    invoices.insert(id.as_str());
                    rentals.insert(i.unit_rental_id.as_str());
                }
                Op::PostEvent(..) => {}
            }
        }
        fn v(s: BTreeSet<&str>) -> Vec<&str> {
            s.into_iter().collect()
        }
        let (reservations, orders, items) = (v(reservations), v(orders), v(items));
        let (contacts, rentals, invoices) = (v(contacts), v(rentals), v(invoices));
        let found = db::load_reservations(self.reader()?, &reservations).await?;
        self.reservations
            .loaded(&reservations, found, |r| r.id.as_str());
        let found = db::load_orders(self.reader()?, &orders).await?;
        self.orders.loaded(&orders, found, |r| r.id.as_str());
        let found = db::load_items(self.reader()?, &items).await?;
        self.items.loaded(&items, found, |r| r.id.as_str());
        let found = db::load_contacts(self.reader()?, &contacts).await?;
        self.contacts.loaded(&contacts, found, |r| r.id.as_str());
        let found = db::load_unit_rentals(self.reader()?, &rentals).await?;
        self.rentals.loaded(&rentals, found, |r| r.id.as_str());
        let found = db::load_invoices(self.reader()?, &invoices).await?;
        self.invoices.loaded(&invoices, found, |r| r.id.as_str());
        self.load_timers("reservation", &reservations).await?;
        self.load_timers("order", &orders).await?;
        self.load_timers("item", &items).await?;
        self.load_timers("invoice", &invoices).await?;
        Ok(())
    }

    /// Reads the pending and done timers of the `kind` entities `ids` not read yet.
    async fn load_timers(&mut self, kind: &'static str, ids: &[&str]) -> Result<(), StoreError> {
        let ids: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !self.timers.contains_key(&(kind, id.to_string())))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        for id in &ids {
            self.timers
                .insert((kind, id.to_string()), EntityTimers::default());
        }
        for row in timers::plan_rows_of(self.reader()?, kind, &ids).await? {
            let Some(t) = self.timers.get_mut(&(kind, row.entity_id.clone())) else {
                continue;
            };
            if row.pending {
                t.pending.push(Pending {
                    slot: Slot::Stored(row.id),
                    rule: row.rule,
                    anchor_at: row.anchor_at,
                    fire_at: row.fire_at,
                });
            } else {
                t.done.insert((row.rule, row.fire_at.timestamp_millis()));
            }
        }
        Ok(())
    }

    /// Plans `subject`'s timers against what the transaction holds of them.
    async fn replan(&mut self, subject: Subject<'_>) -> Result<(), StoreError> {
        let (kind, id) = subject.timer_key();
        self.load_timers(kind, &[id]).await?;
        let key = (kind, id.to_string());
        let planner = self.planner;
        let now = self.now;
        let Some(et) = self.timers.get_mut(&key) else {
            return Err(StoreError::Corrupt(format!(
                "timers of {kind} {id} not read"
            )));
        };
        let pending: Vec<PendingTimer<'_>> = et
            .pending
            .iter()
            .map(|p| PendingTimer {
                rule: &p.rule,
                anchor_at: p.anchor_at,
                fire_at: p.fire_at,
            })
            .collect();
        let done = &et.done;
        let plan = planner.plan(&subject, now, &pending, |rule, at| {
            done.contains(&(rule.to_string(), at.timestamp_millis()))
        });
        drop(pending);
        let mut cancel = plan.cancel;
        cancel.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, reason) in cancel {
            let p = et.pending.remove(i);
            match p.slot {
                Slot::Stored(id) => self.cancels.push((id, reason)),
                Slot::New(n) => {
                    let row = &mut self.new_timers[n];
                    row.state = TimerState::Cancelled;
                    row.reason = Some(reason);
                }
            }
        }
        for t in plan.add {
            let rule = &planner.rules[t.rule];
            let state = match &t.skipped {
                Some(_) => {
                    et.done
                        .insert((rule.name.clone(), t.fire_at.timestamp_millis()));
                    TimerState::Skipped
                }
                None => {
                    et.pending.push(Pending {
                        slot: Slot::New(self.new_timers.len()),
                        rule: rule.name.clone(),
                        anchor_at: t.anchor_at,
                        fire_at: t.fire_at,
                    });
                    TimerState::Pending
                }
            };
            self.new_timers.push(NewRow {
                kind,
                entity_id: id.to_string(),
                rule: t.rule,
                anchor_at: t.anchor_at,
                fire_at: t.fire_at,
                state,
                reason: t.skipped,
            });
        }
        self.wake |= plan.wake;
        Ok(())
    }

    /// Writes what the ops changed in `tx`; returns the events to write through the
    /// outbox, whether a timer was planned within the horizon and how many timers were
    /// written.
    async fn flush(self, tx: &mut Tx) -> Result<(Vec<NewEvent>, bool, usize), StoreError> {
        db::save_reservations(tx, &self.reservations.changed()).await?;
        db::save_orders(tx, &self.orders.changed()).await?;
        db::save_items(tx, &self.items.changed()).await?;
        db::save_contacts(tx, &self.contacts.changed()).await?;
        db::save_unit_rentals(tx, &self.rentals.changed()).await?;
        db::save_invoices(tx, &self.invoices.changed()).await?;
        // Cancelled first: a cancelled timer lets go of its moment, which a timer
        // planned again for the same moment takes.
        timers::close_many(tx, &self.cancels, TimerState::Cancelled, self.now).await?;
        let rules = &self.planner.rules;
        let rows: Vec<TimerRow<'_>> = self
            .new_timers
            .iter()
            .map(|r| {
                let rule = &rules[r.rule];
                TimerRow {
                    timer: NewTimer {
                        entity_kind: r.kind,
                        entity_id: &r.entity_id,
                        rule: &rule.name,
                        event_type: &rule.event_type,
                        anchor_at: r.anchor_at,
                        fire_at: r.fire_at,
                    },
                    state: r.state,
                    reason: r.reason.clone(),
                }
            })
            .collect();
        timers::insert_many(tx, &rows, self.now).await?;
        let planned = rows.len();
        drop(rows);
        Ok((self.events, self.wake, planned))
    }

    fn emit(
        &mut self,
        event_type: &str,
        kind: EntityKind,
        id: &str,
        data: &impl Serialize,
    ) -> usize {
        self.events
            .push(NewEvent::immediate(event_type, kind.as_str(), id, data));
        self.events.len() - 1
    }

    async fn apply(&mut self, op: &Op) -> Result<Staged, ServiceError> {
        match op {
            Op::PutReservation(id, input) => self.put_reservation(id, input).await,
            Op::CancelReservation(id) => self.cancel_reservation(id).await,
            Op::PutOrder(id, input) => self.put_order(id, input).await,
            Op::PatchOrder(id, due_at) => {
                let mut entity = self.existing_order(id).await?;
                if !entity.set_due(*due_at, self.now)? {
                    return Ok(unchanged(Entity::Order(entity)));
                }
                self.finish_order(entity, "order.update", None, false).await
            }
            Op::Checkout(id) => self.checkout(id).await,
            Op::Checkin(id, input) => {
                let mut entity = self.existing_order(id).await?;
                let checked_in = entity.checkin(input.item_ids.as_deref(), self.now)?;
                // Receivers need to know what this check-in covered, and whether it
                // was partial.
                let extra = json!({
                    "checked_in_item_ids": checked_in,
                    "partial": entity.status != OrderStatus::Closed,
                });
                self.finish_order(entity, "order.checkin", Some(extra), false)
                    .await
            }
            Op::UndoCheckout(id) => {
                let mut entity = self.existing_order(id).await?;
                entity.undo_checkout(self.now)?;
                self.finish_order(entity, "order.undocheckout", None, false)
                    .await
            }
            Op::PutItem(id, input) => self.put_item(id, input).await,
            Op::PutContact(id, input) => {
                let (entity, event_type, created) = match self.contact(id).await? {
                    Some(existing) if existing.matches(input) => {
                        return Ok(unchanged(Entity::Contact(existing)));
                    }
                    Some(mut existing) => {
                        existing.update(input.clone(), self.now);
                        (existing, "contact.update", false)
                    }
                    None => (
                        Contact::create(id, input.clone(), self.now),
                        "contact.create",
                        true,
                    ),
                };
                self.contacts.put(id, entity.clone());
                let event = self.emit(event_type, EntityKind::Contact, id, &entity);
                Ok(staged(Entity::Contact(entity), created, event))
            }
            Op::PutUnitRental(id, input) => {
                let (entity, created) = match self.rental(id).await? {
                    Some(existing) if existing.matches(input) => {
                        return Ok(unchanged(Entity::UnitRental(existing)));
                    }
                    Some(mut existing) => {
                        existing.update(input.clone(), self.now);
                        (existing, false)
                    }
                    None => (UnitRental::create(id, input.clone(), self.now), true),
                };
                self.rentals.put(id, entity.clone());
                let event = self.emit("unitRental.updated", EntityKind::UnitRental, id, &entity);
                Ok(staged(Entity::UnitRental(entity), created, event))
            }
            Op::PutInvoice(id, input) => self.put_invoice(id, input).await,
            Op::PostEvent(ev) => {
                self.events.push(ev.clone());
                Ok(staged(Entity::Event, true, self.events.len() - 1))
            }
        }
    }

    async fn put_reservation(
        &mut self,
        id: &str,
        input: &crate::domain::reservation::ReservationInput,
    ) -> Result<Staged, ServiceError> {
        let (entity, event_type, created) = match self.reservation(id).await? {
            Some(existing) if existing.matches(input) => {
                return Ok(unchanged(Entity::Reservation(existing)));
            }
            Some(mut existing) => {
                existing.update(input.clone(), self.now)?;
                (existing, "reservation.update", false)
            }
            None => (
                Reservation::create(id, input.clone(), self.now),
                "reservation.reserve",
                true,
            ),
        };
        self.reservations.put(id, entity.clone());
        let event = self.emit(event_type, EntityKind::Reservation, id, &entity);
        self.replan(Subject::Reservation(&entity)).await?;
        Ok(staged(Entity::Reservation(entity), created, event))
    }

    async fn cancel_reservation(&mut self, id: &str) -> Result<Staged, ServiceError> {
        let mut entity = self
            .reservation(id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("no reservation {id}")))?;
        entity.cancel(self.now)?;
        self.reservations.put(id, entity.clone());
        let event = self.emit("reservation.cancel", EntityKind::Reservation, id, &entity);
        self.replan(Subject::Reservation(&entity)).await?;
        Ok(staged(Entity::Reservation(entity), false, event))
    }

    async fn put_order(
        &mut self,
        id: &str,
        input: &crate::domain::order::OrderInput,
    ) -> Result<Staged, ServiceError> {
        if let Some(rid) = &input.reservation_id
            && self.reservation(rid).await?.is_none()
        {
            return Err(
                DomainError::invalid("reservation_id", format!("no reservation {rid}")).into(),
            );
        }
        let (entity, event_type, created) = match self.order(id).await? {
            Some(existing) if existing.matches(input) => {
                return Ok(unchanged(Entity::Order(existing)));
            }
            Some(mut existing) => {
                existing.update(input.clone(), self.now)?;
                (existing, "order.update", false)
            }
            None => (
                Order::create(id, input.clone(), self.now),
                "order.create",
                true,
            ),
        };
        self.finish_order(entity, event_type, None, created).await
    }

    /// The order every change to an existing order starts from.
    async fn existing_order(&mut self, id: &str) -> Result<Order, ServiceError> {
        Ok(self
            .order(id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("no order {id}")))?)
    }

    async fn checkout(&mut self, id: &str) -> Result<Staged, ServiceError> {
        let mut entity = self.existing_order(id).await?;
        entity.checkout(self.now)?;
        // Checking out an order made from a reservation is its pickup: the
        // reservation's pickup reminders stop.
        if let Some(rid) = &entity.reservation_id
            && let Some(mut reservation) = self.reservation(rid).await?
        {
            reservation.pick_up(self.now);
            self.reservations.put(rid, reservation.clone());
            self.replan(Subject::Reservation(&reservation)).await?;
        }
        self.finish_order(entity, "order.checkout", None, false)
            .await
    }

    /// The end of every change to an order: keep it, emit `event_type` carrying the
    /// order (with `extra` fields), re-plan its timers.
    async fn finish_order(
        &mut self,
        entity: Order,
        event_type: &str,
        extra: Option<Value>,
        created: bool,
    ) -> Result<Staged, ServiceError> {
        let id = entity.id.clone();
        self.orders.put(&id, entity.clone());
        let event = match extra {
            None => self.emit(event_type, EntityKind::Order, &id, &entity),
            Some(Value::Object(extra)) => {
                let mut data = to_value(&entity)?;
                if let Value::Object(m) = &mut data {
                    m.extend(extra);
                }
                self.emit(event_type, EntityKind::Order, &id, &data)
            }
            Some(other) => self.emit(event_type, EntityKind::Order, &id, &other),
        };
        self.replan(Subject::Order(&entity)).await?;
        Ok(staged(Entity::Order(entity), created, event))
    }

    async fn put_item(
        &mut self,
        id: &str,
        input: &crate::domain::item::ItemInput,
    ) -> Result<Staged, ServiceError> {
        let (mut entity, event_type, created) = match self.item(id).await? {
            Some(existing) if existing.matches(input) => {
                return Ok(unchanged(Entity::Item(existing)));
            }
            Some(mut existing) => {
                existing.update(input.clone(), self.now);
                (existing, "item.update", false)
            }
            None => (
                Item::create(id, input.clone(), self.now),
                "item.create",
                true,
            ),
        };
        // An expired item whose expiry is cleared or moved into the future is unexpired.
        let unexpire = entity.expired && entity.expires_at.is_none_or(|at| at > self.now);
        if unexpire {
            entity.expired = false;
        }
        self.items.put(id, entity.clone());
        let event = self.emit(event_type, EntityKind::Item, id, &entity);
        if unexpire {
            self.emit("item.undoexpire", EntityKind::Item, id, &entity);
        }
        self.replan(Subject::Item(&entity)).await?;
        Ok(staged(Entity::Item(entity), created, event))
    }

    async fn put_invoice(
        &mut self,
        id: &str,
        input: &crate::domain::unit_rental::InvoiceInput,
    ) -> Result<Staged, ServiceError> {
        let rental = self.rental(&input.unit_rental_id).await?.ok_or_else(|| {
            DomainError::invalid(
                "unit_rental_id",
                format!(
                    "no unit rental {} (PUT /v1/unit-rentals/{{id}} first)",
                    input.unit_rental_id
                ),
            )
        })?;
        let (entity, created, event) = match self.invoice(id).await? {
            Some(existing) if existing.matches(input) => {
                return Ok(unchanged(Entity::Invoice(existing)));
            }
            Some(mut existing) => {
                let old_state = existing.state;
                existing.update(input.clone(), self.now)?;
                self.invoices.put(id, existing.clone());
                // A due-date or data change alone emits nothing immediate: Storeganise's
                // catalogue has no such event; the invoice's timers are re-planned.
                let mut event = None;
                if existing.state != old_state {
                    let mut data = to_value(&existing)?;
                    if let Value::Object(m) = &mut data {
                        m.insert("previous_state".into(), json!(old_state.as_str()));
                    }
                    event =
                        Some(self.emit("invoice.state.updated", EntityKind::Invoice, id, &data));
                }
                (existing, false, event)
            }
            None => {
                let invoice = Invoice::create(id, input.clone(), self.now);
                self.invoices.put(id, invoice.clone());
                // The entity of a unitRental.* event is the rental; the invoice rides along.
                let mut data = to_value(&rental)?;
                if let Value::Object(m) = &mut data {
                    m.insert("invoice".into(), json!(&invoice));
                }
                let event = self.emit(
                    "unitRental.invoice.created",
                    EntityKind::UnitRental,
                    &rental.id,
                    &data,
                );
                (invoice, true, Some(event))
            }
        };
        self.replan(Subject::Invoice(&entity, &rental)).await?;
        self.unmark_overdue_if_settled(rental, &entity).await?;
        Ok(Staged {
            entity: Entity::Invoice(entity),
            created,
            event,
        })
    }

    /// A rental marked overdue stops being overdue once none of its invoices is unpaid
    /// past its due date plus grace (`unitRental.unmarkOverdue`, Storeganise's event).
    async fn unmark_overdue_if_settled(
        &mut self,
        mut rental: UnitRental,
        changed: &Invoice,
    ) -> Result<(), ServiceError> {
        if !rental.overdue {
            return Ok(());
        }
        let grace = self.planner.invoice_grace();
        let now = self.now;
        // The rental's invoices as this transaction holds them: the stored ones, each
        // as changed here if it was, and those created here.
        let mut invoices: HashMap<String, Invoice> =
            db::load_invoices_of_rental(self.reader()?, &rental.id)
                .await?
                .into_iter()
                .map(|i| (i.id.clone(), i))
                .collect();
        for (id, row) in &self.invoices.rows {
            if let Some(i) = row
                && i.unit_rental_id == rental.id
            {
                invoices.insert(id.clone(), i.clone());
            }
        }
        let still_overdue = invoices
            .values()
            .any(|i| i.state.is_unpaid() && i.due_at + grace <= now);
        if still_overdue {
            return Ok(());
        }
        rental.overdue = false;
        rental.updated_at = now;
        self.rentals.put(&rental.id.clone(), rental.clone());
        let mut data = to_value(&rental)?;
        if let Value::Object(m) = &mut data {
            m.insert("invoice".into(), json!(changed));
        }
        self.emit(
            "unitRental.unmarkOverdue",
            EntityKind::UnitRental,
            &rental.id,
            &data,
        );
        Ok(())
    }
}

/// Ops a group applied ahead applies between two turns it leaves to the write beside
/// it (see [`Prepared::write`]). Both run in one task: applying reads nothing, so
/// without a pause it would run to its end while the write's next statement waits to
/// be built and SQLite's thread sits idle.
const AHEAD_YIELD_EVERY: usize = 16;

/// What [`Work::reader`] answers without a transaction.
fn unread() -> StoreError {
    StoreError::Corrupt("a group applied ahead needed a read of its own".into())
}

fn unchanged(entity: Entity) -> Staged {
    Staged {
        entity,
        created: false,
        event: None,
    }
}

fn staged(entity: Entity, created: bool, event: usize) -> Staged {
    Staged {
        entity,
        created,
        event: Some(event),
    }
}
