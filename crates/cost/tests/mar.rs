//! The MAR estimator against generated tables whose full change history is known: estimates
//! are within ±20% of the true distinct keys touched (Fivetran's own estimate band), exact where
//! the source has the full history or the whole range is read, and honest bounds otherwise.

mod common;

use std::sync::Arc;

use backhaul_cost::config::CostConfig;
use backhaul_cost::estimate::{EstimateInput, estimate};
use backhaul_cost::mar::steady_month;
use backhaul_cost::money::Dec;
use backhaul_cost::prices::PriceBook;
use backhaul_cost::profile::{ActivityMethod, Bound, TableProfile};
use backhaul_cost::profiler::{ProfileOptions, assemble, profile_table};
use common::*;
use rust_decimal::Decimal;

async fn profile(source: Arc<MemorySource>, adjust: impl FnOnce(&mut ProfileOptions)) -> TableProfile {
    let mut opts = options(source.columns);
    adjust(&mut opts);
    profile_table(&input(source), &opts, now()).await.unwrap()
}

fn mar(t: &TableProfile) -> u64 {
    steady_month(t, Dec(Decimal::TWO)).mar
}

fn assert_within_20_percent(what: &str, estimate: u64, truth: u64) {
    let error = (estimate as f64 - truth as f64) / truth as f64;
    assert!(
        error.abs() <= 0.20,
        "{what}: estimate {estimate} vs true {truth} ({:+.1}%)",
        error * 100.0
    );
    eprintln!("{what}: estimate {estimate} vs true {truth} ({:+.1}%)", error * 100.0);
}

#[tokio::test]
async fn inserts_only_within_20_percent() {
    let table = Table::generate(Pattern::default());
    let truth = table.true_mar(WINDOW);
    let source = Arc::new(MemorySource::new(table, false, Columns::All));
    let t = profile(source, |_| {}).await;
    assert_eq!(t.activity.method, ActivityMethod::Sample);
    assert_within_20_percent("inserts only", mar(&t), truth);
    assert_eq!(t.activity.updated_keys.as_ref().unwrap().value, 0);
}

#[tokio::test]
async fn repeated_updates_of_the_same_keys_within_20_percent() {
    let table = Table::generate(Pattern {
        updates_per_row: 3.0,
        hot_share: 0.6,
        seed: 11,
        ..Pattern::default()
    });
    let truth = table.true_mar(WINDOW);
    let events = table
        .log
        .iter()
        .filter(|(_, t, _)| WINDOW.0 <= *t && *t < WINDOW.1)
        .count() as u64;
    assert!(
        events > truth * 2,
        "the pattern repeats updates of the same keys: {events} events, {truth} keys"
    );
    let source = Arc::new(MemorySource::new(table, false, Columns::All));
    let t = profile(source, |_| {}).await;
    assert_within_20_percent("repeated updates", mar(&t), truth);
}

#[tokio::test]
async fn soft_deletes_within_20_percent() {
    let table = Table::generate(Pattern {
        updates_per_row: 0.5,
        soft_deletes: 0.15,
        seed: 12,
        ..Pattern::default()
    });
    let truth = table.true_mar(WINDOW);
    let deletes = table
        .log
        .iter()
        .filter(|(_, t, e)| *e == Event::SoftDelete && WINDOW.0 <= *t && *t < WINDOW.1)
        .count() as u64;
    let source = Arc::new(MemorySource::new(table, false, Columns::All));
    let t = profile(source, |_| {}).await;
    assert_within_20_percent("with soft deletes", mar(&t), truth);
    assert_within_20_percent("soft deletes", t.activity.deleted_keys.as_ref().unwrap().value, deletes);
}

#[tokio::test]
async fn keyless_table_within_20_percent() {
    let table = Table::generate(Pattern {
        keyed: false,
        updates_per_row: 0.8,
        single_updates: true,
        seed: 13,
        ..Pattern::default()
    });
    let truth = table.true_mar(WINDOW);
    let keys_touched = {
        let mut keyed = Table::generate(Pattern {
            keyed: false,
            updates_per_row: 0.8,
            single_updates: true,
            seed: 13,
            ..Pattern::default()
        });
        keyed.keyed = true;
        keyed.true_mar(WINDOW)
    };
    assert!(
        truth > keys_touched,
        "keyless counts row versions: {truth} vs {keys_touched} rows"
    );
    let source = Arc::new(MemorySource::new(table, false, Columns::All));
    let t = profile(source, |_| {}).await;
    assert!(t.primary_key.is_empty());
    assert_within_20_percent("keyless", mar(&t), truth);
}

#[tokio::test]
async fn keyless_rows_updated_repeatedly_are_flagged_as_a_lower_bound() {
    let table = Table::generate(Pattern {
        keyed: false,
        updates_per_row: 3.0,
        hot_share: 0.7,
        seed: 14,
        ..Pattern::default()
    });
    let truth = table.true_mar(WINDOW);
    let source = Arc::new(MemorySource::new(table, false, Columns::All));
    let t = profile(source, |_| {}).await;
    let estimate = mar(&t);
    assert!(
        estimate as f64 <= truth as f64 * 1.05,
        "{estimate} should not exceed {truth}"
    );
    assert!(
        t.activity
            .notes
            .iter()
            .any(|n| n.contains("keyless") && n.contains("lower bound")),
        "{:?}",
        t.activity.notes
    );
}

#[tokio::test]
async fn full_history_from_the_source_is_exact() {
    let table = Table::generate(Pattern {
        updates_per_row: 2.0,
        hot_share: 0.5,
        soft_deletes: 0.1,
        seed: 15,
        ..Pattern::default()
    });
    let truth = table.true_mar(WINDOW);
    let source = Arc::new(MemorySource::new(table, true, Columns::All));
    let t = profile(source, |_| {}).await;
    assert_eq!(t.activity.method, ActivityMethod::Source);
    let s = steady_month(&t, Dec(Decimal::TWO));
    assert_eq!((s.mar, s.mar_bound), (truth, Bound::Exact));
}

#[tokio::test]
async fn reading_the_whole_range_is_exact_for_keyed_tables() {
    let table = Table::generate(Pattern {
        rows: 40_000,
        updates_per_row: 2.0,
        hot_share: 0.5,
        soft_deletes: 0.1,
        seed: 16,
        ..Pattern::default()
    });
    let truth = table.true_mar(WINDOW);
    let rows = table.rows.len() as u64;
    let source = Arc::new(MemorySource::new(table, false, Columns::All));
    let t = profile(source, |o| o.exact = true).await;
    assert_eq!(t.activity.method, ActivityMethod::FullScan);
    assert_eq!((t.rows.value, t.rows.bound), (rows, Bound::Exact));
    let s = steady_month(&t, Dec(Decimal::TWO));
    assert_eq!((s.mar, s.mar_bound), (truth, Bound::Exact));
}

#[tokio::test]
async fn hard_deletes_by_snapshot_diff_within_20_percent() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("keys.json");
    let table = Table::generate(Pattern {
        seed: 17,
        ..Pattern::default()
    });
    let source = Arc::new(MemorySource::new(table, false, Columns::All));
    // First profile 30 days ago: saves the keys of the sampled sub-ranges.
    let first = {
        let mut opts = options(Columns::All);
        opts.snapshot_file = Some(snapshot.clone());
        let then = chrono::DateTime::from_timestamp_micros(WINDOW.0).unwrap();
        opts.window_end = Some(WINDOW.0);
        profile_table(&input(source.clone()), &opts, then).await.unwrap()
    };
    assert!(first.activity.notes.iter().any(|n| n.contains("first key snapshot")));
    assert!(snapshot.exists());
    // Then 6% of the rows are deleted outright during the window.
    let deleted = {
        let mut table = source.table.lock().unwrap();
        let mut rng = Rng(99);
        let mut deleted = 0;
        let n = table.rows.len() as u64;
        for _ in 0..(n * 6 / 100) {
            let i = rng.below(n) as usize;
            if !table.rows[i].gone && table.rows[i].created_at < WINDOW.0 {
                table.rows[i].gone = true;
                let (id, t) = (table.rows[i].id, WINDOW.0 + rng.below((30 * DAY) as u64) as i64);
                table.log.push((id, t, Event::HardDelete));
                deleted += 1;
            }
        }
        deleted
    };
    let t = profile(source.clone(), |o| o.snapshot_file = Some(snapshot.clone())).await;
    let measured = t.activity.deleted_keys.as_ref().expect("deletes measured by the diff");
    assert!(measured.basis.contains("snapshot"), "{}", measured.basis);
    assert_within_20_percent("hard deletes", measured.value, deleted);
    let truth = source.table.lock().unwrap().true_mar(WINDOW);
    assert_within_20_percent("MAR with hard deletes", mar(&t), truth);
}

#[tokio::test]
async fn a_table_without_change_columns_reports_upper_bounds_and_why() {
    let table = Table::generate(Pattern {
        rows: 30_000,
        updates_per_row: 1.0,
        ..Pattern::default()
    });
    let rows = table.rows.len() as u64;
    let source = Arc::new(MemorySource::new(table, false, Columns::NoChangeColumns));
    let t = profile(source, |_| {}).await;
    assert_eq!(t.activity.method, ActivityMethod::None);
    let s = steady_month(&t, Dec(Decimal::TWO));
    assert_eq!((s.mar, s.mar_bound), (rows, Bound::UpperBound));
    assert_eq!(s.records_bound, Bound::UpperBound);
    assert!(
        t.activity.notes.iter().any(|n| n.contains("no usable updated_at")),
        "{:?}",
        t.activity.notes
    );

    let profile = assemble("generated", "xxh3:0", vec![t], now());
    let book = PriceBook::builtin().unwrap();
    let config = CostConfig::default();
    let report = estimate(&EstimateInput {
        profile: &profile,
        book: &book,
        config: &config,
        as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
        strict: false,
    })
    .unwrap();
    let table = &report.tables[0];
    assert!(
        table.notes.iter().any(|n| n.contains("upper bound")),
        "{:?}",
        table.notes
    );
    let fivetran = report.options.iter().find(|o| o.id == "fivetran").unwrap();
    let steady_mar = fivetran
        .lines
        .iter()
        .find(|l| l.item == "distinct keys touched")
        .unwrap();
    assert_eq!(steady_mar.bound, Bound::UpperBound);
    let text = backhaul_cost::report::to_text(&report);
    assert!(
        text.contains("upper bound") && text.contains("no usable change column"),
        "{text}"
    );
}
