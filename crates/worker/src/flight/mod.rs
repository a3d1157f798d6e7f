//! The worker's data plane: Arrow Flight (`proto/backhaul/v1/data_plane.proto`).
//!
//! Workers read sources from inside the network and send only Arrow batches, so callers need
//! neither a source's credentials nor its network path, only a worker's Flight endpoint:
//!
//! - `DoGet` on a preview ticket (issued by the coordinator) streams the first rows of a
//!   stored job's chunk (`backhaul preview`);
//! - `DoGet` on an extract ticket streams every row of a source range, and `DoAction`s
//!   describe, prepare, size and ask the source about change activity: the calls behind
//!   [`RemoteSource`], with which `backhaul profile --coordinator` profiles a table on a worker.
//!
//! The server is [`server`], the caller's side [`client`], and both speak through [`wire`].

pub mod client;
pub mod server;
pub mod wire;

pub use client::{DataPlaneClient, RemoteSource};
pub use server::{DataPlaneService, advertised_url, serve};
