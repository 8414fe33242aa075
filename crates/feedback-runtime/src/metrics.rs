//! Prometheus metrics: one registry per process, served on `/metrics`.

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

/// Serves `/metrics` on `addr` as a task of `shutdown`, until shutdown is requested.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    shutdown: &crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for /metrics on {addr}: {e}; choose another address with --metrics-listen"))?;
    let stop = shutdown.requested();
    shutdown.spawn(format!("the /metrics server on {addr}"), async move {
        if let Err(e) = axum::serve(listener, router(registry))
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, "the /metrics server stopped");
        }
    });
    Ok(())
}
