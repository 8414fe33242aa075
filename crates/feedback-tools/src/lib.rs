//! Operator tools of the `feedback` binary: `bench`, `drill`, `loadgen`, `probe`, `watch`,
//! `erase`, and `ownership check` / `explain` (`inspect`). None is a long-running service.

pub mod bench;
pub mod drill;
pub mod erase;
pub mod inspect;
pub mod loadgen;
pub mod probe;
pub mod rollups;
pub mod setup;
pub mod watch;
