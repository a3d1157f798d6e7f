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
