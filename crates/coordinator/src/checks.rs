//! Checks after each run of a job with a `[checks]` spec section: freshness of the newest
//! cursor value loaded, and the volume of the latest cursor-day against the trailing 28 days
//! (docs/pipelines.md, "Checks and alerts"). Everything here is pure: the
//! [`crate::alerts::CheckMonitor`] feeds it the state and the clock.

use std::collections::BTreeMap;

use backhaul_core::cursor::CursorKind;
use backhaul_core::fingerprint::{ColumnMeasure, EpochUnit};
use backhaul_core::spec::JobSpec;
use backhaul_core::spec::checks::ValidatedChecks;
use serde::Serialize;

use crate::store::{ChunkRow, ChunkState, JobRow};

/// Days of history a volume check compares against.
pub const VOLUME_WINDOW_DAYS: usize = 28;
/// The normal-consistent scale of the median absolute deviation.
const MAD_SCALE: f64 = 1.4826;
const DAY_US: i64 = 86_400_000_000;

/// Freshness of one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    /// Newest cursor value loaded, microseconds since the epoch (`None`: nothing loaded yet).
    pub newest_us: Option<i64>,
    /// How old that is, in seconds.
    pub age_s: Option<i64>,
    /// The SLA, in seconds.
    pub sla_s: i64,
    /// Within the SLA.
    pub ok: bool,
}

/// The verdict of the volume rule on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Volume {
    /// Fewer complete days of history than the spec's minimum: nothing is flagged.
    InsufficientHistory {
        /// Days of history there are.
        days: usize,
    },
    /// Inside the band.
    Normal {
        /// Median of the history.
        median: f64,
        /// Half-width of the band.
        band: f64,
    },
    /// Outside the band.
    Anomaly {
        /// Median of the history.
        median: f64,
        /// Half-width of the band.
        band: f64,
    },
}

/// The volume check of one job: the latest complete cursor-day and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeCheck {
    /// The day checked (`YYYY-MM-DD`, cursor time, UTC).
    pub day: String,
    /// Rows loaded for that day.
    pub rows: f64,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Volume,
}

/// Results of the checks of one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobChecks {
    /// The job.
    pub job_id: String,
    /// Freshness, when the spec sets `freshness_sla`.
    pub freshness: Option<Freshness>,
    /// Volume, when the job has a time cursor and at least one complete day.
    pub volume: Option<VolumeCheck>,
}

impl JobChecks {
    /// No check failed.
    pub fn ok(&self) -> bool {
        self.freshness.as_ref().is_none_or(|f| f.ok)
            && !self
                .volume
                .as_ref()
                .is_some_and(|v| matches!(v.verdict, Volume::Anomaly { .. }))
    }
}

impl Freshness {
    /// For people: `fresh: newest row 3.2 h old (SLA 25.0 h)` or `STALE: …`.
    pub fn describe(&self) -> String {
        let age = self
            .age_s
            .map(|a| format!("newest row {:.1} h old", a as f64 / 3600.0))
            .unwrap_or_else(|| "nothing loaded yet".into());
        let verdict = if self.ok { "fresh" } else { "STALE" };
        format!("{verdict}: {age} (SLA {:.1} h)", self.sla_s as f64 / 3600.0)
    }
}

impl VolumeCheck {
    /// For people: `2026-01-31: ANOMALY: 100 rows (median 1045 ± 67)`, `normal: …`, or
    /// `not enough history yet (5 days)`.
    pub fn describe(&self) -> String {
        let verdict = match &self.verdict {
            Volume::InsufficientHistory { days } => format!("not enough history yet ({days} days)"),
            Volume::Normal { median, band } => {
                format!("normal: {:.0} rows (median {median:.0} ± {band:.0})", self.rows)
            }
            Volume::Anomaly { median, band } => {
                format!("ANOMALY: {:.0} rows (median {median:.0} ± {band:.0})", self.rows)
            }
        };
        format!("{}: {verdict}", self.day)
    }
}

/// The robust volume rule: with `history` the rows of the trailing days, `x` is an anomaly when
/// |x − median| > k · 1.4826 · MAD. The scale is floored at 1% of the median (and one row) so
/// a perfectly regular history does not flag a one-row difference.
pub fn volume_verdict(history: &[f64], x: f64, k: f64, min_days: usize) -> Volume {
    if history.len() < min_days.max(1) {
        return Volume::InsufficientHistory { days: history.len() };
    }
    let med = median(history.to_vec());
    let mad = median(history.iter().map(|v| (v - med).abs()).collect());
    let scale = (MAD_SCALE * mad).max(0.01 * med.abs()).max(1.0);
    let band = k * scale;
    if (x - med).abs() > band {
        Volume::Anomaly { median: med, band }
    } else {
        Volume::Normal { median: med, band }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Freshness of `newest_us` at `now_us` against `sla_us`.
pub fn freshness(newest_us: Option<i64>, now_us: i64, sla_us: i64) -> Freshness {
    let age_us = newest_us.map(|n| now_us.saturating_sub(n).max(0));
    Freshness {
        newest_us,
        age_s: age_us.map(|a| a / 1_000_000),
        sla_s: sla_us / 1_000_000,
        ok: age_us.is_some_and(|a| a <= sla_us),
    }
}

/// Cursor units of `kind` as microseconds (time cursors only).
pub fn to_us(kind: CursorKind, v: i64) -> Option<i64> {
    match kind {
        CursorKind::Timestamp => Some(v),
        CursorKind::Date => Some(v.saturating_mul(DAY_US)),
        CursorKind::Integer => None,
    }
}

/// Rows per cursor-day (days since the epoch) of the days that committed chunks cover
/// completely. A chunk spanning several days is spread evenly over them, by time.
pub fn rows_per_day(kind: CursorKind, chunks: &[ChunkRow]) -> BTreeMap<i64, f64> {
    let mut covered: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
    for c in chunks.iter().filter(|c| c.state == ChunkState::Committed) {
        let (Some(from), Some(to)) = (to_us(kind, c.range.from), to_us(kind, c.range.to)) else {
            return BTreeMap::new();
        };
        let rows = committed_rows(c) as f64;
        let len = (to - from).max(1) as f64;
        let mut day = from.div_euclid(DAY_US);
        while day * DAY_US < to {
            let start = (day * DAY_US).max(from);
            let end = ((day + 1) * DAY_US).min(to);
            let entry = covered.entry(day).or_default();
            entry.0 += end - start;
            entry.1 += rows * (end - start) as f64 / len;
            day += 1;
        }
    }
    covered
        .into_iter()
        .filter(|(_, (span, _))| *span >= DAY_US)
        .map(|(day, (_, rows))| (day, rows))
        .collect()
}

fn committed_rows(c: &ChunkRow) -> u64 {
    c.extracted.as_ref().map(|e| e.summary.rows).unwrap_or(0)
}

/// The newest cursor value loaded: the largest measured value of the cursor column among the
/// committed chunks' fingerprints, or the end of the newest committed range when none is
/// measured (in microseconds; time cursors only).
pub fn newest_loaded_us(kind: CursorKind, cursor_column: Option<&str>, chunks: &[ChunkRow]) -> Option<i64> {
    let measured = cursor_column.and_then(|column| newest_measured_us(column, chunks));
    measured.or_else(|| {
        chunks
            .iter()
            .filter(|c| c.state == ChunkState::Committed)
            .filter_map(|c| to_us(kind, c.range.to))
            .max()
    })
}

/// The largest value of `cursor_column` the committed chunks' fingerprints measured, in
/// microseconds: a value really loaded (time and date columns carry min/max), never a range
/// bound. `None` when no fingerprint measures one.
pub fn newest_measured_us(cursor_column: &str, chunks: &[ChunkRow]) -> Option<i64> {
    chunks
        .iter()
        .filter(|c| c.state == ChunkState::Committed)
        .filter_map(|c| {
            let fp = &c.extracted.as_ref()?.fingerprint;
            match &fp.columns.iter().find(|f| f.name == cursor_column)?.measure {
                ColumnMeasure::Epoch {
                    unit, max: Some(max), ..
                } => epoch_us(*unit, max.0),
                _ => None,
            }
        })
        .max()
}

fn epoch_us(unit: EpochUnit, v: i64) -> Option<i64> {
    match unit {
        EpochUnit::Day => v.checked_mul(DAY_US),
        EpochUnit::Second => v.checked_mul(1_000_000),
        EpochUnit::Millisecond => v.checked_mul(1_000),
        EpochUnit::Microsecond => Some(v),
        EpochUnit::Nanosecond => Some(v / 1_000),
    }
}

/// The `[checks]` of a stored job, or `None` when its spec has none (or no longer parses).
pub fn checks_of(job: &JobRow) -> Option<(ValidatedChecks, Option<String>)> {
    let spec = JobSpec::from_toml(&job.spec_toml, &job.job_id).ok()?;
    let checks = spec.checks.as_ref()?.validate(&job.job_id).ok()?;
    let cursor = spec
        .source
        .settings
        .get("cursor")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Some((checks, cursor))
}

/// Runs the checks of `job` over its `chunks` at `now_us`; `None` when it has no `[checks]`.
pub fn evaluate(job: &JobRow, chunks: &[ChunkRow], now_us: i64) -> Option<JobChecks> {
    let (checks, cursor) = checks_of(job)?;
    let freshness = checks.freshness_sla.map(|sla| {
        freshness(
            newest_loaded_us(job.cursor_kind, cursor.as_deref(), chunks),
            now_us,
            sla.micros,
        )
    });
    let days = rows_per_day(job.cursor_kind, chunks);
    let volume = days.iter().next_back().map(|(&day, &rows)| {
        let history: Vec<f64> = days
            .range(day - VOLUME_WINDOW_DAYS as i64..day)
            .map(|(_, &r)| r)
            .collect();
        VolumeCheck {
            day: chrono::DateTime::from_timestamp(day * 86_400, 0)
                .map(|d| d.date_naive().to_string())
                .unwrap_or_default(),
            rows,
            verdict: volume_verdict(&history, rows, checks.volume_k, checks.volume_min_days as usize),
        }
    });
    Some(JobChecks {
        job_id: job.job_id.clone(),
        freshness,
        volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_with_ten_times_fewer_rows_is_an_anomaly() {
        let history: Vec<f64> = (0..28).map(|i| 1000.0 + (i % 5) as f64 * 20.0).collect();
        assert!(matches!(
            volume_verdict(&history, 100.0, 3.0, 7),
            Volume::Anomaly { .. }
        ));
        assert!(matches!(
            volume_verdict(&history, 1030.0, 3.0, 7),
            Volume::Normal { .. }
        ));
        assert!(matches!(
            volume_verdict(&history, 10_000.0, 3.0, 7),
            Volume::Anomaly { .. }
        ));
    }

    #[test]
    fn the_band_is_median_plus_minus_k_mad() {
        // Median 10, deviations 0,1,1,2,2 → MAD 1 → band 3 · 1.4826.
        let history = [10.0, 9.0, 11.0, 8.0, 12.0];
        match volume_verdict(&history, 14.0, 3.0, 5) {
            Volume::Normal { median, band } => {
                assert_eq!(median, 10.0);
                assert!((band - 4.4478).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(volume_verdict(&history, 14.5, 3.0, 5), Volume::Anomaly { .. }));
    }

    #[test]
    fn no_flag_without_enough_history_and_none_on_a_flat_history_for_one_row() {
        assert_eq!(
            volume_verdict(&[5.0; 6], 0.0, 3.0, 7),
            Volume::InsufficientHistory { days: 6 }
        );
        assert!(matches!(
            volume_verdict(&[500.0; 10], 501.0, 3.0, 7),
            Volume::Normal { .. }
        ));
    }

    #[test]
    fn freshness_against_the_sla() {
        let hour = 3_600_000_000;
        assert!(freshness(Some(0), 24 * hour, 25 * hour).ok);
        let stale = freshness(Some(0), 26 * hour, 25 * hour);
        assert!(!stale.ok);
        assert_eq!(stale.age_s, Some(26 * 3600));
        assert!(!freshness(None, 0, hour).ok, "nothing loaded is not fresh");
    }
}
