//! End-to-end tests of the `backhaul` binary: they spawn it as a user would.

mod auth;
mod bad_input;
mod bigquery;
mod cluster;
mod cost;
mod distributed;
mod flight;
mod kill_resume;
mod logs;
mod mysql;
mod plan;
mod postgres;
mod replay;
mod s3_stage;
mod snowflake;
mod status_page;
mod sync;
mod transient;
mod util;
mod verify;
