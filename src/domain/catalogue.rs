//! The event-type catalogue: every type duehook can emit or accept through
//! `POST /v1/events`, with where it comes from and what triggers it.
//!
//! Names follow the products users migrate from (Cheqroom's items, contacts,
//! reservations and check-outs; Storeganise's unit rentals and invoices; Checkfront's
//! bookings), so an existing receiver keeps working when pointed at duehook.

/// How an event comes to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Emitted at once when the application reports a change.
    Immediate,
    /// Emitted by the scheduler when a moment arrives.
    Scheduled,
}

#[derive(Debug, Clone, Copy)]
pub struct EventType {
    pub name: &'static str,
    pub trigger: Trigger,
    /// The product whose catalogue names this type (`duehook` for our own additions).
    pub origin: &'static str,
    pub description: &'static str,
}

const fn imm(name: &'static str, origin: &'static str, description: &'static str) -> EventType {
    EventType {
        name,
        trigger: Trigger::Immediate,
        origin,
        description,
    }
}

const fn sched(name: &'static str, origin: &'static str, description: &'static str) -> EventType {
    EventType {
        name,
        trigger: Trigger::Scheduled,
        origin,
        description,
    }
}

pub const CATALOGUE: &[EventType] = &[
    // Cheqroom: items
    imm("item.create", "cheqroom", "An item was created"),
    imm(
        "item.update",
        "cheqroom",
        "A system field on an item was updated",
    ),
    imm(
        "item.duplicate",
        "cheqroom",
        "An item was created by duplicating another item",
    ),
    imm(
        "item.setfield",
        "cheqroom",
        "A custom field on an item was updated",
    ),
    imm(
        "item.clearfield",
        "cheqroom",
        "A custom field on an item was cleared",
    ),
    imm("item.setflag", "cheqroom", "An item flag was set"),
    imm("item.clearflag", "cheqroom", "An item flag was cleared"),
    sched("item.expire", "cheqroom", "An item reached its expiry date"),
    imm(
        "item.undoexpire",
        "cheqroom",
        "An expired item was unexpired (expiry cleared or moved later)",
    ),
    imm(
        "item.changelocation",
        "cheqroom",
        "An item's location was updated",
    ),
    imm(
        "item.addcomment",
        "cheqroom",
        "A comment was added to an item",
    ),
    imm(
        "item.takecustody",
        "cheqroom",
        "A contact took custody of an item",
    ),
    imm(
        "item.transfercustody",
        "cheqroom",
        "Custody of an item was transferred to another contact",
    ),
    imm(
        "item.releasecustody",
        "cheqroom",
        "A contact released custody of an item",
    ),
    // Cheqroom: contacts
    imm("contact.create", "cheqroom", "A contact was created"),
    imm("contact.update", "cheqroom", "A contact was updated"),
    imm(
        "contact.addcomment",
        "cheqroom",
        "A comment was added to a contact",
    ),
    imm("contact.block", "cheqroom", "A contact was blocked"),
    imm("contact.undoblock", "cheqroom", "A contact was unblocked"),
    // Cheqroom: reservations
    imm("reservation.reserve", "cheqroom", "A reservation was made"),
    imm(
        "reservation.cancel",
        "cheqroom",
        "A reservation was cancelled",
    ),
    sched(
        "reservation.due_in_1_hour",
        "cheqroom",
        "A reservation is due for pickup in 1 hour",
    ),
    sched(
        "reservation.due_in_1_day",
        "cheqroom",
        "A reservation is due for pickup in 1 day",
    ),
    sched(
        "reservation.overdue_1_hour",
        "cheqroom",
        "A reservation was due for pickup 1 hour ago",
    ),
    sched(
        "reservation.overdue_1_day",
        "cheqroom",
        "A reservation was due for pickup 1 day ago",
    ),
    imm(
        "reservation.update",
        "duehook",
        "A reservation's pickup, return, items or data changed",
    ),
    // Cheqroom: check-outs
    imm("order.checkout", "cheqroom", "A check-out was checked out"),
    imm(
        "order.checkin",
        "cheqroom",
        "A check-out was (partially) checked in",
    ),
    imm("order.undocheckout", "cheqroom", "A check-out was undone"),
    sched(
        "order.due_in_1_hour",
        "cheqroom",
        "A check-out is due in 1 hour",
    ),
    sched(
        "order.due_in_1_day",
        "cheqroom",
        "A check-out is due in 1 day",
    ),
    sched(
        "order.overdue_1_hour",
        "cheqroom",
        "A check-out was due 1 hour ago",
    ),
    sched(
        "order.overdue_1_day",
        "cheqroom",
        "A check-out was due 1 day ago",
    ),
    imm(
        "order.create",
        "duehook",
        "A check-out was created (not handed out yet)",
    ),
    imm(
        "order.update",
        "duehook",
        "A check-out's due date, items or data changed",
    ),
    sched(
        "order.overdue_digest",
        "duehook",
        "Daily digest at a configured local time listing every check-out still overdue",
    ),
    // Storeganise: unit rentals and invoices
    sched(
        "unitRental.markOverdue",
        "storeganise",
        "An invoice of the unit rental became past due",
    ),
    imm(
        "unitRental.unmarkOverdue",
        "storeganise",
        "The unit rental's overdue status was removed (its last overdue invoice was paid)",
    ),
    imm(
        "unitRental.updated",
        "storeganise",
        "A unit rental's details changed",
    ),
    imm(
        "unitRental.invoice.created",
        "storeganise",
        "An invoice was created for a unit rental",
    ),
    imm(
        "invoice.state.updated",
        "storeganise",
        "An invoice's state (draft, sent, paid, …) changed",
    ),
    imm(
        "invoice.payments.updated",
        "storeganise",
        "An invoice's payments were updated",
    ),
    imm("invoice.deleted", "storeganise", "An invoice was deleted"),
    // Checkfront: bookings
    imm("booking.create", "checkfront", "A booking was created"),
    imm("booking.update", "checkfront", "A booking was updated"),
];

/// One entry of a running service's catalogue: the built-in types plus those that
/// configured rules add (e.g. `order.overdue_3_days`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub trigger: Trigger,
    pub origin: String,
    pub description: String,
}

/// The catalogue of a running service.
#[derive(Debug, Clone)]
pub struct Catalogue {
    entries: Vec<Entry>,
}

impl Catalogue {
    /// The built-in types plus `(event type, description)` pairs from configured rules.
    pub fn new<'a>(extra: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        let mut entries: Vec<Entry> = CATALOGUE
            .iter()
            .map(|t| Entry {
                name: t.name.to_string(),
                trigger: t.trigger,
                origin: t.origin.to_string(),
                description: t.description.to_string(),
            })
            .collect();
        for (name, description) in extra {
            if !entries.iter().any(|e| e.name == name) {
                entries.push(Entry {
                    name: name.to_string(),
                    trigger: Trigger::Scheduled,
                    origin: "config".to_string(),
                    description,
                });
            }
        }
        Self { entries }
    }

    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_described() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|t| t.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate event type");
        assert!(CATALOGUE.iter().all(|t| !t.description.is_empty()));
        assert!(CATALOGUE.iter().any(|t| t.name == "order.overdue_1_day"));
        assert!(!CATALOGUE.iter().any(|t| t.name == "order.overdue_2_days"));
    }
}
