//! One module per subcommand.

pub mod backfill;
pub mod cancel;
pub mod checks;
pub mod common;
pub mod coordinator;
pub mod cost;
pub mod demo;
pub mod discover;
pub mod plan;
pub mod preview;
pub mod profile;
pub mod query;
pub mod remote;
pub mod replay;
pub mod schedule;
pub mod serve;
pub mod status;
pub mod submit;
pub mod sync;
pub mod verify;
pub mod worker;
