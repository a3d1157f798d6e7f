//! The [`Source`] contract, checked against a live source over one cursor range.
//!
//! Call [`check_source`] (or [`check_source_with`] to tune it) from a connector's tests with a
//! range that holds a few hundred to a few hundred thousand rows. The suite reads the range
//! several times, whole and in pieces, and keeps every cursor value of it in memory, so it is
//! meant for test-sized ranges, not production tables.
//!
//! What is checked, by the check name violations carry:
//!
//! - `describe`: succeeds; the cursor column is in the schema and its Arrow type's
//!   [`CursorKind::of`] is the described `cursor_kind`; every key column exists.
//! - `prepare`: succeeds, and a second call changes nothing `extract` returns.
//! - `density`: succeeds; buckets are non-empty, sorted, non-overlapping, each overlapping the
//!   range, with finite non-negative rows and bytes; and, when the source has statistics (any
//!   bucket at all), the rows they estimate for the range are within a factor of the rows
//!   actually extracted ([`SourceOptions::density_tolerance`]).
//! - `extract`: every batch has exactly the described fields (names, order, types,
//!   nullability, field metadata), holds at most `batch_rows` rows, and every cursor value is
//!   non-NULL and inside `[from, to)`. Applies to every read the suite makes.
//! - `split`: the [`RowSummary`] of the range equals the merged summaries of the range cut at
//!   up to 3 interior points, one of them exactly on an existing row's cursor value, so no row
//!   is lost or read twice at a boundary; and the one-unit range `[v, v + 1)` on that row's
//!   value `v` returns exactly the rows with cursor `v`.
//! - `determinism`: reading the range again, with another batch size, gives the same summary.
//! - `empty-range`: sub-ranges inside the range that hold no rows (a gap between two rows, and
//!   a width-1 range in it) give zero rows without error.
//! - `early-drop`: dropping a stream after its first batch neither hangs nor panics, and the
//!   range reads completely afterwards.
//! - `input`: the range must hold rows; an empty range would make every check vacuous.
//! - `deletes` (sources that say `supports_delete_detection`, over their key columns): the
//!   `key_digest` of the range equals the digest core computes from the canonical key texts
//!   of the rows extracted ([`KeyDigest::of`], so every source's digest of the same keys is
//!   the same); the digest of a split's left part plus that of its right part is the whole's;
//!   `list_keys` lists exactly those key texts; `existing_keys` finds a sample of them and not
//!   a key that is not there; a range without rows digests to nothing.

use std::time::Duration;

use arrow::array::RecordBatch;
use backhaul_core::checksum::{RowChecksum, RowSummary};
use backhaul_core::chunking::{DensityBucket, estimate};
use backhaul_core::connector::{Source, TableDescription};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::deletes::{KEY_SEPARATOR, KeyDigest, check_key_types, key_texts};
use futures::StreamExt;

use crate::report::{Checker, Violations};
use crate::values::cursor_values;
use backhaul_core::schema::schema_difference as field_difference;

/// How [`check_source_with`] exercises a source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// `batch_rows` of the main reads. Other reads use smaller sizes derived from it.
    pub batch_rows: usize,
    /// Allowed factor between the rows `density` estimates for the range and the rows it
    /// holds: `Some(2.0)` accepts estimates from half to twice the truth. `None` skips the
    /// comparison (for sources whose statistics are known to be stale in tests).
    pub density_tolerance: Option<f64>,
    /// Longest any one call, or the reading of one whole stream, may take before the suite
    /// reports it as hung. Needs a Tokio runtime with timers (`#[tokio::test]` has them).
    pub timeout: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            batch_rows: 1_000,
            density_tolerance: Some(2.0),
            timeout: Duration::from_secs(120),
        }
    }
}

/// What a passing run saw, for tests that want to assert more (e.g. an exact row count).
#[derive(Debug, Clone)]
pub struct SourceReport {
    /// The source's description of the table.
    pub description: TableDescription,
    /// Rows in the range.
    pub rows: u64,
    /// Summary of the range's rows.
    pub summary: RowSummary,
    /// Rows `density` estimated for the range, when the source has statistics.
    pub estimated_rows: Option<f64>,
    /// Where the range was split for the `split` check.
    pub split_points: Vec<i64>,
    /// Whether one split point was exactly an existing row's cursor value.
    pub split_on_row: bool,
    /// Row-less sub-ranges that were read for the `empty-range` check.
    pub empty_ranges: Vec<CursorRange>,
    /// Checks that could not run on this data, and why.
    pub skipped: Vec<String>,
}

/// Checks `source` against the [`Source`] contract over `range` with default options; see the
/// [module documentation](self) for the rules. `range` must hold at least two rows.
pub async fn check_source(source: &dyn Source, range: CursorRange) -> Result<SourceReport, Violations> {
    check_source_with(source, range, &SourceOptions::default()).await
}

/// Checks `source` against the [`Source`] contract over `range`; see the
/// [module documentation](self) for the rules.
pub async fn check_source_with(
    source: &dyn Source,
    range: CursorRange,
    options: &SourceOptions,
) -> Result<SourceReport, Violations> {
    let mut checker = Checker::new("source");
    let timeout = options.timeout;
    let batch_rows = options.batch_rows.max(1);

    let desc = match within(timeout, source.describe()).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return checker.abort("describe", format!("describe() failed: {e}")),
        Err(hung) => return checker.abort("describe", format!("describe() {hung}")),
    };
    let Some(kind) = check_description(&mut checker, &desc) else {
        return checker.stop();
    };
    let shown = range.display(kind);
    let ctx = Ctx {
        source,
        desc: &desc,
        kind,
        timeout,
    };

    match within(timeout, source.prepare(range)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return checker.abort("prepare", format!("prepare({shown}) failed: {e}")),
        Err(hung) => return checker.abort("prepare", format!("prepare({shown}) {hung}")),
    }

    // Statistics are read before anything else touches the range, the way the planner does.
    let density = match within(timeout, source.density(range)).await {
        Ok(Ok(buckets)) => Some(buckets),
        Ok(Err(e)) => {
            checker.fail("density", format!("density({shown}) failed: {e}"));
            None
        }
        Err(hung) => {
            checker.fail("density", format!("density({shown}) {hung}"));
            None
        }
    };
    if let Some(buckets) = &density {
        check_buckets(&mut checker, kind, range, buckets);
    }

    let Some(full) = read_range(&ctx, &mut checker, range, batch_rows).await else {
        return checker.abort("extract", format!("cannot check anything else without reading {shown}"));
    };
    if full.rows() < 2 {
        return checker.abort(
            "input",
            format!("{shown} holds {} rows; pass a range with at least 2 rows", full.rows()),
        );
    }

    let mut skipped = Vec::new();
    let estimated_rows = match (&density, options.density_tolerance) {
        (Some(buckets), _) if buckets.is_empty() => {
            skipped.push("density estimate: the source has no statistics (no buckets)".to_string());
            None
        }
        (Some(buckets), tolerance) => {
            let estimated = estimate(range, buckets).0;
            if let Some(factor) = tolerance {
                let actual = full.rows() as f64;
                checker.ensure(estimated >= actual / factor && estimated <= actual * factor, "density", || {
                    format!("density({shown}) estimates {estimated:.1} rows but extract returned {actual}; more than {factor}x off")
                });
            }
            Some(estimated)
        }
        (None, _) => None,
    };

    // prepare is called before every chunk of a job, so a second call must change nothing.
    match within(timeout, source.prepare(range)).await {
        Ok(Ok(())) => {
            if let Some(again) = read_range(&ctx, &mut checker, range, batch_rows).await {
                checker.ensure(again.summary == full.summary, "prepare", || {
                    format!(
                        "a second prepare({shown}) changed what extract returns: {} before, {} after",
                        show(full.summary),
                        show(again.summary)
                    )
                });
            }
        }
        Ok(Err(e)) => checker.fail("prepare", format!("a second prepare({shown}) failed: {e}")),
        Err(hung) => checker.fail("prepare", format!("a second prepare({shown}) {hung}")),
    }

    // Another batch size too: a retried chunk may run on a worker with other settings.
    let other_rows = if batch_rows > 3 { batch_rows / 3 } else { batch_rows + 1 };
    if let Some(again) = read_range(&ctx, &mut checker, range, other_rows).await {
        checker.ensure(again.summary == full.summary, "determinism", || {
            format!(
                "extract({shown}) is not deterministic: {} with batch_rows={batch_rows}, {} with batch_rows={other_rows}",
                show(full.summary),
                show(again.summary)
            )
        });
    }

    let split_points = split_points(range, &full.cursors);
    let split_on_row = split_points.iter().any(|p| full.cursors.binary_search(p).is_ok());
    check_split(&ctx, &mut checker, range, &full, &split_points, batch_rows).await;

    let empty_ranges = empty_ranges(range, &full.cursors);
    if empty_ranges.is_empty() {
        skipped.push(format!("empty-range: every cursor value in {shown} holds rows"));
    }
    for sub in &empty_ranges {
        if let Some(got) = read_range(&ctx, &mut checker, *sub, batch_rows).await {
            checker.ensure(got.rows() == 0, "empty-range", || {
                format!(
                    "extract({}) returned {} rows, but reading {shown} found none there",
                    sub.display(kind),
                    got.rows()
                )
            });
        }
    }

    check_early_drop(&ctx, &mut checker, range, &full, batch_rows).await;
    check_deletes(&ctx, &mut checker, range, &split_points, &empty_ranges, &mut skipped).await;

    checker.finish(SourceReport {
        description: desc.clone(),
        rows: full.rows(),
        summary: full.summary,
        estimated_rows,
        split_points,
        split_on_row,
        empty_ranges,
        skipped,
    })
}

/// The `deletes` check: digests, key lists and key lookups against core's canonical key texts
/// of the rows in `range`.
async fn check_deletes(
    ctx: &Ctx<'_>,
    checker: &mut Checker,
    range: CursorRange,
    split_points: &[i64],
    empty_ranges: &[CursorRange],
    skipped: &mut Vec<String>,
) {
    let source = ctx.source;
    let keys = &ctx.desc.key_columns;
    if !source.supports_delete_detection() {
        skipped.push("deletes: the source does not support delete detection".into());
        return;
    }
    if keys.is_empty() {
        skipped.push("deletes: the table has no key columns".into());
        return;
    }
    if let Err(e) = check_key_types(&ctx.desc.schema, keys, "conformance", "the table") {
        skipped.push(format!("deletes: {e}"));
        return;
    }
    let shown = range.display(ctx.kind);
    let Some(expected) = key_texts_in(ctx, checker, range).await else {
        return;
    };
    let digest = |r: CursorRange| async move {
        match within(ctx.timeout, source.key_digest(r, keys)).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(format!("key_digest({}) failed: {e}", r.display(ctx.kind))),
            Err(hung) => Err(format!("key_digest({}) {hung}", r.display(ctx.kind))),
        }
    };
    let whole = match digest(range).await {
        Ok(d) => d,
        Err(m) => return checker.fail("deletes", m),
    };
    let want = KeyDigest::of(expected.iter().map(String::as_str));
    checker.ensure(whole == want, "deletes", || {
        format!(
            "key_digest({shown}) is {whole:?}, but the {} keys extracted digest to {want:?} (canonical key text: integers in decimal, text as is, UUIDs lowercase, joined by U+001F)",
            expected.len()
        )
    });
    if let Some(&at) = split_points.first() {
        let (left, right) = (CursorRange::new(range.from, at), CursorRange::new(at, range.to));
        match (digest(left).await, digest(right).await) {
            (Ok(l), Ok(r)) => {
                checker.ensure(whole.minus(l) == r, "deletes", || {
                    format!("key_digest({shown}) minus key_digest of its left part {l:?} is not the right part's {r:?}")
                });
            }
            (Err(m), _) | (_, Err(m)) => checker.fail("deletes", m),
        }
    }
    for empty in empty_ranges.iter().take(1) {
        match digest(*empty).await {
            Ok(d) => {
                checker.ensure(d == KeyDigest::default(), "deletes", || {
                    format!(
                        "key_digest({}) of a range without rows is {d:?}",
                        empty.display(ctx.kind)
                    )
                });
            }
            Err(m) => checker.fail("deletes", m),
        }
    }
    match within(ctx.timeout, source.list_keys(range, keys)).await {
        Ok(Ok(mut listed)) => {
            listed.sort();
            let mut want = expected.clone();
            want.sort();
            checker.ensure(listed == want, "deletes", || {
                let missing = want.iter().find(|k| listed.binary_search(k).is_err());
                let extra = listed.iter().find(|k| want.binary_search(k).is_err());
                format!(
                    "list_keys({shown}) listed {} keys, the range holds {}; first missing {missing:?}, first extra {extra:?}",
                    listed.len(),
                    want.len()
                )
            });
        }
        Ok(Err(e)) => checker.fail("deletes", format!("list_keys({shown}) failed: {e}")),
        Err(hung) => checker.fail("deletes", format!("list_keys({shown}) {hung}")),
    }
    // A sample of present keys and one that cannot be there: a key text of the right shape
    // (as many parts) made of values no column of this table holds.
    let mut sample: Vec<String> = expected.iter().step_by((expected.len() / 10).max(1)).cloned().collect();
    sample.sort();
    sample.dedup();
    let absent = missing_key(keys.len(), &expected);
    let mut asked = sample.clone();
    asked.push(absent.clone());
    match within(ctx.timeout, source.existing_keys(keys, &asked)).await {
        Ok(Ok(mut found)) => {
            found.sort();
            found.dedup();
            checker.ensure(found == sample, "deletes", || {
                format!(
                    "existing_keys of {} present keys and the absent key {absent:?} found {} keys: {:?}",
                    sample.len(),
                    found.len(),
                    found.iter().take(5).collect::<Vec<_>>()
                )
            });
        }
        Ok(Err(e)) => checker.fail("deletes", format!("existing_keys failed: {e}")),
        Err(hung) => checker.fail("deletes", format!("existing_keys {hung}")),
    }
}

/// A key text with `parts` parts that is not among `present` (a numeric value so integer key
/// columns can be looked up with it).
fn missing_key(parts: usize, present: &[String]) -> String {
    let sep = KEY_SEPARATOR.to_string();
    (0..)
        .map(|n: i64| vec![(987_654_321 + n).to_string(); parts].join(&sep))
        .find(|k| !present.contains(k))
        .expect("some key is absent")
}

/// The canonical key texts of every row in `range`, read with `extract`.
async fn key_texts_in(ctx: &Ctx<'_>, checker: &mut Checker, range: CursorRange) -> Option<Vec<String>> {
    let keys = &ctx.desc.key_columns;
    let fields: Vec<arrow::datatypes::FieldRef> = keys
        .iter()
        .filter_map(|k| {
            ctx.desc
                .schema
                .field_with_name(k)
                .ok()
                .cloned()
                .map(std::sync::Arc::new)
        })
        .collect();
    let read = async {
        let mut stream = ctx
            .source
            .extract(range, 1_000)
            .await
            .map_err(|e| format!("extract for key texts failed: {e}"))?;
        let mut texts = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| format!("extract for key texts failed: {e}"))?;
            let columns: Vec<arrow::array::ArrayRef> =
                keys.iter().filter_map(|k| batch.column_by_name(k).cloned()).collect();
            texts.extend(key_texts(&fields, &columns).map_err(|e| format!("key texts: {e}"))?);
        }
        Ok::<_, String>(texts)
    };
    match within(ctx.timeout, read).await {
        Ok(Ok(texts)) => Some(texts),
        Ok(Err(m)) => {
            checker.fail("deletes", m);
            None
        }
        Err(hung) => {
            checker.fail("deletes", format!("extract for key texts {hung}"));
            None
        }
    }
}

/// Everything the reads need.
struct Ctx<'a> {
    source: &'a dyn Source,
    desc: &'a TableDescription,
    kind: CursorKind,
    timeout: Duration,
}

/// The outcome of reading one range completely.
struct Extracted {
    summary: RowSummary,
    /// Every cursor value read, sorted.
    cursors: Vec<i64>,
}

impl Extracted {
    fn rows(&self) -> u64 {
        self.summary.rows
    }

    /// Rows the read found with cursor in `sub`.
    fn rows_in(&self, sub: CursorRange) -> u64 {
        (self.cursors.partition_point(|v| *v < sub.to) - self.cursors.partition_point(|v| *v < sub.from)) as u64
    }
}

/// Runs `fut` with a deadline; the error says how long it waited.
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| format!("did not finish within {limit:?} (hung?)"))
}

fn show(s: RowSummary) -> String {
    format!("{} rows/checksum {:016x}", s.rows, s.checksum)
}

/// Checks the description and returns the cursor kind to read values with, or `None` (after
/// recording why) when the cursor cannot be read at all.
fn check_description(checker: &mut Checker, desc: &TableDescription) -> Option<CursorKind> {
    for key in &desc.key_columns {
        checker.ensure(desc.schema.field_with_name(key).is_ok(), "describe", || {
            format!("key column `{key}` is not in the described schema")
        });
    }
    let Ok(field) = desc.schema.field_with_name(&desc.cursor_column) else {
        let names: Vec<&str> = desc.schema.fields().iter().map(|f| f.name().as_str()).collect();
        checker.fail(
            "describe",
            format!(
                "cursor column `{}` is not in the described schema ({})",
                desc.cursor_column,
                names.join(", ")
            ),
        );
        return None;
    };
    match CursorKind::of(field.data_type()) {
        None => {
            checker.fail(
                "describe",
                format!(
                    "cursor column `{}` has type {}, which cannot bound chunks",
                    field.name(),
                    field.data_type()
                ),
            );
            None
        }
        Some(kind) => {
            checker.ensure(kind == desc.cursor_kind, "describe", || {
                format!(
                    "cursor column `{}` has type {} (a {} cursor) but the description says {}",
                    field.name(),
                    field.data_type(),
                    kind.as_str(),
                    desc.cursor_kind.as_str()
                )
            });
            // Values are read by the schema's type, which is what range bounds are compared with.
            Some(kind)
        }
    }
}

fn check_buckets(checker: &mut Checker, kind: CursorKind, range: CursorRange, buckets: &[DensityBucket]) {
    let shown = range.display(kind);
    for b in buckets {
        let r = b.range;
        if r.from >= r.to {
            checker.fail(
                "density",
                format!("density({shown}) returned the empty bucket [{}, {})", r.from, r.to),
            );
            continue;
        }
        checker.ensure(r.overlaps(&range), "density", || {
            format!(
                "density({shown}) returned bucket {}, which lies outside the range",
                r.display(kind)
            )
        });
        checker.ensure(
            b.rows.is_finite() && b.rows >= 0.0 && b.bytes.is_finite() && b.bytes >= 0.0,
            "density",
            || {
                format!(
                    "density({shown}) bucket {} has rows {} and bytes {}; both must be finite and >= 0",
                    r.display(kind),
                    b.rows,
                    b.bytes
                )
            },
        );
    }
    for w in buckets.windows(2) {
        checker.ensure(w[0].range.to <= w[1].range.from, "density", || {
            format!(
                "density({shown}) buckets are unsorted or overlap: {} comes before {}",
                w[0].range.display(kind),
                w[1].range.display(kind)
            )
        });
    }
}

/// Per-batch rule breaks of one read, gathered so a read reports each kind once.
#[derive(Default)]
struct BatchFindings {
    batches: usize,
    schema: Option<String>,
    schema_batches: usize,
    oversize_batches: usize,
    largest: usize,
    outside: usize,
    first_outside: Option<i64>,
    nulls: usize,
    unreadable: Option<String>,
}

/// Reads `range` completely, checking every batch, and returns its summary and cursor values;
/// `None` (after recording why) when the read failed or its rows cannot be summarized.
async fn read_range(ctx: &Ctx<'_>, checker: &mut Checker, range: CursorRange, batch_rows: usize) -> Option<Extracted> {
    let what = format!("extract({}, batch_rows={batch_rows})", range.display(ctx.kind));
    let mut found = BatchFindings::default();
    let mut cursors = Vec::new();
    let read = async {
        let mut stream = ctx
            .source
            .extract(range, batch_rows)
            .await
            .map_err(|e| format!("{what} failed: {e}"))?;
        let mut checksum =
            RowChecksum::new(&ctx.desc.schema).map_err(|e| format!("cannot checksum the described schema: {e}"))?;
        let mut rows = 0u64;
        while let Some(item) = stream.next().await {
            let batch = item.map_err(|e| format!("{what}: the stream failed after {rows} rows: {e}"))?;
            rows += batch.num_rows() as u64;
            inspect(ctx, range, batch_rows, &batch, &mut found, &mut cursors);
            checksum
                .update(&batch)
                .map_err(|e| format!("{what}: cannot checksum a batch as the described schema: {e}"))?;
        }
        Ok::<_, String>(checksum.summary())
    };
    let summary = match within(ctx.timeout, read).await {
        Ok(Ok(summary)) => Some(summary),
        Ok(Err(message)) => {
            checker.fail("extract", message);
            None
        }
        Err(hung) => {
            checker.fail("extract", format!("{what} {hung}"));
            None
        }
    };
    report_findings(ctx, checker, &what, batch_rows, &found);
    cursors.sort_unstable();
    summary.map(|summary| Extracted { summary, cursors })
}

fn inspect(
    ctx: &Ctx<'_>,
    range: CursorRange,
    batch_rows: usize,
    batch: &RecordBatch,
    found: &mut BatchFindings,
    cursors: &mut Vec<i64>,
) {
    found.batches += 1;
    if let Some(diff) = field_difference(&ctx.desc.schema, &batch.schema()) {
        found.schema_batches += 1;
        found.schema.get_or_insert(diff);
    }
    if batch.num_rows() > batch_rows {
        found.oversize_batches += 1;
        found.largest = found.largest.max(batch.num_rows());
    }
    let Some(column) = batch.column_by_name(&ctx.desc.cursor_column) else {
        found
            .unreadable
            .get_or_insert_with(|| format!("a batch has no cursor column `{}`", ctx.desc.cursor_column));
        return;
    };
    match cursor_values(column.as_ref()) {
        Err(e) => {
            found
                .unreadable
                .get_or_insert(format!("cursor column `{}`: {e}", ctx.desc.cursor_column));
        }
        Ok(values) => {
            for v in values {
                match v {
                    None => found.nulls += 1,
                    Some(v) => {
                        if v < range.from || v >= range.to {
                            found.outside += 1;
                            found.first_outside.get_or_insert(v);
                        }
                        cursors.push(v);
                    }
                }
            }
        }
    }
}

fn report_findings(ctx: &Ctx<'_>, checker: &mut Checker, what: &str, batch_rows: usize, f: &BatchFindings) {
    if let Some(diff) = &f.schema {
        checker.fail(
            "extract",
            format!(
                "{what}: {} of {} batches differ from the described schema: {diff}",
                f.schema_batches, f.batches
            ),
        );
    }
    if f.oversize_batches > 0 {
        checker.fail(
            "extract",
            format!(
                "{what}: {} batches exceed batch_rows={batch_rows}, the largest has {} rows",
                f.oversize_batches, f.largest
            ),
        );
    }
    if let Some(m) = &f.unreadable {
        checker.fail("extract", format!("{what}: {m}"));
    }
    if let Some(v) = f.first_outside {
        checker.fail(
            "extract",
            format!(
                "{what}: {} rows have a cursor outside the range, e.g. {} ({v})",
                f.outside,
                ctx.kind.format(v)
            ),
        );
    }
    if f.nulls > 0 {
        checker.fail(
            "extract",
            format!(
                "{what}: {} rows have a NULL cursor; NULL cursors belong to no range",
                f.nulls
            ),
        );
    }
}

/// Up to three interior cut points, in order of preference: exactly on the middle row's
/// cursor value (that row must land in the upper piece), just after the value of the row at
/// three quarters (that row must land in the lower piece), a quarter of the width in
/// (independent of the data); then, for narrow ranges such as a few days of a date cursor,
/// the values of the rows at one and three quarters and the middle of the range.
fn split_points(range: CursorRange, cursors: &[i64]) -> Vec<i64> {
    let mut candidates = Vec::new();
    let at = |q: usize| cursors[cursors.len() * q / 4];
    if !cursors.is_empty() {
        candidates.push(at(2));
        candidates.push(at(3).saturating_add(1));
    }
    candidates.push(range.from + range.width() / 4);
    if !cursors.is_empty() {
        candidates.push(at(1));
        candidates.push(at(3));
    }
    candidates.push(range.from + range.width() / 2);
    let mut points: Vec<i64> = Vec::new();
    for p in candidates {
        if range.from < p && p < range.to && !points.contains(&p) && points.len() < 3 {
            points.push(p);
        }
    }
    points.sort_unstable();
    points
}

async fn check_split(
    ctx: &Ctx<'_>,
    checker: &mut Checker,
    range: CursorRange,
    full: &Extracted,
    points: &[i64],
    batch_rows: usize,
) {
    let shown = range.display(ctx.kind);
    if points.is_empty() {
        checker.fail("split", format!("{shown} is too narrow to split; pass a wider range"));
        return;
    }
    let bounds: Vec<i64> = std::iter::once(range.from)
        .chain(points.iter().copied())
        .chain(std::iter::once(range.to))
        .collect();
    let mut merged = RowSummary::default();
    let mut wrong_pieces = Vec::new();
    for w in bounds.windows(2) {
        let piece = CursorRange::new(w[0], w[1]);
        let Some(got) = read_range(ctx, checker, piece, batch_rows).await else {
            return;
        };
        let want = full.rows_in(piece);
        if got.rows() != want {
            wrong_pieces.push(format!(
                "{} returned {} rows where the whole read has {want}",
                piece.display(ctx.kind),
                got.rows()
            ));
        }
        merged.merge(got.summary);
    }
    // A range one cursor unit wide on an existing row's value holds exactly the rows with that
    // value: both bounds are tested on the same value.
    let on_row = points.iter().copied().find(|p| full.cursors.binary_search(p).is_ok());
    if let Some(v) = on_row
        && let Some(got) = read_range(ctx, checker, CursorRange::new(v, v + 1), batch_rows).await
    {
        let want = full.rows_in(CursorRange::new(v, v + 1));
        checker.ensure(got.rows() == want, "split", || {
            format!(
                "extract([{v}, {})) returned {} rows, but {want} rows have cursor {}",
                v + 1,
                got.rows(),
                ctx.kind.format(v)
            )
        });
    }
    if merged != full.summary {
        let at: Vec<String> = points.iter().map(|p| ctx.kind.format(*p)).collect();
        let detail = if wrong_pieces.is_empty() {
            "every piece has the right row count, so row contents differ".to_string()
        } else {
            wrong_pieces.join("; ")
        };
        checker.fail(
            "split",
            format!(
                "splitting {shown} at {} lost or duplicated rows: the pieces hold {}, the whole range {}: {detail}",
                at.join(", "),
                show(merged),
                show(full.summary)
            ),
        );
    }
}

/// Row-less sub-ranges inside the data: the widest gap between two consecutive cursor values
/// and a width-1 range at its start; without a gap, the stretches before the first and after
/// the last row.
fn empty_ranges(range: CursorRange, cursors: &[i64]) -> Vec<CursorRange> {
    let widest = cursors
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(a, b)| b - a >= 2)
        .max_by_key(|(a, b)| b - a);
    let mut out = Vec::new();
    if let Some((a, b)) = widest {
        out.push(CursorRange::new(a + 1, b));
        if b - a > 2 {
            out.push(CursorRange::new(a + 1, a + 2));
        }
        return out;
    }
    if let (Some(first), Some(last)) = (cursors.first(), cursors.last()) {
        if range.from < *first {
            out.push(CursorRange::new(range.from, *first));
        }
        if last + 1 < range.to {
            out.push(CursorRange::new(last + 1, range.to));
        }
    }
    out
}

async fn check_early_drop(
    ctx: &Ctx<'_>,
    checker: &mut Checker,
    range: CursorRange,
    full: &Extracted,
    batch_rows: usize,
) {
    let shown = range.display(ctx.kind);
    // Small batches leave most of the range unread when the stream is dropped.
    let small = ((full.rows() / 8) as usize).clamp(1, batch_rows);
    let first = async {
        let mut stream = ctx.source.extract(range, small).await?;
        let first = stream.next().await.transpose()?;
        drop(stream);
        Ok::<_, backhaul_core::Error>(first.map(|b| b.num_rows()))
    };
    match within(ctx.timeout, first).await {
        Ok(Ok(Some(_))) => {}
        Ok(Ok(None)) => checker.fail(
            "early-drop",
            format!(
                "extract({shown}, batch_rows={small}) returned no batch, but the range holds {} rows",
                full.rows()
            ),
        ),
        Ok(Err(e)) => checker.fail(
            "early-drop",
            format!("extract({shown}, batch_rows={small}) failed before its first batch: {e}"),
        ),
        Err(hung) => checker.fail(
            "early-drop",
            format!("taking one batch of {shown} and dropping the stream {hung}"),
        ),
    }
    if let Some(after) = read_range(ctx, checker, range, batch_rows).await {
        checker.ensure(after.summary == full.summary, "early-drop", || {
            format!(
                "after a dropped stream, extract({shown}) returned {} instead of {}",
                show(after.summary),
                show(full.summary)
            )
        });
    }
}
