//! Liveness and readiness of a service: `/healthz` and `/readyz`.
//!
//! - `/healthz` (liveness) answers 200 while the process serves HTTP: a wedged runtime does
//!   not answer, and a restart is what helps then. It never looks at Kafka or ClickHouse (a
//!   dependency that is away must not make Kubernetes restart every pod).
//! - `/readyz` (readiness) answers 200 only when every named check of the service passes
//!   now, else 503 with the failing checks and their reasons (JSON, plus `Retry-After`),
//!   and 503 "shutting down" once a drain began, so a load balancer stops sending work
//!   before the process stops taking it.
//!
//! A check is kept fresh either by a [`Health::probe`] (a task that asks the dependency
//! every [`PROBE_EVERY`], each question bounded by [`PROBE_TIMEOUT`]) or by the service
//! itself ([`Health::set_ok`] / [`Health::set_failing`] where it commits or lands). A
//! check not yet decided counts as failing ("starting"). With the defaults a stopped
//! dependency shows within 2.5 s and a returned one within 1.5 s. Each check is also the
//! gauge `feedback_<service>_ready{check}` (1 passes, 0 fails; `check="running"` turns 0
//! when a drain begins), which the `FeedbackNotReady` alert reads.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// How often a probe asks its dependency.
pub const PROBE_EVERY: Duration = Duration::from_millis(1000);
/// How long one probe question may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The `Retry-After` of a 503 from `/readyz` (and of the collector's refusals), in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Starting,
    Ok(String),
    Failing(String),
}

#[derive(Debug)]
struct Check {
    state: State,
    since: Instant,
}

/// The readiness of one process: its named checks and whether it is draining. Cheap to
/// clone; every clone sees the same checks.
#[derive(Clone, Debug)]
pub struct Health {
    service: &'static str,
    checks: Arc<Mutex<BTreeMap<&'static str, Check>>>,
    draining: Arc<AtomicBool>,
    /// `feedback_<service>_ready{check}`: 1 while the check passes (alerts read it).
    gauge: prometheus::IntGaugeVec,
}

/// What `/readyz` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// One line per check: `name: ok (detail)` or `name: reason`, sorted by name; first
    /// `shutting down` while draining.
    pub lines: Vec<String>,
}

impl Health {
    /// A service with the checks `names`, all "starting" until decided.
    pub fn new(service: &'static str, names: &[&'static str]) -> Health {
        let now = Instant::now();
        let checks = names
            .iter()
            .map(|n| {
                (
                    *n,
                    Check {
                        state: State::Starting,
                        since: now,
                    },
                )
            })
            .collect();
        let gauge = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                format!("feedback_{service}_ready"),
                "1 while the readiness check passes, else 0 (the reasons are on /readyz); check=\"running\" is 0 once shutdown began",
            ),
            &["check"],
        )
        .expect("a valid metric definition");
        for n in names {
            gauge.with_label_values(&[n]).set(0);
        }
        gauge.with_label_values(&["running"]).set(1);
        Health {
            service,
            checks: Arc::new(Mutex::new(checks)),
            draining: Arc::new(AtomicBool::new(false)),
            gauge,
        }
    }

    /// Exposes `feedback_<service>_ready{check}` in `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.gauge.clone()))
    }

    fn set(&self, name: &'static str, state: State) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let entry = checks.entry(name).or_insert(Check {
            state: State::Starting,
            since: Instant::now(),
        });
        let changed = std::mem::discriminant(&entry.state) != std::mem::discriminant(&state);
        self.gauge
            .with_label_values(&[name])
            .set(i64::from(matches!(state, State::Ok(_))));
        if changed {
            match &state {
                State::Ok(d) => {
                    tracing::info!(service = self.service, check = name, detail = %d, "ready again")
                }
                State::Failing(r) => {
                    tracing::warn!(service = self.service, check = name, reason = %r, "not ready")
                }
                State::Starting => {}
            }
            entry.since = Instant::now();
        }
        entry.state = state;
    }

    /// Check `name` passes; `detail` says what was seen (e.g. "3 partitions assigned").
    pub fn set_ok(&self, name: &'static str, detail: impl Into<String>) {
        self.set(name, State::Ok(detail.into()));
    }

    /// Check `name` fails for `reason` (what is wrong and, where it helps, what to do).
    pub fn set_failing(&self, name: &'static str, reason: impl Into<String>) {
        self.set(name, State::Failing(reason.into()));
    }

    /// From now on `/readyz` answers 503 "shutting down".
    pub fn drain(&self) {
        self.gauge.with_label_values(&["running"]).set(0);
        if !self.draining.swap(true, Ordering::SeqCst) {
            tracing::info!(
                service = self.service,
                "draining: /readyz answers 503 from now on"
            );
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether check `name` passes now.
    pub fn is_ok(&self, name: &str) -> bool {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        matches!(
            checks.get(name),
            Some(Check {
                state: State::Ok(_),
                ..
            })
        )
    }

    /// The reason check `name` failed when last decided (`None` while it passes or is
    /// not decided yet).
    pub fn failing(&self, name: &str) -> Option<String> {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        match checks.get(name).map(|c| &c.state) {
            Some(State::Failing(r)) => Some(r.clone()),
            _ => None,
        }
    }

    pub fn readiness(&self) -> Readiness {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines = Vec::new();
        let mut ready = true;
        if self.is_draining() {
            ready = false;
            lines.push("shutting down: finishing the work in hand, taking no new work".into());
        }
        for (name, c) in checks.iter() {
            let secs = c.since.elapsed().as_secs();
            match &c.state {
                State::Ok(d) if d.is_empty() => lines.push(format!("{name}: ok")),
                State::Ok(d) => lines.push(format!("{name}: ok ({d})")),
                State::Failing(r) => {
                    ready = false;
                    lines.push(format!("{name}: {r} (for {secs}s)"));
                }
                State::Starting => {
                    ready = false;
                    lines.push(format!("{name}: starting, not checked yet ({secs}s)"));
                }
            }
        }
        Readiness { ready, lines }
    }

    /// Keeps check `name` fresh until `stop`: every [`PROBE_EVERY`] runs `ask`, which
    /// returns a detail when the dependency answers and the reason when it does not; an
    /// answer later than [`PROBE_TIMEOUT`] fails the check.
    pub fn probe<F, Fut>(
        &self,
        shutdown: &crate::shutdown::Shutdown,
        name: &'static str,
        mut ask: F,
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<String, String>> + Send,
    {
        let health = self.clone();
        let stop = shutdown.requested();
        shutdown.spawn(format!("the {name} readiness probe"), async move {
            tokio::pin!(stop);
            loop {
                let answer = tokio::time::timeout(PROBE_TIMEOUT, ask());
                tokio::select! {
                    _ = &mut stop => return,
                    a = answer => match a {
                        Ok(Ok(detail)) => health.set_ok(name, detail),
                        Ok(Err(reason)) => health.set_failing(name, reason),
                        Err(_) => health.set_failing(
                            name,
                            format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()),
                        ),
                    },
                }
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                }
            }
        });
    }

    /// `/healthz` and `/readyz`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let h = self.clone();
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || std::future::ready(h.readyz_response())),
            )
    }

    fn readyz_response(&self) -> Response {
        let r = self.readiness();
        let body = format!(
            "{} {}\n{}\n",
            self.service,
            if r.ready { "ready" } else { "not ready" },
            r.lines.join("\n")
        );
        if r.ready {
            (StatusCode::OK, body).into_response()
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
                body,
            )
                .into_response()
        }
    }
}

/// Asks Kafka for the metadata of `topics` (blocking, at most `timeout`): the probe of a
/// service that reads or writes them. Fails when no broker answers or a partition has no
/// leader (a write there cannot succeed).
pub async fn kafka_probe(probe: Arc<feedback_kafka::MetadataProbe>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || probe.check(PROBE_TIMEOUT.mul_f32(0.8)))
        .await
        .map_err(|e| format!("the Kafka probe failed: {e}"))?
}

/// Asks ClickHouse for its version: the probe of a service that reads or writes it.
pub async fn clickhouse_probe(ch: feedback_clickhouse::Ch) -> Result<String, String> {
    ch.server_version()
        .await
        .map(|v| format!("ClickHouse {v}"))
        .map_err(|e| format!("ClickHouse does not answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes_and_not_draining() {
        let h = Health::new("sink", &["kafka", "clickhouse"]);
        let r = h.readiness();
        assert!(!r.ready);
        assert_eq!(h.failing("kafka"), None);
        assert_eq!(r.lines.len(), 2);
        assert!(
            r.lines[0].starts_with("clickhouse: starting"),
            "{:?}",
            r.lines
        );
        h.set_ok("kafka", "2 topics");
        h.set_ok("clickhouse", "");
        let r = h.readiness();
        assert!(r.ready);
        assert_eq!(r.lines, ["clickhouse: ok", "kafka: ok (2 topics)"]);
        h.set_failing("clickhouse", "connection refused");
        let r = h.readiness();
        assert!(!r.ready);
        assert_eq!(r.lines[0], "clickhouse: connection refused (for 0s)");
        assert_eq!(
            h.failing("clickhouse").as_deref(),
            Some("connection refused")
        );
        assert!(h.is_ok("kafka"));
        h.set_ok("clickhouse", "");
        h.drain();
        let r = h.readiness();
        assert!(!r.ready);
        assert!(r.lines[0].starts_with("shutting down"), "{:?}", r.lines);
    }

    #[tokio::test]
    async fn a_probe_that_answers_late_fails_its_check() {
        let s = crate::shutdown::Shutdown::new();
        let h = Health::new("board", &["clickhouse"]);
        h.probe(&s, "clickhouse", || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, String>(String::new())
        });
        tokio::time::sleep(PROBE_TIMEOUT + Duration::from_millis(300)).await;
        assert_eq!(
            h.failing("clickhouse").as_deref(),
            Some("no answer within 1500 ms")
        );
        s.request();
    }
}
