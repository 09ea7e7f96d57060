//! Check-outs ("orders" in Cheqroom's words): items handed to a contact until `due_at`.
//!
//! Life cycle: `open` (created, nothing handed out) → `checked_out` → `closed` when the
//! last item is checked in. A partial check-in keeps the order `checked_out`: the items
//! still out are still due. `undo-checkout` returns a checked-out order to `open`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DomainError, input, instant};

/// What `PUT /v1/orders/{id}` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderInput {
    pub contact_id: String,
    pub item_ids: Vec<String>,
    pub due_at: DateTime<Utc>,
    pub reservation_id: Option<String>,
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    pub data: Option<Value>,
}

impl OrderInput {
    pub fn validate(&self) -> Result<(), DomainError> {
        input::check_id("contact_id", &self.contact_id)?;
        if self.item_ids.is_empty() {
            return Err(DomainError::invalid(
                "item_ids",
                "a check-out needs at least one item",
            ));
        }
        input::check_ids("item_ids", &self.item_ids)?;
        if let Some(r) = &self.reservation_id {
            input::check_id("reservation_id", r)?;
        }
        input::check_timezone("timezone", self.timezone.as_deref())?;
        input::check_data(&self.data)
    }
}

/// What `POST /v1/orders/{id}/checkin` asks for (all items still out when `item_ids`
/// is `None`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckinInput {
    pub item_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Open,
    CheckedOut,
    Closed,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::CheckedOut => "checked_out",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    pub id: String,
    #[serde(serialize_with = "instant::serialize_option")]
    pub checked_in_at: Option<DateTime<Utc>>,
}

/// An order as it is stored and as events carry it in `data`. The API answers with the
/// same fields: its body of the same name in `crate::http::api::ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub contact_id: String,
    pub item_ids: Vec<String>,
    pub items: Vec<OrderItem>,
    #[serde(serialize_with = "instant::serialize")]
    pub due_at: DateTime<Utc>,
    pub reservation_id: Option<String>,
    pub timezone: Option<String>,
    pub status: OrderStatus,
    /// Items handed out and not yet back (0 unless checked out).
    pub items_out: usize,
    #[serde(serialize_with = "instant::serialize_option")]
    pub checked_out_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "instant::serialize_option")]
    pub closed_at: Option<DateTime<Utc>>,
    pub data: Value,
    #[serde(serialize_with = "instant::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "instant::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl Order {
    pub fn create(id: &str, input: OrderInput, now: DateTime<Utc>) -> Self {
        let items = input
            .item_ids
            .iter()
            .map(|id| OrderItem {
                id: id.clone(),
                checked_in_at: None,
            })
            .collect();
        Self {
            id: id.to_string(),
            contact_id: input.contact_id,
            item_ids: input.item_ids,
            items,
            due_at: input::millis(input.due_at),
            reservation_id: input.reservation_id,
            timezone: input.timezone,
            status: OrderStatus::Open,
            items_out: 0,
            checked_out_at: None,
            closed_at: None,
            data: input::data_or_empty(input.data),
            created_at: now,
            updated_at: now,
        }
    }

    pub fn matches(&self, input: &OrderInput) -> bool {
        self.contact_id == input.contact_id
            && self.item_ids == input.item_ids
            && self.due_at == input::millis(input.due_at)
            && self.reservation_id == input.reservation_id
            && self.timezone == input.timezone
            && self.data == input::data_or_empty(input.data.clone())
    }

    /// Applies a changed PUT. Items can change only while the order is open; a closed
    /// order cannot change at all.
    pub fn update(&mut self, input: OrderInput, now: DateTime<Utc>) -> Result<(), DomainError> {
        match self.status {
            OrderStatus::Closed => {
                return Err(DomainError::conflict(format!(
                    "order {} is closed and can no longer change",
                    self.id
                )));
            }
            OrderStatus::CheckedOut if input.item_ids != self.item_ids => {
                return Err(DomainError::Conflict {
                    detail: format!(
                        "order {} is checked out: its items cannot change (check in, or undo the check-out first)",
                        self.id
                    ),
                });
            }
            _ => {}
        }
        if input.item_ids != self.item_ids {
            self.items = input
                .item_ids
                .iter()
                .map(|id| OrderItem {
                    id: id.clone(),
                    checked_in_at: None,
                })
                .collect();
        }
        self.contact_id = input.contact_id;
        self.item_ids = input.item_ids;
        self.due_at = input::millis(input.due_at);
        self.reservation_id = input.reservation_id;
        self.timezone = input.timezone;
        self.data = input::data_or_empty(input.data);
        self.updated_at = now;
        Ok(())
    }

    /// A new due date (`PATCH`); refused once the order is closed.
    pub fn set_due(
        &mut self,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, DomainError> {
        if self.status == OrderStatus::Closed {
            return Err(DomainError::conflict(format!(
                "order {} is closed: its due date can no longer change",
                self.id
            )));
        }
        let due_at = input::millis(due_at);
        if self.due_at == due_at {
            return Ok(false);
        }
        self.due_at = due_at;
        self.updated_at = now;
        Ok(true)
    }

    pub fn checkout(&mut self, now: DateTime<Utc>) -> Result<(), DomainError> {
        if self.status != OrderStatus::Open {
            return Err(DomainError::conflict(format!(
                "order {} is {}: only an open order can be checked out",
                self.id,
                self.status.as_str()
            )));
        }
        self.status = OrderStatus::CheckedOut;
        self.checked_out_at = Some(now);
        for item in &mut self.items {
            item.checked_in_at = None;
        }
        self.items_out = self.items.len();
        self.updated_at = now;
        Ok(())
    }

    /// Checks in `item_ids` (all items still out when `None`). Returns the ids checked in.
    pub fn checkin(
        &mut self,
        item_ids: Option<&[String]>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, DomainError> {
        if self.status != OrderStatus::CheckedOut {
            return Err(DomainError::conflict(format!(
                "order {} is {}: only a checked-out order can be checked in",
                self.id,
                self.status.as_str()
            )));
        }
        let wanted: Vec<String> = match item_ids {
            None => self
                .items
                .iter()
                .filter(|i| i.checked_in_at.is_none())
                .map(|i| i.id.clone())
                .collect(),
            Some(ids) => {
                if ids.is_empty() {
                    return Err(DomainError::invalid(
                        "item_ids",
                        "name at least one item, or leave item_ids out to check in everything",
                    ));
                }
                input::check_ids("item_ids", ids)?;
                for (i, id) in ids.iter().enumerate() {
                    match self.items.iter().find(|it| &it.id == id) {
                        None => {
                            return Err(DomainError::invalid(
                                format!("item_ids[{i}]"),
                                format!("item `{id}` is not part of order {}", self.id),
                            ));
                        }
                        Some(it) if it.checked_in_at.is_some() => {
                            return Err(DomainError::conflict(format!(
                                "item `{id}` of order {} is already checked in",
                                self.id
                            )));
                        }
                        Some(_) => {}
                    }
                }
                ids.to_vec()
            }
        };
        for item in &mut self.items {
            if wanted.contains(&item.id) {
                item.checked_in_at = Some(now);
            }
        }
        self.items_out = self
            .items
            .iter()
            .filter(|i| i.checked_in_at.is_none())
            .count();
        if self.items_out == 0 {
            self.status = OrderStatus::Closed;
            self.closed_at = Some(now);
        }
        self.updated_at = now;
        Ok(wanted)
    }

    pub fn undo_checkout(&mut self, now: DateTime<Utc>) -> Result<(), DomainError> {
        if self.status != OrderStatus::CheckedOut {
            return Err(DomainError::conflict(format!(
                "order {} is {}: only a checked-out order can be undone",
                self.id,
                self.status.as_str()
            )));
        }
        self.status = OrderStatus::Open;
        self.checked_out_at = None;
        for item in &mut self.items {
            item.checked_in_at = None;
        }
        self.items_out = 0;
        self.updated_at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn order() -> Order {
        let now = Utc
            .with_ymd_and_hms(2030, 1, 1, 9, 0, 0)
            .single()
            .expect("valid");
        Order::create(
            "o1",
            OrderInput {
                contact_id: "c1".into(),
                item_ids: vec!["a".into(), "b".into()],
                due_at: now + chrono::TimeDelta::days(2),
                reservation_id: None,
                timezone: None,
                data: None,
            },
            now,
        )
    }

    #[test]
    fn partial_checkin_keeps_the_order_out() {
        let mut o = order();
        let now = o.created_at;
        assert!(o.checkin(None, now).is_err(), "never checked out");
        o.checkout(now).expect("checkout");
        assert_eq!(o.items_out, 2);
        o.checkin(Some(&["a".to_string()]), now).expect("partial");
        assert_eq!((o.status, o.items_out), (OrderStatus::CheckedOut, 1));
        assert!(o.checkin(Some(&["a".to_string()]), now).is_err(), "twice");
        assert!(
            o.checkin(Some(&["zz".to_string()]), now).is_err(),
            "unknown item"
        );
        assert_eq!(o.checkin(None, now).expect("rest"), vec!["b".to_string()]);
        assert_eq!(o.status, OrderStatus::Closed);
        assert!(o.checkout(now).is_err(), "closed");
    }

    #[test]
    fn undo_returns_to_open() {
        let mut o = order();
        let now = o.created_at;
        assert!(o.undo_checkout(now).is_err());
        o.checkout(now).expect("checkout");
        o.undo_checkout(now).expect("undo");
        assert_eq!(
            (o.status, o.items_out, o.checked_out_at),
            (OrderStatus::Open, 0, None)
        );
    }
}
