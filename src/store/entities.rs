//! Queries for the entity tables. Each entity is stored as its API representation
//! (`body`, JSON) plus the columns the scheduler and admin queries filter on; both are
//! written together from the domain value, so they cannot disagree.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;

use super::{Placeholders, StoreError, Tx, to_ms};
use crate::domain::contact::Contact;
use crate::domain::item::Item;
use crate::domain::order::Order;
use crate::domain::reservation::Reservation;
use crate::domain::unit_rental::{Invoice, UnitRental};

fn to_body(v: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_body<T: DeserializeOwned>(table: &str, id: &str, body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("{table} {id}: {e}")))
}

async fn load_body<T: DeserializeOwned>(
    tx: &mut Tx,
    sql: &'static str,
    table: &str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    let row = sqlx::query(sql)
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| {
        let body: String = r.try_get("body")?;
        from_body(table, id, &body)
    })
    .transpose()
}

pub async fn load_contact(tx: &mut Tx, id: &str) -> Result<Option<Contact>, StoreError> {
    load_body(tx, "SELECT body FROM contacts WHERE id = $1", "contact", id).await
}

pub async fn load_item(tx: &mut Tx, id: &str) -> Result<Option<Item>, StoreError> {
    load_body(tx, "SELECT body FROM items WHERE id = $1", "item", id).await
}

pub async fn save_item(tx: &mut Tx, i: &Item) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO items (id, name, expires_at, expired, body, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, expires_at = excluded.expires_at,
           expired = excluded.expired, body = excluded.body, updated_at = excluded.updated_at",
    )
    .bind(i.id.clone())
    .bind(i.name.clone())
    .bind(i.expires_at.map(to_ms))
    .bind(i64::from(i.expired))
    .bind(to_body(i)?)
    .bind(to_ms(i.created_at))
    .bind(to_ms(i.updated_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Saves many items as [`save_item`] saves one, in multi-row statements (see
/// [`super::statement_chunks`]) instead of one per item.
pub async fn save_items(tx: &mut Tx, items: &[&Item]) -> Result<(), StoreError> {
    tx.execute_chunks(items, |chunk, mut p| {
        let sql = format!(
            "INSERT INTO items (id, name, expires_at, expired, body, created_at, updated_at)
             VALUES {}
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, expires_at = excluded.expires_at,
               expired = excluded.expired, body = excluded.body, updated_at = excluded.updated_at",
            p.rows(chunk.len(), 7)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in chunk {
            q = q
                .bind(i.id.clone())
                .bind(i.name.clone())
                .bind(i.expires_at.map(to_ms))
                .bind(i64::from(i.expired))
                .bind(to_body(i)?)
                .bind(to_ms(i.created_at))
                .bind(to_ms(i.updated_at));
        }
        Ok(q)
    })
    .await
}

pub async fn load_reservation(tx: &mut Tx, id: &str) -> Result<Option<Reservation>, StoreError> {
    load_body(
        tx,
        "SELECT body FROM reservations WHERE id = $1",
        "reservation",
        id,
    )
    .await
}

pub async fn load_order(tx: &mut Tx, id: &str) -> Result<Option<Order>, StoreError> {
    load_body(tx, "SELECT body FROM orders WHERE id = $1", "order", id).await
}

pub async fn load_unit_rental(tx: &mut Tx, id: &str) -> Result<Option<UnitRental>, StoreError> {
    load_body(
        tx,
        "SELECT body FROM unit_rentals WHERE id = $1",
        "unit rental",
        id,
    )
    .await
}

/// Saves unit rentals (insert or update), in multi-row statements.
pub async fn save_unit_rentals(tx: &mut Tx, rentals: &[&UnitRental]) -> Result<(), StoreError> {
    tx.execute_chunks(rentals, |chunk, mut p| {
        let sql = format!(
            "INSERT INTO unit_rentals (id, timezone, overdue, body, created_at, updated_at) VALUES {}
             ON CONFLICT (id) DO UPDATE SET timezone = excluded.timezone, overdue = excluded.overdue,
               body = excluded.body, updated_at = excluded.updated_at",
            p.rows(chunk.len(), 6)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.id.clone())
                .bind(r.timezone.clone())
                .bind(i64::from(r.overdue))
                .bind(to_body(r)?)
                .bind(to_ms(r.created_at))
                .bind(to_ms(r.updated_at));
        }
        Ok(q)
    })
    .await
}

pub async fn load_invoice(tx: &mut Tx, id: &str) -> Result<Option<Invoice>, StoreError> {
    load_body(tx, "SELECT body FROM invoices WHERE id = $1", "invoice", id).await
}

pub async fn load_invoices_of_rental(
    tx: &mut Tx,
    rental_id: &str,
) -> Result<Vec<Invoice>, StoreError> {
    let rows =
        sqlx::query("SELECT id, body FROM invoices WHERE unit_rental_id = $1 ORDER BY due_at, id")
            .bind(rental_id.to_string())
            .fetch_all(&mut **tx)
            .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let body: String = r.try_get("body")?;
            from_body("invoice", &id, &body)
        })
        .collect()
}

/// The stored bodies of the rows of `table` whose ids are among `ids`, in statements
/// of many ids (see [`super::padded`]); ids not stored are absent.
async fn load_bodies<T: DeserializeOwned>(
    tx: &mut Tx,
    table: Table,
    ids: &[&str],
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(super::MAX_ROWS) {
        let sql = format!(
            "SELECT id, body FROM {} WHERE id IN ({})",
            table.name(),
            Placeholders::for_tx(tx).padded_list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in super::padded(chunk) {
            q = q.bind(id.to_string());
        }
        for r in q.fetch_all(&mut **tx).await? {
            let id: String = r.try_get("id")?;
            let body: String = r.try_get("body")?;
            out.push(from_body(table.name(), &id, &body)?);
        }
    }
    Ok(out)
}

/// The entity tables read in bulk (a closed list: table names are never bound).
#[derive(Debug, Clone, Copy)]
enum Table {
    Reservations,
    Orders,
    Items,
    Contacts,
    UnitRentals,
    Invoices,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Reservations => "reservations",
            Table::Orders => "orders",
            Table::Items => "items",
            Table::Contacts => "contacts",
            Table::UnitRentals => "unit_rentals",
            Table::Invoices => "invoices",
        }
    }
}

/// The reservations among `ids` that are stored.
pub async fn load_reservations(tx: &mut Tx, ids: &[&str]) -> Result<Vec<Reservation>, StoreError> {
    load_bodies(tx, Table::Reservations, ids).await
}

/// The orders among `ids` that are stored.
pub async fn load_orders(tx: &mut Tx, ids: &[&str]) -> Result<Vec<Order>, StoreError> {
    load_bodies(tx, Table::Orders, ids).await
}

/// The items among `ids` that are stored.
pub async fn load_items(tx: &mut Tx, ids: &[&str]) -> Result<Vec<Item>, StoreError> {
    load_bodies(tx, Table::Items, ids).await
}

/// The contacts among `ids` that are stored.
pub async fn load_contacts(tx: &mut Tx, ids: &[&str]) -> Result<Vec<Contact>, StoreError> {
    load_bodies(tx, Table::Contacts, ids).await
}

/// The unit rentals among `ids` that are stored.
pub async fn load_unit_rentals(tx: &mut Tx, ids: &[&str]) -> Result<Vec<UnitRental>, StoreError> {
    load_bodies(tx, Table::UnitRentals, ids).await
}

/// The invoices among `ids` that are stored.
pub async fn load_invoices(tx: &mut Tx, ids: &[&str]) -> Result<Vec<Invoice>, StoreError> {
    load_bodies(tx, Table::Invoices, ids).await
}

/// Saves contacts (insert or update), in multi-row statements.
pub async fn save_contacts(tx: &mut Tx, contacts: &[&Contact]) -> Result<(), StoreError> {
    tx.execute_chunks(contacts, |chunk, mut p| {
        let sql = format!(
            "INSERT INTO contacts (id, body, created_at, updated_at) VALUES {}
             ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            p.rows(chunk.len(), 4)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            q = q
                .bind(c.id.clone())
                .bind(to_body(c)?)
                .bind(to_ms(c.created_at))
                .bind(to_ms(c.updated_at));
        }
        Ok(q)
    })
    .await
}

/// Saves reservations (insert or update), in multi-row statements.
pub async fn save_reservations(tx: &mut Tx, rs: &[&Reservation]) -> Result<(), StoreError> {
    tx.execute_chunks(rs, |chunk, mut p| {
        let sql = format!(
            "INSERT INTO reservations (id, contact_id, starts_at, ends_at, timezone, status, body, created_at, updated_at)
             VALUES {}
             ON CONFLICT (id) DO UPDATE SET contact_id = excluded.contact_id, starts_at = excluded.starts_at,
               ends_at = excluded.ends_at, timezone = excluded.timezone, status = excluded.status,
               body = excluded.body, updated_at = excluded.updated_at",
            p.rows(chunk.len(), 9)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.id.clone())
                .bind(r.contact_id.clone())
                .bind(to_ms(r.starts_at))
                .bind(to_ms(r.ends_at))
                .bind(r.timezone.clone())
                .bind(r.status.as_str())
                .bind(to_body(r)?)
                .bind(to_ms(r.created_at))
                .bind(to_ms(r.updated_at));
        }
        Ok(q)
    })
    .await
}

/// Saves orders (insert or update) with their per-item rows, in multi-row statements.
pub async fn save_orders(tx: &mut Tx, orders: &[&Order]) -> Result<(), StoreError> {
    for chunk in super::statement_chunks(orders) {
        let sql = format!(
            "INSERT INTO orders (id, contact_id, due_at, reservation_id, timezone, status, checked_out_at,
               closed_at, body, created_at, updated_at)
             VALUES {}
             ON CONFLICT (id) DO UPDATE SET contact_id = excluded.contact_id, due_at = excluded.due_at,
               reservation_id = excluded.reservation_id, timezone = excluded.timezone, status = excluded.status,
               checked_out_at = excluded.checked_out_at, closed_at = excluded.closed_at,
               body = excluded.body, updated_at = excluded.updated_at",
            Placeholders::for_tx(tx).rows(chunk.len(), 11)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for o in chunk {
            q = q
                .bind(o.id.clone())
                .bind(o.contact_id.clone())
                .bind(to_ms(o.due_at))
                .bind(o.reservation_id.clone())
                .bind(o.timezone.clone())
                .bind(o.status.as_str())
                .bind(o.checked_out_at.map(to_ms))
                .bind(o.closed_at.map(to_ms))
                .bind(to_body(o)?)
                .bind(to_ms(o.created_at))
                .bind(to_ms(o.updated_at));
        }
        q.execute(&mut **tx).await?;
        // Per-item check-in state, queryable by item ("which orders hold item X?"):
        // written anew with the order.
        let sql = format!(
            "DELETE FROM order_items WHERE order_id IN ({})",
            Placeholders::for_tx(tx).padded_list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for o in super::padded(chunk) {
            q = q.bind(o.id.clone());
        }
        q.execute(&mut **tx).await?;
    }
    let items: Vec<(&str, usize, &crate::domain::order::OrderItem)> = orders
        .iter()
        .flat_map(|o| {
            o.items
                .iter()
                .enumerate()
                .map(|(pos, item)| (o.id.as_str(), pos, item))
        })
        .collect();
    for chunk in super::statement_chunks(&items) {
        let sql = format!(
            "INSERT INTO order_items (order_id, item_id, position, checked_in_at) VALUES {}",
            Placeholders::for_tx(tx).rows(chunk.len(), 4)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (order_id, pos, item) in chunk {
            q = q
                .bind(order_id.to_string())
                .bind(item.id.clone())
                .bind(*pos as i64)
                .bind(item.checked_in_at.map(to_ms));
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Saves invoices (insert or update), in multi-row statements.
pub async fn save_invoices(tx: &mut Tx, invoices: &[&Invoice]) -> Result<(), StoreError> {
    tx.execute_chunks(invoices, |chunk, mut p| {
        let sql = format!(
            "INSERT INTO invoices (id, unit_rental_id, due_at, state, body, created_at, updated_at)
             VALUES {}
             ON CONFLICT (id) DO UPDATE SET due_at = excluded.due_at, state = excluded.state,
               body = excluded.body, updated_at = excluded.updated_at",
            p.rows(chunk.len(), 7)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in chunk {
            q = q
                .bind(i.id.clone())
                .bind(i.unit_rental_id.clone())
                .bind(to_ms(i.due_at))
                .bind(i.state.as_str())
                .bind(to_body(i)?)
                .bind(to_ms(i.created_at))
                .bind(to_ms(i.updated_at));
        }
        Ok(q)
    })
    .await
}
