//! The connector kinds this build knows, handed to coordinator and workers.
//!
//! Each connector crate owns its `[source]`/`[destination]` section (struct, validation, docs);
//! adding one is a dependency plus one line below.

use backhaul_core::ratelimit::Budgets;
use backhaul_core::registry::Registry;

/// Every built-in connector kind, with request budgets of their own (a process-local token
/// bucket per pool).
pub fn builtin_connectors() -> Registry {
    builtin_connectors_with(&Budgets::default())
}

/// Every built-in connector kind, one registration line each; API sources draw from
/// `budgets`, which the process may later point at the coordinator's pools.
pub fn builtin_connectors_with(budgets: &Budgets) -> Registry {
    Registry::new()
        .source(backhaul_source_embedded::EmbeddedKind)
        .source(backhaul_source_postgres::PostgresKind)
        .source(backhaul_source_mysql::MysqlKind)
        .source(backhaul_source_airbyte::AirbyteKind)
        .source(backhaul_source_http::HttpKind::new(budgets.clone()))
        .destination(backhaul_sink_local::LocalKind)
        .destination(backhaul_sink_snowflake::SnowflakeKind)
        .destination(backhaul_sink_bigquery::BigQueryKind)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};
    use backhaul_core::connector::{BatchStream, ColumnOrigin, Connectors, Source, TableDescription};
    use backhaul_core::cursor::{CursorKind, CursorRange};
    use backhaul_core::registry::{SourceConfig, SourceKind};
    use backhaul_core::spec::{JobSpec, parse_section, to_settings};
    use backhaul_core::{Error, Result};
    use futures::StreamExt;
    use futures::future::BoxFuture;
    use serde::{Deserialize, Serialize};

    use super::*;

    /// Specs as the coordinator stored them before connectors owned their sections: the
    /// canonical TOML must not change, or resuming those jobs would refuse them as different.
    #[test]
    fn canonical_specs_are_unchanged() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/canonical");
        let connectors = builtin_connectors();
        for name in ["embedded", "postgres", "mysql", "mysql_min", "local"] {
            let read = |suffix: &str| std::fs::read_to_string(fixtures.join(format!("{name}.{suffix}"))).unwrap();
            let spec = JobSpec::from_toml(&read("in.toml"), name).unwrap();
            let checked = connectors.check(&spec, name).unwrap();
            assert_eq!(checked.to_canonical_toml(), read("canonical.toml"), "{name}");
            // The stored form reads back to itself.
            let again = JobSpec::from_toml(&checked.to_canonical_toml(), name).unwrap();
            assert_eq!(connectors.check(&again, name).unwrap().spec, checked.spec, "{name}");
        }
    }

    #[test]
    fn an_unknown_kind_names_the_known_ones() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/canonical/embedded.in.toml"))
                .unwrap()
                .replace("kind = \"embedded\"", "kind = \"oracle\"");
        let spec = JobSpec::from_toml(&text, "job.toml").unwrap();
        let e = builtin_connectors().check(&spec, "job.toml").unwrap_err().to_string();
        assert!(
            e.starts_with("job.toml: source.kind: unknown source kind `oracle`"),
            "{e}"
        );
        assert!(e.contains("`embedded`, `postgres`, `mysql`"), "{e}");
    }

    /// A connector outside this crate's list: its own section struct, kind and source.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CountingSpec {
        /// Rows `0..rows`, the cursor being the row number.
        rows: i64,
    }

    struct CountingKind;

    impl SourceKind for CountingKind {
        fn kind(&self) -> &'static str {
            "counting"
        }
        fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
            Ok(Box::new(parse_section::<CountingSpec>(settings, "source", origin)?))
        }
    }

    impl SourceConfig for CountingSpec {
        fn table(&self) -> &str {
            "numbers"
        }
        fn cursor(&self) -> &str {
            "n"
        }
        fn validate(&self, origin: &str) -> Result<()> {
            if self.rows < 1 {
                return Err(Error::config(origin, "source.rows", "must be at least 1"));
            }
            Ok(())
        }
        fn settings(&self) -> toml::Table {
            to_settings(self)
        }
        fn build(&self) -> Result<Arc<dyn Source>> {
            Ok(Arc::new(CountingSource))
        }
    }

    struct CountingSource;

    impl Source for CountingSource {
        fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
            Box::pin(async {
                Ok(TableDescription {
                    schema: Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
                    cursor_column: "n".into(),
                    cursor_kind: CursorKind::Integer,
                    key_columns: vec!["n".into()],
                    columns: vec![ColumnOrigin {
                        name: "n".into(),
                        source_type: "bigint".into(),
                        lossy_step: None,
                    }],
                })
            })
        }
        fn density(&self, _: CursorRange) -> BoxFuture<'_, Result<Vec<backhaul_core::chunking::DensityBucket>>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn extract(&self, _: CursorRange, _: usize) -> BoxFuture<'_, Result<BatchStream>> {
            Box::pin(async { Ok(futures::stream::empty().boxed()) })
        }
    }

    const COUNTING_SPEC: &str = r#"
version = 1
name = "numbers"

[source]
kind = "counting"
rows = 100

[range]
from = "0"
to = "100"

[chunking]
policy = "fixed"
every = 40

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "numbers"
"#;

    /// A new source is one crate plus one registration line: nothing in core or in the
    /// built-in list names it, yet its section is parsed, validated and built, and a job plans.
    #[tokio::test]
    async fn a_connector_registered_with_one_line_plans_a_job() {
        let connectors = builtin_connectors().source(CountingKind);
        let dir = tempfile::tempdir().unwrap();
        let spec = JobSpec::from_toml(COUNTING_SPEC, "job.toml").unwrap();
        let plan = backhaul_coordinator::plan_job(spec, "job.toml", dir.path(), &connectors, true)
            .await
            .unwrap();
        assert_eq!(plan.chunks.len(), 3);
        assert!(
            plan.spec_toml.contains("kind = \"counting\"\nrows = 100\n"),
            "{}",
            plan.spec_toml
        );
        assert!(dir.path().join("warehouse/numbers").is_dir());

        let refuse = |text: String| {
            let spec = JobSpec::from_toml(&text, "job.toml").unwrap();
            connectors.check(&spec, "job.toml").unwrap_err().to_string()
        };
        let e = refuse(COUNTING_SPEC.replace("rows = 100", "rows = 100\ncolour = 1"));
        assert!(e.starts_with("job.toml: source.colour: unknown field `colour`"), "{e}");
        let e = refuse(COUNTING_SPEC.replace("rows = 100", "rows = 0"));
        assert!(e.starts_with("job.toml: source.rows: must be at least 1"), "{e}");
        // Without its line, the kind is unknown.
        let spec = JobSpec::from_toml(COUNTING_SPEC, "job.toml").unwrap();
        let e = builtin_connectors().check(&spec, "job.toml").unwrap_err().to_string();
        assert!(e.contains("unknown source kind `counting`"), "{e}");
    }
    /// Statistics of a 1 TB table of orders spread evenly over three years, without the rows:
    /// what `plan` sees of a PostgreSQL table that size.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TerabyteSpec {}

    struct TerabyteKind;

    impl SourceKind for TerabyteKind {
        fn kind(&self) -> &'static str {
            "terabyte"
        }
        fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
            Ok(Box::new(parse_section::<TerabyteSpec>(settings, "source", origin)?))
        }
    }

    impl SourceConfig for TerabyteSpec {
        fn table(&self) -> &str {
            "orders"
        }
        fn cursor(&self) -> &str {
            "created_at"
        }
        fn validate(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn settings(&self) -> toml::Table {
            to_settings(self)
        }
        fn build(&self) -> Result<Arc<dyn Source>> {
            Ok(Arc::new(TerabyteSource))
        }
    }

    const TERABYTE: f64 = 1e12;
    const DAY_MICROS: i64 = 86_400_000_000;

    struct TerabyteSource;

    impl Source for TerabyteSource {
        fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
            Box::pin(async {
                let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
                Ok(TableDescription {
                    schema: Arc::new(Schema::new(vec![
                        Field::new("order_id", DataType::Int64, false),
                        Field::new("created_at", ts, false),
                    ])),
                    cursor_column: "created_at".into(),
                    cursor_kind: CursorKind::Timestamp,
                    key_columns: vec!["order_id".into()],
                    columns: ["order_id", "created_at"]
                        .map(|name| ColumnOrigin {
                            name: name.into(),
                            source_type: "bigint".into(),
                            lossy_step: None,
                        })
                        .to_vec(),
                })
            })
        }
        fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<backhaul_core::chunking::DensityBucket>>> {
            Box::pin(async move {
                let days = (range.to - range.from) / DAY_MICROS;
                Ok((0..days)
                    .map(|d| backhaul_core::chunking::DensityBucket {
                        range: CursorRange::new(range.from + d * DAY_MICROS, range.from + (d + 1) * DAY_MICROS),
                        rows: TERABYTE / 200.0 / days as f64,
                        bytes: TERABYTE / days as f64,
                    })
                    .collect())
            })
        }
        fn extract(&self, _: CursorRange, _: usize) -> BoxFuture<'_, Result<BatchStream>> {
            Box::pin(async { Ok(futures::stream::empty().boxed()) })
        }
    }

    /// The number of BigQuery load jobs a 1 TB, three-year backfill uses under the default
    /// plan (chunking left at its default), as `plan` computes and reports it.
    #[tokio::test]
    async fn a_terabyte_over_three_years_plans_its_bigquery_load_jobs() {
        let spec = r#"
version = 1
name = "orders-1tb"

[source]
kind = "terabyte"

[range]
from = "2021-01-01"
to = "2024-01-01"

[stage]
path = "stage"

[destination]
kind = "bigquery"
project = "acme-analytics"
dataset = "sales"
table = "orders"
stage_gcs_url = "gs://acme-backhaul-stage/orders"
"#;
        let connectors = builtin_connectors().source(TerabyteKind);
        let dir = tempfile::tempdir().unwrap();
        let spec = JobSpec::from_toml(spec, "job.toml").unwrap();
        let plan = backhaul_coordinator::plan_job(spec, "job.toml", dir.path(), &connectors, false)
            .await
            .unwrap();
        let bytes: u64 = plan.chunks.iter().map(|c| c.estimated_bytes).sum();
        println!(
            "1 TB over 3 years, default plan: {} chunks, {bytes} bytes",
            plan.chunks.len()
        );
        for note in &plan.destination_notes {
            println!("{}: {}", if note.warning { "warning" } else { "note" }, note.message);
        }
        // The byte target alone cuts more chunks than BigQuery takes in a day: the planner
        // makes them larger, says so, and nothing is left to warn about.
        let jobs = plan.chunks.len();
        assert!(jobs <= 1_350, "{jobs}");
        let (cap, from) = plan.load.capped.expect("the cap applied");
        assert!(from > 1_500 && cap.chunks == 1_350, "{from}");
        assert!(
            plan.destination_notes[0]
                .message
                .starts_with(&format!("chunks made larger to stay within BigQuery's 1,500 table modifications per table per day (1,350, leaving a tenth for retries and replays): the chunking policy cuts {from} chunks, the plan has {jobs}")),
            "{:?}",
            plan.destination_notes
        );
        assert!(
            plan.destination_notes[1]
                .message
                .starts_with(&format!("{jobs} load jobs")),
            "{:?}",
            plan.destination_notes
        );
        assert!(!plan.destination_notes.iter().any(|n| n.warning));
    }
}
