//! Landing a batch exactly once: one INSERT per table (atomic below max_insert_block_size),
//! then the progress mark; retriable errors back off and retry; after an error whose
//! outcome is unknown, wait until the server no longer runs the INSERT and read back what
//! landed before trying again; rows the server rejects are isolated by bisection and become
//! dead letters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use feedback_clickhouse::errors::{classify, Class};
use feedback_clickhouse::{
    Ch, DeadLetterRow, InsertRow, InteractionRow, Landed, ProgressRow, RatingRow, Rollup,
    DEAD_LETTER_COLUMNS, INTERACTION_COLUMNS, RATING_COLUMNS,
};
use feedback_kafka::deadletter::{Component, DeadLetter, Reason};
use feedback_kafka::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use feedback_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use feedback_kafka::rdkafka::{Offset, TopicPartitionList};
use feedback_kafka::Topics;
use serde::Serialize;

use super::batch::{Batch, Coordinates, Item};
use super::context::SinkContext;
use super::metrics::Metrics;
use super::tables_of;

/// Prefix of every sink INSERT's query_id: `fbsink/<db>/<instance>-<seq>/<parts>/<table>-<n>`
/// where `<parts>` is `topic#p.p;topic#p`.
pub const QUERY_ID_PREFIX: &str = "fbsink/";

pub struct Lander {
    pub ch: Ch,
    pub metrics: Metrics,
    pub topics: Topics,
    pub dlq: FutureProducer,
    /// What is landed, per (topic, partition) this instance may write.
    pub landed: HashMap<(String, i32), Landed>,
    pub max_backoff: Duration,
    pub abandon_after: Duration,
    pub instance: String,
    pub seq: u64,
    /// The `landing` readiness check: failing while INSERTs fail and are retried.
    pub health: feedback_runtime::health::Health,
}

/// The sink's readiness check that its INSERTs succeed.
pub const LANDING: &str = "landing";

/// The batch was given up after retrying for too long; its partitions were rewound.
pub struct Abandoned;

fn parts_of(query_id: &str) -> Vec<(String, i32)> {
    let Some(parts) = query_id.split('/').nth(3) else {
        return Vec::new();
    };
    parts
        .split(';')
        .filter_map(|tp| tp.split_once('#'))
        .flat_map(|(t, ps)| {
            ps.split('.')
                .filter_map(|p| p.parse().ok())
                .map(move |p| (t.to_string(), p))
        })
        .collect()
}

fn encode_parts(parts: &[(String, i32)]) -> String {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in parts {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(t, mut ps)| {
            ps.sort();
            format!(
                "{t}#{}",
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(".")
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

impl Lander {
    fn query_prefix(&self) -> String {
        format!("{QUERY_ID_PREFIX}{}/", self.ch.database())
    }

    /// Waits until no INSERT of any sink instance touching `parts` runs on the server
    /// (bounded). False when that could not be established.
    async fn settle(&self, parts: &[(String, i32)]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.ch.running_inserts(&self.query_prefix()).await {
                Ok(running) => {
                    let busy: Vec<_> = running
                        .iter()
                        .filter(|r| parts_of(&r.query_id).iter().any(|k| parts.contains(k)))
                        .collect();
                    if busy.is_empty() {
                        return true;
                    }
                    if Instant::now() > deadline {
                        tracing::warn!(running = ?busy, "INSERTs for these partitions still run on ClickHouse after 60 s");
                        return false;
                    }
                }
                Err(_) => return false,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn derive_once(&mut self, parts: &[(String, i32)]) -> bool {
        if !self.settle(parts).await {
            return false;
        }
        let attributed = self.topics.attributed.clone();
        let rolled_parts: Vec<(String, i32)> = parts
            .iter()
            .filter(|(t, _)| *t == attributed)
            .cloned()
            .collect();
        let landed = match self.ch.landed(parts, |t| tables_of(t, &attributed)).await {
            Ok(mut l) => match self.ch.rollup_marks(&rolled_parts).await {
                Ok(marks) => {
                    for (k, m) in marks {
                        if let Some(v) = l.get_mut(&k) {
                            v.rolled = m;
                        }
                    }
                    Ok(l)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match landed {
            Ok(l) => {
                for (k, v) in l {
                    tracing::debug!(topic = %k.0, partition = k.1, progress = v.progress, rolled = v.rolled, "landed state read from ClickHouse");
                    self.landed.insert(k, v);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the landed state from ClickHouse");
                false
            }
        }
    }

    /// Reads what is landed for `parts` from ClickHouse, retrying up to the abandon time.
    pub async fn derive(&mut self, parts: &[(String, i32)]) -> bool {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.derive_once(parts).await {
                return true;
            }
            if started.elapsed() > self.abandon_after {
                return false;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    /// Makes the consumer read `partition` again from `offset`.
    pub fn rewind(
        &mut self,
        consumer: &StreamConsumer<SinkContext>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        self.landed.remove(&(topic.to_string(), partition));
        if let Err(e) = consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        ) {
            tracing::warn!(topic, partition, offset, error = %e, "cannot rewind the partition; it restarts from the committed offset at the next assignment");
        }
    }

    fn is_landed(&self, table: &str, (t, p, o): (&str, i32, i64)) -> bool {
        self.landed
            .get(&(t.to_string(), p))
            .is_some_and(|l| l.contains(table, o))
    }

    /// Lands `items` into `table`; returns the rows the server rejected with its error.
    async fn land<T: InsertRow + Coordinates>(
        &mut self,
        table: &'static str,
        items: Vec<Item<T>>,
        id_base: &str,
        started: Instant,
    ) -> Result<Vec<(T, String)>, Abandoned> {
        let mut queue: VecDeque<Vec<Item<T>>> = VecDeque::from([items]);
        let mut rejected = Vec::new();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        let mut schema_ok = false;
        while let Some(mut chunk) = queue.pop_front() {
            chunk.retain(|i| !self.is_landed(table, i.row.kafka()));
            if chunk.is_empty() {
                continue;
            }
            attempt += 1;
            let query_id = format!("{id_base}/{table}-{attempt}");
            let t0 = Instant::now();
            let result = self
                .ch
                .insert_as(table, chunk.iter().map(|i| &i.row), Some(&query_id))
                .await;
            self.metrics
                .insert_seconds
                .observe(t0.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.health.set_ok(LANDING, "");
                    self.metrics
                        .rows
                        .with_label_values(&[table])
                        .inc_by(chunk.len() as u64);
                    self.metrics
                        .bytes
                        .with_label_values(&[table])
                        .inc_by(chunk.iter().map(|i| i.bytes as u64).sum());
                    for i in &chunk {
                        let (t, p, o) = i.row.kafka();
                        if let Some(l) = self.landed.get_mut(&(t.to_string(), p)) {
                            l.above.entry(table.to_string()).or_default().insert(o);
                        }
                    }
                }
                Err(e) => match self
                    .confirm_rejection(table, classify(&e), &mut schema_ok)
                    .await
                {
                    Class::Rejected => {
                        self.metrics.errors.with_label_values(&["rejected"]).inc();
                        if chunk.len() == 1 {
                            let item = chunk.pop().expect("one row");
                            let (t, p, o) = item.row.kafka();
                            tracing::warn!(table, topic = t, partition = p, offset = o, error = %e, "ClickHouse rejected a row; dead-lettering it");
                            rejected.push((item.row, e.to_string()));
                        } else {
                            tracing::warn!(table, rows = chunk.len(), error = %e, "ClickHouse rejected an INSERT; isolating the bad rows by bisection");
                            let right = chunk.split_off(chunk.len() / 2);
                            queue.push_front(right);
                            queue.push_front(chunk);
                        }
                    }
                    Class::Retriable { reason } => {
                        self.metrics.errors.with_label_values(&["retriable"]).inc();
                        self.metrics.retries.with_label_values(&[reason]).inc();
                        tracing::warn!(table, rows = chunk.len(), reason, error = %e, retry_in_ms = backoff.as_millis() as u64, "INSERT failed; retrying (Kafka keeps the backlog)");
                        self.health.set_failing(
                            LANDING,
                            format!("INSERT into {table} failed ({reason}): {e}; retrying"),
                        );
                        let parts: Vec<(String, i32)> = {
                            let mut v: Vec<(String, i32)> = chunk
                                .iter()
                                .map(|i| {
                                    let (t, p, _) = i.row.kafka();
                                    (t.to_string(), p)
                                })
                                .collect();
                            v.sort();
                            v.dedup();
                            v
                        };
                        // The INSERT may have landed (lost response): read back what did
                        // before trying again, once the server no longer runs it.
                        loop {
                            if started.elapsed() > self.abandon_after {
                                return Err(Abandoned);
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(self.max_backoff);
                            if self.derive_once(&parts).await {
                                break;
                            }
                        }
                        queue.push_front(chunk);
                    }
                },
            }
        }
        Ok(rejected)
    }

    /// A rejection is about the rows only if the table still has the columns the sink
    /// writes: when someone changed the schema under a running sink, every row would be
    /// "rejected"; that is retried (until `feedback migrate` or a fix) instead of
    /// dead-lettering everything. Checked once per table and batch.
    async fn confirm_rejection(&self, table: &str, class: Class, checked: &mut bool) -> Class {
        if class != Class::Rejected || *checked {
            return class;
        }
        let columns = match table {
            "interactions" => INTERACTION_COLUMNS,
            "ratings" => RATING_COLUMNS,
            _ => DEAD_LETTER_COLUMNS,
        };
        match self.ch.check_columns(&[(table, columns)]).await {
            Ok(problems) if problems.is_empty() => {
                *checked = true;
                Class::Rejected
            }
            Ok(problems) => {
                let list = problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(table, problems = %list, "the table no longer matches what the sink writes; retrying instead of dead-lettering; run `feedback migrate` or restore the column types");
                Class::Retriable { reason: "schema" }
            }
            Err(_) => Class::Retriable {
                reason: "connection",
            },
        }
    }

    fn rejected_to_dead<T: Serialize + Coordinates>(
        &self,
        table: &str,
        rows: Vec<(T, String)>,
        source: impl Fn(&T) -> (String, i32, i64),
        batch: &mut Batch,
    ) {
        for (row, error) in rows {
            let (t, p, o) = row.kafka();
            let (st, sp, so) = source(&row);
            let d = DeadLetterRow {
                received_at: DeadLetterRow::now_secs(),
                component: Component::Sink.as_str().into(),
                reason: Reason::ClickhouseRejected.as_str().into(),
                error: format!("INSERT into {table}: {error}"),
                source_topic: st,
                source_partition: sp,
                source_offset: so,
                payload: serde_json::to_string(&row).unwrap_or_default(),
                kafka_topic: t.to_string(),
                kafka_partition: p,
                kafka_offset: o,
            };
            batch.publish.push(d.clone());
            batch.dead.push(Item { row: d, bytes: 0 });
        }
    }

    /// Publishes the sink's own dead letters on the dead-letter topic (best effort: the
    /// row in `dead_letters` is the record; a crash can publish one twice).
    async fn publish(&self, dead: &[DeadLetterRow]) {
        let mut pending = Vec::new();
        for d in dead {
            // Marked landed: the row is in `dead_letters` already. At most 64 KiB of the
            // message, like the attributor's dead letters: a larger one would be refused
            // (librdkafka's 1,000,000-byte default); the row keeps it all.
            let letter = DeadLetter {
                component: Component::Sink.as_str().into(),
                reason: d.reason.clone(),
                error: d.error.clone(),
                source_topic: d.source_topic.clone(),
                source_partition: d.source_partition,
                source_offset: d.source_offset,
                landed: true,
            }
            .to_message(None, d.payload.as_bytes());
            let rec = FutureRecord::<str, [u8]>::to(&self.topics.deadletter)
                .payload(letter.payload)
                .headers(letter.headers);
            match self.dlq.send_result(rec) {
                Ok(f) => pending.push(f),
                Err((e, _)) => {
                    tracing::warn!(error = %e, "cannot publish a dead letter on {}", self.topics.deadletter)
                }
            }
        }
        for f in pending {
            if let Ok(Err((e, _))) = f.await {
                tracing::warn!(error = %e, "Kafka refused a dead letter on {}", self.topics.deadletter);
            }
        }
    }

    /// Lands `batch` (rows, dead letters, progress mark), or gives it up after
    /// `abandon_after` and rewinds its partitions.
    /// Lands `batch` and empties it; `true` when it landed, `false` when it was empty or
    /// given up (its partitions rewound).
    pub async fn flush(
        &mut self,
        consumer: &StreamConsumer<SinkContext>,
        batch: &mut Batch,
    ) -> bool {
        if batch.span.is_empty() {
            *batch = Batch::default();
            return false;
        }
        let started = Instant::now();
        let parts: Vec<(String, i32)> = batch.span.keys().cloned().collect();
        self.seq += 1;
        let id_base = format!(
            "{}{}-{}/{}",
            self.query_prefix(),
            self.instance,
            self.seq,
            encode_parts(&parts)
        );
        let rows = batch.rows();
        if self.land_all(batch, &id_base, started).await.is_err() {
            tracing::warn!(
                rows,
                "giving the batch up after {:?} of retries; its partitions are read again",
                self.abandon_after
            );
            let spans: Vec<_> = batch.span.iter().map(|(k, v)| (k.clone(), v.0)).collect();
            for ((t, p), first) in spans {
                self.rewind(consumer, &t, p, first);
            }
            *batch = Batch::default();
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), (_, last)) in &batch.span {
            if let Some(l) = self.landed.get_mut(&(t.clone(), *p)) {
                l.progress = l.progress.max(*last);
                for s in l.above.values_mut() {
                    s.retain(|o| *o > *last);
                }
            }
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(last + 1));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "advisory offset commit failed");
        }
        self.metrics.batch_rows.observe(rows as f64);
        if batch.newest_event_ms > 0 {
            self.metrics
                .freshness
                .set((feedback_runtime::now_ms() - batch.newest_event_ms) as f64 / 1000.0);
        }
        *batch = Batch::default();
        true
    }

    async fn land_all(
        &mut self,
        batch: &mut Batch,
        id_base: &str,
        started: Instant,
    ) -> Result<(), Abandoned> {
        let publish = std::mem::take(&mut batch.publish);
        self.publish(&publish).await;
        let interactions = std::mem::take(&mut batch.interactions);
        // What the rollups count: this batch's rows, and rows an earlier attempt landed
        // (so the batch skipped them) whose rollups did not land.
        let mut rolled_interactions: Vec<InteractionRow> =
            interactions.iter().map(|i| i.row.clone()).collect();
        rolled_interactions.append(&mut batch.unrolled_interactions);
        let bad = self
            .land("interactions", interactions, id_base, started)
            .await?;
        let refused: HashSet<(String, i32, i64)> = bad
            .iter()
            .map(|(r, _)| (r.kafka_topic.clone(), r.kafka_partition, r.kafka_offset))
            .collect();
        rolled_interactions.retain(|r| {
            !refused.contains(&(r.kafka_topic.clone(), r.kafka_partition, r.kafka_offset))
        });
        self.rejected_to_dead(
            "interactions",
            bad,
            |r| (r.source_topic.clone(), r.source_partition, r.source_offset),
            batch,
        );
        let ratings = std::mem::take(&mut batch.ratings);
        let mut rolled_ratings: Vec<RatingRow> = ratings.iter().map(|i| i.row.clone()).collect();
        rolled_ratings.append(&mut batch.unrolled_ratings);
        let bad = self.land("ratings", ratings, id_base, started).await?;
        let refused: HashSet<(String, i32, i64)> = bad
            .iter()
            .map(|(r, _)| (r.kafka_topic.clone(), r.kafka_partition, r.kafka_offset))
            .collect();
        rolled_ratings.retain(|r| {
            !refused.contains(&(r.kafka_topic.clone(), r.kafka_partition, r.kafka_offset))
        });
        self.rejected_to_dead(
            "ratings",
            bad,
            |r| (r.source_topic.clone(), r.source_partition, r.source_offset),
            batch,
        );
        self.land_rollups(
            &rolled_interactions,
            &rolled_ratings,
            &batch.span,
            id_base,
            started,
        )
        .await?;
        let publish = std::mem::take(&mut batch.publish);
        self.publish(&publish).await;
        let dead = std::mem::take(&mut batch.dead);
        let reasons: Vec<String> = dead
            .iter()
            .filter(|d| !self.is_landed("dead_letters", d.row.kafka()))
            .map(|d| d.row.reason.clone())
            .collect();
        let bad = self.land("dead_letters", dead, id_base, started).await?;
        for (d, error) in &bad {
            tracing::error!(topic = %d.kafka_topic, partition = d.kafka_partition, offset = d.kafka_offset, error = %error, "ClickHouse rejected a dead letter; it stays only on the dead-letter topic");
        }
        for r in reasons {
            self.metrics.dead.with_label_values(&[&r]).inc();
        }
        let progress: Vec<Item<ProgressRow>> = batch
            .span
            .iter()
            .map(|((t, p), (_, last))| Item {
                row: ProgressRow {
                    topic: t.clone(),
                    partition: *p,
                    offset: *last,
                },
                bytes: 0,
            })
            .collect();
        self.land_progress(progress, id_base, started).await
    }

    /// Counts the batch's landed events in the rollups, exactly once: per attributed-topic
    /// partition, the events above its rollup mark, with the mark moved to the batch's last
    /// offset in the same INSERT. After a failure whose outcome is unknown the marks are read
    /// again and only what lies above them is counted.
    async fn land_rollups(
        &mut self,
        interactions: &[InteractionRow],
        ratings: &[RatingRow],
        span: &HashMap<(String, i32), (i64, i64)>,
        id_base: &str,
        started: Instant,
    ) -> Result<(), Abandoned> {
        let parts: Vec<(String, i32)> = span
            .keys()
            .filter(|(t, _)| *t == self.topics.attributed)
            .cloned()
            .collect();
        if parts.is_empty() {
            return Ok(());
        }
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let unknown: Vec<(String, i32)> = parts
                .iter()
                .filter(|k| !self.landed.contains_key(*k))
                .cloned()
                .collect();
            let derived = unknown.is_empty() || self.derive_once(&unknown).await;
            if derived {
                let rolled = |t: &str, p: i32| {
                    self.landed
                        .get(&(t.to_string(), p))
                        .map_or(i64::MAX, |l| l.rolled)
                };
                let mut rollup = Rollup::default();
                for r in interactions {
                    if r.kafka_offset > rolled(&r.kafka_topic, r.kafka_partition) {
                        rollup.interaction(r);
                    }
                }
                for r in ratings {
                    if r.kafka_offset > rolled(&r.kafka_topic, r.kafka_partition) {
                        rollup.rating(r);
                    }
                }
                for (t, p) in &parts {
                    let last = span[&(t.clone(), *p)].1;
                    rollup.mark(t, *p, rolled(t, *p), last);
                }
                let rows = rollup.rows();
                if rows.is_empty() {
                    return Ok(());
                }
                attempt += 1;
                let query_id = format!("{id_base}/rollups-{attempt}");
                let t0 = Instant::now();
                let result = self.ch.insert_rollups(&rows, &query_id).await;
                self.metrics
                    .insert_seconds
                    .observe(t0.elapsed().as_secs_f64());
                match result {
                    Ok(()) => {
                        self.health.set_ok(LANDING, "");
                        self.metrics
                            .rows
                            .with_label_values(&["rollups"])
                            .inc_by(rows.len() as u64);
                        for (t, p) in &parts {
                            let last = span[&(t.clone(), *p)].1;
                            if let Some(l) = self.landed.get_mut(&(t.clone(), *p)) {
                                l.rolled = l.rolled.max(last);
                            }
                        }
                        return Ok(());
                    }
                    Err(e) => {
                        let reason = match classify(&e) {
                            Class::Retriable { reason } => reason,
                            Class::Rejected => "rejected",
                        };
                        self.metrics.errors.with_label_values(&["retriable"]).inc();
                        self.metrics.retries.with_label_values(&[reason]).inc();
                        tracing::warn!(rows = rows.len(), reason, error = %e, retry_in_ms = backoff.as_millis() as u64, "INSERT into rollups failed; reading the marks again and retrying (Kafka keeps the backlog)");
                        self.health.set_failing(
                            LANDING,
                            format!("INSERT into rollups failed ({reason}): {e}; retrying"),
                        );
                        // The INSERT may have landed: forget the marks; they are read again
                        // (once the server no longer runs it) before the next try.
                        for k in &parts {
                            self.landed.remove(k);
                        }
                    }
                }
            }
            if started.elapsed() > self.abandon_after {
                return Err(Abandoned);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    async fn land_progress(
        &mut self,
        rows: Vec<Item<ProgressRow>>,
        id_base: &str,
        started: Instant,
    ) -> Result<(), Abandoned> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let query_id = format!("{id_base}/sink_progress-{attempt}");
            match self
                .ch
                .insert_as(
                    "sink_progress",
                    rows.iter().map(|i| &i.row),
                    Some(&query_id),
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // A lost progress row only makes the next start read more again.
                    let reason = match classify(&e) {
                        Class::Retriable { reason } => reason,
                        Class::Rejected => "rejected",
                    };
                    self.metrics.retries.with_label_values(&[reason]).inc();
                    tracing::warn!(error = %e, "cannot record the sink's progress; retrying");
                    if started.elapsed() > self.abandon_after {
                        return Err(Abandoned);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    /// Sets `feedback_sink_consumer_lag` for every assigned partition (blocking calls).
    pub fn observe_lag(&self, consumer: &StreamConsumer<SinkContext>) {
        let Ok(positions) = consumer.position() else {
            return;
        };
        for e in positions.elements() {
            let Ok((_, high)) =
                consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(1))
            else {
                continue;
            };
            let lag = match e.offset() {
                Offset::Offset(o) => (high - o).max(0),
                _ => match self.landed.get(&(e.topic().to_string(), e.partition())) {
                    Some(l) => (high - l.progress - 1).max(0),
                    None => continue,
                },
            };
            self.metrics
                .lag
                .with_label_values(&[e.topic(), &e.partition().to_string()])
                .set(lag as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ids_name_their_partitions() {
        let parts = vec![
            ("p.feedback.attributed.v1".to_string(), 2),
            ("p.feedback.attributed.v1".to_string(), 0),
            ("p.feedback.deadletter.v1".to_string(), 1),
        ];
        let id = format!("fbsink/db/abc-1/{}/ratings-1", encode_parts(&parts));
        let mut back = parts_of(&id);
        back.sort();
        let mut want = parts.clone();
        want.sort();
        assert_eq!(back, want);
    }
}
