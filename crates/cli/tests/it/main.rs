//! End-to-end tests of the `backhaul` binary: they spawn it as a user would.

mod bad_input;
mod kill_resume;
mod postgres;
mod replay;
mod transient;
mod util;
