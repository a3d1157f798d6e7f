//! Taking a profile from a live source: cheap, read-only, bounded in time.
//!
//! 1. Row count from the source's statistics ([`Source::density`]); exact only with `--exact`,
//!    which reads the whole range once.
//! 2. A stratified random sample: the cursor range is cut into `sample_ranges` strata of equal
//!    width, and in each a random sub-range sized to hold about `sample_rows / sample_ranges`
//!    rows is read with [`Source::extract`]. Any source that can extract can be sampled.
//! 3. The sample is encoded to zstd Parquet (compressed column-chunk bytes per row) and to
//!    Airbyte-protocol RECORD messages (serialized bytes per row); its logical size is summed
//!    by BigQuery data-type sizes.
//! 4. Change activity in the steady window: first asked of the source
//!    ([`Source::activity`]); what it cannot answer is estimated from the sample's change
//!    columns (`created_at`, `updated_at`, soft-delete), or from a snapshot diff of sampled keys
//!    for hard deletes. Estimates scale each stratum's share by its statistics row count (a
//!    ratio estimator); `docs/cost.md` gives their error.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::row::{RowConverter, SortField};
use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{Source, TableDescription};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::profile::{ActivityQuery, ChangeColumns, Counted, TimeWindow};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};

use crate::config::{ProfileConfig, parse_instant};
use crate::error::{CostError, Result};
use crate::money::Dec;
use crate::profile::{
    ActivityMethod, ActivityProfile, Bound, BytesPerRow, Measured, PROFILE_VERSION, Profile, SampleInfo, TableProfile,
    Throughput,
};

/// Microseconds in a day.
pub const DAY_MICROS: i64 = 86_400_000_000;
/// Batch size asked of the source while sampling.
const SAMPLE_BATCH_ROWS: usize = 8192;
/// Field metadata naming an Arrow extension type, and the JSON one.
const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
const JSON_EXTENSION: &str = "arrow.json";

/// What the profiler needs to know about one job's table (the caller has planned the job and
/// prepared the source).
pub struct ProfileInput {
    /// Job name.
    pub job: String,
    /// `[source] kind`.
    pub source_kind: String,
    /// Source table name.
    pub table_name: String,
    /// The source's description of the table.
    pub table: TableDescription,
    /// The job's range in cursor units.
    pub range: CursorRange,
    /// Chunks the job plans.
    pub chunks: u64,
    /// Target Parquet file size.
    pub file_size: u64,
    /// The source.
    pub source: Arc<dyn Source>,
}

/// Profile options after config and flags are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOptions {
    /// Rows to sample in total.
    pub sample_rows: u64,
    /// Strata, one sub-range each.
    pub sample_ranges: u32,
    /// Seed of sub-range positions.
    pub seed: u64,
    /// Read the whole range: exact row count and exact activity for the window.
    pub exact: bool,
    /// Change columns named by the user.
    pub columns: ChangeColumns,
    /// End of the steady window (microseconds), or the default.
    pub window_end: Option<i64>,
    /// Window length in days.
    pub window_days: u32,
    /// Snapshot of sampled keys for hard-delete diffs.
    pub snapshot_file: Option<PathBuf>,
    /// The config file's name, for errors about its keys.
    pub origin: String,
}

impl ProfileOptions {
    /// From the `[profile]` section of a (validated) cost config.
    pub fn from_config(config: &ProfileConfig, origin: &str) -> Result<Self> {
        let window_end = match &config.window_end {
            Some(t) => Some(parse_instant(t).map_err(|m| CostError::invalid(origin, "profile.window_end", m))?),
            None => None,
        };
        Ok(ProfileOptions {
            sample_rows: config.sample_rows,
            sample_ranges: config.sample_ranges,
            seed: config.seed,
            exact: false,
            columns: ChangeColumns {
                created_at: config.created_at.clone(),
                updated_at: config.updated_at.clone(),
                soft_delete: config.soft_delete.clone(),
            },
            window_end,
            window_days: config.window_days,
            snapshot_file: config.snapshot_file.clone(),
            origin: origin.to_string(),
        })
    }
}

/// A profile of tables taken now.
pub fn assemble(job: &str, fingerprint: &str, tables: Vec<TableProfile>, now: DateTime<Utc>) -> Profile {
    Profile {
        version: PROFILE_VERSION,
        job: job.to_string(),
        spec_fingerprint: fingerprint.to_string(),
        taken_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        backhaul_version: env!("CARGO_PKG_VERSION").to_string(),
        tables,
    }
}

/// How a change column dates its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    /// A timestamp or date.
    Time,
    /// A boolean flag (soft delete only); dated by `updated_at`.
    Flag,
}

#[derive(Debug, Clone)]
struct RoleColumn {
    name: String,
    index: usize,
    kind: ColumnKind,
}

#[derive(Debug, Clone, Default)]
struct Roles {
    created: Option<RoleColumn>,
    updated: Option<RoleColumn>,
    deleted: Option<RoleColumn>,
}

fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64)
}

/// Finds the change columns in the table and checks their types.
fn resolve_roles(table: &TableDescription, opts: &ProfileOptions, notes: &mut Vec<String>) -> Result<Roles> {
    let schema = &table.schema;
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let find = |field: &str, name: &str, allow_flag: bool| -> Result<RoleColumn> {
        let index = schema.index_of(name).map_err(|_| {
            CostError::invalid(
                &opts.origin,
                field,
                format!(
                    "the table has no column `{name}`; its columns are: {}",
                    names.join(", ")
                ),
            )
        })?;
        let data_type = schema.field(index).data_type();
        let kind = if is_time(data_type) {
            ColumnKind::Time
        } else if allow_flag && *data_type == DataType::Boolean {
            ColumnKind::Flag
        } else {
            let allowed = if allow_flag {
                "a timestamp, date or boolean"
            } else {
                "a timestamp or date"
            };
            return Err(CostError::invalid(
                &opts.origin,
                field,
                format!("column `{name}` is {data_type}; it must be {allowed} column"),
            ));
        };
        Ok(RoleColumn {
            name: name.to_string(),
            index,
            kind,
        })
    };
    let mut roles = Roles::default();
    match &opts.columns.created_at {
        Some(name) => roles.created = Some(find("profile.created_at", name, false)?),
        None if matches!(table.cursor_kind, CursorKind::Timestamp | CursorKind::Date) => {
            roles.created = Some(find("profile.created_at", &table.cursor_column, false)?);
            notes.push(format!(
                "inserts are dated by the job's cursor `{}` (assumed set once on insert; set profile.created_at otherwise)",
                table.cursor_column
            ));
        }
        None => {}
    }
    if let Some(name) = &opts.columns.updated_at {
        roles.updated = Some(find("profile.updated_at", name, false)?);
    }
    if let Some(name) = &opts.columns.soft_delete {
        let col = find("profile.soft_delete", name, true)?;
        if col.kind == ColumnKind::Flag && roles.updated.is_none() {
            return Err(CostError::invalid(
                &opts.origin,
                "profile.soft_delete",
                format!("`{name}` is a boolean flag; set profile.updated_at too so deletions can be dated"),
            ));
        }
        roles.deleted = Some(col);
    }
    Ok(roles)
}

/// splitmix64: sub-range positions from a seed, no RNG crate needed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One stratum and the sub-range read from it.
#[derive(Debug, Clone, Copy)]
struct Stratum {
    whole: CursorRange,
    read: CursorRange,
    /// Rows the statistics put in the stratum, if any statistics exist.
    statistics_rows: Option<f64>,
}

fn rows_in(range: CursorRange, density: &[DensityBucket]) -> f64 {
    density
        .iter()
        .filter(|b| b.range.overlaps(&range))
        .map(|b| {
            let from = b.range.from.max(range.from);
            let to = b.range.to.min(range.to);
            b.rows * (to - from) as f64 / b.range.width().max(1) as f64
        })
        .sum()
}

/// Cuts the range into strata and picks a random sub-range in each. `extra_cuts` (the steady
/// window's bounds in cursor units, for time cursors) become stratum bounds too, so no stratum
/// straddles the window and a single sub-range never decides on which side its rows fall.
fn plan_strata(
    range: CursorRange,
    density: &[DensityBucket],
    opts: &ProfileOptions,
    extra_cuts: &[i64],
    notes: &mut Vec<String>,
) -> Vec<Stratum> {
    if opts.exact {
        return vec![Stratum {
            whole: range,
            read: range,
            statistics_rows: None,
        }];
    }
    let width = range.width() as i128;
    let count = (opts.sample_ranges as i128).min(width).max(1);
    let mut cuts: Vec<i64> = (0..=count)
        .map(|i| (range.from as i128 + width * i / count) as i64)
        .chain(extra_cuts.iter().copied().filter(|c| range.from < *c && *c < range.to))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let total_rows = rows_in(range, density);
    let have_statistics = !density.is_empty() && total_rows > 0.0;
    let strata = cuts.len() - 1;
    if !have_statistics {
        notes.push(format!(
            "the source has no statistics for this range: each of the {strata} strata is sampled over 1/{count} of its width and counts are scaled by width"
        ));
    }
    let per_stratum = opts.sample_rows as f64 / strata as f64;
    let mut rng = SplitMix(opts.seed ^ 0x5A5A_5A5A_5A5A_5A5A);
    cuts.windows(2)
        .map(|pair| {
            let whole = CursorRange::new(pair[0], pair[1]);
            let stratum_rows = rows_in(whole, density);
            let fraction = if have_statistics {
                if stratum_rows > 0.0 {
                    (per_stratum / stratum_rows).min(1.0)
                } else {
                    (opts.sample_rows as f64 / total_rows).min(1.0)
                }
            } else {
                1.0 / count as f64
            };
            let stratum_width = whole.width() as f64;
            let read_width = ((stratum_width * fraction).ceil() as i64).clamp(1, whole.width());
            let slack = (whole.width() - read_width) as u64;
            let offset = if slack == 0 {
                0
            } else {
                (rng.next() % (slack + 1)) as i64
            };
            let read = CursorRange::new(whole.from + offset, whole.from + offset + read_width);
            Stratum {
                whole,
                read,
                statistics_rows: have_statistics.then_some(stratum_rows),
            }
        })
        .collect()
}

/// Per-sub-range counters of what the sampled rows did in the window.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    rows: u64,
    inserts: u64,
    updated: u64,
    deleted: u64,
    touched: u64,
    versions: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.rows += other.rows;
        self.inserts += other.inserts;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.touched += other.touched;
        self.versions += other.versions;
    }
}

/// Microseconds since the epoch of a timestamp or date column (`None` for NULL).
fn micros(array: &ArrayRef) -> Vec<Option<i64>> {
    fn collect<T: arrow::datatypes::ArrowPrimitiveType>(
        a: &ArrayRef,
        f: impl Fn(T::Native) -> i64,
    ) -> Vec<Option<i64>> {
        a.as_primitive::<T>().iter().map(|v| v.map(&f)).collect()
    }
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            collect::<TimestampSecondType>(array, |v| v.saturating_mul(1_000_000))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            collect::<TimestampMillisecondType>(array, |v| v.saturating_mul(1_000))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => collect::<TimestampMicrosecondType>(array, |v| v),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => collect::<TimestampNanosecondType>(array, |v| v / 1_000),
        DataType::Date32 => collect::<Date32Type>(array, |v| v as i64 * DAY_MICROS),
        DataType::Date64 => collect::<Date64Type>(array, |v| v.saturating_mul(1_000)),
        _ => vec![None; array.len()],
    }
}

/// Classifies every row of a batch against the window and adds to `tally`.
///
/// A row with a primary key is one key: touched when inserted, updated or deleted in the
/// window. A keyless row is keyed by its values, so it touches the version that existed at the
/// window's start (or the inserted one) and, when updated, the new version: 1 or 2 versions.
/// Versions between two updates inside the window are invisible here (lower bound).
fn classify(batch: &RecordBatch, roles: &Roles, window: TimeWindow, tally: &mut Tally) {
    let n = batch.num_rows();
    let in_window = |v: Option<i64>| v.is_some_and(|t| window.from <= t && t < window.to);
    let created = roles.created.as_ref().map(|c| micros(batch.column(c.index)));
    let updated = roles.updated.as_ref().map(|c| micros(batch.column(c.index)));
    let deleted_time = roles
        .deleted
        .as_ref()
        .filter(|c| c.kind == ColumnKind::Time)
        .map(|c| micros(batch.column(c.index)));
    let deleted_flag = roles
        .deleted
        .as_ref()
        .filter(|c| c.kind == ColumnKind::Flag)
        .map(|c| batch.column(c.index).as_boolean().clone());
    for i in 0..n {
        let created_at = created.as_ref().and_then(|c| c[i]);
        let inserted = created.is_some() && in_window(created_at);
        let updated_at = updated.as_ref().and_then(|u| u[i]);
        let deleted_at = deleted_time.as_ref().and_then(|d| d[i]);
        // An updated_at equal to created_at is the insert itself, and one equal to deleted_at
        // the soft delete itself, not an update.
        let was_updated = in_window(updated_at)
            && created_at.is_none_or(|c| updated_at.is_some_and(|u| u > c))
            && (deleted_at.is_none() || deleted_at != updated_at);
        let was_deleted = match (&deleted_time, &deleted_flag) {
            (Some(_), _) => in_window(deleted_at),
            (None, Some(flags)) => flags.is_valid(i) && flags.value(i) && in_window(updated_at),
            (None, None) => false,
        };
        tally.rows += 1;
        tally.inserts += u64::from(inserted);
        tally.updated += u64::from(was_updated && !inserted);
        tally.deleted += u64::from(was_deleted);
        let touched = inserted || was_updated || was_deleted;
        tally.touched += u64::from(touched);
        if touched {
            tally.versions += 1 + u64::from(was_updated);
        }
    }
}

/// Hashes of each row's key (all columns for a keyless table), for snapshot diffs.
fn key_hashes(batch: &RecordBatch, key_indices: &[usize]) -> Result<Vec<u64>> {
    let columns: Vec<ArrayRef> = key_indices.iter().map(|&i| batch.column(i).clone()).collect();
    let fields = columns.iter().map(|c| SortField::new(c.data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(|e| CostError::Encode(e.to_string()))?;
    let rows = converter
        .convert_columns(&columns)
        .map_err(|e| CostError::Encode(e.to_string()))?;
    Ok(rows.iter().map(|r| xxhash_rust::xxh3::xxh3_64(r.as_ref())).collect())
}

/// Keys seen in the sampled sub-ranges at one time, kept between profiles to count hard deletes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeySnapshot {
    version: u32,
    job: String,
    table: String,
    taken_at_micros: i64,
    ranges: Vec<SnapshotRange>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRange {
    from: i64,
    to: i64,
    /// Table rows each sampled row stands for.
    scale: f64,
    keys: Vec<u64>,
}

/// What one sub-range held.
struct ReadOutcome {
    tally: Tally,
    keys: Vec<u64>,
}

/// Batches kept for encoding, up to a row limit.
struct Keep {
    batches: Vec<RecordBatch>,
    rows: u64,
    limit: u64,
}

/// Reads sub-ranges, classifying every row against the window.
struct Sampler<'a> {
    source: &'a dyn Source,
    roles: &'a Roles,
    window: TimeWindow,
    /// Columns hashed into snapshot keys, when a snapshot is wanted.
    key_indices: Option<&'a [usize]>,
}

impl Sampler<'_> {
    async fn read(&self, range: CursorRange, keep: &mut Keep) -> Result<ReadOutcome> {
        let mut stream = self.source.extract(range, SAMPLE_BATCH_ROWS).await?;
        let mut tally = Tally::default();
        let mut keys = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            classify(&batch, self.roles, self.window, &mut tally);
            if let Some(indices) = self.key_indices {
                keys.extend(key_hashes(&batch, indices)?);
            }
            if keep.rows < keep.limit {
                keep.rows += batch.num_rows() as u64;
                keep.batches.push(batch);
            }
        }
        Ok(ReadOutcome { tally, keys })
    }
}

/// Bytes per row of the sample in the three encodings.
struct Encoded {
    /// Seconds spent writing Parquet (the worker's CPU cost per row).
    parquet_seconds: f64,
    parquet_zstd: Decimal,
    logical: Decimal,
    airbyte_json: Decimal,
}

/// Logical bytes of a batch by BigQuery data-type sizes (NULL is 0 bytes).
fn logical_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            let valid = (c.len() - c.null_count()) as u64;
            match c.data_type() {
                DataType::Boolean => valid,
                DataType::Decimal128(_, _) | DataType::Decimal32(_, _) | DataType::Decimal64(_, _) => 16 * valid,
                DataType::Decimal256(_, _) => 32 * valid,
                DataType::Utf8 => {
                    let a = c.as_string::<i32>();
                    a.iter().flatten().map(|s| 2 + s.len() as u64).sum()
                }
                DataType::LargeUtf8 => {
                    let a = c.as_string::<i64>();
                    a.iter().flatten().map(|s| 2 + s.len() as u64).sum()
                }
                DataType::Binary => {
                    let a = c.as_binary::<i32>();
                    a.iter().flatten().map(|s| 2 + s.len() as u64).sum()
                }
                DataType::LargeBinary => {
                    let a = c.as_binary::<i64>();
                    a.iter().flatten().map(|s| 2 + s.len() as u64).sum()
                }
                t if t.is_primitive() => 8 * valid,
                // Nested and other types: their Arrow buffers, a rough stand-in.
                _ => c.get_buffer_memory_size() as u64,
            }
        })
        .sum()
}

/// The batch with every zoned timestamp relabelled `+00:00` (same instants): the JSON writer
/// renders offsets without a time-zone database, and Airbyte sends UTC anyway.
fn utc_offsets(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::datatypes::{Field, Schema};
    fn relabel<T: arrow::datatypes::ArrowTimestampType>(a: &ArrayRef) -> ArrayRef {
        Arc::new(a.as_primitive::<T>().clone().with_timezone("+00:00")) as ArrayRef
    }
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(_, Some(_))))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let relabelled = match field.data_type() {
            DataType::Timestamp(TimeUnit::Second, Some(_)) => Some(relabel::<TimestampSecondType>(column)),
            DataType::Timestamp(TimeUnit::Millisecond, Some(_)) => Some(relabel::<TimestampMillisecondType>(column)),
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => Some(relabel::<TimestampMicrosecondType>(column)),
            DataType::Timestamp(TimeUnit::Nanosecond, Some(_)) => Some(relabel::<TimestampNanosecondType>(column)),
            _ => None,
        };
        match relabelled {
            Some(c) => {
                fields.push(Arc::new(Field::new(
                    field.name(),
                    c.data_type().clone(),
                    field.is_nullable(),
                )));
                columns.push(c);
            }
            None => {
                fields.push(field.clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| CostError::Encode(e.to_string()))
}

fn per_row(bytes: u64, rows: u64) -> Decimal {
    if rows == 0 {
        return Decimal::ZERO;
    }
    (Decimal::from(bytes) / Decimal::from(rows)).round_dp(1)
}

/// Encodes the sample to zstd Parquet (at the worker's level) and to Airbyte RECORD
/// messages. CPU-bound: runs on a blocking thread.
fn encode(schema: SchemaRef, batches: &[RecordBatch], stream: &str) -> Result<Encoded> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if rows == 0 {
        return Ok(Encoded {
            parquet_seconds: 0.0,
            parquet_zstd: Decimal::ZERO,
            logical: Decimal::ZERO,
            airbyte_json: Decimal::ZERO,
        });
    }
    let enc = |e: parquet::errors::ParquetError| CostError::Encode(e.to_string());
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(backhaul_core::file_format::ZSTD_LEVEL).map_err(enc)?,
        ))
        .set_max_row_group_row_count(Some(1024 * 1024))
        .build();
    let started = Instant::now();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(enc)?;
    for b in batches {
        writer.write(b).map_err(enc)?;
    }
    let meta = writer.close().map_err(enc)?;
    let parquet_seconds = started.elapsed().as_secs_f64();
    let compressed: i64 = meta.row_groups().iter().map(|g| g.compressed_size()).sum();
    let logical: u64 = batches.iter().map(logical_bytes).sum();

    let json_columns: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| {
            f.metadata()
                .get(EXTENSION_NAME_KEY)
                .is_some_and(|v| v == JSON_EXTENSION)
        })
        .map(|f| f.name().clone())
        .collect();
    let mut lines = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut lines);
        for b in batches {
            writer
                .write(&utc_offsets(b)?)
                .map_err(|e| CostError::Encode(e.to_string()))?;
        }
        writer.finish().map_err(|e| CostError::Encode(e.to_string()))?;
    }
    let mut data_bytes = 0u64;
    for line in lines.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        if json_columns.is_empty() {
            data_bytes += line.len() as u64;
            continue;
        }
        // JSON columns travel as JSON values in Airbyte records, not as escaped strings.
        let mut value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| CostError::Encode(e.to_string()))?;
        if let Some(map) = value.as_object_mut() {
            for name in &json_columns {
                if let Some(serde_json::Value::String(text)) = map.get(name)
                    && let Ok(parsed) = serde_json::from_str::<serde_json::Value>(text)
                {
                    map.insert(name.clone(), parsed);
                }
            }
        }
        data_bytes += serde_json::to_vec(&value)
            .map_err(|e| CostError::Encode(e.to_string()))?
            .len() as u64;
    }
    let stream_json = serde_json::to_string(stream).map_err(|e| CostError::Encode(e.to_string()))?;
    // {"type":"RECORD","record":{"stream":"orders","data":<row>,"emitted_at":1700000000000}}\n
    let envelope =
        format!(r#"{{"type":"RECORD","record":{{"stream":{stream_json},"data":,"emitted_at":1700000000000}}}}"#).len()
            as u64
            + 1;
    Ok(Encoded {
        parquet_seconds,
        parquet_zstd: per_row(compressed.max(0) as u64, rows),
        logical: per_row(logical, rows),
        airbyte_json: per_row(data_bytes + envelope * rows, rows),
    })
}

fn format_instant(micros: i64) -> String {
    CursorKind::Timestamp.format(micros)
}

/// Relative standard error of a proportion estimated from `hits` of `n` sampled rows.
fn relative_error(hits: u64, n: u64) -> Option<Dec> {
    if hits == 0 || n == 0 {
        return None;
    }
    let p = hits as f64 / n as f64;
    let rse = ((1.0 - p) / (n as f64 * p)).sqrt();
    Decimal::from_f64(rse).map(|d| Dec(d.round_dp(3)))
}

/// Takes the profile of one table.
pub async fn profile_table(input: &ProfileInput, opts: &ProfileOptions, now: DateTime<Utc>) -> Result<TableProfile> {
    let mut notes = Vec::new();
    let table = &input.table;
    let roles = resolve_roles(table, opts, &mut notes)?;
    let density = input.source.density(input.range).await?;
    let statistics_rows: f64 = density.iter().map(|b| b.rows).sum::<f64>();
    let statistics_bytes: f64 = density.iter().map(|b| b.bytes).sum::<f64>();

    let now_micros = now.timestamp_micros();
    let window_end = opts.window_end.unwrap_or_else(|| match table.cursor_kind {
        CursorKind::Timestamp => now_micros.min(input.range.to),
        CursorKind::Date => now_micros.min(input.range.to.saturating_mul(DAY_MICROS)),
        CursorKind::Integer => now_micros,
    });
    let window = TimeWindow {
        from: window_end - opts.window_days as i64 * DAY_MICROS,
        to: window_end,
    };
    // `updated_at` keeps only the last change: it dates every change exactly only when the
    // window ends about now; for an older window, rows changed again since are missed.
    let trailing = window.to >= now_micros - DAY_MICROS;

    let answer = input
        .source
        .activity(ActivityQuery {
            range: input.range,
            window,
            columns: opts.columns.clone(),
        })
        .await?;

    let window_cuts = match table.cursor_kind {
        CursorKind::Timestamp => vec![window.from, window.to],
        CursorKind::Date => vec![window.from.div_euclid(DAY_MICROS), window.to.div_euclid(DAY_MICROS)],
        CursorKind::Integer => vec![],
    };
    let strata = plan_strata(input.range, &density, opts, &window_cuts, &mut notes);
    let key_indices: Vec<usize> = if table.key_columns.is_empty() {
        (0..table.schema.fields().len()).collect()
    } else {
        table
            .key_columns
            .iter()
            .filter_map(|k| table.schema.index_of(k).ok())
            .collect()
    };
    let sampler = Sampler {
        source: input.source.as_ref(),
        roles: &roles,
        window,
        key_indices: opts.snapshot_file.is_some().then_some(key_indices.as_slice()),
    };
    let started = Instant::now();
    let mut keep = Keep {
        batches: Vec::new(),
        rows: 0,
        limit: if opts.exact { opts.sample_rows } else { u64::MAX },
    };
    let mut per_stratum = Vec::with_capacity(strata.len());
    for s in &strata {
        per_stratum.push(sampler.read(s.read, &mut keep).await?);
    }
    let extract_seconds = started.elapsed().as_secs_f64();
    let schema = table.schema.clone();
    let stream = input.table_name.clone();
    let batches = keep.batches;
    let (encoded, batches) = tokio::task::spawn_blocking(move || {
        let encoded = encode(schema, &batches, &stream);
        (encoded, batches)
    })
    .await
    .map_err(|e| CostError::Encode(format!("encoding task failed: {e}")))?;
    let encoded = encoded?;
    let sampled_rows: u64 = per_stratum.iter().map(|o| o.tally.rows).sum();
    let kept_rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    drop(batches);
    // What one worker would spend per row: reading it, plus writing it as Parquet (the JSON
    // encoding is the planner's, not the pipeline's, so it is not timed).
    let seconds_per_row = (sampled_rows > 0 && kept_rows > 0)
        .then(|| extract_seconds / sampled_rows as f64 + encoded.parquet_seconds / kept_rows as f64);

    // Scale each stratum's counts to the table: by its statistics rows per sampled row, or by
    // width when a sub-range came back empty or there are no statistics.
    let mut total = Tally::default();
    for o in &per_stratum {
        total.add(&o.tally);
    }
    let pooled = |hits: u64| {
        if total.rows == 0 {
            0.0
        } else {
            hits as f64 / total.rows as f64
        }
    };
    let estimate = |pick: fn(&Tally) -> u64| -> f64 {
        if opts.exact {
            return pick(&total) as f64;
        }
        strata
            .iter()
            .zip(&per_stratum)
            .map(|(s, o)| {
                let hits = pick(&o.tally) as f64;
                match s.statistics_rows {
                    Some(n) if o.tally.rows > 0 => n * hits / o.tally.rows as f64,
                    Some(n) => n * pooled(pick(&total)),
                    None => hits * s.whole.width() as f64 / s.read.width() as f64,
                }
            })
            .sum()
    };
    let rows = if opts.exact {
        Measured::new(
            sampled_rows,
            Bound::Exact,
            "counted by reading the whole range (--exact)",
        )
    } else if statistics_rows > 0.0 {
        Measured::new(
            statistics_rows.round() as u64,
            Bound::Estimate,
            "the source's statistics (catalog estimate; --exact counts)",
        )
    } else {
        let mut m = Measured::new(
            estimate(|t| t.rows).round() as u64,
            Bound::Estimate,
            "sampled sub-ranges scaled by width (the source keeps no statistics)",
        );
        m.relative_error = relative_error(sampled_rows, sampled_rows.max(1));
        m
    };

    let rows_for_api = rows.value;
    let sample_bound = if opts.exact { Bound::Exact } else { Bound::Estimate };
    let sample_basis = if opts.exact {
        "every row of the range (--exact)".to_string()
    } else {
        format!("{sampled_rows} sampled rows in {} sub-ranges", strata.len())
    };
    let measure = |pick: fn(&Tally) -> u64, last_modified: bool, what: &str| -> Measured {
        let hits = pick(&total);
        let mut bound = sample_bound;
        if last_modified && !trailing {
            bound = Bound::LowerBound;
        }
        let mut m = Measured::new(estimate(pick).round() as u64, bound, format!("{what}; {sample_basis}"));
        if !opts.exact {
            m.relative_error = relative_error(hits, total.rows);
        }
        m
    };

    let mut columns = Vec::new();
    if let Some(c) = &roles.created {
        columns.push(format!("created_at={}", c.name));
    }
    if let Some(c) = &roles.updated {
        columns.push(format!("updated_at={}", c.name));
    }
    if let Some(c) = &roles.deleted {
        columns.push(format!("soft_delete={}", c.name));
    }
    let flag_deletes = roles.deleted.as_ref().is_some_and(|c| c.kind == ColumnKind::Flag);
    let mut sampled_inserts = roles.created.as_ref().map(|c| {
        measure(
            |t| t.inserts,
            false,
            &format!("rows whose `{}` is in the window", c.name),
        )
    });
    let mut sampled_updates = roles.updated.as_ref().map(|c| {
        measure(
            |t| t.updated,
            true,
            &format!("rows whose `{}` is in the window (after their insert)", c.name),
        )
    });
    let mut sampled_deletes = roles.deleted.as_ref().map(|c| {
        measure(
            |t| t.deleted,
            flag_deletes,
            &format!("rows soft-deleted in the window (`{}`)", c.name),
        )
    });
    let updates_known = roles.updated.is_some();
    let touched_what = if table.key_columns.is_empty() {
        "row versions touched (keyless: 1 per insert or delete, 2 per update)"
    } else {
        "distinct keys inserted, updated or soft-deleted"
    };
    let mut sampled_touched = (updates_known && roles.created.is_some()).then(|| {
        if table.key_columns.is_empty() {
            measure(|t| t.versions, true, touched_what)
        } else {
            measure(|t| t.touched, true, touched_what)
        }
    });
    if updates_known && !trailing {
        notes.push(format!(
            "the window ends {} (not now): rows updated in it and again later carry a later updated_at, so updates are a lower bound",
            format_instant(window.to)
        ));
    }
    if table.key_columns.is_empty() && updates_known {
        notes.push(
            "keyless table: a row updated several times in the window touches more versions than the 2 counted (lower bound)"
                .into(),
        );
    }

    // Hard deletes by a snapshot diff, when configured.
    if let Some(path) = &opts.snapshot_file {
        let scales: Vec<f64> = strata
            .iter()
            .zip(&per_stratum)
            .map(|(s, o)| match s.statistics_rows {
                Some(n) if o.tally.rows > 0 => n / o.tally.rows as f64,
                _ => s.whole.width() as f64 / s.read.width() as f64,
            })
            .collect();
        let fresh: Vec<SnapshotRange> = strata
            .iter()
            .zip(per_stratum.iter().zip(scales))
            .map(|(s, (o, scale))| SnapshotRange {
                from: s.read.from,
                to: s.read.to,
                scale: if opts.exact { 1.0 } else { scale },
                keys: o.keys.clone(),
            })
            .collect();
        let hard = snapshot_diff(input, path, fresh, &key_indices, now_micros, window, &mut notes).await?;
        if let Some(hard) = hard {
            if let Some(t) = &mut sampled_touched {
                t.value += hard.value;
                t.bound = t.bound.combine(hard.bound);
                t.basis = format!("{}; plus hard deletes from the key-snapshot diff", t.basis);
            }
            sampled_deletes = Some(match sampled_deletes {
                None => hard,
                Some(soft) => Measured {
                    value: soft.value + hard.value,
                    bound: soft.bound.combine(hard.bound),
                    relative_error: None,
                    basis: format!("{} plus {}", soft.basis, hard.basis),
                },
            });
        }
    }

    // The source's own answer wins over the sample for everything it knows.
    let mut method = if opts.exact {
        ActivityMethod::FullScan
    } else if roles.created.is_some() || roles.updated.is_some() || roles.deleted.is_some() {
        ActivityMethod::Sample
    } else {
        ActivityMethod::None
    };
    if let Some(a) = &answer {
        let from_source = |c: Option<Counted>| {
            c.map(|c| {
                Measured::new(
                    c.value,
                    if c.exact { Bound::Exact } else { Bound::Estimate },
                    format!("the source: {}", a.method),
                )
            })
        };
        let mut used = false;
        for (mine, theirs) in [
            (&mut sampled_inserts, a.inserts),
            (&mut sampled_updates, a.updated_keys),
            (&mut sampled_deletes, a.deleted_keys),
            (&mut sampled_touched, a.touched_keys),
        ] {
            if let Some(m) = from_source(theirs) {
                *mine = Some(m);
                used = true;
            }
        }
        if used {
            method = ActivityMethod::Source;
        }
    }
    if sampled_updates.is_none() {
        notes.push(
            "no usable updated_at column and the source reports no updates: updates are unknown, so MAR and synced \
             records are upper bounds (every row counted once a month)"
                .into(),
        );
    }
    if sampled_inserts.is_none() {
        notes.push("no usable created_at column: inserts are unknown".into());
    }
    if sampled_deletes.is_none() {
        notes.push(
            "deletes are unknown (set profile.soft_delete, or profile.snapshot_file to diff sampled keys between two profiles)"
                .into(),
        );
    }
    if method != ActivityMethod::FullScan {
        notes.push("rows outside the job's range are not profiled: the range is taken as the table".into());
    }

    let throughput = seconds_per_row.filter(|s| *s > 0.0).map(|s| Throughput {
        rows_per_second: Dec(Decimal::from_f64(1.0 / s).unwrap_or_default().round_dp(0)),
        rows: sampled_rows,
        seconds: Dec(Decimal::from_f64(s * sampled_rows as f64)
            .unwrap_or_default()
            .round_dp(3)),
    });
    let method_text = if opts.exact {
        "full scan of the range".to_string()
    } else {
        format!(
            "{} strata of equal cursor width, one random sub-range each sized for about {} rows; counts scaled by each stratum's statistics (ratio estimator)",
            strata.len(),
            opts.sample_rows / strata.len().max(1) as u64
        )
    };
    Ok(TableProfile {
        name: input.table_name.clone(),
        source_kind: input.source_kind.clone(),
        cursor: table.cursor_column.clone(),
        cursor_kind: table.cursor_kind.as_str().to_string(),
        range_from: table.cursor_kind.format(input.range.from),
        range_to: table.cursor_kind.format(input.range.to),
        primary_key: table.key_columns.clone(),
        rows,
        source_bytes: statistics_bytes.round() as u64,
        chunks: input.chunks,
        file_size: input.file_size,
        bytes_per_row: BytesPerRow {
            parquet_zstd: Dec(encoded.parquet_zstd),
            logical: Dec(encoded.logical),
            airbyte_json: Dec(encoded.airbyte_json),
            source_statistics: (statistics_rows > 0.0)
                .then(|| Decimal::from_f64(statistics_bytes / statistics_rows).map(|d| Dec(d.round_dp(1))))
                .flatten(),
        },
        sample: SampleInfo {
            rows: sampled_rows,
            ranges: strata.len() as u64,
            method: method_text,
        },
        activity: ActivityProfile {
            method,
            window_from: format_instant(window.from),
            window_to: format_instant(window.to),
            window_days: opts.window_days,
            inserts: sampled_inserts,
            updated_keys: sampled_updates,
            deleted_keys: sampled_deletes,
            touched_keys: sampled_touched,
            columns,
            notes,
        },
        throughput,
        api: input
            .source
            .request_profile()
            .map(|profile| crate::profile::ApiRequests::estimate(rows_for_api, input.chunks, &profile)),
    })
}

/// Diffs the sampled keys against the snapshot file (when it exists) and writes a fresh one.
/// Returns the estimated hard deletes in the window, if a diff was possible.
async fn snapshot_diff(
    input: &ProfileInput,
    path: &Path,
    fresh: Vec<SnapshotRange>,
    key_indices: &[usize],
    now_micros: i64,
    window: TimeWindow,
    notes: &mut Vec<String>,
) -> Result<Option<Measured>> {
    let previous: Option<KeySnapshot> = match std::fs::read_to_string(path) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| {
            CostError::invalid(path.display().to_string(), format!("line {}", e.line()), e.to_string())
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(CostError::io(path, e)),
    };
    let write = |snapshot: &KeySnapshot| -> Result<()> {
        let text = serde_json::to_string(snapshot).expect("a snapshot serializes");
        std::fs::write(path, text).map_err(|e| CostError::io(path, e))
    };
    let Some(previous) = previous else {
        write(&KeySnapshot {
            version: 1,
            job: input.job.clone(),
            table: input.table_name.clone(),
            taken_at_micros: now_micros,
            ranges: fresh,
        })?;
        notes.push(format!(
            "hard deletes: first key snapshot saved to {}; profile again in a few days to measure them",
            path.display()
        ));
        return Ok(None);
    };
    if previous.job != input.job || previous.table != input.table_name {
        return Err(CostError::invalid(
            path.display().to_string(),
            "job",
            format!(
                "this key snapshot belongs to job `{}` table `{}`; use another profile.snapshot_file",
                previous.job, previous.table
            ),
        ));
    }
    let elapsed = now_micros - previous.taken_at_micros;
    if elapsed < 3_600_000_000 {
        notes.push("hard deletes: the key snapshot is less than an hour old; nothing diffed".into());
        return Ok(None);
    }
    // Read the same sub-ranges again; keys gone since are deleted (the cursor must not change
    // for a row, or moved rows count as deletes).
    let mut deleted = 0.0;
    let mut ranges = Vec::with_capacity(previous.ranges.len());
    let roles = Roles::default();
    let sampler = Sampler {
        source: input.source.as_ref(),
        roles: &roles,
        window,
        key_indices: Some(key_indices),
    };
    let mut keep_nothing = Keep {
        batches: Vec::new(),
        rows: 0,
        limit: 0,
    };
    for r in &previous.ranges {
        if r.from >= r.to {
            continue;
        }
        let out = sampler.read(CursorRange::new(r.from, r.to), &mut keep_nothing).await?;
        let now_keys: HashSet<u64> = out.keys.iter().copied().collect();
        let gone = r.keys.iter().filter(|k| !now_keys.contains(k)).count();
        deleted += gone as f64 * r.scale;
        ranges.push(SnapshotRange {
            from: r.from,
            to: r.to,
            scale: r.scale,
            keys: out.keys,
        });
    }
    let per_window = deleted * (window.to - window.from) as f64 / elapsed as f64;
    write(&KeySnapshot {
        version: 1,
        job: input.job.clone(),
        table: input.table_name.clone(),
        taken_at_micros: now_micros,
        ranges,
    })?;
    Ok(Some(Measured::new(
        per_window.round() as u64,
        Bound::Estimate,
        format!(
            "hard deletes from a key-snapshot diff over {:.1} days, scaled to the window",
            elapsed as f64 / DAY_MICROS as f64
        ),
    )))
}
