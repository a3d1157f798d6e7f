//! Test harness shared by the crates whose tests need real servers (and Airbyte's source-faker
//! connector, [`airbyte`]): PostgreSQL, MariaDB, moto for S3, fakesnow for the Snowflake
//! protocol, bqemulator for BigQuery and localstripe for the HTTP source. Each server is a
//! private instance started from installed binaries (Debian packages; moto, fakesnow,
//! bqemulator and localstripe from the venvs `scripts/ensure-servers` makes), on a port the OS
//! picked, and stopped when its handle drops. No test depends on a server already running.
//! [`rate_limited_api`] is a REST API of this project's own that enforces a rate limit and
//! injects faults, the referee of the rate-limit pool tests.

pub mod airbyte;
pub mod bqemulator;
pub mod fakesnow;
pub mod localstripe;
pub mod mariadb;
pub mod moto;
pub mod postgres;
pub mod rate_limited_api;
mod tool;
