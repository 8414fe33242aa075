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

/// Serves `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, registry: Registry) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for /metrics on {addr}: {e}; choose another address with --metrics-listen"))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(registry)).await;
    });
    Ok(())
}
