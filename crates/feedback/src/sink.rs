//! `feedback sink`: consume attributed events (and dead letters) and land them in
//! ClickHouse, one INSERT per table per batch, batches bounded by rows, bytes and time.
//!
//! Delivery (this version): at-least-once. Offsets are committed only after every INSERT
//! of the batch succeeded; failed INSERTs are retried with capped exponential backoff while
//! Kafka holds the backlog. (Exactly-once landing is tracked separately.)

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use feedback_clickhouse::{Ch, DeadLetterRow, InteractionRow, RatingRow, Row};
use feedback_events::codec::{decode, Decoded};
use feedback_kafka::rdkafka::consumer::StreamConsumer;
use feedback_kafka::rdkafka::message::{BorrowedMessage, Headers};
use feedback_kafka::rdkafka::Message;
use feedback_kafka::{commit_positions, Positions};
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::config::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Consumer group.
    #[arg(long, env = "FEEDBACK_SINK_GROUP", default_value = "feedback-sink")]
    pub group: String,
    /// Flush when a batch holds this many rows.
    #[arg(long, env = "FEEDBACK_SINK_BATCH_ROWS", default_value_t = 50_000)]
    pub batch_rows: usize,
    /// Flush when a batch holds this many message bytes.
    #[arg(long, env = "FEEDBACK_SINK_BATCH_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub batch_bytes: usize,
    /// Flush a non-empty batch at the latest this long after its first row, in milliseconds.
    #[arg(long, env = "FEEDBACK_SINK_FLUSH_MS", default_value_t = 500)]
    pub flush_ms: u64,
    /// Address of the /metrics endpoint.
    #[arg(
        long,
        env = "FEEDBACK_SINK_METRICS_LISTEN",
        default_value = "127.0.0.1:9102"
    )]
    pub metrics_listen: SocketAddr,
}

struct Metrics {
    rows: IntCounterVec,
    bytes: IntCounter,
    insert: Histogram,
    batch: Histogram,
    retries: IntCounter,
    dead: IntCounterVec,
    freshness: Gauge,
}

impl Metrics {
    fn new(r: &Registry) -> anyhow::Result<Self> {
        let m = Metrics {
            rows: IntCounterVec::new(
                Opts::new(
                    "feedback_sink_rows_inserted_total",
                    "Rows inserted into ClickHouse by table",
                ),
                &["table"],
            )?,
            bytes: IntCounter::new(
                "feedback_sink_message_bytes_total",
                "Kafka message bytes landed",
            )?,
            insert: Histogram::with_opts(
                HistogramOpts::new(
                    "feedback_sink_insert_seconds",
                    "Duration of one batch's INSERTs, retries included",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
            batch: Histogram::with_opts(
                HistogramOpts::new("feedback_sink_batch_rows", "Rows per batch").buckets(vec![
                    1.0, 10.0, 100.0, 1000.0, 10_000.0, 50_000.0, 100_000.0,
                ]),
            )?,
            retries: IntCounter::new(
                "feedback_sink_insert_retries_total",
                "INSERTs retried after an error",
            )?,
            dead: IntCounterVec::new(
                Opts::new(
                    "feedback_sink_dead_letters_total",
                    "Dead letters landed, by reason",
                ),
                &["reason"],
            )?,
            freshness: Gauge::new(
                "feedback_sink_freshness_seconds",
                "Now minus the newest event time landed, at the last flush",
            )?,
        };
        r.register(Box::new(m.rows.clone()))?;
        r.register(Box::new(m.bytes.clone()))?;
        r.register(Box::new(m.insert.clone()))?;
        r.register(Box::new(m.batch.clone()))?;
        r.register(Box::new(m.retries.clone()))?;
        r.register(Box::new(m.dead.clone()))?;
        r.register(Box::new(m.freshness.clone()))?;
        Ok(m)
    }
}

#[derive(Default)]
struct Batch {
    interactions: Vec<InteractionRow>,
    ratings: Vec<RatingRow>,
    dead: Vec<DeadLetterRow>,
    bytes: usize,
    newest_event_ms: i64,
    offsets: Positions,
    opened: Option<Instant>,
}

impl Batch {
    fn rows(&self) -> usize {
        self.interactions.len() + self.ratings.len() + self.dead.len()
    }
}

fn header(m: &BorrowedMessage<'_>, key: &str) -> String {
    m.headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .unwrap_or_default()
}

fn add(batch: &mut Batch, m: &BorrowedMessage<'_>, deadletter_topic: &str) {
    let payload = m.payload().unwrap_or(&[]);
    batch.bytes += payload.len();
    batch
        .offsets
        .insert((m.topic().to_string(), m.partition()), m.offset());
    batch.opened.get_or_insert_with(Instant::now);
    if m.topic() == deadletter_topic {
        batch.dead.push(DeadLetterRow {
            received_at: DeadLetterRow::now_secs(),
            component: header(m, "component"),
            reason: header(m, "reason"),
            error: header(m, "error"),
            source_topic: header(m, "source_topic"),
            source_partition: header(m, "source_partition").parse().unwrap_or(-1),
            source_offset: header(m, "source_offset").parse().unwrap_or(-1),
            payload: String::from_utf8_lossy(payload).into_owned(),
        });
        return;
    }
    match decode(payload) {
        Ok(Decoded::Attributed(a)) => {
            batch.newest_event_ms = batch.newest_event_ms.max(a.event.occurred_at());
            match Row::from(a) {
                Row::Interaction(r) => batch.interactions.push(r),
                Row::Rating(r) => batch.ratings.push(r),
            }
        }
        other => {
            let (reason, error) = match other {
                Err(e) => (e.code().to_string(), e.to_string()),
                Ok(_) => (
                    "wrong_schema".to_string(),
                    "not an attributed event".to_string(),
                ),
            };
            tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), reason = %reason, error = %error, "dead-lettering undecodable message");
            batch.dead.push(DeadLetterRow {
                received_at: DeadLetterRow::now_secs(),
                component: "sink".into(),
                reason,
                error,
                source_topic: m.topic().to_string(),
                source_partition: m.partition(),
                source_offset: m.offset(),
                payload: String::from_utf8_lossy(payload).into_owned(),
            });
        }
    }
}

async fn insert_with_retry<T: clickhouse::Row + serde::Serialize>(
    ch: &Ch,
    table: &str,
    rows: &[T],
    metrics: &Metrics,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match ch.insert(table, rows).await {
            Ok(()) => {
                metrics
                    .rows
                    .with_label_values(&[table])
                    .inc_by(rows.len() as u64);
                return;
            }
            Err(e) => {
                metrics.retries.inc();
                tracing::warn!(error = %e, table, rows = rows.len(), retry_in_ms = backoff.as_millis() as u64, "INSERT failed; retrying (Kafka keeps the backlog)");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn flush(
    ch: &Ch,
    consumer: &StreamConsumer,
    batch: &mut Batch,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    if batch.offsets.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    insert_with_retry(ch, "interactions", &batch.interactions, metrics).await;
    insert_with_retry(ch, "ratings", &batch.ratings, metrics).await;
    insert_with_retry(ch, "dead_letters", &batch.dead, metrics).await;
    metrics.insert.observe(started.elapsed().as_secs_f64());
    metrics.batch.observe(batch.rows() as f64);
    metrics.bytes.inc_by(batch.bytes as u64);
    for d in &batch.dead {
        metrics.dead.with_label_values(&[d.reason.as_str()]).inc();
    }
    if batch.newest_event_ms > 0 {
        let now = crate::now_ms();
        metrics
            .freshness
            .set((now - batch.newest_event_ms) as f64 / 1000.0);
    }
    commit_positions(consumer, &batch.offsets)
        .context("cannot commit consumer offsets after a durable INSERT")?;
    *batch = Batch::default();
    Ok(())
}

pub async fn run(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    crate::metrics::serve(args.metrics_listen, registry.clone()).await?;
    let kafka = args.common.kafka();
    let topics = args.common.topics();
    let ch = args.common.clickhouse()?;
    let version = ch
        .server_version()
        .await
        .context("ClickHouse does not answer; is it running? (deploy/local/stack.sh start)")?;
    let have: Vec<String> = ch
        .fetch("SELECT name FROM system.tables WHERE database = '{db}'")
        .await?;
    for t in ["interactions", "ratings", "dead_letters"] {
        if !have.iter().any(|h| h == t) {
            anyhow::bail!("table {}.{t} is missing on ClickHouse {version} at {}; run `feedback migrate` first", ch.database(), args.common.clickhouse_url);
        }
    }
    let consumer = kafka
        .consumer(
            &args.group,
            45_000,
            &[&topics.attributed, &topics.deadletter],
        )
        .map_err(anyhow::Error::msg)?;
    tracing::info!(group = %args.group, clickhouse = %args.common.clickhouse_url, database = ch.database(), version = %version, "sink ready");
    tokio::pin!(shutdown);
    let flush_after = Duration::from_millis(args.flush_ms);
    let mut batch = Batch::default();
    loop {
        let deadline = batch.opened.map(|o| o + flush_after);
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded").into()).await }, if deadline.is_some() => {
                flush(&ch, &consumer, &mut batch, &metrics).await?;
            }
            m = consumer.recv() => {
                let m = m.context("Kafka consumer error")?;
                add(&mut batch, &m, &topics.deadletter);
                if batch.rows() >= args.batch_rows || batch.bytes >= args.batch_bytes {
                    flush(&ch, &consumer, &mut batch, &metrics).await?;
                }
            }
        }
    }
    flush(&ch, &consumer, &mut batch, &metrics).await?;
    tracing::info!("sink stopped");
    Ok(())
}
