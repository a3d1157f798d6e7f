//! The portable chunk fingerprint: a summary of a chunk's rows that the worker computes while
//! writing and that any SQL warehouse recomputes over the committed rows without moving them.
//!
//! It holds the row count and, per top-level column, the NULL count plus one exact,
//! order-independent measure chosen by the column's Arrow type ([`MeasureKind::of`]):
//!
//! | Arrow type | measure |
//! |---|---|
//! | `Int*`, `UInt*` | sum (exact: accumulated in 256 bits, cannot overflow) |
//! | `Decimal128`, `Decimal256` up to precision 57 | sum of the unscaled values, scale recorded |
//! | `Date*`, `Time*`, `Timestamp` (any unit, any zone) | min, max and sum of the raw values in the column's own unit |
//! | `Float16/32/64` | min and max of the non-NaN values (float sums depend on order) |
//! | `Utf8*`, `Binary*`, `FixedSizeBinary` | sum of the byte lengths of non-null values |
//! | JSON text (`Utf8*` marked `arrow.json`) | sum of the byte lengths without JSON whitespace ([`json_bytes`]) |
//! | `Boolean` | count of `true` |
//! | anything else (lists, structs, maps, dictionaries, `Decimal256` beyond precision 57) | NULL count only |
//!
//! `Decimal256` sums stop at precision 57: 2^63 rows of values below 10^57 (< 2^190) stay
//! below 2^255, larger precisions could overflow 256 bits.
//!
//! The SQL that recomputes it lives beside it in [`FingerprintSql`]; what each measure can and
//! cannot catch is in `docs/verification.md`.

use std::fmt;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, FixedSizeBinaryArray, GenericByteArray,
    GenericByteViewArray, PrimitiveArray, RecordBatch,
};
use arrow::datatypes::ArrowNativeType;
use arrow::datatypes::{
    ByteArrayType, ByteViewType, DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, Field, Float16Type,
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, SchemaRef, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type, i256,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod sql;

pub use sql::{AnsiDialect, FingerprintDialect, FingerprintSql, Slot};

/// Field metadata key naming an Arrow extension type; JSON text columns carry `arrow.json`.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// The canonical Arrow JSON extension type: a string column holding JSON text.
pub const JSON_EXTENSION: &str = "arrow.json";

/// Largest `Decimal256` precision whose sum over 2^63 rows cannot overflow 256 bits.
pub const MAX_SUMMED_DECIMAL256_PRECISION: u8 = 57;

/// Row count and per-column measures of a chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkFingerprint {
    /// Number of rows.
    pub rows: u64,
    /// One entry per top-level column, in schema order.
    pub columns: Vec<ColumnFingerprint>,
}

/// The measures of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnFingerprint {
    /// Column name.
    pub name: String,
    /// NULL values in the column.
    pub nulls: u64,
    /// The type-specific measure.
    pub measure: ColumnMeasure,
}

/// The unit raw temporal values are counted in: days for `Date32`, the type's own unit for
/// the others (`Date64` is milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochUnit {
    /// Days since 1970-01-01 (`Date32`).
    Day,
    /// Seconds.
    Second,
    /// Milliseconds.
    Millisecond,
    /// Microseconds.
    Microsecond,
    /// Nanoseconds.
    Nanosecond,
}

impl EpochUnit {
    fn of_time_unit(unit: &TimeUnit) -> Self {
        match unit {
            TimeUnit::Second => EpochUnit::Second,
            TimeUnit::Millisecond => EpochUnit::Millisecond,
            TimeUnit::Microsecond => EpochUnit::Microsecond,
            TimeUnit::Nanosecond => EpochUnit::Nanosecond,
        }
    }

    /// Lower-case name, e.g. `microsecond`.
    pub fn as_str(self) -> &'static str {
        match self {
            EpochUnit::Day => "day",
            EpochUnit::Second => "second",
            EpochUnit::Millisecond => "millisecond",
            EpochUnit::Microsecond => "microsecond",
            EpochUnit::Nanosecond => "nanosecond",
        }
    }
}

/// Which measure a column gets, decided by its Arrow type alone ([`MeasureKind::of`]); the
/// builder and the SQL both follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureKind {
    /// Exact sum of integer values.
    IntegerSum,
    /// Exact sum of unscaled decimal values.
    DecimalSum {
        /// The column's scale.
        scale: i8,
    },
    /// Min, max and exact sum of raw temporal values.
    Epoch {
        /// The unit of the raw values.
        unit: EpochUnit,
    },
    /// Min and max of non-NaN float values.
    FloatRange {
        /// Bits of the float type (16, 32 or 64), to read SQL results back exactly.
        bits: u8,
    },
    /// Sum of byte lengths of non-null values; for JSON text, without whitespace
    /// ([`json_bytes`]).
    ByteLength {
        /// The column holds JSON text (`arrow.json` extension).
        json: bool,
    },
    /// Count of `true` values.
    TrueCount,
    /// No measure beyond the NULL count.
    NullCount,
}

impl MeasureKind {
    /// The measure of `field`.
    pub fn of(field: &Field) -> Self {
        match field.data_type() {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => MeasureKind::IntegerSum,
            DataType::Decimal128(_, scale) => MeasureKind::DecimalSum { scale: *scale },
            DataType::Decimal256(precision, scale) if *precision <= MAX_SUMMED_DECIMAL256_PRECISION => {
                MeasureKind::DecimalSum { scale: *scale }
            }
            DataType::Date32 => MeasureKind::Epoch { unit: EpochUnit::Day },
            DataType::Date64 => MeasureKind::Epoch {
                unit: EpochUnit::Millisecond,
            },
            DataType::Timestamp(unit, _) | DataType::Time32(unit) | DataType::Time64(unit) => MeasureKind::Epoch {
                unit: EpochUnit::of_time_unit(unit),
            },
            DataType::Float16 => MeasureKind::FloatRange { bits: 16 },
            DataType::Float32 => MeasureKind::FloatRange { bits: 32 },
            DataType::Float64 => MeasureKind::FloatRange { bits: 64 },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => MeasureKind::ByteLength {
                json: field.metadata().get(EXTENSION_NAME_KEY).map(String::as_str) == Some(JSON_EXTENSION),
            },
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                MeasureKind::ByteLength { json: false }
            }
            DataType::Boolean => MeasureKind::TrueCount,
            _ => MeasureKind::NullCount,
        }
    }

    fn empty(self) -> ColumnMeasure {
        let zero = Exact(i256::ZERO);
        match self {
            MeasureKind::IntegerSum => ColumnMeasure::Sum { sum: zero },
            MeasureKind::DecimalSum { scale } => ColumnMeasure::DecimalSum { scale, sum: zero },
            MeasureKind::Epoch { unit } => ColumnMeasure::Epoch {
                unit,
                min: None,
                max: None,
                sum: zero,
            },
            MeasureKind::FloatRange { .. } => ColumnMeasure::FloatRange { min: None, max: None },
            MeasureKind::ByteLength { .. } => ColumnMeasure::ByteLength { bytes: 0 },
            MeasureKind::TrueCount => ColumnMeasure::TrueCount { count: 0 },
            MeasureKind::NullCount => ColumnMeasure::NullCount,
        }
    }
}

/// An exact integer of up to 256 bits, serialized as a decimal string so JSON never rounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exact(pub i256);

/// A raw temporal value, serialized as a decimal string (nanosecond epochs exceed what JSON
/// numbers hold exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(pub i64);

/// A float, serialized as its shortest round-tripping text. Equal when numerically equal, so
/// `0.0 == -0.0` as in SQL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Float(pub f64);

macro_rules! text_serde {
    ($t:ty, $inner:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse::<$inner>()
                    .map(Self)
                    .map_err(|_| serde::de::Error::custom(format!("`{text}` is not {}", $what)))
            }
        }
    };
}
text_serde!(Exact, i256, "an integer");
text_serde!(Epoch, i64, "a 64-bit integer");

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug prints the shortest text that parses back to the same f64 (with an exponent
        // for large magnitudes), unlike Display.
        write!(f, "{:?}", self.0)
    }
}
impl Serialize for Float {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<f64>()
            .map(Float)
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a float")))
    }
}

/// The type-specific measure of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnMeasure {
    /// Only the NULL count is measured.
    NullCount,
    /// Exact sum of integer values.
    Sum {
        /// The sum.
        sum: Exact,
    },
    /// Exact sum of unscaled decimal values (`12.34` at scale 2 counts as 1234).
    DecimalSum {
        /// The column's scale.
        scale: i8,
        /// The sum of unscaled values.
        sum: Exact,
    },
    /// Raw temporal values in `unit`: smallest, largest and exact sum.
    Epoch {
        /// Unit of the values.
        unit: EpochUnit,
        /// Smallest value; `None` when every value is NULL.
        min: Option<Epoch>,
        /// Largest value.
        max: Option<Epoch>,
        /// Exact sum.
        sum: Exact,
    },
    /// Smallest and largest non-NaN value.
    FloatRange {
        /// Smallest value; `None` when there is none.
        min: Option<Float>,
        /// Largest value.
        max: Option<Float>,
    },
    /// Sum of byte lengths of non-null values.
    ByteLength {
        /// Total bytes.
        bytes: u64,
    },
    /// Count of `true` values.
    TrueCount {
        /// How many.
        count: u64,
    },
}

impl ColumnMeasure {
    fn kind_name(&self) -> &'static str {
        match self {
            ColumnMeasure::NullCount => "null_count",
            ColumnMeasure::Sum { .. } => "sum",
            ColumnMeasure::DecimalSum { .. } => "decimal_sum",
            ColumnMeasure::Epoch { .. } => "epoch",
            ColumnMeasure::FloatRange { .. } => "float_range",
            ColumnMeasure::ByteLength { .. } => "byte_length",
            ColumnMeasure::TrueCount { .. } => "true_count",
        }
    }

    /// Adds the measure of other rows of the same column.
    fn merge(&mut self, other: &ColumnMeasure) -> std::result::Result<(), String> {
        match (self, other) {
            (ColumnMeasure::NullCount, ColumnMeasure::NullCount) => {}
            (ColumnMeasure::Sum { sum }, ColumnMeasure::Sum { sum: s }) => sum.0 = sum.0.wrapping_add(s.0),
            (ColumnMeasure::DecimalSum { scale, sum }, ColumnMeasure::DecimalSum { scale: sc, sum: s })
                if scale == sc =>
            {
                sum.0 = sum.0.wrapping_add(s.0)
            }
            (
                ColumnMeasure::Epoch { unit, min, max, sum },
                ColumnMeasure::Epoch {
                    unit: u,
                    min: mi,
                    max: ma,
                    sum: s,
                },
            ) if unit == u => {
                *min = opt_combine(*min, *mi, |a, b| Epoch(a.0.min(b.0)));
                *max = opt_combine(*max, *ma, |a, b| Epoch(a.0.max(b.0)));
                sum.0 = sum.0.wrapping_add(s.0);
            }
            (ColumnMeasure::FloatRange { min, max }, ColumnMeasure::FloatRange { min: mi, max: ma }) => {
                *min = opt_combine(*min, *mi, |a, b| Float(a.0.min(b.0)));
                *max = opt_combine(*max, *ma, |a, b| Float(a.0.max(b.0)));
            }
            (ColumnMeasure::ByteLength { bytes }, ColumnMeasure::ByteLength { bytes: b }) => *bytes += b,
            (ColumnMeasure::TrueCount { count }, ColumnMeasure::TrueCount { count: c }) => *count += c,
            (this, other) => {
                return Err(format!(
                    "cannot merge a `{}` measure with a `{}` one",
                    this.kind_name(),
                    other.kind_name()
                ));
            }
        }
        Ok(())
    }
}

fn opt_combine<T: Copy>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// One way a measured fingerprint differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The column, or `None` for the chunk's row count (and its checksum).
    pub column: Option<String>,
    /// What differs: `rows`, `checksum`, `nulls`, `sum`, `min`, `max`, `byte_length`,
    /// `true_count`, `measure` (another kind of measure) or `column` (present on one side only).
    pub measure: String,
    /// The expected value, as text.
    pub expected: String,
    /// The measured value, as text.
    pub actual: String,
}

impl Difference {
    pub(crate) fn new(
        column: Option<&str>,
        measure: &str,
        expected: impl fmt::Display,
        actual: impl fmt::Display,
    ) -> Self {
        Difference {
            column: column.map(str::to_string),
            measure: measure.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "column `{column}` {}", self.measure)?,
            None => write!(f, "{}", self.measure)?,
        }
        write!(f, ": expected {}, found {}", self.expected, self.actual)
    }
}

fn show_opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "none".to_string(), T::to_string)
}

impl ChunkFingerprint {
    /// Every way `actual` differs from `self` (the expected fingerprint): rows first, then
    /// columns in `self`'s order, then columns only `actual` has.
    pub fn differences(&self, actual: &ChunkFingerprint) -> Vec<Difference> {
        let mut out = Vec::new();
        if self.rows != actual.rows {
            out.push(Difference::new(None, "rows", self.rows, actual.rows));
        }
        for expected in &self.columns {
            let name = expected.name.as_str();
            let Some(found) = actual.columns.iter().find(|c| c.name == expected.name) else {
                out.push(Difference::new(Some(name), "column", "present", "missing"));
                continue;
            };
            if expected.nulls != found.nulls {
                out.push(Difference::new(Some(name), "nulls", expected.nulls, found.nulls));
            }
            measure_differences(name, &expected.measure, &found.measure, &mut out);
        }
        for extra in actual
            .columns
            .iter()
            .filter(|a| !self.columns.iter().any(|c| c.name == a.name))
        {
            out.push(Difference::new(Some(&extra.name), "column", "missing", "present"));
        }
        out
    }

    /// Adds the fingerprint of other rows of the same schema (another part of the chunk).
    pub fn merge(&mut self, other: &ChunkFingerprint) -> Result<()> {
        if self.columns.is_empty() && self.rows == 0 {
            *self = other.clone();
            return Ok(());
        }
        let same_columns = self.columns.len() == other.columns.len()
            && self.columns.iter().zip(&other.columns).all(|(a, b)| a.name == b.name);
        if !same_columns {
            return Err(Error::Internal(
                "cannot merge fingerprints of different columns".to_string(),
            ));
        }
        self.rows += other.rows;
        for (mine, theirs) in self.columns.iter_mut().zip(&other.columns) {
            mine.nulls += theirs.nulls;
            mine.measure
                .merge(&theirs.measure)
                .map_err(|m| Error::Internal(format!("column `{}`: {m}", mine.name)))?;
        }
        Ok(())
    }
}

fn measure_differences(column: &str, expected: &ColumnMeasure, actual: &ColumnMeasure, out: &mut Vec<Difference>) {
    let c = Some(column);
    match (expected, actual) {
        (ColumnMeasure::NullCount, ColumnMeasure::NullCount) => {}
        (ColumnMeasure::Sum { sum: e }, ColumnMeasure::Sum { sum: a }) => {
            if e != a {
                out.push(Difference::new(c, "sum", e, a));
            }
        }
        (ColumnMeasure::DecimalSum { scale: es, sum: e }, ColumnMeasure::DecimalSum { scale: as_, sum: a }) => {
            if es != as_ {
                out.push(Difference::new(c, "scale", es, as_));
            } else if e != a {
                out.push(Difference::new(
                    c,
                    "sum",
                    unscaled_text(e.0, *es),
                    unscaled_text(a.0, *as_),
                ));
            }
        }
        (
            ColumnMeasure::Epoch {
                unit: eu,
                min: emin,
                max: emax,
                sum: esum,
            },
            ColumnMeasure::Epoch {
                unit: au,
                min: amin,
                max: amax,
                sum: asum,
            },
        ) => {
            if eu != au {
                out.push(Difference::new(c, "unit", eu.as_str(), au.as_str()));
                return;
            }
            if emin != amin {
                out.push(Difference::new(c, "min", show_opt(emin), show_opt(amin)));
            }
            if emax != amax {
                out.push(Difference::new(c, "max", show_opt(emax), show_opt(amax)));
            }
            if esum != asum {
                out.push(Difference::new(c, "sum", esum, asum));
            }
        }
        (ColumnMeasure::FloatRange { min: emin, max: emax }, ColumnMeasure::FloatRange { min: amin, max: amax }) => {
            if emin != amin {
                out.push(Difference::new(c, "min", show_opt(emin), show_opt(amin)));
            }
            if emax != amax {
                out.push(Difference::new(c, "max", show_opt(emax), show_opt(amax)));
            }
        }
        (ColumnMeasure::ByteLength { bytes: e }, ColumnMeasure::ByteLength { bytes: a }) => {
            if e != a {
                out.push(Difference::new(c, "byte_length", e, a));
            }
        }
        (ColumnMeasure::TrueCount { count: e }, ColumnMeasure::TrueCount { count: a }) => {
            if e != a {
                out.push(Difference::new(c, "true_count", e, a));
            }
        }
        (e, a) => out.push(Difference::new(c, "measure", e.kind_name(), a.kind_name())),
    }
}

/// `1234` at scale 2 as `12.34`, for messages.
fn unscaled_text(v: i256, scale: i8) -> String {
    if scale <= 0 {
        return format!("{v}e{}", -scale).trim_end_matches("e0").to_string();
    }
    let text = v.to_string();
    let (sign, digits) = text.strip_prefix('-').map_or(("", text.as_str()), |d| ("-", d));
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Parses decimal text (`-12.3`, `5`, `1.50`) into its unscaled value at `scale`; `None` when
/// it has more fractional digits than `scale` or is not a number.
fn parse_unscaled(text: &str, scale: i8) -> Option<i256> {
    let text = text.trim();
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let scale = usize::try_from(scale).ok()?;
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    let digits = format!("{int}{frac:0<scale$}");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    let v: i256 = if significant.is_empty() {
        i256::ZERO
    } else {
        significant.parse().ok()?
    };
    Some(if sign { v.wrapping_neg() } else { v })
}

/// Accumulates a [`ChunkFingerprint`] over batches of one schema. Cheap enough for the hot
/// path: NULL counts come from Arrow's bitmaps, byte lengths from offsets, sums run in tight
/// loops over the value buffers with 128-bit accumulators per batch; nothing is allocated per
/// row.
#[derive(Debug, Clone)]
pub struct FingerprintBuilder {
    kinds: Vec<MeasureKind>,
    fingerprint: ChunkFingerprint,
}

impl FingerprintBuilder {
    /// A builder for batches of `schema`.
    pub fn new(schema: &SchemaRef) -> Self {
        let kinds: Vec<MeasureKind> = schema.fields().iter().map(|f| MeasureKind::of(f)).collect();
        let columns = schema
            .fields()
            .iter()
            .zip(&kinds)
            .map(|(f, kind)| ColumnFingerprint {
                name: f.name().clone(),
                nulls: 0,
                measure: kind.empty(),
            })
            .collect();
        FingerprintBuilder {
            kinds,
            fingerprint: ChunkFingerprint { rows: 0, columns },
        }
    }

    /// Adds the rows of one batch (of the builder's schema).
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_columns() != self.kinds.len() {
            return Err(Error::Internal(format!(
                "fingerprint of {} columns given a batch of {}",
                self.kinds.len(),
                batch.num_columns()
            )));
        }
        self.fingerprint.rows += batch.num_rows() as u64;
        for ((column, kind), array) in self
            .fingerprint
            .columns
            .iter_mut()
            .zip(&self.kinds)
            .zip(batch.columns())
        {
            column.nulls += array.logical_null_count() as u64;
            measure_array(*kind, array, &mut column.measure)
                .map_err(|m| Error::Internal(format!("fingerprint of column `{}`: {m}", column.name)))?;
        }
        Ok(())
    }

    /// The fingerprint so far.
    pub fn fingerprint(&self) -> &ChunkFingerprint {
        &self.fingerprint
    }

    /// The finished fingerprint.
    pub fn finish(self) -> ChunkFingerprint {
        self.fingerprint
    }
}

fn measure_array(kind: MeasureKind, array: &ArrayRef, measure: &mut ColumnMeasure) -> std::result::Result<(), String> {
    let batch = batch_measure(kind, array)?;
    measure.merge(&batch)
}

/// The measure of one array alone.
fn batch_measure(kind: MeasureKind, a: &ArrayRef) -> std::result::Result<ColumnMeasure, String> {
    let unexpected = || format!("a {} array does not fit measure {kind:?}", a.data_type());
    Ok(match kind {
        MeasureKind::NullCount => ColumnMeasure::NullCount,
        MeasureKind::IntegerSum => {
            let sum = match a.data_type() {
                DataType::Int8 => int_sum(a.as_primitive::<Int8Type>()),
                DataType::Int16 => int_sum(a.as_primitive::<Int16Type>()),
                DataType::Int32 => int_sum(a.as_primitive::<Int32Type>()),
                DataType::Int64 => int_sum(a.as_primitive::<Int64Type>()),
                DataType::UInt8 => int_sum(a.as_primitive::<UInt8Type>()),
                DataType::UInt16 => int_sum(a.as_primitive::<UInt16Type>()),
                DataType::UInt32 => int_sum(a.as_primitive::<UInt32Type>()),
                DataType::UInt64 => int_sum(a.as_primitive::<UInt64Type>()),
                _ => return Err(unexpected()),
            };
            ColumnMeasure::Sum {
                sum: Exact(i256::from_i128(sum)),
            }
        }
        MeasureKind::DecimalSum { scale } => {
            let sum = match a.data_type() {
                DataType::Decimal128(..) => decimal128_sum(a.as_primitive::<Decimal128Type>()),
                DataType::Decimal256(..) => {
                    let arr = a.as_primitive::<Decimal256Type>();
                    fold_valid(arr, i256::ZERO, |acc, v| acc.wrapping_add(v))
                }
                _ => return Err(unexpected()),
            };
            ColumnMeasure::DecimalSum { scale, sum: Exact(sum) }
        }
        MeasureKind::Epoch { unit } => {
            let (min, max, sum) = match a.data_type() {
                DataType::Date32 => epoch_stats(a.as_primitive::<Date32Type>()),
                DataType::Date64 => epoch_stats(a.as_primitive::<Date64Type>()),
                DataType::Time32(TimeUnit::Second) => epoch_stats(a.as_primitive::<Time32SecondType>()),
                DataType::Time32(TimeUnit::Millisecond) => epoch_stats(a.as_primitive::<Time32MillisecondType>()),
                DataType::Time64(TimeUnit::Microsecond) => epoch_stats(a.as_primitive::<Time64MicrosecondType>()),
                DataType::Time64(TimeUnit::Nanosecond) => epoch_stats(a.as_primitive::<Time64NanosecondType>()),
                DataType::Timestamp(TimeUnit::Second, _) => epoch_stats(a.as_primitive::<TimestampSecondType>()),
                DataType::Timestamp(TimeUnit::Millisecond, _) => {
                    epoch_stats(a.as_primitive::<TimestampMillisecondType>())
                }
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    epoch_stats(a.as_primitive::<TimestampMicrosecondType>())
                }
                DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                    epoch_stats(a.as_primitive::<TimestampNanosecondType>())
                }
                _ => return Err(unexpected()),
            };
            ColumnMeasure::Epoch {
                unit,
                min: min.map(Epoch),
                max: max.map(Epoch),
                sum: Exact(i256::from_i128(sum)),
            }
        }
        MeasureKind::FloatRange { .. } => {
            let (min, max) = match a.data_type() {
                DataType::Float16 => float_range(a.as_primitive::<Float16Type>(), |v| v.to_f64()),
                DataType::Float32 => float_range(a.as_primitive::<Float32Type>(), f64::from),
                DataType::Float64 => float_range(a.as_primitive::<Float64Type>(), |v| v),
                _ => return Err(unexpected()),
            };
            ColumnMeasure::FloatRange {
                min: min.map(Float),
                max: max.map(Float),
            }
        }
        MeasureKind::ByteLength { json: true } => {
            let bytes = match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().iter().flatten().map(json_bytes).sum(),
                DataType::LargeUtf8 => a.as_string::<i64>().iter().flatten().map(json_bytes).sum(),
                DataType::Utf8View => a.as_string_view().iter().flatten().map(json_bytes).sum(),
                _ => return Err(unexpected()),
            };
            ColumnMeasure::ByteLength { bytes }
        }
        MeasureKind::ByteLength { json: false } => {
            let bytes = match a.data_type() {
                DataType::Utf8 => offset_bytes(a.as_string::<i32>()),
                DataType::LargeUtf8 => offset_bytes(a.as_string::<i64>()),
                DataType::Binary => offset_bytes(a.as_binary::<i32>()),
                DataType::LargeBinary => offset_bytes(a.as_binary::<i64>()),
                DataType::Utf8View => view_bytes(a.as_string_view()),
                DataType::BinaryView => view_bytes(a.as_binary_view()),
                DataType::FixedSizeBinary(_) => {
                    let arr: &FixedSizeBinaryArray = a.as_fixed_size_binary();
                    arr.value_length() as u64 * (arr.len() - arr.null_count()) as u64
                }
                _ => return Err(unexpected()),
            };
            ColumnMeasure::ByteLength { bytes }
        }
        MeasureKind::TrueCount => {
            let arr: &BooleanArray = a.as_boolean_opt().ok_or_else(unexpected)?;
            ColumnMeasure::TrueCount {
                count: arr.true_count() as u64,
            }
        }
    })
}

/// Folds the non-null values of `arr`; NULL slots may hold any value, so they are skipped.
#[inline]
fn fold_valid<T: ArrowPrimitiveType, A>(arr: &PrimitiveArray<T>, init: A, mut f: impl FnMut(A, T::Native) -> A) -> A {
    let values = arr.values();
    match arr.nulls().filter(|n| n.null_count() > 0) {
        None => values.iter().fold(init, |acc, v| f(acc, *v)),
        Some(nulls) => nulls.valid_indices().fold(init, |acc, i| f(acc, values[i])),
    }
}

/// Sum of one array's integers. Any value fits 65 bits and an array has far fewer than 2^62
/// values, so 128 bits cannot overflow.
#[inline]
fn int_sum<T: ArrowPrimitiveType>(arr: &PrimitiveArray<T>) -> i128
where
    T::Native: Into<i128>,
{
    let values = arr.values();
    match arr.nulls().filter(|n| n.null_count() > 0) {
        None => values.iter().map(|v| (*v).into()).sum(),
        Some(nulls) => values
            .iter()
            .zip(nulls.iter())
            .map(|(v, valid)| if valid { (*v).into() } else { 0 })
            .sum(),
    }
}

/// Sum of one array's 128-bit decimals in 256 bits: a 128-bit running sum plus a count of its
/// wrap-arounds, so the loop stays 128-bit.
fn decimal128_sum(arr: &PrimitiveArray<Decimal128Type>) -> i256 {
    let (low, carries) = fold_valid(arr, (0i128, 0i128), |(sum, carries), v| {
        let (next, wrapped) = sum.overflowing_add(v);
        // A wrap goes up when adding a positive value and down when adding a negative one.
        let carry = if wrapped { if v > 0 { 1 } else { -1 } } else { 0 };
        (next, carries + carry)
    });
    i256::from_i128(low).wrapping_add(i256::from_parts(0, carries))
}

/// Min, max and sum of one array's raw temporal values.
fn epoch_stats<T: ArrowPrimitiveType>(arr: &PrimitiveArray<T>) -> (Option<i64>, Option<i64>, i128)
where
    T::Native: Into<i64>,
{
    let (min, max, sum) = fold_valid(arr, (i64::MAX, i64::MIN, 0i128), |(min, max, sum), v| {
        let v: i64 = v.into();
        (min.min(v), max.max(v), sum + v as i128)
    });
    let any = arr.len() > arr.null_count();
    (any.then_some(min), any.then_some(max), sum)
}

/// Min and max of one array's non-NaN floats.
fn float_range<T: ArrowPrimitiveType>(
    arr: &PrimitiveArray<T>,
    widen: impl Fn(T::Native) -> f64,
) -> (Option<f64>, Option<f64>) {
    fold_valid(arr, (None, None), |(min, max): (Option<f64>, Option<f64>), v| {
        let v = widen(v);
        if v.is_nan() {
            return (min, max);
        }
        (Some(min.map_or(v, |m| m.min(v))), Some(max.map_or(v, |m| m.max(v))))
    })
}

/// Byte lengths of the non-null values of an offset-based array. NULL slots may span bytes,
/// so with NULLs each valid slot's span is added.
fn offset_bytes<T: ByteArrayType>(arr: &GenericByteArray<T>) -> u64 {
    let offsets = arr.value_offsets();
    let span = |i: usize| (offsets[i + 1].as_usize() - offsets[i].as_usize()) as u64;
    match arr.nulls().filter(|n| n.null_count() > 0) {
        None => (offsets[arr.len()].as_usize() - offsets[0].as_usize()) as u64,
        Some(nulls) => nulls.valid_indices().map(span).sum(),
    }
}

/// The bytes of JSON text that are not JSON whitespace (space, tab, line feed, carriage return),
/// wherever they are.
///
/// Warehouses store JSON parsed (Snowflake VARIANT, BigQuery JSON) and print it compact, while
/// sources print it their own way (PostgreSQL's `jsonb` puts a space after `:` and `,`), so the
/// raw byte length of the same document differs. Dropping whitespace everywhere, inside strings
/// too, makes the measure the same for every printing of a document: tab, line feed and carriage
/// return only ever appear escaped inside JSON strings, and spaces inside strings are dropped on
/// both sides alike. Key order does not change a length. What it cannot see: a change that only
/// adds or removes spaces inside a string, and documents whose printings differ in more than
/// whitespace (a number printed `1.50` by one side and `1.5` by the other; non-ASCII escaped by
/// one side): such chunks fail their proof and name the column (docs/verification.md).
pub fn json_bytes(text: &str) -> u64 {
    text.bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count() as u64
}

/// Byte lengths of the non-null values of a view array (the length is a view's low 32 bits).
fn view_bytes<T: ByteViewType + ?Sized>(arr: &GenericByteViewArray<T>) -> u64 {
    let views = arr.views();
    match arr.nulls().filter(|n| n.null_count() > 0) {
        None => views.iter().map(|v| *v as u32 as u64).sum(),
        Some(nulls) => nulls.valid_indices().map(|i| views[i] as u32 as u64).sum(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array, ListArray,
        StringArray, StringViewArray, TimestampMicrosecondArray, UInt64Array,
    };
    use arrow::datatypes::{Int32Type, Schema};
    use proptest::prelude::*;

    use super::*;

    fn schema() -> SchemaRef {
        let mut json = std::collections::HashMap::new();
        json.insert(EXTENSION_NAME_KEY.to_string(), JSON_EXTENSION.to_string());
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Decimal128(38, 2), true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("name", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("f", DataType::Float64, true),
            Field::new("u", DataType::UInt64, true),
            Field::new("doc", DataType::Utf8, true).with_metadata(json),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
                true,
            ),
        ]))
    }

    type Row = (
        i64,
        Option<i128>,
        Option<i64>,
        Option<String>,
        Option<bool>,
        Option<f64>,
        Option<u64>,
    );

    fn batch(rows: &[Row]) -> RecordBatch {
        let s = schema();
        RecordBatch::try_new(
            s,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    Decimal128Array::from_iter(rows.iter().map(|r| r.1))
                        .with_precision_and_scale(38, 2)
                        .unwrap(),
                ),
                Arc::new(TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.2)).with_timezone("UTC")),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3.clone()))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.4))),
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.5))),
                Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.6))),
                Arc::new(StringArray::from_iter(
                    rows.iter().map(|r| r.3.as_ref().map(|s| format!("{{\"s\":\"{s}\"}}"))),
                )),
                Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                    rows.iter().map(|r| r.4.map(|_| vec![Some(r.0 as i32)])),
                )),
            ],
        )
        .unwrap()
    }

    fn fingerprint(batches: &[RecordBatch]) -> ChunkFingerprint {
        let mut b = FingerprintBuilder::new(&schema());
        batches.iter().for_each(|x| b.update(x).unwrap());
        b.finish()
    }

    fn row_strategy() -> impl Strategy<Value = Row> {
        (
            any::<i64>(),
            proptest::option::of(any::<i128>().prop_map(|v| v % 10i128.pow(37))),
            proptest::option::of(any::<i64>()),
            proptest::option::of("[a-zé]{0,8}"),
            proptest::option::of(any::<bool>()),
            proptest::option::of(prop_oneof![any::<f64>(), Just(f64::NAN), Just(-0.0)]),
            proptest::option::of(any::<u64>()),
        )
    }

    proptest! {
        #[test]
        fn independent_of_order_and_batching(mut rows in proptest::collection::vec(row_strategy(), 1..60), cut in 0usize..60, seed in any::<u64>()) {
            let whole = fingerprint(&[batch(&rows)]);
            let cut = cut % rows.len();
            // Same rows, another order and batching.
            let n = rows.len();
            rows.rotate_left((seed as usize) % n);
            let (a, b) = rows.split_at(cut);
            let parts = [batch(a), batch(b)];
            let batched = fingerprint(&parts);
            prop_assert!(whole.differences(&batched).is_empty(), "{:?}", whole.differences(&batched));
            // Merge of the fingerprints of parts equals the whole.
            let mut merged = fingerprint(&parts[..1]);
            merged.merge(&fingerprint(&parts[1..])).unwrap();
            prop_assert!(whole.differences(&merged).is_empty(), "{:?}", whole.differences(&merged));
            // And it survives JSON.
            let json = serde_json::to_string(&whole).unwrap();
            let back: ChunkFingerprint = serde_json::from_str(&json).unwrap();
            prop_assert!(whole.differences(&back).is_empty());
        }
    }

    fn row(id: i64, ts: i64, name: &str) -> Row {
        (
            id,
            Some(id as i128 * 100),
            Some(ts),
            Some(name.to_string()),
            Some(id % 2 == 0),
            Some(id as f64),
            Some(id as u64),
        )
    }

    #[test]
    fn detects_missing_duplicated_and_changed_rows() {
        let rows: Vec<Row> = (0..10).map(|i| row(i, 1_000_000 * i, "abc")).collect();
        let base = fingerprint(&[batch(&rows)]);
        let missing = fingerprint(&[batch(&rows[1..])]);
        assert!(base.differences(&missing).iter().any(|d| d.measure == "rows"));
        let mut dup = rows.clone();
        dup.push(rows[3].clone());
        assert!(
            base.differences(&fingerprint(&[batch(&dup)]))
                .iter()
                .any(|d| d.measure == "rows")
        );

        let mut changed = rows.clone();
        changed[4].2 = Some(changed[4].2.unwrap() + 1);
        let d = base.differences(&fingerprint(&[batch(&changed)]));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].column.as_deref(), d[0].measure.as_str()), (Some("ts"), "sum"));

        let mut changed = rows.clone();
        changed[4].1 = Some(401);
        let d = base.differences(&fingerprint(&[batch(&changed)]));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].to_string(), "column `amount` sum: expected 45.00, found 45.01");

        let mut changed = rows.clone();
        changed[4].3 = Some("abcd".into());
        let d = base.differences(&fingerprint(&[batch(&changed)]));
        assert!(
            d.iter()
                .any(|d| d.column.as_deref() == Some("name") && d.measure == "byte_length"),
            "{d:?}"
        );

        let mut changed = rows.clone();
        changed[4].4 = None;
        let d = base.differences(&fingerprint(&[batch(&changed)]));
        assert!(
            d.iter()
                .any(|d| d.column.as_deref() == Some("ok") && d.measure == "nulls"),
            "{d:?}"
        );
    }

    #[test]
    fn null_slots_with_bytes_are_not_counted() {
        // A NULL slot spanning bytes: build "ab", then "cd" marked null through a sliced-in bitmap.
        let arr = StringArray::from(vec![Some("ab"), Some("cd"), Some("e")]);
        let (offsets, values, _) = arr.into_parts();
        let nulls = arrow::buffer::NullBuffer::from(vec![true, false, true]);
        let arr = StringArray::new(offsets, values, Some(nulls));
        assert_eq!(offset_bytes(&arr), 3);
        let view = StringViewArray::from_iter(vec![Some("hello, long string value"), None, Some("x")]);
        assert_eq!(view_bytes(&view), 25);
        let bin = BinaryArray::from_iter(vec![Some(b"abc".as_ref()), None]);
        assert_eq!(offset_bytes(&bin), 3);
        let ints = Int32Array::new(
            vec![5, 1_000, 7].into(),
            Some(arrow::buffer::NullBuffer::from(vec![true, false, true])),
        );
        assert_eq!(int_sum(&ints), 12);
        let dates = Date32Array::from(vec![Some(3), None, Some(-2)]);
        assert_eq!(epoch_stats(&dates), (Some(-2), Some(3), 1));
    }

    #[test]
    fn sums_do_not_overflow() {
        let big = Decimal128Array::from(vec![i128::MAX, i128::MAX, i128::MAX, i128::MIN]);
        let expected = i256::from_i128(i128::MAX)
            .wrapping_mul(i256::from_i128(3))
            .wrapping_add(i256::from_i128(i128::MIN));
        assert_eq!(decimal128_sum(&big), expected);
        let neg = Decimal128Array::from(vec![i128::MIN, i128::MIN]);
        assert_eq!(
            decimal128_sum(&neg),
            i256::from_i128(i128::MIN).wrapping_mul(i256::from_i128(2))
        );
        let u = UInt64Array::from(vec![u64::MAX, u64::MAX]);
        assert_eq!(int_sum(&u), 2 * u64::MAX as i128);
    }

    #[test]
    fn json_text_is_measured_without_whitespace() {
        assert_eq!(
            json_bytes(r#"{"a": 1, "b": [true, null]}"#),
            json_bytes(r#"{"a":1,"b":[true,null]}"#)
        );
        assert_eq!(json_bytes("{\n\t\"a\" :\r\n 1 }"), 7);
        assert_ne!(json_bytes(r#"{"a":1}"#), json_bytes(r#"{"a":10}"#));
        let mut meta = std::collections::HashMap::new();
        meta.insert(EXTENSION_NAME_KEY.to_string(), JSON_EXTENSION.to_string());
        let schema = Arc::new(Schema::new(vec![
            Field::new("doc", DataType::Utf8, true).with_metadata(meta),
            Field::new("text", DataType::Utf8, true),
        ]));
        let spaced = r#"{"k": "v w"}"#;
        let rows = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some(spaced), None])),
                Arc::new(StringArray::from(vec![Some(spaced), None])),
            ],
        )
        .unwrap();
        let mut builder = FingerprintBuilder::new(&schema);
        builder.update(&rows).unwrap();
        let fp = builder.finish();
        assert_eq!(fp.columns[0].measure, ColumnMeasure::ByteLength { bytes: 10 });
        assert_eq!(fp.columns[1].measure, ColumnMeasure::ByteLength { bytes: 12 });
    }

    #[test]
    fn json_keeps_big_numbers_exact() {
        let rows: Vec<Row> = vec![(i64::MAX, None, Some(i64::MAX), None, None, Some(0.1), Some(u64::MAX))];
        let fp = fingerprint(&[batch(&rows), batch(&rows)]);
        let json = serde_json::to_string(&fp).unwrap();
        assert!(json.contains("\"18446744073709551614\""), "{json}");
        assert!(json.contains("\"36893488147419103230\""), "{json}");
        let back: ChunkFingerprint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, fp);
    }

    #[test]
    fn decimal_text_round_trips() {
        assert_eq!(parse_unscaled("-12.3", 2), Some(i256::from_i128(-1230)));
        assert_eq!(parse_unscaled("5", 2), Some(i256::from_i128(500)));
        assert_eq!(parse_unscaled("0.00", 2), Some(i256::ZERO));
        assert_eq!(parse_unscaled("1.234", 2), None);
        assert_eq!(parse_unscaled("12", 0), Some(i256::from_i128(12)));
        assert_eq!(unscaled_text(i256::from_i128(-5), 2), "-0.05");
        assert_eq!(unscaled_text(i256::from_i128(1234), 2), "12.34");
    }

    #[test]
    fn sql_select_list_names_every_measure() {
        let sql = FingerprintSql::new(&schema(), &AnsiDialect);
        let list = sql.select_list();
        assert!(
            list.starts_with("COUNT(*), COUNT(*) - COUNT(\"id\"), SUM(CAST(\"id\" AS DECIMAL(38, 0)))"),
            "{list}"
        );
        assert!(list.contains("MIN(CAST(\"ts\" AS BIGINT))"), "{list}");
        assert!(list.contains("SUM(CAST(octet_length(\"name\") AS BIGINT))"), "{list}");
        // rows; id: 2; amount: 2; ts: 4; name: 2; ok: 2; f: 3; u: 2; doc: 2; tags: 1.
        assert_eq!(sql.slots().len(), 21);
    }
}
