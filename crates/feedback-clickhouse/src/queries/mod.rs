//! Every SQL statement of the services and tools outside the migrations, with its typed rows,
//! as async functions taking a [`Ch`](crate::Ch), one module per reader. Callers keep the
//! presentation and the logic; they neither write SQL nor touch the `clickhouse` crate. The
//! `metric` column decodes into [`feedback_events::Metric`]: an unknown value is an error, not
//! a row.

pub mod bench;
pub mod board;
pub mod erase;
pub mod probe;
pub mod reconcile;
pub mod retention;
pub mod watch;
