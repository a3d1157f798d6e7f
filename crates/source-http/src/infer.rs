//! A declared schema guessed from sample records, written as TOML for the user to edit.
//!
//! Guesses never widen silently: a field seen as both integer and float becomes `float64`
//! (say `decimal(p,s)` instead if it is money), mixed kinds become `json`, strings that are all
//! RFC 3339 timestamps or dates become `timestamp`/`date`.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guess {
    Int,
    Float,
    Bool,
    Timestamp,
    Date,
    String,
    Json,
}

fn guess(v: &Value) -> Option<Guess> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => Guess::Bool,
        Value::Number(n) if n.is_i64() || n.is_u64() => Guess::Int,
        Value::Number(_) => Guess::Float,
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Guess::Timestamp,
        Value::String(s) if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => Guess::Date,
        Value::String(_) => Guess::String,
        Value::Array(_) | Value::Object(_) => Guess::Json,
    })
}

fn merge(a: Guess, b: Guess) -> Guess {
    use Guess::*;
    match (a, b) {
        (x, y) if x == y => x,
        (Int, Float) | (Float, Int) => Float,
        (Timestamp | Date | String, Timestamp | Date | String) => String,
        _ => Json,
    }
}

/// The `columns = [...]` TOML of the fields seen in `samples` (objects), in the order first seen (keys of one sample in serde_json's sorted order);
/// a field missing or `null` in any sample is nullable, one never seen with a value is `json`.
pub fn infer_schema(samples: &[Value]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, (Option<Guess>, usize)> = BTreeMap::new();
    let objects: Vec<_> = samples.iter().filter_map(Value::as_object).collect();
    for object in &objects {
        for (name, value) in *object {
            let entry = seen.entry(name.clone()).or_insert_with(|| {
                order.push(name.clone());
                (None, 0)
            });
            if let Some(g) = guess(value) {
                entry.0 = Some(entry.0.map_or(g, |prev| merge(prev, g)));
                entry.1 += 1;
            }
        }
    }
    let mut out = String::from("columns = [\n");
    for name in order {
        let (g, with_value) = seen[&name];
        let t = match g.unwrap_or(Guess::Json) {
            Guess::Int => "int64",
            Guess::Float => "float64",
            Guess::Bool => "bool",
            Guess::Timestamp => "timestamp",
            Guess::Date => "date",
            Guess::String => "string",
            Guess::Json => "json",
        };
        let nullable = with_value < objects.len();
        let name = toml::Value::String(name).to_string();
        out.push_str(&format!(
            "  {{ name = {name}, type = \"{t}\", nullable = {nullable} }},\n"
        ));
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_types_and_nullability_from_samples() {
        let samples = vec![
            serde_json::json!({"id": "cus_1", "n": 1, "at": "2024-01-01T00:00:00Z", "meta": {"a": 1}, "x": null}),
            serde_json::json!({"id": "cus_2", "n": 1.5, "at": "2024-01-02T00:00:00Z", "meta": {}, "day": "2024-01-02"}),
        ];
        let toml_text = infer_schema(&samples);
        assert_eq!(
            toml_text,
            "columns = [\n  \
             { name = \"at\", type = \"timestamp\", nullable = false },\n  \
             { name = \"id\", type = \"string\", nullable = false },\n  \
             { name = \"meta\", type = \"json\", nullable = false },\n  \
             { name = \"n\", type = \"float64\", nullable = false },\n  \
             { name = \"x\", type = \"json\", nullable = true },\n  \
             { name = \"day\", type = \"date\", nullable = true },\n]\n"
        );
        // It parses back as the columns of a spec.
        let parsed: toml::Table = toml::from_str(&toml_text).unwrap();
        assert_eq!(parsed["columns"].as_array().unwrap().len(), 6);
    }
}
