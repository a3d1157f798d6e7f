//! The pipeline spec: one source connection, one stage, one destination, shared defaults, and
//! many tables, each of which becomes an ordinary [`JobSpec`] (docs/pipelines.md).
//!
//! A file is a pipeline when it has a top-level `[pipeline]` table ([`is_pipeline`]); anything
//! else is a job spec, read as before. [`PipelineSpec::validate`] is pure (it checks patterns,
//! names and the shared job-level keys); [`PipelineSpec::expand`] turns the tables into jobs
//! against the source's catalogs, which the caller discovers first (IO at build time).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ChecksSpec, ChunkingSpec, ConnectorSection, JobSpec, RangeSpec, StageSpec, SyncMode, SyncSpec};
use crate::discover::{Catalog, DiscoveredTable, check_pattern, glob_matches};
use crate::error::{Error, Result};
use crate::registry::{DestinationKind, SourceKind, TableChoice};

/// `max_source_connections` when the spec does not say.
pub const DEFAULT_MAX_SOURCE_CONNECTIONS: u16 = 4;

/// A pipeline of many tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Spec format version; must be 1.
    pub version: u32,
    /// `[pipeline]`: its name and limits. Its presence makes the file a pipeline.
    pub pipeline: PipelineSection,
    /// The source connection: `kind` and the connection keys, no table.
    pub source: ConnectorSection,
    /// The range every table loads unless it names its own.
    pub range: RangeSpec,
    /// Chunking of every table unless it names its own.
    #[serde(default)]
    pub chunking: ChunkingSpec,
    /// Where every table's Parquet files are staged (each job under its own prefix).
    pub stage: StageSpec,
    /// The destination, without a table: each table's job sets it.
    pub destination: ConnectorSection,
    /// Checks of every table's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ChecksSpec>,
    /// How every table keeps loading; a table may change the mode and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncSpec>,
    /// Tables chosen one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<PipelineTable>,
    /// Tables chosen by pattern from a schema, each with its best cursor candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaSelection>,
}

/// `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Pipeline name; each table's job is named `<name>-<table>`.
    pub name: String,
    /// Source connections open at once across all the pipeline's tables (planning and chunk
    /// extraction); default [`DEFAULT_MAX_SOURCE_CONNECTIONS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_source_connections: Option<u16>,
}

/// One `[[tables]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTable {
    /// The source table (`orders` or `schema.orders`).
    pub table: String,
    /// The cursor column.
    pub cursor: String,
    /// Key columns, when the table declares none (or to override it); used by `dedup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Vec<String>>,
    /// Sync mode of this table, instead of `[sync] mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_mode: Option<SyncMode>,
    /// Columns not extracted (personal data, huge blobs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_columns: Vec<String>,
    /// Destination table; default the source table's unqualified name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_table: Option<String>,
    /// This table's range, instead of the pipeline's (e.g. an integer cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeSpec>,
    /// This table's chunking, instead of the pipeline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<ChunkingSpec>,
}

/// `[schema]`: every table of a schema whose name matches an include pattern and no exclude
/// pattern, with its best cursor candidate. Tables also listed in `[[tables]]` are taken from
/// there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSelection {
    /// The schema (PostgreSQL) or database (MySQL); default the source's own (`public`, the
    /// connection's database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Glob patterns of table names to take (`*`, `?`); default every table.
    #[serde(default = "every_table")]
    pub include: Vec<String>,
    /// Glob patterns of table names to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

fn every_table() -> Vec<String> {
    vec!["*".into()]
}

/// One table of a pipeline as a job.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineJob {
    /// Where the table came from in the spec, for errors: `tables[2]` or `schema`.
    pub key: String,
    /// The source table.
    pub table: String,
    /// The table's job spec.
    pub spec: JobSpec,
}

/// Whether a spec file's text is a pipeline: it has a top-level `[pipeline]` table.
pub fn is_pipeline(text: &str) -> bool {
    text.parse::<toml::Table>()
        .is_ok_and(|t| matches!(t.get("pipeline"), Some(toml::Value::Table(_))))
}

/// What the job of every table of pipeline `name` starts with: jobs are `<pipeline>-<table>`.
pub fn job_prefix(name: &str) -> String {
    format!("{name}-")
}

impl PipelineSpec {
    /// Parses a pipeline from TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let field = super::field_of_toml_error(text, &e);
            Error::config(origin, field, e.message().trim())
        })
    }

    /// Reads and parses a pipeline file (IO; validation stays separate).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The connection limit.
    pub fn max_source_connections(&self) -> usize {
        usize::from(
            self.pipeline
                .max_source_connections
                .unwrap_or(DEFAULT_MAX_SOURCE_CONNECTIONS),
        )
    }

    /// Pure checks: names, limits, table entries, patterns, and the shared job-level keys
    /// (range, chunking, stage, checks, sync) as every job will have them. Errors name `origin`
    /// and the dotted key (`tables[3].cursor`, `schema.include[0]`).
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: String, msg: String| Error::config(origin, field, msg);
        if !super::is_valid_name(&self.pipeline.name) {
            return Err(err(
                "pipeline.name".into(),
                format!(
                    "`{}` is not a valid pipeline name: use lower-case letters, digits, `-` or `_`, starting with a letter or digit",
                    self.pipeline.name
                ),
            ));
        }
        if let Some(n) = self.pipeline.max_source_connections
            && !(1..=256).contains(&n)
        {
            return Err(err(
                "pipeline.max_source_connections".into(),
                format!("{n} is not between 1 and 256"),
            ));
        }
        if self.tables.is_empty() && self.schema.is_none() {
            return Err(err(
                "tables".into(),
                "a pipeline needs tables: list them in [[tables]] or select them with [schema] include = [...]".into(),
            ));
        }
        // The shared keys, checked once as a job would have them.
        self.template(&self.pipeline.name).validate(origin)?;
        for (i, t) in self.tables.iter().enumerate() {
            let key = |leaf: &str| format!("tables[{i}].{leaf}");
            if t.table.trim().is_empty() {
                return Err(err(key("table"), "must not be empty".into()));
            }
            if let Some(first) = self.tables[..i].iter().position(|o| o.table == t.table) {
                return Err(err(
                    key("table"),
                    format!("`{}` is already listed as tables[{first}]", t.table),
                ));
            }
            if t.cursor.trim().is_empty() {
                return Err(err(key("cursor"), "must not be empty".into()));
            }
            if let Some(pk) = &t.primary_key
                && (pk.is_empty() || pk.iter().any(|c| c.trim().is_empty()))
            {
                return Err(err(key("primary_key"), "must list one or more column names".into()));
            }
            if t.blocked_columns.contains(&t.cursor) {
                return Err(err(
                    key("blocked_columns"),
                    format!("blocks the cursor column `{}`", t.cursor),
                ));
            }
            if let Some(dest) = &t.destination_table
                && dest.trim().is_empty()
            {
                return Err(err(key("destination_table"), "must not be empty".into()));
            }
            if t.range.is_some() || t.chunking.is_some() || t.sync_mode.is_some() {
                let job = self.table_template(t);
                job.validate(origin).map_err(|e| table_error(e, i, t))?;
            }
        }
        if let Some(schema) = &self.schema {
            if let Some(name) = &schema.name
                && name.trim().is_empty()
            {
                return Err(err("schema.name".into(), "must not be empty".into()));
            }
            if schema.include.is_empty() {
                return Err(err(
                    "schema.include".into(),
                    "lists no pattern, so no table is taken; leave it out for every table".into(),
                ));
            }
            for (list, patterns) in [("include", &schema.include), ("exclude", &schema.exclude)] {
                for (i, p) in patterns.iter().enumerate() {
                    check_pattern(p).map_err(|m| err(format!("schema.{list}[{i}]"), m))?;
                }
            }
        }
        Ok(())
    }

    /// The schemas to discover before [`PipelineSpec::expand`]: `None` is the source's
    /// default schema. Qualified tables (`sales.orders`) need their own.
    pub fn schemas(&self) -> Vec<Option<String>> {
        let mut schemas: Vec<Option<String>> = Vec::new();
        let listed = self
            .tables
            .iter()
            .map(|t| t.table.split_once('.').map(|(s, _)| s.to_string()));
        let selected = self.schema.iter().map(|s| s.name.clone());
        for schema in listed.chain(selected) {
            if !schemas.contains(&schema) {
                schemas.push(schema);
            }
        }
        schemas
    }

    /// Every table as a job, checked against the discovered `catalogs` (one per entry of
    /// [`PipelineSpec::schemas`], in that order): listed tables must exist with their cursor,
    /// key and blocked columns; tables a `[schema]` selects take their best cursor candidate.
    /// Each job's source and destination sections come from the kinds' `table_settings`.
    /// Errors name `origin`, the table and the key; nothing is written.
    pub fn expand(
        &self,
        origin: &str,
        catalogs: &[(Option<String>, Catalog)],
        source: &dyn SourceKind,
        destination: &dyn DestinationKind,
    ) -> Result<Vec<PipelineJob>> {
        let err = |field: String, msg: String| Error::config(origin, field, msg);
        let catalog_of = |schema: &Option<String>| {
            catalogs
                .iter()
                .find(|(s, _)| s == schema)
                .map(|(_, c)| c)
                .expect("every schema of PipelineSpec::schemas was discovered")
        };
        let mut jobs: Vec<PipelineJob> = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            let key = |leaf: &str| format!("tables[{i}].{leaf}");
            let (schema, name) = match t.table.split_once('.') {
                Some((s, n)) => (Some(s.to_string()), n),
                None => (None, t.table.as_str()),
            };
            let catalog = catalog_of(&schema);
            let Some(found) = catalog.table(name) else {
                return Err(err(
                    key("table"),
                    format!(
                        "table `{}` does not exist in `{}` (or this user cannot see it); `backhaul discover` lists the tables",
                        t.table, catalog.schema
                    ),
                ));
            };
            if found.column(&t.cursor).is_none() {
                return Err(err(
                    key("cursor"),
                    format!(
                        "table `{}` has no column `{}`; candidates: {}",
                        found.table,
                        t.cursor,
                        candidates(found)
                    ),
                ));
            }
            let mut job = self.table_template(t);
            let mode = job.sync.as_ref().map(|s| s.mode);
            if mode == Some(SyncMode::Dedup) && t.primary_key.is_none() && found.primary_key.is_empty() {
                return Err(err(
                    key("primary_key"),
                    format!(
                        "table `{}` syncs in dedup mode but declares no primary key: name its key columns in `primary_key`, or use sync_mode = \"append\"",
                        found.table
                    ),
                ));
            }
            if let Some(pk) = &t.primary_key {
                if let Some(missing) = pk.iter().find(|c| found.column(c).is_none()) {
                    return Err(err(
                        key("primary_key"),
                        format!("table `{}` has no column `{missing}`", found.table),
                    ));
                }
                if let Some(sync) = &mut job.sync {
                    sync.primary_key = Some(pk.clone());
                }
            }
            let columns = if t.blocked_columns.is_empty() {
                None
            } else {
                if let Some(missing) = t.blocked_columns.iter().find(|c| found.column(c).is_none()) {
                    return Err(err(
                        key("blocked_columns"),
                        format!("table `{}` has no column `{missing}`", found.table),
                    ));
                }
                Some(
                    found
                        .columns
                        .iter()
                        .filter(|c| !t.blocked_columns.contains(&c.name))
                        .map(|c| c.name.clone())
                        .collect(),
                )
            };
            let choice = TableChoice {
                table: found.table.clone(),
                cursor: t.cursor.clone(),
                columns,
            };
            let destination_table = t.destination_table.clone().unwrap_or_else(|| found.name.clone());
            self.finish(
                &mut job,
                &key("table"),
                found,
                &choice,
                &destination_table,
                origin,
                source,
                destination,
            )
            .map_err(|e| table_error(e, i, t))?;
            jobs.push(PipelineJob {
                key: format!("tables[{i}]"),
                table: found.table.clone(),
                spec: job,
            });
        }
        if let Some(selection) = &self.schema {
            let catalog = catalog_of(&selection.name);
            for found in &catalog.tables {
                let included = selection.include.iter().any(|p| glob_matches(p, &found.name))
                    && !selection.exclude.iter().any(|p| glob_matches(p, &found.name));
                if !included || jobs.iter().any(|j| j.table == found.table) {
                    continue;
                }
                let Some(best) = found.cursor_candidates.first() else {
                    return Err(err(
                        "schema.include".into(),
                        format!(
                            "table `{}` has no column that can be a cursor (a date, timestamp or integer primary key): list it in [[tables]] with a cursor, or exclude it",
                            found.table
                        ),
                    ));
                };
                let mut job = self.template(&self.pipeline.name);
                if job.sync.as_ref().is_some_and(|s| s.mode == SyncMode::Dedup) && found.primary_key.is_empty() {
                    return Err(err(
                        "schema.include".into(),
                        format!(
                            "table `{}` declares no primary key, which dedup mode needs: list it in [[tables]] with a `primary_key` or sync_mode = \"append\", or exclude it",
                            found.table
                        ),
                    ));
                }
                let choice = TableChoice {
                    table: found.table.clone(),
                    cursor: best.column.clone(),
                    columns: None,
                };
                self.finish(
                    &mut job,
                    "schema.include",
                    found,
                    &choice,
                    &found.name,
                    origin,
                    source,
                    destination,
                )?;
                jobs.push(PipelineJob {
                    key: "schema".into(),
                    table: found.table.clone(),
                    spec: job,
                });
            }
        }
        if jobs.is_empty() {
            return Err(err(
                "schema.include".into(),
                "no table of the schema matches the patterns".into(),
            ));
        }
        for (i, job) in jobs.iter().enumerate() {
            if let Some(other) = jobs[..i].iter().find(|o| o.spec.name == job.spec.name) {
                return Err(err(
                    format!("{}.table", job.key),
                    format!(
                        "tables `{}` and `{}` would both be job `{}`",
                        other.table, job.table, job.spec.name
                    ),
                ));
            }
        }
        Ok(jobs)
    }

    /// A job with the pipeline's shared keys and no table yet.
    fn template(&self, name: &str) -> JobSpec {
        JobSpec {
            version: self.version,
            name: name.into(),
            source: self.source.clone(),
            range: self.range.clone(),
            chunking: self.chunking.clone(),
            stage: self.stage.clone(),
            destination: self.destination.clone(),
            checks: self.checks.clone(),
            sync: self.sync.clone(),
        }
    }

    /// The template with a listed table's overrides.
    fn table_template(&self, t: &PipelineTable) -> JobSpec {
        let mut job = self.template(&self.pipeline.name);
        if let Some(range) = &t.range {
            job.range = range.clone();
        }
        if let Some(chunking) = &t.chunking {
            job.chunking = chunking.clone();
        }
        if let Some(mode) = t.sync_mode
            && mode.replaces_table()
            && t.chunking.is_none()
        {
            // A refresh is one chunk: the shared chunking does not apply (and may not even
            // fit the table's own range, e.g. a duration for an integer key).
            job.chunking = ChunkingSpec::default();
        }
        if let Some(mode) = t.sync_mode {
            match &mut job.sync {
                // A refresh re-reads the whole table: the shared lookback, delete detection
                // and metadata columns (dedup settings) do not apply to it.
                Some(sync) if mode.replaces_table() => {
                    sync.mode = mode;
                    sync.lookback = None;
                    sync.deletes = None;
                    sync.metadata_columns = None;
                }
                Some(sync) => sync.mode = mode,
                None => {
                    job.sync = Some(SyncSpec {
                        mode,
                        lag: None,
                        lookback: None,
                        primary_key: None,
                        deletes: None,
                        metadata_columns: None,
                    })
                }
            }
        }
        job
    }

    /// Names the job and fills its source and destination sections for one table.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        job: &mut JobSpec,
        key: &str,
        found: &DiscoveredTable,
        choice: &TableChoice,
        destination_table: &str,
        origin: &str,
        source: &dyn SourceKind,
        destination: &dyn DestinationKind,
    ) -> Result<()> {
        let name = format!("{}{}", job_prefix(&self.pipeline.name), found.name.to_ascii_lowercase());
        if !super::is_valid_name(&name) {
            return Err(Error::config(
                origin,
                key,
                format!(
                    "table `{}` would be job `{name}`, which is not a valid job name (1-63 lower-case letters, digits, `-` or `_`)",
                    found.table
                ),
            ));
        }
        job.name = name;
        job.source.settings = source.table_settings(&self.source.settings, choice, origin)?;
        job.destination.settings = destination.table_settings(&self.destination.settings, destination_table);
        Ok(())
    }
}

/// A table's candidates for messages.
fn candidates(found: &DiscoveredTable) -> String {
    if found.cursor_candidates.is_empty() {
        return "none (no date, timestamp or integer key column)".into();
    }
    found
        .cursor_candidates
        .iter()
        .map(|c| format!("`{}` ({})", c.column, c.role.describe()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error of a table's job whose key the table overrides names the table's key.
fn table_error(e: Error, i: usize, t: &PipelineTable) -> Error {
    match e {
        Error::Config { file, field, message } => {
            let overridden = (field.starts_with("range") && t.range.is_some())
                || (field.starts_with("chunking") && t.chunking.is_some())
                || (field == "sync.mode" && t.sync_mode.is_some());
            let field = match field.as_str() {
                "sync.mode" if overridden => format!("tables[{i}].sync_mode"),
                _ if overridden => format!("tables[{i}].{field}"),
                _ => field,
            };
            Error::Config { file, field, message }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
