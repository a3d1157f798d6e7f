//! Test harness shared by the crates whose tests need real servers: PostgreSQL, MariaDB, moto
//! for S3, fakesnow for the Snowflake protocol, bqemulator for BigQuery and localstripe for the
//! HTTP source. Each server is a private instance started from installed binaries (Debian
//! packages; moto, fakesnow, bqemulator and localstripe from the venvs `scripts/ensure-servers`
//! makes), on a port the OS picked, and stopped when its handle drops. No test depends on a server already running.

pub mod bqemulator;
pub mod fakesnow;
pub mod localstripe;
pub mod mariadb;
pub mod moto;
pub mod postgres;
mod tool;
