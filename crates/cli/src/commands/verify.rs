//! `backhaul verify`.

use anyhow::Result;
use backhaul_coordinator::{ChunkState, StateStore};
use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::common::{self, open_state};
use crate::output::{self, group};
use crate::{Globals, OutputFormat};

/// Arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The job to verify.
    job: String,
}

/// One problem verification found.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// The chunk.
    pub chunk: u64,
    /// `not_committed`, `absent_at_destination` or `mismatch`.
    pub problem: &'static str,
    /// Details.
    pub detail: String,
}

/// What verification found.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// Chunks checked.
    pub chunks: u64,
    /// Rows re-read from the destination.
    pub rows: u64,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

/// Re-reads every chunk at the destination and compares rows and checksums with what was
/// extracted.
pub async fn verify_job(store: &dyn StateStore, job_id: &str) -> Result<Verification> {
    let job = common::job(store, job_id).await?;
    let destination = common::job_destination(&job)?;
    let chunks = store.chunks(job_id).await?;
    let mut out = Verification {
        chunks: chunks.len() as u64,
        rows: 0,
        problems: Vec::new(),
    };
    for c in chunks {
        let (ChunkState::Committed, Some(extracted)) = (c.state, c.extracted) else {
            out.problems.push(Problem {
                chunk: c.chunk_id,
                problem: "not_committed",
                detail: format!("chunk is {:?}", c.state).to_lowercase(),
            });
            continue;
        };
        match destination.read_back(job_id, c.chunk_id).await? {
            None => out.problems.push(Problem {
                chunk: c.chunk_id,
                problem: "absent_at_destination",
                detail: "no committed data for this chunk".into(),
            }),
            Some(found) if found != extracted => out.problems.push(Problem {
                chunk: c.chunk_id,
                problem: "mismatch",
                detail: format!(
                    "extracted {} rows (checksum {:016x}), destination has {} rows (checksum {:016x})",
                    extracted.rows, extracted.checksum, found.rows, found.checksum
                ),
            }),
            Some(found) => out.rows += found.rows,
        }
    }
    Ok(out)
}

/// Runs verification and prints it.
pub async fn run(globals: &Globals, args: VerifyArgs) -> Result<u8> {
    let store = open_state(globals).await?;
    let v = verify_job(store.as_ref(), &args.job).await?;
    print(globals, &args.job, &v);
    Ok(if v.problems.is_empty() {
        0
    } else {
        crate::exit::VERIFY_MISMATCH
    })
}

/// Prints a verification.
pub fn print(globals: &Globals, job_id: &str, v: &Verification) {
    match globals.output {
        OutputFormat::Json => {
            output::print_json(&json!({ "job": job_id, "verified": v.problems.is_empty(), "result": v }))
        }
        OutputFormat::Text => {
            if v.problems.is_empty() {
                println!(
                    "verified {job_id}: {} chunks, {} rows re-read from the destination, every count and checksum matches",
                    v.chunks,
                    group(v.rows)
                );
            } else {
                println!(
                    "verification of {job_id} FAILED: {} of {} chunks have problems",
                    v.problems.len(),
                    v.chunks
                );
                for p in &v.problems {
                    println!("  chunk {:>6}  {:<22} {}", p.chunk, p.problem, p.detail);
                }
            }
        }
    }
}
