//! One restart policy for every service: run an attempt; when it fails with an error whose
//! kind is restartable ([`Restartable::restart`], decided where the error is made, not by
//! downcasting), run it again, at most [`Restart::max_restarts`] times per kind within
//! [`Restart::window`], and never once shutdown is requested. [`supervise_blocking`] is
//! for attempts that run on their own thread (the attributor), [`supervise`] for async ones
//! (the sink).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// How an error of a restartable kind is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// Failures are counted per kind.
    pub kind: &'static str,
    /// Restarts allowed within `window`; the failure after them is final.
    pub max_restarts: usize,
    pub window: Duration,
    /// Logged (with the error) at each restart: what happened and what is done about it.
    pub action: &'static str,
}

/// An error that knows whether the attempt that returned it may be run again.
pub trait Restartable {
    /// `Some` when a fresh attempt can recover from this error.
    fn restart(&self) -> Option<Restart>;
}

/// Why the supervisor stopped restarting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The error is not of a restartable kind.
    NotRestartable,
    /// More failures of its kind than [`Restart::max_restarts`] within [`Restart::window`].
    TooMany,
    /// Shutdown was requested.
    ShuttingDown,
}

/// The last error of a supervised attempt, with why it ended the supervision.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub stop: Stop,
    /// Failures of the error's kind within the window, this one included (1 when the
    /// error is not restartable).
    pub failures: usize,
    /// The window of the error's kind (zero when it is not restartable).
    pub window: Duration,
}

/// Failure history per kind; decides restart or stop.
#[derive(Debug)]
pub struct Supervisor {
    shutdown: Shutdown,
    failures: HashMap<&'static str, VecDeque<Instant>>,
}

impl Supervisor {
    pub fn new(shutdown: &Shutdown) -> Supervisor {
        Supervisor {
            shutdown: shutdown.clone(),
            failures: HashMap::new(),
        }
    }

    /// Records a failure at `now`; `Ok` (the error back) to restart, `Err` to stop.
    pub fn judge<E: Restartable + std::fmt::Display>(
        &mut self,
        error: E,
        now: Instant,
    ) -> Result<E, GaveUp<E>> {
        let Some(r) = error.restart() else {
            return Err(GaveUp {
                error,
                stop: Stop::NotRestartable,
                failures: 1,
                window: Duration::ZERO,
            });
        };
        let seen = self.failures.entry(r.kind).or_default();
        seen.push_back(now);
        while seen
            .front()
            .is_some_and(|t| now.duration_since(*t) > r.window)
        {
            seen.pop_front();
        }
        let failures = seen.len();
        let stop = if failures > r.max_restarts {
            Stop::TooMany
        } else if self.shutdown.is_requested() {
            Stop::ShuttingDown
        } else {
            tracing::warn!(error = %error, kind = r.kind, failures, window_secs = r.window.as_secs(), "{}", r.action);
            return Ok(error);
        };
        Err(GaveUp {
            error,
            stop,
            failures,
            window: r.window,
        })
    }
}

/// Runs `attempt` on this thread until it succeeds or [`Supervisor::judge`] stops it.
pub fn supervise_blocking<T, E: Restartable + std::fmt::Display>(
    shutdown: &Shutdown,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, GaveUp<E>> {
    let mut supervisor = Supervisor::new(shutdown);
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => drop(supervisor.judge(e, Instant::now())?),
        }
    }
}

/// Runs `attempt().await` until it succeeds or [`Supervisor::judge`] stops it.
pub async fn supervise<T, E, F, Fut>(shutdown: &Shutdown, mut attempt: F) -> Result<T, GaveUp<E>>
where
    E: Restartable + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut supervisor = Supervisor::new(shutdown);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => drop(supervisor.judge(e, Instant::now())?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum E {
        Fenced,
        Lost,
        Broken,
    }

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Restartable for E {
        fn restart(&self) -> Option<Restart> {
            let (kind, max_restarts) = match self {
                E::Fenced => ("fenced", 2),
                E::Lost => ("lost", 5),
                E::Broken => return None,
            };
            Some(Restart {
                kind,
                max_restarts,
                window: Duration::from_secs(120),
                action: "restarting",
            })
        }
    }

    #[test]
    fn the_third_fence_within_the_window_is_final() {
        let mut calls = 0;
        let g = supervise_blocking(&Shutdown::new(), || -> Result<(), E> {
            calls += 1;
            Err(E::Fenced)
        })
        .unwrap_err();
        assert_eq!((calls, g.failures, g.stop), (3, 3, Stop::TooMany));
        assert_eq!(g.window, Duration::from_secs(120));
    }

    #[test]
    fn kinds_are_counted_apart_and_old_failures_leave_the_window() {
        let mut s = Supervisor::new(&Shutdown::new());
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(s.judge(E::Lost, t0 + Duration::from_secs(i)).is_ok());
        }
        assert!(s.judge(E::Fenced, t0).is_ok());
        assert!(s.judge(E::Fenced, t0).is_ok());
        let g = s.judge(E::Lost, t0 + Duration::from_secs(5)).unwrap_err();
        assert_eq!((g.failures, g.stop), (6, Stop::TooMany));
        // Two minutes and more later, the early failures no longer count.
        let later = t0 + Duration::from_secs(124);
        assert!(s.judge(E::Lost, later).is_ok());
        assert!(s.judge(E::Fenced, later).is_ok());
    }

    #[test]
    fn errors_of_other_kinds_end_at_once() {
        let g = supervise_blocking(&Shutdown::new(), || -> Result<(), E> { Err(E::Broken) })
            .unwrap_err();
        assert_eq!((g.failures, g.stop), (1, Stop::NotRestartable));
    }

    #[tokio::test]
    async fn no_restart_once_shutdown_is_requested() {
        let shutdown = Shutdown::new();
        let mut calls = 0;
        let g = supervise(&shutdown, || {
            calls += 1;
            if calls == 2 {
                shutdown.request();
            }
            async { Err::<(), _>(E::Lost) }
        })
        .await
        .unwrap_err();
        assert_eq!((calls, g.stop, g.failures), (2, Stop::ShuttingDown, 2));
    }

    #[tokio::test]
    async fn a_success_after_restarts_is_returned() {
        let mut calls = 0;
        let v = supervise(&Shutdown::new(), || {
            calls += 1;
            let r = if calls < 3 { Err(E::Lost) } else { Ok(calls) };
            async move { r }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }
}
