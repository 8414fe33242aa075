//! The attributor's consumer context (rebalance notices, lag from librdkafka statistics)
//! and the restore of partition state from the compacted changelog topic.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use feedback_attribution::Engine;
use feedback_kafka::rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use feedback_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use feedback_kafka::rdkafka::{ClientContext, Message, Offset, Statistics, TopicPartitionList};
use feedback_kafka::KafkaConfig;
use prometheus::IntGaugeVec;

/// What the consumer's rebalance callbacks saw; drained by the worker after each poll.
/// Callbacks run inside `poll`, never while a transaction is open (the worker does not
/// poll between `begin_transaction` and `commit_transaction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalanced {
    Revoked(Vec<(String, i32)>),
    Assigned(Vec<(String, i32)>),
    Lost,
}

pub struct Ctx {
    pub events: Mutex<Vec<Rebalanced>>,
    pub lag: IntGaugeVec,
}

fn list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for Ctx {
    fn stats(&self, s: Statistics) {
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                // Offsets are committed by the transactional producer, so librdkafka's
                // `consumer_lag` (end − committed, as this consumer last saw it) goes stale;
                // `consumer_lag_stored` (end − the position handed to us) does not.
                let lag = if part.consumer_lag_stored >= 0 {
                    part.consumer_lag_stored
                } else {
                    part.consumer_lag
                };
                if *p >= 0 && lag >= 0 {
                    self.lag
                        .with_label_values(&[topic, &p.to_string()])
                        .set(lag);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let e = match r {
            Rebalance::Revoke(tpl) => Rebalanced::Revoked(list(tpl)),
            Rebalance::Assign(_) => return,
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                Rebalanced::Lost
            }
        };
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            if let Ok(mut v) = self.events.lock() {
                v.push(Rebalanced::Assigned(list(tpl)));
            }
        }
    }
}

/// The restore reader's context: end of partition is how a restore knows it is done, so
/// librdkafka's global PartitionEOF notice is not an error worth logging.
struct RestoreCtx;

impl ClientContext for RestoreCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::warn!(error = %error, reason, "changelog reader");
        }
    }
}

impl ConsumerContext for RestoreCtx {}

/// Reads changelog partitions `parts` from the beginning to their end (as a
/// `read_committed` reader sees it) into one engine each. Returns the engines and the
/// number of records read.
pub fn restore(
    kafka: &KafkaConfig,
    group: &str,
    changelog: &str,
    parts: &BTreeSet<i32>,
    new_engine: impl Fn() -> Engine,
    now_ms: i64,
    timeout: Duration,
) -> anyhow::Result<(HashMap<i32, Engine>, u64)> {
    let mut engines: HashMap<i32, Engine> = parts.iter().map(|p| (*p, new_engine())).collect();
    if parts.is_empty() {
        return Ok((engines, 0));
    }
    let c: BaseConsumer<RestoreCtx> = kafka
        .read_committed_consumer(&format!("{group}.restore"))
        .partition_eof()
        .from_earliest()
        .create_with_context(RestoreCtx)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the changelog reader for {}: {e}",
                kafka.brokers
            )
        })?;
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(changelog, *p, Offset::Beginning)?;
    }
    c.assign(&tpl)
        .map_err(|e| anyhow::anyhow!("cannot read changelog topic {changelog}: {e}"))?;
    let mut pending = parts.clone();
    let mut records = 0u64;
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            anyhow::bail!(
                "restoring state from {changelog} partitions {pending:?} did not reach their end within {} s; check that the brokers at {} are reachable",
                timeout.as_secs(),
                kafka.brokers
            );
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, topic = changelog, "changelog read error; retrying")
            }
            Some(Ok(m)) => {
                let p = m.partition();
                let Some(engine) = engines.get_mut(&p) else {
                    continue;
                };
                let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                engine
                    .restore(&key, m.payload(), now_ms)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "changelog {changelog} partition {p} offset {}: {e}; the topic holds records this version cannot read (another program writing to it?)",
                            m.offset()
                        )
                    })?;
                records += 1;
            }
        }
    }
    for e in engines.values_mut() {
        e.finish_restore();
    }
    Ok((engines, records))
}
