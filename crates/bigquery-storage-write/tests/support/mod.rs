//! Shared pieces of this crate's integration tests.
#![allow(dead_code)]

pub mod bqemulator;
pub mod fake_server;
