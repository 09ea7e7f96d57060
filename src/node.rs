//! This process as a node of duehook: its id, its registration and heartbeat row, the
//! SQLite single-node lock, and (on PostgreSQL) the LISTEN that wakes this node's driver
//! when another node plans a timer inside the horizon.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Channel ingest notifies (in the planning transaction) when a timer lands inside the
/// horizon; every node listens.
pub use crate::store::timers::PLANNED_CHANNEL as TIMERS_CHANNEL;

/// A fresh node id: the configured name (or host name), the pid and a short random tag,
/// so a restarted process is a new node and its predecessor's claims lapse cleanly.
pub fn new_id(name: &str) -> (String, String) {
    let host = if name.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_string())
    } else {
        name.to_string()
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    (format!("{host}-{}-{}", std::process::id(), &tag[..6]), host)
}

/// An exclusive lock on `<db>.lock` beside a SQLite file: SQLite is single-node, and two
/// processes firing from one file would each believe they own every timer.
#[derive(Debug)]
pub struct SqliteLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another duehook process is already using {0} (SQLite is single-node; stop it, or move to PostgreSQL to run several nodes)"
    )]
    Held(PathBuf),
    #[error("cannot create the lock file {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Takes the lock for a `sqlite://` URL (no lock for in-memory databases).
pub fn lock_sqlite(url: &str) -> Result<Option<SqliteLock>, LockError> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(None);
    };
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.contains(":memory:") {
        return Ok(None);
    }
    let lock_path = PathBuf::from(format!("{path}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| LockError::Io(lock_path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(SqliteLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held(PathBuf::from(path))),
        Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(lock_path, e)),
    }
}

/// Wakes `wake` on every notification on [`TIMERS_CHANNEL`] until shutdown. Reconnects
/// after a lost connection; meanwhile the driver's periodic refill is the fallback.
pub async fn listen_for_timers(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect(&url).await?;
            l.listen(TIMERS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for timer wake-ups; polling meanwhile");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    }
                }
            },
        };
        // A reconnect may have missed notifications: look again now.
        wake.notify_one();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(_)) => wake.notify_one(),
                    // The connection dropped; try_recv reconnects on the next call.
                    Ok(None) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "timer wake-up listener failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
