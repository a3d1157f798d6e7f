//! Cursor columns and the half-open ranges chunks cover.
//!
//! Every cursor value is an `i64` in the cursor's unit: microseconds since the Unix epoch (UTC)
//! for timestamps, days since the epoch for dates, the value itself for integers. Planning,
//! state and the wire protocol only ever see these integers.

use std::fmt;

use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kind of an orderable cursor column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorKind {
    /// A timestamp (with or without zone); unit: microseconds since epoch, UTC.
    Timestamp,
    /// A calendar date; unit: days since epoch.
    Date,
    /// An integer (id, epoch seconds, sequence); unit: the value.
    Integer,
}

impl CursorKind {
    /// The cursor kind of an Arrow type, or `None` when the type cannot bound a chunk.
    pub fn of(data_type: &DataType) -> Option<Self> {
        match data_type {
            DataType::Timestamp(_, _) => Some(CursorKind::Timestamp),
            DataType::Date32 | DataType::Date64 => Some(CursorKind::Date),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Some(CursorKind::Integer),
            _ => None,
        }
    }

    /// The step cut points are rounded to, in cursor units, so boundaries read well: whole
    /// seconds for timestamps, 1 otherwise.
    pub fn granularity(self) -> i64 {
        match self {
            CursorKind::Timestamp => 1_000_000,
            CursorKind::Date | CursorKind::Integer => 1,
        }
    }

    /// Name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CursorKind::Timestamp => "timestamp",
            CursorKind::Date => "date",
            CursorKind::Integer => "integer",
        }
    }

    /// Parses [`CursorKind::as_str`] back (names on the wire).
    pub fn from_name(name: &str) -> Option<Self> {
        [CursorKind::Timestamp, CursorKind::Date, CursorKind::Integer]
            .into_iter()
            .find(|k| k.as_str() == name)
    }

    /// Formats one cursor value for humans (RFC 3339, ISO date, or the integer).
    pub fn format(self, value: i64) -> String {
        match self {
            CursorKind::Timestamp => match DateTime::<Utc>::from_timestamp_micros(value) {
                Some(t) if value % 1_000_000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                None => value.to_string(),
            },
            CursorKind::Date => NaiveDate::from_num_days_from_ce_opt(value as i32 + EPOCH_DAYS_FROM_CE)
                .map(|d| d.to_string())
                .unwrap_or_else(|| value.to_string()),
            CursorKind::Integer => value.to_string(),
        }
    }
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A range bound as written in a job spec, before the cursor column's type is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecBound {
    /// A date or timestamp, as microseconds since epoch UTC.
    Time(i64),
    /// A plain integer.
    Integer(i64),
    /// `now`: the end of a sync job's range, resolved to now − lag by each `backhaul sync`.
    Now,
}

impl SpecBound {
    /// Parses `2024-01-01`, `2024-01-01T06:00:00Z`, `2024-01-01 06:00:00+02:00` or an integer.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t == "now" {
            return Ok(SpecBound::Now);
        }
        if let Ok(i) = t.parse::<i64>() {
            return Ok(SpecBound::Integer(i));
        }
        if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            let micros = d
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc()
                .timestamp_micros();
            return Ok(SpecBound::Time(micros));
        }
        if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
            return Ok(SpecBound::Time(ts.timestamp_micros()));
        }
        if let Ok(ts) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%:z") {
            return Ok(SpecBound::Time(ts.timestamp_micros()));
        }
        if NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").is_ok()
            || NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").is_ok()
        {
            return Err(format!("`{text}` has no zone; add `Z` or an offset such as `+00:00`"));
        }
        Err(format!(
            "`{text}` is neither a date (2024-01-31), an RFC 3339 timestamp (2024-01-31T00:00:00Z) nor an integer"
        ))
    }

    /// The bound in the unit of `kind`, or an error when the two do not fit together.
    pub fn to_cursor(self, kind: CursorKind) -> Result<i64, String> {
        match (self, kind) {
            (SpecBound::Time(us), CursorKind::Timestamp) => Ok(us),
            (SpecBound::Time(us), CursorKind::Date) => {
                if us % 86_400_000_000 != 0 {
                    return Err("a date cursor needs whole-day bounds (write 2024-01-31)".into());
                }
                Ok(us.div_euclid(86_400_000_000))
            }
            (SpecBound::Integer(i), CursorKind::Integer) => Ok(i),
            (SpecBound::Integer(_), _) => Err(format!(
                "the cursor is a {} column but the bound is an integer",
                kind.as_str()
            )),
            (SpecBound::Time(_), CursorKind::Integer) => {
                Err("the cursor is an integer column but the bound is a date/time".into())
            }
            (SpecBound::Now, _) => Err(
                "`now` is resolved by `backhaul sync` (now − sync.lag); `backfill` and `plan` need a fixed bound"
                    .into(),
            ),
        }
    }
}

/// The Arrow timestamp unit backhaul normalizes timestamp cursors to.
pub const CURSOR_TIME_UNIT: TimeUnit = TimeUnit::Microsecond;

/// A half-open range `[from, to)` of cursor values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CursorRange {
    /// Inclusive lower bound.
    pub from: i64,
    /// Exclusive upper bound.
    pub to: i64,
}

impl CursorRange {
    /// A range; `from < to` is the caller's invariant.
    pub fn new(from: i64, to: i64) -> Self {
        debug_assert!(from < to, "empty cursor range {from}..{to}");
        CursorRange { from, to }
    }

    /// Width in cursor units.
    pub fn width(&self) -> i64 {
        self.to - self.from
    }

    /// Whether the ranges share at least one value.
    pub fn overlaps(&self, other: &CursorRange) -> bool {
        self.from < other.to && other.from < self.to
    }

    /// Displays the range with the cursor's formatting.
    pub fn display(&self, kind: CursorKind) -> String {
        format!("[{}, {})", kind.format(self.from), kind.format(self.to))
    }
}

impl fmt::Display for CursorRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.from, self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bounds() {
        let d = SpecBound::parse("2024-01-02").unwrap();
        assert_eq!(d.to_cursor(CursorKind::Date).unwrap(), 19_724);
        let t = SpecBound::parse("2024-01-02T00:00:00+01:00").unwrap();
        assert_eq!(
            CursorKind::Timestamp.format(t.to_cursor(CursorKind::Timestamp).unwrap()),
            "2024-01-01T23:00:00Z"
        );
        assert!(SpecBound::parse("2024-01-02T00:00:00").unwrap_err().contains("no zone"));
        assert!(SpecBound::parse("yesterday").is_err());
        assert!(SpecBound::parse("5").unwrap().to_cursor(CursorKind::Timestamp).is_err());
        assert_eq!(CursorKind::Date.format(19_724), "2024-01-02");
    }
}
