//! `[destination] kind = "local"`. Every key is documented in `docs/destinations/local.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backhaul_core::connector::Destination;
use backhaul_core::registry::{
    DEFAULT_FILE_SIZE, DestinationConfig, DestinationKind, FileSizeRange, StagingPreferences,
};
use backhaul_core::spec::{ByteSizeText, is_valid_identifier, parse_section, resolve_path, to_settings};
use backhaul_core::units::MIB;
use backhaul_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Smallest target file size accepted without `allow_small_files`.
pub const MIN_FILE_SIZE: u64 = 128 * MIB;
/// Largest target file size accepted.
pub const MAX_FILE_SIZE: u64 = 1024 * MIB;
/// What `file_size` accepts.
const FILE_SIZES: FileSizeRange = FileSizeRange {
    default: DEFAULT_FILE_SIZE,
    min: MIN_FILE_SIZE,
    max: MAX_FILE_SIZE,
    min_reason: "the 128MiB minimum",
};

/// The local warehouse's kind: `[destination] kind = "local"`.
pub struct LocalKind;

impl DestinationKind for LocalKind {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn DestinationConfig>> {
        Ok(Box::new(parse_section::<LocalDestinationSpec>(
            settings,
            "destination",
            origin,
        )?))
    }
}

/// A local Parquet warehouse directory, queryable with `backhaul query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalDestinationSpec {
    /// Warehouse root directory; each table is a sub-directory.
    pub path: PathBuf,
    /// Destination table name.
    pub table: String,
    /// Target Parquet file size; files roll over at this size. Default 256MiB.
    #[serde(default)]
    pub file_size: Option<ByteSizeText>,
    /// Allow `file_size` below 128MiB. Meant for tests and demos only.
    #[serde(default)]
    pub allow_small_files: bool,
}

impl LocalDestinationSpec {
    /// The target file size in bytes, checked against the allowed range.
    fn file_size(&self, origin: &str) -> Result<u64> {
        FILE_SIZES.check(self.file_size.as_ref(), self.allow_small_files, origin)
    }
}

impl DestinationConfig for LocalDestinationSpec {
    fn table(&self) -> &str {
        &self.table
    }

    fn validate(&self, origin: &str) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::config(origin, "destination.path", "must not be empty"));
        }
        if !is_valid_identifier(&self.table) {
            return Err(Error::config(
                origin,
                "destination.table",
                format!("`{}` is not a valid table name", self.table),
            ));
        }
        self.file_size(origin).map(|_| ())
    }

    fn staging(&self) -> StagingPreferences {
        StagingPreferences {
            // Validation refused a bad size before anyone stages files.
            file_size: self.file_size("<spec>").unwrap_or(DEFAULT_FILE_SIZE),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        resolve_path(&mut self.path, base);
    }

    fn settings(&self) -> toml::Table {
        to_settings(self)
    }

    fn build(&self) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(crate::LocalTable::new(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Box<dyn DestinationConfig>> {
        let text = format!("path = \"wh\"\ntable = \"orders\"\n{extra}");
        LocalKind.parse(&toml::from_str(&text).unwrap(), "job.toml")
    }

    fn field_of(extra: &str) -> String {
        match parse(extra).and_then(|d| d.validate("job.toml")).unwrap_err() {
            Error::Config { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn file_size_defaults_and_bounds() {
        let d = parse("").unwrap();
        d.validate("job.toml").unwrap();
        assert_eq!(d.staging().file_size, DEFAULT_FILE_SIZE);
        let d = parse("file_size = \"1MiB\"\nallow_small_files = true").unwrap();
        d.validate("job.toml").unwrap();
        assert_eq!(d.staging().file_size, MIB);
        let e = parse("file_size = \"1MiB\"")
            .unwrap()
            .validate("job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("destination.file_size") && e.contains("128MiB"), "{e}");
        assert_eq!(field_of("file_size = \"2GiB\""), "destination.file_size");
        assert_eq!(
            field_of("file_size = \"0B\"\nallow_small_files = true"),
            "destination.file_size"
        );
        assert_eq!(field_of("file_size = \"lots\""), "destination.file_size");
        assert_eq!(field_of("colour = 1"), "destination.colour");
    }
}
