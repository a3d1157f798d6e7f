//! The SQL that recomputes a [`ChunkFingerprint`] in a warehouse: one dialect trait every
//! destination implements once, the ANSI/DataFusion reference dialect, and the reading of the
//! query's result row.

use arrow::datatypes::{DataType, Field, SchemaRef};

use super::*;

/// How one SQL dialect spells the expressions a fingerprint needs. [`FingerprintSql`] renders
/// the aggregate select list from them; every destination computing fingerprints implements
/// this once.
///
/// The renderings, per measure (`c` the quoted column):
///
/// | measure | ANSI / DataFusion ([`AnsiDialect`]) | Snowflake | BigQuery |
/// |---|---|---|---|
/// | rows | `COUNT(*)` | `COUNT(*)` | `COUNT(*)` |
/// | nulls | `COUNT(*) - COUNT(c)` | same | same |
/// | integer sum | `SUM(CAST(c AS DECIMAL(38, 0)))` | `SUM(c::NUMBER(38,0))` | `SUM(CAST(c AS BIGNUMERIC))` |
/// | decimal sum (scale s) | `SUM(CAST(c AS DECIMAL(38, s)))` | `SUM(c::NUMBER(38,s))` | `SUM(CAST(c AS BIGNUMERIC))` |
/// | epoch in unit | `CAST(c AS BIGINT)` (dates: `CAST(CAST(c AS INT) AS BIGINT)`) | `DATE_PART(EPOCH_MICROSECOND, c)` (unit as stored) | `UNIX_MICROS(c)` / `UNIX_DATE(d)` |
/// | epoch min / max / sum | `MIN(e)`, `MAX(e)`, exact sum of `e` | same | same |
/// | float min / max | `MIN(CASE WHEN isnan(c) THEN NULL ELSE c END)`, `MAX(…)` | `MIN(IFF(c = 'NaN'::FLOAT, NULL, c))` | `MIN(IF(IS_NAN(c), NULL, c))` |
/// | byte length | `SUM(CAST(octet_length(c) AS BIGINT))` (binary: `octet_length(encode(c, 'hex')) / 2`) | `SUM(OCTET_LENGTH(c))` | `SUM(BYTE_LENGTH(c))` |
/// | JSON byte length, whitespace dropped ([`json_bytes`](super::json_bytes)) | `octet_length(regexp_replace(c, '[ \t\n\r]', '', 'g'))` | `BIT_LENGTH(TRANSLATE(TO_JSON(c), ' ' \|\| CHR(9) \|\| CHR(10) \|\| CHR(13), '')) / 8` | `BYTE_LENGTH(TRANSLATE(TO_JSON_STRING(c), ' \t\n\r', ''))` |
/// | true count | `SUM(CASE WHEN c THEN 1 ELSE 0 END)` | `COUNT_IF(c)` | `COUNTIF(c)` |
///
/// So a Snowflake fingerprint of `(id BIGINT, ts TIMESTAMP_NTZ(6), name TEXT, ok BOOLEAN)` is
///
/// ```sql
/// SELECT COUNT(*),
///   COUNT(*) - COUNT("id"), SUM("id"::NUMBER(38,0)),
///   COUNT(*) - COUNT("ts"), MIN(DATE_PART(EPOCH_MICROSECOND, "ts")), MAX(DATE_PART(EPOCH_MICROSECOND, "ts")),
///     SUM(DATE_PART(EPOCH_MICROSECOND, "ts")::NUMBER(38,0)),
///   COUNT(*) - COUNT("name"), SUM(OCTET_LENGTH("name")),
///   COUNT(*) - COUNT("ok"), COUNT_IF("ok")
/// FROM t WHERE <the chunk's rows>
/// ```
///
/// and a BigQuery one the same with `CAST(… AS BIGNUMERIC)`, `UNIX_MICROS`, `BYTE_LENGTH` and
/// `COUNTIF`. Sums over 38 digits need BigQuery's `BIGNUMERIC` (76 digits); Snowflake's
/// `NUMBER(38,0)` refuses a sum that does not fit rather than rounding it.
pub trait FingerprintDialect {
    /// Quotes an identifier.
    fn quote_ident(&self, name: &str) -> String;
    /// An exact sum of `expr` at `scale` (0 for integers), wide enough not to round.
    fn exact_sum(&self, expr: &str, scale: i8) -> String;
    /// `expr` (a column of `data_type`) as its raw integer value in `unit`.
    fn epoch(&self, expr: &str, data_type: &DataType, unit: EpochUnit) -> String;
    /// `expr` (a float column) with NaN turned into NULL.
    fn not_nan(&self, expr: &str) -> String;
    /// Byte length of `expr` (a string, binary or JSON column of `data_type`); for JSON
    /// (`json`), of its text without whitespace, as [`json_bytes`](super::json_bytes) counts.
    fn byte_length(&self, expr: &str, data_type: &DataType, json: bool) -> String;
    /// The number of rows where boolean `expr` is true.
    fn count_true(&self, expr: &str) -> String;
}

/// ANSI SQL as DataFusion speaks it; the local warehouse's dialect and the reference.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnsiDialect;

impl FingerprintDialect for AnsiDialect {
    fn quote_ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
    fn exact_sum(&self, expr: &str, scale: i8) -> String {
        format!("SUM(CAST({expr} AS DECIMAL(38, {scale})))")
    }
    fn epoch(&self, expr: &str, data_type: &DataType, _unit: EpochUnit) -> String {
        match data_type {
            // Dates cast to their day (or millisecond) count via the physical integer.
            DataType::Date32 => format!("CAST(CAST({expr} AS INT) AS BIGINT)"),
            _ => format!("CAST({expr} AS BIGINT)"),
        }
    }
    fn not_nan(&self, expr: &str) -> String {
        format!("CASE WHEN isnan({expr}) THEN NULL ELSE {expr} END")
    }
    fn byte_length(&self, expr: &str, data_type: &DataType, json: bool) -> String {
        match data_type {
            // DataFusion's octet_length takes strings only; hex doubles any byte string exactly.
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                format!("CAST(octet_length(encode({expr}, 'hex')) AS BIGINT) / 2")
            }
            // JSON text: the regex engine reads `\t`, `\n`, `\r` (the SQL literal keeps them as typed).
            _ if json => format!("CAST(octet_length(regexp_replace({expr}, '[ \\t\\n\\r]', '', 'g')) AS BIGINT)"),
            _ => format!("CAST(octet_length({expr}) AS BIGINT)"),
        }
    }
    fn count_true(&self, expr: &str) -> String {
        format!("SUM(CASE WHEN {expr} THEN 1 ELSE 0 END)")
    }
}

/// What one output column of the fingerprint query holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// `COUNT(*)`.
    Rows,
    /// NULL count of column `index`.
    Nulls(usize),
    /// Sum (integer, decimal or epoch) of column `index`.
    Sum(usize),
    /// Minimum of column `index`.
    Min(usize),
    /// Maximum of column `index`.
    Max(usize),
    /// Byte length of column `index`.
    ByteLength(usize),
    /// True count of column `index`.
    TrueCount(usize),
}

/// The aggregate query that recomputes a [`ChunkFingerprint`] in a warehouse, and the reading
/// of its one result row.
#[derive(Debug, Clone)]
pub struct FingerprintSql {
    fields: Vec<Field>,
    kinds: Vec<MeasureKind>,
    expressions: Vec<String>,
    slots: Vec<Slot>,
}

impl FingerprintSql {
    /// The query for columns `schema` in `dialect`.
    pub fn new(schema: &SchemaRef, dialect: &dyn FingerprintDialect) -> Self {
        let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let kinds: Vec<MeasureKind> = fields.iter().map(MeasureKind::of).collect();
        let mut expressions = vec!["COUNT(*)".to_string()];
        let mut slots = vec![Slot::Rows];
        for (i, (field, kind)) in fields.iter().zip(&kinds).enumerate() {
            let c = dialect.quote_ident(field.name());
            let mut push = |slot: Slot, expr: String| {
                slots.push(slot);
                expressions.push(expr);
            };
            push(Slot::Nulls(i), format!("COUNT(*) - COUNT({c})"));
            match kind {
                MeasureKind::IntegerSum => push(Slot::Sum(i), dialect.exact_sum(&c, 0)),
                MeasureKind::DecimalSum { scale } => push(Slot::Sum(i), dialect.exact_sum(&c, *scale)),
                MeasureKind::Epoch { unit } => {
                    let e = dialect.epoch(&c, field.data_type(), *unit);
                    push(Slot::Min(i), format!("MIN({e})"));
                    push(Slot::Max(i), format!("MAX({e})"));
                    push(Slot::Sum(i), dialect.exact_sum(&e, 0));
                }
                MeasureKind::FloatRange { .. } => {
                    let e = dialect.not_nan(&c);
                    push(Slot::Min(i), format!("MIN({e})"));
                    push(Slot::Max(i), format!("MAX({e})"));
                }
                MeasureKind::ByteLength { json } => push(
                    Slot::ByteLength(i),
                    format!("SUM({})", dialect.byte_length(&c, field.data_type(), *json)),
                ),
                MeasureKind::TrueCount => push(Slot::TrueCount(i), dialect.count_true(&c)),
                MeasureKind::NullCount => {}
            }
        }
        FingerprintSql {
            fields,
            kinds,
            expressions,
            slots,
        }
    }

    /// The select list, comma-separated: `SELECT {select_list} FROM <table> WHERE <chunk>`.
    pub fn select_list(&self) -> String {
        self.expressions.join(", ")
    }

    /// What each output column holds, in select-list order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The fingerprint from the query's one result row, each value as text (`None` for NULL:
    /// a `SUM`, `MIN` or `MAX` over no non-null values).
    pub fn parse(&self, values: &[Option<String>]) -> Result<ChunkFingerprint> {
        if values.len() != self.slots.len() {
            return Err(Error::Internal(format!(
                "the fingerprint query returned {} values, expected {}",
                values.len(),
                self.slots.len()
            )));
        }
        let bad =
            |slot: &Slot, text: &str| Error::Internal(format!("fingerprint query: cannot read `{text}` as {slot:?}"));
        let count = |slot: &Slot, v: &Option<String>| -> Result<u64> {
            match v {
                None => Ok(0),
                Some(t) => parse_unscaled(t, 0)
                    .and_then(|v| v.to_i128())
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| bad(slot, t)),
            }
        };
        let mut fingerprint = ChunkFingerprint {
            rows: 0,
            columns: self
                .fields
                .iter()
                .zip(&self.kinds)
                .map(|(f, k)| ColumnFingerprint {
                    name: f.name().clone(),
                    nulls: 0,
                    measure: k.empty(),
                })
                .collect(),
        };
        for (slot, value) in self.slots.iter().zip(values) {
            match slot {
                Slot::Rows => fingerprint.rows = count(slot, value)?,
                Slot::Nulls(i) => fingerprint.columns[*i].nulls = count(slot, value)?,
                Slot::ByteLength(i) => {
                    fingerprint.columns[*i].measure = ColumnMeasure::ByteLength {
                        bytes: count(slot, value)?,
                    }
                }
                Slot::TrueCount(i) => {
                    fingerprint.columns[*i].measure = ColumnMeasure::TrueCount {
                        count: count(slot, value)?,
                    }
                }
                Slot::Sum(i) | Slot::Min(i) | Slot::Max(i) => {
                    let column = &mut fingerprint.columns[*i];
                    match (&mut column.measure, slot) {
                        (ColumnMeasure::Sum { sum }, _) => {
                            sum.0 = value
                                .as_deref()
                                .map_or(Some(i256::ZERO), |t| parse_unscaled(t, 0))
                                .ok_or_else(|| bad(slot, value.as_deref().unwrap_or_default()))?
                        }
                        (ColumnMeasure::DecimalSum { scale, sum }, _) => {
                            sum.0 = value
                                .as_deref()
                                .map_or(Some(i256::ZERO), |t| parse_unscaled(t, *scale))
                                .ok_or_else(|| bad(slot, value.as_deref().unwrap_or_default()))?
                        }
                        (ColumnMeasure::Epoch { min, max, sum, .. }, slot) => {
                            let target = match slot {
                                Slot::Min(_) => min,
                                Slot::Max(_) => max,
                                _ => {
                                    sum.0 = value
                                        .as_deref()
                                        .map_or(Some(i256::ZERO), |t| parse_unscaled(t, 0))
                                        .ok_or_else(|| bad(slot, value.as_deref().unwrap_or_default()))?;
                                    continue;
                                }
                            };
                            *target = match value {
                                None => None,
                                Some(t) => Some(Epoch(
                                    parse_unscaled(t, 0)
                                        .and_then(|v| v.to_i128())
                                        .and_then(|v| i64::try_from(v).ok())
                                        .ok_or_else(|| bad(slot, t))?,
                                )),
                            };
                        }
                        (ColumnMeasure::FloatRange { min, max }, slot) => {
                            let bits = match self.kinds[*i] {
                                MeasureKind::FloatRange { bits } => bits,
                                _ => 64,
                            };
                            let parsed = match value {
                                None => None,
                                Some(t) => Some(Float(parse_float(t, bits).ok_or_else(|| bad(slot, t))?)),
                            };
                            match slot {
                                Slot::Min(_) => *min = parsed,
                                _ => *max = parsed,
                            }
                        }
                        _ => return Err(bad(slot, value.as_deref().unwrap_or("NULL"))),
                    }
                }
            }
        }
        Ok(fingerprint)
    }
}

/// Parses float text at the column's width, so `0.1` of a `Float32` column is the `f32` 0.1.
fn parse_float(text: &str, bits: u8) -> Option<f64> {
    let text = text.trim();
    match bits {
        16 => text
            .parse::<f32>()
            .ok()
            .map(|v| <Float16Type as ArrowPrimitiveType>::Native::from_f32(v).to_f64()),
        32 => text.parse::<f32>().ok().map(f64::from),
        _ => text.parse::<f64>().ok(),
    }
}
