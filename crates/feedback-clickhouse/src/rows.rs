//! Row types matching the tables of migration 1, and their construction from events.

use feedback_events::{AttributedEvent, Event, Interaction, Rating};
use serde::Serialize;

fn secs(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32
}

fn attributes_json(a: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(a).unwrap_or_else(|_| "{}".into())
}

#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct InteractionRow {
    pub interaction_id: String,
    pub occurred_at: u32,
    pub occurred_at_ms: i64,
    pub service: String,
    pub channel: String,
    pub kind: String,
    pub customer_ref: String,
    pub product: Option<String>,
    pub region: Option<String>,
    pub agent_id: Option<String>,
    pub handling_team: Option<String>,
    pub attributes: String,
    pub team: String,
    pub attribution: String,
    pub claim_file: Option<String>,
    pub claim_index: Option<i32>,
    pub ownership_version: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub attributed_at_ms: i64,
    /// The attributed-topic message this row was landed from (migration 3).
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct RatingRow {
    pub rating_id: String,
    pub occurred_at: u32,
    pub occurred_at_ms: i64,
    pub interaction_id: Option<String>,
    pub metric: String,
    pub score: i8,
    pub comment: Option<String>,
    pub service: String,
    pub channel: String,
    pub customer_ref: String,
    pub product: Option<String>,
    pub region: Option<String>,
    pub attributes: String,
    pub team: String,
    pub attribution: String,
    pub claim_file: Option<String>,
    pub claim_index: Option<i32>,
    pub ownership_version: String,
    pub orphan: u8,
    pub interaction_kind: Option<String>,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub attributed_at_ms: i64,
    /// The attributed-topic message this row was landed from (migration 3).
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct DeadLetterRow {
    pub received_at: u32,
    pub component: String,
    pub reason: String,
    pub error: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// The raw message, as lossy UTF-8 text for readability.
    pub payload: String,
    /// The message the sink read (attributed or dead-letter topic; migration 3).
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl DeadLetterRow {
    pub fn now_secs() -> u32 {
        secs(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        )
    }
}

/// A row for either table.
pub enum Row {
    Interaction(InteractionRow),
    Rating(RatingRow),
}

impl From<AttributedEvent> for crate::rows::Row {
    fn from(a: AttributedEvent) -> Self {
        let (claim_file, claim_index) = match a.claim {
            Some(c) => (Some(c.file), Some(c.index)),
            None => (None, None),
        };
        match a.event {
            Event::Interaction(i) => {
                let Interaction {
                    interaction_id,
                    occurred_at,
                    service,
                    channel,
                    kind,
                    customer_ref,
                    product,
                    region,
                    agent_id,
                    team,
                    attributes,
                } = i;
                Row::Interaction(InteractionRow {
                    interaction_id,
                    occurred_at: secs(occurred_at),
                    occurred_at_ms: occurred_at,
                    service,
                    channel: channel.as_str().into(),
                    kind,
                    customer_ref,
                    product,
                    region,
                    agent_id,
                    handling_team: team,
                    attributes: attributes_json(&attributes),
                    team: a.team,
                    attribution: a.attribution.as_str().into(),
                    claim_file,
                    claim_index,
                    ownership_version: a.ownership_version,
                    source_topic: a.source.topic,
                    source_partition: a.source.partition,
                    source_offset: a.source.offset,
                    attributed_at_ms: a.attributed_at,
                    kafka_topic: String::new(),
                    kafka_partition: -1,
                    kafka_offset: -1,
                })
            }
            Event::Rating(r) => {
                let Rating {
                    rating_id,
                    occurred_at,
                    interaction_id,
                    metric,
                    score,
                    comment,
                    service,
                    channel,
                    customer_ref,
                    product,
                    region,
                    attributes,
                } = r;
                Row::Rating(RatingRow {
                    rating_id,
                    occurred_at: secs(occurred_at),
                    occurred_at_ms: occurred_at,
                    interaction_id,
                    metric: metric.as_str().into(),
                    score: score.clamp(i8::MIN as i32, i8::MAX as i32) as i8,
                    comment,
                    service,
                    channel: channel.as_str().into(),
                    customer_ref,
                    product,
                    region,
                    attributes: attributes_json(&attributes),
                    team: a.team,
                    attribution: a.attribution.as_str().into(),
                    claim_file,
                    claim_index,
                    ownership_version: a.ownership_version,
                    orphan: a.orphan as u8,
                    interaction_kind: a.interaction_kind,
                    source_topic: a.source.topic,
                    source_partition: a.source.partition,
                    source_offset: a.source.offset,
                    attributed_at_ms: a.attributed_at,
                    kafka_topic: String::new(),
                    kafka_partition: -1,
                    kafka_offset: -1,
                })
            }
        }
    }
}

impl Row {
    /// Records the Kafka message the row is landed from (the sink's exactly-once key).
    pub fn set_kafka(&mut self, topic: &str, partition: i32, offset: i64) {
        let (t, p, o) = match self {
            Row::Interaction(r) => (
                &mut r.kafka_topic,
                &mut r.kafka_partition,
                &mut r.kafka_offset,
            ),
            Row::Rating(r) => (
                &mut r.kafka_topic,
                &mut r.kafka_partition,
                &mut r.kafka_offset,
            ),
        };
        *t = topic.to_string();
        *p = partition;
        *o = offset;
    }
}

/// The columns each row type writes, with the ClickHouse type the sink serializes for it
/// (RowBinary carries no types, so a mistyped column would be misread silently; the sink's
/// startup check compares these with `system.columns`). `LowCardinality(T)` on the server
/// is accepted for `T` (migration 4 on servers that support it).
pub const INTERACTION_COLUMNS: &[(&str, &str)] = &[
    ("interaction_id", "String"),
    ("occurred_at", "DateTime"),
    ("occurred_at_ms", "Int64"),
    ("service", "String"),
    ("channel", "String"),
    ("kind", "String"),
    ("customer_ref", "String"),
    ("product", "Nullable(String)"),
    ("region", "Nullable(String)"),
    ("agent_id", "Nullable(String)"),
    ("handling_team", "Nullable(String)"),
    ("attributes", "String"),
    ("team", "String"),
    ("attribution", "String"),
    ("claim_file", "Nullable(String)"),
    ("claim_index", "Nullable(Int32)"),
    ("ownership_version", "String"),
    ("source_topic", "String"),
    ("source_partition", "Int32"),
    ("source_offset", "Int64"),
    ("attributed_at_ms", "Int64"),
    ("kafka_topic", "String"),
    ("kafka_partition", "Int32"),
    ("kafka_offset", "Int64"),
];

pub const RATING_COLUMNS: &[(&str, &str)] = &[
    ("rating_id", "String"),
    ("occurred_at", "DateTime"),
    ("occurred_at_ms", "Int64"),
    ("interaction_id", "Nullable(String)"),
    ("metric", "String"),
    ("score", "Int8"),
    ("comment", "Nullable(String)"),
    ("service", "String"),
    ("channel", "String"),
    ("customer_ref", "String"),
    ("product", "Nullable(String)"),
    ("region", "Nullable(String)"),
    ("attributes", "String"),
    ("team", "String"),
    ("attribution", "String"),
    ("claim_file", "Nullable(String)"),
    ("claim_index", "Nullable(Int32)"),
    ("ownership_version", "String"),
    ("orphan", "UInt8"),
    ("interaction_kind", "Nullable(String)"),
    ("source_topic", "String"),
    ("source_partition", "Int32"),
    ("source_offset", "Int64"),
    ("attributed_at_ms", "Int64"),
    ("kafka_topic", "String"),
    ("kafka_partition", "Int32"),
    ("kafka_offset", "Int64"),
];

pub const DEAD_LETTER_COLUMNS: &[(&str, &str)] = &[
    ("received_at", "DateTime"),
    ("component", "String"),
    ("reason", "String"),
    ("error", "String"),
    ("source_topic", "String"),
    ("source_partition", "Int32"),
    ("source_offset", "Int64"),
    ("payload", "String"),
    ("kafka_topic", "String"),
    ("kafka_partition", "Int32"),
    ("kafka_offset", "Int64"),
];

/// The sink's progress rows (`{db}.sink_progress`, migration 3).
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct ProgressRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

pub const PROGRESS_COLUMNS: &[(&str, &str)] = &[
    ("topic", "String"),
    ("partition", "Int32"),
    ("offset", "Int64"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::Row as _;

    fn names(c: &[(&str, &str)]) -> Vec<String> {
        c.iter().map(|(n, _)| n.to_string()).collect()
    }

    #[test]
    fn column_lists_match_the_serialized_fields() {
        assert_eq!(names(INTERACTION_COLUMNS), InteractionRow::COLUMN_NAMES);
        assert_eq!(names(RATING_COLUMNS), RatingRow::COLUMN_NAMES);
        assert_eq!(names(DEAD_LETTER_COLUMNS), DeadLetterRow::COLUMN_NAMES);
        assert_eq!(names(PROGRESS_COLUMNS), ProgressRow::COLUMN_NAMES);
    }
}
