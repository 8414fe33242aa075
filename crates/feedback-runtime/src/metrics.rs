//! Prometheus metrics: one registry per process, served on `/metrics` beside the
//! process's `/healthz` and `/readyz` ([`crate::health`]).

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};

pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

pub fn router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || std::future::ready(render(&registry))),
    )
}

/// Serves `/metrics`, `/healthz` and `/readyz` (of `health`) on `addr` as a task of
/// `shutdown`, until shutdown is requested; from then on `health` says "shutting down".
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: &crate::health::Health,
    shutdown: &crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for /metrics on {addr}: {e}; choose another address with --metrics-listen"))?;
    health.register(&registry)?;
    let stop = shutdown.requested();
    let app = router(registry).merge(health.router());
    let draining = health.clone();
    let requested = shutdown.requested();
    shutdown.spawn("the drain flag", async move {
        requested.await;
        draining.drain();
    });
    shutdown.spawn(format!("the /metrics server on {addr}"), async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, "the /metrics server stopped");
        }
    });
    Ok(())
}
