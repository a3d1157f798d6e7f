//! The PostgreSQL source against private servers (crates/testkit): type round trips, planning
//! on skewed tables, bad input, the server going away mid-chunk, TLS.

mod bad_input;
mod blockscan;
mod failures;
mod planning;
mod tls;
mod types;
mod util;
