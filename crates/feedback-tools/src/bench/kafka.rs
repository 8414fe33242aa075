//! The raw Kafka limits on this machine, on the same encoded messages as the pipeline:
//! librdkafka produce and consume, a transactional consume → produce pass-through with the
//! attributor's settings, and Kafka's own perf tools (ProducerPerformance /
//! ConsumerPerformance from the Maven jars).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use feedback_kafka::KafkaConfig;
use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::procs::{Proc, ProcCost};

/// One message to produce: which input topic, key, encoded body.
pub struct Msg {
    pub rating: bool,
    pub key: String,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct Counting {
    failed: AtomicU64,
    delivered: AtomicU64,
}

#[derive(Clone, Default)]
struct CountingContext(Arc<Counting>);

impl ClientContext for CountingContext {}
impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Produces every message with the components' producer settings (idempotent, acks=all,
/// lz4, linger 5 ms); returns the seconds from the first send until all are acknowledged.
pub fn produce(
    kafka: &KafkaConfig,
    interactions: &str,
    ratings: &str,
    msgs: &[Msg],
    bar: &ProgressBar,
) -> anyhow::Result<f64> {
    let ctx = CountingContext::default();
    let producer: ThreadedProducer<CountingContext> = kafka
        .idempotent_producer_spec(60_000)
        .create_with_context(ctx.clone())
        .map_err(|e| {
            anyhow::anyhow!("cannot create a Kafka producer for {}: {e}", kafka.brokers)
        })?;
    let start = Instant::now();
    for (n, m) in msgs.iter().enumerate() {
        let topic = if m.rating { ratings } else { interactions };
        let mut rec = BaseRecord::to(topic).key(&m.key).payload(&m.bytes);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => anyhow::bail!("cannot produce to {topic}: {e}"),
            }
        }
        if (n as u64).is_multiple_of(10_000) {
            bar.set_position(n as u64);
        }
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(120)).map_err(|e| {
        anyhow::anyhow!("Kafka did not acknowledge every message within 120 s: {e}")
    })?;
    let secs = start.elapsed().as_secs_f64();
    let failed = ctx.0.failed.load(Ordering::Relaxed);
    anyhow::ensure!(
        failed == 0,
        "{failed} messages were not acknowledged by Kafka"
    );
    Ok(secs)
}

fn assign_all(consumer: &BaseConsumer, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(t, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(())
}

/// Reads `expected` messages from the start of `topics` (read_committed, like every
/// component); returns the seconds from the first message to the last.
pub fn consume(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[&str],
    partitions: i32,
    expected: u64,
    bar: &ProgressBar,
) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = kafka.read_committed_consumer(group).create().map_err(|e| {
        anyhow::anyhow!("cannot create a Kafka consumer for {}: {e}", kafka.brokers)
    })?;
    assign_all(&consumer, topics, partitions)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    while n < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "read only {n} of {expected} messages from {} within 300 s",
            topics.join(", ")
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            std::hint::black_box(m.payload());
            first.get_or_insert_with(Instant::now);
            n += 1;
            if n.is_multiple_of(10_000) {
                bar.set_position(n);
            }
        }
    }
    Ok(first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
}

/// The attributor's transaction pattern without the attribution: read_committed consumer,
/// transactional producer with the attributor's settings (idempotent, acks=all, lz4, linger
/// 5 ms), batches of at most `batch_max` messages or `batch_ms`, each one transaction
/// holding the copies and the consumed offsets. Returns seconds from the first message read
/// to the last transaction committed.
#[allow(clippy::too_many_arguments)]
pub fn pass_through(
    kafka: &KafkaConfig,
    group: &str,
    inputs: &[&str],
    output: &str,
    partitions: i32,
    expected: u64,
    batch_max: usize,
    batch_ms: u64,
    bar: &ProgressBar,
) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = kafka
        .read_committed_consumer(group)
        .from_earliest()
        .create()?;
    assign_all(&consumer, inputs, partitions)?;
    let producer: ThreadedProducer<CountingContext> = kafka
        .transactional_producer_spec(&format!("{group}-0"), 10_000)
        .create_with_context(CountingContext::default())?;
    use rdkafka::producer::Producer;
    let t = Duration::from_secs(30);
    producer.init_transactions(t)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    while n < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pass-through copied only {n} of {expected} messages within 300 s"
        );
        let opened = Instant::now();
        let mut batch = Vec::new();
        while batch.len() < batch_max && opened.elapsed() < Duration::from_millis(batch_ms) {
            match consumer.poll(Duration::from_millis(10)) {
                Some(m) => batch.push(m?.detach()),
                None if !batch.is_empty() => break,
                None => {}
            }
        }
        if batch.is_empty() {
            continue;
        }
        first.get_or_insert(opened);
        producer.begin_transaction()?;
        let mut offsets = TopicPartitionList::new();
        for m in &batch {
            let mut rec = BaseRecord::to(output)
                .partition(m.partition())
                .payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => anyhow::bail!("cannot produce to {output}: {e}"),
                }
            }
            offsets.add_partition_offset(
                m.topic(),
                m.partition(),
                Offset::Offset(m.offset() + 1),
            )?;
        }
        let gm = consumer
            .group_metadata()
            .ok_or_else(|| anyhow::anyhow!("no consumer group metadata"))?;
        producer.send_offsets_to_transaction(&offsets, &gm, t)?;
        producer.commit_transaction(t)?;
        n += batch.len() as u64;
        bar.set_position(n);
    }
    Ok(first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
}

/// What one of Kafka's perf tools reported.
pub struct PerfResult {
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub cost: ProcCost,
}

fn java(libs: &Path) -> (std::path::PathBuf, Vec<String>) {
    (
        "java".into(),
        vec![
            "-Xms256m".into(),
            "-Xmx1g".into(),
            "-XX:+UseG1GC".into(),
            "-cp".into(),
            format!("{}/*", libs.display()),
        ],
    )
}

/// `org.apache.kafka.tools.ProducerPerformance`: `records` records of `record_size` bytes
/// (the mean size of our encoded events; its payloads are random letters, since binary Avro
/// cannot go through its newline-delimited payload file) with the components' producer
/// settings.
pub fn producer_perf(
    libs: &Path,
    brokers: &str,
    topic: &str,
    records: u64,
    record_size: usize,
    log_dir: &Path,
) -> anyhow::Result<PerfResult> {
    let (prog, mut args) = java(libs);
    args.extend(
        [
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            &records.to_string(),
            "--record-size",
            &record_size.to_string(),
            "--throughput",
            "-1",
            "--producer-props",
            &format!("bootstrap.servers={brokers}"),
            "acks=all",
            "enable.idempotence=true",
            "linger.ms=5",
            "compression.type=lz4",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proc::spawn("kafka-producer-perf", &prog, &args, &[], log_dir)?;
    let cost = p.wait(Duration::from_secs(300), log_dir)?;
    let out = std::fs::read_to_string(log_dir.join("kafka-producer-perf.log"))?;
    // "300000 records sent, 151057.4 records/sec (13.21 MB/sec), ..."
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("records sent") && l.contains("records/sec"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ProducerPerformance printed no summary; see {}/kafka-producer-perf.log",
                log_dir.display()
            )
        })?;
    let num = |after: &str, before: &str| -> Option<f64> {
        let s = line.split(after).next()?;
        let _ = before;
        s.rsplit([' ', '(']).next()?.trim().parse().ok()
    };
    let rps = num(" records/sec", "").unwrap_or(f64::NAN);
    let mbs = num(" MB/sec", "").unwrap_or(f64::NAN);
    Ok(PerfResult {
        records_per_sec: rps,
        mb_per_sec: mbs,
        cost,
    })
}

/// `org.apache.kafka.tools.ConsumerPerformance` reading `records` messages of `topic`.
pub fn consumer_perf(
    libs: &Path,
    brokers: &str,
    topic: &str,
    group: &str,
    records: u64,
    log_dir: &Path,
) -> anyhow::Result<PerfResult> {
    let (prog, mut args) = java(libs);
    args.extend(
        [
            "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server",
            brokers,
            "--topic",
            topic,
            "--group",
            group,
            "--messages",
            &records.to_string(),
            "--timeout",
            "60000",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proc::spawn("kafka-consumer-perf", &prog, &args, &[], log_dir)?;
    let cost = p.wait(Duration::from_secs(300), log_dir)?;
    let out = std::fs::read_to_string(log_dir.join("kafka-consumer-perf.log"))?;
    // Header "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
    // nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec", then values.
    let lines: Vec<&str> = out.lines().collect();
    let h = lines
        .iter()
        .position(|l| l.contains("nMsg.sec"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ConsumerPerformance printed no summary; see {}/kafka-consumer-perf.log",
                log_dir.display()
            )
        })?;
    let header: Vec<&str> = lines[h].split(',').map(str::trim).collect();
    let values: Vec<&str> = lines
        .get(h + 1)
        .map(|l| l.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let get = |name: &str| -> f64 {
        header
            .iter()
            .position(|c| *c == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Ok(PerfResult {
        records_per_sec: get("fetch.nMsg.sec"),
        mb_per_sec: get("fetch.MB.sec"),
        cost,
    })
}

/// A reader of a consumer group's committed positions (it never joins the group).
pub struct GroupPositions {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl GroupPositions {
    pub fn new(
        kafka: &KafkaConfig,
        group: &str,
        topics: &[&str],
        partitions: i32,
    ) -> anyhow::Result<GroupPositions> {
        let consumer: BaseConsumer = kafka.group_client(group).create()?;
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            for p in 0..partitions {
                tpl.add_partition(t, p);
            }
        }
        Ok(GroupPositions { consumer, tpl })
    }

    /// Messages before the committed positions, summed over the partitions (input
    /// topics written without transactions: offset = message count).
    pub fn committed(&self) -> anyhow::Result<u64> {
        let c = self
            .consumer
            .committed_offsets(self.tpl.clone(), Duration::from_secs(10))?;
        Ok(c.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o.max(0) as u64,
                _ => 0,
            })
            .sum())
    }
}
