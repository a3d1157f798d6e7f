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
//!   same job with a column whose type changed, is refused with
//!   [`Error::DestinationConflict`] and changes nothing, also after commits and from a fresh
//!   handle. (Added and dropped columns a destination may follow; its own tests cover that.)
//! - `read-back`: a never-committed chunk reads back as `Ok(None)`.
//! - `commit`: chunk 0, attempt 1, staged as 2 files, commits and returns a proof at the
//!   destination's declared [`ProofLevel`] that passes [`ChunkProof::check`] against the
//!   evidence of its rows; `read_back` returns such a proof too.
//! - `replace`: attempt 2 of chunk 0 with the same rows in 3 files replaces attempt 1: the
//!   proof still passes, rows are not doubled.
//! - `fencing`: a stale attempt 1 committed after attempt 2 is refused (ideally with
//!   [`Error::LeaseLost`]; another error is noted in the report) and the chunk is unchanged.
//!   The stale attempt holds only half the rows, so a commit that is refused but applied
//!   anyway shows.
//! - `verification`: a commit whose files do not hold the rows its `extracted` evidence
//!   describes is refused with [`Error::VerificationFailed`] and the chunk is unchanged: half
//!   the rows; one row missing; one row duplicated; one value changed in a numeric, a string
//!   (longer) and a timestamp column ([`Corruption`](crate::corrupt::Corruption)). A `count_only` destination must refuse
//!   the first three; a changed value it commits is a note (its level cannot see it), and the
//!   chunk is repaired.
//! - `tamper`: with a [`TamperCommitted`] hook in the options, each corruption is applied to
//!   committed chunk 1 and `read_back` must then fail the proof check (or fail with
//!   `VerificationFailed`); the chunk is repaired after each.
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
use backhaul_core::connector::{ChunkCommit, Destination, StagedFile};
use backhaul_core::cursor::CursorRange;
use backhaul_core::proof::{ChunkEvidence, ChunkProof, ProofLevel};
use backhaul_core::stage::Stage;
use futures::StreamExt;
use object_store::ObjectStoreExt;

use crate::corrupt::{TamperCommitted, corrupt, corruptions_for};
use crate::report::{Checker, Violations};
use crate::stage::{evidence, stage_batches};
use crate::values::cursor_values;

/// How [`check_destination_with`] exercises a destination.
#[derive(Clone)]
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
    /// Damages committed data, for the `tamper` checks; without it they are skipped (noted).
    pub tamper: Option<Arc<dyn TamperCommitted>>,
}

impl std::fmt::Debug for DestinationOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationOptions")
            .field("job_id", &self.job_id)
            .field("other_job_id", &self.other_job_id)
            .field("cursor_column", &self.cursor_column)
            .field("tamper", &self.tamper.is_some())
            .finish()
    }
}

impl Default for DestinationOptions {
    fn default() -> Self {
        DestinationOptions {
            job_id: "conformance".into(),
            other_job_id: "conformance-other".into(),
            cursor_column: None,
            tamper: None,
        }
    }
}

/// What a passing run saw.
#[derive(Debug, Clone)]
pub struct DestinationReport {
    /// The proof level the destination declared.
    pub level: ProofLevel,
    /// Evidence of chunk 0 and chunk 1 as committed.
    pub chunks: [ChunkEvidence; 2],
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
    evidence: ChunkEvidence,
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
    let dest = make();
    let level = dest.proof_level();
    let run = Run {
        stage,
        job,
        schema: &schema,
        level,
        cursor_column: options.cursor_column.as_deref().unwrap_or_default(),
    };
    let variants = schema_variants(&schema);

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
            format!("read_back of never-committed chunk {} returned {}", c0.id, show(&s)),
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
    match dest
        .commit_chunk(stage, &run.commit(c0, 1, files, c0.evidence.clone()))
        .await
    {
        Ok(p) => run.expect_proof(&mut checker, &p, c0, "commit", "commit of attempt 1"),
        Err(e) => {
            return checker.abort(
                "commit",
                format!(
                    "commit of chunk {} attempt 1 ({} rows in 2 files) failed: {e}",
                    c0.id, c0.evidence.summary.rows
                ),
            );
        }
    }
    run.expect_read_back(&mut checker, dest.as_ref(), c0, "commit", "after attempt 1 committed")
        .await;

    // Attempt 2: same rows, another file split. A destination that appends instead of
    // replacing now holds every row twice.
    match run.stage(c0, 2, &c0.rows, 3).await {
        Err(e) => checker.fail("input", format!("staging chunk {} attempt 2 failed: {e}", c0.id)),
        Ok(files) => match dest
            .commit_chunk(stage, &run.commit(c0, 2, files, c0.evidence.clone()))
            .await
        {
            Ok(p) => run.expect_proof(&mut checker, &p, c0, "replace", "commit of attempt 2"),
            Err(e) => checker.fail(
                "replace",
                format!("commit of chunk {} attempt 2 (replacing attempt 1) failed: {e}", c0.id),
            ),
        },
    }
    // Attempts after 2 are numbered from here: repairs and the verification checks.
    let mut next_attempt = 3;
    if !run
        .expect_read_back(
            &mut checker,
            dest.as_ref(),
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
    let half_evidence = evidence_of(&schema, &half);
    match run.stage(c0, 1, &half, 1).await {
        Err(e) => checker.fail(
            "input",
            format!("staging stale attempt 1 of chunk {} failed: {e}", c0.id),
        ),
        Ok(files) => match dest.commit_chunk(stage, &run.commit(c0, 1, files, half_evidence)).await {
            Ok(p) => checker.fail(
                "fencing",
                format!(
                    "stale attempt 1 of chunk {} was committed ({}) after attempt 2",
                    c0.id,
                    show(&p)
                ),
            ),
            Err(Error::LeaseLost { .. }) => {}
            Err(e) => notes.push(format!(
                "a stale commit was refused with `{}` rather than `lease_lost`: {e}",
                e.kind()
            )),
        },
    }
    if !run
        .expect_read_back(
            &mut checker,
            dest.as_ref(),
            c0,
            "fencing",
            "after a refused stale attempt",
        )
        .await
    {
        run.repair(&mut checker, dest.as_ref(), c0, &mut next_attempt).await?;
    }

    // Files that do not hold the rows the evidence describes. Newer attempts, so fencing
    // cannot be what refuses them.
    let (corruptions, corruption_notes) = corruptions_for(&c0.rows, options.cursor_column.as_deref());
    notes.extend(corruption_notes);
    let mut bad_files: Vec<(String, Result<RecordBatch, String>, bool)> =
        vec![("half the rows it claims".into(), Ok(half.clone()), true)];
    for c in &corruptions {
        // What a count-only proof cannot see is not required of it.
        let required = level != ProofLevel::CountOnly || !c.changes_values();
        bad_files.push((c.to_string(), corrupt(&c0.rows, c), required));
    }
    for (what, rows, required) in bad_files {
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                checker.fail("input", format!("cannot build files with {what}: {e}"));
                continue;
            }
        };
        let attempt = next_attempt;
        next_attempt += 1;
        match run.stage(c0, attempt, &rows, 2).await {
            Err(e) => checker.fail("input", format!("staging attempt {attempt} of chunk {} failed: {e}", c0.id)),
            Ok(files) => match dest.commit_chunk(stage, &run.commit(c0, attempt, files, c0.evidence.clone())).await {
                Err(Error::VerificationFailed { .. }) => {}
                Ok(p) if !required => notes.push(format!(
                    "a {level} destination committed files with {what} (attempt {attempt} of chunk {}, {}): its proof cannot see that",
                    c0.id,
                    show(&p)
                )),
                Ok(p) => checker.fail("verification", format!("attempt {attempt} of chunk {} with {what} was committed ({})", c0.id, show(&p))),
                Err(e) => checker.fail(
                    "verification",
                    format!("attempt {attempt} of chunk {} with {what} was refused with `{}`, not `verification_failed`: {e}", c0.id, e.kind()),
                ),
            },
        }
        if !run
            .expect_read_back(
                &mut checker,
                dest.as_ref(),
                c0,
                "verification",
                &format!("after attempt {attempt} ({what})"),
            )
            .await
        {
            run.repair(&mut checker, dest.as_ref(), c0, &mut next_attempt).await?;
        }
    }

    match run.stage(c1, 1, &c1.rows, 2).await {
        Err(e) => checker.fail("input", format!("staging chunk {} failed: {e}", c1.id)),
        Ok(files) => match dest
            .commit_chunk(stage, &run.commit(c1, 1, files, c1.evidence.clone()))
            .await
        {
            Ok(p) => run.expect_proof(&mut checker, &p, c1, "independent", "commit"),
            Err(e) => checker.fail("independent", format!("commit of chunk {} failed: {e}", c1.id)),
        },
    }
    run.expect_read_back(&mut checker, dest.as_ref(), c1, "independent", "after it committed")
        .await;
    run.expect_read_back(
        &mut checker,
        dest.as_ref(),
        c0,
        "independent",
        &format!("after chunk {} committed", c1.id),
    )
    .await;

    // Committed data damaged afterwards: read_back measures what is there now.
    let mut next_c1_attempt = 2;
    match &options.tamper {
        None => notes.push("no tamper hook was given: damage after commit was not checked".into()),
        Some(tamper) => {
            let (corruptions, _) = corruptions_for(&c1.rows, options.cursor_column.as_deref());
            for c in &corruptions {
                let required = level != ProofLevel::CountOnly || !c.changes_values();
                if let Err(e) = tamper.tamper(job, c1.id, c).await {
                    checker.fail(
                        "tamper",
                        format!("the tamper hook could not apply {c} to chunk {}: {e}", c1.id),
                    );
                    continue;
                }
                match dest.read_back(job, c1.id).await {
                    Err(Error::VerificationFailed { .. }) => {}
                    Ok(Some(p)) if p.check(&c1.evidence).is_err() => {}
                    Ok(Some(p)) if !required => notes.push(format!(
                        "a {level} destination's read_back did not notice {c} after commit ({}): its proof cannot see that",
                        show(&p)
                    )),
                    Ok(Some(p)) => checker.fail(
                        "tamper",
                        format!("read_back of chunk {} after {c} passed the proof check ({})", c1.id, show(&p)),
                    ),
                    Ok(None) => checker.fail("tamper", format!("read_back of chunk {} after {c} returned None", c1.id)),
                    Err(e) => checker.fail(
                        "tamper",
                        format!("read_back of chunk {} after {c} failed with `{}`, not `verification_failed`: {e}", c1.id, e.kind()),
                    ),
                }
                run.repair(&mut checker, dest.as_ref(), c1, &mut next_c1_attempt)
                    .await?;
            }
        }
    }

    // A chunk whose range holds no rows: workers stage no files for it.
    let empty = Chunk {
        id: 2,
        range: CursorRange::new(c1.range.to, c1.range.to + 1),
        rows: c1.rows.slice(0, 0),
        evidence: evidence_of(&schema, &c1.rows.slice(0, 0)),
    };
    match dest
        .commit_chunk(stage, &run.commit(&empty, 1, Vec::new(), empty.evidence.clone()))
        .await
    {
        Ok(p) => run.expect_proof(&mut checker, &p, &empty, "empty-chunk", "commit of an empty chunk"),
        Err(e) => checker.fail(
            "empty-chunk",
            format!("commit of an empty chunk (no files, 0 rows) failed: {e}"),
        ),
    }
    run.expect_read_back(&mut checker, dest.as_ref(), &empty, "empty-chunk", "after it committed")
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
        run.expect_read_back(&mut checker, fresh.as_ref(), chunk, "restart", "from a fresh handle")
            .await;
    }
    match fresh.read_back(job, 3).await {
        Ok(None) => {}
        Ok(Some(s)) => checker.fail(
            "restart",
            format!(
                "read_back of never-committed chunk 3 from a fresh handle returned {}",
                show(&s)
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
        run.expect_read_back(
            &mut checker,
            fresh.as_ref(),
            chunk,
            "prepare",
            "after refused conflicting prepare calls",
        )
        .await;
    }

    run.clean().await;
    checker.finish(DestinationReport {
        level,
        chunks: [c0.evidence.clone(), c1.evidence.clone()],
        notes,
    })
}

/// What staging and committing need besides the chunk.
struct Run<'a> {
    stage: &'a Stage,
    job: &'a str,
    schema: &'a SchemaRef,
    /// The level the destination declared.
    level: ProofLevel,
    /// The cursor column chunks are cut by (empty when cut by position).
    cursor_column: &'a str,
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

    fn commit(&self, chunk: &Chunk, attempt: u32, files: Vec<StagedFile>, extracted: ChunkEvidence) -> ChunkCommit {
        ChunkCommit {
            job_id: self.job.to_string(),
            chunk_id: chunk.id,
            attempt,
            range: chunk.range,
            cursor_column: self.cursor_column.to_string(),
            files,
            extracted,
            sync: None,
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
                .commit_chunk(self.stage, &self.commit(chunk, attempt, files, chunk.evidence.clone()))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        let restored = match restored {
            Ok(()) => dest
                .read_back(self.job, chunk.id)
                .await
                .map(|p| p.is_some_and(|p| p.check(&chunk.evidence).is_ok())),
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

fn show(p: &ChunkProof) -> String {
    let mut text = format!("a {} proof of {} rows", p.level, p.rows);
    if let Some(c) = p.checksum {
        text.push_str(&format!(", checksum {c:016x}"));
    }
    text
}

fn evidence_of(schema: &SchemaRef, rows: &RecordBatch) -> ChunkEvidence {
    evidence(schema, std::slice::from_ref(rows)).expect("rows of the schema the suite checked them against")
}

impl Run<'_> {
    /// Checks a proof a commit returned: the declared level, and [`ChunkProof::check`]
    /// against the chunk's evidence.
    fn expect_proof(&self, checker: &mut Checker, proof: &ChunkProof, chunk: &Chunk, check: &'static str, what: &str) {
        let id = chunk.id;
        if proof.level != self.level {
            checker.fail(
                check,
                format!(
                    "{what} of chunk {id} returned a {} proof, but the destination declares {}",
                    proof.level, self.level
                ),
            );
        }
        if let Err(m) = proof.check(&chunk.evidence) {
            checker.fail(check, format!("{what} of chunk {id} returned {}: {m}", show(proof)));
        }
    }

    /// Checks `chunk` reads back with a proof that passes its check; returns whether it did.
    async fn expect_read_back(
        &self,
        checker: &mut Checker,
        dest: &dyn Destination,
        chunk: &Chunk,
        check: &'static str,
        when: &str,
    ) -> bool {
        let id = chunk.id;
        let rows = chunk.evidence.summary.rows;
        match dest.read_back(self.job, id).await {
            Ok(Some(p)) if p.level == self.level && p.check(&chunk.evidence).is_ok() => return true,
            Ok(Some(p)) if p.rows == 2 * rows && rows > 0 => checker.fail(
                check,
                format!("read_back of chunk {id} {when} returned {}: twice the {rows} committed rows, so an earlier attempt was kept", show(&p)),
            ),
            Ok(Some(p)) if p.level != self.level => checker.fail(
                check,
                format!("read_back of chunk {id} {when} returned a {} proof, but the destination declares {}", p.level, self.level),
            ),
            Ok(Some(p)) => {
                let m = p.check(&chunk.evidence).expect_err("checked above");
                checker.fail(check, format!("read_back of chunk {id} {when} returned {}: {m}", show(&p)))
            }
            Ok(None) => checker.fail(check, format!("read_back of chunk {id} {when} returned None, expected {rows} rows")),
            Err(e) => checker.fail(check, format!("read_back of chunk {id} {when} failed: {e}")),
        }
        false
    }
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
            Ok(_) => checker.fail(
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

/// Schemas every destination must refuse for the table's own job. Added and dropped columns
/// are not among them: a destination may follow those (`SchemaChanges::follow`), which its own
/// tests cover; a changed type no destination can follow.
fn schema_variants(schema: &SchemaRef) -> Vec<(&'static str, SchemaRef)> {
    let mut retyped: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let new_type = if retyped[0].data_type() == &DataType::Utf8 {
        DataType::Int64
    } else {
        DataType::Utf8
    };
    retyped[0] = retyped[0].clone().with_data_type(new_type);
    vec![("its first column's type changed", Arc::new(Schema::new(retyped)))]
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
        evidence: evidence_of(&schema, &rows),
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
