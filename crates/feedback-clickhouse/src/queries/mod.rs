//! Every read statement of the board, `feedback watch` and `feedback probe`, each with its
//! typed rows, as async functions taking a [`Ch`](crate::Ch). Callers keep the presentation
//! and the logic; they neither write SQL nor touch the `clickhouse` crate. The `metric`
//! column decodes into [`feedback_events::Metric`]: an unknown value is an error, not a row.

pub mod board;
pub mod probe;
pub mod watch;
