//! Golden files of full reports (text and JSON) for a fixed profile, config, overlay and
//! `--as-of`. Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test -p
//! backhaul-cost --test golden` and review the diff: a changed price table shows up here.

use std::path::{Path, PathBuf};

use backhaul_cost::config::CostConfig;
use backhaul_cost::estimate::{EstimateInput, Report, estimate};
use backhaul_cost::prices::PriceBook;
use backhaul_cost::profile::Profile;
use backhaul_cost::report;
use chrono::NaiveDate;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

fn report(overlay: bool) -> Report {
    let profile = Profile::load(&dir("fixtures").join("profile.toml")).unwrap();
    let config = CostConfig::load(&dir("fixtures").join("cost.toml")).unwrap();
    let mut book = PriceBook::builtin().unwrap();
    if overlay {
        book.add_overlay_file(&dir("fixtures").join("contract.toml")).unwrap();
    }
    estimate(&EstimateInput {
        profile: &profile,
        book: &book,
        config: &config,
        as_of: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        strict: false,
    })
    .unwrap()
}

fn check(name: &str, actual: &str) {
    // Reports name the overlay file by path; golden files must not depend on the checkout's place.
    let actual = actual.replace(env!("CARGO_MANIFEST_DIR"), "<crate>");
    let actual = actual.as_str();
    let path = dir("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1 to create it", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the report at line {}:\n  golden: {:?}\n  actual: {:?}\nrun with UPDATE_GOLDEN=1 to accept the change",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn text_report_with_contract_overlay() {
    check("report.txt", &report::to_text(&report(true)));
}

#[test]
fn json_report_with_contract_overlay() {
    check("report.json", &report::to_json(&report(true)));
}

#[test]
fn text_report_with_list_prices_only() {
    check("report-list-prices.txt", &report::to_text(&report(false)));
}

#[test]
fn the_overlay_prices_fivetran_and_confirms_the_machine() {
    let with = report(true);
    let without = report(false);
    let fivetran = |r: &Report| r.options.iter().find(|o| o.id == "fivetran").unwrap().clone();
    assert!(fivetran(&with).steady.complete);
    assert!(!fivetran(&without).steady.complete);
    assert!(
        without
            .unconfirmed
            .iter()
            .any(|u| u.starts_with("compute.instance.aws_c7g_large"))
    );
    assert!(
        !with
            .unconfirmed
            .iter()
            .any(|u| u.starts_with("compute.instance.aws_c7g_large"))
    );
    let overlay_row = with.citations.iter().find(|c| c.id == "fivetran.mar.standard").unwrap();
    assert!(overlay_row.overlay);
}
