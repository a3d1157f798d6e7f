//! Comparing Arrow schemas, for errors that say exactly which column differs and how.

use std::collections::BTreeMap;

use arrow::datatypes::{Field, Schema};
use serde::Serialize;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    /// name. Order and nullability are not changes of meaning here; field metadata (an
    /// extension type such as `arrow.json`) is part of the type.
    pub fn between(existing: &Schema, source: &Schema) -> Self {
        let mut changes = SchemaChanges::default();
        for field in source.fields() {
            match existing.field_with_name(field.name()) {
                Err(_) => changes.added.push(field.name().clone()),
                Ok(old) if !same_type(old, field) => {
                    changes
                        .retyped
                        .push((field.name().clone(), type_name(old), type_name(field)))
                }
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

    /// The destination table's schema once it follows the source: its columns in their order,
    /// dropped ones kept (nullable: rows loaded from now on lack them), then the added ones
    /// (nullable: rows loaded before lack them). A column nullable on either side is nullable.
    /// Refused, with [`SchemaChanges::type_change`]'s message, when a column changed type.
    /// `known_dropped` are columns the table already kept after an earlier drop: they are not
    /// reported as dropped again, so each change is reported by the run that first saw it.
    pub fn follow(
        existing: &Schema,
        source: &Schema,
        known_dropped: &[String],
    ) -> std::result::Result<(Schema, Self), String> {
        let mut changes = Self::between(existing, source);
        changes.dropped.retain(|c| !known_dropped.contains(c));
        if let Some(message) = changes.type_change() {
            return Err(message);
        }
        let mut fields: Vec<Field> = existing
            .fields()
            .iter()
            .map(|old| match source.field_with_name(old.name()) {
                Ok(new) => old
                    .as_ref()
                    .clone()
                    .with_nullable(old.is_nullable() || new.is_nullable()),
                Err(_) => old.as_ref().clone().with_nullable(true),
            })
            .collect();
        fields.extend(
            source
                .fields()
                .iter()
                .filter(|f| changes.added.contains(f.name()))
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        Ok((Schema::new_with_metadata(fields, existing.metadata().clone()), changes))
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

    /// The first added column `is_blocked` names, as an error message: a destination that must
    /// not receive a column (`destination.blocked_columns`) refuses the change rather than add it.
    pub fn blocked_addition(&self, is_blocked: impl Fn(&str) -> bool) -> Option<String> {
        self.added
            .iter()
            .find(|c| is_blocked(c))
            .map(|column| format!("column `{column}` is new in the source and blocked by destination.blocked_columns"))
    }
}

/// Why rows of `chunk`'s schema cannot be part of a table of `table`'s schema (a table that
/// followed the source with [`SchemaChanges::follow`]); `None` when they can. Every column of
/// the chunk must be the table's, of the same type, and nullable only where the table is; the
/// table's other columns read as NULL in the chunk's rows.
pub fn chunk_misfit(table: &Schema, chunk: &Schema) -> Option<String> {
    let mut problems = Vec::new();
    for field in chunk.fields() {
        match table.field_with_name(field.name()) {
            Err(_) => problems.push(format!(
                "column `{}` is not in the table (the source added it after the table was prepared; sync again to add it)",
                field.name()
            )),
            Ok(column) if !same_type(column, field) => problems.push(format!(
                "column `{}` is {} in the table, {} in the chunk",
                field.name(),
                type_name(column),
                type_name(field)
            )),
            Ok(column) if field.is_nullable() && !column.is_nullable() => problems.push(format!(
                "column `{}` is not nullable in the table, nullable in the chunk",
                field.name()
            )),
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        None
    } else {
        Some(problems.join("; "))
    }
}

fn same_type(a: &Field, b: &Field) -> bool {
    a.data_type() == b.data_type() && a.metadata() == b.metadata()
}

/// A field's type as errors show it: the Arrow type, and its extension type when it has one.
fn type_name(field: &Field) -> String {
    match field.metadata().get("ARROW:extension:name") {
        Some(extension) => format!("{} ({extension})", field.data_type()),
        None => field.data_type().to_string(),
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
    use arrow::datatypes::DataType;

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

    #[test]
    fn a_followed_table_keeps_dropped_columns_and_appends_added_ones_nullable() {
        let existing = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("gone", DataType::Utf8, false),
            Field::new("v", DataType::Int32, false),
        ]);
        let source = Schema::new(vec![
            Field::new("new", DataType::Boolean, false),
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int32, true),
        ]);
        let (table, changes) = SchemaChanges::follow(&existing, &source, &[]).unwrap();
        assert_eq!(
            (changes.added.as_slice(), changes.dropped.as_slice()),
            (&["new".to_string()][..], &["gone".to_string()][..])
        );
        let columns: Vec<(&str, bool)> = table
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.is_nullable()))
            .collect();
        assert_eq!(columns, [("id", false), ("gone", true), ("v", true), ("new", true)]);
        // Chunks of the old and of the new source schema both fit the followed table.
        assert_eq!(chunk_misfit(&table, &source), None);
        assert_eq!(chunk_misfit(&table, &existing), None);
        // Following again changes nothing, and a drop already known is not reported again.
        let (again, none) = SchemaChanges::follow(&table, &source, &["gone".to_string()]).unwrap();
        assert_eq!(again, table);
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn a_type_change_is_refused_and_a_chunk_of_another_schema_does_not_fit() {
        let existing = Schema::new(vec![Field::new("n", DataType::Int32, false)]);
        let source = Schema::new(vec![Field::new("n", DataType::Int64, false)]);
        let e = SchemaChanges::follow(&existing, &source, &[]).unwrap_err();
        assert!(
            e.contains("`n`") && e.contains("Int32 at the destination, Int64 in the source"),
            "{e}"
        );
        let misfit = chunk_misfit(&existing, &source).unwrap();
        assert!(
            misfit.contains("`n` is Int32 in the table, Int64 in the chunk"),
            "{misfit}"
        );
        let extra = Schema::new(vec![Field::new("other", DataType::Int32, false)]);
        assert!(
            chunk_misfit(&existing, &extra)
                .unwrap()
                .contains("`other` is not in the table")
        );
        let mut json = std::collections::HashMap::new();
        json.insert("ARROW:extension:name".to_string(), "arrow.json".to_string());
        let doc = Schema::new(vec![Field::new("n", DataType::Int32, false).with_metadata(json)]);
        let changes = SchemaChanges::between(&existing, &doc);
        assert_eq!(changes.retyped[0].2, "Int32 (arrow.json)");
        let blocked = SchemaChanges::between(
            &existing,
            &Schema::new(vec![
                Field::new("n", DataType::Int32, false),
                Field::new("secret", DataType::Utf8, true),
            ]),
        );
        assert!(
            blocked
                .blocked_addition(|c| c == "secret")
                .unwrap()
                .contains("`secret`")
        );
        assert_eq!(blocked.blocked_addition(|_| false), None);
    }
}
