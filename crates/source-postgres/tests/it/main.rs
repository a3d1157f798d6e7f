//! The PostgreSQL source against private servers (crates/testkit): type round trips, planning
//! on skewed tables, bad input, the server going away mid-chunk, TLS, sockets.

mod bad_input;
mod blockscan;
mod failures;
mod planning;
mod sockets;
mod tls;
mod types;
mod util;
