//! SQL text this source generates: quoted identifiers and typed cursor literals.
//!
//! `COPY` takes no bind parameters, so chunk bounds are rendered into the statement. They are
//! only ever rendered from integers (cursor units) into digits, `-`, `:`, `.`, ` ` and a fixed
//! type name, never from user text; identifiers come from the catalog and are quoted.

use crate::types::CursorType;

/// Quotes an identifier: `"name"`, embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A schema-qualified, quoted table name.
pub(crate) fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// A literal of the cursor column's type for a bound in cursor units (µs since the epoch for
/// timestamps, days since the epoch for dates, the value for integers).
pub(crate) fn cursor_literal(kind: CursorType, value: i64) -> String {
    match kind {
        CursorType::Timestamp => format!("'{}'::timestamp", timestamp_text(value)),
        CursorType::Timestamptz => format!("'{}+00'::timestamptz", timestamp_text(value)),
        CursorType::Date => format!("'{}'::date", date_text(value)),
        CursorType::Integer => format!("({value})::int8"),
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (with ` BC` for years before 1) as PostgreSQL writes and reads
/// it, for any i64 of microseconds since 1970-01-01.
pub(crate) fn timestamp_text(micros: i64) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let rem = micros.rem_euclid(86_400_000_000);
    let (secs, frac) = (rem / 1_000_000, rem % 1_000_000);
    let (year, month, day) = civil_from_days(days);
    let (year_text, era) = era(year);
    format!(
        "{year_text}-{month:02}-{day:02} {:02}:{:02}:{:02}.{frac:06}{era}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `YYYY-MM-DD` (with ` BC` for years before 1) for days since 1970-01-01.
pub(crate) fn date_text(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    let (year_text, era) = era(year);
    format!("{year_text}-{month:02}-{day:02}{era}")
}

/// Astronomical year 0 is 1 BC in PostgreSQL's (and the calendar's) numbering.
fn era(year: i64) -> (String, &'static str) {
    if year >= 1 {
        (format!("{year:04}"), "")
    } else {
        (format!("{:04}", 1 - year), " BC")
    }
}

/// Proleptic Gregorian (year, month, day) of days since 1970-01-01 (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("lineitem"), "\"lineitem\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(qualified("public", "Order Lines"), "\"public\".\"Order Lines\"");
    }

    #[test]
    fn renders_literals_across_eras() {
        assert_eq!(timestamp_text(0), "1970-01-01 00:00:00.000000");
        assert_eq!(timestamp_text(-1), "1969-12-31 23:59:59.999999");
        assert_eq!(timestamp_text(2_208_988_800_000_001), "2040-01-01 00:00:00.000001");
        assert_eq!(date_text(-719_162), "0001-01-01");
        assert_eq!(date_text(-719_163), "0001-12-31 BC");
        assert_eq!(date_text(2_932_896), "9999-12-31");
        assert_eq!(date_text(2_932_897), "10000-01-01");
        assert_eq!(
            cursor_literal(CursorType::Timestamptz, 1_700_000_000_123_456),
            "'2023-11-14 22:13:20.123456+00'::timestamptz"
        );
        assert_eq!(
            cursor_literal(CursorType::Integer, i64::MIN),
            "(-9223372036854775808)::int8"
        );
        assert_eq!(cursor_literal(CursorType::Date, 19_724), "'2024-01-02'::date");
    }

    #[test]
    fn civil_dates_match_chrono() {
        for days in [-800_000i64, -719_163, -1, 0, 59, 60, 11_016, 19_724, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            let c = chrono::NaiveDate::from_num_days_from_ce_opt(days as i32 + 719_163).unwrap();
            use chrono::Datelike;
            assert_eq!((y, m, d), (i64::from(c.year()), c.month(), c.day()), "day {days}");
        }
    }
}
