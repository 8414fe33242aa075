//! The statements of `feedback bench` (and the drill's clean-up): row counts of a lane's
//! database, dropping it, and the Native export/import that measures clickhouse-client's
//! insert speed against the sink's; for `bench --read-scale`, the generated history written
//! straight into the raw tables (`INSERT ... SELECT FROM numbers`), the wait for background
//! merges, and the Grafana panels' SQL expanded and run as the datasource plugin runs it.

use serde::Deserialize;

use crate::positions::quote;
use crate::{Ch, Error};

/// Rows in the raw tables: interactions + ratings.
pub async fn raw_rows(ch: &Ch) -> Result<u64, Error> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Count {
        n: u64,
    }
    let r: Vec<Count> = ch
        .fetch("SELECT (SELECT count() FROM {db}.interactions) + (SELECT count() FROM {db}.ratings) AS n")
        .await?;
    Ok(r.first().map_or(0, |c| c.n))
}

/// Drops the handle's database and everything in it (a bench lane's or a drill's).
pub async fn drop_database(ch: &Ch) -> Result<(), Error> {
    ch.execute("DROP DATABASE IF EXISTS {db}").await
}

/// A raw table the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawTable {
    Interactions,
    Ratings,
}

impl RawTable {
    pub const ALL: [RawTable; 2] = [RawTable::Interactions, RawTable::Ratings];

    pub const fn name(self) -> &'static str {
        match self {
            RawTable::Interactions => "interactions",
            RawTable::Ratings => "ratings",
        }
    }
}

/// The statements, for `clickhouse-client --query`, that export a table's stored columns
/// as Native and insert such an export again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeCopy {
    pub export: String,
    pub import: String,
}

impl NativeCopy {
    fn new(database: &str, table: RawTable, cols: &str) -> Self {
        let t = table.name();
        NativeCopy {
            export: format!("SELECT {cols} FROM {database}.{t} FORMAT Native"),
            import: format!("INSERT INTO {database}.{t} ({cols}) FORMAT Native"),
        }
    }
}

/// The [`NativeCopy`] of `table` in the handle's database: every column that is stored
/// as written (no DEFAULT/MATERIALIZED/ALIAS), in table order.
pub async fn native_copy(ch: &Ch, table: RawTable) -> Result<NativeCopy, Error> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Cols {
        cols: String,
    }
    let c: Vec<Cols> = ch
        .client
        .query("SELECT arrayStringConcat(groupArray(name), ', ') AS cols FROM (SELECT name FROM system.columns WHERE database = ? AND table = ? AND default_kind = '')")
        .bind(ch.database())
        .bind(table.name())
        .fetch_all()
        .await
        .map_err(|e| ch.err(e))?;
    let cols = c.first().map(|c| c.cols.clone()).unwrap_or_default();
    Ok(NativeCopy::new(ch.database(), table, &cols))
}

/// A generated history of `total` ratings and as many interactions, spread evenly over
/// `[from, from + span)` (seconds), each value derived from the row number by hashing: the
/// same numbers give the same rows. Rating `n` rates interaction `n` (30 s after it, same
/// team, channel, service, product and customer) except for orphans (2%: their interaction
/// never landed) and ratings without interaction (10%); 20% of ratings carry a comment.
/// Rows carry no Kafka coordinates (`kafka_topic = ''`), like rows written by hand.
#[derive(Debug, Clone)]
pub struct History {
    pub total: u64,
    pub from: u32,
    pub span: u32,
    /// Team of each slot; a row's team is a slot picked by hash (repeat a team to weight it).
    pub team_slots: Vec<String>,
}

impl History {
    fn teams_sql(&self) -> String {
        let t: Vec<String> = self.team_slots.iter().map(|t| quote(t)).collect();
        format!("[{}]", t.join(", "))
    }

    /// The columns every row derives from its number `n` (shared by both tables so that a
    /// rating matches its interaction).
    fn base_sql(&self) -> String {
        format!(
            "SELECT n, toUInt32(toUInt64({from}) + intDiv(n * toUInt64({span}), toUInt64({total}))) AS at, \
                 arrayElement({teams}, 1 + cityHash64(n, 1) % {slots}) AS team_of, \
                 arrayElement(['web', 'app', 'phone', 'email', 'chat', 'store'], 1 + cityHash64(n, 2) % 6) AS channel_of, \
                 arrayElement(['order', 'delivery', 'support_ticket', 'visit', 'return'], 1 + cityHash64(n, 3) % 5) AS kind_of, \
                 if(cityHash64(n, 4) % 6 = 0, CAST(NULL, 'Nullable(String)'), \
                    CAST(arrayElement(['payments-card', 'payments-wallet', 'parcels', 'groceries', 'loyalty-card'], 1 + cityHash64(n, 4) % 5), 'Nullable(String)')) AS product_of, \
                 arrayElement(['checkout-api', 'parcel-tracker', 'support-desk', 'store-pos', 'mobile-app', 'loyalty-api'], 1 + cityHash64(n, 5) % 6) AS service_of, \
                 concat('cust-', toString(cityHash64(n, 6) % 2000000)) AS customer_of, \
                 if(cityHash64(n, 7) % 4 = 0, CAST(NULL, 'Nullable(String)'), \
                    CAST(arrayElement(['nl', 'be', 'de'], 1 + cityHash64(n, 7) % 3), 'Nullable(String)')) AS region_of \
             FROM (SELECT number + ? AS n FROM numbers(?))",
            from = self.from,
            span = self.span.saturating_sub(60).max(1),
            total = self.total.max(1),
            teams = self.teams_sql(),
            slots = self.team_slots.len().max(1),
        )
    }
}

/// The interactions of a [`History`].
const FILL_INTERACTIONS_SQL: &str = "INSERT INTO {db}.interactions (interaction_id, occurred_at, occurred_at_ms, \
        service, channel, kind, customer_ref, product, region, agent_id, handling_team, attributes, team, \
        attribution, claim_file, claim_index, ownership_version, source_topic, source_partition, source_offset, \
        attributed_at_ms, inserted_at, kafka_topic, kafka_partition, kafka_offset) \
     SELECT concat('fbi-', toString(n)), toDateTime(at), toInt64(at) * 1000 + toInt64(n % 1000), \
        service_of, channel_of, kind_of, customer_of, product_of, region_of, CAST(NULL, 'Nullable(String)'), \
        CAST(NULL, 'Nullable(String)'), '{}', team_of, if(team_of = 'unowned', 'unowned', 'claim'), \
        CAST(NULL, 'Nullable(String)'), CAST(NULL, 'Nullable(Int32)'), 'read-scale', 'feedback.interactions.v1', \
        toInt32(n % 4), toInt64(intDiv(n, 4)), toInt64(at) * 1000 + 200, toDateTime(at + 1), '', toInt32(-1), toInt64(-1) \
     FROM ({base})";

/// The ratings of a [`History`].
const FILL_RATINGS_SQL: &str = "INSERT INTO {db}.ratings (rating_id, occurred_at, occurred_at_ms, interaction_id, \
        metric, score, comment, service, channel, customer_ref, product, region, attributes, team, attribution, \
        claim_file, claim_index, ownership_version, orphan, interaction_kind, source_topic, source_partition, \
        source_offset, attributed_at_ms, inserted_at, kafka_topic, kafka_partition, kafka_offset) \
     SELECT concat('fbr-', toString(n)), toDateTime(at + 30), toInt64(at + 30) * 1000 + toInt64(n % 1000), \
        multiIf(orphan_of = 1, CAST(concat('fbi-missing-', toString(n)), 'Nullable(String)'), \
                cityHash64(n, 9) % 10 = 0, CAST(NULL, 'Nullable(String)'), \
                CAST(concat('fbi-', toString(n)), 'Nullable(String)')) AS iid, \
        metric_of, \
        toInt8(multiIf(metric_of = 'csat', arrayElement([1, 2, 3, 4, 4, 5, 5, 5], 1 + cityHash64(n, 11) % 8), \
                       metric_of = 'nps', arrayElement([0, 3, 5, 6, 7, 8, 8, 9, 9, 10, 10, 10], 1 + cityHash64(n, 11) % 12), \
                       arrayElement([1, 2, 3, 4, 5, 5, 6, 6, 7, 7], 1 + cityHash64(n, 11) % 10))), \
        if(cityHash64(n, 12) % 5 = 0, \
           CAST(concat(arrayElement(['took too long', 'great service', 'charged twice', 'parcel came late', \
                                     'friendly staff', 'the app crashed at checkout'], 1 + cityHash64(n, 13) % 6), \
                       ' #', toString(n)), 'Nullable(String)'), \
           CAST(NULL, 'Nullable(String)')), \
        service_of, channel_of, customer_of, product_of, region_of, '{}', team_of, \
        if(team_of = 'unowned', 'unowned', 'claim'), CAST(NULL, 'Nullable(String)'), CAST(NULL, 'Nullable(Int32)'), \
        'read-scale', toUInt8(orphan_of), \
        if(orphan_of = 1 OR isNull(iid), CAST(NULL, 'Nullable(String)'), CAST(kind_of, 'Nullable(String)')), \
        'feedback.ratings.v1', toInt32(n % 4), toInt64(intDiv(n, 4)), toInt64(at + 30) * 1000 + 200, \
        toDateTime(at + 31), '', toInt32(-1), toInt64(-1) \
     FROM (SELECT *, arrayElement(['csat', 'nps', 'ces'], 1 + cityHash64(n, 10) % 3) AS metric_of, \
                  if(cityHash64(n, 8) % 50 = 0, 1, 0) AS orphan_of \
           FROM ({base}))";

/// Writes rows `[start, start + count)` of `history` into `table` (one INSERT ... SELECT).
pub async fn fill(
    ch: &Ch,
    table: RawTable,
    history: &History,
    start: u64,
    count: u64,
) -> Result<(), Error> {
    let sql = match table {
        RawTable::Interactions => FILL_INTERACTIONS_SQL,
        RawTable::Ratings => FILL_RATINGS_SQL,
    }
    .replace("{base}", &history.base_sql());
    ch.query(&sql)
        .bind(start)
        .bind(count)
        .execute()
        .await
        .map_err(|e| ch.err(e))
}

/// Background merges running in the handle's database.
pub async fn merges_running(ch: &Ch) -> Result<u64, Error> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Count {
        n: u64,
    }
    let r: Vec<Count> = ch
        .fetch_query(
            ch.client
                .query("SELECT count() AS n FROM system.merges WHERE database = ?")
                .bind(ch.database()),
        )
        .await?;
    Ok(r.first().map_or(0, |c| c.n))
}

/// Runs a dashboard's query (already expanded by [`grafana_sql`]) with the handle's database
/// as the default one, as the Grafana datasource does, reads the whole answer, and returns
/// its size in bytes (TabSeparated).
pub async fn run_panel(ch: &Ch, sql: &str) -> Result<u64, Error> {
    // `?` would be taken for a bind placeholder: the plugin sends the text as is.
    let sql = sql.replace('?', "??");
    let mut cursor = ch
        .client
        .clone()
        .with_database(ch.database())
        .query(&sql)
        .fetch_bytes("TabSeparated")
        .map_err(|e| ch.err(e))?;
    let bytes = cursor.collect().await.map_err(|e| ch.err(e))?;
    Ok(bytes.len() as u64)
}

/// A dashboard query's text as Grafana and the grafana-clickhouse-datasource plugin send it:
/// template variables first (`${name}`, `${name:raw}`, `$name`, from `vars`), then the
/// plugin's macros (`pkg/macros/macros.go`; the same expansion as `tests/dashboards_test.py`)
/// for the time range `[from, to]` (seconds) and an interval of `interval_s` seconds.
pub fn grafana_sql(
    raw: &str,
    vars: &[(&str, &str)],
    from: i64,
    to: i64,
    interval_s: i64,
) -> Result<String, String> {
    let b = raw.as_bytes();
    let ident = |at: usize| {
        let mut e = at;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
            e += 1;
        }
        e
    };
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let next = raw[i..].find('$').map_or(raw.len(), |k| i + k);
            out.push_str(&raw[i..next]);
            i = next;
            continue;
        }
        if raw[i..].starts_with("$__") {
            let e = ident(i + 3);
            let name = &raw[i + 3..e];
            let (args, end): (Vec<String>, usize) = if b.get(e) == Some(&b'(') {
                let close = raw[e..]
                    .find(')')
                    .map(|k| e + k)
                    .ok_or_else(|| format!("macro $__{name}: no closing parenthesis"))?;
                (
                    raw[e + 1..close]
                        .split(',')
                        .map(|a| a.trim().to_string())
                        .collect(),
                    close + 1,
                )
            } else {
                (Vec::new(), e)
            };
            let arg = |k: usize| {
                args.get(k)
                    .cloned()
                    .ok_or_else(|| format!("macro $__{name} needs argument {}", k + 1))
            };
            let dt = |t: i64| format!("toDateTime({t})");
            let ms = |t: i64| format!("fromUnixTimestamp64Milli({})", t * 1000);
            let date = |t: i64| {
                let (y, m, d) = civil(t.div_euclid(86400));
                format!("toDate('{y:04}-{m:02}-{d:02}')")
            };
            let text = match name {
                "fromTime" => dt(from),
                "toTime" => dt(to),
                "fromTime_ms" => ms(from),
                "toTime_ms" => ms(to),
                "timeFilter" => format!("{0} >= {1} AND {0} <= {2}", arg(0)?, dt(from), dt(to)),
                "timeFilter_ms" => {
                    format!("{0} >= {1} AND {0} <= {2}", arg(0)?, ms(from), ms(to))
                }
                "dateFilter" => format!("{0} >= {1} AND {0} <= {2}", arg(0)?, date(from), date(to)),
                "dateTimeFilter" | "dt" => format!(
                    "({0} >= {2} AND {0} <= {3}) AND ({1} >= {4} AND {1} <= {5})",
                    arg(0)?,
                    arg(1)?,
                    date(from),
                    date(to),
                    dt(from),
                    dt(to)
                ),
                "timeInterval" => format!(
                    "toStartOfInterval(toDateTime({}), INTERVAL {} second)",
                    arg(0)?,
                    interval_s.max(1)
                ),
                "interval_s" => interval_s.max(1).to_string(),
                _ => return Err(format!("unknown macro $__{name}")),
            };
            out.push_str(&text);
            i = end;
            continue;
        }
        let (name, end) = if b.get(i + 1) == Some(&b'{') {
            let close = raw[i..]
                .find('}')
                .map(|k| i + k)
                .ok_or_else(|| "variable ${...: no closing brace".to_string())?;
            let inner = &raw[i + 2..close];
            let (n, fmt) = inner.split_once(':').unwrap_or((inner, ""));
            if !fmt.is_empty() && fmt != "raw" {
                return Err(format!("variable format {fmt} of ${{{n}}} is not handled"));
            }
            (n, close + 1)
        } else {
            let e = ident(i + 1);
            (&raw[i + 1..e], e)
        };
        let value = vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("variable {name} has no value"))?;
        out.push_str(value);
        i = end;
    }
    Ok(out)
}

/// (year, month, day) of a day number since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_expansion_is_the_dashboards_tests() {
        let raw = "SELECT bucket AS time FROM team_metrics WHERE team = '${team}' AND grain = '$grain' \
                   AND window = 'last_${period:raw}' AND $__timeFilter(bucket) AND $__timeInterval(minute) = 0";
        let got = grafana_sql(
            raw,
            &[("team", "payments"), ("grain", "hour"), ("period", "24h")],
            1000,
            2000,
            60,
        )
        .unwrap();
        assert_eq!(
            got,
            "SELECT bucket AS time FROM team_metrics WHERE team = 'payments' AND grain = 'hour' \
                   AND window = 'last_24h' AND bucket >= toDateTime(1000) AND bucket <= toDateTime(2000) \
                   AND toStartOfInterval(toDateTime(minute), INTERVAL 60 second) = 0"
        );
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_513), (2026, 3, 1));
        assert_eq!(
            grafana_sql("$__dateFilter(d)", &[], 1_772_323_200, 1_772_409_600, 1).unwrap(),
            "d >= toDate('2026-03-01') AND d <= toDate('2026-03-02')"
        );
        assert!(grafana_sql("$__nope(x)", &[], 0, 1, 1)
            .unwrap_err()
            .contains("unknown macro"));
        assert!(grafana_sql("$team", &[], 0, 1, 1)
            .unwrap_err()
            .contains("no value"));
    }

    #[test]
    fn history_rows_derive_from_their_number() {
        let h = History {
            total: 10,
            from: 1000,
            span: 86400,
            team_slots: vec!["payments".into(), "o'neil".into()],
        };
        let sql = h.base_sql();
        assert!(sql.contains("toUInt64(1000) + intDiv(n * toUInt64(86340), toUInt64(10))"));
        assert!(sql.contains("['payments', 'o\\'neil']"));
        assert!(sql.ends_with("FROM (SELECT number + ? AS n FROM numbers(?))"));
    }

    #[test]
    fn native_copy_statements() {
        let c = NativeCopy::new("b1a", RawTable::Ratings, "rating_id, score");
        assert_eq!(
            c.export,
            "SELECT rating_id, score FROM b1a.ratings FORMAT Native"
        );
        assert_eq!(
            c.import,
            "INSERT INTO b1a.ratings (rating_id, score) FORMAT Native"
        );
    }
}
