//! The data plane's wire forms, shared by the server and the client so the two cannot drift:
//! core types ↔ the messages of `proto/backhaul/v1/data_plane.proto`, and errors ↔ gRPC
//! statuses.
//!
//! Errors travel typed: the status code follows the retry class ([`class_code`], inverted by
//! [`code_class`] for statuses nobody typed, e.g. from the transport or the token check) and
//! the details carry a `ChunkError` with class, kind and message. The receiver rebuilds a
//! [`backhaul_core::Error::Remote`] from those fields, never from the message text.

use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::error::FlightError;
use arrow_flight::{IpcMessage, SchemaAsIpc};
use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{ColumnOrigin, TableDescription};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::profile::{Activity, ActivityQuery, ChangeColumns, Counted, TimeWindow};
use backhaul_core::{Error, ErrorClass, Result};
use backhaul_proto::v1 as pb;
use prost::Message;
use tonic::{Code, Status};

/// DoAction type: describe the source's table (`SourceRequest` → `DescribeResponse`).
pub const DESCRIBE: &str = "describe";
/// DoAction type: make the source ready for a range (`RangeRequest` → `PrepareResponse`).
pub const PREPARE: &str = "prepare";
/// DoAction type: estimated rows and bytes over a range (`RangeRequest` → `DensityResponse`).
pub const DENSITY: &str = "density";
/// DoAction type: change activity in a window (`ActivityRequest` → `ActivityResponse`).
pub const ACTIVITY: &str = "activity";

/// The status code a data-plane error of `class` is sent with.
pub fn class_code(class: ErrorClass) -> Code {
    match class {
        ErrorClass::Transient => Code::Unavailable,
        ErrorClass::Throttled => Code::ResourceExhausted,
        ErrorClass::Permanent => Code::FailedPrecondition,
    }
}

/// The retry class of a status without typed details: the inverse of [`class_code`], with
/// the codes the transport uses for lost connections and timeouts counted as transient, and
/// anything a retry cannot fix (refused token, malformed request, unknown call) permanent.
pub fn code_class(code: Code) -> ErrorClass {
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted | Code::Unknown => {
            ErrorClass::Transient
        }
        Code::ResourceExhausted => ErrorClass::Throttled,
        _ => ErrorClass::Permanent,
    }
}

/// A typed data-plane error as a status: the code from `class`, a `ChunkError` as details.
pub fn error_status(class: ErrorClass, kind: &str, message: String) -> Status {
    let details = pb::ChunkError {
        class: pb::ErrorClass::from(class) as i32,
        kind: kind.to_string(),
        message: message.clone(),
    }
    .encode_to_vec();
    Status::with_details(class_code(class), message, details.into())
}

/// A core error (a source's, a spec's) as a status.
pub fn core_status(e: &Error) -> Status {
    error_status(e.class(), e.kind(), e.to_string())
}

/// A status from `system` (e.g. `worker at https://…`) as a core error with its class.
pub fn status_error(status: &Status, system: &str) -> Error {
    if let Ok(typed) = pb::ChunkError::decode(status.details())
        && let Some(class) = backhaul_proto::error_class(typed.class)
    {
        return Error::Remote {
            system: system.to_string(),
            class,
            kind: typed.kind,
            message: typed.message,
        };
    }
    let (kind, reason) = match status.code() {
        Code::Unauthenticated => (
            "unauthenticated",
            "the worker requires a valid token (--token-file or $BACKHAUL_TOKEN)",
        ),
        Code::Unavailable | Code::DeadlineExceeded => ("unreachable", "the worker cannot be reached"),
        // A connection closed during or right after the handshake: most often TLS on one side
        // only, or a certificate one side does not trust.
        Code::Cancelled | Code::Unknown => (
            "unreachable",
            "the worker closed the connection (http:// vs https://, --tls-ca, or a client certificate it does not trust?)",
        ),
        Code::Unimplemented => ("unimplemented", "the worker does not serve this call"),
        _ => ("rpc", "the call failed"),
    };
    Error::Remote {
        system: system.to_string(),
        class: code_class(status.code()),
        kind: kind.into(),
        message: format!(
            "{reason} ({:?}: {})",
            status.code(),
            backhaul_proto::status_detail(status)
        ),
    }
}

/// An error while reading a Flight stream from `system` as a core error.
pub fn flight_error(e: FlightError, system: &str) -> Error {
    match e {
        FlightError::Tonic(status) => status_error(&status, system),
        FlightError::Arrow(e) => Error::Arrow(e),
        other => protocol_error(system, other.to_string()),
    }
}

/// The other side sent something this side cannot read (a version mismatch or a bug).
pub fn protocol_error(system: &str, message: String) -> Error {
    Error::Remote {
        system: system.to_string(),
        class: ErrorClass::Permanent,
        kind: "flight_protocol".into(),
        message,
    }
}

/// A cursor range on the wire.
pub fn range_to_pb(range: CursorRange) -> pb::CursorRange {
    pb::CursorRange {
        from: range.from,
        to: range.to,
    }
}

/// A cursor range from the wire.
pub fn range_from_pb(range: pb::CursorRange) -> CursorRange {
    CursorRange {
        from: range.from,
        to: range.to,
    }
}

/// A table description on the wire; the schema travels as an Arrow IPC schema message.
pub fn describe_to_pb(table: &TableDescription) -> Result<pb::DescribeResponse> {
    let options = IpcWriteOptions::default();
    let IpcMessage(schema_ipc) = IpcMessage::try_from(SchemaAsIpc::new(&table.schema, &options))?;
    Ok(pb::DescribeResponse {
        schema_ipc: schema_ipc.to_vec(),
        cursor_column: table.cursor_column.clone(),
        cursor_kind: table.cursor_kind.as_str().into(),
        key_columns: table.key_columns.clone(),
        columns: table
            .columns
            .iter()
            .map(|c| pb::ColumnOrigin {
                name: c.name.clone(),
                source_type: c.source_type.clone(),
                lossy_step: c.lossy_step.clone(),
            })
            .collect(),
    })
}

/// A table description from the wire.
pub fn describe_from_pb(d: pb::DescribeResponse, system: &str) -> Result<TableDescription> {
    let schema = Schema::try_from(IpcMessage(d.schema_ipc.into()))?;
    let cursor_kind = CursorKind::from_name(&d.cursor_kind)
        .ok_or_else(|| protocol_error(system, format!("unknown cursor kind `{}`", d.cursor_kind)))?;
    Ok(TableDescription {
        schema: Arc::new(schema),
        cursor_column: d.cursor_column,
        cursor_kind,
        key_columns: d.key_columns,
        columns: d
            .columns
            .into_iter()
            .map(|c| ColumnOrigin {
                name: c.name,
                source_type: c.source_type,
                lossy_step: c.lossy_step,
            })
            .collect(),
    })
}

/// Density buckets on the wire.
pub fn density_to_pb(buckets: &[DensityBucket]) -> pb::DensityResponse {
    pb::DensityResponse {
        buckets: buckets
            .iter()
            .map(|b| pb::DensityBucket {
                range: Some(range_to_pb(b.range)),
                rows: b.rows,
                bytes: b.bytes,
            })
            .collect(),
    }
}

/// Density buckets from the wire.
pub fn density_from_pb(d: pb::DensityResponse, system: &str) -> Result<Vec<DensityBucket>> {
    d.buckets
        .into_iter()
        .map(|b| {
            Ok(DensityBucket {
                range: range_from_pb(
                    b.range
                        .ok_or_else(|| protocol_error(system, "density bucket without a range".into()))?,
                ),
                rows: b.rows,
                bytes: b.bytes,
            })
        })
        .collect()
}

/// An activity question on the wire, for the source `source`.
pub fn activity_query_to_pb(source: pb::SourceRef, q: &ActivityQuery) -> pb::ActivityRequest {
    pb::ActivityRequest {
        source: Some(source),
        range: Some(range_to_pb(q.range)),
        window: Some(pb::TimeWindow {
            from: q.window.from,
            to: q.window.to,
        }),
        created_at: q.columns.created_at.clone(),
        updated_at: q.columns.updated_at.clone(),
        soft_delete: q.columns.soft_delete.clone(),
    }
}

/// An activity question from the wire; `None` when a part is missing.
pub fn activity_query_from_pb(r: &pb::ActivityRequest) -> Option<ActivityQuery> {
    let window = r.window?;
    Some(ActivityQuery {
        range: range_from_pb(r.range?),
        window: TimeWindow {
            from: window.from,
            to: window.to,
        },
        columns: ChangeColumns {
            created_at: r.created_at.clone(),
            updated_at: r.updated_at.clone(),
            soft_delete: r.soft_delete.clone(),
        },
    })
}

fn counted_to_pb(c: Option<Counted>) -> Option<pb::Counted> {
    c.map(|c| pb::Counted {
        value: c.value,
        exact: c.exact,
    })
}

fn counted_from_pb(c: Option<pb::Counted>) -> Option<Counted> {
    c.map(|c| Counted {
        value: c.value,
        exact: c.exact,
    })
}

/// A source's activity answer on the wire.
pub fn activity_to_pb(activity: Option<Activity>) -> pb::ActivityResponse {
    pb::ActivityResponse {
        activity: activity.map(|a| pb::Activity {
            inserts: counted_to_pb(a.inserts),
            updated_keys: counted_to_pb(a.updated_keys),
            deleted_keys: counted_to_pb(a.deleted_keys),
            touched_keys: counted_to_pb(a.touched_keys),
            method: a.method,
        }),
    }
}

/// A source's activity answer from the wire.
pub fn activity_from_pb(r: pb::ActivityResponse) -> Option<Activity> {
    r.activity.map(|a| Activity {
        inserts: counted_from_pb(a.inserts),
        updated_keys: counted_from_pb(a.updated_keys),
        deleted_keys: counted_from_pb(a.deleted_keys),
        touched_keys: counted_from_pb(a.touched_keys),
        method: a.method,
    })
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, TimeUnit};

    use super::*;

    #[test]
    fn classes_and_codes_round_trip() {
        for class in [ErrorClass::Transient, ErrorClass::Throttled, ErrorClass::Permanent] {
            assert_eq!(code_class(class_code(class)), class);
        }
        assert_eq!(code_class(Code::Unauthenticated), ErrorClass::Permanent);
        assert_eq!(code_class(Code::Cancelled), ErrorClass::Transient);
    }

    #[test]
    fn typed_errors_keep_class_and_kind() {
        let throttled = Error::Throttled {
            system: "source".into(),
            message: "too many connections".into(),
        };
        let status = core_status(&throttled);
        assert_eq!(status.code(), Code::ResourceExhausted);
        match status_error(&status, "worker at http://w:1") {
            Error::Remote {
                system,
                class,
                kind,
                message,
            } => {
                assert_eq!(system, "worker at http://w:1");
                assert_eq!(class, ErrorClass::Throttled);
                assert_eq!(kind, "throttled");
                assert_eq!(message, "source throttled: too many connections");
            }
            other => panic!("{other:?}"),
        }
        let config = Error::config(
            "job.toml",
            "source.password.env",
            "environment variable `PW` is not set",
        );
        let back = status_error(&core_status(&config), "worker at http://w:1");
        assert_eq!(back.class(), ErrorClass::Permanent);
        assert_eq!(
            back.to_string(),
            "worker at http://w:1: job.toml: source.password.env: environment variable `PW` is not set"
        );
        // Untyped statuses (the token check, the transport) are classed by code.
        let refused = status_error(&Status::unauthenticated("no authorization header"), "worker at x");
        assert_eq!(refused.class(), ErrorClass::Permanent);
        assert!(refused.to_string().contains("requires a valid token"), "{refused}");
        let gone = status_error(&Status::unavailable("connection refused"), "worker at x");
        assert_eq!(gone.class(), ErrorClass::Transient);
    }

    #[test]
    fn descriptions_density_and_activity_round_trip() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
            Field::new("amount", DataType::Decimal128(12, 2), true),
        ]);
        let table = TableDescription {
            schema: Arc::new(schema),
            cursor_column: "at".into(),
            cursor_kind: CursorKind::Timestamp,
            key_columns: vec!["id".into()],
            columns: vec![ColumnOrigin {
                name: "amount".into(),
                source_type: "numeric(12,2)".into(),
                lossy_step: Some("rounded".into()),
            }],
        };
        let back = describe_from_pb(describe_to_pb(&table).unwrap(), "w").unwrap();
        assert_eq!(back.schema, table.schema);
        assert_eq!(back.cursor_kind, CursorKind::Timestamp);
        assert_eq!(back.key_columns, table.key_columns);
        assert_eq!(back.columns, table.columns);

        let buckets = vec![DensityBucket {
            range: CursorRange::new(0, 10),
            rows: 2.5,
            bytes: 300.0,
        }];
        let back = density_from_pb(density_to_pb(&buckets), "w").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].range, back[0].rows, back[0].bytes),
            (buckets[0].range, 2.5, 300.0)
        );

        let query = ActivityQuery {
            range: CursorRange::new(5, 50),
            window: TimeWindow { from: 1, to: 2 },
            columns: ChangeColumns {
                created_at: None,
                updated_at: Some("updated_at".into()),
                soft_delete: None,
            },
        };
        let wire = activity_query_to_pb(pb::SourceRef::default(), &query);
        assert_eq!(activity_query_from_pb(&wire), Some(query));
        let activity = Activity {
            inserts: Some(Counted::exact(3)),
            updated_keys: None,
            deleted_keys: Some(Counted::estimate(1)),
            touched_keys: None,
            method: "append-only".into(),
        };
        assert_eq!(activity_from_pb(activity_to_pb(Some(activity.clone()))), Some(activity));
        assert_eq!(activity_from_pb(activity_to_pb(None)), None);
    }
}
