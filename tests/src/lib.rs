//! The conformance suite every backhaul source and destination must pass.
//!
//! Connector crates call it from their own tests against a real instance of the system they
//! talk to:
//!
//! - [`source::check_source`] runs a [`Source`](backhaul_core::connector::Source) through its
//!   contract over one cursor range: description, idempotent preparation, density statistics,
//!   exact range semantics of `extract` (half-open bounds, no NULL cursors, batch size and
//!   schema), loss- and duplicate-free splitting, determinism, empty ranges and early drop.
//! - [`destination::check_destination`] runs a
//!   [`Destination`](backhaul_core::connector::Destination) through its contract: ownership and
//!   schema checks in `prepare`, atomic replacement by a newer attempt, fencing of stale
//!   attempts, proofs at the declared level, refusal of files that lack, duplicate or change
//!   rows ([`corrupt`]), damage after commit through a [`corrupt::TamperCommitted`] hook,
//!   independent and empty chunks, and state that survives a fresh handle (a restarted
//!   process).
//!
//! - [`dedup::check_dedup`] runs a destination that supports `dedup` syncs through
//!   replace-by-key: one row per key, the newest by cursor, after every commit, with every
//!   chunk's proof still covering what it wrote.
//!
//! - [`stage_conformance::check_stage`] runs a [`Stage`](backhaul_core::stage::Stage) through
//!   what workers and destinations rely on: put, multipart upload, an aborted upload leaving
//!   nothing visible, list, delete and file URLs.
//!
//! All return every violated rule at once in a [`Violations`] value whose `Debug` output is a
//! readable list, so `check_source(..).await.unwrap()` fails a test with the whole story:
//!
//! ```text
//! source conformance: 1 violation:
//!   [split] splitting [2023-03-14T06:30:00Z, 2023-03-17T06:30:00Z) at ... lost or duplicated rows: ...
//! ```
//!
//! [`stage_batches`] writes batches into a stage the way workers do (zstd Parquet part files at
//! [`Stage::part_path`](backhaul_core::stage::Stage::part_path)), and [`evidence`] measures them
//! the way workers' writers do, for destination tests of any kind.

pub mod corrupt;
pub mod dedup;
pub mod destination;
mod report;
pub mod source;
mod stage;
pub mod stage_conformance;
mod values;

pub use report::{Violation, Violations};
pub use stage::{evidence, stage_batches, summarize};
pub use values::cursor_values;
