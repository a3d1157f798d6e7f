//! `[source] kind = "embedded"`. Every key is documented in `docs/sources/embedded.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backhaul_core::connector::Source;
use backhaul_core::registry::{SourceConfig, SourceKind};
use backhaul_core::spec::{is_valid_identifier, parse_section, resolve_path, to_settings};
use backhaul_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The embedded source's kind: `[source] kind = "embedded"`.
pub struct EmbeddedKind;

impl SourceKind for EmbeddedKind {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
        Ok(Box::new(parse_section::<EmbeddedSourceSpec>(
            settings, "source", origin,
        )?))
    }
}

/// The built-in generated `orders` table in an embedded SQLite database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSourceSpec {
    /// SQLite database file; created and seeded for the job's range when missing.
    pub path: PathBuf,
    /// Table to extract.
    #[serde(default = "default_table")]
    pub table: String,
    /// Cursor column that bounds chunks.
    pub cursor: String,
    /// Average generated rows per day at the start of 2020; volume doubles every year.
    #[serde(default = "default_rows_per_day")]
    pub rows_per_day: u64,
    /// Generator seed; the same seed always yields the same rows.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_table() -> String {
    crate::schema::ORDERS_TABLE.into()
}
fn default_rows_per_day() -> u64 {
    20_000
}
fn default_seed() -> u64 {
    42
}

impl SourceConfig for EmbeddedSourceSpec {
    fn table(&self) -> &str {
        &self.table
    }

    fn cursor(&self) -> &str {
        &self.cursor
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::config(origin, field, msg));
        if self.path.as_os_str().is_empty() {
            return err("source.path", "must not be empty".into());
        }
        if !is_valid_identifier(&self.table) {
            return err("source.table", format!("`{}` is not a valid table name", self.table));
        }
        if !is_valid_identifier(&self.cursor) {
            return err("source.cursor", format!("`{}` is not a valid column name", self.cursor));
        }
        if self.rows_per_day == 0 {
            return err("source.rows_per_day", "must be at least 1".into());
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        resolve_path(&mut self.path, base);
    }

    fn settings(&self) -> toml::Table {
        to_settings(self)
    }

    fn build(&self) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(crate::EmbeddedSource::open(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Box<dyn SourceConfig>> {
        EmbeddedKind.parse(&toml::from_str(text).unwrap(), "job.toml")
    }

    #[test]
    fn defaults_fill_in_and_errors_name_the_key() {
        let s = parse("path = \"src.db\"\ncursor = \"created_at\"").unwrap();
        s.validate("job.toml").unwrap();
        assert_eq!(s.table(), "orders");
        assert_eq!(s.settings()["seed"].as_integer(), Some(42));
        let e = parse("path = \"src.db\"\ncursr = \"created_at\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("job.toml: source.cursr: unknown field"), "{e}");
        let s = parse("path = \"src.db\"\ncursor = \"created_at\"\nrows_per_day = 0").unwrap();
        let e = s.validate("job.toml").unwrap_err().to_string();
        assert!(e.starts_with("job.toml: source.rows_per_day:"), "{e}");
    }
}
