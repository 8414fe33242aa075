//! One shutdown for the whole process: a [`Shutdown`] is made once in `main` from Ctrl-C or
//! SIGTERM and handed to every service. Services watch it (a future from
//! [`Shutdown::requested`], or [`Shutdown::is_requested`] on a blocking thread) and
//! spawn their background tasks (the `/metrics` server) with [`Shutdown::spawn`], which
//! stop with it. [`Shutdown::drain`] then bounds how long the process may take to stop:
//! at [`DRAIN_TIMEOUT`] after the request it gives up and names what did not finish.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

/// How long a process may take to stop once shutdown is requested: shorter than the Kafka
/// session timeout of the services' consumers (10 s for the attributor, 45 s by default
/// for the sink), so a restarted static member finds its partitions still its own.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// The shutdown token of a process, its tracked background tasks, and their names.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
    running: Arc<Mutex<BTreeMap<u64, String>>>,
    next: Arc<AtomicU64>,
}

impl Shutdown {
    /// A shutdown requested only by [`Shutdown::request`] (tests, tools).
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A shutdown requested by Ctrl-C or SIGTERM (or [`Shutdown::request`]); must be called
    /// inside the Tokio runtime.
    pub fn on_signal() -> Shutdown {
        let s = Shutdown::new();
        let token = s.token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = signal() => token.cancel(),
                _ = token.cancelled() => {}
            }
        });
        s
    }

    pub fn request(&self) {
        self.token.cancel();
    }

    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown is requested: the `shutdown: impl Future` of a service.
    pub fn requested(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Runs `task` as a tracked background task named `name`: [`Shutdown::drain`] waits
    /// for it and names it if it does not finish in time. The task must end by itself
    /// once shutdown is requested.
    pub fn spawn<F>(&self, name: impl Into<String>, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.running).insert(id, name.into());
        let running = self.running.clone();
        self.tracker.spawn(async move {
            let _done = Finished { running, id };
            task.await
        })
    }

    /// Waits for `service` (the main future of a command) and then for every tracked task;
    /// once shutdown is requested, waits at most `deadline` for both. On time: the
    /// service's output. Too late: an error naming `what` and the tasks still running.
    pub async fn drain<F: Future>(
        &self,
        what: &str,
        deadline: Duration,
        service: F,
    ) -> Result<F::Output, Unfinished> {
        let late = async {
            self.token.cancelled().await;
            tokio::time::sleep(deadline).await;
        };
        tokio::pin!(late);
        let out = tokio::select! {
            out = service => out,
            _ = &mut late => return Err(self.unfinished(what, deadline, true)),
        };
        // The service is done: its background tasks (the /metrics server) stop too.
        self.token.cancel();
        self.tracker.close();
        tokio::select! {
            _ = self.tracker.wait() => Ok(out),
            _ = &mut late => Err(self.unfinished(what, deadline, false)),
        }
    }

    fn unfinished(&self, what: &str, deadline: Duration, service: bool) -> Unfinished {
        let mut pending: Vec<String> = Vec::new();
        if service {
            pending.push(what.to_string());
        }
        pending.extend(lock(&self.running).values().cloned());
        Unfinished {
            what: what.to_string(),
            deadline,
            pending,
        }
    }
}

/// The drain deadline passed with work still running.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} did not stop within {}s of the shutdown request; still running: {}; stopping anyway \
     (work not finished is redone after a restart)",
    deadline.as_secs(),
    pending.join(", ")
)]
pub struct Unfinished {
    pub what: String,
    pub deadline: Duration,
    pub pending: Vec<String>,
}

struct Finished {
    running: Arc<Mutex<BTreeMap<u64, String>>>,
    id: u64,
}

impl Drop for Finished {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn signal() {
    {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_returns_the_output_and_stops_tracked_tasks() {
        let s = Shutdown::new();
        let t = s.clone();
        s.spawn("ticker", async move { t.requested().await });
        let out = s
            .drain("service", Duration::from_secs(5), async { 7 })
            .await
            .unwrap();
        assert_eq!(out, 7);
        assert!(s.is_requested());
    }

    #[tokio::test]
    async fn drain_names_what_did_not_finish() {
        let s = Shutdown::new();
        s.spawn("stubborn task", std::future::pending::<()>());
        s.request();
        let e = s
            .drain(
                "the sink",
                Duration::from_secs(1),
                std::future::pending::<()>(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.pending, ["the sink", "stubborn task"]);
        assert_eq!(
            e.to_string(),
            "the sink did not stop within 1s of the shutdown request; still running: the sink, stubborn task; \
             stopping anyway (work not finished is redone after a restart)"
        );
    }

    #[tokio::test]
    async fn drain_waits_without_limit_until_shutdown_is_requested() {
        let s = Shutdown::new();
        let out = s
            .drain("tool", Duration::from_millis(1), async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                1
            })
            .await
            .unwrap();
        assert_eq!(out, 1);
    }
}
