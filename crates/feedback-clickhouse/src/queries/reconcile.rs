//! What `feedback drill` reads back to reconcile ClickHouse with what it sent: raw row and
//! id counts, dead letters by reason, and the aggregate tables and metric views, each
//! summed over its key (parts not yet merged are added up).

use serde::Deserialize;

use crate::{migrations::render, Ch, Error, MetricRow};

#[derive(clickhouse::Row, Deserialize)]
struct N {
    n: u64,
}

/// Rows landed so far: (interactions, ratings, dead letters).
pub async fn raw_counts(ch: &Ch) -> Result<(u64, u64, u64), Error> {
    let n = |sql: &'static str| async move {
        ch.fetch::<N>(sql)
            .await
            .map(|r| r.first().map(|x| x.n).unwrap_or(0))
    };
    Ok((
        n("SELECT count() AS n FROM {db}.interactions").await?,
        n("SELECT count() AS n FROM {db}.ratings").await?,
        n("SELECT count() AS n FROM {db}.dead_letters").await?,
    ))
}

/// Rows per id of a raw table.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct IdCount {
    pub id: String,
    pub n: u64,
}

/// Rows per `interaction_id` of `{db}.interactions`.
pub async fn interaction_ids(ch: &Ch) -> Result<Vec<IdCount>, Error> {
    ch.fetch("SELECT interaction_id AS id, count() AS n FROM {db}.interactions GROUP BY id")
        .await
}

/// Rows per `rating_id` of `{db}.ratings`.
pub async fn rating_ids(ch: &Ch) -> Result<Vec<IdCount>, Error> {
    ch.fetch("SELECT rating_id AS id, count() AS n FROM {db}.ratings GROUP BY id")
        .await
}

/// Dead letters per (component, reason).
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct DeadLetterCount {
    pub component: String,
    pub reason: String,
    pub n: u64,
}

pub async fn dead_letters(ch: &Ch) -> Result<Vec<DeadLetterCount>, Error> {
    ch.fetch(
        "SELECT component, reason, count() AS n FROM {db}.dead_letters GROUP BY component, reason",
    )
    .await
}

/// One key of `{db}.team_minute`; `minute` in seconds since the epoch.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct TeamMinute {
    pub team: String,
    pub metric: String,
    pub minute: u32,
    pub responses: u64,
    pub score_sum: i64,
    pub positive: u64,
    pub negative: u64,
}

pub async fn team_minute(ch: &Ch) -> Result<Vec<TeamMinute>, Error> {
    ch.fetch("SELECT team, metric, toUInt32(minute) AS minute, sum(responses) AS responses, sum(score_sum) AS score_sum, sum(positive) AS positive, sum(negative) AS negative FROM {db}.team_minute GROUP BY team, metric, minute")
        .await
}

/// The rollups' comment hours (grain `comment_hour`: the ratings with a comment), as
/// [`TeamMinute`] keys whose `minute` is the hour's start.
pub async fn comment_hours(ch: &Ch) -> Result<Vec<TeamMinute>, Error> {
    ch.fetch("SELECT team, metric, toUInt32(bucket) AS minute, toUInt64(sum(responses)) AS responses, sum(score_sum) AS score_sum, toUInt64(sum(positive)) AS positive, toUInt64(sum(negative)) AS negative FROM {db}.rollups WHERE grain = 'comment_hour' GROUP BY team, metric, minute HAVING responses != 0")
        .await
}

/// One key of `{db}.team_interactions_minute`.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct TeamInteractionsMinute {
    pub team: String,
    pub minute: u32,
    pub channel: String,
    pub kind: String,
    pub interactions: u64,
}

pub async fn team_interactions_minute(ch: &Ch) -> Result<Vec<TeamInteractionsMinute>, Error> {
    ch.fetch("SELECT team, toUInt32(minute) AS minute, channel, kind, sum(interactions) AS interactions FROM {db}.team_interactions_minute GROUP BY team, minute, channel, kind")
        .await
}

/// One key of `{db}.team_dim_minute`.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct TeamDimMinute {
    pub team: String,
    pub metric: String,
    pub dimension: String,
    pub dim_value: String,
    pub minute: u32,
    pub responses: u64,
    pub score_sum: i64,
    pub positive: u64,
    pub negative: u64,
}

pub async fn team_dim_minute(ch: &Ch) -> Result<Vec<TeamDimMinute>, Error> {
    ch.fetch("SELECT team, metric, dimension, dim_value, toUInt32(minute) AS minute, sum(responses) AS responses, sum(score_sum) AS score_sum, sum(positive) AS positive, sum(negative) AS negative FROM {db}.team_dim_minute GROUP BY team, metric, dimension, dim_value, minute")
        .await
}

/// `{db}.team_metrics_window` for one window (`last_24h`, ...).
pub async fn metrics_window(ch: &Ch, window: &str) -> Result<Vec<MetricRow>, Error> {
    ch.client
        .query(&render(
            "SELECT team, metric, responses, positive, negative, score_sum, value FROM {db}.team_metrics_window WHERE window = ?",
            ch.database(),
        ))
        .bind(window)
        .fetch_all()
        .await
        .map_err(|e| ch.err(e))
}
