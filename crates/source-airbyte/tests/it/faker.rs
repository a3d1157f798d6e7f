//! Airbyte's `source-faker` 7.2.1. It takes no start or end date, so its streams run as one
//! checkpointed chunk. Its state does not resume mid-stream (given any state it emits nothing
//! with `always_updated = false`, everything again otherwise), so resume is tested with the
//! fake connector; here a completed chunk retried gives the same rows from its checkpoint.

use arrow::datatypes::{DataType, TimeUnit};
use backhaul_testkit::airbyte::source_faker;

use super::*;

const USERS: u64 = 300;

fn faker(stream: &str, state_dir: &std::path::Path) -> Option<AirbyteSource> {
    let bin = source_faker()?;
    Some(source(&format!(
        r#"command = ["{}"]
stream = "{stream}"
cursor_field = "created_at"
state_dir = "{}"
timeout = "5m"

[config]
count = {USERS}
seed = 1
records_per_slice = 50
parallelism = 1
always_updated = false
"#,
        bin.display(),
        state_dir.display()
    )))
}

#[tokio::test]
async fn faker_users_are_read_as_one_checkpointed_chunk_with_exact_types() {
    let dir = tempfile::tempdir().unwrap();
    let Some(source) = faker("users", dir.path()) else {
        return;
    };
    let d = source.describe().await.unwrap();
    assert_eq!(d.key_columns, ["id"]);
    let field = |name: &str| d.schema.field_with_name(name).unwrap().clone();
    assert_eq!(field("id").data_type(), &DataType::Int64);
    assert_eq!(
        field("created_at").data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        field("address")
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str),
        Some("arrow.json")
    );

    let whole = range("1900-01-01", "2100-01-01");
    assert!(source.density(whole).await.unwrap().is_empty());
    let batches = read_all(&source, whole, 64).await.unwrap();
    assert_eq!(ids(&batches), (1..=USERS as i64).collect());
    let stats = source.last_extract().unwrap();
    assert_eq!((stats.read, stats.outside, stats.replayed), (USERS, 0, 0));

    // Retried after it finished (a failed commit): the checkpoint replays every row, and faker,
    // given its last state, emits nothing new.
    let again = read_all(&source, whole, 64).await.unwrap();
    assert_eq!(ids(&again), (1..=USERS as i64).collect());
    let stats = source.last_extract().unwrap();
    assert!(stats.resumed_from_state);
    assert_eq!((stats.replayed, stats.read), (USERS, 0));
}

#[tokio::test]
async fn an_unknown_faker_stream_lists_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let Some(source) = faker("customers", dir.path()) else {
        return;
    };
    let e = source.describe().await.unwrap_err().to_string();
    assert!(
        e.contains(
            "airbyte stream `customers`: not in the connector's catalog; it has `products`, `users`, `purchases`"
        ),
        "{e}"
    );
}
