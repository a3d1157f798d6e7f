//! `backhaul verify`.

use anyhow::Result;
use backhaul_coordinator::{ChunkState, StateStore, current_chunks};
use backhaul_core::fingerprint::Difference;
use backhaul_core::proof::ProofLevel;
use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::common::{self, open_state};
use crate::output::{self, group};
use crate::{Globals, OutputFormat};

/// Arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The job to verify, or a pipeline spec file (every table's job is verified).
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
    /// For a mismatch, every difference: the column (none for the chunk's rows and checksum),
    /// the measure and both values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<Difference>,
}

/// What verification found.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// Chunks checked.
    pub chunks: u64,
    /// Rows re-measured at the destination.
    pub rows: u64,
    /// Chunks that passed, by the level their proof was checked at, strongest first.
    pub proved: Vec<(ProofLevel, u64)>,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

/// Re-measures every committed chunk's proof at the destination (`read_back`) and checks it
/// against the evidence the writer recorded, with the one rule ([`ChunkProof::check`]). A
/// `full_refresh` job is checked on its current version only (`current_chunks`).
///
/// [`ChunkProof::check`]: backhaul_core::proof::ChunkProof::check
pub async fn verify_job(store: &dyn StateStore, job_id: &str) -> Result<Verification> {
    let job = common::job(store, job_id).await?;
    let checked = common::job_spec(&job)?;
    let destination = checked.destination.build()?;
    let mode = checked.validated.sync.as_ref().map(|s| s.mode);
    let chunks = current_chunks(mode, store.chunks(job_id).await?);
    let mut out = Verification {
        chunks: chunks.len() as u64,
        rows: 0,
        proved: Vec::new(),
        problems: Vec::new(),
    };
    for c in chunks {
        let (ChunkState::Committed, Some(extracted)) = (c.state, &c.extracted) else {
            out.problems.push(Problem {
                chunk: c.chunk_id,
                problem: "not_committed",
                detail: format!("chunk is {:?}", c.state).to_lowercase(),
                differences: Vec::new(),
            });
            continue;
        };
        match destination.read_back(job_id, c.chunk_id).await? {
            None => out.problems.push(Problem {
                chunk: c.chunk_id,
                problem: "absent_at_destination",
                detail: "no committed data for this chunk".into(),
                differences: Vec::new(),
            }),
            Some(found) => match found.check(extracted) {
                Ok(()) => {
                    out.rows += found.rows;
                    match out.proved.iter_mut().find(|(level, _)| *level == found.level) {
                        Some((_, n)) => *n += 1,
                        None => out.proved.push((found.level, 1)),
                    }
                }
                Err(mismatch) => out.problems.push(Problem {
                    chunk: c.chunk_id,
                    problem: "mismatch",
                    detail: mismatch.to_string(),
                    differences: mismatch.differences,
                }),
            },
        }
    }
    out.proved.sort_by_key(|(level, _)| *level as u8);
    Ok(out)
}

/// Runs verification and prints it.
pub async fn run(globals: &Globals, args: VerifyArgs) -> Result<u8> {
    let store = open_state(globals).await?;
    if let Some(name) = crate::pipeline::pipeline_name(&args.job)? {
        return verify_pipeline(globals, store.as_ref(), &name).await;
    }
    let v = verify_job(store.as_ref(), &args.job).await?;
    print(globals, &args.job, &v);
    Ok(exit_code([&v]))
}

/// Verifies every stored job of a pipeline; one failing table fails the command, after all
/// were verified.
async fn verify_pipeline(globals: &Globals, store: &dyn StateStore, name: &str) -> Result<u8> {
    let jobs = crate::pipeline::stored_tables(store, name, None).await?;
    let mut verified = Vec::new();
    for job in &jobs {
        verified.push(verify_job(store, job).await?);
    }
    match globals.output {
        OutputFormat::Json => output::print_json(&json!({
            "pipeline": name,
            "verified": verified.iter().all(|v| v.problems.is_empty()),
            "jobs": jobs.iter().zip(&verified).map(|(job, v)| to_json(job, v)).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            for (job, v) in jobs.iter().zip(&verified) {
                print(globals, job, v);
            }
            let failed = verified.iter().filter(|v| !v.problems.is_empty()).count();
            println!(
                "pipeline {name}: {} of {} tables verified",
                jobs.len() - failed,
                jobs.len()
            );
        }
    }
    Ok(exit_code(&verified))
}

/// 0, or the mismatch code when any verification found a problem.
fn exit_code<'a>(verified: impl IntoIterator<Item = &'a Verification>) -> u8 {
    if verified.into_iter().all(|v| v.problems.is_empty()) {
        0
    } else {
        crate::exit::VERIFY_MISMATCH
    }
}

/// What the passing chunks proved, e.g. `12 chunks: rows and row checksum; 3 chunks: rows only`.
fn proved_text(v: &Verification) -> String {
    if v.proved.is_empty() {
        return "nothing (no chunk passed)".into();
    }
    v.proved
        .iter()
        .map(|(level, n)| format!("{n} chunks: {}", level.proves()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Prints a verification.
pub fn print(globals: &Globals, job_id: &str, v: &Verification) {
    match globals.output {
        OutputFormat::Json => output::print_json(&to_json(job_id, v)),
        OutputFormat::Text => {
            if v.problems.is_empty() {
                println!(
                    "verified {job_id}: {} chunks, {} rows re-measured at the destination; proved {}",
                    v.chunks,
                    group(v.rows),
                    proved_text(v)
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
                if !v.proved.is_empty() {
                    println!("  the other chunks proved {}", proved_text(v));
                }
            }
        }
    }
}

/// A verification in `--output json`.
fn to_json(job_id: &str, v: &Verification) -> serde_json::Value {
    json!({
        "job": job_id,
        "verified": v.problems.is_empty(),
        "result": {
            "chunks": v.chunks,
            "rows": v.rows,
            "proved": v.proved.iter().map(|(level, n)| json!({ "proof": level, "proves": level.proves(), "chunks": n })).collect::<Vec<_>>(),
            "problems": v.problems,
        },
    })
}
