//! End-to-end tests of the `backhaul` binary: they spawn it as a user would.

mod bad_input;
mod cost;
mod kill_resume;
mod mysql;
mod postgres;
mod replay;
mod transient;
mod util;
