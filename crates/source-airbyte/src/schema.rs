//! A stream's JSON Schema as Arrow columns, mapped exactly (the table in
//! `docs/sources/airbyte.md`). Each top-level property is one column; nested objects and arrays
//! stay JSON, and so does anything without one plain type (unions, `oneOf`, no `type`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use backhaul_core::connector::ColumnOrigin;
use backhaul_core::{Error, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::protocol::Stream;

/// Extension name of JSON text columns (docs/types.md).
pub const JSON_EXTENSION: &str = "arrow.json";

/// The Arrow type a property maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `integer`, or `number` with `airbyte_type: integer`.
    Int64,
    /// `number`.
    Float64,
    /// `boolean`.
    Boolean,
    /// `string` (any other format, `big_integer` included: digits kept as text).
    Utf8,
    /// `string` with `format: date`.
    Date32,
    /// `string` with `format: date-time` (with zone unless `timestamp_without_timezone`).
    Timestamp {
        /// `timestamp_with_timezone` (the default of `date-time`).
        utc: bool,
    },
    /// `object`, `array`, unions and untyped properties: the value's JSON text, verbatim.
    Json,
}

impl ColumnType {
    /// Its Arrow type.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
            ColumnType::Date32 => DataType::Date32,
            ColumnType::Timestamp { utc } => DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| Arc::from("UTC"))),
        }
    }

    /// What a value of this column must be, for errors.
    pub fn expected(self) -> &'static str {
        match self {
            ColumnType::Int64 => "an integer in the 64-bit range",
            ColumnType::Float64 => "a number exactly representable as a 64-bit float",
            ColumnType::Boolean => "a boolean",
            ColumnType::Utf8 => "a string",
            ColumnType::Date32 => "a date string `YYYY-MM-DD`",
            ColumnType::Timestamp { utc: true } => {
                "an RFC 3339 date-time string with an offset, at most microsecond precision"
            }
            ColumnType::Timestamp { utc: false } => {
                "a date-time string without an offset, at most microsecond precision"
            }
            ColumnType::Json => "JSON",
        }
    }
}

/// One column of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The property's name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// NULL allowed: `null` is one of its types, or it is not `required` (may be absent).
    pub nullable: bool,
    /// The property's type keys as compact JSON, sorted, e.g. `{"format":"date","type":"string"}`.
    pub source_type: String,
}

/// The columns of `stream`, in the schema's property order.
pub fn columns(stream: &Stream) -> Result<Vec<Column>> {
    let invalid = |message: String| Error::InvalidObject {
        object: format!("airbyte stream `{}`", stream.name),
        message,
    };
    let schema: ObjectSchema = serde_json::from_str(stream.json_schema.get())
        .map_err(|e| invalid(format!("its JSON Schema is not an object schema: {e}")))?;
    let properties = schema
        .properties
        .ok_or_else(|| invalid("its JSON Schema has no `properties` object".into()))?
        .0;
    let required = schema.required.unwrap_or_default();
    Ok(properties
        .into_iter()
        .map(|(name, property)| {
            let (ty, null_type) = column_type(&property);
            Column {
                nullable: null_type || !required.contains(&name),
                name,
                ty,
                source_type: source_type(&property),
            }
        })
        .collect())
}

/// The top of a stream's JSON Schema.
#[derive(Deserialize)]
struct ObjectSchema {
    properties: Option<Ordered>,
    required: Option<Vec<String>>,
}

/// A JSON object's members in the order written (`serde_json::Map` sorts them).
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of property schemas")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// The type of one property, and whether `null` is among its types.
fn column_type(property: &Value) -> (ColumnType, bool) {
    let types: Vec<&str> = match property.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return (ColumnType::Json, true),
    };
    let null = types.contains(&"null");
    let plain: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    let union = property.get("oneOf").is_some() || property.get("anyOf").is_some();
    if plain.len() != 1 || union {
        return (ColumnType::Json, null);
    }
    let airbyte_type = property.get("airbyte_type").and_then(Value::as_str);
    let format = property.get("format").and_then(Value::as_str);
    let ty = match plain[0] {
        "integer" => ColumnType::Int64,
        "number" if airbyte_type == Some("integer") => ColumnType::Int64,
        "number" => ColumnType::Float64,
        "boolean" => ColumnType::Boolean,
        "string" => match (format, airbyte_type) {
            (_, Some("big_integer" | "big_number")) => ColumnType::Utf8,
            (Some("date-time"), Some("timestamp_without_timezone")) => ColumnType::Timestamp { utc: false },
            (Some("date-time"), _) => ColumnType::Timestamp { utc: true },
            (Some("date"), _) => ColumnType::Date32,
            _ => ColumnType::Utf8,
        },
        _ => ColumnType::Json,
    };
    (ty, null)
}

/// The keys of a property that decide its type, as compact JSON.
fn source_type(property: &Value) -> String {
    let mut kept = serde_json::Map::new();
    for key in ["type", "format", "airbyte_type", "oneOf", "anyOf"] {
        if let Some(v) = property.get(key) {
            kept.insert(key.into(), v.clone());
        }
    }
    Value::Object(kept).to_string()
}

/// The Arrow schema of `columns`; JSON columns carry the `arrow.json` extension name.
pub fn arrow_schema(columns: &[Column]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| {
                let field = Field::new(&c.name, c.ty.arrow(), c.nullable);
                if c.ty == ColumnType::Json {
                    field.with_metadata(HashMap::from([(
                        "ARROW:extension:name".to_string(),
                        JSON_EXTENSION.to_string(),
                    )]))
                } else {
                    field
                }
            })
            .collect::<Vec<_>>(),
    )
}

/// Where each column came from, for the type-fidelity report: every mapping is exact.
pub fn origins(columns: &[Column]) -> Vec<ColumnOrigin> {
    columns
        .iter()
        .map(|c| ColumnOrigin {
            name: c.name.clone(),
            source_type: c.source_type.clone(),
            lossy_step: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(schema: &str) -> Stream {
        serde_json::from_str(&format!(r#"{{"name": "s", "json_schema": {schema}}}"#)).unwrap()
    }

    #[test]
    fn types_map_exactly() {
        let s = stream(
            r#"{
            "type": "object",
            "required": ["id", "maybe"],
            "properties": {
                "id": {"type": "integer"},
                "maybe": {"type": ["null", "integer"]},
                "price": {"type": "number"},
                "count": {"type": "number", "airbyte_type": "integer"},
                "flag": {"type": "boolean"},
                "name": {"type": "string"},
                "big": {"type": "string", "airbyte_type": "big_integer"},
                "day": {"type": "string", "format": "date"},
                "at": {"type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"},
                "local": {"type": "string", "format": "date-time", "airbyte_type": "timestamp_without_timezone"},
                "doc": {"type": "object"},
                "tags": {"type": ["null", "array"]},
                "either": {"type": ["string", "integer"]},
                "untyped": {}
            }
        }"#,
        );
        let cols = columns(&s).unwrap();
        let schema = arrow_schema(&cols);
        let shown: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let json = if f.metadata().is_empty() { "" } else { " json" };
                format!("{} {}{} {}", f.name(), f.data_type(), json, f.is_nullable())
            })
            .collect();
        assert_eq!(
            shown,
            [
                "id Int64 false",
                "maybe Int64 true",
                "price Float64 true",
                "count Int64 true",
                "flag Boolean true",
                "name Utf8 true",
                "big Utf8 true",
                "day Date32 true",
                "at Timestamp(µs, \"UTC\") true",
                "local Timestamp(µs) true",
                "doc Utf8 json true",
                "tags Utf8 json true",
                "either Utf8 json true",
                "untyped Utf8 json true",
            ]
        );
        assert_eq!(cols[7].source_type, r#"{"format":"date","type":"string"}"#);
        let e = columns(&stream(r#"{"type": "object"}"#)).unwrap_err().to_string();
        assert!(
            e.contains("airbyte stream `s`: its JSON Schema has no `properties`"),
            "{e}"
        );
    }
}
