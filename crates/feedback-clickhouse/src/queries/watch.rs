//! `feedback watch`'s reads (and the pipeline test's): the metric view at one grain and the
//! raw tables' row counts.

use feedback_events::Metric;
use serde::Deserialize;

use crate::{Ch, Error};

/// One row of `{db}.team_metrics`.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct MetricRow {
    pub team: String,
    pub metric: Metric,
    pub responses: u64,
    pub positive: u64,
    pub negative: u64,
    pub score_sum: i64,
    pub value: f64,
}

/// The metric query of `feedback watch` and the tests: one grain (`total`, `last_1h`, ...).
pub const METRICS_BY_GRAIN_SQL: &str =
    "SELECT team, metric, responses, positive, negative, score_sum, value \
     FROM {db}.team_metrics WHERE grain = ? ORDER BY team, metric";

/// Every team's metrics at `grain` (`total`, `last_1h`, `day`, `hour` or `minute`).
pub async fn metrics(ch: &Ch, grain: &str) -> Result<Vec<MetricRow>, Error> {
    ch.fetch_query(ch.query(METRICS_BY_GRAIN_SQL).bind(grain))
        .await
}

pub const COUNTS_SQL: &str = "SELECT (SELECT count() FROM {db}.interactions) AS interactions, (SELECT count() FROM {db}.ratings) AS ratings";

/// How many rows the raw tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clickhouse::Row, Deserialize)]
pub struct Counts {
    pub interactions: u64,
    pub ratings: u64,
}

/// The raw tables' row counts (zeros if the server returned no row).
pub async fn counts(ch: &Ch) -> Result<Counts, Error> {
    let rows: Vec<Counts> = ch.fetch(COUNTS_SQL).await?;
    Ok(rows.into_iter().next().unwrap_or_default())
}
