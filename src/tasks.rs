//! The named background tasks of a running [`crate::App`], so that a shutdown that
//! runs out of time can say which ones it had to abort.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long an aborted task gets to unwind (drop its transaction, return its
/// connection) before shutdown stops waiting for it. Aborting takes effect at the
/// task's next `.await`; a task stuck in blocking code never gets there.
const UNWIND: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Tasks {
    tasks: Vec<(String, JoinHandle<()>)>,
}

impl Tasks {
    /// Spawns `fut` as the task called `name` (used in shutdown logs).
    pub fn spawn(&mut self, name: &str, fut: impl Future<Output = ()> + Send + 'static) {
        self.push_named(name, tokio::spawn(fut));
    }

    /// Keeps a task spawned elsewhere, under `name`.
    pub fn push_named(&mut self, name: &str, handle: JoinHandle<()>) {
        self.tasks.push((name.to_string(), handle));
    }

    /// Keeps a task spawned elsewhere; it is called "background task #N" in logs.
    /// Prefer [`Tasks::spawn`] with a name.
    pub fn push(&mut self, handle: JoinHandle<()>) {
        let name = format!("background task #{}", self.tasks.len() + 1);
        self.tasks.push((name, handle));
    }

    /// Takes over every task of `other`, after the ones already here.
    pub fn extend(&mut self, other: Tasks) {
        self.tasks.extend(other.tasks);
    }

    /// Aborts every task where it stands.
    pub fn abort_all(&self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }

    /// Waits for every task to end by itself until `deadline` (for ever when None),
    /// then aborts the ones still running and returns their names.
    pub async fn join_until(self, deadline: Option<Instant>) -> Vec<String> {
        let mut late = Vec::new();
        for (name, mut task) in self.tasks {
            let ended = match deadline {
                Some(at) => tokio::time::timeout_at(at, &mut task).await.ok(),
                None => Some((&mut task).await),
            };
            match ended {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(task = %name, error = %e, "task ended abnormally");
                }
                None => {
                    task.abort();
                    late.push((name, task));
                }
            }
        }
        let mut aborted = Vec::with_capacity(late.len());
        // One bound for all of them: they unwind concurrently.
        let unwound_by = Instant::now() + UNWIND;
        for (name, task) in late {
            if tokio::time::timeout_at(unwound_by, task).await.is_err() {
                tracing::warn!(task = %name, "aborted task did not unwind; leaving it behind");
            }
            aborted.push(name);
        }
        aborted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_that_end_in_time_are_not_reported() {
        let mut tasks = Tasks::default();
        tasks.spawn("quick", async {});
        let at = Instant::now() + Duration::from_secs(5);
        assert!(tasks.join_until(Some(at)).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_still_running_at_the_deadline_are_aborted_and_named() {
        let mut tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("quick", async {});
        tasks.spawn("stuck", std::future::pending());
        // Never sent to: this one ends only by being aborted, which drops `rx`.
        tasks.push(tokio::spawn(async move {
            let _ = rx.await;
        }));
        let aborted = tasks
            .join_until(Some(Instant::now() + Duration::from_secs(30)))
            .await;
        assert_eq!(aborted, vec!["stuck", "background task #3"]);
        // The aborted future was dropped, so its receiver is gone.
        assert!(tx.is_closed());
    }
}
