//! A batch: the rows of the messages read since the last flush, with the Kafka coordinates
//! of each, and per partition the first and last offset read.

use std::collections::HashMap;
use std::time::Instant;

use feedback_clickhouse::{DeadLetterRow, InteractionRow, RatingRow, Row};
use feedback_events::codec::{decode, Decoded};
use feedback_kafka::deadletter::{Component, DeadLetter, Reason};
use feedback_kafka::rdkafka::Message;

use super::land::Lander;

/// The Kafka coordinates a row carries.
pub trait Coordinates {
    fn kafka(&self) -> (&str, i32, i64);
}

impl Coordinates for InteractionRow {
    fn kafka(&self) -> (&str, i32, i64) {
        (&self.kafka_topic, self.kafka_partition, self.kafka_offset)
    }
}
impl Coordinates for RatingRow {
    fn kafka(&self) -> (&str, i32, i64) {
        (&self.kafka_topic, self.kafka_partition, self.kafka_offset)
    }
}
impl Coordinates for DeadLetterRow {
    fn kafka(&self) -> (&str, i32, i64) {
        (&self.kafka_topic, self.kafka_partition, self.kafka_offset)
    }
}

/// A row plus the size of the message it came from.
pub struct Item<T> {
    pub row: T,
    pub bytes: usize,
}

#[derive(Default)]
pub struct Batch {
    pub interactions: Vec<Item<InteractionRow>>,
    pub ratings: Vec<Item<RatingRow>>,
    pub dead: Vec<Item<DeadLetterRow>>,
    /// Dead letters the sink made itself, to publish on the dead-letter topic too.
    pub publish: Vec<DeadLetterRow>,
    /// Rows already landed in their raw table (a previous attempt, before a crash) whose
    /// events the rollups do not count yet: counted with this batch's rollups.
    pub unrolled_interactions: Vec<InteractionRow>,
    pub unrolled_ratings: Vec<RatingRow>,
    pub bytes: usize,
    pub newest_event_ms: i64,
    /// First and last offset read, per (topic, partition).
    pub span: HashMap<(String, i32), (i64, i64)>,
    pub opened: Option<Instant>,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.interactions.len() + self.ratings.len() + self.dead.len()
    }

    pub fn drop_partitions(&mut self, parts: &[(String, i32)]) {
        let gone = |(t, p, _): (&str, i32, i64)| parts.iter().any(|(pt, pp)| pt == t && *pp == p);
        self.interactions.retain(|i| !gone(i.row.kafka()));
        self.ratings.retain(|i| !gone(i.row.kafka()));
        self.dead.retain(|i| !gone(i.row.kafka()));
        self.publish.retain(|d| !gone(d.kafka()));
        self.unrolled_interactions.retain(|r| !gone(r.kafka()));
        self.unrolled_ratings.retain(|r| !gone(r.kafka()));
        for k in parts {
            self.span.remove(k);
        }
        if self.span.is_empty() {
            *self = Batch::default();
        }
    }
}

/// Adds the row of `m` unless ClickHouse already holds it.
pub fn add<M: Message>(batch: &mut Batch, m: &M, lander: &Lander) {
    let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
    let key = (topic.to_string(), partition);
    let Some(landed) = lander.landed.get(&key) else {
        return;
    };
    let span = batch.span.entry(key).or_insert((offset, offset));
    span.1 = offset;
    batch.opened.get_or_insert_with(Instant::now);
    let payload = m.payload().unwrap_or(&[]);
    let dead_letter = |component: String,
                       reason: String,
                       error: String,
                       source: (String, i32, i64)| DeadLetterRow {
        received_at: DeadLetterRow::now_secs(),
        component,
        reason,
        error,
        source_topic: source.0,
        source_partition: source.1,
        source_offset: source.2,
        payload: String::from_utf8_lossy(payload).into_owned(),
        kafka_topic: topic.to_string(),
        kafka_partition: partition,
        kafka_offset: offset,
    };
    let already = |table: &str| {
        let l = landed.contains(table, offset);
        if l {
            lander.metrics.skipped.with_label_values(&[table]).inc();
        }
        l
    };
    if topic == lander.topics.deadletter {
        // The sink's own dead letters are marked landed: their row is already in
        // `dead_letters`, so reading them back lands nothing.
        let letter = DeadLetter::from_headers(m.headers());
        if letter.landed || already("dead_letters") {
            return;
        }
        let row = dead_letter(
            letter.component,
            letter.reason,
            letter.error,
            (
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
            ),
        );
        batch.bytes += payload.len();
        batch.dead.push(Item {
            row,
            bytes: payload.len(),
        });
        return;
    }
    match decode(payload) {
        Ok(Decoded::Attributed(a)) => {
            let occurred = a.event.occurred_at();
            let mut row = Row::from(a);
            row.set_kafka(topic, partition, offset);
            match row {
                Row::Interaction(r) => {
                    if already("interactions") {
                        if offset > landed.rolled {
                            batch.unrolled_interactions.push(r);
                        }
                        return;
                    }
                    batch.interactions.push(Item {
                        row: r,
                        bytes: payload.len(),
                    })
                }
                Row::Rating(r) => {
                    if already("ratings") {
                        if offset > landed.rolled {
                            batch.unrolled_ratings.push(r);
                        }
                        return;
                    }
                    batch.ratings.push(Item {
                        row: r,
                        bytes: payload.len(),
                    })
                }
            }
            batch.bytes += payload.len();
            batch.newest_event_ms = batch.newest_event_ms.max(occurred);
        }
        other => {
            if already("dead_letters") {
                return;
            }
            let (reason, error) = match other {
                Err(e) => (Reason::from(&e).as_str().to_string(), e.to_string()),
                Ok(_) => (
                    Reason::WrongSchema.as_str().to_string(),
                    "not an attributed event".to_string(),
                ),
            };
            tracing::warn!(topic, partition, offset, reason = %reason, error = %error, "dead-lettering an undecodable message");
            let row = dead_letter(
                Component::Sink.as_str().into(),
                reason,
                error,
                (topic.to_string(), partition, offset),
            );
            batch.publish.push(row.clone());
            batch.bytes += payload.len();
            batch.dead.push(Item {
                row,
                bytes: payload.len(),
            });
        }
    }
}
