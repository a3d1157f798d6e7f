//! Every mapped type round-trips: the values extracted, and read back from zstd Parquet, equal
//! what the server holds, extremes and NULLs included.

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Decimal256Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    Time64MicrosecondArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Int32Type, TimeUnit, i256};
use backhaul_core::connector::Source;
use backhaul_source_postgres::spec::{InfiniteDatetime, SpecialNumeric, UnconstrainedNumeric};
use backhaul_source_postgres::types::{EXTENSION_NAME_KEY, JSON_EXTENSION, UUID_EXTENSION};
use backhaul_testkit::postgres::PostgresServer;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::util::{all_time, days, extract_all, micros, source, spec};

const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE "All Types" (
    id          bigint PRIMARY KEY,
    ts          timestamptz NOT NULL,
    c_int2      smallint,
    c_int4      integer,
    c_int8      bigint,
    c_num38     numeric(38,9),
    c_num15     numeric(15,2),
    c_num60     numeric(60,10),
    c_real      real,
    c_double    double precision,
    c_bool      boolean,
    c_text      text,
    c_varchar   varchar(20),
    c_char      char(5),
    c_name      name,
    c_bytea     bytea,
    c_date      date,
    c_time      time,
    c_ts        timestamp,
    c_tstz      timestamptz,
    c_interval  interval,
    c_uuid      uuid,
    c_json      json,
    c_jsonb     jsonb,
    c_mood      mood,
    c_posint    posint,
    c_int_arr   integer[],
    c_text_arr  text[],
    c_num_arr   numeric(10,2)[],
    c_oid       oid
);
INSERT INTO "All Types" VALUES
(1, '2024-01-01 00:00:01+00', 32767, 2147483647, 9223372036854775807,
 '99999999999999999999999999999.999999999', '9999999999999.99',
 '12345678901234567890123456789012345678901234567890.0123456789',
 3.4028235e38, 1.7976931348623157e308, true,
 'héllo wörld ✓ 日本語 🚀', 'varchar', 'ab', 'a_name', '\x00ff10',
 '9999-12-31', '23:59:59.999999', '2200-01-01 12:34:56.789012', '2100-06-15 10:00:00+02',
 '1 year 2 months 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
 '{"a": [1, 2, {"b": null}]}', '{"k": "ü", "n": 1.50}', 'happy', 7,
 '{1,NULL,3}', '{"a",NULL,"ü"}', '{1.50,NULL,-2.25}', 4000000000),
(2, '2024-01-01 00:00:02+00', -32768, -2147483648, -9223372036854775808,
 '-99999999999999999999999999999.999999999', '-0.01',
 '-99999999999999999999999999999999999999999999999999.9999999999',
 '-Infinity', 'NaN', false,
 '', '', '', '', '',
 '4713-01-01 BC', '00:00:00', '1900-01-01 00:00:00', '1969-07-20 20:17:40+00',
 '-3 days -00:00:01', '00000000-0000-0000-0000-000000000000',
 '[]', '{}', 'sad', 1,
 '{}', '{}', '{}', 0),
(3, '2024-01-01 00:00:03+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(4, '2024-01-01 00:00:04+00', 0, 0, 0, '0', '0', '0', 0, 0, NULL, 'x', NULL, NULL, NULL, NULL,
 '1970-01-01', NULL, '1970-01-01 00:00:00', '2038-01-19 03:14:08+00', '0', NULL,
 json_build_object('big', repeat('é', 300000), 'n', 1), jsonb_build_object('big', repeat('ü', 300000)),
 NULL, NULL, NULL, NULL, NULL, NULL);
"#;

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
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

#[tokio::test]
async fn every_type_round_trips_with_extremes_and_nulls() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, SCHEMA).unwrap();
    let src = source(&spec(server, &db, "public.\"All Types\"", "ts"));

    let desc = src.describe().await.unwrap();
    let schema = desc.schema.clone();
    let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(ty("c_num38"), DataType::Decimal128(38, 9));
    assert_eq!(ty("c_num15"), DataType::Decimal128(15, 2));
    assert_eq!(ty("c_num60"), DataType::Decimal256(60, 10));
    assert_eq!(ty("ts"), DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    assert_eq!(ty("c_ts"), DataType::Timestamp(TimeUnit::Microsecond, None));
    assert_eq!(ty("c_time"), DataType::Time64(TimeUnit::Microsecond));
    assert_eq!(ty("c_uuid"), DataType::FixedSizeBinary(16));
    assert_eq!(ty("c_mood"), DataType::Utf8);
    assert_eq!(ty("c_posint"), DataType::Int32);
    assert_eq!(ty("c_oid"), DataType::UInt32);
    let ext = |n: &str| {
        schema
            .field_with_name(n)
            .unwrap()
            .metadata()
            .get(EXTENSION_NAME_KEY)
            .cloned()
    };
    assert_eq!(ext("c_json").as_deref(), Some(JSON_EXTENSION));
    assert_eq!(ext("c_jsonb").as_deref(), Some(JSON_EXTENSION));
    assert_eq!(ext("c_uuid").as_deref(), Some(UUID_EXTENSION));
    assert!(!schema.field_with_name("id").unwrap().is_nullable());
    assert!(schema.field_with_name("c_int2").unwrap().is_nullable());
    assert_eq!(desc.key_columns, vec!["id".to_string()]);
    let origin = |n: &str| desc.columns.iter().find(|c| c.name == n).unwrap().clone();
    assert_eq!(origin("c_num60").source_type, "numeric(60,10)");
    assert_eq!(origin("c_mood").source_type, "mood");
    assert!(
        desc.columns.iter().all(|c| c.lossy_step.is_none()),
        "nothing lossy by default"
    );
    assert_eq!(desc.columns.len(), schema.fields().len());

    let batches = extract_all(&src, all_time(), 3).await.unwrap();
    assert_eq!(batches.len(), 2, "batch_rows = 3 cuts 4 rows into 3 + 1");
    let batch = concat_batches(&schema, &batches).unwrap();
    assert_eq!(batch.num_rows(), 4);
    check_values(&batch, server, &db);

    // The same values come back from zstd Parquet, types and extension metadata included.
    let mut file = Vec::new();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .build();
    let mut writer = ArrowWriter::try_new(&mut file, schema.clone(), Some(props)).unwrap();
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file))
        .unwrap()
        .build()
        .unwrap();
    let back: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    let back = concat_batches(&back[0].schema(), &back).unwrap();
    assert_eq!(
        backhaul_core::schema::schema_difference(&schema, &back.schema()),
        None,
        "Parquet keeps the schema"
    );
    for (i, f) in schema.fields().iter().enumerate() {
        assert_eq!(
            batch.column(i).to_data(),
            back.column(i).to_data(),
            "column {} differs after Parquet",
            f.name()
        );
    }
}

fn check_values(b: &RecordBatch, server: &PostgresServer, db: &str) {
    assert_eq!(col::<Int64Array>(b, "id").values(), &[1, 2, 3, 4]);
    let ts = col::<TimestampMicrosecondArray>(b, "ts");
    assert_eq!(ts.value(0), micros("2024-01-01T00:00:01Z"));
    let int2 = col::<Int16Array>(b, "c_int2");
    assert_eq!(
        (int2.value(0), int2.value(1), int2.is_null(2)),
        (i16::MAX, i16::MIN, true)
    );
    let int4 = col::<Int32Array>(b, "c_int4");
    assert_eq!(
        (int4.value(0), int4.value(1), int4.is_null(2)),
        (i32::MAX, i32::MIN, true)
    );
    let int8 = col::<Int64Array>(b, "c_int8");
    assert_eq!(
        (int8.value(0), int8.value(1), int8.is_null(2)),
        (i64::MAX, i64::MIN, true)
    );

    let n38 = col::<Decimal128Array>(b, "c_num38");
    let max38 = 10i128.pow(38) - 1;
    assert_eq!(
        (n38.value(0), n38.value(1), n38.is_null(2), n38.value(3)),
        (max38, -max38, true, 0)
    );
    assert_eq!(n38.value_as_string(0), "99999999999999999999999999999.999999999");
    let n15 = col::<Decimal128Array>(b, "c_num15");
    assert_eq!((n15.value(0), n15.value(1)), (999_999_999_999_999, -1));
    let n60 = col::<Decimal256Array>(b, "c_num60");
    assert_eq!(
        n60.value_as_string(0),
        "12345678901234567890123456789012345678901234567890.0123456789"
    );
    assert_eq!(
        n60.value(1),
        i256::from_i128(10)
            .wrapping_pow(60)
            .wrapping_sub(i256::ONE)
            .wrapping_neg()
    );
    assert!(n60.is_null(2));

    let real = col::<Float32Array>(b, "c_real");
    assert_eq!(real.value(0), 3.402_823_5e38);
    assert_eq!(real.value(1), f32::NEG_INFINITY);
    let double = col::<Float64Array>(b, "c_double");
    assert_eq!(double.value(0), f64::MAX);
    assert!(double.value(1).is_nan());
    let boolean = col::<BooleanArray>(b, "c_bool");
    assert_eq!(
        (boolean.value(0), boolean.value(1), boolean.is_null(2)),
        (true, false, true)
    );

    let text = col::<StringArray>(b, "c_text");
    assert_eq!(
        (text.value(0), text.value(1), text.is_null(2)),
        ("héllo wörld ✓ 日本語 🚀", "", true)
    );
    assert_eq!(col::<StringArray>(b, "c_varchar").value(0), "varchar");
    assert_eq!(
        col::<StringArray>(b, "c_char").value(0),
        "ab   ",
        "char(n) keeps its padding"
    );
    assert_eq!(col::<StringArray>(b, "c_name").value(0), "a_name");
    let bytea = col::<BinaryArray>(b, "c_bytea");
    assert_eq!(
        (bytea.value(0), bytea.value(1), bytea.is_null(2)),
        (&[0u8, 255, 16][..], &[][..], true)
    );

    let date = col::<Date32Array>(b, "c_date");
    assert_eq!(i64::from(date.value(0)), days("9999-12-31"));
    assert_eq!(
        date.value(1),
        -2_440_550,
        "4713-01-01 BC, the earliest date PostgreSQL accepts"
    );
    assert_eq!((date.is_null(2), date.value(3)), (true, 0));
    let time = col::<Time64MicrosecondArray>(b, "c_time");
    assert_eq!((time.value(0), time.value(1)), (86_399_999_999, 0));
    let ts = col::<TimestampMicrosecondArray>(b, "c_ts");
    assert_eq!(ts.value(0), micros("2200-01-01T12:34:56.789012Z"));
    assert_eq!(ts.value(1), micros("1900-01-01T00:00:00Z"));
    assert_eq!(ts.timezone(), None);
    let tstz = col::<TimestampMicrosecondArray>(b, "c_tstz");
    assert_eq!(tstz.value(0), micros("2100-06-15T08:00:00Z"));
    assert_eq!(tstz.value(1), micros("1969-07-20T20:17:40Z"));
    assert_eq!(tstz.value(3), micros("2038-01-19T03:14:08Z"), "past the 32-bit epoch");
    assert_eq!(tstz.timezone(), Some("UTC"));

    let interval = col::<StructArray>(b, "c_interval");
    let part = |name: &str| interval.column_by_name(name).unwrap().clone();
    let months = part("months");
    let days_ = part("days");
    let us = part("microseconds");
    let (months, days_, us) = (
        months.as_primitive::<Int32Type>(),
        days_.as_primitive::<Int32Type>(),
        us.as_primitive::<arrow::datatypes::Int64Type>(),
    );
    assert_eq!((months.value(0), days_.value(0), us.value(0)), (14, 3, 14_706_789_000));
    assert_eq!((months.value(1), days_.value(1), us.value(1)), (0, -3, -1_000_000));
    assert!(interval.is_null(2) && interval.is_valid(3));

    let uuid = col::<FixedSizeBinaryArray>(b, "c_uuid");
    assert_eq!(
        uuid.value(0),
        &[
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11
        ]
    );
    assert_eq!(uuid.value(1), &[0u8; 16]);
    assert!(uuid.is_null(2));

    let json = col::<StringArray>(b, "c_json");
    assert_eq!(
        json.value(0),
        r#"{"a": [1, 2, {"b": null}]}"#,
        "json keeps its text exactly"
    );
    assert_eq!(json.value(1), "[]");
    let jsonb = col::<StringArray>(b, "c_jsonb");
    assert_eq!(jsonb.value(0), r#"{"k": "ü", "n": 1.50}"#);
    // About 600 KB of JSON each: compare with the server's own text.
    let want_json = server
        .psql(db, "SELECT c_json::text FROM \"All Types\" WHERE id = 4")
        .unwrap();
    let want_jsonb = server
        .psql(db, "SELECT c_jsonb::text FROM \"All Types\" WHERE id = 4")
        .unwrap();
    assert!(want_json.len() > 500_000 && want_jsonb.len() > 500_000);
    assert_eq!(json.value(3), want_json);
    assert_eq!(jsonb.value(3), want_jsonb);

    assert_eq!(col::<StringArray>(b, "c_mood").value(0), "happy");
    assert_eq!(col::<Int32Array>(b, "c_posint").value(0), 7);
    let oid = col::<UInt32Array>(b, "c_oid");
    assert_eq!((oid.value(0), oid.value(1)), (4_000_000_000, 0));

    let ints = col::<ListArray>(b, "c_int_arr");
    let first = ints.value(0);
    let first = first.as_primitive::<Int32Type>();
    assert_eq!(first.iter().collect::<Vec<_>>(), vec![Some(1), None, Some(3)]);
    assert_eq!((ints.value(1).len(), ints.is_null(2)), (0, true));
    let texts = col::<ListArray>(b, "c_text_arr");
    let t0 = texts.value(0);
    assert_eq!(
        t0.as_string::<i32>().iter().collect::<Vec<_>>(),
        vec![Some("a"), None, Some("ü")]
    );
    let nums = col::<ListArray>(b, "c_num_arr");
    let n0 = nums.value(0);
    let n0 = n0.as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert_eq!(n0.iter().collect::<Vec<_>>(), vec![Some(150), None, Some(-225)]);
    assert_eq!(n0.data_type(), &DataType::Decimal128(10, 2));

    // Row 3 is NULL in every nullable column.
    for (i, f) in b.schema().fields().iter().enumerate() {
        if f.is_nullable() {
            assert!(b.column(i).is_null(2), "column {} of the all-NULL row", f.name());
        }
    }
}

const SPECIALS: &str = r#"
CREATE TABLE specials (id int PRIMARY KEY, ts timestamp NOT NULL, d date, t timestamptz, n numeric(10,2), u numeric);
INSERT INTO specials VALUES
 (1, '2024-01-01 00:00:00', 'infinity', '-infinity', 'NaN', '123456789.123456789'),
 (2, '2024-01-01 00:00:01', '-infinity', 'infinity', 'NaN', '-0.5'),
 (3, '2024-01-01 00:00:02', '2024-05-05', '2024-05-05 00:00:00+00', 1.25, '-Infinity');
"#;

#[tokio::test]
async fn infinity_nan_and_unconstrained_numeric_follow_the_policies() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server.psql(&db, SPECIALS).unwrap();
    let range = all_time();

    // Default: the unconstrained column is refused at describe time, naming it and the key.
    let strict = spec(server, &db, "specials", "ts");
    let e = source(&strict).describe().await.unwrap_err().to_string();
    assert!(e.contains("`u`") && e.contains("unconstrained_numeric"), "{e}");

    // Without it, the first infinite date fails the chunk, naming column and row key.
    let mut no_u = strict.clone();
    no_u.connection.columns = Some(vec!["id".into(), "ts".into(), "d".into(), "t".into(), "n".into()]);
    let e = extract_all(&source(&no_u), range, 100).await.unwrap_err();
    assert_eq!(e.kind(), "type_fidelity");
    let text = e.to_string();
    assert!(
        text.contains("column `d`") && text.contains("id = 1") && text.contains("infinity"),
        "{text}"
    );
    assert!(text.contains("infinite_datetime"), "{text}");

    let mut no_dates = strict.clone();
    no_dates.connection.columns = Some(vec!["id".into(), "ts".into(), "n".into()]);
    let e = extract_all(&source(&no_dates), range, 100)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("column `n`") && e.contains("NaN") && e.contains("special_numeric"),
        "{e}"
    );

    // Opted in: NULL for infinities and specials, decimal(38,9) for the unconstrained column.
    let mut lenient = strict.clone();
    lenient.infinite_datetime = InfiniteDatetime::Null;
    lenient.special_numeric = SpecialNumeric::Null;
    lenient.unconstrained_numeric = UnconstrainedNumeric::Decimal {
        precision: 38,
        scale: 9,
    };
    let src = source(&lenient);
    let desc = src.describe().await.unwrap();
    let step = |n: &str| desc.columns.iter().find(|c| c.name == n).unwrap().lossy_step.clone();
    assert!(step("u").unwrap().contains("decimal(38,9)"), "{:?}", step("u"));
    assert!(step("d").unwrap().contains("NULL"));
    assert!(step("n").unwrap().contains("NaN"));
    assert_eq!(step("id"), None);
    let batches = extract_all(&src, range, 100).await.unwrap();
    let b = &batches[0];
    let d = col::<Date32Array>(b, "d");
    assert!(d.is_null(0) && d.is_null(1) && d.is_valid(2));
    let n = col::<Decimal128Array>(b, "n");
    assert!(n.is_null(0) && n.is_null(1) && n.value(2) == 125);
    let u = col::<Decimal128Array>(b, "u");
    assert_eq!(u.data_type(), &DataType::Decimal128(38, 9));
    assert_eq!(
        (u.value(0), u.value(1), u.is_null(2)),
        (123_456_789_123_456_789, -500_000_000, true)
    );

    // Clamp to the range every warehouse accepts.
    let mut clamp = lenient.clone();
    clamp.infinite_datetime = InfiniteDatetime::Clamp;
    let batches = extract_all(&source(&clamp), range, 100).await.unwrap();
    let d = col::<Date32Array>(&batches[0], "d");
    assert_eq!(
        (i64::from(d.value(0)), i64::from(d.value(1))),
        (days("9999-12-31"), days("0001-01-01"))
    );
    let t = col::<TimestampMicrosecondArray>(&batches[0], "t");
    assert_eq!(t.value(0), micros("0001-01-01T00:00:00Z"));
    assert_eq!(t.value(1), micros("9999-12-31T23:59:59.999999Z"));

    // A value with more digits than the chosen decimal is an error, never rounded.
    let mut narrow = lenient.clone();
    narrow.unconstrained_numeric = UnconstrainedNumeric::Decimal {
        precision: 12,
        scale: 2,
    };
    let e = extract_all(&source(&narrow), range, 100).await.unwrap_err().to_string();
    assert!(
        e.contains("column `u`") && e.contains("id = 1") && e.contains("decimal point"),
        "{e}"
    );

    // Text keeps every digit.
    let mut as_text = lenient.clone();
    as_text.unconstrained_numeric = UnconstrainedNumeric::Text;
    let batches = extract_all(&source(&as_text), range, 100).await.unwrap();
    let u = col::<StringArray>(&batches[0], "u");
    assert_eq!((u.value(0), u.value(1)), ("123456789.123456789", "-0.5"));
}
