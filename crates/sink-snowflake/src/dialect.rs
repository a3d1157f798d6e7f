//! The fingerprint in Snowflake SQL ([`FingerprintDialect`]), and the quoting and literals every
//! statement of this crate uses.

use arrow::datatypes::{DataType, TimeUnit};
use backhaul_core::cursor::CursorKind;
use backhaul_core::fingerprint::{EpochUnit, FingerprintDialect};
use backhaul_core::spec::is_valid_identifier;

use crate::types::JsonType;

/// Snowflake's renderings of the fingerprint measures (see `crates/core/src/fingerprint/sql.rs`
/// for the table of all dialects). Two deliberate forms:
///
/// - Sums are returned as text, `TO_VARCHAR(SUM(x::NUMBER(38,s)))`: the sum is exact in
///   Snowflake either way, and text keeps it exact through every client and server (fakesnow
///   would otherwise hand a NUMBER sum back as a double).
/// - String and JSON byte lengths are `BIT_LENGTH(x) / 8`: exact in Snowflake, and the one form
///   fakesnow's DuckDB also accepts for VARCHAR (its `OCTET_LENGTH` takes BLOBs only).
#[derive(Debug, Clone, Copy, Default)]
pub struct SnowflakeDialect {
    /// How the table stores JSON columns.
    pub json: JsonType,
}

impl FingerprintDialect for SnowflakeDialect {
    fn quote_ident(&self, name: &str) -> String {
        column_ident(name)
    }

    fn exact_sum(&self, expr: &str, scale: i8) -> String {
        format!("TO_VARCHAR(SUM(({expr})::NUMBER(38,{scale})))")
    }

    fn epoch(&self, expr: &str, data_type: &DataType, _unit: EpochUnit) -> String {
        let part = |unit: &TimeUnit| match unit {
            TimeUnit::Second => "SECOND",
            TimeUnit::Millisecond => "MILLISECOND",
            TimeUnit::Microsecond => "MICROSECOND",
            TimeUnit::Nanosecond => "NANOSECOND",
        };
        match data_type {
            DataType::Date32 => format!("DATEDIFF(DAY, '1970-01-01'::DATE, {expr})"),
            DataType::Date64 => format!("DATEDIFF(DAY, '1970-01-01'::DATE, {expr}) * 86400000"),
            // Whole microseconds scaled: exact for the unit's values, and the one TIME
            // difference fakesnow's DuckDB computes besides nanoseconds.
            DataType::Time32(TimeUnit::Second) => format!("DATEDIFF(MICROSECOND, '00:00:00'::TIME, {expr}) / 1000000"),
            DataType::Time32(_) => format!("DATEDIFF(MICROSECOND, '00:00:00'::TIME, {expr}) / 1000"),
            DataType::Time64(u) => format!("DATEDIFF({}, '00:00:00'::TIME, {expr})", part(u)),
            DataType::Timestamp(u, _) => format!("DATE_PART(EPOCH_{}, {expr})", part(u)),
            // MeasureKind::of gives epochs to temporal types only.
            other => format!("/* no epoch for {other} */ NULL"),
        }
    }

    fn not_nan(&self, expr: &str) -> String {
        format!("IFF({expr} = 'NaN'::FLOAT, NULL, {expr})")
    }

    fn byte_length(&self, expr: &str, data_type: &DataType, json: bool) -> String {
        const JSON_WHITESPACE: &str = "' ' || CHR(9) || CHR(10) || CHR(13)";
        match data_type {
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                format!("OCTET_LENGTH({expr})")
            }
            // JSON is measured without whitespace (`fingerprint::json_bytes`): TRANSLATE drops
            // the characters that have no counterpart; CHR keeps the SQL free of escapes.
            _ if json && self.json == JsonType::Variant => {
                format!("BIT_LENGTH(TRANSLATE(TO_JSON({expr}), {JSON_WHITESPACE}, '')) / 8")
            }
            _ if json => format!("BIT_LENGTH(TRANSLATE({expr}, {JSON_WHITESPACE}, '')) / 8"),
            _ => format!("BIT_LENGTH({expr}) / 8"),
        }
    }

    fn count_true(&self, expr: &str) -> String {
        format!("COUNT_IF({expr})")
    }
}

/// A column identifier: a plain name is written upper-case and quoted, exactly as Snowflake
/// resolves it unquoted (`order_id` is `"ORDER_ID"`), so users query the table without quotes;
/// any other name is quoted as it is.
pub fn column_ident(name: &str) -> String {
    if is_valid_identifier(name) {
        format!("\"{}\"", name.to_ascii_uppercase())
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The name Snowflake stores for a column created with [`column_ident`].
pub fn stored_column_name(name: &str) -> String {
    if is_valid_identifier(name) {
        name.to_ascii_uppercase()
    } else {
        name.to_string()
    }
}

/// A string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A cursor value as a literal of the cursor column's type, so range predicates prune on the
/// column itself: `42`, `'2023-03-14'::DATE`, `'2023-03-14 06:30:00.000000'::TIMESTAMP_NTZ`
/// or `'2023-03-14 06:30:00.000000 +00:00'::TIMESTAMP_TZ`.
pub fn cursor_literal(kind: CursorKind, data_type: &DataType, value: i64) -> String {
    match kind {
        CursorKind::Integer => value.to_string(),
        CursorKind::Date => {
            let day = chrono_day(value);
            format!("'{day}'::DATE")
        }
        CursorKind::Timestamp => {
            let text = micros_text(value);
            match data_type {
                DataType::Timestamp(_, Some(_)) => format!("'{text} +00:00'::TIMESTAMP_TZ"),
                _ => format!("'{text}'::TIMESTAMP_NTZ"),
            }
        }
    }
}

/// `YYYY-MM-DD` of a day count since the epoch (proleptic Gregorian).
fn chrono_day(days: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm): no date library needed for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` of microseconds since the epoch.
fn micros_text(micros: i64) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let in_day = micros.rem_euclid(86_400_000_000);
    let (secs, frac) = (in_day / 1_000_000, in_day % 1_000_000);
    format!(
        "{} {:02}:{:02}:{:02}.{frac:06}",
        chrono_day(days),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, Schema};
    use backhaul_core::fingerprint::FingerprintSql;

    use super::*;

    #[test]
    fn the_fingerprint_query_in_snowflake_sql() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("amount", DataType::Decimal128(38, 9), true),
        ]));
        let sql = FingerprintSql::new(&schema, &SnowflakeDialect::default()).select_list();
        assert_eq!(
            sql,
            "COUNT(*), COUNT(*) - COUNT(\"ID\"), TO_VARCHAR(SUM((\"ID\")::NUMBER(38,0))), \
             COUNT(*) - COUNT(\"TS\"), MIN(DATE_PART(EPOCH_MICROSECOND, \"TS\")), MAX(DATE_PART(EPOCH_MICROSECOND, \"TS\")), \
             TO_VARCHAR(SUM((DATE_PART(EPOCH_MICROSECOND, \"TS\"))::NUMBER(38,0))), \
             COUNT(*) - COUNT(\"NAME\"), SUM(BIT_LENGTH(\"NAME\") / 8), \
             COUNT(*) - COUNT(\"OK\"), COUNT_IF(\"OK\"), \
             COUNT(*) - COUNT(\"AMOUNT\"), TO_VARCHAR(SUM((\"AMOUNT\")::NUMBER(38,9)))"
        );
    }

    #[test]
    fn identifiers_and_literals() {
        assert_eq!(column_ident("order_id"), "\"ORDER_ID\"");
        assert_eq!(column_ident("odd \"name\""), "\"odd \"\"name\"\"\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "'a\\\\b'");
    }

    #[test]
    fn cursor_literals_by_kind_and_zone() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        // 2023-03-14T06:30:00.000001Z
        let v = 1_678_775_400_000_001;
        assert_eq!(
            cursor_literal(CursorKind::Timestamp, &ts, v),
            "'2023-03-14 06:30:00.000001'::TIMESTAMP_NTZ"
        );
        assert_eq!(
            cursor_literal(CursorKind::Timestamp, &tz, v),
            "'2023-03-14 06:30:00.000001 +00:00'::TIMESTAMP_TZ"
        );
        assert_eq!(
            cursor_literal(CursorKind::Timestamp, &ts, -1),
            "'1969-12-31 23:59:59.999999'::TIMESTAMP_NTZ"
        );
        assert_eq!(
            cursor_literal(CursorKind::Date, &DataType::Date32, 19_430),
            "'2023-03-14'::DATE"
        );
        assert_eq!(
            cursor_literal(CursorKind::Date, &DataType::Date32, 0),
            "'1970-01-01'::DATE"
        );
        assert_eq!(cursor_literal(CursorKind::Integer, &DataType::Int64, -5), "-5");
    }
}
