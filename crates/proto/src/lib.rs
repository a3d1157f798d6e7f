//! Generated code for the backhaul control-plane protocol (`proto/backhaul/v1`).
//!
//! The `.proto` files are the source of truth; this crate only compiles them.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("backhaul.v1");
}
