//! What the sink has landed, read back from ClickHouse: the basis of exactly-once landing.
//!
//! Every row the sink writes carries the coordinates of the Kafka message it came from
//! (`kafka_topic`, `kafka_partition`, `kafka_offset`). After each batch the sink records, in
//! `sink_progress`, the last offset of the batch per partition: every message up to it is
//! landed in every table. Beyond it, a batch may have landed in some tables and not in
//! others (a crash between INSERTs, an INSERT whose response was lost): the exact set of
//! offsets present in each table above the progress mark says which.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::{Ch, Error};

/// What is landed for one (topic, partition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Landed {
    /// Every message with an offset up to this one is landed in every table (-1: none known).
    pub progress: i64,
    /// Offsets above `progress` present in each table, by table name.
    pub above: HashMap<String, HashSet<i64>>,
    /// Every event up to this offset is counted in the rollups (-1: none; see
    /// [`crate::rollups`]). Read with the rest only when the caller asks for rollups.
    pub rolled: i64,
}

impl Landed {
    /// True when the message at `offset` already has its row in `table`.
    pub fn contains(&self, table: &str, offset: i64) -> bool {
        offset <= self.progress || self.above.get(table).is_some_and(|s| s.contains(&offset))
    }
}

/// An INSERT of the sink still running on the server.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningInsert {
    pub query_id: String,
    pub elapsed_secs: f64,
}

pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `(topic, partition), ...` for `(a, b) IN (...)`: the topics quoted, the partitions as
/// numbers or, with `partition_as_string` (the rollups' marks keep them in `dim_value`), as
/// strings.
pub(crate) fn partition_keys(partitions: &[(String, i32)], partition_as_string: bool) -> String {
    partitions
        .iter()
        .map(|(t, p)| {
            if partition_as_string {
                format!("({}, '{p}')", quote(t))
            } else {
                format!("({}, {p})", quote(t))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Ch {
    /// Reads what is landed for `partitions`, looking at `tables` for each topic.
    pub async fn landed(
        &self,
        partitions: &[(String, i32)],
        tables: impl Fn(&str) -> Vec<&'static str>,
    ) -> Result<HashMap<(String, i32), Landed>, Error> {
        let mut out: HashMap<(String, i32), Landed> = partitions
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    Landed {
                        progress: -1,
                        above: HashMap::new(),
                        rolled: -1,
                    },
                )
            })
            .collect();
        if partitions.is_empty() {
            return Ok(out);
        }
        let keys = partition_keys(partitions, false);
        #[derive(clickhouse::Row, Deserialize)]
        struct P {
            topic: String,
            partition: i32,
            offset: i64,
        }
        let progress: Vec<P> = self
            .fetch(&format!(
                "SELECT topic, partition, max(offset) AS offset FROM {{db}}.sink_progress \
                 WHERE (topic, partition) IN ({keys}) GROUP BY topic, partition"
            ))
            .await?;
        for p in progress {
            if let Some(l) = out.get_mut(&(p.topic, p.partition)) {
                l.progress = p.offset;
            }
        }
        let mut by_table: HashMap<&'static str, Vec<(String, i32)>> = HashMap::new();
        for (t, p) in partitions {
            for table in tables(t) {
                by_table.entry(table).or_default().push((t.clone(), *p));
            }
        }
        for (table, parts) in by_table {
            let min = parts.iter().map(|k| out[k].progress).min().unwrap_or(-1);
            let keys = partition_keys(&parts, false);
            #[derive(clickhouse::Row, Deserialize)]
            struct O {
                kafka_topic: String,
                kafka_partition: i32,
                kafka_offset: i64,
            }
            let rows: Vec<O> = self
                .fetch(&format!(
                    "SELECT kafka_topic, kafka_partition, kafka_offset FROM {{db}}.{table} \
                     PREWHERE kafka_offset > {min} WHERE (kafka_topic, kafka_partition) IN ({keys})"
                ))
                .await?;
            for o in rows {
                if let Some(l) = out.get_mut(&(o.kafka_topic, o.kafka_partition)) {
                    if o.kafka_offset > l.progress {
                        l.above
                            .entry(table.to_string())
                            .or_default()
                            .insert(o.kafka_offset);
                    }
                }
            }
        }
        Ok(out)
    }

    /// INSERTs running on the server whose `query_id` starts with `prefix`.
    pub async fn running_inserts(&self, prefix: &str) -> Result<Vec<RunningInsert>, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct R {
            query_id: String,
            elapsed: f64,
        }
        let rows: Vec<R> = self
            .fetch(&format!(
                "SELECT query_id, elapsed FROM system.processes WHERE startsWith(query_id, {})",
                quote(prefix)
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| RunningInsert {
                query_id: r.query_id,
                elapsed_secs: r.elapsed,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landed_is_everything_up_to_the_mark_and_the_exact_offsets_above_it() {
        let l = Landed {
            progress: 10,
            above: HashMap::from([
                ("ratings".to_string(), HashSet::from([12, 15])),
                ("dead_letters".to_string(), HashSet::from([11])),
            ]),
            rolled: 10,
        };
        assert!(l.contains("interactions", 0));
        assert!(l.contains("interactions", 10));
        assert!(!l.contains("interactions", 11));
        assert!(l.contains("ratings", 12));
        assert!(!l.contains("ratings", 13));
        assert!(l.contains("ratings", 15));
        assert!(l.contains("dead_letters", 11));
        assert!(!l.contains("dead_letters", 12));
        let none = Landed {
            progress: -1,
            above: HashMap::new(),
            rolled: -1,
        };
        assert!(!none.contains("ratings", 0));
    }
}
