//! The small JSON path the spec uses: `$`, `$.data`, `data.items` (object keys only).

use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

/// A parsed path: the object keys from the document's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    keys: Vec<String>,
    text: String,
}

impl JsonPath {
    /// Parses `$`, `$.a.b` or `a.b`.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let t = text.trim();
        let rest = t
            .strip_prefix('$')
            .map(|r| r.strip_prefix('.').unwrap_or(r))
            .unwrap_or(t);
        if t == "$" {
            return Ok(JsonPath {
                keys: vec![],
                text: t.into(),
            });
        }
        if rest.is_empty() {
            return Err(format!("`{text}` is not a path; write e.g. `$.data` or `data.items`"));
        }
        let keys: Vec<String> = rest.split('.').map(str::to_string).collect();
        if keys.iter().any(|k| k.is_empty() || k.contains(['[', ']', '*'])) {
            return Err(format!(
                "`{text}`: only object keys separated by `.` are supported (no indexes or wildcards)"
            ));
        }
        Ok(JsonPath { keys, text: t.into() })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at the path, if every key exists.
    pub fn select<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.keys.iter().try_fold(root, |v, k| v.get(k))
    }

    /// The raw text of the value at the path in `document`; `Ok(None)` when a key is missing,
    /// `Err` when the document is not JSON.
    pub fn select_raw<'a>(&self, document: &'a str) -> Result<Option<&'a RawValue>, serde_json::Error> {
        let mut current: &'a RawValue = serde_json::from_str(document)?;
        for key in &self.keys {
            let Ok(object) = serde_json::from_str::<HashMap<String, &'a RawValue>>(current.get()) else {
                return Ok(None);
            };
            match object.get(key) {
                Some(v) => current = v,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_select_values_and_raw_text() {
        let doc = r#"{"data": {"items": [{"amount": 12345678901234567890.12}]}, "has_more": true}"#;
        let p = JsonPath::parse("data.items").unwrap();
        assert_eq!(p, JsonPath::parse("$.data.items").unwrap().with_text("data.items"));
        let raw = p.select_raw(doc).unwrap().unwrap();
        assert_eq!(raw.get(), r#"[{"amount": 12345678901234567890.12}]"#);
        let v: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(
            JsonPath::parse("$.has_more").unwrap().select(&v),
            Some(&Value::Bool(true))
        );
        assert!(JsonPath::parse("$.nope").unwrap().select_raw(doc).unwrap().is_none());
        assert!(JsonPath::parse("$").unwrap().select_raw("[1]").unwrap().is_some());
        assert!(JsonPath::parse("$.a[0]").is_err());
        assert!(JsonPath::parse("").is_err());
    }

    impl JsonPath {
        fn with_text(mut self, text: &str) -> Self {
            self.text = text.into();
            self
        }
    }
}
