//! The board's reads. Numbers come from the rollups with the views' window sums
//! ([`crate::rollups::window_sums_sql`]) and formulas, restricted to the one window the page
//! shows (the views compute all six), so they equal what SQL users and Grafana see; the
//! trend reads `team_metrics`; comments read `rating_comments` from the hour the rollups' comment hours give. Every statement runs on ClickHouse 18.16 and current
//! ClickHouse (checked with chDB by `tests/board_sql_chdb.py`, driven by the test below).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use feedback_events::Metric;
use serde::{Deserialize, Serialize};

use crate::migrations::RATING_MEASURES;
use crate::{rollups, Ch, Error, Window};

/// `window`'s current and previous sums per team and metric (`team = ?` with `one_team`):
/// the rows of `team_metrics_window` for that window (`metric != ''`), each with its orphan
/// ratings, and for [`UNOWNED`] a row of `metric = ''` with its interactions. The pages'
/// counts of orphan and unowned events come from here: the rows the numbers are read from
/// anyway (the interactions of the other teams are left out: as many rows again).
pub fn window_sql(window: Window, one_team: bool) -> String {
    format!(
        "SELECT team, metric, window, responses, positive, negative, score_sum, orphans, interactions, \
                if(responses > 0, {{metric_value}}, 0) AS value \
         FROM ({}) WHERE (responses > 0 OR interactions > 0){} ORDER BY team, metric, window",
        rollups::window_sums_sql(
            "team, metric",
            &format!("dimension = '' AND (metric != '' OR team = '{UNOWNED}')"),
            &[RATING_MEASURES, HEALTH_COUNTS].concat(),
            Some(&rollups::spans(window, true)),
        ),
        if one_team { " AND team = ?" } else { "" }
    )
}

/// The counts of the pages' data health, summed beside the views' measures
/// ([`RATING_MEASURES`]) by [`window_sql`].
const HEALTH_COUNTS: &[(&str, &str)] = &[("orphans", "toUInt64"), ("interactions", "toUInt64")];

/// A row of [`window_sql`] as read.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct WindowSums {
    pub team: String,
    pub metric: String,
    pub window: String,
    pub responses: u64,
    pub positive: u64,
    pub negative: u64,
    pub score_sum: i64,
    pub orphans: u64,
    pub interactions: u64,
    pub value: f64,
}

/// One team's metric in one window: a row of `team_metrics_window`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

/// One team's events in a window's current span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowCounts {
    pub ratings: u64,
    pub orphans: u64,
    /// Counted for [`UNOWNED`] only (0 for the other teams).
    pub interactions: u64,
}

/// What [`windows`] read: every metric's rows, and per team its counts in the current
/// window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Windows {
    pub rows: Vec<WindowRow>,
    pub counts: BTreeMap<String, WindowCounts>,
}

impl Windows {
    /// Splits the rows of [`window_sql`] for `window`.
    pub fn of(sums: Vec<WindowSums>, window: Window) -> Windows {
        let mut out = Windows::default();
        for s in sums {
            if s.window == window.current() {
                let c = out.counts.entry(s.team.clone()).or_default();
                c.ratings += s.responses;
                c.orphans += s.orphans;
                c.interactions += s.interactions;
            }
            let Ok(metric) = s.metric.parse::<Metric>() else {
                continue;
            };
            if s.responses > 0 {
                out.rows.push(WindowRow {
                    team: s.team,
                    metric,
                    window: s.window,
                    responses: s.responses,
                    positive: s.positive,
                    negative: s.negative,
                    score_sum: s.score_sum,
                    value: s.value,
                });
            }
        }
        out
    }
}

/// The trend: `team_metrics`' rows of one grain since `?` seconds ago, read from the rollups
/// directly (the view's other branches, `last_1h` and `total`, are not needed here).
pub const TREND_SQL: &str = "SELECT team, metric, toUInt32(bucket) AS ts, responses, {metric_value} AS value FROM ( \
        SELECT team, metric, bucket, toUInt64(sum(responses)) AS responses, toUInt64(sum(positive)) AS positive, \
               toUInt64(sum(negative)) AS negative, sum(score_sum) AS score_sum \
        FROM {db}.rollups WHERE grain = ? AND bucket >= toStartOfMinute(now()) - ? AND dimension = '' AND metric != '' \
        GROUP BY team, metric, bucket \
     ) WHERE responses > 0 ORDER BY team, metric, ts";

pub const TREND_TEAM_SQL: &str = "SELECT team, metric, toUInt32(bucket) AS ts, responses, {metric_value} AS value FROM ( \
        SELECT team, metric, bucket, toUInt64(sum(responses)) AS responses, toUInt64(sum(positive)) AS positive, \
               toUInt64(sum(negative)) AS negative, sum(score_sum) AS score_sum \
        FROM {db}.rollups WHERE grain = ? AND bucket >= toStartOfMinute(now()) - ? AND dimension = '' AND metric != '' \
          AND team = ? \
        GROUP BY team, metric, bucket \
     ) WHERE responses > 0 ORDER BY team, metric, ts";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct TrendRow {
    pub team: String,
    pub metric: Metric,
    pub ts: u32,
    pub responses: u64,
    pub value: f64,
}

/// Per dimension value, `window`'s current sums (`team = ?` with `one_team`): the rows of
/// `team_breakdown` for that window. Worst first: every metric is "higher is better", so
/// ascending value; ties by count.
pub fn breakdown_sql(window: Window, one_team: bool) -> String {
    format!(
        "SELECT team, metric, dimension, dim_value, responses, value FROM ( \
            SELECT team, metric, dimension, dim_value, responses, {{metric_value}} AS value, positive, negative, score_sum \
            FROM ({}) WHERE responses > 0{}) \
         ORDER BY team, dimension, metric, value ASC, responses DESC, dim_value",
        rollups::window_sums_sql(
            "team, metric, dimension, dim_value",
            "dimension != '' AND metric != ''",
            RATING_MEASURES,
            Some(&rollups::spans(window, false)),
        ),
        if one_team { " AND team = ?" } else { "" }
    )
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct BreakdownRow {
    pub team: String,
    pub metric: Metric,
    pub dimension: String,
    pub dim_value: String,
    pub responses: u64,
    pub value: f64,
}

/// How far back the latest comments are looked for: the last 24 hours of
/// `rating_comments` (migration 9: only the ratings with a comment, ordered by
/// `(team, negative, occurred_at, ...)` in small granules), from the hour each team's
/// comment counts in the rollups say its newest comments start at ([`COMMENT_HOURS_SQL`]).
/// A team without comments in that span shows none; older ones are in the same table
/// (Grafana's comments panel takes any time range).
pub const COMMENTS_RECENT_SECS: u32 = 86400;

/// Per team with ratings in the last `?` seconds (from the start of that hour), its hours
/// and the comments the rollups count in each ([`rollups::COMMENT_HOUR`]; 0 for an hour with
/// ratings but no comment). `{team}` is `1` or `team IN (...)`. A few rows per team and
/// hour, whatever the history and the rate.
pub const COMMENT_HOURS_SQL: &str = "SELECT team, toUInt32(bucket) AS hour, \
        toInt64(sumIf(responses, grain = 'comment_hour')) AS comments \
     FROM {db}.rollups \
     WHERE grain IN ('hour', 'comment_hour') AND bucket >= toStartOfHour(now() - ?) \
       AND dimension = '' AND metric != '' AND {team} \
     GROUP BY team, hour HAVING sum(responses) != 0";

/// [`COMMENT_HOURS_SQL`] for every team (`teams` = 0) or for `teams` teams. Placeholders:
/// the span in seconds, the teams.
pub fn comment_hours_sql(teams: usize) -> String {
    COMMENT_HOURS_SQL.replace("{team}", &team_filter(teams))
}

fn team_filter(teams: usize) -> String {
    if teams > 0 {
        format!("team IN ({})", vec!["?"; teams].join(", "))
    } else {
        "1".to_string()
    }
}

/// One row of [`COMMENT_HOURS_SQL`].
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct CommentHour {
    pub team: String,
    pub hour: u32,
    pub comments: i64,
}

/// The comment hours of the last day ([`COMMENTS_RECENT_SECS`]) of one team or of every
/// team with ratings in it.
pub async fn comment_hours(ch: &Ch, team: Option<&str>) -> Result<Vec<CommentHour>, Error> {
    let mut q = ch
        .query(&comment_hours_sql(usize::from(team.is_some())))
        .bind(COMMENTS_RECENT_SECS);
    if let Some(t) = team {
        q = q.bind(t);
    }
    ch.fetch_query(q).await
}

/// Where each team's newest `limit` comments start, from its comment hours: the start of
/// the newest hour from which on the rollups count at least `limit` comments, or `None`
/// (fewer in the whole span: read all of it). Teams in name order.
pub fn comment_bounds(hours: &[CommentHour], limit: u64) -> BTreeMap<String, Option<u32>> {
    let mut per_team: BTreeMap<&str, Vec<(u32, i64)>> = BTreeMap::new();
    for h in hours {
        per_team
            .entry(h.team.as_str())
            .or_default()
            .push((h.hour, h.comments));
    }
    per_team
        .into_iter()
        .map(|(team, mut hs)| {
            hs.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
            let mut seen = 0i64;
            let bound = hs.into_iter().find_map(|(hour, n)| {
                seen += n;
                (limit > 0 && seen >= limit as i64).then_some(hour)
            });
            (team.to_string(), bound)
        })
        .collect()
}

/// The latest `?` comments per team of the last `?` seconds, newest first, without their
/// interaction's context. `{team}` selects teams by name (the ordering key `(team, ...)`
/// prunes the others; `NOT IN` would not), each from its bound or over the whole span:
/// [`recent_comments_sql`]. A row the view and a backfill both wrote is read once (one row
/// per `rating_id`).
const RECENT_COMMENTS_SQL: &str =
    "SELECT team, rating_id, occurred_at_ms, metric, toInt32(score) AS score, \
        comment, channel, service, orphan, interaction_id, interaction_kind \
     FROM ( \
        SELECT team, rating_id, occurred_at_ms, metric, score, comment, channel, service, orphan, \
               interaction_id, interaction_kind \
        FROM {db}.rating_comments WHERE occurred_at >= now() - ? AND ({team}) \
        LIMIT 1 BY team, rating_id \
     ) \
     ORDER BY team, occurred_at_ms DESC, rating_id LIMIT ? BY team";

/// [`RECENT_COMMENTS_SQL`] for `bounded` teams, each from its own start
/// (`(team = ? AND occurred_at >= toDateTime(?))`), and `whole` teams over the whole span
/// (`team IN (...)`); every team when both are 0. Placeholders in order: the span in
/// seconds, each bounded team and its start, the whole teams, the limit.
pub fn recent_comments_sql(bounded: usize, whole: usize) -> String {
    let mut parts: Vec<String> =
        vec!["(team = ? AND occurred_at >= toDateTime(?))".to_string(); bounded];
    if whole > 0 || bounded == 0 {
        parts.push(team_filter(whole));
    }
    RECENT_COMMENTS_SQL.replace("{team}", &parts.join(" OR "))
}

/// The context of `n` interactions (`?` placeholders, their ids) from
/// `interaction_context` (migration 8), read by its ordering key: a few small granules per
/// id, whatever the history.
pub fn interaction_context_sql(n: usize) -> String {
    format!(
        "SELECT interaction_id, any(kind) AS kind, any(channel) AS channel, any(service) AS service, \
                any(product) AS product \
         FROM {{db}}.interaction_context WHERE interaction_id IN ({}) GROUP BY interaction_id",
        vec!["?"; n.max(1)].join(", ")
    )
}

/// A recent comment as [`recent_comments_sql`] reads it.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct RecentComment {
    pub team: String,
    pub rating_id: String,
    pub occurred_at_ms: i64,
    pub metric: Metric,
    pub score: i32,
    pub comment: String,
    pub channel: String,
    pub service: String,
    pub orphan: u8,
    pub interaction_id: String,
    pub interaction_kind: String,
}

/// An interaction's context as [`interaction_context_sql`] reads it.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct InteractionContext {
    pub interaction_id: String,
    pub kind: String,
    pub channel: String,
    pub service: String,
    pub product: String,
}

/// A latest comment as the pages show it: the rating's fields (flattened in JSON) and its
/// interaction's context.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CommentRow {
    #[serde(flatten)]
    pub rating: RecentComment,
    pub i_kind: String,
    pub i_channel: String,
    pub i_service: String,
    pub i_product: String,
}

/// The newest bucket per team with a landed rating and interaction, from the rollups (event
/// time, seconds: the minute when it is within the last two hours, else the hour within the
/// last two days; 0 when none). The pages' counts of orphan and unowned events are those of
/// the window they show ([`window_sql`]): bounded by the window, where the counts of all
/// history (every day row: 305,000 rows at 50 M ratings over 90 days) grew with it, and a
/// count that never goes down does not show whether a fix of the claims helped.
pub const HEALTH_SQL: &str = "SELECT team, toInt64(now()) AS now_s, \
        toInt64(maxIf(bucket, metric != '' AND responses != 0)) AS ratings_last, \
        toInt64(maxIf(bucket, metric = '' AND interactions != 0)) AS interactions_last \
     FROM ( \
        SELECT bucket, team, metric, responses, interactions FROM {db}.rollups \
        WHERE grain = 'hour' AND bucket >= toStartOfHour(now()) - 172800 AND dimension = '' \
        UNION ALL \
        SELECT bucket, team, metric, responses, interactions FROM {db}.rollups \
        WHERE grain = 'minute' AND bucket >= toStartOfMinute(now()) - 7200 AND dimension = '' \
     ) GROUP BY team ORDER BY team";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct TeamHealthRow {
    pub team: String,
    pub now_s: i64,
    pub ratings_last: i64,
    pub interactions_last: i64,
}

/// Data health of one team or of all (what the pages show): the counts are those of the
/// window's current span ([`Windows::counts`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HealthRow {
    pub now_s: i64,
    pub ratings_last: i64,
    pub interactions_last: i64,
    pub orphans: u64,
    pub unowned_ratings: u64,
    pub unowned_interactions: u64,
}

/// The team that holds events no claim matched.
pub const UNOWNED: &str = "unowned";

impl HealthRow {
    /// The health of `team` (`None`: of all teams) from the per-team rows and the window's
    /// counts; `now_s` is the server's clock when `rows` is empty.
    pub fn of(
        rows: &[TeamHealthRow],
        counts: &BTreeMap<String, WindowCounts>,
        team: Option<&str>,
        now_s: i64,
    ) -> HealthRow {
        let unowned = counts.get(UNOWNED).cloned().unwrap_or_default();
        let mut h = HealthRow {
            now_s: rows.first().map_or(now_s, |r| r.now_s),
            unowned_ratings: unowned.ratings,
            unowned_interactions: unowned.interactions,
            ..HealthRow::default()
        };
        for r in rows.iter().filter(|r| team.is_none_or(|t| r.team == t)) {
            h.ratings_last = h.ratings_last.max(r.ratings_last);
            h.interactions_last = h.interactions_last.max(r.interactions_last);
        }
        h.orphans = counts
            .iter()
            .filter(|(t, _)| team.is_none_or(|x| x == t.as_str()))
            .map(|(_, c)| c.orphans)
            .sum();
        h
    }
}

/// CES sums of squares per team and window (the Welch test needs variances), from the
/// rollups, with the views' window bounds (`crate::rollups::window_sums_sql`).
pub fn ces_squares_sql(window: Window) -> String {
    format!(
        "SELECT team, window, responses, score_sum, score_sq_sum FROM ({}) \
         WHERE responses > 0 ORDER BY team, window",
        rollups::window_sums_sql(
            "team",
            "dimension = '' AND metric = 'ces'",
            &[
                ("responses", "toUInt64"),
                ("score_sum", "toInt64"),
                ("score_sq_sum", "toInt64")
            ],
            Some(&rollups::spans(window, true)),
        )
    )
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct SquaresRow {
    pub team: String,
    pub window: String,
    pub responses: u64,
    pub score_sum: i64,
    pub score_sq_sum: i64,
}

/// Both windows (`window`'s current and previous) of every team's metrics, or of one team's,
/// and the counts of the current window.
pub async fn windows(ch: &Ch, window: Window, team: Option<&str>) -> Result<Windows, Error> {
    let q = match team {
        None => ch.query(&window_sql(window, false)),
        Some(t) => ch.query(&window_sql(window, true)).bind(t),
    };
    Ok(Windows::of(ch.fetch_query(q).await?, window))
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

/// One team's metrics (or every team's, `None`) per dimension value in `window`'s current
/// window, worst first.
pub async fn breakdown(
    ch: &Ch,
    team: Option<&str>,
    window: Window,
) -> Result<Vec<BreakdownRow>, Error> {
    let q = match team {
        Some(t) => ch.query(&breakdown_sql(window, true)).bind(t),
        None => ch.query(&breakdown_sql(window, false)),
    };
    ch.fetch_query(q).await
}

/// The latest `limit` comments of one team (or of every team with ratings in the last
/// day, `None`), newest first, each with its interaction's context (empty strings when the
/// interaction is not known: an orphan or a rating without interaction; the kind then comes
/// from the rating's join). Bounded whatever the history and the rate: each team's comment
/// hours from the rollups ([`COMMENT_HOURS_SQL`]) give the hour its newest `limit` comments
/// start at ([`comment_bounds`]), and one read of `rating_comments` takes each team from
/// there (about one hour of its comments at most, a few small granules); a team the counts
/// promised more than it has (comments erased, or lost by the view until `rollups rebuild`
/// restores them) is read again over the whole day. Then the context of the comments kept,
/// by interaction_id.
pub async fn comments(ch: &Ch, team: Option<&str>, limit: u64) -> Result<Vec<CommentRow>, Error> {
    let hours = comment_hours(ch, team).await?;
    let mut bounds = comment_bounds(&hours, limit);
    if let Some(t) = team {
        // Asked for by name: read even when the rollups count nothing of it yet.
        bounds.entry(t.to_string()).or_insert(None);
    }
    if bounds.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let recent = |bounded: Vec<(&str, u32)>, whole: Vec<&str>| {
        let mut q = ch
            .query(&recent_comments_sql(bounded.len(), whole.len()))
            .bind(COMMENTS_RECENT_SECS);
        for (t, from) in &bounded {
            q = q.bind(*t).bind(*from);
        }
        for t in &whole {
            q = q.bind(*t);
        }
        ch.fetch_query::<RecentComment>(q.bind(limit))
    };
    let bounded: Vec<(&str, u32)> = bounds
        .iter()
        .filter_map(|(t, b)| b.map(|b| (t.as_str(), b)))
        .collect();
    let whole: Vec<&str> = bounds
        .iter()
        .filter(|(_, b)| b.is_none())
        .map(|(t, _)| t.as_str())
        .collect();
    let mut rows = recent(bounded.clone(), whole).await?;
    let mut found: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &rows {
        *found.entry(r.team.as_str()).or_default() += 1;
    }
    let short: Vec<&str> = bounded
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| found.get(t).copied().unwrap_or(0) < limit)
        .collect();
    if !short.is_empty() {
        let again = recent(Vec::new(), short.clone()).await?;
        let short: BTreeSet<&str> = short.into_iter().collect();
        rows.retain(|r| !short.contains(r.team.as_str()));
        rows.extend(again);
    }
    let ids: BTreeSet<&str> = rows
        .iter()
        .map(|r| r.interaction_id.as_str())
        .filter(|i| !i.is_empty())
        .collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut context = HashMap::new();
    for chunk in ids.chunks(1000) {
        let mut q = ch.query(&interaction_context_sql(chunk.len()));
        for id in chunk {
            q = q.bind(*id);
        }
        for c in ch.fetch_query::<InteractionContext>(q).await? {
            context.insert(c.interaction_id.clone(), c);
        }
    }
    let mut out: Vec<CommentRow> = rows.into_iter().map(|r| comment_row(r, &context)).collect();
    out.sort_by(|a, b| {
        let (a, b) = (&a.rating, &b.rating);
        (a.team.as_str(), -a.occurred_at_ms, a.rating_id.as_str()).cmp(&(
            b.team.as_str(),
            -b.occurred_at_ms,
            b.rating_id.as_str(),
        ))
    });
    Ok(out)
}

/// A recent comment with its interaction's context, when known.
pub fn comment_row(r: RecentComment, context: &HashMap<String, InteractionContext>) -> CommentRow {
    let c = context.get(&r.interaction_id);
    let field = |f: fn(&InteractionContext) -> &String| c.map(|c| f(c).clone()).unwrap_or_default();
    CommentRow {
        i_kind: c.map_or_else(|| r.interaction_kind.clone(), |c| c.kind.clone()),
        i_channel: field(|c| &c.channel),
        i_service: field(|c| &c.service),
        i_product: field(|c| &c.product),
        rating: r,
    }
}

/// The newest landed events of every team with events in the last two days.
pub async fn health(ch: &Ch) -> Result<Vec<TeamHealthRow>, Error> {
    ch.fetch(HEALTH_SQL).await
}

/// CES sums of squares of every team in `window`'s current and previous windows.
pub async fn ces_squares(ch: &Ch, window: Window) -> Result<Vec<SquaresRow>, Error> {
    ch.fetch_query(ch.query(&ces_squares_sql(window))).await
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
        // Every migration as `feedback migrate` applies it on a fresh database of a current
        // server (statements and steps).
        let mut statements = migrations::fresh_plan(DB, (26, 1));
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
        // zdense: one CSAT answer a minute for the last 8 days (a positive one every other
        // minute), so every window's edges fall on rows: the board's windows (one index per
        // row) equal the views' (every window's index per row) at every edge.
        statements.push(format!(
            "INSERT INTO {DB}.ratings ({cols}) SELECT concat('z', toString(number)), now() - number * 60, number, NULL, \
             'csat', toInt8(if(number % 2 = 0, 5, 2)), NULL, 'dense-api', 'web', 'c', NULL, '{{}}', 'zdense', 'claim', 'v', 0, NULL, \
             't', 0, 100 + number, 0 FROM numbers(11520)"
        ));
        // The views and the board read the rollups: count the seeded raw rows into them.
        statements.push(crate::rollups::backfill_sql(DB, 0, 4_102_444_800));
        let queries = serde_json::json!({
            "windows": fill(&window_sql(Window::Hour, false), &[]),
            "windows_team": fill(&window_sql(Window::Hour, true), &["'payments'"]),
            // The view holds the same rows (all six windows).
            "windows_view": fill("SELECT team, metric, window, responses, positive, negative, score_sum, value \
                FROM {db}.team_metrics_window WHERE window IN ('last_1h', 'prev_1h') ORDER BY team, metric, window", &[]),
            "windows_week": fill(&window_sql(Window::Week, false), &[]),
            "windows_view_day": fill("SELECT team, metric, window, responses, positive, negative, score_sum, value \
                FROM {db}.team_metrics_window WHERE window IN ('last_24h', 'prev_24h') ORDER BY team, metric, window", &[]),
            "windows_view_week": fill("SELECT team, metric, window, responses, positive, negative, score_sum, value \
                FROM {db}.team_metrics_window WHERE window IN ('last_7d', 'prev_7d') ORDER BY team, metric, window", &[]),
            "breakdown_view": fill("SELECT team, metric, dimension, dim_value, responses, value FROM {db}.team_breakdown \
                WHERE window = 'last_1h' ORDER BY team, dimension, metric, value ASC, responses DESC, dim_value", &[]),
            "trend": fill(TREND_SQL, &["'minute'", "3600"]),
            "trend_view": fill("SELECT team, metric, toUInt32(bucket) AS ts, responses, value FROM {db}.team_metrics \
                WHERE grain = 'minute' AND bucket >= toStartOfMinute(now()) - 3600 ORDER BY team, metric, ts", &[]),
            "trend_team": fill(TREND_TEAM_SQL, &["'hour'", "86400", "'payments'"]),
            "breakdown": fill(&breakdown_sql(Window::Hour, true), &["'payments'"]),
            "comments": fill(&recent_comments_sql(0, 1), &["86400", "'payments'", "20"]),
            "comments_all": fill(&recent_comments_sql(0, 0), &["86400", "1"]),
            // payments from the start of the hour of r1 (five minutes ago): r1 and r3.
            "comments_bounded": fill(&recent_comments_sql(1, 1), &[
                "86400", "'payments'", "toUInt32(toStartOfHour(now() - 300))", "'unowned'", "20",
            ]),
            "comment_hours": fill(&comment_hours_sql(0), &["86400"]),
            "comment_hours_team": fill(&comment_hours_sql(1), &["86400", "'payments'"]),
            "context": fill(&interaction_context_sql(2), &["'i1'", "'i9'"]),
            "breakdown_all": fill(&breakdown_sql(Window::Hour, false), &[]),
            "health": fill(HEALTH_SQL, &[]),
            "windows_day": fill(&window_sql(Window::Day, false), &[]),
            "ces_squares": fill(&ces_squares_sql(Window::Hour), &[]),
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
        // The board's window rows of the metrics are the view's rows.
        let view_fields = [
            "team",
            "metric",
            "window",
            "responses",
            "positive",
            "negative",
            "score_sum",
            "value",
        ];
        let as_view = |key: &str| -> serde_json::Value {
            r[key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["metric"] != "")
                .map(|x| {
                    view_fields
                        .iter()
                        .map(|f| (f.to_string(), x[*f].clone()))
                        .collect::<serde_json::Map<_, _>>()
                })
                .collect::<Vec<_>>()
                .into()
        };
        assert_eq!(as_view("windows"), r["windows_view"]);
        assert_eq!(as_view("windows_day"), r["windows_view_day"]);
        assert_eq!(as_view("windows_week"), r["windows_view_week"]);
        // zdense's windows, counted here: the row `k` (0..11520) is `k + s` minutes before
        // the query's minute, `s` the minutes turned between the INSERT and the query (0 or
        // 1). The current window `[now - span, now + 60)` holds the minutes 0..=span/60,
        // so rows `k <= span/60 - s`; the previous one the next span/60 minutes.
        for (key, w) in [
            ("windows", Window::Hour),
            ("windows_day", Window::Day),
            ("windows_week", Window::Week),
        ] {
            let (per, n) = ((w.secs() / 60) as u64, 11520u64);
            let dense: Vec<(String, u64)> = r[key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["team"] == "zdense")
                .map(|x| {
                    (
                        x["window"].as_str().unwrap().to_string(),
                        x["responses"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(dense.len(), 2, "{key}: {dense:?}");
            let (now, prev) = (&dense[0], &dense[1]);
            assert_eq!(
                (now.0.as_str(), prev.0.as_str()),
                (w.current(), w.previous())
            );
            let turned = (per + 1).checked_sub(now.1).filter(|s| *s <= 1);
            let s = turned.unwrap_or_else(|| panic!("{key}: {dense:?}"));
            assert_eq!(
                prev.1,
                (2 * per - s).min(n - 1) - per + s,
                "{key}: {dense:?}"
            );
        }
        assert_eq!(r["trend"], r["trend_view"]);
        assert_eq!(r["breakdown_all"], r["breakdown_view"]);
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
        assert_eq!(c[0]["interaction_kind"], "");
        assert_eq!(c[1]["rating_id"], "r1");
        assert_eq!(c[1]["interaction_kind"], "order");
        // Comment hours: payments' two comments (r1, r3) in the hour of five minutes ago,
        // none in the hour of its CES answers; unowned has ratings, no comment.
        let mut hours: Vec<CommentHour> =
            serde_json::from_value(r["comment_hours"].clone()).unwrap();
        hours.sort_by_key(|h| (h.team.clone(), h.hour));
        hours.retain(|h| h.team != "zdense");
        let counts: Vec<(&str, i64)> = hours
            .iter()
            .map(|h| (h.team.as_str(), h.comments))
            .collect();
        assert_eq!(
            counts,
            [("payments", 0), ("payments", 2), ("unowned", 0)],
            "{r}"
        );
        assert_eq!(hours[1].hour % 3600, 0);
        assert_eq!(hours[0].hour % 3600, 0);
        assert!(hours[0].hour < hours[1].hour);
        let team_hours: Vec<CommentHour> =
            serde_json::from_value(r["comment_hours_team"].clone()).unwrap();
        assert_eq!(team_hours.len(), 2, "{r}");
        assert!(team_hours.iter().all(|h| h.team == "payments"));
        // Two comments are found from the newest hour on, three are not.
        let b = comment_bounds(&hours, 2);
        assert_eq!(b["payments"], Some(hours[1].hour));
        assert_eq!(b["unowned"], None);
        assert_eq!(comment_bounds(&hours, 3)["payments"], None);
        // Read from that bound: both of payments' comments, newest first.
        let c = r["comments_bounded"].as_array().unwrap();
        let ids: Vec<&str> = c.iter().map(|x| x["rating_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["r3", "r1"], "{r}");
        // The materialized view of migration 8 holds i1 (landed after it); i9 never landed.
        let ctx = r["context"].as_array().unwrap();
        assert_eq!(ctx.len(), 1, "{r}");
        assert_eq!(
            (
                &ctx[0]["interaction_id"],
                &ctx[0]["kind"],
                &ctx[0]["channel"],
                &ctx[0]["service"],
                &ctx[0]["product"]
            ),
            (
                &"i1".into(),
                &"order".into(),
                &"web".into(),
                &"checkout-api".into(),
                &"payments-card".into()
            )
        );
        let rows: Vec<RecentComment> = serde_json::from_value(r["comments"].clone()).unwrap();
        let ctx: Vec<InteractionContext> = serde_json::from_value(r["context"].clone()).unwrap();
        let ctx = ctx
            .into_iter()
            .map(|c| (c.interaction_id.clone(), c))
            .collect();
        let shown: Vec<CommentRow> = rows.into_iter().map(|r| comment_row(r, &ctx)).collect();
        assert_eq!(
            (
                shown[0].i_kind.as_str(),
                shown[0].i_product.as_str(),
                shown[0].i_channel.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(
            (
                shown[1].i_kind.as_str(),
                shown[1].i_product.as_str(),
                shown[1].i_channel.as_str()
            ),
            ("order", "payments-card", "web")
        );
        // One comment per team with `LIMIT 1 BY team`: payments' newest.
        let c = r["comments_all"].as_array().unwrap();
        assert_eq!(c.len(), 1, "{r}");
        assert_eq!(c[0]["rating_id"], "r3");
        let mine: Vec<_> = r["breakdown_all"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["team"] == "payments")
            .cloned()
            .collect();
        assert_eq!(serde_json::Value::from(mine), r["breakdown"]);
        // Counts per team and window, from the window rows. The last hour: payments has 1
        // orphan of its 4 CSAT answers (the CES answers are 90 minutes old; its interaction is
        // not counted: only unowned's are); unowned holds 1 rating.
        let counts = |key: &str, w: Window| -> Vec<(String, u64, u64, u64)> {
            let sums: Vec<WindowSums> = serde_json::from_value(r[key].clone()).unwrap();
            Windows::of(sums, w)
                .counts
                .into_iter()
                .filter(|(t, _)| t != "zdense")
                .map(|(t, c)| (t, c.orphans, c.ratings, c.interactions))
                .collect()
        };
        let t = |s: &str| s.to_string();
        assert_eq!(
            counts("windows", Window::Hour),
            [(t("payments"), 1, 4, 0), (t("unowned"), 0, 1, 0)],
            "{r}"
        );
        // The last 24 hours hold the CES answers too.
        assert_eq!(
            counts("windows_day", Window::Day),
            [(t("payments"), 1, 6, 0), (t("unowned"), 0, 1, 0)],
            "{r}"
        );
        let sums: Vec<WindowSums> = serde_json::from_value(r["windows"].clone()).unwrap();
        let w = Windows::of(sums, Window::Hour);
        assert_eq!(
            w.rows.len(),
            5,
            "csat last_1h, ces prev_1h, unowned's nps, zdense's two: {r}"
        );
        let h: Vec<TeamHealthRow> = serde_json::from_value(r["health"].clone()).unwrap();
        assert_eq!(h.len(), 3, "{r}");
        let all = HealthRow::of(&h, &w.counts, None, 0);
        assert_eq!(
            (all.orphans, all.unowned_ratings, all.unowned_interactions),
            (1, 1, 0)
        );
        let mine = HealthRow::of(&h, &w.counts, Some("unowned"), 0);
        assert_eq!((mine.orphans, mine.unowned_ratings), (0, 1));
        // The newest rating minute is five minutes ago (r1..r4), the interaction's too.
        // (seeded a few seconds before the query's now(): its minute, or the one before)
        let near = |last: i64, ago: i64| {
            last % 60 == 0 && (h[0].now_s - ago - 70..=h[0].now_s - ago).contains(&last)
        };
        assert!(near(h[0].ratings_last, 300), "{r}");
        assert!(near(h[0].interactions_last, 400), "{r}");
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
        assert_eq!(r["watch_counts"][0]["ratings"].as_u64(), Some(7 + 11520));
        assert_eq!(r["probe_minute"][0]["responses"].as_u64(), Some(4));
    }
}
