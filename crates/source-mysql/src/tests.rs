//! Tests against a private MariaDB server (backhaul-testkit): every type round-trips, planning
//! on a skewed table, bad input, a server that goes away mid-chunk, TLS.

use std::sync::Arc;
use std::time::Duration;

use crate::spec::{MysqlSourceSpec, UnsignedBigintMapping, ZeroDatePolicy};
use arrow::array::{
    Array, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Decimal256Array, DurationMicrosecondArray,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, TimeUnit, i256};
use backhaul_core::ErrorClass;
use backhaul_core::chunking::{PlanPolicy, plan_chunks};
use backhaul_core::connector::Source;
use backhaul_core::cursor::{CursorKind, CursorRange, SpecBound};
use backhaul_core::spec::database::{ConnectionSpec, NullCursorPolicy, PasswordSpec, TlsMode, TlsSpec};
use backhaul_testkit::mariadb::{MariaDb, MariaDbOptions};
use futures::{StreamExt, TryStreamExt};

use super::*;

fn server() -> &'static MariaDb {
    MariaDb::shared()
}

/// A fresh database named after the test.
fn database(server: &MariaDb, name: &str) -> String {
    let db = format!("t_{name}");
    server.sql(&format!("DROP DATABASE IF EXISTS `{db}`"));
    server.create_database(&db);
    db
}

fn spec(server: &MariaDb, db: &str, table: &str, cursor: &str) -> MysqlSourceSpec {
    MysqlSourceSpec {
        connection: ConnectionSpec {
            host: server.host().into(),
            port: Some(server.port()),
            user: server.root_user().into(),
            database: db.into(),
            password: PasswordSpec::default(),
            table: table.into(),
            cursor: cursor.into(),
            columns: None,
            tls: TlsSpec::default(),
            null_cursor: NullCursorPolicy::Fail,
        },
        zero_dates: ZeroDatePolicy::Error,
        unsigned_bigint: UnsignedBigintMapping::Uint64,
    }
}

fn micros(text: &str) -> i64 {
    SpecBound::parse(text)
        .unwrap()
        .to_cursor(CursorKind::Timestamp)
        .unwrap()
}

fn everything() -> CursorRange {
    CursorRange::new(micros("0001-01-01T00:00:00Z"), micros("9999-12-31T00:00:00Z"))
}

async fn read_all(source: &MysqlSource, range: CursorRange, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    source.extract(range, batch_rows).await?.try_collect().await
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| {
            panic!(
                "column {name} has type {}",
                batch.column_by_name(name).unwrap().data_type()
            )
        })
}

/// Writes the batches to Parquet in memory and reads them back, as the pipeline does.
fn through_parquet(batch: &RecordBatch) -> RecordBatch {
    let mut buffer = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut buffer, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(buffer))
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    concat(&batches)
}

const TYPES_DDL: &str = "
CREATE TABLE types (
    id INT NOT NULL PRIMARY KEY,
    created DATETIME(6) NOT NULL,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
    flag BOOL,
    d65 DECIMAL(65,30), d38 DECIMAL(38,0), d10 DECIMAL(10,2),
    f FLOAT, dbl DOUBLE,
    b1 BIT(1), b64 BIT(64),
    y YEAR,
    c CHAR(10), vc VARCHAR(100), t TEXT, lt LONGTEXT, latin VARCHAR(20) CHARACTER SET latin1,
    bn BINARY(4), vb VARBINARY(100), bl BLOB, lb LONGBLOB,
    d DATE, dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(6) NULL, tm TIME(6),
    j JSON,
    e ENUM('small','medium','large'), st SET('a','b','c'),
    u UUID,
    KEY (created)
) CHARACTER SET utf8mb4";

fn big_json() -> String {
    let items: Vec<String> = (0..12_000)
        .map(|i| format!(r#"{{"id":{i},"name":"item {i} 🦀 ünïcødé","tags":["a","b"],"price":{i}.25}}"#))
        .collect();
    format!(r#"{{"items":[{}]}}"#, items.join(","))
}

fn big_blob() -> Vec<u8> {
    (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const D65_MAX: &str = "99999999999999999999999999999999999.999999999999999999999999999999";
const D38_MAX: &str = "99999999999999999999999999999999999999";

fn load_types(server: &MariaDb, db: &str) {
    let json = big_json();
    let blob = big_blob();
    server.sql(&format!(
        "USE `{db}`; {TYPES_DDL};
         SET time_zone = '+00:00';
         INSERT INTO types VALUES (
            1, '1900-01-01 00:00:00',
            -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
            0,
            -{D65_MAX}, -{D38_MAX}, -99999999.99,
            -0.375, 2.2250738585072014e-308,
            b'0', b'0',
            1901,
            'a', '', '', '', 'é',
            x'00000000', x'', x'00', x'',
            '1000-01-01', '1000-01-01 00:00:00.000000', '0001-01-01 00:00:00', '1970-01-01 00:00:01.000000',
            '-838:59:59.000000',
            '[]',
            'small', '',
            '00000000-0000-0000-0000-000000000000');
         INSERT INTO types VALUES (
            2, '2100-01-01 00:00:00',
            127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
            9223372036854775807, 18446744073709551615,
            1,
            {D65_MAX}, {D38_MAX}, 99999999.99,
            16777216, 1.7976931348623157e308,
            b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
            2155,
            'ünïcødé', '🦀🚀 emoji', 'two\\nlines\\ttab', '{json}', 'ÿ',
            x'deadbeef', x'00ff00', x'{short}', x'{long}',
            '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59', '2038-01-19 03:14:07.999999',
            '838:59:59.000000',
            '{json}',
            'large', 'a,c',
            'ffffffff-ffff-ffff-ffff-ffffffffffff');
         INSERT INTO types (id, created) VALUES (3, '2000-01-01 00:00:00');
         INSERT INTO types (id, created, dt, ts, d, tm, t) VALUES
            (4, '1969-07-20 20:17:40.123456', '1969-07-20 20:17:40.123456', '2001-09-09 01:46:40.5', '1969-12-31',
             '-00:00:00.000001', 'before 1970');
         SET time_zone = '+03:00';
         INSERT INTO types (id, created, ts, dt) VALUES (5, '2262-04-11 23:47:16.854775', '2024-06-01 12:00:00', '2262-04-11 23:47:16.854775');",
        short = hex(&[0, 1, 2, 255]),
        long = hex(&blob),
    ));
}

#[tokio::test]
async fn every_type_round_trips_exactly() {
    let server = server();
    let db = database(server, "types");
    load_types(server, &db);
    let source = MysqlSource::open(&spec(server, &db, "types", "created")).unwrap();
    let desc = source.describe().await.unwrap();
    assert_eq!(desc.cursor_kind, CursorKind::Timestamp);
    assert_eq!(desc.key_columns, vec!["id".to_string()]);
    let types: Vec<(String, DataType)> = desc
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let type_of = |name: &str| types.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(type_of("biu"), DataType::UInt64);
    assert_eq!(type_of("miu"), DataType::UInt32);
    assert_eq!(type_of("flag"), DataType::Int8);
    assert_eq!(type_of("d65"), DataType::Decimal256(65, 30));
    assert_eq!(type_of("d38"), DataType::Decimal128(38, 0));
    assert_eq!(type_of("b1"), DataType::Boolean);
    assert_eq!(type_of("b64"), DataType::UInt64);
    assert_eq!(
        type_of("ts"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(type_of("dt"), DataType::Timestamp(TimeUnit::Microsecond, None));
    assert_eq!(type_of("tm"), DataType::Duration(TimeUnit::Microsecond));
    assert_eq!(type_of("d"), DataType::Date32);
    assert_eq!(type_of("y"), DataType::Int16);
    assert_eq!(type_of("u"), DataType::Utf8);
    let json_field = desc.schema.field_with_name("j").unwrap();
    assert_eq!(
        json_field
            .metadata()
            .get(schema::EXTENSION_NAME_KEY)
            .map(String::as_str),
        Some(schema::JSON_EXTENSION)
    );
    assert!(desc.schema.field_with_name("lt").unwrap().metadata().is_empty());
    let origin = |name: &str| desc.columns.iter().find(|c| c.name == name).unwrap().clone();
    assert_eq!(origin("j").source_type, "json");
    assert_eq!(origin("biu").source_type, "bigint(20) unsigned");
    assert!(
        desc.columns.iter().all(|c| c.lossy_step.is_none()),
        "{:?}",
        desc.columns
    );
    assert!(!desc.schema.field_with_name("created").unwrap().is_nullable());

    let batches = read_all(&source, everything(), 2).await.unwrap();
    assert!(batches.iter().all(|b| b.num_rows() <= 2));
    let direct = concat(&batches);
    let batch = through_parquet(&direct);
    assert_eq!(batch, direct, "Parquet changed the values");
    assert_eq!(batch.num_rows(), 5);
    let ids: Vec<i32> = column::<Int32Array>(&batch, "id").values().to_vec();
    let row = |id: i32| ids.iter().position(|v| *v == id).unwrap();
    let (lo, hi, nulls, old, zoned) = (row(1), row(2), row(3), row(4), row(5));

    // Integers, both ends of every width, signed and unsigned.
    assert_eq!(column::<Int8Array>(&batch, "ti").value(lo), i8::MIN);
    assert_eq!(column::<Int8Array>(&batch, "ti").value(hi), i8::MAX);
    assert_eq!(column::<UInt8Array>(&batch, "tiu").value(hi), u8::MAX);
    assert_eq!(column::<Int16Array>(&batch, "si").value(lo), i16::MIN);
    assert_eq!(column::<UInt16Array>(&batch, "siu").value(hi), u16::MAX);
    assert_eq!(column::<Int32Array>(&batch, "mi").value(lo), -8_388_608);
    assert_eq!(column::<UInt32Array>(&batch, "miu").value(hi), 16_777_215);
    assert_eq!(column::<Int32Array>(&batch, "i").value(lo), i32::MIN);
    assert_eq!(column::<UInt32Array>(&batch, "iu").value(hi), u32::MAX);
    assert_eq!(column::<Int64Array>(&batch, "bi").value(lo), i64::MIN);
    assert_eq!(column::<Int64Array>(&batch, "bi").value(hi), i64::MAX);
    assert_eq!(column::<UInt64Array>(&batch, "biu").value(hi), u64::MAX);
    assert_eq!(column::<UInt64Array>(&batch, "biu").value(lo), 0);
    assert_eq!(column::<Int8Array>(&batch, "flag").value(hi), 1);

    // Decimals at full declared precision.
    let d65 = column::<Decimal256Array>(&batch, "d65");
    let max65 = i256::from_string(&D65_MAX.replace('.', "")).unwrap();
    assert_eq!(d65.value(hi), max65);
    assert_eq!(d65.value(lo), max65.wrapping_neg());
    assert_eq!(d65.value_as_string(hi), D65_MAX);
    let d38 = column::<Decimal128Array>(&batch, "d38");
    assert_eq!(d38.value(hi), 10i128.pow(38) - 1);
    assert_eq!(d38.value(lo), -(10i128.pow(38) - 1));
    assert_eq!(
        column::<Decimal128Array>(&batch, "d10").value_as_string(lo),
        "-99999999.99"
    );

    // Floats bit for bit.
    assert_eq!(column::<Float32Array>(&batch, "f").value(lo), -0.375);
    assert_eq!(column::<Float32Array>(&batch, "f").value(hi), 16_777_216.0);
    assert_eq!(column::<Float64Array>(&batch, "dbl").value(lo), f64::MIN_POSITIVE);
    assert_eq!(column::<Float64Array>(&batch, "dbl").value(hi), f64::MAX);

    // Bits, years.
    assert!(!column::<BooleanArray>(&batch, "b1").value(lo));
    assert!(column::<BooleanArray>(&batch, "b1").value(hi));
    assert_eq!(column::<UInt64Array>(&batch, "b64").value(hi), u64::MAX);
    assert_eq!(column::<Int16Array>(&batch, "y").value(lo), 1901);
    assert_eq!(column::<Int16Array>(&batch, "y").value(hi), 2155);

    // Text in any character set, non-ASCII, JSON byte for byte, enums and sets.
    let text = |name: &str, at: usize| column::<StringArray>(&batch, name).value(at).to_string();
    assert_eq!(text("c", hi), "ünïcødé");
    assert_eq!(text("vc", hi), "🦀🚀 emoji");
    assert_eq!(text("t", hi), "two\nlines\ttab");
    assert_eq!(text("latin", lo), "é");
    assert_eq!(text("latin", hi), "ÿ");
    let json = big_json();
    assert!(json.len() > 900_000, "the JSON document should be about 1 MB");
    assert_eq!(text("j", hi), json);
    assert_eq!(text("lt", hi), json);
    assert_eq!(text("j", lo), "[]");
    assert_eq!(text("e", hi), "large");
    assert_eq!(text("st", hi), "a,c");
    assert_eq!(text("st", lo), "");
    assert_eq!(text("u", hi), "ffffffff-ffff-ffff-ffff-ffffffffffff");

    // Bytes, including padding of BINARY(n) and a 1 MB blob.
    let bin = |name: &str, at: usize| column::<BinaryArray>(&batch, name).value(at).to_vec();
    assert_eq!(bin("bn", hi), vec![0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(bin("bn", lo), vec![0, 0, 0, 0]);
    assert_eq!(bin("vb", lo), Vec::<u8>::new());
    assert_eq!(bin("bl", hi), vec![0, 1, 2, 255]);
    assert_eq!(bin("lb", hi), big_blob());

    // Dates and times, before 1970 and after 2038, to the microsecond.
    let ts = |name: &str, at: usize| column::<TimestampMicrosecondArray>(&batch, name).value(at);
    let date = |text: &str| days(text) as i32;
    assert_eq!(column::<Date32Array>(&batch, "d").value(lo), date("1000-01-01"));
    assert_eq!(column::<Date32Array>(&batch, "d").value(hi), date("9999-12-31"));
    assert_eq!(column::<Date32Array>(&batch, "d").value(old), date("1969-12-31"));
    assert_eq!(ts("dt", hi), micros("9999-12-31T23:59:59.999999Z"));
    assert_eq!(ts("dt", old), micros("1969-07-20T20:17:40.123456Z"));
    assert_eq!(ts("dt", zoned), micros("2262-04-11T23:47:16.854775Z"));
    assert_eq!(ts("dt0", lo), micros("0001-01-01T00:00:00Z"));
    assert_eq!(ts("created", old), micros("1969-07-20T20:17:40.123456Z"));
    assert_eq!(ts("ts", lo), micros("1970-01-01T00:00:01Z"));
    assert_eq!(ts("ts", hi), micros("2038-01-19T03:14:07.999999Z"));
    assert_eq!(ts("ts", old), micros("2001-09-09T01:46:40.5Z"));
    // Written as 12:00 by a session in +03:00: the instant is 09:00 UTC.
    assert_eq!(ts("ts", zoned), micros("2024-06-01T09:00:00Z"));
    let tm = column::<DurationMicrosecondArray>(&batch, "tm");
    assert_eq!(tm.value(lo), -(838 * 3600 + 59 * 60 + 59) * 1_000_000);
    assert_eq!(tm.value(hi), (838 * 3600 + 59 * 60 + 59) * 1_000_000);
    assert_eq!(tm.value(old), -1);

    // NULL in every nullable column.
    for (i, field) in batch.schema().fields().iter().enumerate() {
        if field.name() != "id" && field.name() != "created" {
            assert!(
                batch.column(i).is_null(nulls),
                "column {} is not NULL in the NULL row",
                field.name()
            );
        }
    }
}

fn days(text: &str) -> i64 {
    SpecBound::parse(text).unwrap().to_cursor(CursorKind::Date).unwrap()
}

#[tokio::test]
async fn column_selection_and_unsigned_bigint_as_decimal() {
    let server = server();
    let db = database(server, "selection");
    server.sql(&format!(
        "USE `{db}`; CREATE TABLE t (id BIGINT UNSIGNED PRIMARY KEY, at DATE NOT NULL, big BIGINT UNSIGNED, skip_me GEOMETRY);
         INSERT INTO t VALUES (18446744073709551615, '2024-01-01', 18446744073709551615, NULL), (1, '2024-01-02', NULL, NULL);"
    ));
    let mut s = spec(server, &db, "t", "at");
    assert!(
        matches!(MysqlSource::open(&s).unwrap().describe().await, Err(Error::TypeFidelity(m)) if m.contains("skip_me") && m.contains("source.columns"))
    );
    s.connection.columns = Some(vec!["AT".into(), "big".into(), "id".into()]);
    s.unsigned_bigint = UnsignedBigintMapping::Decimal;
    let source = MysqlSource::open(&s).unwrap();
    let desc = source.describe().await.unwrap();
    let names: Vec<&str> = desc.schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["at", "big", "id"], "actual names, in the listed order");
    assert_eq!(desc.cursor_column, "at");
    assert_eq!(desc.schema.field(1).data_type(), &DataType::Decimal128(20, 0));
    let range = CursorRange::new(days("2024-01-01"), days("2024-02-01"));
    let batch = concat(&read_all(&source, range, 100).await.unwrap());
    let big = column::<Decimal128Array>(&batch, "big");
    let ids = column::<Decimal128Array>(&batch, "id");
    let at = (0..2).find(|i| ids.value(*i) == i128::from(u64::MAX)).unwrap();
    assert_eq!(big.value(at), i128::from(u64::MAX));
}

#[tokio::test]
async fn zero_dates_fail_naming_the_row_or_read_as_null_when_asked() {
    let server = server();
    let db = database(server, "zero_dates");
    server.sql(&format!(
        "USE `{db}`; SET sql_mode = '';
         CREATE TABLE z (id INT PRIMARY KEY, at DATETIME NOT NULL, d DATE NOT NULL, KEY (at));
         INSERT INTO z VALUES (1, '2024-01-01 10:00:00', '2024-01-01'), (7, '2024-01-01 11:00:00', '0000-00-00');"
    ));
    let range = CursorRange::new(micros("2024-01-01T00:00:00Z"), micros("2024-01-02T00:00:00Z"));
    let strict = MysqlSource::open(&spec(server, &db, "z", "at")).unwrap();
    let err = read_all(&strict, range, 10).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        text.contains("z.d") && text.contains("id = 7") && text.contains("0000-00-00"),
        "{text}"
    );
    assert!(
        text.contains("2024-01-01 11:00:00"),
        "the cursor value is named: {text}"
    );
    assert!(text.contains("zero_dates"), "the opt-in is named: {text}");

    let mut lenient = spec(server, &db, "z", "at");
    lenient.zero_dates = ZeroDatePolicy::Null;
    let lenient = MysqlSource::open(&lenient).unwrap();
    let desc = lenient.describe().await.unwrap();
    let d = desc.columns.iter().find(|c| c.name == "d").unwrap();
    assert!(d.lossy_step.as_deref().is_some_and(|s| s.contains("NULL")), "{d:?}");
    assert!(desc.schema.field_with_name("d").unwrap().is_nullable());
    let batch = concat(&read_all(&lenient, range, 10).await.unwrap());
    assert_eq!(batch.num_rows(), 2);
    assert_eq!(column::<Date32Array>(&batch, "d").null_count(), 1);
}

#[tokio::test]
async fn null_cursors_are_refused_naming_table_and_column() {
    let server = server();
    let db = database(server, "null_cursor");
    server.sql(&format!(
        "USE `{db}`; SET sql_mode = '';
         CREATE TABLE n (id INT PRIMARY KEY, at DATETIME NULL, KEY (at));
         INSERT INTO n VALUES (1, '2024-01-01 10:00:00'), (2, NULL);
         CREATE TABLE zc (id INT PRIMARY KEY, at DATETIME NOT NULL, KEY (at));
         INSERT INTO zc VALUES (1, '2024-01-01 10:00:00'), (2, '0000-00-00 00:00:00');
         CREATE TABLE ok (id INT PRIMARY KEY, at DATETIME NULL, KEY (at));
         INSERT INTO ok VALUES (1, '2024-01-01 10:00:00');"
    ));
    let range = CursorRange::new(micros("2024-01-01T00:00:00Z"), micros("2024-01-02T00:00:00Z"));
    for table in ["n", "zc"] {
        let source = MysqlSource::open(&spec(server, &db, table, "at")).unwrap();
        let err = source.prepare(range).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.class(), ErrorClass::Permanent, "{text}");
        assert!(
            text.contains(&format!("{db}.{table}.at")) && text.contains("NULL cursor"),
            "{text}"
        );
    }
    let source = MysqlSource::open(&spec(server, &db, "ok", "at")).unwrap();
    source.prepare(range).await.unwrap();
}

#[tokio::test]
async fn bad_credentials_and_names_are_permanent_and_clear() {
    let server = server();
    let db = database(server, "bad_input");
    server.sql(&format!(
        "USE `{db}`; CREATE TABLE t (id INT PRIMARY KEY, at DATETIME NOT NULL, KEY (at));"
    ));
    server.create_user("loader", "right-horse-battery", &db);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "wrong-horse-battery\n").unwrap();
    let mut s = spec(server, &db, "t", "at");
    s.connection.user = "loader".into();
    s.connection.password.file = Some(secret.clone());
    let source = MysqlSource::open(&s).unwrap();
    assert!(
        !format!("{source:?}").contains("wrong-horse"),
        "Debug shows the password"
    );
    let err = source.describe().await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.class(), ErrorClass::Permanent, "{text}");
    assert!(text.contains("Access denied") && text.contains("loader"), "{text}");
    assert!(!text.contains("horse"), "the password leaked: {text}");

    std::fs::write(&secret, "right-horse-battery\n").unwrap();
    let source = MysqlSource::open(&s).unwrap();
    source.describe().await.unwrap();

    let err = MysqlSource::open(&spec(server, &db, "missing", "at"))
        .unwrap()
        .describe()
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains(&format!("{db}.missing")), "{err}");

    let err = MysqlSource::open(&spec(server, &db, "t", "nope"))
        .unwrap()
        .describe()
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let text = err.to_string();
    assert!(
        text.contains(&format!("{db}.t.nope")) && text.contains("id, at"),
        "{text}"
    );

    let mut listed = spec(server, &db, "t", "at");
    listed.connection.columns = Some(vec!["at".into(), "ghost".into()]);
    let err = MysqlSource::open(&listed).unwrap().describe().await.unwrap_err();
    assert!(err.to_string().contains("t.ghost"), "{err}");

    let mut env = spec(server, &db, "t", "at");
    env.connection.password.env = Some("BACKHAUL_TEST_UNSET_PASSWORD_VARIABLE".into());
    let err = MysqlSource::open(&env).unwrap_err();
    assert!(
        err.to_string().contains("BACKHAUL_TEST_UNSET_PASSWORD_VARIABLE"),
        "{err}"
    );

    let mut refused = spec(server, &db, "t", "at");
    refused.connection.port = Some(unused_port());
    let err = MysqlSource::open(&refused).unwrap().describe().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}

fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn too_many_connections_is_throttled() {
    let server = server();
    let db = database(server, "throttled");
    server.sql(&format!(
        "USE `{db}`; CREATE TABLE t (id INT PRIMARY KEY, at DATE NOT NULL);"
    ));
    server.create_user("single", "pw", &db);
    server.sql("ALTER USER 'single'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 1");
    let mut s = spec(server, &db, "t", "at");
    s.connection.user = "single".into();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    s.connection.password.file = Some(dir.path().join("pw"));
    let holder = MysqlSource::open(&s).unwrap();
    let _held = holder.connector.connect().await.unwrap();
    let err = MysqlSource::open(&s).unwrap().describe().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled, "{err}");
}

/// 90% of the rows in the last 10% of a year.
#[tokio::test]
async fn skewed_table_gets_evenly_sized_chunks() {
    let server = server();
    let db = database(server, "skewed");
    server.sql(&format!(
        "USE `{db}`; SET time_zone = '+00:00';
         CREATE TABLE events (id INT PRIMARY KEY, at DATETIME NOT NULL, body VARCHAR(64), KEY (at));
         INSERT INTO events SELECT seq, '2023-01-01' + INTERVAL (seq * 4730) SECOND, REPEAT('x', 40) FROM seq_1_to_6000;
         INSERT INTO events SELECT 6000 + seq, '2023-11-23 12:00:00' + INTERVAL (seq * 58) SECOND, REPEAT('y', 40) FROM seq_1_to_54000;
         ANALYZE TABLE events;"
    ));
    let source = MysqlSource::open(&spec(server, &db, "events", "at")).unwrap();
    source.describe().await.unwrap();
    let range = CursorRange::new(micros("2023-01-01T00:00:00Z"), micros("2024-01-01T00:00:00Z"));
    source.prepare(range).await.unwrap();
    let density = source.density(range).await.unwrap();
    let estimated: f64 = density.iter().map(|b| b.rows).sum();
    assert!(
        (30_000.0..=120_000.0).contains(&estimated),
        "estimated {estimated} rows for 60000"
    );
    let total_bytes: f64 = density.iter().map(|b| b.bytes).sum();
    let chunks = plan_chunks(
        range,
        PlanPolicy::TargetBytes((total_bytes / 10.0) as u64),
        &density,
        1_000_000,
    )
    .unwrap();
    assert!(chunks.len() >= 6, "{} chunks", chunks.len());
    let mut sizes = Vec::new();
    for chunk in &chunks {
        let sql = format!(
            "SELECT COUNT(*) FROM `{db}`.events WHERE at >= FROM_UNIXTIME({}) AND at < FROM_UNIXTIME({})",
            chunk.range.from / 1_000_000,
            chunk.range.to / 1_000_000
        );
        sizes.push(
            server
                .sql(&format!("SET time_zone = '+00:00'; {sql}"))
                .trim()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert_eq!(sizes.iter().sum::<u64>(), 60_000);
    let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
    assert!(max <= 2 * min, "chunk sizes differ more than 2x: {sizes:?}");
    // Equal-width chunks would put almost everything in the last one.
    assert!(
        chunks.last().unwrap().range.width() < range.width() / 20,
        "{:?}",
        chunks.last()
    );
}

/// A batch, then the connection is killed from another session: the stream ends with a
/// transient error.
#[tokio::test]
async fn killed_connection_mid_chunk_is_transient() {
    let server = server();
    let db = database(server, "killed");
    load_many_rows(server, &db, 200_000);
    let source = MysqlSource::open(&spec(server, &db, "wide", "at")).unwrap();
    let mut stream = source.extract(everything(), 1_000).await.unwrap();
    stream.next().await.unwrap().unwrap();
    let id = server
        .sql(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND INFO LIKE 'SELECT%wide%' AND ID <> CONNECTION_ID()"
        ))
        .trim()
        .to_string();
    assert!(!id.is_empty(), "the chunk's query is not in the process list");
    server.sql(&format!("KILL CONNECTION {id}"));
    let err = drain(&mut stream).await.expect_err("the stream should fail");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}

/// The server process dies (SIGKILL) in the middle of a chunk.
#[tokio::test]
async fn server_killed_mid_chunk_is_transient() {
    let server = MariaDb::start(MariaDbOptions::default()).unwrap();
    server.create_database("crash");
    load_many_rows(&server, "crash", 200_000);
    let source = MysqlSource::open(&spec(&server, "crash", "wide", "at")).unwrap();
    let mut stream = source.extract(everything(), 1_000).await.unwrap();
    stream.next().await.unwrap().unwrap();
    server.kill_server();
    let err = drain(&mut stream).await.expect_err("the stream should fail");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    let err = source
        .extract(everything(), 1_000)
        .await
        .err()
        .expect("the server is gone");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}

async fn drain(stream: &mut backhaul_core::connector::BatchStream) -> Result<u64> {
    let mut rows = 0;
    while let Some(batch) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the stream hung")
    {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

fn load_many_rows(server: &MariaDb, db: &str, rows: u64) {
    server.sql(&format!(
        "USE `{db}`; SET time_zone = '+00:00';
         CREATE TABLE wide (id INT PRIMARY KEY, at DATETIME NOT NULL, body VARCHAR(200), KEY (at));
         INSERT INTO wide SELECT seq, '2024-01-01' + INTERVAL seq SECOND, REPEAT(MD5(seq), 6) FROM seq_1_to_{rows};"
    ));
}

/// A consumer that stops early leaves no query running on the server.
#[tokio::test]
async fn dropping_the_stream_stops_the_query() {
    let server = server();
    let db = database(server, "dropped");
    load_many_rows(server, &db, 100_000);
    let source = MysqlSource::open(&spec(server, &db, "wide", "at")).unwrap();
    let mut stream = source.extract(everything(), 100).await.unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    let running = || {
        server
            .sql(&format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND INFO LIKE 'SELECT%wide%'"
            ))
            .trim()
            .to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while running() != "0" {
        assert!(std::time::Instant::now() < deadline, "the chunk query still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: u64 = source
        .extract(everything(), 10_000)
        .await
        .unwrap()
        .map(|b| b.unwrap().num_rows() as u64)
        .fold(0, |a, b| async move { a + b })
        .await;
    assert_eq!(rows, 100_000);
}

/// The consumer drops the stream while the server is still working out the next row (each
/// row takes a second): the reader must not wait for that row (nor for the next thousand) to
/// notice, and the query must leave the server.
#[tokio::test]
async fn dropping_the_stream_while_the_server_is_slow_kills_the_query() {
    let server = server();
    let db = database(server, "slow");
    server.sql(&format!(
        "USE `{db}`; SET time_zone = '+00:00';
         CREATE TABLE wide (id INT PRIMARY KEY, at DATETIME NOT NULL, body VARCHAR(200), KEY (at));
         INSERT INTO wide SELECT seq, '2024-01-01' + INTERVAL seq SECOND, MD5(seq) FROM seq_1_to_5000;
         CREATE VIEW slow AS SELECT id, at, body FROM wide WHERE SLEEP(1) = 0;"
    ));
    let source = MysqlSource::open(&spec(server, &db, "slow", "at")).unwrap();
    let stream = source.extract(everything(), 10_000).await.unwrap();
    let running = || {
        server
            .sql(&format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND INFO LIKE 'SELECT%slow%' AND ID <> CONNECTION_ID()"
            ))
            .trim()
            .to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while running() == "0" {
        assert!(std::time::Instant::now() < deadline, "the chunk query never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);
    // Without the watch the reader would notice only after 1024 more rows: 17 minutes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while running() != "0" {
        assert!(std::time::Instant::now() < deadline, "the chunk query still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn session_cipher(source: &MysqlSource) -> Result<String> {
    let mut conn = source.connector.connect().await?;
    let row: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .map_err(|e| source.connector.classify(e, "test"))?;
    Ok(row.map(|r| r.1).unwrap_or_default())
}

#[tokio::test]
async fn tls_modes_verify_what_they_promise() {
    let server = server();
    let db = database(server, "tls");
    server.sql(&format!(
        "USE `{db}`; CREATE TABLE t (id INT PRIMARY KEY, at DATE NOT NULL);"
    ));
    let tls = server.tls().clone();
    let with = |host: &str, mode: TlsMode, ca: &std::path::Path| {
        let mut s = spec(server, &db, "t", "at");
        s.connection.host = host.into();
        s.connection.tls = TlsSpec {
            mode,
            ca_file: Some(ca.to_path_buf()),
        };
        MysqlSource::open(&s).unwrap()
    };
    // The certificate names `localhost` only.
    let full = with(&tls.server_name, TlsMode::VerifyFull, &tls.ca);
    assert!(
        !session_cipher(&full).await.unwrap().is_empty(),
        "verify_full is not encrypted"
    );
    full.describe().await.unwrap();

    let wrong_name = with("127.0.0.1", TlsMode::VerifyFull, &tls.ca);
    let err = session_cipher(&wrong_name).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");

    let ca_only = with("127.0.0.1", TlsMode::VerifyCa, &tls.ca);
    assert!(
        !session_cipher(&ca_only).await.unwrap().is_empty(),
        "verify_ca is not encrypted"
    );
    ca_only.describe().await.unwrap();

    for mode in [TlsMode::VerifyFull, TlsMode::VerifyCa] {
        let untrusted = with(&tls.server_name, mode, &tls.other_ca);
        let err = session_cipher(&untrusted).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Permanent, "{mode:?}: {err}");
        assert!(err.to_string().contains("TLS"), "{mode:?}: {err}");
    }

    let plain = MysqlSource::open(&spec(server, &db, "t", "at")).unwrap();
    assert_eq!(session_cipher(&plain).await.unwrap(), "", "disable still uses TLS");
}

#[tokio::test]
async fn source_is_shareable_across_tasks() {
    let server = server();
    let db = database(server, "shared");
    load_many_rows(server, &db, 10_000);
    let source = Arc::new(MysqlSource::open(&spec(server, &db, "wide", "at")).unwrap());
    let range = CursorRange::new(micros("2024-01-01T00:00:00Z"), micros("2024-01-02T00:00:00Z"));
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..4 {
        let source = source.clone();
        let width = range.width() / 4;
        let piece = CursorRange::new(range.from + part * width, range.from + (part + 1) * width);
        tasks.spawn(async move {
            read_all(&source, piece, 777)
                .await
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    assert_eq!(total, 10_000);
}

#[tokio::test]
async fn density_counts_empty_stretches_as_zero_and_falls_back_without_an_index() {
    let server = server();
    let db = database(server, "sparse");
    server.sql(&format!(
        "USE `{db}`; SET time_zone = '+00:00';
         CREATE TABLE one (id INT PRIMARY KEY, at DATETIME NOT NULL, KEY (at));
         INSERT INTO one VALUES (1, '2024-01-15 12:00:00');
         CREATE TABLE unindexed (id INT PRIMARY KEY, at DATETIME NOT NULL);
         INSERT INTO unindexed SELECT seq, '2024-01-01' + INTERVAL seq MINUTE FROM seq_1_to_1000;
         ANALYZE TABLE unindexed;"
    ));
    let january = CursorRange::new(micros("2024-01-01T00:00:00Z"), micros("2024-02-01T00:00:00Z"));
    let one = MysqlSource::open(&spec(server, &db, "one", "at")).unwrap();
    let buckets = one.density(january).await.unwrap();
    let rows: f64 = buckets.iter().map(|b| b.rows).sum();
    assert_eq!(rows, 1.0, "{buckets:?}");
    let empty = CursorRange::new(micros("2023-01-01T00:00:00Z"), micros("2023-02-01T00:00:00Z"));
    assert_eq!(
        one.density(empty).await.unwrap().iter().map(|b| b.rows).sum::<f64>(),
        0.0
    );

    let unindexed = MysqlSource::open(&spec(server, &db, "unindexed", "at")).unwrap();
    let buckets = unindexed.density(january).await.unwrap();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    assert_eq!(buckets[0].range, january);
    assert!((500.0..=2000.0).contains(&buckets[0].rows), "{buckets:?}");
    // Extraction still works, by scanning.
    let batch = concat(&read_all(&unindexed, january, 300).await.unwrap());
    assert_eq!(batch.num_rows(), 1000);
}

/// InnoDB clusters rows by primary key: a cursor leading it is in physical order; any other
/// cursor's order is unknown.
#[tokio::test]
async fn a_cursor_leading_the_innodb_primary_key_is_in_physical_order() {
    let server = server();
    let db = database(server, "clustered");
    server.sql(&format!(
        "USE `{db}`;
         CREATE TABLE events (id INT PRIMARY KEY, at DATETIME NOT NULL, body VARCHAR(64), KEY (at)) ENGINE = InnoDB;
         INSERT INTO events SELECT seq, '2023-01-01' + INTERVAL seq MINUTE, REPEAT('x', 40) FROM seq_1_to_6000;
         ANALYZE TABLE events;"
    ));
    let by_key = MysqlSource::open(&spec(server, &db, "events", "id")).unwrap();
    let order = by_key.physical_order().await.unwrap().expect("clustered on the cursor");
    assert_eq!(order.correlation, 1.0);
    assert!(order.heap_pages >= 1.0 && order.table_rows > 1_000.0, "{order:?}");
    let by_time = MysqlSource::open(&spec(server, &db, "events", "at")).unwrap();
    assert_eq!(by_time.physical_order().await.unwrap(), None);
}
