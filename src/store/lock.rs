//! One process per SQLite store: an exclusive lock on `<db>.lock` beside the file,
//! held by the service (and by `copy-store`) for as long as it uses the store.

use std::fs::File;
use std::path::PathBuf;

/// An exclusive lock on `<db>.lock` beside a SQLite file: SQLite is single-node, and two
/// processes firing from one file would each believe they own every timer. The file is
/// removed when the lock is dropped (a clean stop); one left by a crash is simply taken
/// over by the next start, since the lock dies with the process that held it.
#[derive(Debug)]
pub struct SqliteLock {
    file: File,
    path: PathBuf,
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, then release it by closing. A process
        // that opened the old file meanwhile sees, once it gets the lock, that the path
        // no longer names that file, and starts over (see `lock_sqlite`).
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot remove the SQLite lock file");
        }
        let _ = self.file.unlock();
    }
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
    // A lock taken on a file that a stopping process unlinked in the meantime guards
    // nothing: the next process would create a new file and lock that. So the lock
    // counts only while the path still names the locked file; otherwise, try again.
    for _ in 0..100 {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LockError::Io(lock_path.clone(), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held(PathBuf::from(path)));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(lock_path, e)),
        }
        if same_file(&file, &lock_path) {
            return Ok(Some(SqliteLock {
                file,
                path: lock_path,
            }));
        }
    }
    Err(LockError::Io(
        lock_path,
        std::io::Error::other("the lock file keeps being replaced"),
    ))
}

/// True when `path` names the file `file` is open on.
#[cfg(unix)]
fn same_file(file: &File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &std::path::Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_refuses_a_second_holder_and_its_file_goes_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("duehook.db");
        let url = format!("sqlite://{}", db.display());
        let lock_file = dir.path().join("duehook.db.lock");

        let first = lock_sqlite(&url).expect("lock").expect("a lock for a file");
        assert!(lock_file.exists());
        assert!(matches!(lock_sqlite(&url), Err(LockError::Held(_))));

        drop(first);
        assert!(!lock_file.exists(), "a released lock leaves no file behind");
        let again = lock_sqlite(&url).expect("free again").expect("lock");
        drop(again);
        assert!(!lock_file.exists());
    }

    #[test]
    fn a_lock_on_a_removed_file_does_not_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("duehook.db").display());
        let lock_file = dir.path().join("duehook.db.lock");

        let held = lock_sqlite(&url).expect("lock").expect("a lock for a file");
        // Opened by a process starting while the holder stops: the file it opened is
        // gone once the holder has released it.
        let stale = File::options().write(true).open(&lock_file).expect("open");
        assert!(same_file(&stale, &lock_file));
        drop(held);
        stale.try_lock().expect("the old file's lock is free");
        assert!(
            !same_file(&stale, &lock_file),
            "the path no longer names it"
        );
        // The next start locks a new file, which the stale handle does not guard.
        let next = lock_sqlite(&url).expect("lock").expect("a lock for a file");
        assert!(matches!(lock_sqlite(&url), Err(LockError::Held(_))));
        drop(next);
    }

    #[test]
    fn no_lock_for_memory_or_postgres() {
        assert!(lock_sqlite("sqlite::memory:").expect("ok").is_none());
        assert!(lock_sqlite("postgres://u@h/db").expect("ok").is_none());
    }
}
