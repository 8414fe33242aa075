//! Versioned, idempotent schema migrations. `{db}` stands for the database name.
//!
//! Every statement must run on Debian's ClickHouse 18.16 and on current ClickHouse:
//! no DateTime64, no Map, no LowCardinality, no parameterized views.

use crate::Window;
use feedback_events::{Metric, MetricFormula};

/// One migration: applied once, recorded in `{db}.schema_migrations`.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// Run in order, on every server.
    pub statements: &'static [&'static str],
    /// Run after `statements`, each under its condition (migrations 3+).
    pub steps: &'static [Step],
}

/// A migration statement with a condition, for what 18.16 cannot express idempotently or
/// at all.
pub struct Step {
    pub when: When,
    pub sql: &'static str,
}

pub enum When {
    /// `ALTER TABLE ... ADD COLUMN`: skipped when `{db}.table` already has the column
    /// (18.16 has no `ADD COLUMN IF NOT EXISTS`).
    ColumnMissing {
        table: &'static str,
        column: &'static str,
    },
    /// An improvement that needs a newer server (e.g. TTL, LowCardinality): applied only
    /// when the server is at least `(major, minor)`. Re-running it is harmless.
    ServerAtLeast(u32, u32),
    /// A new layout (ordering key, granularity) for an existing table, which no server can
    /// alter in place: when `{db}.table`'s engine differs from the one the step's `CREATE`
    /// statement gives, the table is copied whole into a table of that layout and swapped
    /// in ([`crate::Ch::relayout`], with the writers' retries as the only coordination).
    /// A fresh database already has the layout (its `CREATE` is the same statement), so the
    /// fresh plan skips it.
    LayoutDiffers { table: &'static str },
}

/// The metric definitions as a SQL expression over `positive`, `negative`, `score_sum` and
/// `responses`, generated from [`Metric::formula`]: CSAT = share (%) of 4–5 among 1–5
/// answers; NPS = %(9–10) − %(0–6); CES = mean of 1–7. Rounded to 4 places.
pub fn metric_value_sql() -> String {
    format!(
        "round({}, 4)",
        per_metric(|m| match m.formula() {
            MetricFormula::PositiveShare => "100 * positive / responses".to_string(),
            MetricFormula::NetPositiveShare => {
                "100 * (toInt64(positive) - toInt64(negative)) / responses".to_string()
            }
            MetricFormula::MeanScore => "score_sum / responses".to_string(),
        })
    )
}

/// Which answers count as positive (CSAT 4–5, NPS 9–10, CES 5–7), per rating row, from
/// [`Metric::positive_from`]; the aggregates sum it and [`metric_value_sql`] turns the sums
/// into the metrics.
pub fn positive_sql() -> String {
    per_metric(|m| format!("score >= {}", m.positive_from()))
}

/// Which answers count as negative (CSAT 1–2, NPS 0–6, CES 1–3), from
/// [`Metric::negative_to`].
pub fn negative_sql() -> String {
    per_metric(|m| format!("score <= {}", m.negative_to()))
}

/// `multiIf(metric = 'csat', <csat>, metric = 'nps', <nps>, <the last metric>)`: one branch
/// per metric of [`Metric::ALL`], the last one as the default.
fn per_metric(expr: impl Fn(Metric) -> String) -> String {
    let (last, rest) = Metric::ALL.split_last().expect("metrics exist");
    let mut out = String::from("multiIf(");
    for m in rest {
        out.push_str(&format!("metric = '{}', {}, ", m.as_str(), expr(*m)));
    }
    out.push_str(&expr(*last));
    out.push(')');
    out
}

/// The rolling windows of `team_metrics_window` and `team_breakdown` as a SQL array, each
/// `(name, from, to)` with `from <= minute < to`, two per [`Window`]: `last_*` ends with the
/// current (partial) minute and starts like `team_metrics`' `last_1h` grain; `prev_*` is the
/// same span just before it, to compare "now" with "before".
pub fn windows_sql() -> String {
    let tuples: Vec<String> = Window::ALL
        .iter()
        .flat_map(|w| {
            let (cur, prev, secs) = (w.current(), w.previous(), w.secs());
            [
                format!("('{cur}', toStartOfMinute(now()) - {secs}, toStartOfMinute(now()) + 60)"),
                format!(
                    "('{prev}', toStartOfMinute(now()) - {}, toStartOfMinute(now()) - {secs})",
                    2 * secs
                ),
            ]
        })
        .collect();
    format!("[{}]", tuples.join(", "))
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "raw tables, per-team per-minute aggregates, metric views, dead letters",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.interactions (
                interaction_id String,
                occurred_at DateTime,
                occurred_at_ms Int64,
                service String,
                channel String,
                kind String,
                customer_ref String,
                product Nullable(String),
                region Nullable(String),
                agent_id Nullable(String),
                handling_team Nullable(String),
                attributes String,
                team String,
                attribution String,
                claim_file Nullable(String),
                claim_index Nullable(Int32),
                ownership_version String,
                source_topic String,
                source_partition Int32,
                source_offset Int64,
                attributed_at_ms Int64,
                inserted_at DateTime DEFAULT now()
            ) ENGINE = MergeTree() PARTITION BY toYYYYMM(occurred_at) ORDER BY (team, occurred_at, interaction_id)",
            "CREATE TABLE IF NOT EXISTS {db}.ratings (
                rating_id String,
                occurred_at DateTime,
                occurred_at_ms Int64,
                interaction_id Nullable(String),
                metric String,
                score Int8,
                comment Nullable(String),
                service String,
                channel String,
                customer_ref String,
                product Nullable(String),
                region Nullable(String),
                attributes String,
                team String,
                attribution String,
                claim_file Nullable(String),
                claim_index Nullable(Int32),
                ownership_version String,
                orphan UInt8,
                interaction_kind Nullable(String),
                source_topic String,
                source_partition Int32,
                source_offset Int64,
                attributed_at_ms Int64,
                inserted_at DateTime DEFAULT now()
            ) ENGINE = MergeTree() PARTITION BY toYYYYMM(occurred_at) ORDER BY (team, metric, occurred_at, rating_id)",
            "CREATE TABLE IF NOT EXISTS {db}.team_minute (
                team String,
                metric String,
                minute DateTime,
                responses UInt64,
                score_sum Int64,
                positive UInt64,
                negative UInt64
            ) ENGINE = SummingMergeTree() PARTITION BY toYYYYMM(minute) ORDER BY (team, metric, minute)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.team_minute_mv TO {db}.team_minute AS
             SELECT team, metric, toStartOfMinute(occurred_at) AS minute,
                    count() AS responses,
                    sum(toInt64(score)) AS score_sum,
                    sum({positive}) AS positive,
                    sum({negative}) AS negative
             FROM {db}.ratings GROUP BY team, metric, minute",
            "CREATE TABLE IF NOT EXISTS {db}.team_interactions_minute (
                team String,
                minute DateTime,
                channel String,
                kind String,
                interactions UInt64
            ) ENGINE = SummingMergeTree() PARTITION BY toYYYYMM(minute) ORDER BY (team, minute, channel, kind)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.team_interactions_minute_mv TO {db}.team_interactions_minute AS
             SELECT team, toStartOfMinute(occurred_at) AS minute, channel, kind, count() AS interactions
             FROM {db}.interactions GROUP BY team, minute, channel, kind",
            "CREATE VIEW IF NOT EXISTS {db}.team_metrics AS
             SELECT team, metric, grain, bucket, responses, positive, negative, score_sum, {metric_value} AS value
             FROM (
                SELECT team, metric, 'minute' AS grain, minute AS bucket, sum(responses) AS responses,
                       sum(positive) AS positive, sum(negative) AS negative, sum(score_sum) AS score_sum
                FROM {db}.team_minute GROUP BY team, metric, minute
                UNION ALL
                SELECT team, metric, 'hour' AS grain, toStartOfHour(minute) AS bucket, sum(responses) AS responses,
                       sum(positive) AS positive, sum(negative) AS negative, sum(score_sum) AS score_sum
                FROM {db}.team_minute GROUP BY team, metric, bucket
                UNION ALL
                SELECT team, metric, 'day' AS grain, toStartOfDay(minute) AS bucket, sum(responses) AS responses,
                       sum(positive) AS positive, sum(negative) AS negative, sum(score_sum) AS score_sum
                FROM {db}.team_minute GROUP BY team, metric, bucket
                UNION ALL
                SELECT team, metric, 'last_1h' AS grain, toStartOfMinute(now()) - 3600 AS bucket, sum(responses) AS responses,
                       sum(positive) AS positive, sum(negative) AS negative, sum(score_sum) AS score_sum
                FROM {db}.team_minute WHERE minute >= toStartOfMinute(now()) - 3600 GROUP BY team, metric
                UNION ALL
                SELECT team, metric, 'total' AS grain, toDateTime(0) AS bucket, sum(responses) AS responses,
                       sum(positive) AS positive, sum(negative) AS negative, sum(score_sum) AS score_sum
                FROM {db}.team_minute GROUP BY team, metric
             )",
            "CREATE TABLE IF NOT EXISTS {db}.dead_letters (
                received_at DateTime,
                component String,
                reason String,
                error String,
                source_topic String,
                source_partition Int32,
                source_offset Int64,
                payload String
            ) ENGINE = MergeTree() PARTITION BY toYYYYMM(received_at) ORDER BY (received_at, component)",
        ],
        steps: &[],
    },
    Migration {
        version: 2,
        name: "rolling windows and per-dimension breakdowns of the metrics",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.team_dim_minute (
                team String,
                metric String,
                dimension String,
                dim_value String,
                minute DateTime,
                responses UInt64,
                score_sum Int64,
                positive UInt64,
                negative UInt64
            ) ENGINE = SummingMergeTree() PARTITION BY toYYYYMM(minute) ORDER BY (team, metric, dimension, dim_value, minute)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.team_dim_minute_mv TO {db}.team_dim_minute AS
             SELECT team, metric, tupleElement(d, 1) AS dimension, tupleElement(d, 2) AS dim_value,
                    toStartOfMinute(occurred_at) AS minute,
                    count() AS responses,
                    sum(toInt64(score)) AS score_sum,
                    sum({positive}) AS positive,
                    sum({negative}) AS negative
             FROM {db}.ratings
             ARRAY JOIN [('channel', channel), ('product', ifNull(product, '')), ('kind', ifNull(interaction_kind, ''))] AS d
             GROUP BY team, metric, dimension, dim_value, minute",
            "CREATE VIEW IF NOT EXISTS {db}.team_metrics_window AS
             SELECT team, metric, window, responses, positive, negative, score_sum, {metric_value} AS value
             FROM (
                SELECT team, metric, tupleElement(w, 1) AS window,
                       sumIf(responses, minute >= tupleElement(w, 2) AND minute < tupleElement(w, 3)) AS responses,
                       sumIf(positive, minute >= tupleElement(w, 2) AND minute < tupleElement(w, 3)) AS positive,
                       sumIf(negative, minute >= tupleElement(w, 2) AND minute < tupleElement(w, 3)) AS negative,
                       sumIf(score_sum, minute >= tupleElement(w, 2) AND minute < tupleElement(w, 3)) AS score_sum
                FROM {db}.team_minute
                ARRAY JOIN {windows} AS w
                WHERE minute >= toStartOfMinute(now()) - 14 * 86400
                GROUP BY team, metric, window
             ) WHERE responses > 0",
            "CREATE VIEW IF NOT EXISTS {db}.team_breakdown AS
             SELECT team, metric, dimension, dim_value, window, responses, positive, negative, score_sum, {metric_value} AS value
             FROM (
                SELECT team, metric, dimension, dim_value, tupleElement(w, 1) AS window,
                       sumIf(responses, minute >= tupleElement(w, 2) AND minute < tupleElement(w, 3)) AS responses,
                       sumIf(positive, minute >= tupleElement(w, 2) AND minute < tupleElement(w, 3)) AS positive,
                       sumIf(negative, minute >= tupleElement(w, 2) AND minute < tupleElement(w, 3)) AS negative,
                       sumIf(score_sum, minute >= tupleElement(w, 2) AND minute < tupleElement(w, 3)) AS score_sum
                FROM {db}.team_dim_minute
                ARRAY JOIN {windows} AS w
                WHERE minute >= toStartOfMinute(now()) - 14 * 86400
                GROUP BY team, metric, dimension, dim_value, window
             ) WHERE responses > 0",
        ],
        steps: &[],
    },
    Migration {
        version: 3,
        name: "sink exactly-once: Kafka coordinates of every landed row, sink progress",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.sink_progress (
                topic String,
                partition Int32,
                offset Int64,
                written_at DateTime DEFAULT now()
            ) ENGINE = ReplacingMergeTree(offset) ORDER BY (topic, partition)",
        ],
        steps: &[
            add_column("interactions", "kafka_topic", "ALTER TABLE {db}.interactions ADD COLUMN kafka_topic String DEFAULT ''"),
            add_column("interactions", "kafka_partition", "ALTER TABLE {db}.interactions ADD COLUMN kafka_partition Int32 DEFAULT -1"),
            add_column("interactions", "kafka_offset", "ALTER TABLE {db}.interactions ADD COLUMN kafka_offset Int64 DEFAULT -1"),
            add_column("ratings", "kafka_topic", "ALTER TABLE {db}.ratings ADD COLUMN kafka_topic String DEFAULT ''"),
            add_column("ratings", "kafka_partition", "ALTER TABLE {db}.ratings ADD COLUMN kafka_partition Int32 DEFAULT -1"),
            add_column("ratings", "kafka_offset", "ALTER TABLE {db}.ratings ADD COLUMN kafka_offset Int64 DEFAULT -1"),
            add_column("dead_letters", "kafka_topic", "ALTER TABLE {db}.dead_letters ADD COLUMN kafka_topic String DEFAULT ''"),
            add_column("dead_letters", "kafka_partition", "ALTER TABLE {db}.dead_letters ADD COLUMN kafka_partition Int32 DEFAULT -1"),
            add_column("dead_letters", "kafka_offset", "ALTER TABLE {db}.dead_letters ADD COLUMN kafka_offset Int64 DEFAULT -1"),
        ],
    },
    Migration {
        version: 4,
        name: "where the server supports it: dead-letter retention (TTL 90 days), LowCardinality for repetitive non-key columns",
        statements: &[],
        steps: &[
            newer(19, 6, "ALTER TABLE {db}.dead_letters MODIFY TTL received_at + INTERVAL 90 DAY"),
            newer(19, 6, "ALTER TABLE {db}.dead_letters MODIFY COLUMN reason LowCardinality(String)"),
            newer(19, 6, "ALTER TABLE {db}.dead_letters MODIFY COLUMN kafka_topic LowCardinality(String)"),
            newer(19, 6, "ALTER TABLE {db}.interactions MODIFY COLUMN attribution LowCardinality(String)"),
            newer(19, 6, "ALTER TABLE {db}.interactions MODIFY COLUMN kafka_topic LowCardinality(String)"),
            newer(19, 6, "ALTER TABLE {db}.interactions MODIFY COLUMN source_topic LowCardinality(String)"),
            newer(19, 6, "ALTER TABLE {db}.ratings MODIFY COLUMN attribution LowCardinality(String)"),
            newer(19, 6, "ALTER TABLE {db}.ratings MODIFY COLUMN kafka_topic LowCardinality(String)"),
            newer(19, 6, "ALTER TABLE {db}.ratings MODIFY COLUMN source_topic LowCardinality(String)"),
        ],
    },
    Migration {
        version: 5,
        name: "per-minute aggregates as views over the raw tables (consistent with them by construction)",
        // Materialized views write the raw part first and their own parts after it, not
        // atomically: a ClickHouse restart in between (the sink test's restart hit it) leaves
        // a row landed in `ratings` but missing from `team_minute`, and exactly-once landing
        // of the raw row then never repairs the aggregate. Plain views with the same names
        // and columns compute the aggregates from the raw rows at query time.
        statements: &[
            "DROP TABLE IF EXISTS {db}.team_minute_mv",
            "DROP TABLE IF EXISTS {db}.team_interactions_minute_mv",
            "DROP TABLE IF EXISTS {db}.team_dim_minute_mv",
            "DROP TABLE IF EXISTS {db}.team_minute",
            "DROP TABLE IF EXISTS {db}.team_interactions_minute",
            "DROP TABLE IF EXISTS {db}.team_dim_minute",
            "CREATE VIEW IF NOT EXISTS {db}.team_minute AS
             SELECT team, metric, toStartOfMinute(occurred_at) AS minute,
                    count() AS responses,
                    sum(toInt64(score)) AS score_sum,
                    sum({positive}) AS positive,
                    sum({negative}) AS negative
             FROM {db}.ratings GROUP BY team, metric, minute",
            "CREATE VIEW IF NOT EXISTS {db}.team_interactions_minute AS
             SELECT team, toStartOfMinute(occurred_at) AS minute, channel, kind, count() AS interactions
             FROM {db}.interactions GROUP BY team, minute, channel, kind",
            "CREATE VIEW IF NOT EXISTS {db}.team_dim_minute AS
             SELECT team, metric, tupleElement(d, 1) AS dimension, tupleElement(d, 2) AS dim_value,
                    toStartOfMinute(occurred_at) AS minute,
                    count() AS responses,
                    sum(toInt64(score)) AS score_sum,
                    sum({positive}) AS positive,
                    sum({negative}) AS negative
             FROM {db}.ratings
             ARRAY JOIN [('channel', channel), ('product', ifNull(product, '')), ('kind', ifNull(interaction_kind, ''))] AS d
             GROUP BY team, metric, dimension, dim_value, minute",
        ],
        steps: &[],
    },
    Migration {
        version: 6,
        name: "erasures: a record of every customer's rows removed by `feedback erase`",
        // Deleting happens with ALTER TABLE ... DELETE (mutations; 18.16 and current);
        // this table only records that it was done, what was removed and why.
        statements: &["CREATE TABLE IF NOT EXISTS {db}.erasures (
                erased_at DateTime,
                customer_ref String,
                reason String,
                requested_by String,
                interactions UInt64,
                ratings UInt64,
                dead_letters UInt64,
                complete UInt8
            ) ENGINE = MergeTree() ORDER BY (erased_at, customer_ref)"],
        steps: &[],
    },
    Migration {
        version: 7,
        name: "rollups: exact stored aggregates (minute, hour, day; breakdowns; interactions; sink marks) read by every metric view",
        // One partition only: ClickHouse writes one part per partition an INSERT touches and
        // makes them visible one after the other, so a partitioned table would let a reader
        // (or a crash) see a batch's deltas without its mark. Range reads are pruned by the
        // ordering key (grain, dimension, bucket, ...) instead ([`ROLLUPS_TABLE`]; tables
        // created before migration 11 were ordered by (grain, bucket, ...)).
        // The views keep their names and columns; they read `rollups` instead of the raw
        // (the `last_1h` and `total` branches read it through a subquery: their constant
        // `grain` and `bucket` must not be confused with the table's columns when a filter
        // on the view is pushed down)
        // rows, so their cost no longer grows with history. On a database that already holds
        // raw rows the marks start at the sink's progress and `feedback rollups rebuild`
        // counts what was landed before (`feedback migrate` says so).
        statements: &[
            ROLLUPS_TABLE,
            "INSERT INTO {db}.rollups (grain, bucket, team, metric, dimension, dim_value, channel, kind,
                responses, score_sum, score_sq_sum, positive, negative, orphans, interactions, mark)
             SELECT 'mark', toDateTime(0), topic, '', '', toString(partition), '', '', 0, 0, 0, 0, 0, 0, 0, max(offset) + 1
             FROM {db}.sink_progress
             WHERE (topic, toString(partition)) NOT IN (SELECT team, dim_value FROM {db}.rollups WHERE grain = 'mark')
             GROUP BY topic, partition",
            "DROP TABLE IF EXISTS {db}.team_minute",
            "DROP TABLE IF EXISTS {db}.team_interactions_minute",
            "DROP TABLE IF EXISTS {db}.team_dim_minute",
            "DROP TABLE IF EXISTS {db}.team_metrics",
            "DROP TABLE IF EXISTS {db}.team_metrics_window",
            "DROP TABLE IF EXISTS {db}.team_breakdown",
            "CREATE VIEW IF NOT EXISTS {db}.team_minute AS
             SELECT team, metric, bucket AS minute, toUInt64(sum(responses)) AS responses, sum(score_sum) AS score_sum,
                    toUInt64(sum(positive)) AS positive, toUInt64(sum(negative)) AS negative
             FROM {db}.rollups WHERE grain = 'minute' AND dimension = '' AND metric != ''
             GROUP BY team, metric, minute HAVING responses > 0",
            "CREATE VIEW IF NOT EXISTS {db}.team_interactions_minute AS
             SELECT team, bucket AS minute, channel, kind, toUInt64(sum(interactions)) AS interactions
             FROM {db}.rollups WHERE grain = 'minute' AND metric = ''
             GROUP BY team, minute, channel, kind HAVING interactions > 0",
            "CREATE VIEW IF NOT EXISTS {db}.team_interactions AS
             SELECT team, grain, bucket, channel, kind, toUInt64(sum(interactions)) AS interactions
             FROM {db}.rollups WHERE grain IN ('minute', 'hour', 'day') AND metric = ''
             GROUP BY team, grain, bucket, channel, kind HAVING interactions > 0",
            "CREATE VIEW IF NOT EXISTS {db}.team_dim_minute AS
             SELECT team, metric, dimension, dim_value, bucket AS minute, toUInt64(sum(responses)) AS responses,
                    sum(score_sum) AS score_sum, toUInt64(sum(positive)) AS positive, toUInt64(sum(negative)) AS negative
             FROM {db}.rollups WHERE grain = 'minute' AND dimension != '' AND metric != ''
             GROUP BY team, metric, dimension, dim_value, minute HAVING responses > 0",
            "CREATE VIEW IF NOT EXISTS {db}.team_metrics AS
             SELECT team, metric, grain, bucket, responses, positive, negative, score_sum, {metric_value} AS value
             FROM (
                SELECT team, metric, grain, bucket, toUInt64(sum(responses)) AS responses,
                       toUInt64(sum(positive)) AS positive, toUInt64(sum(negative)) AS negative, sum(score_sum) AS score_sum
                FROM {db}.rollups WHERE grain IN ('minute', 'hour', 'day') AND dimension = '' AND metric != ''
                GROUP BY team, metric, grain, bucket
                UNION ALL
                SELECT team, metric, 'last_1h' AS grain, toStartOfMinute(now()) - 3600 AS bucket, toUInt64(sum(responses)) AS responses,
                       toUInt64(sum(positive)) AS positive, toUInt64(sum(negative)) AS negative, sum(score_sum) AS score_sum
                FROM (SELECT team, metric, responses, positive, negative, score_sum FROM {db}.rollups
                      WHERE grain = 'minute' AND bucket >= toStartOfMinute(now()) - 3600 AND dimension = '' AND metric != '')
                GROUP BY team, metric
                UNION ALL
                SELECT team, metric, 'total' AS grain, toDateTime(0) AS bucket, toUInt64(sum(responses)) AS responses,
                       toUInt64(sum(positive)) AS positive, toUInt64(sum(negative)) AS negative, sum(score_sum) AS score_sum
                FROM (SELECT team, metric, responses, positive, negative, score_sum FROM {db}.rollups
                      WHERE grain = 'day' AND dimension = '' AND metric != '')
                GROUP BY team, metric
             ) WHERE responses > 0",
            TEAM_METRICS_WINDOW_VIEW,
            TEAM_BREAKDOWN_VIEW,
        ],
        // A one-byte flag the latest-comments read filters on first (PREWHERE), so that it
        // reads the comment texts of commented rows only; computed by the server for rows
        // written without it (the sink's) and for older parts.
        steps: &[add_column(
            "ratings",
            "has_comment",
            "ALTER TABLE {db}.ratings ADD COLUMN has_comment UInt8 DEFAULT ifNull(comment, '') != ''",
        )],
    },
    Migration {
        version: 8,
        name: "interaction_context: each interaction's kind, channel, service and product by interaction_id, for the latest comments",
        // The latest comments show the context of the interaction a rating rates. Looking it
        // up in `interactions` (ordered by team and time) scans the join horizon (7 days of
        // interactions) whatever the number of comments shown; this table is ordered by
        // interaction_id with small granules, so the lookup reads a few thousand rows per
        // comment shown, whatever the history. A materialized view fills it on every insert
        // into `interactions` (created before the backfill, so no row is missed while an
        // upgrade runs; a row written twice, by the view and the backfill, is harmless:
        // ReplacingMergeTree, read with ANY).
        // No customer_ref and no free text: nothing personal to erase. Partitioned by month
        // like the raw tables, and `feedback retention` drops its months with theirs.
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.interaction_context (
                interaction_id String,
                occurred_at DateTime,
                kind String,
                channel String,
                service String,
                product String
            ) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(occurred_at) ORDER BY interaction_id
            SETTINGS index_granularity = 1024",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.interaction_context_mv TO {db}.interaction_context AS
             SELECT interaction_id, occurred_at, kind, channel, service, ifNull(product, '') AS product
             FROM {db}.interactions",
            "INSERT INTO {db}.interaction_context (interaction_id, occurred_at, kind, channel, service, product)
             SELECT interaction_id, occurred_at, kind, channel, service, ifNull(product, '')
             FROM {db}.interactions",
        ],
        steps: &[],
    },
    Migration {
        version: 9,
        name: "rating_comments: every rating with a comment, by team, negative and time in small granules, for the latest comments",
        // The latest comments of a team (board, Grafana's comments panel) read the newest
        // rows of a slice of time. In `ratings` (8,192-row granules of every rating, comments
        // or not, ordered by team and metric) a slice costs whole granules of every metric
        // in every part, so its cost grew with the density of the history (2.6x from 500 k
        // to 50 M ratings). This table holds only the ratings with a comment, ordered by
        // `(team, negative, occurred_at)` in 256-row granules: a slice reads about the rows
        // it returns, and the negative-only panel prunes the rest by the key.
        // Filled by a materialized view on `ratings` (created before the backfill, so no row
        // is missed while an upgrade runs; a row written twice is read once: the reads take
        // one row per `rating_id`, and ReplacingMergeTree merges them away). It holds
        // comment text and the customer_ref: `feedback erase` deletes from it, and
        // `feedback retention` drops its months with the raw ones.
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.rating_comments (
                team String,
                negative UInt8,
                occurred_at DateTime,
                occurred_at_ms Int64,
                rating_id String,
                metric String,
                score Int8,
                comment String,
                channel String,
                service String,
                orphan UInt8,
                interaction_id String,
                interaction_kind String,
                customer_ref String
            ) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(occurred_at)
            ORDER BY (team, negative, occurred_at, rating_id)
            SETTINGS index_granularity = 256",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rating_comments_mv TO {db}.rating_comments AS
             SELECT {rating_comment_columns} FROM {db}.ratings WHERE ifNull(comment, '') != ''",
            "INSERT INTO {db}.rating_comments
             SELECT {rating_comment_columns} FROM {db}.ratings WHERE ifNull(comment, '') != ''",
        ],
        steps: &[],
    },
    Migration {
        version: 10,
        name: "team_metrics_window and team_breakdown: window sums with one window index per row instead of six inlined conditions",
        // Same rows, cheaper to analyse: on 18.16 most of a query of these views was the
        // analysis of their SQL (30 `sumIf`s over six inlined window conditions; `SELECT 1
        // FROM team_metrics_window WHERE 0` took 131 ms), which made the heavy Grafana panels
        // cost 110-200 ms at any size. The views are recreated (18.16 has no CREATE OR
        // REPLACE VIEW): a query in the instant between the two statements fails and is
        // retried by its reader.
        statements: &[
            "DROP TABLE IF EXISTS {db}.team_metrics_window",
            TEAM_METRICS_WINDOW_VIEW,
            "DROP TABLE IF EXISTS {db}.team_breakdown",
            TEAM_BREAKDOWN_VIEW,
        ],
        steps: &[],
    },
    Migration {
        version: 11,
        name: "rollups ordered by (grain, dimension, bucket, ...) in granules of 1,024 rows: a team's totals apart from its breakdowns",
        // The board's window sums read only `dimension = ''` rows, its breakdowns only
        // `dimension != ''` rows; ordered by (grain, bucket, ...) every range read held both
        // (a week's window sums read 541,000 rows for the ~110,000 they use at 50 M ratings),
        // and each read cost at least one 8,192-row granule per part and range. The copy
        // runs with the table renamed away: the sinks' INSERTs (and reads of their marks)
        // fail and are retried until it is back, complete; readers get errors meanwhile.
        statements: &[],
        steps: &[Step {
            when: When::LayoutDiffers { table: "rollups" },
            sql: ROLLUPS_TABLE,
        }],
    },
];

/// The rollups table (migration 7; migration 11 brings an older table to this layout).
/// Ordered by grain, then dimension, then time: a team's totals (`dimension = ''`) are one
/// contiguous range per grain and span of time, apart from the far more numerous breakdown
/// rows, and each breakdown dimension likewise. Granules of 1,024 rows: the board reads a
/// few thousand rows per range, and a range read costs at least one granule per part.
pub const ROLLUPS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {db}.rollups (
                grain String,
                bucket DateTime,
                team String,
                metric String,
                dimension String,
                dim_value String,
                channel String,
                kind String,
                responses Int64,
                score_sum Int64,
                score_sq_sum Int64,
                positive Int64,
                negative Int64,
                orphans Int64,
                interactions Int64,
                mark Int64
            ) ENGINE = SummingMergeTree((responses, score_sum, score_sq_sum, positive, negative, orphans, interactions, mark))
            ORDER BY (grain, dimension, bucket, team, metric, dim_value, channel, kind)
            SETTINGS index_granularity = 1024";

/// The rolling windows' view (migrations 7 and 10): its window sums are rendered from
/// [`crate::rollups::window_sums_sql`] when the migration runs.
const TEAM_METRICS_WINDOW_VIEW: &str = "CREATE VIEW IF NOT EXISTS {db}.team_metrics_window AS
     SELECT team, metric, window, responses, positive, negative, score_sum, {metric_value} AS value
     FROM ({windowed_total}) WHERE responses > 0";

/// The breakdowns' view (migrations 7 and 10), likewise.
const TEAM_BREAKDOWN_VIEW: &str = "CREATE VIEW IF NOT EXISTS {db}.team_breakdown AS
     SELECT team, metric, dimension, dim_value, window, responses, positive, negative, score_sum, {metric_value} AS value
     FROM ({windowed_dims}) WHERE responses > 0";

/// The columns of `rating_comments` (migration 9) from a row of `ratings`, in the table's
/// order: the view that fills it and its backfill.
/// `ifNull`, not `assumeNotNull`: an alias named like its column is what `WHERE comment ...`
/// then sees, and `assumeNotNull` of a NULL is whatever the column stores under it (text,
/// from a native-format writer).
pub const RATING_COMMENT_COLUMNS: &str = "team, toUInt8({negative}) AS negative, occurred_at, occurred_at_ms, rating_id, \
     metric, score, ifNull(comment, '') AS comment, channel, service, orphan, \
     ifNull(interaction_id, '') AS interaction_id, ifNull(interaction_kind, '') AS interaction_kind, customer_ref";

const fn add_column(table: &'static str, column: &'static str, sql: &'static str) -> Step {
    Step {
        when: When::ColumnMissing { table, column },
        sql,
    }
}

const fn newer(major: u32, minor: u32, sql: &'static str) -> Step {
    Step {
        when: When::ServerAtLeast(major, minor),
        sql,
    }
}

/// `(major, minor)` of a `version()` string such as `18.16.1` or `25.8.2.1`.
pub fn parse_version(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The marker a migration's record carries when some of its steps were skipped because
/// the server was too old; `migrate` runs such a migration again once the server supports it.
pub const PARTIAL_MARK: &str = " [partial: ";

/// The measures of the window views, with the type they keep.
pub const RATING_MEASURES: &[(&str, &str)] = &[
    ("responses", "toUInt64"),
    ("positive", "toUInt64"),
    ("negative", "toUInt64"),
    ("score_sum", "toInt64"),
];

/// A statement with `{db}` and `{metric_value}` filled in.
pub fn render(statement: &str, db: &str) -> String {
    statement
        .replace("{rating_comment_columns}", RATING_COMMENT_COLUMNS)
        .replace("{metric_value}", &metric_value_sql())
        .replace("{windows}", &windows_sql())
        .replace(
            "{windowed_total}",
            &crate::rollups::window_sums_sql(
                "team, metric",
                "dimension = '' AND metric != ''",
                RATING_MEASURES,
                None,
            ),
        )
        .replace(
            "{windowed_dims}",
            &crate::rollups::window_sums_sql(
                "team, metric, dimension, dim_value",
                "dimension != '' AND metric != ''",
                RATING_MEASURES,
                None,
            ),
        )
        .replace(
            "{windowed_ces}",
            &crate::rollups::window_sums_sql(
                "team",
                "dimension = '' AND metric = 'ces'",
                &[
                    ("responses", "toUInt64"),
                    ("score_sum", "toInt64"),
                    ("score_sq_sum", "toInt64"),
                ],
                None,
            ),
        )
        .replace("{positive}", &positive_sql())
        .replace("{negative}", &negative_sql())
        .replace("{db}", db)
}

/// Every statement `migrate` runs on a fresh database of a server of version `server`
/// (`(major, minor)`), rendered for `db`, including the bookkeeping table and its records.
/// Used to apply the same migrations on servers the client cannot reach over HTTP (chDB
/// in the version test).
pub fn fresh_plan(db: &str, server: (u32, u32)) -> Vec<String> {
    let mut out = vec![
        render("CREATE DATABASE IF NOT EXISTS {db}", db),
        render(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, applied_at DateTime) \
             ENGINE = MergeTree() ORDER BY version",
            db,
        ),
    ];
    for m in MIGRATIONS {
        out.extend(m.statements.iter().map(|s| render(s, db)));
        let mut skipped = 0;
        for step in m.steps {
            match step.when {
                When::ServerAtLeast(a, b) if server < (a, b) => skipped += 1,
                When::LayoutDiffers { .. } => {}
                _ => out.push(render(step.sql, db)),
            }
        }
        let mut name = m.name.to_string();
        if skipped > 0 {
            name.push_str(&format!(
                "{PARTIAL_MARK}{skipped} statement(s) skipped, server is {}.{}]",
                server.0, server.1
            ));
        }
        out.push(render(
            &format!(
                "INSERT INTO {{db}}.schema_migrations (version, name, applied_at) VALUES ({}, '{}', now())",
                m.version,
                name.replace('\\', "\\\\").replace('\'', "\\'")
            ),
            db,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows' SQL generated from [`Window`] is, byte for byte, the text the views
    /// were created with (so a re-run of the migrations defines the same views).
    #[test]
    fn windows_sql_is_the_views_original_text() {
        const ORIGINAL: &str = "[\
             ('last_1h', toStartOfMinute(now()) - 3600, toStartOfMinute(now()) + 60), \
             ('prev_1h', toStartOfMinute(now()) - 7200, toStartOfMinute(now()) - 3600), \
             ('last_24h', toStartOfMinute(now()) - 86400, toStartOfMinute(now()) + 60), \
             ('prev_24h', toStartOfMinute(now()) - 172800, toStartOfMinute(now()) - 86400), \
             ('last_7d', toStartOfMinute(now()) - 604800, toStartOfMinute(now()) + 60), \
             ('prev_7d', toStartOfMinute(now()) - 1209600, toStartOfMinute(now()) - 604800)]";
        assert_eq!(windows_sql(), ORIGINAL);
        assert!(render("x {windows} y", "db").contains(ORIGINAL));
    }

    /// The generated fragments are byte for byte the text the views were created with
    /// (migrations already applied compare equal; no new migration is needed).
    #[test]
    fn metric_sql_is_generated_unchanged() {
        assert_eq!(
            metric_value_sql(),
            "round(multiIf(metric = 'csat', 100 * positive / responses, \
             metric = 'nps', 100 * (toInt64(positive) - toInt64(negative)) / responses, score_sum / responses), 4)"
        );
        assert_eq!(
            positive_sql(),
            "multiIf(metric = 'csat', score >= 4, metric = 'nps', score >= 9, score >= 5)"
        );
        assert_eq!(
            negative_sql(),
            "multiIf(metric = 'csat', score <= 2, metric = 'nps', score <= 6, score <= 3)"
        );
        assert!(render("{positive} {negative} {metric_value}", "db")
            .starts_with("multiIf(metric = 'csat', score >= 4"));
    }
}
