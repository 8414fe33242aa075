//! `feedback sink`: consume attributed events (and the dead-letter topic) and land them in
//! ClickHouse exactly once, one INSERT per table per batch, batches bounded by rows, bytes
//! and time.
//!
//! Exactly-once without ClickHouse transactions (18.16 deduplicates inserts only on
//! replicated tables): every row carries the Kafka coordinates of its message
//! (`kafka_topic`, `kafka_partition`, `kafka_offset`), and after every batch the sink records
//! the batch's last offset per partition in `sink_progress`. Before it lands anything of a
//! partition (after an assignment, a restart, or an INSERT error whose outcome is unknown)
//! the sink reads back from ClickHouse what is landed ([`feedback_clickhouse::Landed`]) and
//! drops every message whose row a table already holds. Kafka offset commits are advisory
//! (they feed lag tools and give the starting point of a fresh assignment; they are made
//! only after the batch is landed, so they never run ahead of ClickHouse).
//!
//! Code map: `batch.rs` turns messages into rows, `land.rs` lands a batch (retries,
//! bisection of rejected rows, dead letters), `context.rs` is the rebalance hook,
//! `metrics.rs` the Prometheus metrics.

mod batch;
mod context;
mod land;
mod metrics;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use feedback_clickhouse::{
    Ch, DEAD_LETTER_COLUMNS, INTERACTION_COLUMNS, PROGRESS_COLUMNS, RATING_COLUMNS,
};
use feedback_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use feedback_kafka::rdkafka::Message;
use prometheus::Registry;
use tracing::Instrument;

use batch::Batch;
use context::SinkContext;
use feedback_runtime::health::Health;
use feedback_runtime::shutdown::Shutdown;
use feedback_runtime::supervise::{supervise, Restart, Restartable};
use feedback_runtime::Common;
use land::Lander;
use metrics::Metrics;

/// ClickHouse splits an INSERT into blocks of `max_insert_block_size` rows (default
/// 1,048,576); a batch must stay below it to land whole or not at all.
pub const MAX_INSERT_BLOCK_ROWS: usize = 1_048_576;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Consumer group.
    #[arg(long, env = "FEEDBACK_SINK_GROUP", default_value = "feedback-sink")]
    pub group: String,
    /// Flush when a batch holds this many rows (below ClickHouse's max_insert_block_size,
    /// 1,048,576, so that each INSERT is atomic).
    #[arg(long, env = "FEEDBACK_SINK_BATCH_ROWS", default_value_t = 50_000)]
    pub batch_rows: usize,
    /// Flush when a batch holds this many message bytes.
    #[arg(long, env = "FEEDBACK_SINK_BATCH_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub batch_bytes: usize,
    /// Flush a non-empty batch at the latest this long after its first row, in milliseconds.
    #[arg(long, env = "FEEDBACK_SINK_FLUSH_MS", default_value_t = 500)]
    pub flush_ms: u64,
    /// Longest wait between two retries of a failed INSERT, in milliseconds (the wait
    /// doubles from 100 ms up to this).
    #[arg(long, env = "FEEDBACK_SINK_MAX_BACKOFF_MS", default_value_t = 5_000)]
    pub max_backoff_ms: u64,
    /// After retrying a batch this long, give it up and rewind its partitions (they are
    /// read again once ClickHouse is back), so that rebalances are served; must stay well
    /// below the consumer's max.poll.interval.ms (300 s), in seconds.
    #[arg(long, env = "FEEDBACK_SINK_ABANDON_SECS", default_value_t = 120)]
    pub abandon_secs: u64,
    /// How long a starting sink waits for ClickHouse to answer (it may be restarting)
    /// before it gives up, in seconds.
    #[arg(long, env = "FEEDBACK_SINK_STARTUP_WAIT_SECS", default_value_t = 120)]
    pub startup_wait_secs: u64,
    /// Consumer session timeout: how long the group waits for a silent (crashed) instance
    /// before its partitions move, in milliseconds (the broker's minimum is 6000).
    #[arg(
        long,
        env = "FEEDBACK_SINK_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub session_timeout_ms: u32,
    /// Static group membership (Kafka group.instance.id): a restarted instance with the
    /// same id takes its partitions back at once, without a rebalance, and fences its
    /// predecessor. Give each instance its own stable id (e.g. the pod name); unset: dynamic.
    #[arg(long, env = "FEEDBACK_SINK_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Address of the /metrics endpoint.
    #[arg(
        long,
        env = "FEEDBACK_SINK_METRICS_LISTEN",
        default_value = "127.0.0.1:9102"
    )]
    pub metrics_listen: SocketAddr,
}

/// The tables that hold rows of messages of `topic`.
pub fn tables_of(topic: &str, attributed: &str) -> Vec<&'static str> {
    if topic == attributed {
        vec!["interactions", "ratings", "dead_letters"]
    } else {
        vec!["dead_letters"]
    }
}

/// Refuses to start when a column the sink writes is missing or has another type.
pub async fn check_schema(ch: &Ch, url: &str, version: &str) -> anyhow::Result<()> {
    let problems = ch
        .check_columns(&[
            ("interactions", INTERACTION_COLUMNS),
            ("ratings", RATING_COLUMNS),
            ("dead_letters", DEAD_LETTER_COLUMNS),
            ("sink_progress", PROGRESS_COLUMNS),
            ("rollups", feedback_clickhouse::ROLLUP_COLUMNS),
        ])
        .await
        .context("cannot read system.columns")?;
    if problems.is_empty() {
        return Ok(());
    }
    let list = problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n");
    anyhow::bail!(
        "the ClickHouse schema at {url} (server {version}) does not match what the sink writes:\n{list}\n\
         run `feedback migrate` against the same server and database (it applies the missing migrations), \
         then start the sink again; if a column was changed by hand, change it back to the type named above"
    )
}

pub async fn run(args: Args, shutdown: Shutdown) -> anyhow::Result<()> {
    if args.batch_rows == 0 || args.batch_rows >= MAX_INSERT_BLOCK_ROWS {
        anyhow::bail!(
            "--batch-rows / FEEDBACK_SINK_BATCH_ROWS is {}; it must be between 1 and {} (ClickHouse's \
             max_insert_block_size) so that each INSERT lands whole or not at all",
            args.batch_rows,
            MAX_INSERT_BLOCK_ROWS - 1
        );
    }
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    let ch = args.common.clickhouse()?;
    let health = readiness(&args, &ch, &shutdown)?;
    feedback_runtime::metrics::serve(args.metrics_listen, registry.clone(), &health, &shutdown)
        .await?;
    args.common
        .kafka()
        .check_credentials(std::time::Duration::from_secs(15))?;
    let url = args.common.clickhouse_url.clone();
    let version =
        wait_for_clickhouse(&ch, &url, Duration::from_secs(args.startup_wait_secs)).await?;
    check_schema(&ch, &url, &version).await?;
    let attempt = || {
        consume(
            &args,
            &ch,
            &metrics,
            &health,
            &version,
            shutdown.requested(),
        )
    };
    let Err(g) = supervise(&shutdown, attempt).await else {
        return Ok(());
    };
    match g.error {
        ConsumeError::Other(e) => Err(e),
        ConsumeError::Fenced(f) => Err(anyhow::Error::new(f).context(format!(
            "fenced {} times within {}s: another sink runs with --instance-id {:?}; give every instance its own id",
            g.failures,
            g.window.as_secs(),
            args.instance_id.as_deref().unwrap_or("")
        ))),
    }
}

/// Fenced this many times within [`FENCE_WINDOW`]: another instance shares the id.
const FENCE_LIMIT: usize = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(120);

/// Why [`consume`] stopped: a fenced sink consumes again with a fresh consumer (its landed
/// positions come from ClickHouse, as after a restart); anything else ends the sink.
#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error(transparent)]
    Fenced(#[from] Fenced),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Restartable for ConsumeError {
    fn restart(&self) -> Option<Restart> {
        match self {
            ConsumeError::Fenced(_) => Some(Restart {
                kind: "fenced",
                max_restarts: FENCE_LIMIT - 1,
                window: FENCE_WINDOW,
                action: "fenced out of the consumer group (the session expired while Kafka was unreachable, or another sink uses the same --instance-id); consuming again with a fresh consumer",
            }),
            ConsumeError::Other(_) => None,
        }
    }
}

/// The group coordinator fenced this static member (`group.instance.id`): another sink has
/// the same `--instance-id`, or this one's session expired while Kafka was unreachable (a
/// broker restart longer than the session timeout), after which librdkafka rejoins under a
/// new member id and reports the fencing of the old one as fatal. Found by `feedback drill`:
/// the sink exited; it now consumes again with a fresh consumer (its landed positions come
/// from ClickHouse, as after a restart).
#[derive(Debug, thiserror::Error)]
#[error("fenced out of the consumer group: {0}")]
struct Fenced(String);

/// The sink is ready when Kafka serves its topics, ClickHouse answers, and its INSERTs
/// succeed (`landing`: failing while an INSERT is retried).
fn readiness(args: &Args, ch: &Ch, shutdown: &Shutdown) -> anyhow::Result<Health> {
    let health = Health::new("sink", &["kafka", "clickhouse", land::LANDING]);
    health.set_ok(land::LANDING, "nothing failed");
    let topics = args.common.topics();
    let probe = Arc::new(feedback_kafka::MetadataProbe::new(
        &args.common.kafka(),
        vec![topics.attributed, topics.deadletter],
    )?);
    health.probe(shutdown, "kafka", move || {
        feedback_runtime::health::kafka_probe(probe.clone())
    });
    let ch = ch.clone();
    health.probe(shutdown, "clickhouse", move || {
        feedback_runtime::health::clickhouse_probe(ch.clone())
    });
    Ok(health)
}

/// The server version, once ClickHouse answers; waits at most `wait` for it, so that a
/// sink started during a ClickHouse restart or outage does not exit at once (found by
/// `feedback drill`: a sink restarted during an outage crash-looped until it ended).
async fn wait_for_clickhouse(ch: &Ch, url: &str, wait: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut logged = false;
    loop {
        match ch.server_version().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                if !logged {
                    tracing::warn!(error = %e, "ClickHouse does not answer at {url} yet; waiting up to {}s", wait.as_secs());
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "ClickHouse does not answer at {url} (waited {}s, --startup-wait-secs); is it running? (deploy/local/stack.sh start)",
                    wait.as_secs()
                )))
            }
        }
    }
}

/// Consumes and lands until `shutdown` resolves; a fresh consumer and landing state each call.
async fn consume(
    args: &Args,
    ch: &Ch,
    metrics: &Metrics,
    health: &Health,
    version: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConsumeError> {
    let kafka = args.common.kafka();
    let topics = args.common.topics();
    let url = args.common.clickhouse_url.clone();
    let ch = ch.clone();
    let metrics = metrics.clone();
    let context = SinkContext::default();
    let mut config = kafka.read_committed_consumer(&args.group).from_earliest();
    if let Some(id) = &args.instance_id {
        config = config.static_member(id);
    }
    let consumer: StreamConsumer<SinkContext> = config
        // The attributed topic is written in transactions. With librdkafka's default
        // 500 ms fetch wait, records of a just-committed transaction reached this consumer
        // 3-4 s late on some partitions (measured with `feedback probe`: p50 3.7 s); at
        // 100 ms they arrive in tens of milliseconds, for ten idle fetches a second.
        .fetch_wait_max_ms(100)
        .session_timeout_ms(args.session_timeout_ms.into())
        .max_poll_interval_ms(300_000)
        .create_with_context(context.clone())
        .with_context(|| format!("cannot create the Kafka consumer for {}", kafka.brokers))?;
    consumer
        .subscribe(&[&topics.attributed, &topics.deadletter])
        .with_context(|| {
            format!(
                "cannot subscribe to {} and {}",
                topics.attributed, topics.deadletter
            )
        })?;
    let dlq = kafka
        .idempotent_producer()
        .with_context(|| format!("cannot create the Kafka producer for {}", kafka.brokers))?;
    tracing::info!(group = %args.group, clickhouse = %url, database = ch.database(), version = %version, "sink ready");

    let mut lander = Lander {
        ch,
        metrics,
        topics: topics.clone(),
        dlq,
        landed: HashMap::new(),
        max_backoff: Duration::from_millis(args.max_backoff_ms.max(100)),
        abandon_after: Duration::from_secs(args.abandon_secs.max(1)),
        instance: format!(
            "{:x}{:x}",
            std::process::id(),
            feedback_runtime::now_ms() & 0xffff_ffff
        ),
        seq: 0,
        health: health.clone(),
    };
    let flush_after = Duration::from_millis(args.flush_ms);
    let mut batch = Batch::default();
    tokio::pin!(shutdown);
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = batch.opened.map(|o| o + flush_after);
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => break,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded").into()).await }, if deadline.is_some() => {
                apply_revokes(&context, &mut batch, &mut lander);
                flush(&mut lander, &consumer, &mut batch).await;
            }
            _ = lag_tick.tick() => {
                tokio::task::block_in_place(|| lander.observe_lag(&consumer));
            }
            m = consumer.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        consumer_error(e)?;
                        // librdkafka reconnects by itself; do not spin on a stream of errors.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                apply_revokes(&context, &mut batch, &mut lander);
                let key = (m.topic().to_string(), m.partition());
                if !lander.landed.contains_key(&key) {
                    let m = m.detach();
                    if !lander.derive(std::slice::from_ref(&key)).await {
                        // ClickHouse stayed unreachable: read this partition again later.
                        lander.rewind(&consumer, &key.0, key.1, m.offset());
                        continue;
                    }
                    batch::add(&mut batch, &m, &lander);
                } else {
                    batch::add(&mut batch, &m, &lander);
                }
                if batch.rows() >= args.batch_rows || batch.bytes >= args.batch_bytes {
                    apply_revokes(&context, &mut batch, &mut lander);
                    flush(&mut lander, &consumer, &mut batch).await;
                }
            }
        }
    }
    apply_revokes(&context, &mut batch, &mut lander);
    flush(&mut lander, &consumer, &mut batch).await;
    tracing::info!("sink stopped");
    Ok(())
}

/// Lands `batch` inside a `sink_batch` span (the batch id of its INSERTs' query ids, its
/// offset range per partition, its row count); at debug level, names every landed id.
async fn flush(lander: &mut Lander, consumer: &StreamConsumer<SinkContext>, batch: &mut Batch) {
    if batch.span.is_empty() {
        lander.flush(consumer, batch).await;
        return;
    }
    let span = tracing::info_span!(
        "sink_batch",
        batch = %format!("{}-{}", lander.instance, lander.seq + 1),
        offsets = tracing::field::Empty,
        rows = batch.rows()
    );
    if !span.is_disabled() {
        span.record(
            "offsets",
            feedback_kafka::offset_ranges_text(&batch.span).as_str(),
        );
    }
    // Collected before landing (landing consumes the rows); only when debug is on.
    let ids: Option<Vec<(&'static str, String)>> =
        tracing::enabled!(tracing::Level::DEBUG).then(|| {
            let i = batch
                .interactions
                .iter()
                .map(|i| ("interactions", i.row.interaction_id.clone()));
            let r = batch
                .ratings
                .iter()
                .map(|r| ("ratings", r.row.rating_id.clone()));
            i.chain(r).collect()
        });
    let landed = lander.flush(consumer, batch).instrument(span.clone()).await;
    if let (true, Some(ids)) = (landed, ids) {
        for (table, id) in ids {
            tracing::debug!(parent: &span, id = %id, table, "landed");
        }
    }
}

/// Forgets everything about partitions revoked since the last look: their buffered rows
/// (the next owner lands them) and their landed state (read again if they come back).
fn apply_revokes(context: &SinkContext, batch: &mut Batch, lander: &mut Lander) {
    let revoked = match context.shared.lock() {
        Ok(mut s) => std::mem::take(&mut s.revoked),
        Err(_) => return,
    };
    if revoked.is_empty() {
        return;
    }
    batch.drop_partitions(&revoked);
    for k in &revoked {
        lander.landed.remove(k);
    }
}

/// A consumer error: fatal ones end the sink (restart it), transient ones (a broker
/// restarting, connections down) are logged and consumption goes on once librdkafka has
/// reconnected. Before this, a Kafka broker restart made every sink exit and crash-loop
/// until the broker answered again (found by `feedback drill`).
fn consumer_error(e: rdkafka::error::KafkaError) -> Result<(), ConsumeError> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    match e {
        KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId) => {
            Err(Fenced(e.to_string()).into())
        }
        KafkaError::MessageConsumptionFatal(_) => Err(anyhow::Error::new(e)
            .context("fatal Kafka consumer error")
            .into()),
        e => {
            tracing::warn!(error = %e, "Kafka consumer error; going on once Kafka answers again");
            Ok(())
        }
    }
}

#[cfg(test)]
mod consumer_error_tests {
    use super::consumer_error;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    #[test]
    fn only_fatal_consumer_errors_end_the_sink() {
        for code in [
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::CoordinatorNotAvailable,
        ] {
            assert!(consumer_error(KafkaError::MessageConsumption(code)).is_ok());
        }
        let fenced = consumer_error(KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::FencedInstanceId,
        ))
        .unwrap_err();
        assert!(matches!(fenced, super::ConsumeError::Fenced(_)), "{fenced}");
        let other = consumer_error(KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal))
            .unwrap_err();
        assert!(!matches!(other, super::ConsumeError::Fenced(_)), "{other}");
    }
}
