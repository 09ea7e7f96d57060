//! The retention purge: what is settled and old enough goes.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, to_ms};

/// Deletes, in one transaction, what is settled and older than `cutoff`: fired,
/// cancelled and skipped timers; events created before it whose deliveries are all
/// finished (succeeded or failed), with those deliveries and their attempts; alerts sent
/// before it. Pending work is never purged, however old. Returns the rows deleted.
pub async fn purge(store: &Store, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let c = to_ms(cutoff);
    let mut tx = store.begin().await?;
    let mut n = 0;
    // Events whose every delivery is finished (or that had none), old enough.
    let old_events = "SELECT e.id FROM events e WHERE e.created_at < $1 AND e.fanned_out = 1
        AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending')";
    for sql in [
        format!(
            "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id IN ({old_events}))"
        ),
        format!("DELETE FROM deliveries WHERE event_id IN ({old_events})"),
        format!("DELETE FROM events WHERE id IN ({old_events})"),
        "DELETE FROM timers WHERE state <> 'pending' AND updated_at < $1".to_string(),
        "DELETE FROM alerts WHERE sent_at IS NOT NULL AND sent_at < $1".to_string(),
    ] {
        n += sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(c)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}
