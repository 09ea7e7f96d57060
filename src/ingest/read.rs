//! Reading one entity as it is now, for the API's `GET /v1/{kind}/{id}`.

use super::Ingest;
use crate::domain::contact::Contact;
use crate::domain::item::Item;
use crate::domain::order::Order;
use crate::domain::reservation::Reservation;
use crate::domain::unit_rental::{Invoice, UnitRental};
use crate::domain::{DomainError, input};
use crate::error::ServiceError;
use crate::store::entities as db;

/// `Ingest::$name(id)`: the entity with this id, or `not_found` naming it as `$what`.
macro_rules! reader {
    ($name:ident, $load:path, $what:literal, $entity:ty) => {
        pub async fn $name(&self, id: &str) -> Result<$entity, ServiceError> {
            input::check_id("id", id)?;
            let mut tx = self.store.begin_read().await?;
            $load(&mut tx, id).await?.ok_or_else(|| {
                DomainError::not_found(format!(concat!("no ", $what, " {}"), id)).into()
            })
        }
    };
}

impl Ingest {
    reader!(
        reservation,
        db::load_reservation,
        "reservation",
        Reservation
    );
    reader!(order, db::load_order, "order", Order);
    reader!(unit_rental, db::load_unit_rental, "unit rental", UnitRental);
    reader!(invoice, db::load_invoice, "invoice", Invoice);
    reader!(item, db::load_item, "item", Item);
    reader!(contact, db::load_contact, "contact", Contact);
}
