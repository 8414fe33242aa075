//! Ownership as code and the attribution engine.
//!
//! Architecture invariant: nothing here touches the network or a clock; the only I/O is
//! [`Ownership::load_dir`] reading the ownership files. The engine is driven by the
//! attributor binary and tested alone; its state is made durable by the caller writing
//! [`engine::Change`] records (encoded by [`state`]) to a compacted changelog topic.

mod files;

pub mod engine;
pub mod explain;
pub mod state;
pub use engine::{Change, Engine, EngineStats, Outcome};
pub use files::{
    Claim, Diagnostic, Matcher, Ownership, OwnershipError, Severity, Subject, Team, CLAIM_FIELDS,
};
