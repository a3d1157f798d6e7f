//! The backhaul coordinator: plans a job into chunks, keeps every job, chunk, attempt, lease
//! and output durably (in an embedded SQLite database by default, or in PostgreSQL), and hands
//! chunks to workers over the tonic protocol in `proto/backhaul/v1`.
//!
//! It never depends on the worker crate: the two meet only on the wire.

pub mod alerts;
pub mod breakers;
pub mod checks;
pub mod clock;
pub mod deletes;
pub mod error;
pub mod http;
pub mod metrics;
pub mod page;
mod pg_connect;
pub mod pg_store;
pub mod plan;
pub mod pools;
pub mod schedule;
pub mod service;
pub mod split;
pub mod state;
pub mod store;
pub mod sync;

pub use error::{CoordinatorError, Result};
pub use metrics::CoordinatorMetrics;
pub use pg_store::PgStore;
pub use plan::{JobPlan, PlanLoad, SourcePlan, plan_job, plan_job_at, plan_source, submit_spec};
pub use pools::RatePools;
pub use schedule::{RunLauncher, ScheduleRow, ScheduleStore, Scheduler, SchedulerHandle, SubmitLauncher};
pub use service::{CoordinatorService, RetryPolicy, ServeOptions, serve};
pub use state::{StateLocation, StateStore};
pub use store::{AttemptRow, ChunkRow, ChunkState, Extension, JobRow, JobSummary, Store, Submitted, now_us};
pub use sync::{SyncOutcome, SyncPlanned, current_chunks, sync_spec};
