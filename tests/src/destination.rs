//! The [`Destination`] contract, checked against a live destination.
//!
//! Call [`check_destination`] (or [`check_destination_with`]) with a factory of handles on one
//! fresh, never-prepared table, a stage the destination can read, and some rows of the table's
//! schema (ideally extracted from a real source, so every type the source produces makes the
//! round trip). The rows are cut into two chunks; the suite stages them with
//! [`stage_batches`] and commits them through the contract's life cycle.
//!
//! What is checked, by the check name violations carry:
//!
//! - `prepare`: succeeds and is idempotent for the same job and schema; another job id, or the
//!   same job with another schema (an extra column, a missing column, a changed type), is
//!   refused with [`Error::DestinationConflict`] and changes nothing, also after commits and
//!   from a fresh handle.
//! - `read-back`: a never-committed chunk reads back as `Ok(None)`.
//! - `commit`: chunk 0, attempt 1, staged as 2 files, commits and returns the summary of its
//!   rows; `read_back` returns the same.
//! - `replace`: attempt 2 of chunk 0 with the same rows in 3 files replaces attempt 1: the
//!   summary is unchanged, not doubled.
//! - `fencing`: a stale attempt 1 committed after attempt 2 is refused (ideally with
//!   [`Error::LeaseLost`]; another error is noted in the report) and the chunk is unchanged.
//!   The stale attempt holds only half the rows, so a commit that is refused but applied
//!   anyway shows.
//! - `verification`: a commit whose `extracted` summary does not match its files (wrong row
//!   count; right count but wrong checksum) is refused with [`Error::VerificationFailed`] and
//!   the chunk is unchanged.
//! - `independent`: chunk 1 commits on its own; both chunks read back correctly.
//! - `empty-chunk`: a chunk with no files and no rows commits and reads back as 0 rows.
//! - `restart`: a fresh handle from the factory (as after a process restart) sees every
//!   committed chunk and still refuses conflicting `prepare` calls.
//! - `input`: the rows passed in must fit the suite (at least 4 rows, one schema).

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use backhaul_core::Error;
use backhaul_core::checksum::RowSummary;
use backhaul_core::connector::{ChunkCommit, Destination, StagedFile};
use backhaul_core::cursor::CursorRange;
use backhaul_core::stage::Stage;
use futures::StreamExt;
use object_store::ObjectStoreExt;

use crate::report::{Checker, Violations};
use crate::stage::{stage_batches, summarize};
use crate::values::cursor_values;

/// How [`check_destination_with`] exercises a destination.
#[derive(Debug, Clone)]
pub struct DestinationOptions {
    /// The job that owns the table.
    pub job_id: String,
    /// A job that does not, for the conflict checks.
    pub other_job_id: String,
    /// The cursor column of the rows, if any. With it, chunks get the real cursor ranges of
    /// their rows (chunk 0 below the median cursor value, chunk 1 from it), which matters to
    /// destinations that replace a chunk by deleting its range. Without it, the rows are cut in
    /// half by position and the ranges are placeholders.
    pub cursor_column: Option<String>,
}

impl Default for DestinationOptions {
    fn default() -> Self {
        DestinationOptions {
            job_id: "conformance".into(),
            other_job_id: "conformance-other".into(),
            cursor_column: None,
        }
    }
}

/// What a passing run saw.
#[derive(Debug, Clone)]
pub struct DestinationReport {
    /// Summaries of chunk 0 and chunk 1 as committed.
    pub chunks: [RowSummary; 2],
    /// Observations that are allowed but worth knowing, e.g. the error kind a stale commit got.
    pub notes: Vec<String>,
}

/// Checks the destination made by `make` against the [`Destination`] contract with default
/// options; see the [module documentation](self). Every call of `make` must return a handle on
/// the same table, which must not exist (or not be prepared) before the call.
pub async fn check_destination(
    make: impl Fn() -> Arc<dyn Destination>,
    stage: &Stage,
    batches: Vec<RecordBatch>,
) -> Result<DestinationReport, Violations> {
    check_destination_with(make, stage, batches, &DestinationOptions::default()).await
}

/// One chunk's rows and what the suite expects of them.
struct Chunk {
    id: u64,
    range: CursorRange,
    rows: RecordBatch,
    summary: RowSummary,
}

/// Checks the destination made by `make` against the [`Destination`] contract; see the
/// [module documentation](self) and [`check_destination`].
pub async fn check_destination_with(
    make: impl Fn() -> Arc<dyn Destination>,
    stage: &Stage,
    batches: Vec<RecordBatch>,
    options: &DestinationOptions,
) -> Result<DestinationReport, Violations> {
    let mut checker = Checker::new("destination");
    let job = options.job_id.as_str();
    let (schema, chunks) = match cut_chunks(&batches, options.cursor_column.as_deref()) {
        Ok(cut) => cut,
        Err(message) => return checker.abort("input", message),
    };
    let [c0, c1] = &chunks;
    let mut notes = Vec::new();
    let run = Run {
        stage,
        job,
        schema: &schema,
    };
    let variants = schema_variants(&schema);

    let dest = make();
    if let Err(e) = dest.prepare(job, schema.clone()).await {
        return checker.abort("prepare", format!("prepare({job}) of a fresh table failed: {e}"));
    }
    if let Err(e) = dest.prepare(job, schema.clone()).await {
        checker.fail(
            "prepare",
            format!("a second prepare({job}) with the same schema failed: {e}"),
        );
    }
    check_conflicts(
        &mut checker,
        dest.as_ref(),
        options,
        &schema,
        &variants,
        "before any commit",
    )
    .await;
    if let Err(e) = dest.prepare(job, schema.clone()).await {
        checker.fail(
            "prepare",
            format!("prepare({job}) failed after refused conflicting calls: {e}"),
        );
    }

    match dest.read_back(job, c0.id).await {
        Ok(None) => {}
        Ok(Some(s)) => checker.fail(
            "read-back",
            format!("read_back of never-committed chunk {} returned {}", c0.id, show(s)),
        ),
        Err(e) => checker.fail(
            "read-back",
            format!("read_back of never-committed chunk {} failed: {e}", c0.id),
        ),
    }

    // Attempt 1 of chunk 0. Everything after depends on it, so a failure ends the run.
    let files = match run.stage(c0, 1, &c0.rows, 2).await {
        Ok(f) => f,
        Err(e) => return checker.abort("input", format!("staging chunk {} failed: {e}", c0.id)),
    };
    match dest.commit_chunk(stage, &run.commit(c0, 1, files, c0.summary)).await {
        Ok(s) => {
            checker.ensure(s == c0.summary, "commit", || {
                format!(
                    "commit of chunk {} attempt 1 returned {}, but its rows are {}",
                    c0.id,
                    show(s),
                    show(c0.summary)
                )
            });
        }
        Err(e) => {
            return checker.abort(
                "commit",
                format!(
                    "commit of chunk {} attempt 1 ({} rows in 2 files) failed: {e}",
                    c0.id, c0.summary.rows
                ),
            );
        }
    }
    expect_read_back(
        &mut checker,
        dest.as_ref(),
        job,
        c0,
        "commit",
        "after attempt 1 committed",
    )
    .await;

    // Attempt 2: same rows, another file split. A destination that appends instead of
    // replacing now holds every row twice.
    match run.stage(c0, 2, &c0.rows, 3).await {
        Err(e) => checker.fail("input", format!("staging chunk {} attempt 2 failed: {e}", c0.id)),
        Ok(files) => match dest.commit_chunk(stage, &run.commit(c0, 2, files, c0.summary)).await {
            Ok(s) => {
                checker.ensure(s == c0.summary, "replace", || {
                    format!(
                        "commit of chunk {} attempt 2 returned {}, but its rows are {}",
                        c0.id,
                        show(s),
                        show(c0.summary)
                    )
                });
            }
            Err(e) => checker.fail(
                "replace",
                format!("commit of chunk {} attempt 2 (replacing attempt 1) failed: {e}", c0.id),
            ),
        },
    }
    // Attempts after 2 are numbered from here: repairs and the verification checks.
    let mut next_attempt = 3;
    if !expect_read_back(
        &mut checker,
        dest.as_ref(),
        job,
        c0,
        "replace",
        "after attempt 2 replaced attempt 1",
    )
    .await
    {
        run.repair(&mut checker, dest.as_ref(), c0, &mut next_attempt).await?;
    }

    // A stale worker finishing attempt 1 late. Half the rows, so a commit that slipped
    // through shows in read_back even if the call returned an error.
    let half = c0.rows.slice(0, c0.rows.num_rows() / 2);
    let half_summary = summary_of(&schema, &half);
    match run.stage(c0, 1, &half, 1).await {
        Err(e) => checker.fail(
            "input",
            format!("staging stale attempt 1 of chunk {} failed: {e}", c0.id),
        ),
        Ok(files) => match dest.commit_chunk(stage, &run.commit(c0, 1, files, half_summary)).await {
            Ok(s) => checker.fail(
                "fencing",
                format!(
                    "stale attempt 1 of chunk {} was committed ({}) after attempt 2",
                    c0.id,
                    show(s)
                ),
            ),
            Err(Error::LeaseLost { .. }) => {}
            Err(e) => notes.push(format!(
                "a stale commit was refused with `{}` rather than `lease_lost`: {e}",
                e.kind()
            )),
        },
    }
    if !expect_read_back(
        &mut checker,
        dest.as_ref(),
        job,
        c0,
        "fencing",
        "after a refused stale attempt",
    )
    .await
    {
        run.repair(&mut checker, dest.as_ref(), c0, &mut next_attempt).await?;
    }

    // Claimed summaries that do not match the files. Newer attempts, so fencing cannot be
    // what refuses them.
    let wrong_rows = (half.clone(), c0.summary, "half the rows it claims");
    let wrong_sum = (
        c0.rows.clone(),
        RowSummary {
            checksum: c0.summary.checksum ^ 1,
            ..c0.summary
        },
        "its rows but a checksum off by one bit",
    );
    for (rows, claimed, what) in [wrong_rows, wrong_sum] {
        let attempt = next_attempt;
        next_attempt += 1;
        match run.stage(c0, attempt, &rows, 2).await {
            Err(e) => checker.fail("input", format!("staging attempt {attempt} of chunk {} failed: {e}", c0.id)),
            Ok(files) => match dest.commit_chunk(stage, &run.commit(c0, attempt, files, claimed)).await {
                Err(Error::VerificationFailed { .. }) => {}
                Ok(s) => checker.fail("verification", format!("attempt {attempt} of chunk {} with {what} was committed ({})", c0.id, show(s))),
                Err(e) => checker.fail(
                    "verification",
                    format!("attempt {attempt} of chunk {} with {what} was refused with `{}`, not `verification_failed`: {e}", c0.id, e.kind()),
                ),
            },
        }
        if !expect_read_back(
            &mut checker,
            dest.as_ref(),
            job,
            c0,
            "verification",
            &format!("after refused attempt {attempt} ({what})"),
        )
        .await
        {
            run.repair(&mut checker, dest.as_ref(), c0, &mut next_attempt).await?;
        }
    }

    match run.stage(c1, 1, &c1.rows, 2).await {
        Err(e) => checker.fail("input", format!("staging chunk {} failed: {e}", c1.id)),
        Ok(files) => match dest.commit_chunk(stage, &run.commit(c1, 1, files, c1.summary)).await {
            Ok(s) => {
                checker.ensure(s == c1.summary, "independent", || {
                    format!(
                        "commit of chunk {} returned {}, but its rows are {}",
                        c1.id,
                        show(s),
                        show(c1.summary)
                    )
                });
            }
            Err(e) => checker.fail("independent", format!("commit of chunk {} failed: {e}", c1.id)),
        },
    }
    expect_read_back(
        &mut checker,
        dest.as_ref(),
        job,
        c1,
        "independent",
        "after it committed",
    )
    .await;
    expect_read_back(
        &mut checker,
        dest.as_ref(),
        job,
        c0,
        "independent",
        &format!("after chunk {} committed", c1.id),
    )
    .await;

    // A chunk whose range holds no rows: workers stage no files for it.
    let empty = Chunk {
        id: 2,
        range: CursorRange::new(c1.range.to, c1.range.to + 1),
        rows: c1.rows.slice(0, 0),
        summary: RowSummary::default(),
    };
    match dest
        .commit_chunk(stage, &run.commit(&empty, 1, Vec::new(), RowSummary::default()))
        .await
    {
        Ok(s) => {
            checker.ensure(s == RowSummary::default(), "empty-chunk", || {
                format!("commit of an empty chunk returned {}", show(s))
            });
        }
        Err(e) => checker.fail(
            "empty-chunk",
            format!("commit of an empty chunk (no files, 0 rows) failed: {e}"),
        ),
    }
    expect_read_back(
        &mut checker,
        dest.as_ref(),
        job,
        &empty,
        "empty-chunk",
        "after it committed",
    )
    .await;

    // A restarted process: nothing but the destination's own state carries over.
    drop(dest);
    let fresh = make();
    if let Err(e) = fresh.prepare(job, schema.clone()).await {
        checker.fail(
            "restart",
            format!("prepare({job}) from a fresh handle on the prepared table failed: {e}"),
        );
    }
    for chunk in [c0, c1, &empty] {
        expect_read_back(
            &mut checker,
            fresh.as_ref(),
            job,
            chunk,
            "restart",
            "from a fresh handle",
        )
        .await;
    }
    match fresh.read_back(job, 3).await {
        Ok(None) => {}
        Ok(Some(s)) => checker.fail(
            "restart",
            format!(
                "read_back of never-committed chunk 3 from a fresh handle returned {}",
                show(s)
            ),
        ),
        Err(e) => checker.fail(
            "restart",
            format!("read_back of never-committed chunk 3 from a fresh handle failed: {e}"),
        ),
    }
    check_conflicts(
        &mut checker,
        fresh.as_ref(),
        options,
        &schema,
        &variants,
        "from a fresh handle after commits",
    )
    .await;
    for chunk in [c0, c1, &empty] {
        expect_read_back(
            &mut checker,
            fresh.as_ref(),
            job,
            chunk,
            "prepare",
            "after refused conflicting prepare calls",
        )
        .await;
    }

    run.clean().await;
    checker.finish(DestinationReport {
        chunks: [c0.summary, c1.summary],
        notes,
    })
}

/// What staging and committing need besides the chunk.
struct Run<'a> {
    stage: &'a Stage,
    job: &'a str,
    schema: &'a SchemaRef,
}

impl Run<'_> {
    async fn stage(
        &self,
        chunk: &Chunk,
        attempt: u32,
        rows: &RecordBatch,
        parts: usize,
    ) -> backhaul_core::Result<Vec<StagedFile>> {
        stage_batches(
            self.stage,
            self.job,
            chunk.id,
            attempt,
            self.schema,
            std::slice::from_ref(rows),
            parts,
        )
        .await
    }

    fn commit(&self, chunk: &Chunk, attempt: u32, files: Vec<StagedFile>, extracted: RowSummary) -> ChunkCommit {
        ChunkCommit {
            job_id: self.job.to_string(),
            chunk_id: chunk.id,
            attempt,
            range: chunk.range,
            files,
            extracted,
        }
    }

    /// Puts `chunk`'s rows back with a newer attempt after a check left the chunk wrong, so
    /// later checks report their own rules instead of the same damage again.
    async fn repair(
        &self,
        checker: &mut Checker,
        dest: &dyn Destination,
        chunk: &Chunk,
        next_attempt: &mut u32,
    ) -> Result<(), Violations> {
        let attempt = *next_attempt;
        *next_attempt += 1;
        let restored = match self.stage(chunk, attempt, &chunk.rows, 2).await {
            Ok(files) => dest
                .commit_chunk(self.stage, &self.commit(chunk, attempt, files, chunk.summary))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        let restored = match restored {
            Ok(()) => dest
                .read_back(self.job, chunk.id)
                .await
                .map(|s| s == Some(chunk.summary)),
            Err(e) => Err(e),
        };
        match restored {
            Ok(true) => Ok(()),
            Ok(false) => Err(checker.take(
                "commit",
                format!(
                    "re-committing chunk {} with attempt {attempt} did not restore its rows; stopping",
                    chunk.id
                ),
            )),
            Err(e) => Err(checker.take(
                "commit",
                format!(
                    "re-committing chunk {} with attempt {attempt} failed: {e}; stopping",
                    chunk.id
                ),
            )),
        }
    }

    /// Deletes what the suite staged; best effort, like a worker's stage cleanup.
    async fn clean(&self) {
        let prefix = object_store::path::Path::from(self.job);
        let listed: Vec<_> = self.stage.store().list(Some(&prefix)).collect().await;
        for meta in listed.into_iter().flatten() {
            let _ = self.stage.store().delete(&meta.location).await;
        }
    }
}

fn show(s: RowSummary) -> String {
    format!("{} rows/checksum {:016x}", s.rows, s.checksum)
}

fn summary_of(schema: &SchemaRef, rows: &RecordBatch) -> RowSummary {
    summarize(schema, std::slice::from_ref(rows)).expect("rows of the schema the suite checked them against")
}

/// Checks `chunk` reads back as its rows; returns whether it did.
async fn expect_read_back(
    checker: &mut Checker,
    dest: &dyn Destination,
    job: &str,
    chunk: &Chunk,
    check: &'static str,
    when: &str,
) -> bool {
    let id = chunk.id;
    match dest.read_back(job, id).await {
        Ok(Some(s)) if s == chunk.summary => return true,
        Ok(Some(s)) if s.rows == 2 * chunk.summary.rows && s.rows > 0 => checker.fail(
            check,
            format!("read_back of chunk {id} {when} returned {}: twice the {} committed rows, so an earlier attempt was kept", show(s), chunk.summary.rows),
        ),
        Ok(Some(s)) => checker.fail(check, format!("read_back of chunk {id} {when} returned {}, expected {}", show(s), show(chunk.summary))),
        Ok(None) => checker.fail(check, format!("read_back of chunk {id} {when} returned None, expected {}", show(chunk.summary))),
        Err(e) => checker.fail(check, format!("read_back of chunk {id} {when} failed: {e}")),
    }
    false
}

/// Other job, and the owning job with each schema variant: all must be refused with
/// `DestinationConflict`.
async fn check_conflicts(
    checker: &mut Checker,
    dest: &dyn Destination,
    options: &DestinationOptions,
    schema: &SchemaRef,
    variants: &[(&'static str, SchemaRef)],
    when: &str,
) {
    let (job, other) = (options.job_id.as_str(), options.other_job_id.as_str());
    let attempts = std::iter::once((other, "the same schema", schema.clone()))
        .chain(variants.iter().map(|(what, s)| (job, *what, s.clone())));
    for (by, what, s) in attempts {
        match dest.prepare(by, s).await {
            Err(Error::DestinationConflict(_)) => {}
            Ok(()) => checker.fail(
                "prepare",
                format!("prepare({by}) with {what} was accepted {when}; the table belongs to job `{job}`"),
            ),
            Err(e) => checker.fail(
                "prepare",
                format!(
                    "prepare({by}) with {what} {when} failed with `{}`, not `destination_conflict`: {e}",
                    e.kind()
                ),
            ),
        }
    }
}

/// Schemas that differ from `schema` in ways every destination can see.
fn schema_variants(schema: &SchemaRef) -> Vec<(&'static str, SchemaRef)> {
    let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut extra = fields.clone();
    extra.push(Field::new("_conformance_extra", DataType::Int64, true));
    let mut variants = vec![("an extra column", Arc::new(Schema::new(extra)))];
    if fields.len() > 1 {
        variants.push(("its first column missing", Arc::new(Schema::new(fields[1..].to_vec()))));
    }
    let mut retyped = fields;
    let new_type = if retyped[0].data_type() == &DataType::Utf8 {
        DataType::Int64
    } else {
        DataType::Utf8
    };
    retyped[0] = retyped[0].clone().with_data_type(new_type);
    variants.push(("its first column's type changed", Arc::new(Schema::new(retyped))));
    variants
}

/// Cuts the rows into chunks 0 and 1, by cursor when there is one, else by position.
fn cut_chunks(batches: &[RecordBatch], cursor: Option<&str>) -> Result<(SchemaRef, [Chunk; 2]), String> {
    let schema = batches
        .first()
        .ok_or("no batches were given; pass at least 4 rows")?
        .schema();
    let all = concat_batches(&schema, batches).map_err(|e| format!("the batches do not share one schema: {e}"))?;
    let n = all.num_rows();
    if n < 4 {
        return Err(format!(
            "{n} rows were given; pass at least 4 so each chunk can be staged in 2 files"
        ));
    }
    let chunk = |id, range, rows: RecordBatch| Chunk {
        id,
        range,
        summary: summary_of(&schema, &rows),
        rows,
    };
    let Some(cursor) = cursor else {
        let (a, b) = (all.slice(0, n / 2), all.slice(n / 2, n - n / 2));
        return Ok((
            schema.clone(),
            [chunk(0, CursorRange::new(0, 1), a), chunk(1, CursorRange::new(1, 2), b)],
        ));
    };
    let column = all
        .column_by_name(cursor)
        .ok_or_else(|| format!("the rows have no cursor column `{cursor}`"))?;
    let values = cursor_values(column.as_ref())?
        .into_iter()
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| format!("cursor column `{cursor}` has NULLs; such rows are in no chunk"))?;
    let mut sorted = values.clone();
    sorted.sort_unstable();
    let (low, high) = (sorted[0], sorted[n - 1]);
    // The median, moved up when more than half the rows share the lowest value.
    let split = match sorted[n / 2] {
        s if s > low => s,
        _ => *sorted
            .iter()
            .find(|v| **v > low)
            .ok_or_else(|| format!("every row has the same `{cursor}`; pass rows with several values"))?,
    };
    let side = |below: bool| -> Result<RecordBatch, String> {
        let mask: BooleanArray = values.iter().map(|v| Some((*v < split) == below)).collect();
        filter_record_batch(&all, &mask).map_err(|e| e.to_string())
    };
    let (a, b) = (side(true)?, side(false)?);
    if a.num_rows() < 2 || b.num_rows() < 2 {
        return Err(format!(
            "cutting the rows at `{cursor}` = {split} leaves {} and {} rows; pass rows with more distinct values",
            a.num_rows(),
            b.num_rows()
        ));
    }
    Ok((
        schema.clone(),
        [
            chunk(0, CursorRange::new(low, split), a),
            chunk(1, CursorRange::new(split, high + 1), b),
        ],
    ))
}
