//! Rebalance hooks. rdkafka runs them inside `recv()`, on the sink's own task, so a revoke
//! can only happen between flushes: an INSERT in flight always finishes (or is abandoned
//! and rewound) before this instance gives its partitions away. The hook records the
//! revoked partitions; the sink drops their buffered rows and what it knew of their landed
//! state before it flushes again, and the next owner reads ClickHouse only after this.

use std::sync::{Arc, Mutex};

use feedback_kafka::rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use feedback_kafka::rdkafka::ClientContext;

#[derive(Default)]
pub struct Shared {
    /// Partitions revoked since the sink last looked.
    pub revoked: Vec<(String, i32)>,
}

#[derive(Clone, Default)]
pub struct SinkContext {
    pub shared: Arc<Mutex<Shared>>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?parts, "partitions revoked; dropping their buffered rows");
                if let Ok(mut s) = self.shared.lock() {
                    s.revoked.extend(parts);
                }
            }
            Rebalance::Assign(tpl) => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?parts, "partitions assigned; their landed state is read from ClickHouse before their first row");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}
