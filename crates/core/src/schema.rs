//! Comparing Arrow schemas, for errors that say exactly which column differs and how.

use std::collections::BTreeMap;

use arrow::datatypes::Schema;

/// Describes how `actual` differs from `expected` in column names, order, types, nullability
/// or field metadata; `None` when they match. Schema-level metadata is ignored: writers add
/// their own keys there and it carries no row semantics.
pub fn schema_difference(expected: &Schema, actual: &Schema) -> Option<String> {
    let (e, a) = (expected.fields(), actual.fields());
    let mut diffs = Vec::new();
    if e.len() != a.len() {
        let names = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        diffs.push(format!(
            "{} columns ({}) vs {} columns ({})",
            e.len(),
            names(expected),
            a.len(),
            names(actual)
        ));
    }
    for (i, (fe, fa)) in e.iter().zip(a.iter()).enumerate() {
        if fe.name() != fa.name() {
            diffs.push(format!("column {i} is named `{}` vs `{}`", fe.name(), fa.name()));
            continue;
        }
        let n = fe.name();
        if fe.data_type() != fa.data_type() {
            diffs.push(format!(
                "column `{n}` has type {} vs {}",
                fe.data_type(),
                fa.data_type()
            ));
        }
        if fe.is_nullable() != fa.is_nullable() {
            let null = |b: bool| if b { "nullable" } else { "not nullable" };
            diffs.push(format!(
                "column `{n}` is {} vs {}",
                null(fe.is_nullable()),
                null(fa.is_nullable())
            ));
        }
        if fe.metadata() != fa.metadata() {
            let (me, ma): (BTreeMap<_, _>, BTreeMap<_, _>) =
                (fe.metadata().iter().collect(), fa.metadata().iter().collect());
            diffs.push(format!("column `{n}` has metadata {me:?} vs {ma:?}"));
        }
    }
    if diffs.is_empty() { None } else { Some(diffs.join("; ")) }
}

/// How a source table's columns changed since the destination table was made from it: the one
/// rule of which changes a sync can follow. New columns can be added at the destination,
/// dropped ones can stay there (NULL from then on); a column whose type changed cannot follow,
/// because the rows already loaded hold the old type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaChanges {
    /// Columns the source has and the destination does not.
    pub added: Vec<String>,
    /// Columns the destination has and the source no longer does.
    pub dropped: Vec<String>,
    /// Columns whose type differs: `(column, destination type, source type)`.
    pub retyped: Vec<(String, String, String)>,
}

impl SchemaChanges {
    /// Compares the destination's columns (`existing`) with the source's now (`source`), by
    /// name. Order, nullability and field metadata are not changes of meaning here.
    pub fn between(existing: &Schema, source: &Schema) -> Self {
        let mut changes = SchemaChanges::default();
        for field in source.fields() {
            match existing.field_with_name(field.name()) {
                Err(_) => changes.added.push(field.name().clone()),
                Ok(old) if old.data_type() != field.data_type() => changes.retyped.push((
                    field.name().clone(),
                    old.data_type().to_string(),
                    field.data_type().to_string(),
                )),
                Ok(_) => {}
            }
        }
        for field in existing.fields() {
            if source.field_with_name(field.name()).is_err() {
                changes.dropped.push(field.name().clone());
            }
        }
        changes
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.dropped.is_empty() && self.retyped.is_empty()
    }

    /// The first type change as an error message naming the column and both types, e.g.
    /// ``column `v` changed type: Int32 at the destination, Utf8 in the source``.
    pub fn type_change(&self) -> Option<String> {
        self.retyped.first().map(|(column, was, now)| {
            format!(
                "column `{column}` changed type: {was} at the destination, {now} in the source; \
                 rows already loaded hold the old type, so the table cannot follow"
            )
        })
    }
}

impl std::fmt::Display for SchemaChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let list = |names: &[String]| names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        if !self.added.is_empty() {
            parts.push(format!("added {}", list(&self.added)));
        }
        if !self.dropped.is_empty() {
            parts.push(format!("dropped {}", list(&self.dropped)));
        }
        for (column, was, now) in &self.retyped {
            parts.push(format!("`{column}` {was} → {now}"));
        }
        if parts.is_empty() {
            parts.push("no changes".into());
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn added_dropped_and_retyped_columns_are_told_apart() {
        let existing = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int32, false),
            Field::new("gone", DataType::Utf8, true),
        ]);
        let source = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Utf8, false),
            Field::new("new", DataType::Boolean, true),
        ]);
        let changes = SchemaChanges::between(&existing, &source);
        assert_eq!(changes.added, ["new"]);
        assert_eq!(changes.dropped, ["gone"]);
        assert_eq!(
            changes.retyped,
            [("v".to_string(), "Int32".to_string(), "Utf8".to_string())]
        );
        let message = changes.type_change().unwrap();
        assert!(
            message.contains("`v`") && message.contains("Int32") && message.contains("Utf8"),
            "{message}"
        );
        assert_eq!(changes.to_string(), "added `new`; dropped `gone`; `v` Int32 → Utf8");
        assert!(SchemaChanges::between(&existing, &existing).is_empty());
    }
}
