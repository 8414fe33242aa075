//! The statements of `feedback bench` (and the drill's clean-up): row counts of a lane's
//! database, dropping it, and the Native export/import that measures clickhouse-client's
//! insert speed against the sink's.

use serde::Deserialize;

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

#[cfg(test)]
mod tests {
    use super::*;

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
