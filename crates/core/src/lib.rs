//! Shared foundation of backhaul: the job spec, the chunk model, the error type with its retry
//! class, the connector traits every source and destination implements, row checksums, the portable
//! chunk fingerprint and the proofs built from them.
//!
//! Every other crate depends on this one; it depends on no other backhaul crate.

pub mod changes;
pub mod checksum;
pub mod chunking;
pub mod connector;
pub mod cursor;
pub mod dedup;
pub mod deletes;
pub mod discover;
pub mod error;
pub mod fidelity;
pub mod file_format;
pub mod fingerprint;
pub mod limit;
pub mod localfile;
pub mod notes;
pub mod pipeline_jobs;
pub mod profile;
pub mod proof;
pub mod ratelimit;
pub mod registry;
pub mod schema;
pub mod secret;
pub mod spec;
pub mod sqlstate;
pub mod stage;
pub mod units;

pub use error::{Error, ErrorClass, Result};
