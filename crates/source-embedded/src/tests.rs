//! Tests of the source against real SQLite files in temporary directories.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use backhaul_core::cursor::CursorKind;
use futures::StreamExt;
use tempfile::TempDir;

use super::*;
use crate::generator::HOUR_MICROS;

const RPD: u64 = 2_000;
/// 2024-03-04, a Monday, in days since the epoch.
const DAY: i64 = 19_786;

fn spec(dir: &TempDir, cursor: &str) -> EmbeddedSourceSpec {
    EmbeddedSourceSpec {
        path: dir.path().join("src.db"),
        table: ORDERS_TABLE.into(),
        cursor: cursor.into(),
        rows_per_day: RPD,
        seed: 9,
    }
}

fn days(from: i64, to: i64) -> CursorRange {
    CursorRange::new(from * DAY_MICROS, to * DAY_MICROS)
}

async fn extract_all(source: &EmbeddedSource, range: CursorRange, batch_rows: usize) -> Vec<RecordBatch> {
    let mut stream = source.extract(range, batch_rows).await.unwrap();
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        out.push(batch.unwrap());
    }
    out
}

fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

#[tokio::test]
async fn three_days_extract_exactly_the_expected_rows() {
    let dir = TempDir::new().unwrap();
    let source = EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
    let range = days(DAY, DAY + 3);
    source.prepare(range).await.unwrap();
    let batches = extract_all(&source, range, 1_000).await;
    assert_eq!(rows(&batches), generator::expected_rows(9, RPD, range));
}

#[tokio::test]
async fn extract_returns_only_rows_in_range_in_full_batches() {
    let dir = TempDir::new().unwrap();
    let source = EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
    source.prepare(days(DAY, DAY + 2)).await.unwrap();
    // Bounds inside hours, across a day boundary.
    let range = CursorRange::new(
        (DAY + 1) * DAY_MICROS - 5 * HOUR_MICROS - 12_345,
        (DAY + 1) * DAY_MICROS + 7 * HOUR_MICROS + 999,
    );
    let batches = extract_all(&source, range, 97).await;
    assert_eq!(rows(&batches), generator::expected_rows(9, RPD, range));
    let (last, full) = batches.split_last().unwrap();
    assert!(full.iter().all(|b| b.num_rows() == 97));
    assert!(last.num_rows() <= 97 && last.num_rows() > 0);
    for b in &batches {
        let created = b
            .column_by_name("created_at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert!(created.values().iter().all(|t| range.from <= *t && *t < range.to));
    }
}

#[tokio::test]
async fn batches_carry_the_described_schema_and_exact_values() {
    let dir = TempDir::new().unwrap();
    let source = EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
    let desc = source.describe().await.unwrap();
    assert_eq!(desc.cursor_kind, CursorKind::Timestamp);
    assert_eq!(desc.key_columns, vec!["order_id".to_string()]);
    let attributes = desc.schema.field_with_name("attributes").unwrap();
    assert_eq!(
        attributes
            .metadata()
            .get(schema::EXTENSION_NAME_KEY)
            .map(String::as_str),
        Some(schema::JSON_EXTENSION)
    );
    assert!(!desc.schema.field_with_name("order_id").unwrap().is_nullable());

    let range = days(DAY, DAY + 1);
    source.prepare(range).await.unwrap();
    let batches = extract_all(&source, range, 10_000).await;
    let mut expected = Vec::new();
    generator::generate(9, RPD, range, |o| expected.push(o.clone()));
    let mut got = Vec::new();
    for b in &batches {
        assert_eq!(b.schema(), desc.schema);
        let ids = b.column_by_name("order_id").unwrap().as_primitive::<Int64Type>();
        let amounts = b.column_by_name("amount").unwrap().as_primitive::<Decimal128Type>();
        let shipped = b.column_by_name("shipped_on").unwrap().as_primitive::<Date32Type>();
        let attrs = b.column_by_name("attributes").unwrap().as_string::<i32>();
        let notes = b.column_by_name("note").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            got.push((
                ids.value(i),
                amounts.value(i) as i64,
                shipped.is_valid(i).then(|| shipped.value(i)),
                attrs.is_valid(i).then(|| attrs.value(i).to_string()),
                notes.is_valid(i).then(|| notes.value(i).to_string()),
            ));
        }
    }
    got.sort();
    let mut want: Vec<_> = expected
        .iter()
        .map(|o| {
            (
                o.order_id,
                o.amount_cents,
                o.shipped_on,
                o.attributes.clone(),
                o.note.map(str::to_string),
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn prepare_twice_does_not_duplicate_rows() {
    let dir = TempDir::new().unwrap();
    let source = EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
    let first = source.seed_range(days(DAY, DAY + 2)).await.unwrap();
    assert_eq!(first.days, 2);
    let again = source.seed_range(days(DAY + 1, DAY + 3)).await.unwrap();
    assert_eq!(again.days, 1, "only the new day is seeded");
    source.prepare(days(DAY, DAY + 3)).await.unwrap();
    let range = days(DAY, DAY + 3);
    assert_eq!(
        rows(&extract_all(&source, range, 5_000).await),
        generator::expected_rows(9, RPD, range)
    );
    // Reopening the file with the same parameters is fine.
    EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
}

#[tokio::test]
async fn other_generator_parameters_are_refused() {
    let dir = TempDir::new().unwrap();
    EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
    let mut other = spec(&dir, "created_at");
    other.seed = 10;
    let e = EmbeddedSource::open(&other).unwrap_err();
    assert!(matches!(e, Error::InvalidObject { .. }), "{e}");
    assert!(
        e.to_string().contains("src.db") && e.to_string().contains("seed"),
        "{e}"
    );
}

#[tokio::test]
async fn describe_rejects_unknown_and_unorderable_cursors_and_tables() {
    let dir = TempDir::new().unwrap();
    let unknown = EmbeddedSource::open(&spec(&dir, "nope"))
        .unwrap()
        .describe()
        .await
        .unwrap_err();
    match &unknown {
        Error::InvalidObject { object, message } => {
            assert_eq!(object, "column orders.nope");
            assert!(message.contains("created_at"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }
    let note = EmbeddedSource::open(&spec(&dir, "note"))
        .unwrap()
        .describe()
        .await
        .unwrap_err();
    assert!(
        matches!(&note, Error::InvalidObject { message, .. } if message.contains("not orderable")),
        "{note}"
    );

    let mut missing = spec(&dir, "created_at");
    missing.table = "customers".into();
    let e = EmbeddedSource::open(&missing).unwrap().describe().await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidObject { object, message } if object.contains("customers") && message.contains("src.db")),
        "{e}"
    );
}

#[tokio::test]
async fn date_and_integer_cursors_work() {
    let dir = TempDir::new().unwrap();
    let by_date = EmbeddedSource::open(&spec(&dir, "shipped_on")).unwrap();
    assert_eq!(by_date.describe().await.unwrap().cursor_kind, CursorKind::Date);
    let range = CursorRange::new(DAY + 5, DAY + 6);
    by_date.prepare(range).await.unwrap();
    let batches = extract_all(&by_date, range, 1_000).await;
    let mut want = 0;
    generator::generate(9, RPD, days(DAY, DAY + 6), |o| {
        want += u64::from(o.shipped_on == Some((DAY + 5) as i32))
    });
    assert!(want > 0);
    assert_eq!(rows(&batches), want);

    let by_id = EmbeddedSource::open(&spec(&dir, "order_id")).unwrap();
    let hour = DAY * 24 + 10;
    let range = CursorRange::new(hour * ORDER_ID_STRIDE, (hour + 1) * ORDER_ID_STRIDE);
    by_id.prepare(range).await.unwrap();
    let batches = extract_all(&by_id, range, 1_000).await;
    assert_eq!(rows(&batches), generator::rows_in_hour(9, RPD, hour * HOUR_MICROS));
}

#[tokio::test]
async fn density_uses_statistics_and_the_generator() {
    let dir = TempDir::new().unwrap();
    let source = EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
    let seeded = source.seed_range(days(DAY, DAY + 1)).await.unwrap();
    let buckets = source
        .density(CursorRange::new(DAY * DAY_MICROS + 1, (DAY + 3) * DAY_MICROS))
        .await
        .unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets[0].range, days(DAY, DAY + 1));
    assert_eq!(buckets[0].rows, seeded.rows as f64);
    assert_eq!(buckets[0].bytes, seeded.bytes as f64);
    assert_eq!(buckets[2].rows, generator::rows_in_day(9, RPD, DAY + 2) as f64);
    assert!(buckets.windows(2).all(|w| w[0].range.to == w[1].range.from));
    let per_row = buckets[2].bytes / buckets[2].rows;
    assert!((per_row - seeded.bytes as f64 / seeded.rows as f64).abs() < 1e-6);
    // Nothing was seeded by asking.
    assert_eq!(source.seed_range(days(DAY + 1, DAY + 3)).await.unwrap().days, 2);
}

#[tokio::test]
async fn dropping_the_stream_stops_extraction() {
    let dir = TempDir::new().unwrap();
    let source = EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
    let range = days(DAY, DAY + 2);
    source.prepare(range).await.unwrap();
    let mut stream = source.extract(range, 10).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().num_rows(), 10);
    drop(stream);
    // The reader must not hold the database: a writer gets in right away.
    let report = source.seed_range(days(DAY + 2, DAY + 3)).await.unwrap();
    assert_eq!(report.days, 1);
}

/// Seeding speed; run with `--ignored --nocapture` to see the rate.
#[tokio::test]
#[ignore]
async fn seeding_speed() {
    let dir = TempDir::new().unwrap();
    let mut s = spec(&dir, "created_at");
    s.rows_per_day = 50_000;
    let source = EmbeddedSource::open(&s).unwrap();
    let report = source.seed_range(days(DAY, DAY + 7)).await.unwrap();
    let rate = report.rows as f64 / report.elapsed.as_secs_f64();
    eprintln!("seeded {} rows in {:?}: {rate:.0} rows/s", report.rows, report.elapsed);
}

#[tokio::test]
async fn activity_is_append_only_with_inserts_matching_the_rows_extracted() {
    use backhaul_core::profile::{ActivityQuery, ChangeColumns, TimeWindow};
    let dir = TempDir::new().unwrap();
    let source = EmbeddedSource::open(&spec(&dir, "created_at")).unwrap();
    let range = days(DAY, DAY + 3);
    source.prepare(range).await.unwrap();
    let window = TimeWindow {
        from: (DAY + 1) * DAY_MICROS,
        to: (DAY + 3) * DAY_MICROS,
    };
    let query = ActivityQuery {
        range,
        window,
        columns: ChangeColumns::default(),
    };
    let activity = source.activity(query).await.unwrap().expect("orders answers");
    let inserted = rows(&extract_all(&source, CursorRange::new(window.from, window.to), 4_096).await);
    assert_eq!(activity.inserts, Some(Counted::exact(inserted)));
    assert_eq!(activity.updated_keys, Some(Counted::exact(0)));
    assert_eq!(activity.deleted_keys, Some(Counted::exact(0)));
    assert_eq!(activity.touched_keys, Some(Counted::exact(inserted)));
}
