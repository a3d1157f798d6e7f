//! The Airbyte protocol messages a source connector prints on stdout, one JSON object a line
//! (`airbyte_protocol.yaml` of airbytehq/airbyte-protocol). Only the fields backhaul uses are
//! declared; unknown fields and message types are ignored, as the protocol asks of readers.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// One line of a connector's stdout.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `RECORD`, `STATE`, `LOG`, `TRACE`, `CATALOG`, `SPEC`, `CONNECTION_STATUS`, `CONTROL`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `RECORD`.
    pub record: Option<RecordMessage>,
    /// For `STATE`: kept as the connector wrote it, to be handed back with `--state`.
    pub state: Option<Value>,
    /// For `LOG`.
    pub log: Option<LogMessage>,
    /// For `TRACE`.
    pub trace: Option<TraceMessage>,
    /// For `CATALOG`.
    pub catalog: Option<Catalog>,
    /// For `SPEC`.
    pub spec: Option<Value>,
    /// For `CONNECTION_STATUS`.
    #[serde(rename = "connectionStatus")]
    pub connection_status: Option<ConnectionStatus>,
}

/// A `RECORD`: one row of a stream.
#[derive(Debug, Deserialize)]
pub struct RecordMessage {
    /// The stream's name.
    pub stream: String,
    /// The row: a JSON object, kept as text so JSON columns keep it verbatim.
    pub data: Box<RawValue>,
}

/// A `LOG` line.
#[derive(Debug, Deserialize)]
pub struct LogMessage {
    /// `FATAL`, `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`.
    pub level: String,
    /// The text.
    pub message: String,
}

/// A `TRACE`; only `ERROR` traces matter here.
#[derive(Debug, Deserialize)]
pub struct TraceMessage {
    /// For `ERROR` traces (`ESTIMATE`, `STREAM_STATUS` and `ANALYTICS` traces have none).
    pub error: Option<TraceError>,
}

/// An `ERROR` trace: the connector's own account of why it failed.
#[derive(Debug, Clone, Deserialize)]
pub struct TraceError {
    /// For people.
    pub message: String,
    /// `system_error`, `config_error` or `transient_error`.
    pub failure_type: Option<String>,
}

/// The `CATALOG` of `discover`.
#[derive(Debug, Deserialize)]
pub struct Catalog {
    /// Every stream the connector offers, as written: a stream is handed back verbatim in the
    /// configured catalog of `read`.
    pub streams: Vec<Box<RawValue>>,
}

/// One stream of a catalog.
#[derive(Debug, Clone, Deserialize)]
pub struct Stream {
    /// The name.
    pub name: String,
    /// Its records' JSON Schema, as text: its properties are columns in the order written.
    pub json_schema: Box<RawValue>,
    /// `full_refresh` and/or `incremental`.
    #[serde(default)]
    pub supported_sync_modes: Vec<String>,
    /// The connector's key, as paths of field names.
    #[serde(default)]
    pub source_defined_primary_key: Vec<Vec<String>>,
    /// Whether the connector decides the cursor itself.
    #[serde(default)]
    pub source_defined_cursor: bool,
    /// The connector's cursor, as a path.
    #[serde(default)]
    pub default_cursor_field: Vec<String>,
}

/// The answer of `check`.
#[derive(Debug, Deserialize)]
pub struct ConnectionStatus {
    /// `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// Why, when it failed.
    pub message: Option<String>,
}

impl Stream {
    /// Parses one stream of a [`Catalog`].
    pub fn parse(raw: &RawValue) -> serde_json::Result<Stream> {
        serde_json::from_str(raw.get())
    }
}

/// Parses one stdout line; `None` when it is not a protocol message.
pub fn parse_line(line: &str) -> Option<Message> {
    serde_json::from_str(line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_other_lines_do_not() {
        let m = parse_line(
            r#"{"type":"RECORD","record":{"stream":"users","data":{"id":1,"doc":{"a": 1.50}},"emitted_at":1}}"#,
        )
        .unwrap();
        let r = m.record.unwrap();
        assert_eq!(r.stream, "users");
        assert_eq!(r.data.get(), r#"{"id":1,"doc":{"a": 1.50}}"#);
        let m = parse_line(
            r#"{"type":"TRACE","trace":{"type":"ERROR","emitted_at":1,"error":{"message":"bad key","failure_type":"config_error"}}}"#,
        )
        .unwrap();
        let e = m.trace.unwrap().error.unwrap();
        assert_eq!(e.failure_type.as_deref(), Some("config_error"));
        let m = parse_line(r#"{"type":"CONNECTION_STATUS","connectionStatus":{"status":"FAILED","message":"no"}}"#)
            .unwrap();
        assert_eq!(m.connection_status.unwrap().status, "FAILED");
        assert!(parse_line("Traceback (most recent call last):").is_none());
        assert!(parse_line("[1, 2]").is_none());
    }
}
