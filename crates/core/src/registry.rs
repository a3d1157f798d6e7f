//! Connector-owned configuration: each connector parses, validates and documents its own
//! `[source]` or `[destination]` section, and registers its kind in a [`Registry`].
//!
//! Core knows only `kind` ([`ConnectorSection`]). A connector crate implements [`SourceKind`]
//! (or [`DestinationKind`]) to parse the rest of the section into its own strict serde struct
//! with [`parse_section`](crate::spec::parse_section), and [`SourceConfig`] (or
//! [`DestinationConfig`]) on that struct: pure validation, path resolution, what the rest of the
//! system asks of a section, and `build`, the only step allowed IO. A new connector is one crate
//! plus one registration line in the binary.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::connector::{Destination, Source};
use crate::discover::Catalog;
use crate::error::{Error, Result};
use crate::spec::{ByteSizeText, ConnectorSection, JobSpec, ValidatedSpec};
use crate::units::{ByteSize, MIB};

/// Target Parquet file size when a destination states no preference.
pub const DEFAULT_FILE_SIZE: u64 = 256 * MIB;

/// A parsed `[source]` section of one kind.
pub trait SourceConfig: fmt::Debug + Send + Sync {
    /// The table or stream the source reads.
    fn table(&self) -> &str;
    /// The cursor column.
    fn cursor(&self) -> &str;
    /// Pure checks: no files, no network. Errors name `origin` and the dotted key
    /// (`source.host`).
    fn validate(&self, origin: &str) -> Result<()>;
    /// Makes relative paths relative to `base`, the spec file's directory.
    fn resolve_paths(&mut self, _base: &Path) {}
    /// The section's keys as the canonical spec holds them
    /// ([`to_settings`](crate::spec::to_settings) of the struct).
    fn settings(&self) -> toml::Table;
    /// Builds the source; IO allowed (build time).
    fn build(&self) -> Result<Arc<dyn Source>>;
    /// The name of the job the source serves, for what a source keeps per job outside the
    /// destination (the HTTP source names its dead-letter files after it). Set once, by
    /// [`Connectors::check`]; the default ignores it.
    fn set_job_name(&mut self, _job_name: &str) {}
}

/// How a destination wants its Parquet files staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagingPreferences {
    /// Target Parquet file size in bytes; files roll over at this size.
    pub file_size: u64,
}

impl Default for StagingPreferences {
    fn default() -> Self {
        StagingPreferences {
            file_size: DEFAULT_FILE_SIZE,
        }
    }
}

/// The `file_size` a destination accepts: its default, and bounds whose lower end tests may
/// pass below with `allow_small_files`. One rule for every destination's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSizeRange {
    /// Used when the key is absent.
    pub default: u64,
    /// Smallest size accepted without `allow_small_files`.
    pub min: u64,
    /// Largest size accepted.
    pub max: u64,
    /// What the lower bound is, for the error (e.g. `the 128MiB minimum`).
    pub min_reason: &'static str,
}

impl FileSizeRange {
    /// The size `value` names (or the default), checked; errors name `origin` and
    /// `destination.file_size`.
    pub fn check(&self, value: Option<&ByteSizeText>, allow_small_files: bool, origin: &str) -> Result<u64> {
        let err = |msg: String| Err(Error::config(origin, "destination.file_size", msg));
        let size = match value {
            Some(text) => match ByteSize::parse(&text.0) {
                Ok(size) => size.0,
                Err(m) => return err(m),
            },
            None => self.default,
        };
        if size == 0 {
            return err("must be positive".into());
        }
        if size > self.max {
            return err(format!(
                "{} is above the {} maximum",
                ByteSize(size),
                ByteSize(self.max)
            ));
        }
        if size < self.min && !allow_small_files {
            return err(format!(
                "{} is below {}; set `allow_small_files = true` for tests",
                ByteSize(size),
                self.min_reason
            ));
        }
        Ok(size)
    }
}

/// A parsed `[destination]` section of one kind.
pub trait DestinationConfig: fmt::Debug + Send + Sync {
    /// The destination table.
    fn table(&self) -> &str;
    /// Pure checks: no files, no network. Errors name `origin` and the dotted key
    /// (`destination.file_size`).
    fn validate(&self, origin: &str) -> Result<()>;
    /// How the writer stages files for this destination.
    fn staging(&self) -> StagingPreferences {
        StagingPreferences::default()
    }
    /// Makes relative paths relative to `base`, the spec file's directory.
    fn resolve_paths(&mut self, _base: &Path) {}
    /// The section's keys as the canonical spec holds them.
    fn settings(&self) -> toml::Table;
    /// Builds the destination; IO allowed (build time).
    fn build(&self) -> Result<Arc<dyn Destination>>;
}

/// A source connector: its `kind` and how to parse its section.
pub trait SourceKind: Send + Sync {
    /// The `kind` value that selects this source, e.g. `postgres`.
    fn kind(&self) -> &'static str;
    /// Parses the section's keys (all but `kind`) with the connector's own strict struct.
    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>>;

    /// The section of one table of a pipeline: the pipeline's `[source]` keys (the connection
    /// only) plus `table`'s choices under this kind's own key names. The default refuses: the
    /// kind has no tables to choose from.
    fn table_settings(&self, _connection: &toml::Table, _table: &TableChoice, origin: &str) -> Result<toml::Table> {
        Err(Error::config(
            origin,
            "source.kind",
            format!(
                "source kind `{}` reads one fixed stream; pipelines of many tables need a database source (`postgres`, `mysql`)",
                self.kind()
            ),
        ))
    }

    /// The tables of `schema` (the kind's default schema when `None`) with their columns,
    /// primary keys and ranked cursor candidates, read from the catalog with one connection.
    /// `connection` is a `[source]` section without a table; `base` is its file's directory.
    /// The default refuses: the kind cannot discover.
    fn discover<'a>(
        &'a self,
        _connection: &'a toml::Table,
        origin: &'a str,
        _base: &'a Path,
        _schema: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Catalog>> {
        let e = Error::config(
            origin,
            "source.kind",
            format!(
                "source kind `{}` cannot discover tables; discover works with `postgres` and `mysql`",
                self.kind()
            ),
        );
        Box::pin(async move { Err(e) })
    }
}

/// What a pipeline chooses for one of its tables: what the source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChoice {
    /// The table, as the source names tables (`public.orders`).
    pub table: String,
    /// The cursor column.
    pub cursor: String,
    /// Columns to extract in order, when some are blocked; `None` for all.
    pub columns: Option<Vec<String>>,
}

/// A destination connector: its `kind` and how to parse its section.
pub trait DestinationKind: Send + Sync {
    /// The `kind` value that selects this destination, e.g. `local`.
    fn kind(&self) -> &'static str;
    /// Parses the section's keys (all but `kind`) with the connector's own strict struct.
    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn DestinationConfig>>;

    /// The section of one table of a pipeline: the pipeline's `[destination]` keys with the
    /// destination table set to `table`. Every built-in destination names it `table`; a kind
    /// that names it otherwise overrides this.
    fn table_settings(&self, settings: &toml::Table, table: &str) -> toml::Table {
        let mut settings = settings.clone();
        settings.insert("table".into(), toml::Value::String(table.into()));
        settings
    }
}

/// Turns spec sections into connector configs. [`Registry`] is the implementation; the trait
/// keeps coordinator and workers independent of how it is filled.
pub trait Connectors: Send + Sync {
    /// Parses a `[source]` section with the connector of its kind (pure; not yet validated).
    fn source_config(&self, section: &ConnectorSection, origin: &str) -> Result<Box<dyn SourceConfig>>;

    /// Parses a `[destination]` section with the connector of its kind (pure; not yet
    /// validated).
    fn destination_config(&self, section: &ConnectorSection, origin: &str) -> Result<Box<dyn DestinationConfig>>;

    /// The source kind of `section` (a pipeline discovers its tables and fills each job's
    /// section through it); errors name `origin` and the known kinds.
    fn source_kind_of(&self, section: &ConnectorSection, origin: &str) -> Result<&dyn SourceKind>;

    /// The destination kind of `section`; errors name `origin` and the known kinds.
    fn destination_kind_of(&self, section: &ConnectorSection, origin: &str) -> Result<&dyn DestinationKind>;

    /// The whole spec checked, purely: the job-level keys by [`JobSpec::validate`], each
    /// connector section by its kind.
    fn check(&self, spec: &JobSpec, origin: &str) -> Result<CheckedSpec> {
        let validated = spec.validate(origin)?;
        let mut source = self.source_config(&spec.source, origin)?;
        source.validate(origin)?;
        source.set_job_name(&spec.name);
        let destination = self.destination_config(&spec.destination, origin)?;
        destination.validate(origin)?;
        let mut spec = spec.clone();
        spec.source.settings = source.settings();
        spec.destination.settings = destination.settings();
        Ok(CheckedSpec {
            spec,
            validated,
            source,
            destination,
        })
    }
}

/// A spec whose job-level keys and connector sections all passed validation.
#[derive(Debug)]
pub struct CheckedSpec {
    /// The spec with each section's keys as its connector writes them (defaults filled in),
    /// so [`CheckedSpec::to_canonical_toml`] is stable however the file was written. Paths
    /// in the sections stay as written; the configs below hold the resolved ones.
    pub spec: JobSpec,
    /// Typed job-level values.
    pub validated: ValidatedSpec,
    /// The source section, parsed by its kind.
    pub source: Box<dyn SourceConfig>,
    /// The destination section, parsed by its kind.
    pub destination: Box<dyn DestinationConfig>,
}

impl CheckedSpec {
    /// Canonical TOML of the spec; the coordinator stores it and compares it on resume.
    pub fn to_canonical_toml(&self) -> String {
        self.spec.to_canonical_toml()
    }

    /// Makes every relative path (job-level and in both sections' configs) relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.spec.resolve_paths(base);
        self.source.resolve_paths(base);
        self.destination.resolve_paths(base);
    }
}

/// The connector kinds this process knows, registered one line each.
#[derive(Default)]
pub struct Registry {
    sources: Vec<Box<dyn SourceKind>>,
    destinations: Vec<Box<dyn DestinationKind>>,
}

impl Registry {
    /// An empty registry: every kind is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a source kind.
    ///
    /// # Panics
    /// When a source of the same kind is already registered (a wiring mistake).
    pub fn source(mut self, kind: impl SourceKind + 'static) -> Self {
        assert!(
            !self.sources.iter().any(|k| k.kind() == kind.kind()),
            "source kind `{}` registered twice",
            kind.kind()
        );
        self.sources.push(Box::new(kind));
        self
    }

    /// Registers a destination kind.
    ///
    /// # Panics
    /// When a destination of the same kind is already registered (a wiring mistake).
    pub fn destination(mut self, kind: impl DestinationKind + 'static) -> Self {
        assert!(
            !self.destinations.iter().any(|k| k.kind() == kind.kind()),
            "destination kind `{}` registered twice",
            kind.kind()
        );
        self.destinations.push(Box::new(kind));
        self
    }

    /// The registered source kinds, in registration order.
    pub fn source_kinds(&self) -> Vec<&'static str> {
        self.sources.iter().map(|k| k.kind()).collect()
    }

    /// The registered destination kinds, in registration order.
    pub fn destination_kinds(&self) -> Vec<&'static str> {
        self.destinations.iter().map(|k| k.kind()).collect()
    }

    /// The source kind of `section`; errors name `origin` and the known kinds.
    pub fn source_kind(&self, section: &ConnectorSection, origin: &str) -> Result<&dyn SourceKind> {
        match self.sources.iter().find(|k| k.kind() == section.kind) {
            Some(kind) => Ok(kind.as_ref()),
            None => Err(unknown_kind(origin, "source", &section.kind, &self.source_kinds())),
        }
    }

    /// The destination kind of `section`; errors name `origin` and the known kinds.
    pub fn destination_kind(&self, section: &ConnectorSection, origin: &str) -> Result<&dyn DestinationKind> {
        match self.destinations.iter().find(|k| k.kind() == section.kind) {
            Some(kind) => Ok(kind.as_ref()),
            None => Err(unknown_kind(
                origin,
                "destination",
                &section.kind,
                &self.destination_kinds(),
            )),
        }
    }
}

/// `kind` is not among `known`: the error names the known kinds.
fn unknown_kind(origin: &str, section: &str, kind: &str, known: &[&'static str]) -> Error {
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    };
    Error::config(
        origin,
        format!("{section}.kind"),
        format!("unknown {section} kind `{kind}`; this backhaul knows {known}"),
    )
}

impl Connectors for Registry {
    fn source_config(&self, section: &ConnectorSection, origin: &str) -> Result<Box<dyn SourceConfig>> {
        self.source_kind(section, origin)?.parse(&section.settings, origin)
    }

    fn destination_config(&self, section: &ConnectorSection, origin: &str) -> Result<Box<dyn DestinationConfig>> {
        self.destination_kind(section, origin)?.parse(&section.settings, origin)
    }

    fn source_kind_of(&self, section: &ConnectorSection, origin: &str) -> Result<&dyn SourceKind> {
        self.source_kind(section, origin)
    }

    fn destination_kind_of(&self, section: &ConnectorSection, origin: &str) -> Result<&dyn DestinationKind> {
        self.destination_kind(section, origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSource;

    impl SourceKind for NoSource {
        fn kind(&self) -> &'static str {
            "none"
        }
        fn parse(&self, _: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
            Err(Error::config(origin, "source", "never parses"))
        }
    }

    fn section(kind: &str) -> ConnectorSection {
        ConnectorSection {
            kind: kind.into(),
            settings: toml::Table::new(),
        }
    }

    #[test]
    fn unknown_kinds_name_the_known_ones() {
        let e = Registry::new()
            .destination_config(&section("s3"), "job.toml")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "job.toml: destination.kind: unknown destination kind `s3`; this backhaul knows none"
        );
        let registry = Registry::new().source(NoSource);
        assert_eq!(registry.source_kinds(), ["none"]);
        let e = registry
            .source_config(&section("pg"), "job.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("unknown source kind `pg`; this backhaul knows `none`"),
            "{e}"
        );
        let e = registry
            .source_config(&section("none"), "job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("never parses"), "{e}");
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_kind_registers_once() {
        let _ = Registry::new().source(NoSource).source(NoSource);
    }
}
