//! The named background tasks of a running [`crate::App`], so that a shutdown that
//! runs out of time can say which ones it had to abort.

use std::future::Future;
use std::sync::Arc;
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

    /// Runs `fut` as the task called `name` on an OS thread of its own (`thread`), in a
    /// single-threaded runtime, instead of on the shared workers.
    ///
    /// Why: tokio has no priorities. A task woken on the shared workers (a timer came
    /// due, a statement's result arrived) waits behind every task already queued, and
    /// during a burst those are thousands of HTTP sends; the scheduler awaits the store
    /// several times per batch, so each wait added to how late reminders fired. On its
    /// own thread it is woken by the operating system's scheduler, which shares the
    /// CPUs fairly between threads. Only for work that touches no sockets: a socket
    /// opened on this runtime would be driven by this thread alone, and would stop
    /// working when the task ends.
    ///
    /// The task is aborted like any other (its future is dropped at its next `.await`);
    /// if the thread cannot be started it runs on the shared workers after all.
    pub fn spawn_on_own_thread(
        &mut self,
        name: &str,
        thread: &str,
        fut: impl Future<Output = ()> + Send + 'static,
    ) {
        let (abort, registration) = futures::future::AbortHandle::new_pair();
        let fut = futures::future::Abortable::new(fut, registration);
        // Taken by the thread; taken back here if the thread cannot start.
        let slot = Arc::new(std::sync::Mutex::new(Some(fut)));
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        let started = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|runtime| {
                let slot = slot.clone();
                std::thread::Builder::new()
                    .name(thread.to_string())
                    .spawn(move || {
                        let fut = slot.lock().ok().and_then(|mut f| f.take());
                        if let Some(fut) = fut {
                            let _ = runtime.block_on(fut);
                        }
                        // Not sent when the future panicked: the sender is dropped.
                        let _ = ended_tx.send(());
                    })
            });
        if let Err(e) = started {
            tracing::warn!(task = %name, error = %e, "cannot start a thread of its own; running on the shared workers");
            if let Some(fut) = slot.lock().ok().and_then(|mut f| f.take()) {
                self.spawn(name, async move {
                    let _ = fut.await;
                });
            }
            return;
        }
        // Stands for the thread among the tasks: ends when the thread's future does,
        // and aborting it (or dropping it at shutdown) aborts that future.
        // The guard is made here, not inside the task: a task aborted before its first
        // poll is dropped without running, and must still abort the thread's future.
        let abort_on_drop = AbortOnDrop(abort);
        let stand_in = tokio::spawn(async move {
            let _abort_on_drop = abort_on_drop;
            if ended_rx.await.is_err() {
                panic!("the task on a thread of its own panicked");
            }
        });
        self.push_named(name, stand_in);
    }

    /// Keeps a task spawned elsewhere, under `name`.
    pub fn push_named(&mut self, name: &str, handle: JoinHandle<()>) {
        self.tasks.push((name.to_string(), handle));
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

/// Aborts a future running elsewhere when dropped.
struct AbortOnDrop(futures::future::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
        tasks.push_named(
            "spawned elsewhere",
            tokio::spawn(async move {
                let _ = rx.await;
            }),
        );
        let aborted = tasks
            .join_until(Some(Instant::now() + Duration::from_secs(30)))
            .await;
        assert_eq!(aborted, vec!["stuck", "spawned elsewhere"]);
        // The aborted future was dropped, so its receiver is gone.
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn a_task_on_its_own_thread_runs_there_and_is_aborted_with_the_rest() {
        let mut tasks = Tasks::default();
        let (name_tx, name_rx) = tokio::sync::oneshot::channel();
        let (mut tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn_on_own_thread("alone", "duehook-test", async move {
            let _ = name_tx.send(std::thread::current().name().map(str::to_string));
            // Ends only by being aborted, which drops `rx`.
            let _ = rx.await;
        });
        assert_eq!(name_rx.await.unwrap().as_deref(), Some("duehook-test"));
        tasks.abort_all();
        let aborted = tasks
            .join_until(Some(Instant::now() + Duration::from_secs(30)))
            .await;
        assert!(aborted.is_empty(), "ended when aborted: {aborted:?}");
        // Dropped on its own thread at its next poll, which the abort wakes.
        tokio::time::timeout(Duration::from_secs(30), tx.closed())
            .await
            .expect("the future on the thread was dropped");
    }

    #[tokio::test]
    async fn a_task_on_its_own_thread_ends_by_itself() {
        let mut tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn_on_own_thread("quick", "duehook-test", async move {
            let _ = tx.send(());
        });
        rx.await.unwrap();
        let at = Instant::now() + Duration::from_secs(30);
        assert!(tasks.join_until(Some(at)).await.is_empty());
    }
}
