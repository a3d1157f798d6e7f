//! End-to-end tests of the `backhaul` binary: they spawn it as a user would.

mod airbyte;
mod auth;
mod bad_input;
mod bigquery;
mod cluster;
mod cost;
mod distributed;
mod flight;
mod http;
mod kill_resume;
mod logs;
mod mysql;
mod plan;
mod postgres;
mod rate_limit_pool;
mod replay;
mod s3_stage;
mod schedule;
mod snowflake;
mod status_page;
mod sync;
mod sync_cursor;
mod sync_mariadb;
mod transient;
mod util;
mod verify;
