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
                })
            }
        }
    }
}
