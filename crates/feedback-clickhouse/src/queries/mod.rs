//! Every SQL statement of the services and tools outside the migrations, as typed
//! functions on [`crate::Ch`]: callers never write SQL nor use the `clickhouse` crate.

pub mod bench;
pub mod erase;
pub mod reconcile;
