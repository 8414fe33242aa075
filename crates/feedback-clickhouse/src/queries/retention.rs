//! The statements of `feedback retention`: raw rows expire, rollups stay. Whole months of
//! raw rows are dropped by partition (the raw tables are partitioned by
//! `toYYYYMM(occurred_at)`; works on 18.16, which has no TTL), and on servers with TTL the
//! tables also get `TTL occurred_at + INTERVAL n DAY`. The tables are a closed set.

use serde::Deserialize;

use crate::{Ch, Error};

/// The raw tables retention applies to, and the tables filled from them that expire with
/// them: `interaction_context` (migration 8) and `rating_comments` (migration 9, which holds
/// comment text); never `rollups`, never `dead_letters`, which has its own TTL where
/// supported.
pub const RAW_TABLES: [&str; 4] = [
    "interactions",
    "ratings",
    "interaction_context",
    "rating_comments",
];

/// The tables of [`RAW_TABLES`] that hold events (the rows `retention` reports removed).
pub const EVENT_TABLES: [&str; 2] = ["interactions", "ratings"];

/// One month partition of a raw table.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct MonthPartition {
    pub table: String,
    /// `YYYYMM`.
    pub partition: String,
    pub rows: u64,
}

/// The active month partitions of the raw tables, oldest first.
pub async fn raw_partitions(ch: &Ch) -> Result<Vec<MonthPartition>, Error> {
    ch.fetch_query(
        ch.query(&format!(
            "SELECT table, partition, sum(rows) AS rows FROM system.parts \
                 WHERE database = ? AND table IN ('{}') AND active \
                 GROUP BY table, partition ORDER BY partition, table",
            RAW_TABLES.join("', '")
        ))
        .bind(ch.database()),
    )
    .await
}

/// Drops one month of a raw table. `partition` must be a `YYYYMM` of [`raw_partitions`].
pub async fn drop_month(ch: &Ch, table: &str, partition: &str) -> Result<(), Error> {
    assert!(RAW_TABLES.contains(&table), "not a raw table: {table}");
    assert!(
        partition.len() == 6 && partition.bytes().all(|b| b.is_ascii_digit()),
        "not a month partition: {partition}"
    );
    ch.execute(&format!(
        "ALTER TABLE {{db}}.{table} DROP PARTITION {partition}"
    ))
    .await
}

/// Sets the raw table's TTL (servers 19.6+).
pub async fn set_ttl(ch: &Ch, table: &str, days: u32) -> Result<(), Error> {
    assert!(RAW_TABLES.contains(&table), "not a raw table: {table}");
    ch.execute(&format!(
        "ALTER TABLE {{db}}.{table} MODIFY TTL occurred_at + INTERVAL {days} DAY"
    ))
    .await
}
