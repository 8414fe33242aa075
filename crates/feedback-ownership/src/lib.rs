//! Ownership as code and the attribution engine.
//!
//! Architecture invariant: nothing here touches the network or a clock; the only I/O is
//! [`Ownership::load_dir`] reading the ownership files. The engine is driven by the
//! attributor binary and tested alone.

mod files;

pub mod engine;
pub use engine::{Engine, EngineStats, Outcome};
pub use files::{Claim, Diagnostic, Matcher, Ownership, Severity, Team};
