//! Monthly active rows (Fivetran) and records synced per month (Airbyte, incremental loads)
//! from a table's measured change activity.
//!
//! Fivetran counts distinct primary keys added, updated or deleted in a calendar month, per
//! connection and table; a table without a primary key is keyed by a hash of its values, so a
//! changed row touches its old and its new version. From the activity of a window:
//!
//! ```text
//! keyed:   MAR = distinct keys touched          (or I + Ku + D when only the parts are known)
//! keyless: MAR = row versions touched           (or I + 2·Ku + D)
//! unknown updates: MAR ≤ rows in the table      (every key at most once a month: upper bound)
//! ```
//!
//! Windows other than 30 days are scaled linearly to a 30-day month.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::money::Dec;
use crate::profile::{ActivityMethod, Bound, TableProfile};

/// Days in the month the estimates are for.
pub const MONTH_DAYS: u32 = 30;

/// A table's steady-month numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SteadyMonth {
    /// Distinct keys touched in a month, as Fivetran counts them.
    pub mar: u64,
    /// How far to trust `mar`.
    pub mar_bound: Bound,
    /// Rows inserted in a month.
    pub inserts: Option<u64>,
    /// Records an incremental sync reads in a month: inserts + updated keys + deletes.
    pub records: u64,
    /// How far to trust `records`.
    pub records_bound: Bound,
    /// Whether the table changes other than by appends (updates or deletes, or unknown), which
    /// decides whether loads need MERGE/DELETE at the destination.
    pub mutates: bool,
    /// Why numbers are bounds, in words.
    pub notes: Vec<String>,
}

fn scaled(value: u64, window_days: u32) -> u64 {
    if window_days == MONTH_DAYS || window_days == 0 {
        return value;
    }
    let v = Decimal::from(value) * Decimal::from(MONTH_DAYS) / Decimal::from(window_days);
    u64::try_from(v.round()).unwrap_or(u64::MAX)
}

/// The steady month of a table, from its profile. `keyless_factor` is the keys touched per
/// changed keyless row (price row `fivetran.keyless_mar_per_changed_row`, 2).
pub fn steady_month(table: &TableProfile, keyless_factor: Dec) -> SteadyMonth {
    let a = &table.activity;
    let days = a.window_days;
    let mut notes = Vec::new();
    if days != MONTH_DAYS {
        notes.push(format!(
            "activity measured over {days} days, scaled linearly to {MONTH_DAYS} (distinct keys grow less than linearly, so longer months are overestimated)"
        ));
    }
    let get = |m: &Option<crate::profile::Measured>| m.as_ref().map(|m| (scaled(m.value, days), m.bound));
    let inserts = get(&a.inserts);
    let updated = get(&a.updated_keys);
    let deleted = get(&a.deleted_keys);
    let touched = get(&a.touched_keys);
    let rows = table.rows.value;
    let keyed = table.keyed();

    let (mar, mar_bound) = match (touched, updated, inserts) {
        (Some((t, b)), _, _) => {
            // Touched counts from a sample do not see hard deletes unless a diff measured them.
            if deleted.is_none() && a.method != ActivityMethod::Source {
                notes.push("deletes unknown: MAR may be higher (lower bound)".into());
                (t, b.combine(Bound::LowerBound))
            } else {
                (t, b)
            }
        }
        (None, Some((u, ub)), Some((i, ib))) => {
            let factor = if keyed { Decimal::ONE } else { keyless_factor.0 };
            let changed = u64::try_from((Decimal::from(u) * factor).round()).unwrap_or(u64::MAX);
            let (d, db) = deleted.unwrap_or((0, Bound::LowerBound));
            if deleted.is_none() {
                notes.push("deletes unknown: MAR may be higher (lower bound)".into());
            }
            // Parts may overlap (a key inserted and updated): their sum can only overcount.
            let bound = ib.combine(ub).combine(db).combine(Bound::UpperBound);
            (i + changed + d, bound)
        }
        (None, _, _) => {
            notes.push(format!(
                "no usable change column: every row of the table counted once a month ({})",
                if keyed {
                    "upper bound: a key counts at most once a month"
                } else {
                    "keyless, so each changed row would count twice; shown assuming at most one change per row"
                }
            ));
            let factor = if keyed { Decimal::ONE } else { keyless_factor.0 };
            (
                u64::try_from((Decimal::from(rows) * factor).round()).unwrap_or(u64::MAX),
                if keyed { Bound::UpperBound } else { Bound::Estimate },
            )
        }
    };

    let (records, records_bound) = match updated {
        Some((u, ub)) => {
            let (i, ib) = inserts.unwrap_or((0, Bound::LowerBound));
            let (d, db) = deleted.unwrap_or((0, Bound::LowerBound));
            let mut bound = ib.combine(ub).combine(db);
            if u > 0 {
                notes.push(
                    "records synced count each updated key once a month; a key updated between several syncs is read again by each (lower bound)"
                        .into(),
                );
                bound = bound.combine(Bound::LowerBound);
            }
            (i + u + d, bound)
        }
        None => (rows, Bound::UpperBound),
    };
    let mutates = match (updated, deleted) {
        (Some((u, Bound::Exact)), Some((d, Bound::Exact))) => u + d > 0,
        (Some((u, _)), Some((d, _))) => u + d > 0,
        (Some((u, _)), None) => u > 0 || a.method != ActivityMethod::Source,
        _ => true,
    };
    SteadyMonth {
        mar,
        mar_bound,
        inserts: inserts.map(|(i, _)| i),
        records,
        records_bound,
        mutates,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ActivityProfile, BytesPerRow, Measured, SampleInfo};

    fn table(keyed: bool, activity: ActivityProfile) -> TableProfile {
        TableProfile {
            name: "t".into(),
            source_kind: "embedded".into(),
            cursor: "created_at".into(),
            cursor_kind: "timestamp".into(),
            range_from: "a".into(),
            range_to: "b".into(),
            primary_key: if keyed { vec!["id".into()] } else { vec![] },
            rows: Measured::new(1_000, Bound::Exact, "test"),
            source_bytes: 0,
            chunks: 1,
            file_size: 1,
            bytes_per_row: BytesPerRow {
                parquet_zstd: Dec::default(),
                logical: Dec::default(),
                airbyte_json: Dec::default(),
                source_statistics: None,
            },
            sample: SampleInfo {
                rows: 0,
                ranges: 0,
                method: String::new(),
            },
            activity,
            throughput: None,
            api: None,
        }
    }

    fn activity(parts: [Option<u64>; 4]) -> ActivityProfile {
        let m = |v: Option<u64>| v.map(|v| Measured::new(v, Bound::Exact, "test"));
        ActivityProfile {
            method: ActivityMethod::Source,
            window_from: String::new(),
            window_to: String::new(),
            window_days: 30,
            inserts: m(parts[0]),
            updated_keys: m(parts[1]),
            deleted_keys: m(parts[2]),
            touched_keys: m(parts[3]),
            columns: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn keyed_keyless_and_unknown() {
        let two = Dec(Decimal::TWO);
        let s = steady_month(&table(true, activity([Some(10), Some(20), Some(5), Some(30)])), two);
        assert_eq!((s.mar, s.mar_bound), (30, Bound::Exact));
        assert_eq!(s.records, 35);
        let s = steady_month(&table(false, activity([Some(10), Some(20), Some(5), None])), two);
        assert_eq!((s.mar, s.mar_bound), (55, Bound::UpperBound));
        let s = steady_month(&table(true, activity([Some(10), None, None, None])), two);
        assert_eq!((s.mar, s.mar_bound), (1_000, Bound::UpperBound));
        assert_eq!((s.records, s.records_bound), (1_000, Bound::UpperBound));
        assert!(s.mutates && s.notes.iter().any(|n| n.contains("no usable change column")));
        let s = steady_month(&table(true, activity([Some(10), Some(0), Some(0), Some(10)])), two);
        assert!(!s.mutates);
    }
}
