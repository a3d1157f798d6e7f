use super::*;
use crate::cursor::CursorKind;
use crate::discover::DiscoveredColumn;
use crate::registry::{DestinationConfig, SourceConfig};

const GOOD: &str = r#"
version = 1

[pipeline]
name = "shop"
max_source_connections = 3

[source]
kind = "db"
host = "db.internal"

[range]
from = "2024-01-01"
to = "now"

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"

[sync]
mode = "append"

[[tables]]
table = "orders"
cursor = "updated_at"
sync_mode = "dedup"
blocked_columns = ["card"]

[[tables]]
table = "events"
cursor = "created_at"
[tables.chunking]
policy = "fixed"
every = "1h"

[schema]
include = ["*"]
exclude = ["tmp_*"]
"#;

struct DbKind;

impl SourceKind for DbKind {
    fn kind(&self) -> &'static str {
        "db"
    }
    fn parse(&self, _: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
        Err(Error::config(origin, "source", "not parsed in these tests"))
    }
    fn table_settings(&self, connection: &toml::Table, table: &TableChoice, origin: &str) -> Result<toml::Table> {
        crate::spec::database::table_settings(connection, table, origin)
    }
}

struct LocalKind;

impl DestinationKind for LocalKind {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn parse(&self, _: &toml::Table, origin: &str) -> Result<Box<dyn DestinationConfig>> {
        Err(Error::config(origin, "destination", "not parsed in these tests"))
    }
}

fn column(name: &str, kind: Option<CursorKind>) -> DiscoveredColumn {
    DiscoveredColumn {
        name: name.into(),
        source_type: "t".into(),
        nullable: false,
        cursor_kind: kind,
    }
}

fn table(name: &str, columns: &[(&str, Option<CursorKind>)], key: &[&str]) -> DiscoveredTable {
    DiscoveredTable::new(
        format!("public.{name}"),
        name.into(),
        columns.iter().map(|(n, k)| column(n, *k)).collect(),
        key.iter().map(|k| k.to_string()).collect(),
    )
}

fn catalog() -> Vec<(Option<String>, Catalog)> {
    let ts = Some(CursorKind::Timestamp);
    let int = Some(CursorKind::Integer);
    vec![(
        None,
        Catalog {
            schema: "public".into(),
            tables: vec![
                table("orders", &[("id", int), ("card", None), ("updated_at", ts)], &["id"]),
                table("events", &[("id", int), ("created_at", ts)], &[]),
                table(
                    "customers",
                    &[("id", int), ("modified_at", ts), ("created_at", ts)],
                    &["id"],
                ),
                table("tmp_load", &[("x", None)], &[]),
            ],
        },
    )]
}

fn parse(text: &str) -> PipelineSpec {
    PipelineSpec::from_toml(text, "p.toml").unwrap()
}

fn invalid(text: &str) -> String {
    parse(text).validate("p.toml").unwrap_err().to_string()
}

fn expand_error(text: &str) -> String {
    let spec = parse(text);
    spec.validate("p.toml").unwrap();
    spec.expand("p.toml", &catalog(), &DbKind, &LocalKind)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_pipeline_is_told_by_its_pipeline_table() {
    assert!(is_pipeline(GOOD));
    assert!(!is_pipeline("version = 1\nname = \"x\"\n[source]\nkind = \"db\"\n"));
    assert!(!is_pipeline("pipeline = \"x\"\n"));
}

#[test]
fn every_table_becomes_a_job() {
    let spec = parse(GOOD);
    spec.validate("p.toml").unwrap();
    assert_eq!(spec.max_source_connections(), 3);
    assert_eq!(spec.schemas(), [None]);
    let jobs = spec.expand("p.toml", &catalog(), &DbKind, &LocalKind).unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.spec.name.as_str()).collect();
    assert_eq!(names, ["shop-orders", "shop-events", "shop-customers"]);
    let orders = &jobs[0].spec;
    assert_eq!(orders.source.settings["table"].as_str(), Some("public.orders"));
    assert_eq!(orders.source.settings["cursor"].as_str(), Some("updated_at"));
    assert_eq!(orders.source.settings["host"].as_str(), Some("db.internal"));
    let columns: Vec<&str> = orders.source.settings["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(columns, ["id", "updated_at"], "the blocked column is left out");
    assert_eq!(orders.destination.settings["table"].as_str(), Some("orders"));
    assert_eq!(orders.sync.as_ref().unwrap().mode, SyncMode::Dedup);
    let events = &jobs[1].spec;
    assert_eq!(events.sync.as_ref().unwrap().mode, SyncMode::Append);
    assert!(matches!(events.chunking, ChunkingSpec::Fixed { .. }));
    assert!(!events.source.settings.contains_key("columns"));
    // Selected by the schema: the best candidate is the last-modified time.
    let customers = &jobs[2];
    assert_eq!(customers.key, "schema");
    assert_eq!(customers.spec.source.settings["cursor"].as_str(), Some("modified_at"));
    for job in &jobs {
        job.spec.validate("p.toml").unwrap();
    }
}

#[test]
fn bad_input_names_the_key() {
    let e = invalid(&GOOD.replace("name = \"shop\"", "name = \"Shop\""));
    assert!(e.starts_with("p.toml: pipeline.name:"), "{e}");
    let e = invalid(&GOOD.replace("max_source_connections = 3", "max_source_connections = 0"));
    assert!(e.starts_with("p.toml: pipeline.max_source_connections:"), "{e}");
    let e = invalid(&GOOD.replace("exclude = [\"tmp_*\"]", "exclude = [\"tmp_[0-9]\"]"));
    assert!(
        e.starts_with("p.toml: schema.exclude[0]: `tmp_[0-9]`: `[` is not allowed"),
        "{e}"
    );
    let e = invalid(&GOOD.replace("table = \"events\"", "table = \"orders\""));
    assert!(
        e.starts_with("p.toml: tables[1].table: `orders` is already listed as tables[0]"),
        "{e}"
    );
    let e = invalid(&GOOD.replace("blocked_columns = [\"card\"]", "blocked_columns = [\"updated_at\"]"));
    assert!(e.starts_with("p.toml: tables[0].blocked_columns:"), "{e}");
    let e = invalid(&GOOD.replace("every = \"1h\"", "every = \"1 hour\""));
    assert!(e.starts_with("p.toml: tables[1].chunking.every:"), "{e}");
    let e = PipelineSpec::from_toml(
        &GOOD.replace("cursor = \"created_at\"", "cursr = \"created_at\""),
        "p.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `cursr`"), "{e}");
    let no_tables = GOOD[..GOOD.find("[[tables]]").unwrap()].to_string();
    let e = invalid(&no_tables);
    assert!(e.starts_with("p.toml: tables: a pipeline needs tables"), "{e}");
}

#[test]
fn tables_are_checked_against_the_catalog() {
    let e = expand_error(&GOOD.replace("table = \"events\"", "table = \"evnts\""));
    assert!(
        e.starts_with("p.toml: tables[1].table: table `evnts` does not exist in `public`"),
        "{e}"
    );
    let e = expand_error(&GOOD.replace("cursor = \"created_at\"", "cursor = \"created\""));
    assert!(
        e.starts_with("p.toml: tables[1].cursor: table `public.events` has no column `created`"),
        "{e}"
    );
    assert!(e.contains("`created_at` (creation time)"), "{e}");
    // events has no primary key: dedup is refused naming the table and the key.
    let e = expand_error(&GOOD.replace(
        "cursor = \"created_at\"",
        "cursor = \"created_at\"\nsync_mode = \"dedup\"",
    ));
    assert!(
        e.starts_with("p.toml: tables[1].primary_key: table `public.events` syncs in dedup mode"),
        "{e}"
    );
    let ok = GOOD.replace(
        "cursor = \"created_at\"",
        "cursor = \"created_at\"\nsync_mode = \"dedup\"\nprimary_key = [\"id\"]",
    );
    let jobs = parse(&ok).expand("p.toml", &catalog(), &DbKind, &LocalKind).unwrap();
    assert_eq!(
        jobs[1].spec.sync.as_ref().unwrap().primary_key,
        Some(vec!["id".to_string()])
    );
    let e = expand_error(&GOOD.replace("blocked_columns = [\"card\"]", "blocked_columns = [\"cvv\"]"));
    assert!(
        e.starts_with("p.toml: tables[0].blocked_columns: table `public.orders` has no column `cvv`"),
        "{e}"
    );
    // A table the schema selects without any cursor candidate is named.
    let e = expand_error(&GOOD.replace("exclude = [\"tmp_*\"]", "exclude = []"));
    assert!(
        e.starts_with("p.toml: schema.include: table `public.tmp_load` has no column"),
        "{e}"
    );
    // A connection section naming a table is refused: tables belong to [[tables]].
    let e = expand_error(&GOOD.replace("host = \"db.internal\"", "host = \"db.internal\"\ntable = \"x\""));
    assert!(
        e.starts_with("p.toml: source.table: a pipeline's [source] holds the connection only"),
        "{e}"
    );
}
