//! Helpers: specs for a test server, reading whole ranges.

use arrow::array::RecordBatch;
use backhaul_core::Result;
use backhaul_core::connector::Source;
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::spec::database::{ConnectionSpec, PasswordSpec};
use backhaul_source_postgres::PostgresSource;
use backhaul_source_postgres::spec::PostgresSourceSpec;
use backhaul_testkit::postgres::PostgresServer;
use futures::TryStreamExt;

/// A spec reading `table` of `database` on `server` over TCP with the password file.
pub fn spec(server: &PostgresServer, database: &str, table: &str, cursor: &str) -> PostgresSourceSpec {
    PostgresSourceSpec {
        connection: ConnectionSpec {
            host: server.host().into(),
            port: Some(server.port()),
            user: server.user().into(),
            database: database.into(),
            password: PasswordSpec {
                env: None,
                file: Some(server.password_file()),
            },
            table: table.into(),
            cursor: cursor.into(),
            columns: None,
            tls: Default::default(),
            null_cursor: Default::default(),
        },
        unconstrained_numeric: Default::default(),
        infinite_datetime: Default::default(),
        special_numeric: Default::default(),
        parallel_scans: None,
    }
}

pub fn source(spec: &PostgresSourceSpec) -> PostgresSource {
    PostgresSource::open(spec).expect("open source")
}

/// Every batch of `range`.
pub async fn extract_all(source: &dyn Source, range: CursorRange, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    source.extract(range, batch_rows).await?.try_collect().await
}

pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

pub fn micros(text: &str) -> i64 {
    SpecBound::parse(text)
        .unwrap()
        .to_cursor(CursorKind::Timestamp)
        .unwrap()
}

pub fn days(text: &str) -> i64 {
    SpecBound::parse(text).unwrap().to_cursor(CursorKind::Date).unwrap()
}

/// The whole representable time range, for tables whose rows are anywhere.
pub fn all_time() -> CursorRange {
    CursorRange::new(micros("0001-01-01"), micros("9999-12-31"))
}

/// The plan of `range` for two workers with the source's own density and physical order, at a
/// byte target of a tenth of the range (about ten chunks where nothing else decides).
pub async fn plan_for_two_workers(
    source: &dyn Source,
    range: CursorRange,
    order: backhaul_core::chunking::PhysicalOrder,
    granularity: i64,
) -> backhaul_core::chunking::ChunkPlan {
    use backhaul_core::chunking::{PlanContext, PlanPolicy, estimate, plan_for};
    let density = source.density(range).await.unwrap();
    let bytes = estimate(range, &density).1;
    let context = PlanContext {
        workers: 2,
        order: Some(order),
        max_chunks: None,
    };
    plan_for(
        range,
        PlanPolicy::TargetBytes((bytes / 10.0) as u64),
        &density,
        granularity,
        context,
    )
    .unwrap()
}
