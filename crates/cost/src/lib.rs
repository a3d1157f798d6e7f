//! Cost planner (issue 4): what a backfill and its steady state will cost, before a source is
//! enabled.
//!
//! - [`prices`]: versioned price tables (`cost-models/*.toml`) and user overlays; every number
//!   has a validity period, a unit, a confidence label and a source.
//! - [`money`]: exact decimals and tier arithmetic (graduated, volume, free allowances,
//!   minimums).
//! - [`config`]: the cost config (`--config cost.toml`): profile options and the plans compared.
//! - [`profile`] and [`profiler`]: per-table measurements (rows, bytes per row as zstd Parquet
//!   and as Airbyte JSON, change activity) taken from a source and saved for offline estimates.
//! - [`mar`]: monthly active rows from change activity.
//! - [`estimate`] and [`report`]: per-table and total costs for the backfill month and a steady
//!   month, each line citing its price rows; text, JSON and HTML output.

pub mod config;
pub mod error;
pub mod estimate;
pub mod mar;
pub mod money;
pub mod prices;
pub mod profile;
pub mod profiler;
pub mod report;
pub mod units;

pub use error::{CostError, Result};
