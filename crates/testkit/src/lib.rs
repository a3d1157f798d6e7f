//! Test harness shared by the crates whose tests need real servers. Each server is a private
//! instance started from the distribution's binaries in a temporary directory, on a port the OS
//! picked, and stopped when its handle drops. No test depends on a server already running.

pub mod mariadb;
pub mod postgres;
