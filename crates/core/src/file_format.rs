//! The files every worker writes: zstd Parquet. Settings that more than one crate must agree
//! on live here (the worker writes with them, the cost profiler estimates sizes with them).

/// zstd level of every Parquet page. Level 1 encodes a chunk with about 8% less worker CPU
/// than level 3 for files about 3% larger (TPC-H lineitem, docs/benchmarks.md, "Parquet
/// writer settings"): staged files are loaded and deleted, and a loader on 2 cores is bound by
/// CPU, not by bytes.
pub const ZSTD_LEVEL: i32 = 1;
