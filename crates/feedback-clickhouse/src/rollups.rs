//! Rollups: exact per-team aggregates stored in `{db}.rollups` (migration 7), so that every
//! read the product repeats costs the same whatever the history.
//!
//! One table holds every grain (`minute`, `hour`, `day`), every breakdown dimension
//! (`dimension = ''` is the team's total; `channel`, `product`, `kind`), the interactions
//! (`metric = ''`, by `channel` and `kind`) and the sink's **marks** (`grain = 'mark'`).
//! It is a `SummingMergeTree`: rows are deltas, summed by key.
//!
//! Exactly once: the sink writes, per batch, one INSERT holding the batch's deltas and, per
//! attributed-topic partition, a mark row whose `mark` is the number of offsets the batch
//! rolled up (`last - previous mark`). The marks of a partition telescope: their sum − 1 is
//! the last offset whose event is counted. Deltas and mark arrive in the same INSERT, so
//! they are visible together or not at all: the table has a single partition, so an INSERT
//! below `max_insert_block_size` (raised by the sink above the row count) is one part, and a
//! part appears atomically (a partitioned table would get one part per partition touched,
//! each visible on its own). After an INSERT whose outcome is
//! unknown the sink reads the marks again and rolls up only what lies above them.
//!
//! `feedback rollups rebuild` recomputes a day from the raw rows: one SELECT reads the marks
//! and the day's stored sums from the same snapshot of parts; the raw rows counted are those
//! at or below the marks (rows landed without Kafka coordinates always count); the
//! difference between the recomputation and the stored sums is inserted as correction
//! deltas in one INSERT. Sink deltas above the marks are untouched, so it is safe while the
//! sink lands, and running it twice inserts nothing the second time.

use std::collections::{BTreeMap, HashMap};

use feedback_events::Metric;
use serde::{Deserialize, Serialize};

use crate::positions::{partition_keys, quote};
use crate::{Ch, Error, InteractionRow, RatingRow, Window};

/// The table.
pub const TABLE: &str = "rollups";

/// The grains with their bucket width in seconds (buckets are UTC, aligned on the epoch).
pub const GRAINS: [(&str, u32); 3] = [("minute", 60), ("hour", 3600), ("day", 86400)];

/// The breakdown dimensions of a rating, besides the team's total (`''`).
pub const DIMENSIONS: [&str; 3] = ["channel", "product", "kind"];

/// The grain of the sink's marks.
pub const MARK: &str = "mark";

/// The grain of the commented ratings' counts: per team, metric and hour (`dimension` and
/// `dim_value` empty), the sums of the ratings that carry a comment, so that a read of the
/// newest comments picks the hour it must start at from a few rollup rows instead of reading
/// the times of every comment of its range ([`crate::queries::board::comment_bounds`]). Not
/// one of [`GRAINS`]: every reader of the metrics names its grains, so none of them counts
/// these rows.
pub const COMMENT_HOUR: &str = "comment_hour";

/// One row of `{db}.rollups`: a delta (or, read back with `sum`, a total).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct RollupRow {
    pub grain: String,
    /// Seconds since the epoch (start of the bucket); 0 for marks.
    pub bucket: u32,
    /// The team; for marks, the Kafka topic.
    pub team: String,
    /// `csat`, `nps`, `ces`; `''` for interactions and marks.
    pub metric: String,
    /// `''` (the team's total), `channel`, `product` or `kind`.
    pub dimension: String,
    /// The dimension's value; for marks, the partition.
    pub dim_value: String,
    /// Interactions only.
    pub channel: String,
    /// Interactions only.
    pub kind: String,
    pub responses: i64,
    pub score_sum: i64,
    pub score_sq_sum: i64,
    pub positive: i64,
    pub negative: i64,
    pub orphans: i64,
    pub interactions: i64,
    pub mark: i64,
}

/// The columns the sink writes into `rollups`, with their types (checked at start-up).
pub const ROLLUP_COLUMNS: &[(&str, &str)] = &[
    ("grain", "String"),
    ("bucket", "DateTime"),
    ("team", "String"),
    ("metric", "String"),
    ("dimension", "String"),
    ("dim_value", "String"),
    ("channel", "String"),
    ("kind", "String"),
    ("responses", "Int64"),
    ("score_sum", "Int64"),
    ("score_sq_sum", "Int64"),
    ("positive", "Int64"),
    ("negative", "Int64"),
    ("orphans", "Int64"),
    ("interactions", "Int64"),
    ("mark", "Int64"),
];

type Key = (String, u32, String, String, String, String, String, String);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums {
    responses: i64,
    score_sum: i64,
    score_sq_sum: i64,
    positive: i64,
    negative: i64,
    orphans: i64,
    interactions: i64,
    mark: i64,
}

impl Sums {
    fn add(&mut self, o: &Sums, sign: i64) {
        self.responses += sign * o.responses;
        self.score_sum += sign * o.score_sum;
        self.score_sq_sum += sign * o.score_sq_sum;
        self.positive += sign * o.positive;
        self.negative += sign * o.negative;
        self.orphans += sign * o.orphans;
        self.interactions += sign * o.interactions;
        self.mark += sign * o.mark;
    }

    fn is_zero(&self) -> bool {
        *self == Sums::default()
    }
}

/// Aggregates events into rollup deltas (the sink's half of the rollups; the rebuild's SQL
/// is the other, and a test holds them equal).
#[derive(Debug, Default, Clone)]
pub struct Rollup {
    rows: BTreeMap<Key, Sums>,
}

fn bucket(secs: u32, width: u32) -> u32 {
    secs - secs % width
}

impl Rollup {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Counts one landed rating in every grain and dimension.
    pub fn rating(&mut self, r: &RatingRow) {
        let score = r.metric.parse::<Metric>().ok();
        let s = i64::from(r.score);
        let d = Sums {
            responses: 1,
            score_sum: s,
            score_sq_sum: s * s,
            positive: i64::from(score.is_some_and(|m| m.is_positive(i32::from(r.score)))),
            negative: i64::from(score.is_some_and(|m| m.is_negative(i32::from(r.score)))),
            orphans: i64::from(r.orphan),
            ..Sums::default()
        };
        let dims = [
            ("", String::new()),
            ("channel", r.channel.clone()),
            ("product", r.product.clone().unwrap_or_default()),
            ("kind", r.interaction_kind.clone().unwrap_or_default()),
        ];
        if r.comment.as_deref().is_some_and(|c| !c.is_empty()) {
            let key = (
                COMMENT_HOUR.to_string(),
                bucket(r.occurred_at, 3600),
                r.team.clone(),
                r.metric.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            );
            self.rows.entry(key).or_default().add(&d, 1);
        }
        for (grain, width) in GRAINS {
            for (dim, value) in &dims {
                let key = (
                    grain.to_string(),
                    bucket(r.occurred_at, width),
                    r.team.clone(),
                    r.metric.clone(),
                    dim.to_string(),
                    value.clone(),
                    String::new(),
                    String::new(),
                );
                self.rows.entry(key).or_default().add(&d, 1);
            }
        }
    }

    /// Counts one landed interaction in every grain.
    pub fn interaction(&mut self, i: &InteractionRow) {
        let d = Sums {
            interactions: 1,
            ..Sums::default()
        };
        for (grain, width) in GRAINS {
            let key = (
                grain.to_string(),
                bucket(i.occurred_at, width),
                i.team.clone(),
                String::new(),
                String::new(),
                String::new(),
                i.channel.clone(),
                i.kind.clone(),
            );
            self.rows.entry(key).or_default().add(&d, 1);
        }
    }

    /// Records that offsets `(rolled, last]` of `topic`/`partition` are counted.
    pub fn mark(&mut self, topic: &str, partition: i32, rolled: i64, last: i64) {
        if last <= rolled {
            return;
        }
        let key = (
            MARK.to_string(),
            0,
            topic.to_string(),
            String::new(),
            String::new(),
            partition.to_string(),
            String::new(),
            String::new(),
        );
        self.rows.entry(key).or_default().mark += last - rolled;
    }

    /// The rows to insert (zero deltas left out).
    pub fn rows(&self) -> Vec<RollupRow> {
        self.rows
            .iter()
            .filter(|(_, s)| !s.is_zero())
            .map(|(k, s)| to_row(k, s))
            .collect()
    }

    fn from_rows(rows: Vec<RollupRow>) -> Self {
        let mut out = Rollup::default();
        for r in rows {
            let (k, s) = from_row(r);
            out.rows.entry(k).or_default().add(&s, 1);
        }
        out
    }

    /// `self − other`, key by key (what turns `other` into `self` when inserted).
    fn minus(&self, other: &Rollup) -> Rollup {
        let mut out = self.clone();
        for (k, s) in &other.rows {
            out.rows.entry(k.clone()).or_default().add(s, -1);
        }
        out.rows.retain(|_, s| !s.is_zero());
        out
    }
}

fn to_row(k: &Key, s: &Sums) -> RollupRow {
    RollupRow {
        grain: k.0.clone(),
        bucket: k.1,
        team: k.2.clone(),
        metric: k.3.clone(),
        dimension: k.4.clone(),
        dim_value: k.5.clone(),
        channel: k.6.clone(),
        kind: k.7.clone(),
        responses: s.responses,
        score_sum: s.score_sum,
        score_sq_sum: s.score_sq_sum,
        positive: s.positive,
        negative: s.negative,
        orphans: s.orphans,
        interactions: s.interactions,
        mark: s.mark,
    }
}

fn from_row(r: RollupRow) -> (Key, Sums) {
    (
        (
            r.grain,
            r.bucket,
            r.team,
            r.metric,
            r.dimension,
            r.dim_value,
            r.channel,
            r.kind,
        ),
        Sums {
            responses: r.responses,
            score_sum: r.score_sum,
            score_sq_sum: r.score_sq_sum,
            positive: r.positive,
            negative: r.negative,
            orphans: r.orphans,
            interactions: r.interactions,
            mark: r.mark,
        },
    )
}

/// `[('minute', 60), ('hour', 3600), ('day', 86400)]`, from [`GRAINS`].
pub fn grains_sql() -> String {
    let g: Vec<String> = GRAINS
        .iter()
        .map(|(n, w)| format!("('{n}', {w})"))
        .collect();
    format!("[{}]", g.join(", "))
}

/// `toDateTime(intDiv(toUInt32(occurred_at), w) * w)` for the grain tuple `g`.
const BUCKET_SQL: &str =
    "toDateTime(intDiv(toUInt32(occurred_at), tupleElement(g, 2)) * tupleElement(g, 2))";

/// The rollups of the raw rows with `occurred_at` in `[?, ?)` and `{cut}`, computed by
/// ClickHouse: the same rows [`Rollup`] makes from the same events.
pub const RECOMPUTE_SQL: &str = "SELECT grain, toUInt32(bucket) AS bucket, team, metric, dimension, dim_value, \
        '' AS channel, '' AS kind, \
        toInt64(count()) AS responses, sum(toInt64(score)) AS score_sum, \
        sum(toInt64(score) * toInt64(score)) AS score_sq_sum, \
        toInt64(sum({positive})) AS positive, toInt64(sum({negative})) AS negative, \
        toInt64(sum(orphan)) AS orphans, toInt64(0) AS interactions, toInt64(0) AS mark \
     FROM ( \
        SELECT team, metric, score, orphan, \
               arrayJoin([('', ''), ('channel', channel), ('product', ifNull(product, '')), ('kind', ifNull(interaction_kind, ''))]) AS d, \
               arrayJoin({grains}) AS g, \
               tupleElement(d, 1) AS dimension, tupleElement(d, 2) AS dim_value, \
               tupleElement(g, 1) AS grain, {bucket} AS bucket \
        FROM {db}.ratings \
        PREWHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
        WHERE {cut} \
     ) GROUP BY grain, bucket, team, metric, dimension, dim_value \
     UNION ALL \
     SELECT 'comment_hour' AS grain, toUInt32(toStartOfHour(occurred_at)) AS bucket, team, metric, \
        '' AS dimension, '' AS dim_value, '' AS channel, '' AS kind, \
        toInt64(count()) AS responses, sum(toInt64(score)) AS score_sum, \
        sum(toInt64(score) * toInt64(score)) AS score_sq_sum, \
        toInt64(sum({positive})) AS positive, toInt64(sum({negative})) AS negative, \
        toInt64(sum(orphan)) AS orphans, toInt64(0) AS interactions, toInt64(0) AS mark \
     FROM {db}.ratings \
     PREWHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
     WHERE ifNull(comment, '') != '' AND {cut} \
     GROUP BY bucket, team, metric \
     UNION ALL \
     SELECT grain, toUInt32(bucket) AS bucket, team, '' AS metric, '' AS dimension, '' AS dim_value, channel, kind, \
        toInt64(0) AS responses, toInt64(0) AS score_sum, toInt64(0) AS score_sq_sum, toInt64(0) AS positive, \
        toInt64(0) AS negative, toInt64(0) AS orphans, toInt64(count()) AS interactions, toInt64(0) AS mark \
     FROM ( \
        SELECT team, channel, kind, arrayJoin({grains}) AS g, tupleElement(g, 1) AS grain, {bucket} AS bucket \
        FROM {db}.interactions \
        PREWHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
        WHERE {cut} \
     ) GROUP BY grain, bucket, team, channel, kind";

/// Binds [`RECOMPUTE_SQL`]'s range `[from, to)` (each of its three branches reads it).
fn recompute_range(q: clickhouse::query::Query, from: u32, to: u32) -> clickhouse::query::Query {
    q.bind(from)
        .bind(to)
        .bind(from)
        .bind(to)
        .bind(from)
        .bind(to)
}

/// What the rollups hold for a range of buckets, and every mark, read in one SELECT (one
/// snapshot of the table's parts: a sink INSERT is in it with its mark or not at all).
pub const SNAPSHOT_SQL: &str = "SELECT grain, toUInt32(bucket) AS bucket, team, metric, dimension, dim_value, channel, kind, \
        sum(responses) AS responses, sum(score_sum) AS score_sum, sum(score_sq_sum) AS score_sq_sum, \
        sum(positive) AS positive, sum(negative) AS negative, sum(orphans) AS orphans, \
        sum(interactions) AS interactions, sum(mark) AS mark \
     FROM {db}.rollups \
     WHERE grain = 'mark' OR (grain IN ('minute', 'hour', 'day', 'comment_hour') AND bucket >= toDateTime(?) AND bucket < toDateTime(?)) \
     GROUP BY grain, bucket, team, metric, dimension, dim_value, channel, kind";

/// The marks of some partitions: `(topic, partition, last offset counted)`.
pub const MARKS_SQL: &str = "SELECT team AS topic, toInt32(dim_value) AS partition, sum(mark) - 1 AS rolled \
     FROM {db}.rollups WHERE grain = 'mark' AND bucket = toDateTime(0) AND (team, dim_value) IN ({keys}) \
     GROUP BY topic, partition";

/// How many events the raw tables and the rollups hold (the rollups' day grain), per table.
pub const COVERAGE_SQL: &str = "SELECT \
        (SELECT count() FROM {db}.ratings) AS raw_ratings, \
        (SELECT count() FROM {db}.interactions) AS raw_interactions, \
        (SELECT toInt64(sum(responses)) FROM {db}.rollups WHERE grain = 'day' AND dimension = '' AND metric != '') AS rolled_ratings, \
        (SELECT toInt64(sum(interactions)) FROM {db}.rollups WHERE grain = 'day' AND metric = '') AS rolled_interactions, \
        (SELECT count() FROM {db}.ratings WHERE has_comment = 1) AS raw_comments, \
        (SELECT toInt64(sum(responses)) FROM {db}.rollups WHERE grain = 'comment_hour') AS rolled_comments, \
        (SELECT toUInt32(min(occurred_at)) FROM {db}.ratings) AS first_rating, \
        (SELECT toUInt32(min(occurred_at)) FROM {db}.interactions) AS first_interaction, \
        (SELECT toUInt32(max(occurred_at)) FROM {db}.ratings) AS last_rating, \
        (SELECT toUInt32(max(occurred_at)) FROM {db}.interactions) AS last_interaction";

/// Raw rows versus what the rollups count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clickhouse::Row, Deserialize)]
pub struct Coverage {
    pub raw_ratings: u64,
    pub raw_interactions: u64,
    pub rolled_ratings: i64,
    pub rolled_interactions: i64,
    /// Ratings with a comment, and what the comment hours count.
    pub raw_comments: u64,
    pub rolled_comments: i64,
    pub first_rating: u32,
    pub first_interaction: u32,
    pub last_rating: u32,
    pub last_interaction: u32,
}

impl Coverage {
    /// The raw rows' time range `[first, last]` in seconds (None when both tables are empty).
    pub fn raw_range(&self) -> Option<(u32, u32)> {
        let firsts = [
            (self.raw_ratings > 0).then_some(self.first_rating),
            (self.raw_interactions > 0).then_some(self.first_interaction),
        ];
        let lasts = [
            (self.raw_ratings > 0).then_some(self.last_rating),
            (self.raw_interactions > 0).then_some(self.last_interaction),
        ];
        Some((
            firsts.iter().flatten().min().copied()?,
            lasts.iter().flatten().max().copied()?,
        ))
    }
}

/// The `WHERE` of the raw rows a rebuild counts: rows landed without Kafka coordinates
/// always; rows of the sink up to their partition's mark.
fn cut_sql(marks: &HashMap<(String, i32), i64>) -> String {
    if marks.is_empty() {
        return "kafka_topic = ''".into();
    }
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut sorted: Vec<_> = marks.iter().collect();
    sorted.sort();
    for ((t, p), m) in sorted {
        keys.push(quote(&format!("{t}#{p}")));
        values.push(format!("toInt64({m})"));
    }
    format!(
        "(kafka_topic = '' OR kafka_offset <= transform(concat(kafka_topic, '#', toString(kafka_partition)), [{}], [{}], toInt64(-1)))",
        keys.join(", "),
        values.join(", ")
    )
}

/// The columns of [`RollupRow`], in order.
pub const COLUMN_LIST: &str =
    "grain, bucket, team, metric, dimension, dim_value, channel, kind, responses, \
     score_sum, score_sq_sum, positive, negative, orphans, interactions, mark";

/// An `INSERT ... SELECT` counting every raw row with `occurred_at` in `[from, to)` into the
/// rollups, for a database whose rollups hold nothing of that range yet (a fresh copy, a
/// server reached without this client such as chDB). `feedback rollups rebuild` is the
/// general, repeatable form.
pub fn backfill_sql(db: &str, from: u32, to: u32) -> String {
    let mut sql = RECOMPUTE_SQL
        .replace("{cut}", "1")
        .replace("{bucket}", BUCKET_SQL)
        .replace("{grains}", &grains_sql());
    for v in [from, to, from, to, from, to] {
        sql = sql.replacen('?', &v.to_string(), 1);
    }
    crate::migrations::render(
        &format!("INSERT INTO {{db}}.rollups ({COLUMN_LIST}) {sql}"),
        db,
    )
}

/// The rollup rows of one day and the events its day-grain rows count.
const DAY_COUNT_SQL: &str = "SELECT toUInt64(count()) AS rows, \
        toInt64(sumIf(responses + interactions, grain = 'day' AND dimension = '')) AS events \
     FROM {db}.rollups WHERE grain IN ('minute', 'hour', 'day', 'comment_hour') AND bucket >= toDateTime(?) \
       AND bucket < toDateTime(?)";

#[derive(Debug, Clone, Copy, Default, clickhouse::Row, Deserialize)]
struct DayCount {
    rows: u64,
    events: i64,
}

/// What one rebuilt day changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayRebuilt {
    /// Correction rows inserted (0: the rollups were exact already).
    pub corrections: usize,
    /// The day holds rollups but no raw rows (expired or erased): left as it was.
    pub kept_without_raw: bool,
    /// Events of the day counted by the recomputation (ratings + interactions).
    pub events: i64,
}

/// Query-id prefix of a rebuild's statements (another rebuild of the same database refuses
/// to start while one runs).
pub const REBUILD_QUERY_PREFIX: &str = "fbrollups/";

impl Ch {
    /// The rollup marks of `partitions`: the last offset whose event the rollups count
    /// (-1: none).
    pub async fn rollup_marks(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), i64>, Error> {
        let mut out: HashMap<(String, i32), i64> =
            partitions.iter().map(|k| (k.clone(), -1)).collect();
        if partitions.is_empty() {
            return Ok(out);
        }
        let keys = partition_keys(partitions, true);
        #[derive(clickhouse::Row, Deserialize)]
        struct M {
            topic: String,
            partition: i32,
            rolled: i64,
        }
        let rows: Vec<M> = self.fetch(&MARKS_SQL.replace("{keys}", &keys)).await?;
        for m in rows {
            out.insert((m.topic, m.partition), m.rolled);
        }
        Ok(out)
    }

    /// Inserts rollup deltas as one INSERT that lands whole or not at all (the part size
    /// bound `max_insert_block_size` raised above the row count).
    pub async fn insert_rollups(&self, rows: &[RollupRow], query_id: &str) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let client = self
            .client
            .clone()
            .with_option("query_id", query_id)
            .with_option(
                "max_insert_block_size",
                (rows.len() + 1).max(1_048_576).to_string(),
            );
        let mut ins = client
            .insert(&format!("{}.{TABLE}", self.db))
            .map_err(|e| self.err(e))?
            .with_timeouts(
                Some(std::time::Duration::from_secs(30)),
                Some(std::time::Duration::from_secs(120)),
            );
        for r in rows {
            ins.write(r).await.map_err(|e| self.err(e))?;
        }
        ins.end().await.map_err(|e| self.err(e))
    }

    /// Raw rows versus rollups.
    pub async fn rollup_coverage(&self) -> Result<Coverage, Error> {
        let rows: Vec<Coverage> = self.fetch(COVERAGE_SQL).await?;
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    /// True when another rebuild of this database runs.
    pub async fn rebuild_running(&self) -> Result<bool, Error> {
        Ok(!self
            .running_inserts(&format!("{REBUILD_QUERY_PREFIX}{}/", self.db))
            .await?
            .is_empty())
    }

    /// Recomputes the rollups of the UTC day starting at `day` (seconds, a multiple of
    /// 86400) from the raw rows and inserts the difference (see the module's doc).
    pub async fn rebuild_day(&self, day: u32, run: &str) -> Result<DayRebuilt, Error> {
        assert_eq!(day % 86400, 0, "a rebuild day starts at midnight UTC");
        let end = day + 86400;
        let prefix = format!("{REBUILD_QUERY_PREFIX}{}/{run}/{day}", self.db);
        let snapshot: Vec<RollupRow> = self
            .fetch_query(
                self.query(SNAPSHOT_SQL)
                    .bind(day)
                    .bind(end)
                    .with_option("query_id", format!("{prefix}/snapshot")),
            )
            .await?;
        let mut marks = HashMap::new();
        let mut stored = Vec::new();
        for r in snapshot {
            if r.grain == MARK {
                if let Ok(p) = r.dim_value.parse::<i32>() {
                    marks.insert((r.team.clone(), p), r.mark - 1);
                }
            } else {
                stored.push(r);
            }
        }
        let sql = RECOMPUTE_SQL
            .replace("{cut}", &cut_sql(&marks))
            .replace("{bucket}", BUCKET_SQL)
            .replace("{grains}", &grains_sql());
        if stored.is_empty() {
            // Nothing counted yet for the day (a backfill, an upgrade): the difference is the
            // recomputation itself, inserted by the server without a round trip. Several
            // parts at most; a crash midway leaves a partial day that the next run corrects.
            self.execute_query(
                recompute_range(
                    self.query(&format!("INSERT INTO {{db}}.{TABLE} ({COLUMN_LIST}) {sql}")),
                    day,
                    end,
                )
                .with_option("query_id", format!("{prefix}/backfill"))
                .with_option("max_insert_block_size", "16777216"),
            )
            .await?;
            let n = self
                .fetch_query::<DayCount>(self.query(DAY_COUNT_SQL).bind(day).bind(end))
                .await?;
            let n = n.first().copied().unwrap_or_default();
            return Ok(DayRebuilt {
                corrections: n.rows as usize,
                kept_without_raw: false,
                events: n.events,
            });
        }
        let fresh: Vec<RollupRow> = self
            .fetch_query(
                recompute_range(self.query(&sql), day, end)
                    .with_option("query_id", format!("{prefix}/recompute")),
            )
            .await?;
        let events: i64 = fresh
            .iter()
            .filter(|r| r.grain == "day" && r.dimension.is_empty())
            .map(|r| r.responses + r.interactions)
            .sum();
        if fresh.is_empty() && !stored.is_empty() {
            return Ok(DayRebuilt {
                kept_without_raw: true,
                ..DayRebuilt::default()
            });
        }
        let diff = Rollup::from_rows(fresh).minus(&Rollup::from_rows(stored));
        let rows = diff.rows();
        self.insert_rollups(&rows, &format!("{prefix}/insert"))
            .await?;
        Ok(DayRebuilt {
            corrections: rows.len(),
            kept_without_raw: false,
            events,
        })
    }
}

/// The commented ratings of `[?, ?)` missing from `rating_comments` (migration 9: filled by a
/// materialized view, which a server crash between the INSERT's two parts can skip).
const MISSING_COMMENTS_SQL: &str = "FROM {db}.ratings \
     PREWHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
     WHERE ifNull(comment, '') != '' AND rating_id NOT IN ( \
        SELECT rating_id FROM {db}.rating_comments WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?))";

impl Ch {
    /// Copies the commented ratings of the UTC day starting at `day` that `rating_comments`
    /// misses into it; returns how many. Safe while the sink lands: a rating landed
    /// meanwhile may be copied twice, which the table's readers fold (one row per
    /// `rating_id`).
    pub async fn restore_comments_day(&self, day: u32) -> Result<u64, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct N {
            n: u64,
        }
        let end = day + 86400;
        let missing: Vec<N> = self
            .fetch_query(
                self.query(&format!("SELECT count() AS n {MISSING_COMMENTS_SQL}"))
                    .bind(day)
                    .bind(end)
                    .bind(day)
                    .bind(end),
            )
            .await?;
        let n = missing.first().map_or(0, |m| m.n);
        if n > 0 {
            self.execute_query(
                self.query(&format!(
                    "INSERT INTO {{db}}.rating_comments SELECT {} {MISSING_COMMENTS_SQL}",
                    crate::migrations::RATING_COMMENT_COLUMNS
                ))
                .bind(day)
                .bind(end)
                .bind(day)
                .bind(end),
            )
            .await?;
        }
        Ok(n)
    }
}

/// One rollup key where the stored sums differ from the recomputation from the raw rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The stored sums (`None`: no row).
    pub stored: Option<RollupRow>,
    /// The recomputed sums (`None`: no row).
    pub recomputed: Option<RollupRow>,
}

/// Every rollup row (every grain, dimension and the interactions; marks left out) compared
/// with its recomputation from all raw rows. Meant for a quiet pipeline (tests, the drill):
/// rows landing meanwhile show up as differences.
pub async fn compare_with_raw(ch: &Ch) -> Result<(usize, Vec<Difference>), Error> {
    let stored: Vec<RollupRow> = ch
        .fetch_query(ch.query(SNAPSHOT_SQL).bind(0u32).bind(u32::MAX))
        .await?;
    let stored = Rollup::from_rows(stored.into_iter().filter(|r| r.grain != MARK).collect());
    let sql = RECOMPUTE_SQL
        .replace("{cut}", "1")
        .replace("{bucket}", BUCKET_SQL)
        .replace("{grains}", &grains_sql());
    let fresh: Vec<RollupRow> = ch
        .fetch_query(recompute_range(ch.query(&sql), 0, u32::MAX))
        .await?;
    let fresh = Rollup::from_rows(fresh);
    let diff = fresh.minus(&stored);
    let out = diff
        .rows
        .keys()
        .map(|k| Difference {
            stored: stored.rows.get(k).map(|s| to_row(k, s)),
            recomputed: fresh.rows.get(k).map(|s| to_row(k, s)),
        })
        .collect();
    Ok((fresh.rows.len(), out))
}

/// The condition "row `(grain, b)` counts in the window `wi`" (`b` = `toUInt32(bucket)`,
/// `wi` the window's 1-based index in `bounds`): whole hours from the hour grain, the
/// partial hours at both ends from the minute grain. One expression for every window, the
/// bounds picked from constant arrays by `wi`: 18.16 spends most of a statement's time
/// analysing expressions, and six inlined window conditions cost it more than the rows.
fn in_window(bounds: &[Span]) -> String {
    let n = format!("toUInt32({NOW})");
    let list = |f: &dyn Fn(&Span) -> i64| {
        let v: Vec<String> = bounds.iter().map(|b| f(b).to_string()).collect();
        format!("[{}]", v.join(", "))
    };
    let (froms, tos) = (list(&|b| b.1), list(&|b| b.2));
    let from = format!("arrayMap(x -> {n} + x, {froms})[wi]");
    let to = format!("arrayMap(x -> {n} + x, {tos})[wi]");
    let ceil_from = format!("arrayMap(x -> intDiv({n} + x + 3599, 3600) * 3600, {froms})[wi]");
    let floor_to = format!("arrayMap(x -> intDiv({n} + x, 3600) * 3600, {tos})[wi]");
    format!(
        "if(grain = 'hour', b >= {ceil_from} AND b < {floor_to}, \
         b >= {from} AND b < {to} AND (b < {ceil_from} OR b >= {floor_to}))"
    )
}

const NOW: &str = "toStartOfMinute(now())";

/// `NOW + n` as SQL.
fn at(n: i64) -> String {
    format!("{NOW} {}", offset(n))
}

/// A window as `(name, from, to)`, offsets in seconds from the current minute.
pub type Span = (&'static str, i64, i64);

/// `window`'s current span (`last_*` = `[now - span, now + 60)`) and, with `previous`, the
/// span just before it (`prev_*`).
pub fn spans(window: Window, previous: bool) -> Vec<Span> {
    let s = window.secs();
    let mut out = vec![(window.current(), -s, 60)];
    if previous {
        out.push((window.previous(), -2 * s, -s));
    }
    out
}

/// Every window of [`Window::ALL`], current and previous.
fn window_bounds() -> Vec<Span> {
    Window::ALL.iter().flat_map(|w| spans(*w, true)).collect()
}

/// `+ n` or `- n`.
fn offset(n: i64) -> String {
    if n < 0 {
        format!("- {}", -n)
    } else {
        format!("+ {n}")
    }
}

/// Which rollup rows the windows `bounds` may need, as offsets from the current minute: the
/// hour rows from `hours_from` on (when a window is long enough to hold a whole hour, which a
/// one-hour window `[now - 3600, now + 60)` does when `now` is on the hour), and the minute
/// rows of each range of `minutes` (the partial hours after each window's start and before
/// each window's end, merged).
#[derive(Debug, PartialEq)]
struct RowsPlan {
    hours_from: Option<i64>,
    minutes: Vec<(i64, i64)>,
}

fn rows_plan(bounds: &[Span]) -> RowsPlan {
    let longest = bounds.iter().map(|b| -b.1).max().unwrap_or(0);
    let holds_an_hour = bounds.iter().any(|(_, from, to)| to - from >= 3600);
    let mut ranges: Vec<(i64, i64)> = bounds
        .iter()
        .flat_map(|(_, from, to)| [(*from, from + 3600), (to - 3600, *to)])
        .collect();
    ranges.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut minutes: Vec<(i64, i64)> = Vec::new();
    for (from, to) in ranges {
        match minutes.last_mut() {
            Some(last) if to >= last.0 => last.0 = last.0.min(from),
            _ => minutes.push((from, to)),
        }
    }
    RowsPlan {
        hours_from: holds_an_hour.then_some(-longest),
        minutes,
    }
}

/// The rollup rows any window may need ([`rows_plan`]), columns `cols`, as a `UNION ALL` of simple ranges of
/// the ordering key `(grain, bucket, ...)` (ClickHouse 18.16 prunes each branch; one `OR` of
/// ranges made it scan the table). `filter` selects rows further (e.g. `dimension = ''`).
pub fn window_rows_sql(cols: &str, filter: &str, bounds: &[Span]) -> String {
    let plan = rows_plan(bounds);
    let mut branches = Vec::new();
    if let Some(from) = plan.hours_from {
        branches.push(format!(
            "SELECT {cols} FROM {{db}}.rollups WHERE grain = 'hour' AND bucket >= {} AND {filter}",
            at(from)
        ));
    }
    for (from, to) in plan.minutes {
        branches.push(format!(
            "SELECT {cols} FROM {{db}}.rollups WHERE grain = 'minute' AND bucket >= {} AND bucket < {} AND {filter}",
            at(from),
            at(to)
        ));
    }
    format!("({})", branches.join(" UNION ALL "))
}

/// Sums of `measures` (`(column, cast)`, e.g. `("responses", "toUInt64")`) per `group` and
/// window of `bounds` ([`Window::ALL`]'s, current and previous, when `None`), one row per
/// window: one pass over [`window_rows_sql`], each row joined with the indexes of the
/// windows (`wi`) and kept for those it counts in ([`in_window`]), then summed per group and
/// window. Columns: `group`, `window`, the measures.
///
/// (Tried: picking the one window a row counts in with `multiIf` when the windows do not
/// overlap, instead of the join. On 18.16 it was slower, 70 against 50 ms for a week's
/// breakdowns at 50 M ratings: the condition on `wi` in the WHERE is pushed into each
/// branch of the rows' `UNION ALL`, a computed index is not.)
pub fn window_sums_sql(
    group: &str,
    filter: &str,
    measures: &[(&str, &str)],
    bounds: Option<&[Span]>,
) -> String {
    let bounds = bounds.map_or_else(window_bounds, |b| b.to_vec());
    let names: Vec<String> = bounds.iter().map(|b| format!("'{}'", b.0)).collect();
    let indexes: Vec<String> = (1..=bounds.len()).map(|i| i.to_string()).collect();
    let columns: Vec<&str> = measures.iter().map(|(m, _)| *m).collect();
    let sums: Vec<String> = measures
        .iter()
        .map(|(m, cast)| format!("{cast}(sum({m})) AS {m}"))
        .collect();
    format!(
        "SELECT {group}, [{}][wi] AS window, {} \
         FROM (SELECT {group}, {}, grain, toUInt32(bucket) AS b, arrayJoin([{}]) AS wi FROM {}) \
         WHERE {} GROUP BY {group}, wi",
        names.join(", "),
        sums.join(", "),
        columns.join(", "),
        indexes.join(", "),
        window_rows_sql(
            &format!("grain, bucket, {group}, {}", columns.join(", ")),
            filter,
            &bounds
        ),
        in_window(&bounds),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rating(team: &str, metric: &str, score: i8, at: u32, channel: &str) -> RatingRow {
        RatingRow {
            rating_id: format!("r{at}{score}"),
            occurred_at: at,
            occurred_at_ms: i64::from(at) * 1000,
            interaction_id: None,
            metric: metric.into(),
            score,
            comment: None,
            service: "s".into(),
            channel: channel.into(),
            customer_ref: "c".into(),
            product: None,
            region: None,
            attributes: "{}".into(),
            team: team.into(),
            attribution: "claim".into(),
            claim_file: None,
            claim_index: None,
            ownership_version: "v".into(),
            orphan: 0,
            interaction_kind: Some("order".into()),
            source_topic: "t".into(),
            source_partition: 0,
            source_offset: 0,
            attributed_at_ms: 0,
            kafka_topic: "k".into(),
            kafka_partition: 0,
            kafka_offset: 0,
        }
    }

    #[test]
    fn a_rating_counts_once_per_grain_and_dimension() {
        let mut r = Rollup::default();
        // 2026-01-01T10:17:30Z
        let t = 1_767_262_650;
        r.rating(&rating("payments", "csat", 5, t, "web"));
        r.rating(&rating("payments", "csat", 2, t + 10, "web"));
        let rows = r.rows();
        // 3 grains × (total, channel, product, kind), both ratings in the same buckets.
        assert_eq!(rows.len(), 12);
        let total_minute = rows
            .iter()
            .find(|x| x.grain == "minute" && x.dimension.is_empty())
            .unwrap();
        assert_eq!(total_minute.bucket, 1_767_262_620);
        assert_eq!(
            (
                total_minute.responses,
                total_minute.score_sum,
                total_minute.score_sq_sum,
                total_minute.positive,
                total_minute.negative
            ),
            (2, 7, 29, 1, 1)
        );
        let day = rows
            .iter()
            .find(|x| x.grain == "day" && x.dimension == "kind")
            .unwrap();
        assert_eq!(
            (day.bucket, day.dim_value.as_str()),
            (1_767_225_600, "order")
        );
        let hour = rows
            .iter()
            .find(|x| x.grain == "hour" && x.dimension == "product")
            .unwrap();
        assert_eq!((hour.bucket, hour.dim_value.as_str()), (1_767_261_600, ""));
        // Neither has a comment: no comment hour.
        assert!(rows.iter().all(|x| x.grain != COMMENT_HOUR));
    }

    #[test]
    fn commented_ratings_count_in_their_hour() {
        let mut r = Rollup::default();
        // 2026-01-01T10:17:30Z, 10:59:59Z and 11:00:00Z
        let t = 1_767_262_650;
        let with = |mut x: RatingRow, c: &str| {
            x.comment = Some(c.into());
            x
        };
        r.rating(&with(rating("payments", "csat", 1, t, "web"), "late"));
        r.rating(&with(
            rating("payments", "csat", 5, 1_767_265_199, "app"),
            "fine",
        ));
        r.rating(&with(
            rating("payments", "csat", 4, 1_767_265_200, "web"),
            "ok",
        ));
        r.rating(&with(rating("payments", "csat", 2, t, "web"), ""));
        r.rating(&rating("payments", "nps", 3, t, "web"));
        let hours: Vec<_> = r
            .rows()
            .into_iter()
            .filter(|x| x.grain == COMMENT_HOUR)
            .map(|x| {
                (
                    x.bucket,
                    x.team,
                    x.metric,
                    x.responses,
                    x.score_sum,
                    x.positive,
                    x.negative,
                )
            })
            .collect();
        assert_eq!(
            hours,
            [
                (1_767_261_600, "payments".into(), "csat".into(), 2, 6, 1, 1),
                (1_767_265_200, "payments".into(), "csat".into(), 1, 4, 1, 0),
            ]
        );
    }

    #[test]
    fn marks_telescope_and_differences_cancel() {
        let mut a = Rollup::default();
        a.mark("topic", 3, -1, 9);
        a.mark("topic", 3, 9, 20);
        a.mark("topic", 3, 20, 20);
        let rows = a.rows();
        assert_eq!(rows.len(), 1);
        // sum − 1 = the last offset counted.
        assert_eq!(rows[0].mark - 1, 20);
        assert_eq!(rows[0].dim_value, "3");
        assert!(a.minus(&a).rows().is_empty());
        let mut b = Rollup::default();
        b.rating(&rating("t", "nps", 9, 60, "app"));
        let d = b.minus(&Rollup::default());
        assert_eq!(d.rows(), b.rows());
        let neg = Rollup::default().minus(&b).rows();
        assert!(neg.iter().all(|r| r.responses == -1 && r.positive == -1));
    }

    #[test]
    fn the_cut_names_every_partition_and_keeps_rows_without_coordinates() {
        assert_eq!(cut_sql(&HashMap::new()), "kafka_topic = ''");
        let m = HashMap::from([(("t'x".to_string(), 2), 41)]);
        assert_eq!(
            cut_sql(&m),
            "(kafka_topic = '' OR kafka_offset <= transform(concat(kafka_topic, '#', toString(kafka_partition)), ['t\\'x#2'], [toInt64(41)], toInt64(-1)))"
        );
    }

    #[test]
    fn window_rows_cover_every_edge() {
        let sql = window_rows_sql("grain, bucket", "dimension = ''", &window_bounds());
        assert!(sql.starts_with("(SELECT grain, bucket FROM"));
        assert!(sql.contains("WHERE grain = 'hour' AND bucket >= toStartOfMinute(now()) - 1209600 AND dimension = ''"));
        // The two last hours and the current minute, merged from four edges.
        assert!(sql.contains("grain = 'minute' AND bucket >= toStartOfMinute(now()) - 7200 AND bucket < toStartOfMinute(now()) + 60"));
        // 24 h: the hour before its start (prev_24h's end) and after it.
        assert!(sql.contains(
            "bucket >= toStartOfMinute(now()) - 90000 AND bucket < toStartOfMinute(now()) - 82800"
        ));
        assert!(sql.contains("bucket >= toStartOfMinute(now()) - 172800 AND bucket < toStartOfMinute(now()) - 169200"));
        assert!(sql.contains("bucket >= toStartOfMinute(now()) - 608400 AND bucket < toStartOfMinute(now()) - 601200"));
        assert!(sql.contains("bucket >= toStartOfMinute(now()) - 1209600 AND bucket < toStartOfMinute(now()) - 1206000"));
        assert_eq!(sql.matches(" UNION ALL ").count(), 5, "{sql}");
    }

    #[test]
    fn window_sums_name_every_window_once() {
        let sql = window_sums_sql("team", "1", &[("responses", "toUInt64")], None);
        for w in Window::ALL {
            for name in [w.current(), w.previous()] {
                assert_eq!(sql.matches(&format!("'{name}'")).count(), 1, "{sql}");
            }
        }
        assert!(sql.contains(
            "['last_1h', 'prev_1h', 'last_24h', 'prev_24h', 'last_7d', 'prev_7d'][wi] AS window"
        ));
        assert!(sql.contains("arrayJoin([1, 2, 3, 4, 5, 6]) AS wi"), "{sql}");
        // Each window's bounds once, in the windows' order, as offsets from the minute.
        assert!(sql.contains(
            "arrayMap(x -> toUInt32(toStartOfMinute(now())) + x, [-3600, -7200, -86400, -172800, -604800, -1209600])[wi]"
        ), "{sql}");
        assert!(sql.contains(
            "arrayMap(x -> intDiv(toUInt32(toStartOfMinute(now())) + x, 3600) * 3600, [60, -3600, 60, -86400, 60, -604800])[wi]"
        ), "{sql}");
        assert!(
            sql.contains("toUInt64(sum(responses)) AS responses"),
            "{sql}"
        );
        // The last hour alone reads its minutes and, when `now` is on the hour, its one hour.
        let hour = window_sums_sql(
            "team",
            "1",
            &[("responses", "toUInt64")],
            Some(&spans(Window::Hour, false)),
        );
        assert!(
            hour.contains(
                "rollups WHERE grain = 'hour' AND bucket >= toStartOfMinute(now()) - 3600 AND 1"
            ),
            "{hour}"
        );
        assert!(hour.contains("grain = 'minute' AND bucket >= toStartOfMinute(now()) - 3600 AND bucket < toStartOfMinute(now()) + 60"));
    }

    /// A model of [`in_window`]: the `(grain, bucket)` rows it counts for `[from, to)`.
    fn counted(from: i64, to: i64) -> Vec<(&'static str, i64)> {
        let ceil_from = (from + 3599).div_euclid(3600) * 3600;
        let floor_to = to.div_euclid(3600) * 3600;
        let mut out = Vec::new();
        let mut m = from;
        while m < to {
            if m < ceil_from || m >= floor_to {
                out.push(("minute", m));
            }
            m += 60;
        }
        let mut h = ceil_from;
        while h < floor_to {
            out.push(("hour", h));
            h += 3600;
        }
        out
    }

    /// Whatever minute of the hour `now` is (every one of the 60, and the next hour's first), for
    /// every set of windows the board and the views ask for: the rows a window counts cover
    /// each of its minutes exactly once, and the rows fetched include every one of them. (A
    /// one-hour window on the hour holds one whole hour row; before this test the plan did
    /// not fetch hour rows for it and the page's breakdown was empty that minute.)
    #[test]
    fn every_counted_row_is_fetched_and_every_minute_counted_once() {
        let mut sets: Vec<Vec<Span>> = vec![window_bounds()];
        for w in Window::ALL {
            sets.push(spans(w, false));
            sets.push(spans(w, true));
        }
        let day = 86400 * 20_000;
        for bounds in &sets {
            let plan = rows_plan(bounds);
            for minute in 0..=60 {
                let now = day - 3600 + minute * 60;
                for (name, f, t) in bounds {
                    let (from, to) = (now + f, now + t);
                    let rows = counted(from, to);
                    let mut minutes: Vec<i64> = rows
                        .iter()
                        .flat_map(|(g, b)| {
                            let n = if *g == "hour" { 60 } else { 1 };
                            (0..n).map(move |i| b + i * 60)
                        })
                        .collect();
                    minutes.sort_unstable();
                    let expected: Vec<i64> = (0..(to - from) / 60).map(|i| from + i * 60).collect();
                    assert_eq!(minutes, expected, "{name} at now = {now}");
                    for (g, b) in rows {
                        let fetched = match g {
                            "hour" => plan.hours_from.is_some_and(|h| b >= now + h),
                            _ => plan
                                .minutes
                                .iter()
                                .any(|(a, z)| b >= now + a && b < now + z),
                        };
                        assert!(fetched, "{name} at now = {now}: {g} row {b} is counted but not fetched ({plan:?})");
                    }
                }
            }
        }
    }
}
