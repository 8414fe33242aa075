//! The board's reads. Numbers come from the metric views (`team_metrics_window`,
//! `team_metrics`, `team_breakdown`), so they equal what SQL users and Grafana see; comments
//! and data health read the raw tables. Every statement runs on ClickHouse 18.16 and current
//! ClickHouse (checked with chDB by `tests/board_sql_chdb.py`, driven by the test below).

use feedback_events::Metric;
use serde::{Deserialize, Serialize};

use crate::{Ch, Error, Window};

pub const WINDOW_SQL: &str =
    "SELECT team, metric, window, responses, positive, negative, score_sum, value \
     FROM {db}.team_metrics_window WHERE window IN (?, ?) ORDER BY team, metric, window";

pub const WINDOW_TEAM_SQL: &str = "SELECT team, metric, window, responses, positive, negative, score_sum, value \
     FROM {db}.team_metrics_window WHERE window IN (?, ?) AND team = ? ORDER BY team, metric, window";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct WindowRow {
    pub team: String,
    pub metric: Metric,
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
    pub metric: Metric,
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
    pub metric: Metric,
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
     ) AS r ANY LEFT JOIN ( \
        SELECT interaction_id, kind AS i_kind, channel AS i_channel, service AS i_service, \
               ifNull(product, '') AS i_product \
        FROM {db}.interactions \
        WHERE interaction_id IN ( \
            SELECT ifNull(interaction_id, '') FROM {db}.ratings \
            WHERE team = ? AND comment IS NOT NULL AND comment != '' \
        ) \
     ) AS i USING interaction_id \
     ORDER BY occurred_at_ms DESC, rating_id";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct CommentRow {
    pub rating_id: String,
    pub occurred_at_ms: i64,
    pub metric: Metric,
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
/// no sum of squares). Same window bounds as the views (`{windows}`, [`crate::migrations::windows_sql`]).
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

/// Both windows (`window`'s current and previous) of every team's metrics, or of one team's.
pub async fn windows(ch: &Ch, window: Window, team: Option<&str>) -> Result<Vec<WindowRow>, Error> {
    let q = match team {
        None => ch
            .query(WINDOW_SQL)
            .bind(window.current())
            .bind(window.previous()),
        Some(t) => ch
            .query(WINDOW_TEAM_SQL)
            .bind(window.current())
            .bind(window.previous())
            .bind(t),
    };
    ch.fetch_query(q).await
}

/// The trend lines over `window`'s span at its trend grain, of every team or of one.
pub async fn trend(ch: &Ch, window: Window, team: Option<&str>) -> Result<Vec<TrendRow>, Error> {
    let q = match team {
        None => ch
            .query(TREND_SQL)
            .bind(window.trend_grain())
            .bind(window.secs()),
        Some(t) => ch
            .query(TREND_TEAM_SQL)
            .bind(window.trend_grain())
            .bind(window.secs())
            .bind(t),
    };
    ch.fetch_query(q).await
}

/// One team's metrics per dimension value in `window`'s current window, worst first.
pub async fn breakdown(ch: &Ch, team: &str, window: Window) -> Result<Vec<BreakdownRow>, Error> {
    let q = ch.query(BREAKDOWN_SQL).bind(team).bind(window.current());
    ch.fetch_query(q).await
}

/// One team's latest `limit` comments, newest first.
pub async fn comments(ch: &Ch, team: &str, limit: u64) -> Result<Vec<CommentRow>, Error> {
    let q = ch.query(COMMENTS_SQL).bind(team).bind(limit).bind(team);
    ch.fetch_query(q).await
}

/// Data health of one team or of all (`None` only if the server returned no row, which a
/// SELECT without FROM never does).
pub async fn health(ch: &Ch, team: Option<&str>) -> Result<Option<HealthRow>, Error> {
    let q = match team {
        None => ch.query(&HEALTH_SQL.replace("{filter}", "1")),
        Some(t) => ch
            .query(&HEALTH_SQL.replace("{filter}", "team = ?"))
            .bind(t)
            .bind(t)
            .bind(t),
    };
    let rows: Vec<HealthRow> = ch.fetch_query(q).await?;
    Ok(rows.into_iter().next())
}

/// CES sums of squares of every team in `window`'s current and previous windows.
pub async fn ces_squares(ch: &Ch, window: Window) -> Result<Vec<SquaresRow>, Error> {
    let q = ch
        .query(CES_SQUARES_SQL)
        .bind(window.current())
        .bind(window.previous());
    ch.fetch_query(q).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations;
    use crate::queries::{probe, watch};

    const DB: &str = "board_sqlcheck";

    /// Fills `?` placeholders in order with SQL literals.
    fn fill(sql: &str, args: &[&str]) -> String {
        let mut out = String::new();
        let mut it = args.iter();
        for ch in sql.chars() {
            if ch == '?' {
                out.push_str(it.next().expect("enough arguments"));
            } else {
                out.push(ch);
            }
        }
        assert!(it.next().is_none(), "too many arguments for {sql}");
        migrations::render(&out, DB)
    }

    /// Every board query runs on current ClickHouse (chDB 26.x) over the real migrations and
    /// returns what the seeded rows imply (computed by hand here). ClickHouse 18.16 runs the
    /// same SQL in the integration tests (tests/it/board.rs).
    #[test]
    fn board_sql_runs_on_current_clickhouse() {
        let mut statements = vec![format!("CREATE DATABASE {DB}")];
        for m in migrations::MIGRATIONS {
            for s in m.statements {
                statements.push(migrations::render(s, DB));
            }
        }
        let cols = "rating_id, occurred_at, occurred_at_ms, interaction_id, metric, score, comment, service, channel, \
                    customer_ref, product, attributes, team, attribution, ownership_version, orphan, interaction_kind, \
                    source_topic, source_partition, source_offset, attributed_at_ms";
        // payments: 4 CSAT answers 5, 4, 2, 1 five minutes ago (2 positive of 4 = 50%), one with
        // a comment on interaction i1; 2 CES answers 6 and 4 ninety minutes ago; one orphan.
        statements.push(format!(
            "INSERT INTO {DB}.ratings ({cols}) VALUES \
             ('r1', now() - 300, 1000, 'i1', 'csat', 5, 'great', 'checkout-api', 'web', 'c', 'card', '{{}}', 'payments', 'claim', 'v', 0, 'order', 't', 0, 1, 0), \
             ('r2', now() - 300, 2000, NULL, 'csat', 4, NULL, 'checkout-api', 'web', 'c', NULL, '{{}}', 'payments', 'claim', 'v', 0, NULL, 't', 0, 2, 0), \
             ('r3', now() - 300, 3000, 'i9', 'csat', 2, 'slow', 'checkout-api', 'app', 'c', NULL, '{{}}', 'payments', 'claim', 'v', 1, NULL, 't', 0, 3, 0), \
             ('r4', now() - 300, 4000, NULL, 'csat', 1, NULL, 'checkout-api', 'app', 'c', NULL, '{{}}', 'payments', 'claim', 'v', 0, NULL, 't', 0, 4, 0), \
             ('r5', now() - 5400, 5000, NULL, 'ces', 6, NULL, 'checkout-api', 'app', 'c', NULL, '{{}}', 'payments', 'claim', 'v', 0, NULL, 't', 0, 5, 0), \
             ('r6', now() - 5400, 6000, NULL, 'ces', 4, NULL, 'checkout-api', 'app', 'c', NULL, '{{}}', 'payments', 'claim', 'v', 0, NULL, 't', 0, 6, 0), \
             ('r7', now() - 300, 7000, NULL, 'nps', 3, NULL, 'x', 'web', 'c', NULL, '{{}}', 'unowned', 'unowned', 'v', 0, NULL, 't', 0, 7, 0)"
        ));
        statements.push(format!(
            "INSERT INTO {DB}.interactions (interaction_id, occurred_at, occurred_at_ms, service, channel, kind, customer_ref, \
             product, attributes, team, attribution, ownership_version, source_topic, source_partition, source_offset, attributed_at_ms) \
             VALUES ('i1', now() - 400, 900, 'checkout-api', 'web', 'order', 'c', 'payments-card', '{{}}', 'payments', 'claim', 'v', 't', 0, 0, 0)"
        ));
        let queries = serde_json::json!({
            "windows": fill(WINDOW_SQL, &["'last_1h'", "'prev_1h'"]),
            "windows_team": fill(WINDOW_TEAM_SQL, &["'last_1h'", "'prev_1h'", "'payments'"]),
            "trend": fill(TREND_SQL, &["'minute'", "3600"]),
            "trend_team": fill(TREND_TEAM_SQL, &["'hour'", "86400", "'payments'"]),
            "breakdown": fill(BREAKDOWN_SQL, &["'payments'", "'last_1h'"]),
            "comments": fill(COMMENTS_SQL, &["'payments'", "20", "'payments'"]),
            "health_team": fill(&HEALTH_SQL.replace("{filter}", "team = ?"), &["'payments'"; 3]),
            "health_all": fill(&HEALTH_SQL.replace("{filter}", "1"), &[]),
            "ces_squares": fill(CES_SQUARES_SQL, &["'last_1h'", "'prev_1h'"]),
            // `feedback watch` and `feedback probe` read the same views.
            "watch_total": fill(watch::METRICS_BY_GRAIN_SQL, &["'total'"]),
            "watch_counts": fill(watch::COUNTS_SQL, &[]),
            "probe_minute": fill(probe::MINUTE_RESPONSES_SQL, &[
                "'payments'",
                "'csat'",
                "(SELECT toUInt32(toStartOfMinute(max(occurred_at))) FROM board_sqlcheck.ratings WHERE rating_id = 'r1')",
            ]),
        });
        let input = serde_json::json!({ "statements": statements, "queries": queries });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/board_sql_chdb.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (tests/run.sh installs chDB)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let csat: Vec<_> = r["windows_team"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["metric"] == "csat")
            .collect();
        assert_eq!(csat.len(), 1, "{r}");
        assert_eq!(csat[0]["window"], "last_1h");
        assert_eq!(csat[0]["responses"].as_u64(), Some(4));
        assert_eq!(csat[0]["value"].as_f64(), Some(50.0));
        let ces: Vec<_> = r["windows_team"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["metric"] == "ces")
            .collect();
        assert_eq!(ces[0]["window"], "prev_1h");
        assert_eq!(ces[0]["value"].as_f64(), Some(5.0));
        // Worst channel first: app (0 of 2 positive) before web (2 of 2).
        let b = r["breakdown"].as_array().unwrap();
        let ch: Vec<_> = b.iter().filter(|x| x["dimension"] == "channel").collect();
        assert_eq!(ch[0]["dim_value"], "app");
        assert_eq!(ch[0]["value"].as_f64(), Some(0.0));
        assert_eq!(ch[1]["dim_value"], "web");
        // Newest comment first; only r1's interaction is known.
        let c = r["comments"].as_array().unwrap();
        assert_eq!(c.len(), 2, "{r}");
        assert_eq!(c[0]["rating_id"], "r3");
        assert_eq!(c[0]["i_kind"], "");
        assert_eq!(c[1]["rating_id"], "r1");
        assert_eq!(c[1]["i_kind"], "order");
        assert_eq!(c[1]["i_product"], "payments-card");
        assert_eq!(r["health_team"][0]["orphans"].as_u64(), Some(1));
        assert_eq!(r["health_all"][0]["unowned_ratings"].as_u64(), Some(1));
        assert!(r["health_team"][0]["ratings_last"].as_i64().unwrap() > 0);
        // CES: prev_1h holds 6 and 4: sum 10, squares 52.
        let q = &r["ces_squares"][0];
        assert_eq!(q["window"], "prev_1h");
        assert_eq!(q["responses"].as_u64(), Some(2));
        assert_eq!(q["score_sum"].as_i64(), Some(10));
        assert_eq!(q["score_sq_sum"].as_i64(), Some(52));
        let trend = r["trend_team"].as_array().unwrap();
        assert!(trend
            .iter()
            .any(|x| x["metric"] == "csat" && x["responses"].as_u64() == Some(4)));
        assert!(!r["trend"].as_array().unwrap().is_empty());
        let total: Vec<_> = r["watch_total"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["team"] == "payments" && x["metric"] == "csat")
            .collect();
        assert_eq!(total.len(), 1, "{r}");
        assert_eq!(total[0]["responses"].as_u64(), Some(4));
        assert_eq!(total[0]["value"].as_f64(), Some(50.0));
        assert_eq!(r["watch_counts"][0]["interactions"].as_u64(), Some(1));
        assert_eq!(r["watch_counts"][0]["ratings"].as_u64(), Some(7));
        assert_eq!(r["probe_minute"][0]["responses"].as_u64(), Some(4));
    }
}
