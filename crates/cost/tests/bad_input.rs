//! Bad input is refused with errors that name the file, the field and what would be right.

use std::path::Path;

use backhaul_core::spec::JobSpec;
use backhaul_cost::CostError;
use backhaul_cost::config::CostConfig;
use backhaul_cost::estimate::{EstimateInput, estimate};
use backhaul_cost::prices::PriceBook;
use backhaul_cost::profile::{Profile, fingerprint};
use chrono::NaiveDate;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A copy of the checked-in tables with one file replaced.
fn tables_with(file: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cost-models");
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join(file), text).unwrap();
    dir
}

fn gcs_with_row(row: &str) -> String {
    let original =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cost-models/gcs.toml")).unwrap();
    format!("{original}\n{row}")
}

#[test]
fn a_price_file_with_overlapping_periods_is_refused() {
    let dir = tables_with(
        "gcs.toml",
        &gcs_with_row(
            r#"
[[row]]
id = "gcs.requests.class_a"
kind = "price"
unit = "USD/1000-requests"
value = "0.006"
effective_from = "2026-10-01"
confidence = "official"
sources = ["gcs-pricing"]
"#,
        ),
    );
    let err = PriceBook::load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("gcs.toml"), "{err}");
    assert!(err.contains("row[gcs.requests.class_a].effective_from"), "{err}");
    assert!(
        err.contains("overlap") && err.contains("effective_to = \"2026-10-01\""),
        "{err}"
    );
}

#[test]
fn a_price_change_that_closes_the_old_row_is_accepted() {
    let original =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cost-models/gcs.toml")).unwrap();
    let closed = original.replacen(
        "value = \"0.005\"\neffective_from = \"2026-09-20\"",
        "value = \"0.005\"\neffective_from = \"2026-09-20\"\neffective_to = \"2026-10-01\"",
        1,
    );
    assert_ne!(closed, original);
    let dir = tables_with(
        "gcs.toml",
        &format!(
            "{closed}\n[[row]]\nid = \"gcs.requests.class_a\"\nkind = \"price\"\nunit = \"USD/1000-requests\"\nvalue = \"0.006\"\neffective_from = \"2026-10-01\"\nconfidence = \"official\"\nsources = [\"gcs-pricing\"]\n"
        ),
    );
    let book = PriceBook::load_dir(dir.path()).unwrap();
    let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
    assert_eq!(
        book.lookup("gcs.requests.class_a", day("2026-09-30"))
            .unwrap()
            .value()
            .unwrap()
            .to_string(),
        "0.005"
    );
    assert_eq!(
        book.lookup("gcs.requests.class_a", day("2026-10-01"))
            .unwrap()
            .value()
            .unwrap()
            .to_string(),
        "0.006"
    );
}

#[test]
fn an_unknown_unit_is_refused() {
    let dir = tables_with(
        "gcs.toml",
        &gcs_with_row(
            r#"
[[row]]
id = "gcs.egress.moon"
kind = "price"
unit = "USD/lunar-GB"
value = "1"
effective_from = "2026-10-01"
confidence = "official"
sources = ["gcs-pricing"]
"#,
        ),
    );
    let err = PriceBook::load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("row[gcs.egress.moon].unit"), "{err}");
    assert!(
        err.contains("unknown unit `USD/lunar-GB`") && err.contains("known units"),
        "{err}"
    );
}

#[test]
fn a_row_without_a_source_is_refused() {
    let dir = tables_with(
        "gcs.toml",
        &gcs_with_row(
            "[[row]]\nid = \"gcs.x\"\nkind = \"price\"\nunit = \"USD/GB\"\nvalue = \"1\"\neffective_from = \"2026-10-01\"\nconfidence = \"official\"\nsources = []\n",
        ),
    );
    let err = PriceBook::load_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("row[gcs.x].sources") && err.contains("at least one source"),
        "{err}"
    );
}

fn spec(name: &str, to: &str) -> JobSpec {
    JobSpec::from_toml(
        &format!(
            r#"version = 1
name = "{name}"
[source]
kind = "embedded"
path = "source.db"
cursor = "created_at"
[range]
from = "2023-01-01"
to = "{to}"
[stage]
path = "stage"
[destination]
kind = "local"
path = "warehouse"
table = "orders"
"#
        ),
        "job.toml",
    )
    .unwrap()
}

#[test]
fn a_profile_from_a_different_job_is_refused() {
    let profile = Profile::load(&fixture("profile.toml")).unwrap();
    let err = profile
        .check_job(&spec("orders", "2023-02-01"), "profile.toml")
        .unwrap_err();
    assert!(matches!(err, CostError::ProfileMismatch { .. }));
    let text = err.to_string();
    assert!(text.contains("taken for job `shop`, not `orders`"), "{text}");
}

#[test]
fn a_profile_of_an_edited_spec_is_refused() {
    let original = spec("orders", "2023-02-01");
    let mut profile = Profile::load(&fixture("profile.toml")).unwrap();
    profile.job = "orders".into();
    profile.spec_fingerprint = fingerprint(&original);
    profile.check_job(&original, "p.toml").unwrap();
    let err = profile
        .check_job(&spec("orders", "2023-03-01"), "p.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[source] or [range] changed"), "{err}");
}

#[test]
fn strict_refuses_unconfirmed_prices_and_names_them() {
    let profile = Profile::load(&fixture("profile.toml")).unwrap();
    let config = CostConfig::load(&fixture("cost.toml")).unwrap();
    let book = PriceBook::builtin().unwrap();
    let input = |strict| EstimateInput {
        profile: &profile,
        book: &book,
        config: &config,
        as_of: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        strict,
    };
    let report = estimate(&input(false)).unwrap();
    assert!(!report.unconfirmed.is_empty());
    let err = estimate(&input(true)).unwrap_err();
    assert!(matches!(err, CostError::Unconfirmed { .. }));
    let text = err.to_string();
    assert!(text.contains("--strict refuses unconfirmed prices"), "{text}");
    assert!(text.contains("s3.requests.put (from 2026-09-20)"), "{text}");
    assert!(text.contains("--overlay"), "{text}");
}

#[test]
fn prices_missing_on_the_as_of_date_leave_lines_unpriced_and_say_why() {
    let profile = Profile::load(&fixture("profile.toml")).unwrap();
    let config = CostConfig::default();
    let book = PriceBook::builtin().unwrap();
    let report = estimate(&EstimateInput {
        profile: &profile,
        book: &book,
        config: &config,
        as_of: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        strict: false,
    })
    .unwrap();
    assert!(
        report.missing.iter().any(|m| m
            .contains("`snowflake.snowpipe.credits_per_gb`: no row valid on 2024-01-01 (known periods: 2025-08-01..)")),
        "{:?}",
        report.missing
    );
    let snowpipe = report.options.iter().find(|o| o.id == "snowflake_snowpipe").unwrap();
    assert!(!snowpipe.backfill.complete);
}

#[test]
fn an_overlay_with_the_wrong_unit_for_a_known_id_is_refused_at_estimate_time() {
    let profile = Profile::load(&fixture("profile.toml")).unwrap();
    let config = CostConfig::default();
    let mut book = PriceBook::builtin().unwrap();
    book.add_overlay(
        "contract.toml",
        r#"
schema_version = 1
vendor = "contract"
product = "wrong unit"
currency = "USD"
[[source]]
id = "c"
url = "file:contract.pdf"
title = "contract"
[[row]]
id = "fivetran.mar.standard"
kind = "price"
unit = "USD/million-rows"
value = "400"
effective_from = "2026-01-01"
confidence = "official"
sources = ["c"]
"#,
    )
    .unwrap();
    let err = estimate(&EstimateInput {
        profile: &profile,
        book: &book,
        config: &config,
        as_of: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        strict: false,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("row[fivetran.mar.standard].unit") && err.contains("USD/million-MAR"),
        "{err}"
    );
}

#[test]
fn a_cost_config_with_an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cost.toml");
    std::fs::write(&path, "version = 1\n[snowflake]\nwarehouse_size = \"xs\"\n").unwrap();
    let err = CostConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("cost.toml: line 3") && err.contains("warehouse_size"),
        "{err}"
    );
}
