//! The transactional consume → attribute → produce loop.
//!
//! Each round: collect a batch by polling (rebalance callbacks run only here, so never
//! inside a transaction); then, in one transaction, feed the batch to the engine of each
//! message's partition number, write the attributed events, dead letters and state
//! changes, expire what the horizon passed (orphans), add the consumed offsets, commit.
//! If the transaction cannot commit it is aborted and the in-memory state is thrown away
//! and restored from the changelog, and the consumer is rewound to the committed offsets,
//! so memory never holds effects that Kafka does not.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use feedback_attribution::engine::Outcome;
use feedback_attribution::{Engine, Ownership};
use feedback_events::codec::{decode, Decoded};
use feedback_events::json::{self, FieldError, Limits};
use feedback_events::{AttributedEvent, Encoded, Event, SourceRef};
use feedback_kafka::deadletter::{Component, DeadLetter, Reason};
use feedback_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use feedback_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use feedback_kafka::rdkafka::message::{OwnedHeaders, OwnedMessage};
use feedback_kafka::rdkafka::producer::{
    BaseRecord, DefaultProducerContext, Producer, ThreadedProducer,
};
use feedback_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use feedback_kafka::{KafkaConfig, Topics};

use super::changelog::{restore, Ctx, Rebalanced};
use super::metrics::Metrics;
use feedback_runtime::health::Health;

/// Readiness checks set by the worker: input partitions assigned, transactions committing.
pub const PARTITIONS: &str = "partitions";
pub const TRANSACTIONS: &str = "transactions";
use super::Args;
use feedback_runtime::now_ms;
use feedback_runtime::shutdown::Shutdown;

/// The dead-letter text of an event that breaks the collector's field rules.
fn contract_error(errors: &[FieldError]) -> String {
    let list: Vec<String> = errors
        .iter()
        .take(10)
        .map(|e| format!("`{}` {}", e.field, e.reason))
        .collect();
    let more = match errors.len() {
        n if n > 10 => format!(" (and {} more)", n - 10),
        _ => String::new(),
    };
    format!(
        "event breaks the collector's field rules: {}{more}; producers must send only what the collector would accept",
        list.join("; ")
    )
}

const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// A cheap change detector for the ownership directory: names, sizes and mtimes.
fn dir_stamp(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
                .map(|e| {
                    let m = e.metadata().ok();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        m.as_ref().map(|m| m.len()).unwrap_or(0),
                        m.and_then(|m| m.modified().ok()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn key_of(a: &AttributedEvent) -> &str {
    match &a.event {
        Event::Interaction(i) => &i.interaction_id,
        Event::Rating(r) => r.key(),
    }
}

/// Counts to publish once the transaction that produced them commits.
#[derive(Default)]
struct Pending {
    /// Inputs and duplicates by kind, counted when their transaction commits (an aborted
    /// batch is read again, and must not be counted twice).
    inputs: HashMap<&'static str, u64>,
    duplicates: HashMap<&'static str, u64>,
    out: HashMap<(&'static str, &'static str, String), u64>,
    orphans: u64,
    dead: HashMap<&'static str, u64>,
    join_waits: Vec<i64>,
}

enum TxnError {
    /// The transaction was aborted (or must be): state and positions are rewound.
    Abortable(anyhow::Error),
    /// The producer cannot continue (fenced by another instance with the same id).
    Fatal(anyhow::Error),
}

pub struct Worker {
    args: Args,
    kafka: KafkaConfig,
    topics: Topics,
    changelog: String,
    metrics: Metrics,
    consumer: BaseConsumer<Ctx>,
    producer: ThreadedProducer<DefaultProducerContext>,
    ownership: Arc<Ownership>,
    stamp: Vec<(String, u64, Option<SystemTime>)>,
    last_reload_check: Instant,
    last_stats: Instant,
    horizon_ms: i64,
    /// Input partition number → its engine (restored from the changelog).
    engines: HashMap<i32, Engine>,
    /// Engines of revoked partitions, with the changelog end offset when they were
    /// revoked: reused if the partition comes back and nobody wrote to it since.
    stale: HashMap<i32, (Engine, i64)>,
    /// Input partition numbers currently assigned (either topic).
    assigned: BTreeSet<i32>,
    /// Readiness: `partitions` (assigned) and `transactions` (committing) are set here.
    health: Health,
    buf: Vec<u8>,
    /// The collector's field rules, enforced on every input event.
    limits: Limits,
}

impl Worker {
    pub fn start(args: Args, metrics: Metrics, health: Health) -> anyhow::Result<Worker> {
        let kafka = args.common.kafka();
        kafka.check_credentials(std::time::Duration::from_secs(15))?;
        let topics = args.common.topics();
        let changelog = args.changelog_topic();
        let ownership = Ownership::load_dir(&args.ownership_dir).map_err(anyhow::Error::msg)?;
        tracing::info!(version = %ownership.version, teams = ownership.teams.len(), claims = ownership.claims.len(), "ownership loaded");
        metrics
            .ownership
            .with_label_values(&[&ownership.version])
            .set(1);
        let stamp = dir_stamp(&args.ownership_dir);
        let horizon_ms = args.horizon_secs.saturating_mul(1000);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let t = Duration::from_secs(15);
        let (pi, replication) =
            feedback_kafka::admin::describe_topic(&kafka, &topics.interactions, t)?.ok_or_else(
                || {
                    anyhow::anyhow!(
                        "input topic {} does not exist; create the topics with `feedback topics`",
                        topics.interactions
                    )
                },
            )?;
        let (pr, _) = feedback_kafka::admin::describe_topic(&kafka, &topics.ratings, t)?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "input topic {} does not exist; create the topics with `feedback topics`",
                    topics.ratings
                )
            })?;
        if pi != pr {
            anyhow::bail!(
                "{} has {pi} partitions but {} has {pr}: a rating and its interaction must land on the same partition number, so both topics need the same count",
                topics.interactions,
                topics.ratings
            );
        }
        let retention = (horizon_ms.saturating_mul(2)).max(3_600_000).to_string();
        let created = rt.block_on(feedback_kafka::admin::ensure_topic(
            &kafka,
            &changelog,
            pi,
            replication,
            &[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", &retention),
                ("compression.type", "lz4"),
            ],
        ))?;
        if created {
            tracing::info!(topic = %changelog, partitions = pi, "created the state changelog topic");
        }
        // A just-created topic can be missing from the metadata for a moment: ask again,
        // for at most ten seconds.
        let mut described = None;
        for _ in 0..20 {
            described = feedback_kafka::admin::describe_topic(&kafka, &changelog, t)?;
            if described.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        match described {
            Some((pc, _)) if pc == pi => {}
            Some((pc, _)) => anyhow::bail!(
                "state changelog {changelog} has {pc} partitions but the input topics have {pi}; partition state follows partition numbers, so they must match (delete the changelog only if you accept losing the join and dedup state)"
            ),
            None => anyhow::bail!("state changelog {changelog} does not exist 10 s after creating it; check the broker's log, and that this user may create and describe topics"),
        }

        let ctx = Ctx {
            events: Mutex::new(Vec::new()),
            lag: metrics.lag.clone(),
        };
        let consumer: BaseConsumer<Ctx> = kafka
            .read_committed_consumer(&args.group)
            .from_earliest()
            // Range assignment gives one member the same partition number of both input
            // topics, which is what co-partitioned state needs.
            .range_assignment()
            // Static membership: a restarted instance takes its partitions back at once
            // instead of waiting for the group to notice the old member is gone.
            .static_member(&args.instance_name())
            .session_timeout_ms(10_000)
            .heartbeat_interval_ms(1000)
            .statistics_interval_ms(5000)
            .create_with_context(ctx)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the Kafka consumer for {}: {e}",
                    kafka.brokers
                )
            })?;
        consumer
            .subscribe(&[&topics.interactions, &topics.ratings])
            .map_err(|e| anyhow::anyhow!("cannot subscribe to the input topics: {e}"))?;
        let txn_id = format!("{}-{}", args.group, args.instance_name());
        let producer: ThreadedProducer<DefaultProducerContext> = kafka
            .transactional_producer_spec(&txn_id, args.transaction_timeout_ms)
            .create()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the transactional producer for {}: {e}",
                    kafka.brokers
                )
            })?;
        producer
            .init_transactions(Duration::from_secs(60))
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot initialise Kafka transactions as {txn_id:?} on {}: {e}",
                    kafka.brokers
                )
            })?;
        tracing::info!(group = %args.group, transactional_id = %txn_id, input = ?[&topics.interactions, &topics.ratings], output = %topics.attributed, changelog = %changelog, partitions = pi, "attributor ready");
        Ok(Worker {
            args,
            kafka,
            topics,
            changelog,
            metrics,
            consumer,
            producer,
            ownership: Arc::new(ownership),
            stamp,
            last_reload_check: Instant::now(),
            last_stats: Instant::now(),
            horizon_ms,
            engines: HashMap::new(),
            stale: HashMap::new(),
            assigned: BTreeSet::new(),
            health,
            buf: Vec::with_capacity(512),
            limits: Limits::default(),
        })
    }

    pub fn run(mut self, stop: &Shutdown) -> Result<(), WorkerError> {
        let batch_wait = Duration::from_millis(self.args.batch_ms);
        let mut batch: Vec<OwnedMessage> = Vec::with_capacity(self.args.batch_max);
        // Transactions of this worker, numbered from 1: the `attributor_batch` span.
        let mut txn: u64 = 0;
        while !stop.is_requested() {
            self.housekeeping();
            batch.clear();
            let opened = Instant::now();
            while batch.len() < self.args.batch_max {
                let wait = if batch.is_empty() {
                    Duration::from_millis(200)
                } else {
                    batch_wait.saturating_sub(opened.elapsed())
                };
                let polled = self.consumer.poll(wait).map(|r| r.map(|m| m.detach()));
                self.apply_rebalances(&mut batch)?;
                match polled {
                    None => break,
                    Some(Ok(m)) => {
                        if self.assigned.contains(&m.partition()) {
                            batch.push(m);
                        }
                    }
                    Some(Err(e)) => {
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId) {
                            return Err(FencedInstance {
                                group: self.args.group.clone(),
                                instance: self.args.instance_name(),
                                error: e.to_string(),
                            }
                            .into());
                        }
                        tracing::warn!(error = %e, "Kafka consumer error");
                        break;
                    }
                }
                if stop.is_requested() || opened.elapsed() >= batch_wait {
                    break;
                }
            }
            self.apply_rebalances(&mut batch)?;
            if batch.is_empty() && !self.orphans_due() {
                continue;
            }
            txn += 1;
            let span = batch_span(txn, &batch);
            let _entered = span.enter();
            match self.transact(&batch) {
                Ok(p) => {
                    self.health.set_ok(TRANSACTIONS, "the last one committed");
                    self.metrics
                        .transactions
                        .with_label_values(&["committed"])
                        .inc();
                    self.publish(p);
                }
                Err(TxnError::Fatal(e)) => return Err(e.into()),
                Err(TxnError::Abortable(e)) => {
                    self.metrics
                        .transactions
                        .with_label_values(&["aborted"])
                        .inc();
                    tracing::warn!(error = %format!("{e:#}"), "transaction aborted; restoring state from the changelog and rewinding to the committed offsets");
                    self.health.set_failing(
                        TRANSACTIONS,
                        format!(
                            "the last transaction was aborted ({e:#}); rewinding and trying again"
                        ),
                    );
                    if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
                        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::State) {
                            // librdkafka made the producer unusable (a fatal error, e.g.
                            // INVALID_TXN_STATE when the coordinator expired the transaction
                            // during a broker restart): only a new producer can go on.
                            return Err(ProducerLost(format!(
                                "cannot abort the Kafka transaction: {e}"
                            ))
                            .into());
                        }
                    }
                    self.rewind()?;
                    // State and positions are consistent again: the next batch can commit.
                    self.health
                        .set_ok(TRANSACTIONS, "rewound after an aborted transaction");
                }
            }
        }
        tracing::info!("attributor stopping");
        self.consumer.unsubscribe();
        Ok(())
    }

    fn publish(&mut self, p: Pending) {
        for (kind, n) in p.inputs {
            self.metrics.events_in.with_label_values(&[kind]).inc_by(n);
        }
        for (kind, n) in p.duplicates {
            self.metrics.duplicates.with_label_values(&[kind]).inc_by(n);
        }
        for ((kind, method, team), n) in p.out {
            self.metrics
                .events_out
                .with_label_values(&[kind, method, &team])
                .inc_by(n);
        }
        self.metrics.orphans.inc_by(p.orphans);
        for (reason, n) in p.dead {
            self.metrics
                .dead_letters
                .with_label_values(&[reason])
                .inc_by(n);
        }
        for w in p.join_waits {
            self.metrics.join_latency.observe(w as f64 / 1000.0);
        }
    }

    fn housekeeping(&mut self) {
        if self.last_reload_check.elapsed() >= Duration::from_millis(self.args.ownership_reload_ms)
        {
            self.last_reload_check = Instant::now();
            let now = dir_stamp(&self.args.ownership_dir);
            if now != self.stamp {
                self.stamp = now;
                match Ownership::load_dir(&self.args.ownership_dir) {
                    Ok(o) if o.version != self.ownership.version => {
                        tracing::info!(old = %self.ownership.version, new = %o.version, "ownership files changed; new version in force");
                        self.metrics.ownership.reset();
                        self.metrics
                            .ownership
                            .with_label_values(&[&o.version])
                            .set(1);
                        self.ownership = Arc::new(o);
                        for e in self.engines.values_mut() {
                            e.set_ownership(self.ownership.clone());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "ownership files changed but do not load; keeping version {}", self.ownership.version)
                    }
                }
            }
        }
        if self.last_stats.elapsed() >= Duration::from_secs(2) {
            self.last_stats = Instant::now();
            let (mut i, mut r, mut p, mut bytes) = (0, 0, 0, 0);
            for e in self.engines.values() {
                let s = e.stats();
                i += s.interactions;
                r += s.ratings;
                p += s.parked;
                bytes += e.approx_bytes();
            }
            self.metrics
                .state_keys
                .with_label_values(&["interaction"])
                .set(i as i64);
            self.metrics
                .state_keys
                .with_label_values(&["rating"])
                .set(r as i64);
            self.metrics.parked.set(p as i64);
            self.metrics.state_bytes.set(bytes as i64);
            self.metrics.partitions.set(self.assigned.len() as i64);
        }
    }

    /// Whether some parked rating's wait is over (checked without a transaction).
    fn orphans_due(&self) -> bool {
        let w = self.watermark();
        w != i64::MIN
            && self
                .engines
                .values()
                .any(|e| e.has_expired_parked(w.saturating_sub(self.horizon_ms)))
    }

    fn watermark(&self) -> i64 {
        self.engines
            .values()
            .map(|e| e.watermark())
            .max()
            .unwrap_or(i64::MIN)
    }

    /// Takes the rebalance notices of the last poll into account: drops the state and the
    /// collected messages of revoked partitions, restores the state of assigned ones.
    fn apply_rebalances(&mut self, batch: &mut Vec<OwnedMessage>) -> anyhow::Result<()> {
        let events: Vec<Rebalanced> = match self.consumer.context().events.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => anyhow::bail!("rebalance notices poisoned"),
        };
        if events.is_empty() {
            return Ok(());
        }
        for ev in events {
            match ev {
                Rebalanced::Revoked(list) => {
                    let revoked: BTreeSet<i32> = list.iter().map(|(_, p)| *p).collect();
                    tracing::info!(partitions = ?revoked, "partitions revoked");
                    batch.retain(|m| !revoked.contains(&m.partition()));
                    for (t, p) in &list {
                        let _ = self.metrics.lag.remove_label_values(&[t, &p.to_string()]);
                    }
                    for p in &revoked {
                        self.assigned.remove(p);
                        if let Some(e) = self.engines.remove(p) {
                            if let Some(end) = self.changelog_end(*p) {
                                self.stale.insert(*p, (e, end));
                            }
                        }
                    }
                }
                Rebalanced::Lost => {
                    batch.clear();
                    self.engines.clear();
                    self.stale.clear();
                    self.assigned.clear();
                }
                Rebalanced::Assigned(list) => {
                    let parts: BTreeSet<i32> = list.iter().map(|(_, p)| *p).collect();
                    for t in [&self.topics.interactions, &self.topics.ratings] {
                        let mine: BTreeSet<i32> = list
                            .iter()
                            .filter(|(topic, _)| topic == t)
                            .map(|(_, p)| *p)
                            .collect();
                        if mine != parts {
                            tracing::warn!(topic = %t, partitions = ?mine, all = ?parts, "this instance does not own the same partition numbers of both input topics; is partition.assignment.strategy overridden? ratings may miss their interactions");
                        }
                    }
                    tracing::info!(partitions = ?parts, "partitions assigned");
                    let mut need = BTreeSet::new();
                    for p in &parts {
                        if self.engines.contains_key(p) {
                            continue;
                        }
                        match self.stale.remove(p) {
                            Some((e, end)) if self.changelog_end(*p) == Some(end) => {
                                self.engines.insert(*p, e);
                            }
                            _ => {
                                need.insert(*p);
                            }
                        }
                    }
                    self.assigned.extend(parts.iter().copied());
                    // The lag series exist from assignment; librdkafka statistics fill them.
                    for (t, p) in &list {
                        self.metrics.lag.with_label_values(&[t, &p.to_string()]);
                    }
                    self.restore_parts(&need)?;
                }
            }
        }
        if self.assigned.is_empty() {
            self.health.set_failing(
                PARTITIONS,
                "no input partitions assigned: the consumer group is rebalancing, or other instances hold them all",
            );
        } else {
            self.health.set_ok(
                PARTITIONS,
                format!("{} partitions assigned", self.assigned.len()),
            );
        }
        Ok(())
    }

    fn changelog_end(&self, p: i32) -> Option<i64> {
        self.consumer
            .fetch_watermarks(&self.changelog, p, Duration::from_secs(5))
            .ok()
            .map(|(_, hi)| hi)
    }

    fn restore_parts(&mut self, need: &BTreeSet<i32>) -> anyhow::Result<()> {
        if need.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let (engines, records) = restore(
            &self.kafka,
            &self.args.group,
            &self.changelog,
            need,
            || Engine::new(self.ownership.clone(), self.horizon_ms),
            now_ms(),
            RESTORE_TIMEOUT,
        )?;
        self.metrics.restored.inc_by(records);
        self.metrics
            .restore_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(partitions = ?need, records, ms = started.elapsed().as_millis() as u64, "state restored from the changelog");
        self.engines.extend(engines);
        Ok(())
    }

    /// After an abort: forget memory, restore the owned partitions' state from the
    /// changelog and seek the consumer back to the committed offsets.
    fn rewind(&mut self) -> anyhow::Result<()> {
        self.engines.clear();
        self.stale.clear();
        let assignment = self
            .consumer
            .assignment()
            .context("cannot read the consumer's assignment")?;
        let committed = self
            .consumer
            .committed_offsets(assignment, Duration::from_secs(30))
            .context("cannot read the committed offsets")?;
        for e in committed.elements() {
            let to = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            if let Err(err) =
                self.consumer
                    .seek(e.topic(), e.partition(), to, Duration::from_secs(10))
            {
                anyhow::bail!(
                    "cannot rewind {} partition {} to {to:?}: {err}",
                    e.topic(),
                    e.partition()
                );
            }
        }
        let need = self.assigned.clone();
        self.restore_parts(&need)
    }

    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), TxnError> {
        let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).key(key);
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        let mut rec = rec;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if Instant::now() > deadline {
                        return Err(TxnError::Abortable(anyhow::anyhow!(
                            "the producer queue stayed full for 60 s; is Kafka reachable?"
                        )));
                    }
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    return Err(TxnError::Abortable(anyhow::anyhow!(
                        "cannot queue a message for topic {topic}: {e}"
                    )))
                }
            }
        }
    }

    fn emit(&mut self, a: &AttributedEvent, pending: &mut Pending) -> Result<(), TxnError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        a.encode_into(&mut buf);
        let r = self.send(&self.topics.attributed, None, key_of(a), Some(&buf), None);
        self.buf = buf;
        r?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let id = match &a.event {
                Event::Interaction(i) => &i.interaction_id,
                Event::Rating(r) => &r.rating_id,
            };
            tracing::debug!(id = %id, team = %a.team, attribution = a.attribution.as_str(), orphan = a.orphan, "attributed");
        }
        let kind = match a.event {
            Event::Interaction(_) => "interaction",
            Event::Rating(_) => "rating",
        };
        *pending
            .out
            .entry((kind, a.attribution.as_str(), a.team.clone()))
            .or_default() += 1;
        Ok(())
    }

    fn flush_changes(&mut self, p: i32) -> Result<(), TxnError> {
        let Some(e) = self.engines.get_mut(&p) else {
            return Ok(());
        };
        let changes = e.take_changes();
        for c in changes {
            self.send(&self.changelog, Some(p), &c.key, Some(&c.value), None)?;
        }
        Ok(())
    }

    fn dead_letter(&self, m: &OwnedMessage, reason: Reason, text: &str) -> Result<(), TxnError> {
        tracing::warn!(topic = %m.topic(), partition = m.partition(), offset = m.offset(), reason = reason.as_str(), error = %text, "dead-lettering a message");
        // Key and payload are cut to the cap, so an oversized message cannot make the
        // dead-letter write itself fail (and the partition stall).
        let letter = DeadLetter::new(
            Component::Attributor,
            reason,
            text,
            (m.topic(), m.partition(), m.offset()),
        )
        .to_message(
            Some(m.key().unwrap_or_default()),
            m.payload().unwrap_or(&[]),
        );
        self.send(
            &self.topics.deadletter,
            None,
            &letter.key.unwrap_or_default(),
            Some(letter.payload),
            Some(letter.headers),
        )
    }

    fn transact(&mut self, batch: &[OwnedMessage]) -> Result<Pending, TxnError> {
        let txn_id = format!("{}-{}", self.args.group, self.args.instance_name());
        let abortable = |e: KafkaError, what: &str| {
            let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal())
                || e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fenced)
                || e.rdkafka_error_code() == Some(RDKafkaErrorCode::ProducerFenced);
            let msg = anyhow::anyhow!("{what}: {e}");
            if fatal {
                TxnError::Fatal(msg.context(format!(
                    "another attributor took over transactional id {txn_id}; give every instance its own --instance"
                )))
            } else {
                TxnError::Abortable(msg)
            }
        };
        self.producer
            .begin_transaction()
            .map_err(|e| abortable(e, "cannot begin a Kafka transaction"))?;
        let mut pending = Pending::default();
        let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
        let mut touched = BTreeSet::new();
        for m in batch {
            let p = m.partition();
            offsets.insert((m.topic().to_string(), p), m.offset());
            if !self.engines.contains_key(&p) {
                // Assigned but not restored (cannot happen: restore runs at assignment).
                return Err(TxnError::Abortable(anyhow::anyhow!(
                    "no state for partition {p}"
                )));
            }
            let is_ratings = m.topic() == self.topics.ratings;
            let kind = if is_ratings { "rating" } else { "interaction" };
            *pending.inputs.entry(kind).or_default() += 1;
            let source = SourceRef {
                topic: m.topic().to_string(),
                partition: p,
                offset: m.offset(),
            };
            let now = now_ms();
            let payload = m.payload().unwrap_or(&[]);
            let outcome = if payload.len() > self.args.max_message_bytes {
                Err((
                    Reason::Oversized,
                    format!(
                        "message is {} bytes; at most {} are accepted (--max-message-bytes), far above any event the collector accepts",
                        payload.len(),
                        self.args.max_message_bytes
                    ),
                ))
            } else {
                match decode(payload) {
                    Ok(Decoded::Interaction(i)) if !is_ratings => {
                        match json::check_interaction(&i, &self.limits) {
                            Ok(()) => Ok(self.engine(p).on_interaction(i, source, now)),
                            Err(errors) => Err((Reason::InvalidEvent, contract_error(&errors))),
                        }
                    }
                    Ok(Decoded::Rating(r)) if is_ratings => {
                        match json::check_rating(&r, &self.limits) {
                            Ok(()) => Ok(self.engine(p).on_rating(r, source, now)),
                            Err(errors) => Err((Reason::InvalidEvent, contract_error(&errors))),
                        }
                    }
                    Ok(_) => Err((
                        Reason::WrongSchema,
                        format!("message on {} holds another record type", m.topic()),
                    )),
                    Err(e) => Err((Reason::from(&e), e.to_string())),
                }
            };
            match outcome {
                Ok(Outcome::Emit(list)) => {
                    for a in &list {
                        pending.orphans += a.orphan as u64;
                        self.emit(a, &mut pending)?;
                    }
                }
                Ok(Outcome::Duplicate(released)) => {
                    *pending.duplicates.entry(kind).or_default() += 1;
                    for a in &released {
                        self.emit(a, &mut pending)?;
                    }
                }
                Err((reason, text)) => {
                    self.dead_letter(m, reason, &text)?;
                    *pending.dead.entry(reason.as_str()).or_default() += 1;
                }
            }
            touched.insert(p);
        }
        // Event time moves for the whole stream: quiet partitions expire with the others.
        let w = self.watermark();
        let now = now_ms();
        let parts: Vec<i32> = self.engines.keys().copied().collect();
        for p in parts {
            let e = self.engine(p);
            e.advance_watermark(w);
            let orphans = e.expire(now);
            pending.join_waits.extend(e.take_join_waits());
            pending.orphans += orphans.len() as u64;
            for a in &orphans {
                self.emit(a, &mut pending)?;
            }
            self.flush_changes(p)?;
        }
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((t, p), o) in &offsets {
                tpl.add_partition_offset(t, *p, Offset::Offset(o + 1))
                    .map_err(|e| abortable(e, "bad offset"))?;
            }
            let gm = self.consumer.group_metadata().ok_or_else(|| {
                TxnError::Abortable(anyhow::anyhow!("the consumer has no group metadata yet"))
            })?;
            self.producer
                .send_offsets_to_transaction(&tpl, &gm, TXN_TIMEOUT)
                .map_err(|e| abortable(e, "cannot add the consumed offsets to the transaction"))?;
        }
        self.producer
            .commit_transaction(TXN_TIMEOUT)
            .map_err(|e| abortable(e, "cannot commit the Kafka transaction"))?;
        Ok(pending)
    }

    fn engine(&mut self, p: i32) -> &mut Engine {
        self.engines
            .get_mut(&p)
            .expect("engine presence checked by the caller")
    }
}

/// The span of one transaction: its number, its message count and, when the span is
/// enabled, the offset range read per input partition (`topic[partition]:first..=last`).
fn batch_span(txn: u64, batch: &[OwnedMessage]) -> tracing::Span {
    let span = tracing::info_span!(
        "attributor_batch",
        txn,
        messages = batch.len(),
        offsets = tracing::field::Empty
    );
    if !span.is_disabled() && !batch.is_empty() {
        let mut ranges: std::collections::BTreeMap<(&str, i32), (i64, i64)> = Default::default();
        for m in batch {
            let r = ranges
                .entry((m.topic(), m.partition()))
                .or_insert((m.offset(), m.offset()));
            r.0 = r.0.min(m.offset());
            r.1 = r.1.max(m.offset());
        }
        span.record(
            "offsets",
            feedback_kafka::offset_ranges_text(&ranges).as_str(),
        );
    }
    span
}

/// Why a worker stopped: its kind decides whether a fresh worker may take over
/// (`Restartable` in lib.rs).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Fenced(#[from] FencedInstance),
    #[error(transparent)]
    ProducerLost(#[from] ProducerLost),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The group coordinator fenced this consumer's static membership (`group.instance.id`).
/// Either another instance runs with the same `--instance`, or this instance's own session
/// expired while Kafka was unreachable (a broker restart longer than the session timeout):
/// librdkafka then rejoins under a new member id and the coordinator fences the old one,
/// which librdkafka reports as fatal.
#[derive(Debug)]
pub struct FencedInstance {
    pub group: String,
    pub instance: String,
    pub error: String,
}

impl std::fmt::Display for FencedInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fenced out of group {} as instance {:?} ({})",
            self.group, self.instance, self.error
        )
    }
}

impl std::error::Error for FencedInstance {}

/// The transactional producer cannot go on (librdkafka raised a fatal error while aborting,
/// seen when a broker restart outlasted the transaction timeout); a fresh worker with a new
/// producer, state restored from the changelog, continues from the committed offsets.
#[derive(Debug)]
pub struct ProducerLost(pub String);

impl std::fmt::Display for ProducerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProducerLost {}
