//! Owned, supervised tasks: a role spawns every task of its own into one [`Supervisor`],
//! which notices the first task that ends early, fails or panics, names it, and stops the
//! rest, so a role never keeps running with a dead part (a flusher that panicked would
//! otherwise leave its queue filling and the role silently stuck). The role then exits
//! non-zero and its supervisor (compose, systemd) restarts it; the roles are built to
//! recover from a restart.
//!
//! Test hook: `WEATHERVANE_PANIC_TASK=<task name>` makes that task panic as it starts, so
//! the end-to-end tests can prove that a role whose task dies exits.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::event::{self, Event};

/// The environment variable of the test hook.
pub const PANIC_TASK_ENV: &str = "WEATHERVANE_PANIC_TASK";
/// How long stopped tasks get to finish before they are aborted: a role must exit within
/// 2 s of SIGTERM, even with a server hung under it.
const STOP_GRACE: Duration = Duration::from_millis(1500);

/// An error a task ends with.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// How a task ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskExit {
    /// It saw the shutdown token and stopped. Before shutdown this is a failure: a task
    /// that should run for the role's lifetime ended.
    Stopped,
    /// It finished the role's work (the streamer with `--once`): stop the others, exit 0.
    Finished,
}

/// The task that brought the role down.
#[derive(Debug, thiserror::Error)]
#[error("task {task:?} {how}")]
pub struct TaskFailed {
    pub task: &'static str,
    pub how: String,
}

pub struct Supervisor {
    set: JoinSet<(&'static str, Result<TaskExit, TaskError>)>,
    names: HashMap<Id, &'static str>,
    /// What the tasks watch; cancelled on shutdown and when a task fails.
    tasks: CancellationToken,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self {
            set: JoinSet::new(),
            names: HashMap::new(),
            tasks: CancellationToken::new(),
        }
    }

    /// The token every task should stop on.
    pub fn token(&self) -> CancellationToken {
        self.tasks.clone()
    }

    /// Spawns `task` as `name` (the name is what a failure is logged with).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<TaskExit, TaskError>> + Send + 'static,
    {
        let poisoned = std::env::var(PANIC_TASK_ENV).is_ok_and(|v| v == name);
        // In the spawner's span (the role's), so the task's log lines say whose they are.
        let handle = self.set.spawn(
            async move {
                if poisoned {
                    panic!("{PANIC_TASK_ENV}={name}: panicking as asked");
                }
                (name, task.await)
            }
            .in_current_span(),
        );
        self.names.insert(handle.id(), name);
    }

    /// Spawns a task that runs until the token is cancelled and has no error to report.
    pub fn spawn_until_stopped<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, async move {
            task.await;
            Ok(TaskExit::Stopped)
        });
    }

    /// Runs until `shutdown`, until a task finishes the role's work, or until a task fails;
    /// then stops every task (aborting what has not stopped within a grace period).
    /// `Err` names the task that failed and how.
    pub async fn run(mut self, shutdown: &CancellationToken) -> Result<(), TaskFailed> {
        let joined = tokio::select! {
            _ = shutdown.cancelled() => None,
            joined = self.set.join_next() => joined,
        };
        let outcome = match joined {
            None | Some(Ok((_, Ok(TaskExit::Finished)))) => Ok(()),
            Some(Ok((task, Ok(TaskExit::Stopped)))) => Err(TaskFailed {
                task,
                how: "ended before shutdown".into(),
            }),
            Some(Ok((task, Err(error)))) => Err(TaskFailed {
                task,
                how: format!("failed: {error}"),
            }),
            Some(Err(error)) => Err(self.join_failure(error)),
        };
        if let Err(failed) = &outcome {
            event::emit(Event::TaskFailed {
                task: failed.task.to_owned(),
                how: failed.how.clone(),
            });
        }
        self.stop().await;
        outcome
    }

    fn join_failure(&self, error: JoinError) -> TaskFailed {
        let task = self.names.get(&error.id()).copied().unwrap_or("unknown");
        let how = if error.is_panic() {
            let payload = error.into_panic();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            format!("panicked: {message}")
        } else {
            "was cancelled".into()
        };
        TaskFailed { task, how }
    }

    /// Cancels the tasks' token, gives them the grace period, then aborts the rest.
    async fn stop(mut self) {
        self.tasks.cancel();
        let drained = tokio::time::timeout(STOP_GRACE, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                tasks = self.set.len(),
                "Tasks still busy after the grace period; aborting them."
            );
            self.set.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_stops_the_others_and_is_named() {
        let mut supervisor = Supervisor::new();
        let token = supervisor.token();
        let others_stopped = CancellationToken::new();
        let seen = others_stopped.clone();
        supervisor.spawn_until_stopped("steady", async move {
            token.cancelled().await;
            seen.cancel();
        });
        supervisor.spawn_until_stopped("flusher", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("poisoned target");
        });
        let failed = supervisor.run(&CancellationToken::new()).await.unwrap_err();
        assert_eq!(failed.task, "flusher");
        assert!(failed.how.contains("poisoned target"), "{}", failed.how);
        assert!(others_stopped.is_cancelled());
    }

    #[tokio::test]
    async fn an_error_or_an_early_end_is_a_failure_and_finished_is_not() {
        let mut supervisor = Supervisor::new();
        supervisor.spawn("reader", async { Err("input vanished".into()) });
        let failed = supervisor.run(&CancellationToken::new()).await.unwrap_err();
        assert_eq!(failed.to_string(), "task \"reader\" failed: input vanished");

        let mut supervisor = Supervisor::new();
        supervisor.spawn_until_stopped("listener", async {});
        let failed = supervisor.run(&CancellationToken::new()).await.unwrap_err();
        assert_eq!(failed.how, "ended before shutdown");

        let mut supervisor = Supervisor::new();
        let token = supervisor.token();
        supervisor.spawn_until_stopped("listener", async move { token.cancelled().await });
        supervisor.spawn("streamer", async { Ok(TaskExit::Finished) });
        supervisor.run(&CancellationToken::new()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_aborts_a_task_that_does_not_stop() {
        let mut supervisor = Supervisor::new();
        supervisor.spawn_until_stopped("hung", std::future::pending());
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let started = tokio::time::Instant::now();
        supervisor.run(&shutdown).await.unwrap();
        assert!(started.elapsed() <= STOP_GRACE + Duration::from_millis(100));
    }
}
