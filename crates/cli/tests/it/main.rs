//! End-to-end tests of the `backhaul` binary: they spawn it as a user would.

mod bad_input;
mod cost;
mod kill_resume;
mod postgres;
mod mysql;
mod replay;
mod transient;
mod util;
