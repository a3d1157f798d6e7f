//! Rows a destination's loads inserted, updated and deleted per calendar month (UTC), for
//! `backhaul cost --actual`: the monthly active rows the loads really had.
//!
//! Counts are per commit and summed per month: a key changed on several nights of one month
//! counts once per night. A billing definition of monthly active rows (distinct keys per
//! month) is at most this sum.

use chrono::{DateTime, Datelike};
use serde::Serialize;

/// One month's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MonthChanges {
    /// `YYYY-MM`, UTC.
    pub month: String,
    /// Rows whose key was new at the destination.
    pub inserted: u64,
    /// Rows replacing a version already loaded.
    pub updated: u64,
    /// Keys marked deleted.
    pub deleted: u64,
}

impl MonthChanges {
    /// Inserted + updated + deleted: the month's active rows, counted per commit.
    pub fn active(&self) -> u64 {
        self.inserted + self.updated + self.deleted
    }
}

/// `YYYY-MM` (UTC) of a time in µs since the epoch.
pub fn month_of(micros: i64) -> String {
    let t = DateTime::from_timestamp_micros(micros).unwrap_or_default();
    format!("{:04}-{:02}", t.year(), t.month())
}

/// Sums `(time µs, inserted, updated, deleted)` per month, oldest month first. Entries without
/// a time (written before times were recorded) count under `unknown`.
pub fn by_month(entries: impl IntoIterator<Item = (Option<i64>, u64, u64, u64)>) -> Vec<MonthChanges> {
    let mut months: std::collections::BTreeMap<String, MonthChanges> = Default::default();
    for (at, inserted, updated, deleted) in entries {
        let month = at.map_or_else(|| "unknown".to_string(), month_of);
        let m = months.entry(month.clone()).or_insert_with(|| MonthChanges {
            month,
            ..Default::default()
        });
        m.inserted += inserted;
        m.updated += updated;
        m.deleted += deleted;
    }
    months.into_values().collect()
}

/// Sums several tables' months (a pipeline's jobs) per month, oldest month first.
pub fn sum_months(lists: impl IntoIterator<Item = Vec<MonthChanges>>) -> Vec<MonthChanges> {
    let mut months: std::collections::BTreeMap<String, MonthChanges> = Default::default();
    for m in lists.into_iter().flatten() {
        let sum = months.entry(m.month.clone()).or_insert_with(|| MonthChanges {
            month: m.month.clone(),
            ..Default::default()
        });
        sum.inserted += m.inserted;
        sum.updated += m.updated;
        sum.deleted += m.deleted;
    }
    months.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_utc_month() {
        let march = 1_709_251_200_000_000; // 2024-03-01T00:00:00Z
        let months = by_month([
            (Some(march - 1), 1, 0, 0),
            (Some(march), 2, 3, 0),
            (Some(march + 86_400_000_000), 0, 1, 4),
            (None, 5, 0, 0),
        ]);
        let got: Vec<(&str, u64, u64, u64, u64)> = months
            .iter()
            .map(|m| (m.month.as_str(), m.inserted, m.updated, m.deleted, m.active()))
            .collect();
        assert_eq!(
            got,
            [
                ("2024-02", 1, 0, 0, 1),
                ("2024-03", 2, 4, 4, 10),
                ("unknown", 5, 0, 0, 5)
            ]
        );
    }

    #[test]
    fn tables_sum_per_month() {
        let m = |month: &str, i, u, d| MonthChanges {
            month: month.into(),
            inserted: i,
            updated: u,
            deleted: d,
        };
        let sum = sum_months([
            vec![m("2024-03", 1, 2, 3), m("2024-04", 1, 0, 0)],
            vec![m("2024-02", 5, 0, 0), m("2024-03", 10, 20, 30)],
        ]);
        assert_eq!(
            sum,
            [m("2024-02", 5, 0, 0), m("2024-03", 11, 22, 33), m("2024-04", 1, 0, 0)]
        );
    }
}
