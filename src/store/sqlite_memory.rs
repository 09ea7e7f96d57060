//! SQLite's memory statistics, turned off before the first connection opens.
//!
//! With statistics on (SQLite's default), every `sqlite3_malloc` and `sqlite3_free`
//! takes one process-wide mutex to keep the counters. sqlx copies each result value
//! with SQLite's allocator on the connection's own thread and frees it wherever the row
//! is dropped (a tokio worker), so under load the threads queue on that mutex (futex
//! waits showed up in profiles around every fetched row). duehook never reads the
//! statistics.

use std::sync::Once;

static UNTRACK: Once = Once::new();

/// Turns SQLite's memory statistics off, once per process, before SQLite initialises.
/// Too late (SQLite already initialised, as when another library opened a database
/// first) is harmless: the statistics stay on and nothing else changes.
pub fn untrack() {
    UNTRACK.call_once(|| {
        // SAFETY: `sqlite3_config` is called before any connection of this process is
        // opened (`Store::connect` calls this first) and never concurrently (`Once`);
        // SQLITE_CONFIG_MEMSTATUS takes one int argument. Called after initialisation
        // it returns SQLITE_MISUSE and changes nothing.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS, 0i32)
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(
                rc,
                "SQLite memory statistics stay on (SQLite already initialised)"
            );
        }
    });
}
