//! `backhaul profile`, `backhaul cost` and `backhaul cost-models check` end to end, on the
//! embedded demo spec.

use std::path::Path;

use crate::util::{JobDir, JobParams, text};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A job directory holding a copy of deploy/jobs/demo-orders.toml as `job.toml`.
fn demo() -> JobDir {
    let job = JobDir::new(&JobParams::default());
    let spec = std::fs::read_to_string(repo().join("deploy/jobs/demo-orders.toml")).expect("demo spec");
    job.write_spec("job.toml", &spec);
    job
}

/// Confirms every price the demo's default estimate would otherwise flag as unconfirmed.
const CONFIRMING_OVERLAY: &str = r#"
schema_version = 1
vendor = "contract"
product = "Prices read off our own invoices"
currency = "USD"

[[source]]
id = "invoices"
url = "file:invoices/2026-10.pdf"
title = "Cloud invoices, October 2026"

[[row]]
id = "compute.instance.aws_c7g_large"
kind = "price"
unit = "USD/hour"
value = "0.0725"
effective_from = "2026-10-01"
confidence = "official"
sources = ["invoices"]

[[row]]
id = "s3.requests.put"
kind = "price"
unit = "USD/1000-requests"
value = "0.005"
effective_from = "2026-10-01"
confidence = "official"
sources = ["invoices"]

[[row]]
id = "s3.requests.get"
kind = "price"
unit = "USD/1000-requests"
value = "0.0004"
effective_from = "2026-10-01"
confidence = "official"
sources = ["invoices"]

[[row]]
id = "fivetran.connection_minimum"
kind = "minimum"
unit = "USD/connection-month"
value = "5.00"
effective_from = "2026-01-01"
confidence = "official"
sources = ["invoices"]

[[row]]
id = "fivetran.mar.standard"
kind = "price"
unit = "USD/million-MAR"
value = "450"
effective_from = "2026-01-01"
confidence = "official"
sources = ["invoices"]
"#;

fn rust_decimal_one() -> backhaul_cost::money::Dec {
    backhaul_cost::money::Dec(backhaul_cost::money::parse_decimal("1").unwrap())
}

#[test]
fn profile_then_cost_the_demo_spec_offline() {
    let job = demo();
    let out = job.ok(&["profile", "job.toml", "-o", "profile.toml"]);
    assert!(
        out.contains("profile of job orders-demo, table orders (embedded), saved to profile.toml"),
        "{out}"
    );
    let profile = backhaul_cost::profile::Profile::load(&job.path().join("profile.toml")).unwrap();
    assert_eq!(profile.job, "orders-demo");
    let table = &profile.tables[0];
    assert_eq!(table.primary_key, vec!["order_id".to_string()]);
    let activity = &table.activity;
    assert_eq!(
        activity.method,
        backhaul_cost::profile::ActivityMethod::Source,
        "{activity:?}"
    );
    // The generated table is append-only: every key touched is an insert.
    assert_eq!(activity.updated_keys.as_ref().map(|m| m.value), Some(0));
    assert_eq!(
        activity.touched_keys.as_ref().map(|m| m.value),
        activity.inserts.as_ref().map(|m| m.value)
    );
    let b = &table.bytes_per_row;
    for (column, bytes) in [
        ("parquet_zstd", b.parquet_zstd),
        ("logical", b.logical),
        ("airbyte_json", b.airbyte_json),
    ] {
        assert!(bytes > rust_decimal_one(), "{column}: {bytes}");
    }

    // Text report from the saved profile.
    let out = job.ok(&["cost", "job.toml", "--profile", "profile.toml", "--as-of", "2026-11-01"]);
    for needle in [
        "backhaul cost estimate: job orders-demo, prices as of 2026-11-01",
        "Fivetran (standard plan)",
        "Airbyte Cloud",
        "backhaul → Snowflake COPY",
        "backhaul → BigQuery load jobs",
        "UNCONFIRMED prices used",
        "`fivetran.mar.standard`",
        "price rows used:",
    ] {
        assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
    }

    // JSON report, and the HTML page beside it.
    let report = job.json(&[
        "cost",
        "job.toml",
        "--profile",
        "profile.toml",
        "--as-of",
        "2026-11-01",
        "--html",
        "report.html",
    ]);
    assert_eq!(report["job"], "orders-demo");
    assert_eq!(report["options"].as_array().map(Vec::len), Some(6));
    for option in report["options"].as_array().unwrap() {
        for line in option["lines"].as_array().unwrap() {
            if line["kind"] == "charge" && line["cost"].is_string() {
                assert!(
                    !line["cites"].as_array().unwrap().is_empty()
                        || line["item"].as_str().unwrap().contains("no billable"),
                    "a priced line cites no row: {line}"
                );
            }
        }
    }
    assert!(!report["citations"].as_array().unwrap().is_empty());
    let html = std::fs::read_to_string(job.path().join("report.html")).unwrap();
    assert!(html.contains("<svg id=\"chart\"") && html.contains("orders-demo"));

    // --strict refuses the unconfirmed prices, by name.
    let out = job.run(&[
        "cost",
        "job.toml",
        "--profile",
        "profile.toml",
        "--as-of",
        "2026-11-01",
        "--strict",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--strict refuses unconfirmed prices") && err.contains("compute.instance.aws_c7g_large"),
        "{err}"
    );

    // An overlay with confirmed (contract) prices satisfies --strict and prices Fivetran.
    job.write_spec("contract.toml", CONFIRMING_OVERLAY);
    let report = job.json(&[
        "cost",
        "job.toml",
        "--profile",
        "profile.toml",
        "--as-of",
        "2026-11-01",
        "--overlay",
        "contract.toml",
        "--strict",
    ]);
    assert_eq!(
        report["unconfirmed"].as_array().map(Vec::len),
        Some(0),
        "{}",
        report["unconfirmed"]
    );
    let fivetran = report["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "fivetran")
        .unwrap();
    assert_eq!(fivetran["steady"]["complete"], true, "{fivetran}");

    // Without --profile the source is profiled on the spot (already seeded: quick).
    let live = job.json(&["cost", "job.toml", "--as-of", "2026-11-01"]);
    assert_eq!(live["spec_fingerprint"], report["spec_fingerprint"]);
}

#[test]
fn a_profile_of_another_job_is_refused() {
    let job = JobDir::new(&JobParams::default());
    job.ok(&["profile", "job.toml", "-o", "profile.json", "--sample-rows", "500"]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.path().join("profile.json")).unwrap()).unwrap();
    assert_eq!(json["job"], "orders");
    let other = std::fs::read_to_string(job.spec())
        .unwrap()
        .replace("name = \"orders\"", "name = \"other\"");
    job.write_spec("other.toml", &other);
    let out = job.run(&["cost", "other.toml", "--profile", "profile.json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("does not belong to this job") && err.contains("taken for job `orders`, not `other`"),
        "{err}"
    );
    // Same name, another range: refused as well.
    let moved = std::fs::read_to_string(job.spec())
        .unwrap()
        .replace("2023-03-11", "2023-03-12");
    job.write_spec("moved.toml", &moved);
    let out = job.run(&["cost", "moved.toml", "--profile", "profile.json"]);
    assert!(
        text(&out.stderr).contains("[source] or [range] changed"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn profile_flags_naming_a_missing_column_are_refused() {
    let job = JobDir::new(&JobParams::default());
    let out = job.run(&["profile", "job.toml", "--updated-at", "modified"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("profile.updated_at") && err.contains("no column `modified`"),
        "{err}"
    );
}

#[test]
fn cost_models_check_accepts_the_tables_and_refuses_an_overlap() {
    let job = JobDir::new(&JobParams::default());
    let models = repo().join("cost-models");
    let out = job.ok(&["cost-models", "check", models.to_str().unwrap()]);
    assert!(out.starts_with("ok: 7 files"), "{out}");
    let builtin = job.ok(&["cost-models", "check"]);
    assert!(builtin.contains("<builtin>/fivetran.toml"), "{builtin}");

    let broken = job.path().join("models");
    std::fs::create_dir(&broken).unwrap();
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, broken.join(path.file_name().unwrap())).unwrap();
    }
    let airbyte = broken.join("airbyte-cloud.toml");
    let text_before = std::fs::read_to_string(&airbyte).unwrap();
    std::fs::write(
        &airbyte,
        format!(
            "{text_before}\n[[row]]\nid = \"airbyte.credit_price.standard\"\nkind = \"price\"\nunit = \"USD/credit\"\nvalue = \"2.75\"\neffective_from = \"2026-01-01\"\nconfidence = \"official\"\nsources = [\"manage-credits\"]\n"
        ),
    )
    .unwrap();
    let out = job.run(&["cost-models", "check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("airbyte-cloud.toml")
            && err.contains("row[airbyte.credit_price.standard]")
            && err.contains("overlap"),
        "{err}"
    );
}

/// The Snowflake lines price the warehouse size and stage the Snowflake destination is
/// configured with (its file size reaches the profile through the staging preferences);
/// `--warehouse` still wins.
#[test]
fn cost_prices_the_snowflake_destination_as_configured() {
    let job = JobDir::new(&JobParams::default());
    let spec = std::fs::read_to_string(repo().join("deploy/jobs/snowflake-orders.toml"))
        .expect("snowflake spec")
        .replace("to = \"2023-07-01\"", "to = \"2023-01-15\"")
        .replace("warehouse_size = \"xs\"", "warehouse_size = \"m\"");
    job.write_spec("job.toml", &spec);
    let out = job.ok(&["cost", "job.toml", "--as-of", "2026-11-01"]);
    assert!(
        out.contains("backhaul → Snowflake COPY (M warehouse, internal stage)"),
        "{out}"
    );
    let out = job.ok(&["cost", "job.toml", "--as-of", "2026-11-01", "--warehouse", "l"]);
    assert!(out.contains("Snowflake COPY (L warehouse, internal stage)"), "{out}");
}
