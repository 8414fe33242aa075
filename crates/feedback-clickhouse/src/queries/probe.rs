//! `feedback probe`'s read: the per-minute aggregate it waits on.

use feedback_events::Metric;
use serde::Deserialize;

use crate::{Ch, Error};

pub const MINUTE_RESPONSES_SQL: &str = "SELECT sum(responses) AS responses FROM {db}.team_minute WHERE team = ? AND metric = ? AND minute = toDateTime(?)";

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Responses {
    responses: u64,
}

/// How many `metric` answers `team` has in the minute starting at `minute_secs` (Unix
/// seconds) of event time.
pub async fn minute_responses(
    ch: &Ch,
    team: &str,
    metric: Metric,
    minute_secs: i64,
) -> Result<u64, Error> {
    let q = ch
        .query(MINUTE_RESPONSES_SQL)
        .bind(team)
        .bind(metric.as_str())
        .bind(minute_secs);
    let r: Vec<Responses> = ch.fetch_query(q).await?;
    Ok(r.first().map(|r| r.responses).unwrap_or(0))
}
