//! Event contracts of the feedback pipeline: the event types, their Avro
//! single-object codec and the validation of the collector's JSON.
//!
//! Architecture invariant: this crate does no I/O. It is the one place that knows the
//! wire format, so producers, the attributor and the sink can never disagree on it.

pub mod codec;
pub mod json;
pub mod reference;
pub mod schema;
mod types;

pub use codec::{decode, DecodeError, Encoded, EventKind};
pub use types::*;
