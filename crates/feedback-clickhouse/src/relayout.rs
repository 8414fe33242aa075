//! A new layout (ordering key, index granularity) for a table of rows by `grain` and
//! `bucket` (the rollups) that holds data: ClickHouse
//! cannot change either in place (18.16 cannot; current versions only append key columns),
//! so the table is copied whole into one of the new layout and swapped in.
//!
//! The protocol, for a table that writers (the sinks, `rollups rebuild`) may be using:
//! 1. `{table}_relayout` is created from the target `CREATE`; when the server renders its
//!    engine like the table's, the layout is already the target one: nothing to do.
//! 2. `{table}` is renamed to `{table}_before_relayout`. From here on every INSERT (and every
//!    read of the sinks' marks) into `{table}` fails with "unknown table": the writers'
//!    retries hold their batches (Kafka keeps the backlog) until the table is back. The
//!    INSERTs that were running at the rename are waited for: after it nothing writes into
//!    the renamed table, so the copy is a complete and final picture of it.
//! 3. The renamed table is copied into `{table}_relayout` range by range (grain and day,
//!    each range pruned by the old key), with progress; the sums of every integer column
//!    per grain are compared (they are invariant under the merges of a SummingMergeTree).
//! 4. `{table}_relayout` is renamed to `{table}`: the writers' next retry reads the marks
//!    from the complete copy and goes on. The old table is dropped.
//!
//! Every step can be interrupted and the migration run again: with the renamed table
//! present and `{table}` absent it copies again from step 3; with both present (stopped
//! between 4 and the drop) it drops the old table.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{Ch, Error};

/// What a relayout did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relayout {
    /// Rows copied (0 when the table already had the layout).
    pub rows: u64,
    /// Whether the table was copied and swapped (or an interrupted swap finished).
    pub changed: bool,
}

/// Longest wait for the INSERTs still running into a table just renamed away.
const WRITES_WAIT: Duration = Duration::from_secs(120);

/// Rows per INSERT of the copy, at most (more when one day of a grain holds more).
const CHUNK_ROWS: u64 = 4_000_000;

impl Ch {
    /// Brings `{db}.table` to the layout of `create` (a `CREATE TABLE IF NOT EXISTS
    /// {db}.table (` statement), as described in the module documentation. `progress` gets
    /// one line per step and about one per two seconds of copying.
    pub async fn relayout(
        &self,
        table: &str,
        create: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Relayout, Error> {
        let next = format!("{table}_relayout");
        let old = format!("{table}_before_relayout");
        let named = format!("{{db}}.{table} (");
        if !create.contains(&named) {
            return Err(self.migration_error(format!(
                "the target layout of {table} must be a CREATE statement of {{db}}.{table}: a bug in the migrations"
            )));
        }
        let create_as = |name: &str| create.replacen(&named, &format!("{{db}}.{name} ("), 1);
        if self.table_exists(&old).await? {
            if self.table_exists(table).await? {
                // Stopped after the swap, before the old table was dropped.
                self.execute(&format!("DROP TABLE IF EXISTS {{db}}.{old}"))
                    .await?;
                progress(&format!(
                    "relayout {table}: an earlier run had swapped the new layout in; dropped {old}"
                ));
                return Ok(Relayout {
                    rows: 0,
                    changed: true,
                });
            }
            progress(&format!(
                "relayout {table}: {old} is there and {table} is not (an earlier run stopped during the copy): copying again"
            ));
        } else {
            if !self.table_exists(table).await? {
                return Err(self.migration_error(format!(
                    "table {}.{table} is missing: the migrations that create it must have run",
                    self.db
                )));
            }
            self.execute(&format!("DROP TABLE IF EXISTS {{db}}.{next}"))
                .await?;
            self.execute(&create_as(&next)).await?;
            if self.engine_full(table).await? == self.engine_full(&next).await? {
                self.execute(&format!("DROP TABLE {{db}}.{next}")).await?;
                return Ok(Relayout::default());
            }
            progress(&format!(
                "relayout {table}: renaming it to {old} while it is copied into the new layout; writers retry until it is back, readers get errors meanwhile"
            ));
            self.execute(&format!("RENAME TABLE {{db}}.{table} TO {{db}}.{old}"))
                .await?;
        }
        self.wait_for_inserts(table, &old).await?;
        self.execute(&format!("DROP TABLE IF EXISTS {{db}}.{next}"))
            .await?;
        self.execute(&create_as(&next)).await?;
        let rows = self.copy(&old, &next, table, progress).await?;
        let (before, after) = (self.sums(&old).await?, self.sums(&next).await?);
        if before != after {
            return Err(self.migration_error(format!(
                "relayout {table}: the copy's sums differ from {old}'s ({after:?} against {before:?}); {old} is kept and {table} stays away: run `feedback migrate` again, and report it if it recurs"
            )));
        }
        self.execute(&format!("RENAME TABLE {{db}}.{next} TO {{db}}.{table}"))
            .await?;
        self.execute(&format!("DROP TABLE {{db}}.{old}")).await?;
        progress(&format!(
            "relayout {table}: {rows} rows copied, sums equal per grain, swapped in; writers go on"
        ));
        Ok(Relayout {
            rows,
            changed: true,
        })
    }

    pub(crate) fn migration_error(&self, error: String) -> Error {
        Error::Insert {
            url: self.url.clone(),
            error,
        }
    }

    async fn table_exists(&self, table: &str) -> Result<bool, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct N {
            n: u64,
        }
        let n: Vec<N> = self
            .fetch_query(
                self.query(
                    "SELECT count() AS n FROM system.tables WHERE database = ? AND name = ?",
                )
                .bind(&self.db)
                .bind(table),
            )
            .await?;
        Ok(n.first().is_some_and(|n| n.n > 0))
    }

    /// The engine as the server renders it (ordering key, settings), for comparing layouts.
    async fn engine_full(&self, table: &str) -> Result<String, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct E {
            e: String,
        }
        let e: Vec<E> = self
            .fetch_query(
                self.query(
                    "SELECT engine_full AS e FROM system.tables WHERE database = ? AND name = ?",
                )
                .bind(&self.db)
                .bind(table),
            )
            .await?;
        Ok(e.into_iter().next().map(|e| e.e).unwrap_or_default())
    }

    /// Waits until no INSERT that names `{db}.table` runs (those that started before it
    /// was renamed to `renamed` finish into the renamed table).
    async fn wait_for_inserts(&self, table: &str, renamed: &str) -> Result<(), Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct N {
            n: u64,
        }
        let started = Instant::now();
        loop {
            let n: Vec<N> = self
                .fetch_query(
                    self.query(
                        "SELECT count() AS n FROM system.processes \
                         WHERE positionCaseInsensitive(query, 'INSERT INTO') = 1 AND position(query, ?) > 0",
                    )
                    .bind(format!("{}.{table}", self.db)),
                )
                .await?;
            if n.first().map_or(0, |n| n.n) == 0 {
                return Ok(());
            }
            if started.elapsed() > WRITES_WAIT {
                return Err(self.migration_error(format!(
                    "relayout {table}: INSERTs into {}.{table} still run {} s after it was renamed to {renamed}; \
                     it stays renamed (writers retry): run `feedback migrate` again once they have ended",
                    self.db,
                    WRITES_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Copies `from` into `to` by ranges of grain and days; returns the rows copied.
    async fn copy(
        &self,
        from: &str,
        to: &str,
        table: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<u64, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Range {
            grain: String,
            day: u32,
            rows: u64,
        }
        let ranges: Vec<Range> = self
            .fetch(&format!(
                "SELECT grain, toUInt32(toStartOfDay(bucket)) AS day, count() AS rows \
                 FROM {{db}}.{from} GROUP BY grain, day ORDER BY grain, day"
            ))
            .await?;
        // Adjacent days of a grain in one INSERT of up to CHUNK_ROWS rows: one INSERT per day
        // would make hundreds of parts faster than the merges join them (an unpartitioned
        // table refuses INSERTs at 300 parts).
        let mut chunks: Vec<(String, u32, u32, u64)> = Vec::new();
        for r in &ranges {
            match chunks.last_mut() {
                Some(c) if c.0 == r.grain && c.3 + r.rows <= CHUNK_ROWS => {
                    c.2 = r.day + 86_400;
                    c.3 += r.rows;
                }
                _ => chunks.push((r.grain.clone(), r.day, r.day + 86_400, r.rows)),
            }
        }
        let total: u64 = ranges.iter().map(|r| r.rows).sum();
        progress(&format!(
            "relayout {table}: copying {total} rows in {} INSERTs (grain and days)",
            chunks.len()
        ));
        let (started, mut shown, mut done) = (Instant::now(), Instant::now(), 0u64);
        for (i, (grain, from_day, to_day, rows)) in chunks.iter().enumerate() {
            self.execute_query(
                self.query(&format!(
                    "INSERT INTO {{db}}.{to} SELECT * FROM {{db}}.{from} \
                     WHERE grain = ? AND bucket >= toDateTime(?) AND bucket < toDateTime(?)"
                ))
                .bind(grain)
                .bind(*from_day)
                .bind(*to_day),
            )
            .await?;
            done += rows;
            if shown.elapsed() >= Duration::from_secs(2) || i + 1 == chunks.len() {
                shown = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                let left = secs * (total - done) as f64 / done.max(1) as f64;
                progress(&format!(
                    "relayout {table}: {done} of {total} rows ({}/{} INSERTs), {secs:.1} s, about {left:.0} s left",
                    i + 1,
                    chunks.len()
                ));
            }
        }
        Ok(total)
    }

    /// Per grain, the sums of every integer column: equal before and after a copy (and
    /// under a SummingMergeTree's merges), whatever the rows' order and number.
    async fn sums(&self, table: &str) -> Result<Vec<(String, String)>, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct C {
            name: String,
        }
        let cols: Vec<C> = self
            .fetch_query(
                self.query(
                    "SELECT name FROM system.columns WHERE database = ? AND table = ? \
                     AND (type LIKE 'Int%' OR type LIKE 'UInt%') ORDER BY name",
                )
                .bind(&self.db)
                .bind(table),
            )
            .await?;
        let sums: Vec<String> = cols
            .iter()
            .map(|c| format!("toString(sum(`{}`))", c.name))
            .collect();
        #[derive(clickhouse::Row, Deserialize)]
        struct S {
            grain: String,
            sums: String,
        }
        let rows: Vec<S> = self
            .fetch(&format!(
                "SELECT grain, arrayStringConcat([{}], ',') AS sums FROM {{db}}.{table} GROUP BY grain ORDER BY grain",
                sums.join(", ")
            ))
            .await?;
        Ok(rows.into_iter().map(|s| (s.grain, s.sums)).collect())
    }
}
