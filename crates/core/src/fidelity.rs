//! The type-fidelity report of a job: for each column, the type the source declares, the Arrow
//! type it is extracted as, the type the destination stores, and any lossy step on the way.
//!
//! By default every step is exact; a lossy step appears only where the user opted into one (for
//! example an unconstrained numeric read at a chosen scale), or where a destination cannot hold
//! a type exactly. The report makes either visible before a single row moves.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::connector::{Destination, TableDescription};

/// One column's way from source to destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnFidelity {
    /// Column name.
    pub name: String,
    /// Type as the source declares it.
    pub source_type: String,
    /// Arrow type of extracted batches (with the extension name, e.g. `arrow.json`, if any).
    pub arrow_type: String,
    /// Type as the destination stores it.
    pub destination_type: String,
    /// Lossy steps, source side then destination side; empty when the column is exact.
    pub lossy_steps: Vec<String>,
}

/// The report for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeFidelityReport {
    /// The job.
    pub job: String,
    /// Columns in schema order.
    pub columns: Vec<ColumnFidelity>,
}

/// A column's stored type at a destination, and what is lost storing it, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationType {
    /// The destination's own type name, e.g. `NUMBER(38,9)` or `INT64 (DECIMAL(18,2))`.
    pub name: String,
    /// What cannot be stored exactly; `None` when nothing is lost.
    pub lossy_step: Option<String>,
}

impl TypeFidelityReport {
    /// Builds the report from what the source described and how the destination stores each field.
    pub fn build(job: &str, table: &TableDescription, destination: &dyn Destination) -> Self {
        let columns = table
            .schema
            .fields()
            .iter()
            .map(|field| {
                let origin = table.columns.iter().find(|c| c.name == *field.name());
                let stored = destination.column_type(field);
                let mut lossy_steps = Vec::new();
                if let Some(step) = origin.and_then(|c| c.lossy_step.clone()) {
                    lossy_steps.push(format!("source: {step}"));
                }
                if let Some(step) = stored.lossy_step {
                    lossy_steps.push(format!("destination: {step}"));
                }
                let mut arrow_type = field.data_type().to_string();
                if let Some(ext) = field.metadata().get("ARROW:extension:name") {
                    let _ = write!(arrow_type, " ({ext})");
                }
                ColumnFidelity {
                    name: field.name().clone(),
                    source_type: origin.map_or_else(|| "unknown".into(), |c| c.source_type.clone()),
                    arrow_type,
                    destination_type: stored.name,
                    lossy_steps,
                }
            })
            .collect();
        Self {
            job: job.to_string(),
            columns,
        }
    }

    /// True when no column has a lossy step.
    pub fn is_exact(&self) -> bool {
        self.columns.iter().all(|c| c.lossy_steps.is_empty())
    }

    /// Writes `type-fidelity.md` and `type-fidelity.json` into `<reports_dir>/<job>/`; returns
    /// the Markdown file's path.
    pub fn write(&self, reports_dir: &std::path::Path) -> crate::Result<std::path::PathBuf> {
        let dir = reports_dir.join(&self.job);
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
        let md = dir.join("type-fidelity.md");
        std::fs::write(&md, self.to_markdown()).map_err(|e| crate::Error::io(&md, e))?;
        let json = dir.join("type-fidelity.json");
        let text = serde_json::to_string_pretty(self).expect("the report serializes");
        std::fs::write(&json, text + "\n").map_err(|e| crate::Error::io(&json, e))?;
        Ok(md)
    }

    /// One line for people: every column exact, or how many columns carry opted-in lossy steps.
    pub fn verdict(&self) -> String {
        let lossy = self.columns.iter().filter(|c| !c.lossy_steps.is_empty()).count();
        if lossy == 0 {
            "every column exact".to_string()
        } else {
            format!("{lossy} column(s) with opted-in lossy steps")
        }
    }

    /// A Markdown table, readable in a terminal and in a rendered file.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("# Type fidelity: job `{}`\n\n", self.job);
        out.push_str("| column | source type | Arrow type | destination type | lossy steps |\n");
        out.push_str("|---|---|---|---|---|\n");
        for c in &self.columns {
            let lossy = if c.lossy_steps.is_empty() {
                "none".to_string()
            } else {
                c.lossy_steps.join("; ")
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                c.name, c.source_type, c.arrow_type, c.destination_type, lossy
            );
        }
        out.push('\n');
        if self.is_exact() {
            out.push_str("Every column is carried without loss.\n");
        } else {
            let n = self.columns.iter().filter(|c| !c.lossy_steps.is_empty()).count();
            let _ = writeln!(out, "{n} column(s) have lossy steps the spec opted into; see above.");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use futures::future::BoxFuture;

    use super::*;
    use crate::connector::{ChunkCommit, ColumnOrigin};
    use crate::cursor::CursorKind;
    use crate::proof::{ChunkProof, ProofLevel};
    use crate::stage::Stage;

    struct Plain;
    impl Destination for Plain {
        fn prepare(
            &self,
            _: &str,
            _: arrow::datatypes::SchemaRef,
        ) -> BoxFuture<'_, crate::Result<crate::schema::SchemaChanges>> {
            Box::pin(async { Ok(Default::default()) })
        }
        fn proof_level(&self) -> ProofLevel {
            ProofLevel::CountOnly
        }
        fn commit_chunk<'a>(&'a self, _: &'a Stage, _: &'a ChunkCommit) -> BoxFuture<'a, crate::Result<ChunkProof>> {
            unreachable!()
        }
        fn read_back(&self, _: &str, _: u64) -> BoxFuture<'_, crate::Result<Option<ChunkProof>>> {
            unreachable!()
        }
    }

    #[test]
    fn exact_columns_and_opted_in_lossy_step() {
        let json = Field::new("doc", DataType::Utf8, true).with_metadata(HashMap::from([(
            "ARROW:extension:name".to_string(),
            "arrow.json".to_string(),
        )]));
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("amount", DataType::Decimal128(38, 9), true),
            json,
        ]));
        let origin = |name: &str, ty: &str, lossy: Option<&str>| ColumnOrigin {
            name: name.into(),
            source_type: ty.into(),
            lossy_step: lossy.map(Into::into),
        };
        let table = TableDescription {
            schema,
            cursor_column: "at".into(),
            cursor_kind: CursorKind::Timestamp,
            key_columns: vec![],
            columns: vec![
                origin("at", "timestamp with time zone", None),
                origin("amount", "numeric", Some("unconstrained numeric read as decimal(38,9)")),
                origin("doc", "jsonb", None),
            ],
        };
        let report = TypeFidelityReport::build("j", &table, &Plain);
        assert!(!report.is_exact());
        assert_eq!(report.columns[0].lossy_steps, Vec::<String>::new());
        assert_eq!(report.columns[2].arrow_type, "Utf8 (arrow.json)");
        assert_eq!(report.columns[1].destination_type, "Decimal128(38, 9)");
        let md = report.to_markdown();
        assert!(md.contains("| amount | numeric | Decimal128(38, 9) | Decimal128(38, 9) | source: unconstrained"));
        assert!(md.contains("1 column(s) have lossy steps"));
    }
}
