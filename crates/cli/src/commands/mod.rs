//! One module per subcommand.

pub mod backfill;
pub mod common;
pub mod cost;
pub mod demo;
pub mod plan;
pub mod profile;
pub mod query;
pub mod replay;
pub mod status;
pub mod verify;
