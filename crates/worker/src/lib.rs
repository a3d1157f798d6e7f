//! The backhaul worker: leases chunks from a coordinator and runs each one end to end —
//! extract from the source, encode zstd Parquet off the IO runtime, stage the files, commit
//! them at the destination, and report the verified output.
//!
//! It never depends on the coordinator crate: the two meet only on the wire.

pub mod budget;
pub mod encoding;
pub mod error;
pub mod flight;
pub mod http;
pub mod job_cache;
pub mod metrics;
pub mod runner;
pub mod split;
pub mod worker;
pub mod writer;

pub use budget::CoordinatorBudget;
pub use error::{Result, WorkerError};
pub use metrics::WorkerMetrics;
pub use runner::{ChunkOutcome, ChunkTask, JobContext};
pub use worker::{Shutdown, Worker, WorkerConfig};
pub use writer::{PartWriterConfig, SpooledPart};
