//! The board's SQL. Numbers come from the metric views (`team_metrics_window`,
//! `team_metrics`, `team_breakdown`), so they equal what SQL users and Grafana see; comments
//! and data health read the raw tables. Every statement runs on ClickHouse 18.16 and current
//! ClickHouse (checked with chDB by `tests/board_sql_chdb.py`).

use std::time::Instant;

use feedback_clickhouse::{clickhouse, migrations, Ch};
use prometheus::Histogram;
use serde::{Deserialize, Serialize};

/// Rolling windows the pages offer: (name in the URL, current window, previous window,
/// trend grain, trend span in seconds).
pub const WINDOWS: &[(&str, &str, &str, &str, i64)] = &[
    ("1h", "last_1h", "prev_1h", "minute", 3600),
    ("24h", "last_24h", "prev_24h", "hour", 86400),
    ("7d", "last_7d", "prev_7d", "hour", 7 * 86400),
];

pub fn window(name: &str) -> Option<(&'static str, &'static str, &'static str, &'static str, i64)> {
    WINDOWS.iter().copied().find(|w| w.0 == name)
}

pub const WINDOW_SQL: &str =
    "SELECT team, metric, window, responses, positive, negative, score_sum, value \
     FROM {db}.team_metrics_window WHERE window IN (?, ?) ORDER BY team, metric, window";

pub const WINDOW_TEAM_SQL: &str = "SELECT team, metric, window, responses, positive, negative, score_sum, value \
     FROM {db}.team_metrics_window WHERE window IN (?, ?) AND team = ? ORDER BY team, metric, window";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct WindowRow {
    pub team: String,
    pub metric: String,
    pub window: String,
    pub responses: u64,
    pub positive: u64,
    pub negative: u64,
    pub score_sum: i64,
    pub value: f64,
}

pub const TREND_SQL: &str = "SELECT team, metric, toUInt32(bucket) AS ts, responses, value \
     FROM {db}.team_metrics WHERE grain = ? AND bucket >= toStartOfMinute(now()) - ? \
     ORDER BY team, metric, ts";

pub const TREND_TEAM_SQL: &str = "SELECT team, metric, toUInt32(bucket) AS ts, responses, value \
     FROM {db}.team_metrics WHERE grain = ? AND bucket >= toStartOfMinute(now()) - ? AND team = ? \
     ORDER BY team, metric, ts";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct TrendRow {
    pub team: String,
    pub metric: String,
    pub ts: u32,
    pub responses: u64,
    pub value: f64,
}

/// Worst first: every metric is "higher is better", so ascending value; ties by count.
pub const BREAKDOWN_SQL: &str = "SELECT metric, dimension, dim_value, responses, value \
     FROM {db}.team_breakdown WHERE team = ? AND window = ? \
     ORDER BY dimension, metric, value ASC, responses DESC, dim_value";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct BreakdownRow {
    pub metric: String,
    pub dimension: String,
    pub dim_value: String,
    pub responses: u64,
    pub value: f64,
}

/// The latest comments of a team, each with its interaction's context (empty strings when the
/// interaction is not known: an orphan or a rating without interaction).
pub const COMMENTS_SQL: &str = "SELECT rating_id, occurred_at_ms, metric, score, comment, channel, service, orphan, \
            interaction_id, i_kind, i_channel, i_service, i_product \
     FROM ( \
        SELECT rating_id, occurred_at_ms, metric, toInt32(score) AS score, ifNull(comment, '') AS comment, \
               channel, service, orphan, ifNull(interaction_id, '') AS interaction_id \
        FROM {db}.ratings \
        WHERE team = ? AND comment IS NOT NULL AND comment != '' \
        ORDER BY occurred_at_ms DESC, rating_id LIMIT ? \
     ) ANY LEFT JOIN ( \
        SELECT interaction_id, kind AS i_kind, channel AS i_channel, service AS i_service, \
               ifNull(product, '') AS i_product \
        FROM {db}.interactions \
        WHERE interaction_id IN ( \
            SELECT ifNull(interaction_id, '') FROM {db}.ratings \
            WHERE team = ? AND comment IS NOT NULL AND comment != '' \
        ) \
     ) USING interaction_id \
     ORDER BY occurred_at_ms DESC, rating_id";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct CommentRow {
    pub rating_id: String,
    pub occurred_at_ms: i64,
    pub metric: String,
    pub score: i32,
    pub comment: String,
    pub channel: String,
    pub service: String,
    pub orphan: u8,
    pub interaction_id: String,
    pub i_kind: String,
    pub i_channel: String,
    pub i_service: String,
    pub i_product: String,
}

/// Data health: newest landed event (seconds; 0 when none), orphan ratings, unowned events.
/// `{filter}` is `team = ?` for one team or `1` for all.
pub const HEALTH_SQL: &str = "SELECT toInt64(now()) AS now_s, \
        (SELECT toInt64(max(inserted_at)) FROM {db}.ratings WHERE {filter}) AS ratings_last, \
        (SELECT toInt64(max(inserted_at)) FROM {db}.interactions WHERE {filter}) AS interactions_last, \
        (SELECT count() FROM {db}.ratings WHERE {filter} AND orphan = 1) AS orphans, \
        (SELECT count() FROM {db}.ratings WHERE team = 'unowned') AS unowned_ratings, \
        (SELECT count() FROM {db}.interactions WHERE team = 'unowned') AS unowned_interactions";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct HealthRow {
    pub now_s: i64,
    pub ratings_last: i64,
    pub interactions_last: i64,
    pub orphans: u64,
    pub unowned_ratings: u64,
    pub unowned_interactions: u64,
}

/// CES sums of squares per team and window (the Welch test needs variances; the views hold
/// no sum of squares). Same window bounds as the views (`WINDOWS_SQL`).
pub const CES_SQUARES_SQL: &str =
    "SELECT team, tupleElement(w, 1) AS window, count() AS responses, \
        sum(toInt64(score)) AS score_sum, sum(toInt64(score) * toInt64(score)) AS score_sq_sum \
     FROM {db}.ratings ARRAY JOIN {windows} AS w \
     WHERE metric = 'ces' AND occurred_at >= toStartOfMinute(now()) - 14 * 86400 \
       AND toStartOfMinute(occurred_at) >= tupleElement(w, 2) \
       AND toStartOfMinute(occurred_at) < tupleElement(w, 3) \
       AND tupleElement(w, 1) IN (?, ?) \
     GROUP BY team, window ORDER BY team, window";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct SquaresRow {
    pub team: String,
    pub window: String,
    pub responses: u64,
    pub score_sum: i64,
    pub score_sq_sum: i64,
}

/// Runs queries against one database and times them.
#[derive(Clone)]
pub struct Queries {
    pub ch: Ch,
    pub seconds: Histogram,
}

macro_rules! timed {
    ($self:ident, $q:expr) => {{
        let started = Instant::now();
        let r = $q.fetch_all().await;
        $self.seconds.observe(started.elapsed().as_secs_f64());
        r.map_err(|e| {
            anyhow::anyhow!(
                "ClickHouse query failed ({e}); is ClickHouse up and the schema migrated (`feedback migrate`)?"
            )
        })
    }};
}

impl Queries {
    fn sql(&self, s: &str) -> String {
        migrations::render(s, self.ch.database())
    }

    pub async fn windows(
        &self,
        now: &str,
        prev: &str,
        team: Option<&str>,
    ) -> anyhow::Result<Vec<WindowRow>> {
        match team {
            None => timed!(
                self,
                self.ch
                    .client()
                    .query(&self.sql(WINDOW_SQL))
                    .bind(now)
                    .bind(prev)
            ),
            Some(t) => timed!(
                self,
                self.ch
                    .client()
                    .query(&self.sql(WINDOW_TEAM_SQL))
                    .bind(now)
                    .bind(prev)
                    .bind(t)
            ),
        }
    }

    pub async fn trend(
        &self,
        grain: &str,
        span_secs: i64,
        team: Option<&str>,
    ) -> anyhow::Result<Vec<TrendRow>> {
        match team {
            None => timed!(
                self,
                self.ch
                    .client()
                    .query(&self.sql(TREND_SQL))
                    .bind(grain)
                    .bind(span_secs)
            ),
            Some(t) => timed!(
                self,
                self.ch
                    .client()
                    .query(&self.sql(TREND_TEAM_SQL))
                    .bind(grain)
                    .bind(span_secs)
                    .bind(t)
            ),
        }
    }

    pub async fn breakdown(&self, team: &str, window: &str) -> anyhow::Result<Vec<BreakdownRow>> {
        timed!(
            self,
            self.ch
                .client()
                .query(&self.sql(BREAKDOWN_SQL))
                .bind(team)
                .bind(window)
        )
    }

    pub async fn comments(&self, team: &str, limit: u64) -> anyhow::Result<Vec<CommentRow>> {
        timed!(
            self,
            self.ch
                .client()
                .query(&self.sql(COMMENTS_SQL))
                .bind(team)
                .bind(limit)
                .bind(team)
        )
    }

    pub async fn health(&self, team: Option<&str>) -> anyhow::Result<HealthRow> {
        let rows: Vec<HealthRow> = match team {
            None => timed!(
                self,
                self.ch
                    .client()
                    .query(&self.sql(&HEALTH_SQL.replace("{filter}", "1")))
            )?,
            Some(t) => timed!(
                self,
                self.ch
                    .client()
                    .query(&self.sql(&HEALTH_SQL.replace("{filter}", "team = ?")))
                    .bind(t)
                    .bind(t)
                    .bind(t)
            )?,
        };
        rows.into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("ClickHouse returned no row for the health query"))
    }

    pub async fn ces_squares(&self, now: &str, prev: &str) -> anyhow::Result<Vec<SquaresRow>> {
        timed!(
            self,
            self.ch
                .client()
                .query(&self.sql(CES_SQUARES_SQL))
                .bind(now)
                .bind(prev)
        )
    }
}
