//! `[source] kind = "airbyte"`. Every key is documented in `docs/sources/airbyte.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backhaul_core::connector::Source;
use backhaul_core::registry::{SourceConfig, SourceKind};
use backhaul_core::spec::{parse_section, resolve_path, to_settings};
use backhaul_core::units::Span;
use backhaul_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The Airbyte source's kind: `[source] kind = "airbyte"`.
pub struct AirbyteKind;

impl SourceKind for AirbyteKind {
    fn kind(&self) -> &'static str {
        "airbyte"
    }

    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
        Ok(Box::new(parse_section::<AirbyteSourceSpec>(
            settings, "source", origin,
        )?))
    }
}

/// One stream of an Airbyte source connector run as a local command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirbyteSourceSpec {
    /// The connector's argv, e.g. `["/opt/venv/bin/source-faker"]`; a relative program path
    /// with a `/` resolves against the spec's directory, a bare name is looked up in `PATH`.
    pub command: Vec<String>,
    /// The stream to read; a job is one stream.
    pub stream: String,
    /// The top-level record field that bounds chunks (a date-time or date column).
    pub cursor_field: String,
    /// Overrides the stream's `source_defined_primary_key` (top-level fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Vec<String>>,
    /// The connector's JSON config, written inline as a TOML table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
    /// A JSON file holding the connector's config (instead of `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// Config keys whose values come from environment variables at build time:
    /// `{ api_key = "STRIPE_KEY" }`. Dotted keys (`credentials.token`) set nested values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_env: BTreeMap<String, String>,
    /// Renders each chunk's window into the connector's config; without it the stream runs as
    /// one chunk checkpointed by its STATE messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
    /// Where checkpoints of un-windowed streams are kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Longest one connector command may run, e.g. `2h`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Records a day the planner assumes (connectors report no statistics).
    #[serde(default = "default_records_per_day")]
    pub estimated_records_per_day: u64,
    /// Bytes a record the planner assumes.
    #[serde(default = "default_bytes_per_record")]
    pub estimated_bytes_per_record: u64,
}

/// How a chunk's `[from, to)` is written into the connector's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Config key of the window start, e.g. `start_date`.
    pub start_key: String,
    /// Config key of the window end, e.g. `end_date`.
    pub end_key: String,
    /// How both are written.
    #[serde(default)]
    pub format: WindowFormat,
}

/// The text form of window bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowFormat {
    /// `2024-01-01T00:00:00Z` (microseconds when the bound has them).
    #[default]
    Rfc3339,
    /// `2024-01-01`: the start rounded down, the end up, to whole days (records are still
    /// kept only inside the exact window).
    Date,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("airbyte-state")
}
fn default_timeout() -> String {
    "6h".into()
}
fn default_records_per_day() -> u64 {
    10_000
}
fn default_bytes_per_record() -> u64 {
    500
}

impl AirbyteSourceSpec {
    /// The parsed `timeout` (validated).
    pub fn timeout(&self) -> Duration {
        Span::parse(&self.timeout)
            .map(|s| Duration::from_micros(s.micros as u64))
            .unwrap_or(Duration::from_secs(6 * 3600))
    }
}

/// Dotted config keys must name object members, never be empty.
fn valid_config_key(key: &str) -> bool {
    !key.is_empty() && key.split('.').all(|part| !part.is_empty())
}

impl SourceConfig for AirbyteSourceSpec {
    fn table(&self) -> &str {
        &self.stream
    }

    fn cursor(&self) -> &str {
        &self.cursor_field
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::config(origin, field, msg));
        match self.command.first() {
            None => return err("source.command", "must name the connector's program".into()),
            Some(p) if p.is_empty() => return err("source.command[0]", "must not be empty".into()),
            _ => {}
        }
        if self.stream.is_empty() {
            return err(
                "source.stream",
                "must name one stream of the connector's catalog".into(),
            );
        }
        if self.cursor_field.is_empty() {
            return err(
                "source.cursor_field",
                "must name a top-level field of the stream".into(),
            );
        }
        if let Some(keys) = &self.primary_key {
            if keys.is_empty() {
                return err(
                    "source.primary_key",
                    "must list at least one field (or be left out)".into(),
                );
            }
            if let Some(i) = keys.iter().position(|k| k.is_empty()) {
                return err(&format!("source.primary_key[{i}]"), "must not be empty".into());
            }
        }
        match (&self.config, &self.config_file) {
            (Some(_), Some(_)) => {
                return err(
                    "source.config_file",
                    "give either `config` or `config_file`, not both".into(),
                );
            }
            (None, Some(p)) if p.as_os_str().is_empty() => {
                return err("source.config_file", "must not be empty".into());
            }
            _ => {}
        }
        for (key, var) in &self.config_env {
            let field = format!("source.config_env.{key}");
            if !valid_config_key(key) {
                return err(
                    &field,
                    format!("`{key}` is not a config key; write e.g. `api_key` or `credentials.token`"),
                );
            }
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return err(&field, format!("`{var}` is not an environment variable name"));
            }
        }
        if let Some(w) = &self.window {
            for (field, key) in [
                ("source.window.start_key", &w.start_key),
                ("source.window.end_key", &w.end_key),
            ] {
                if !valid_config_key(key) {
                    return err(field, format!("`{key}` is not a config key"));
                }
            }
            if w.start_key == w.end_key {
                return err("source.window.end_key", "must differ from `start_key`".into());
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            return err("source.state_dir", "must not be empty".into());
        }
        if let Err(m) = Span::parse(&self.timeout) {
            return err("source.timeout", m);
        }
        if self.estimated_records_per_day == 0 {
            return err("source.estimated_records_per_day", "must be at least 1".into());
        }
        if self.estimated_bytes_per_record == 0 {
            return err("source.estimated_bytes_per_record", "must be at least 1".into());
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(program) = self.command.first_mut()
            && program.contains('/')
        {
            let mut path = PathBuf::from(&*program);
            resolve_path(&mut path, base);
            *program = path.to_string_lossy().into_owned();
        }
        if let Some(file) = &mut self.config_file {
            resolve_path(file, base);
        }
        resolve_path(&mut self.state_dir, base);
    }

    fn settings(&self) -> toml::Table {
        to_settings(self)
    }

    fn build(&self) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(crate::AirbyteSource::open(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Box<dyn SourceConfig>> {
        AirbyteKind.parse(&toml::from_str(text).unwrap(), "job.toml")
    }

    const MIN: &str = "command = [\"source-faker\"]\nstream = \"users\"\ncursor_field = \"updated_at\"\n";

    fn refused(extra: &str) -> String {
        match parse(&format!("{MIN}{extra}")) {
            Ok(s) => s.validate("job.toml").unwrap_err().to_string(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_fill_in_and_errors_name_the_key() {
        let s = parse(MIN).unwrap();
        s.validate("job.toml").unwrap();
        assert_eq!(s.table(), "users");
        assert_eq!(s.cursor(), "updated_at");
        assert_eq!(s.settings()["timeout"].as_str(), Some("6h"));

        let e = refused("colour = 1\n");
        assert!(e.starts_with("job.toml: source.colour: unknown field"), "{e}");
        parse(&format!("{MIN}[config]\ncount = 1\n"))
            .unwrap()
            .validate("job.toml")
            .unwrap();
        let e = refused("config_file = \"c.json\"\n[config]\ncount = 1\n");
        assert!(e.starts_with("job.toml: source.config_file: give either"), "{e}");
        let e = refused("timeout = \"soon\"\n");
        assert!(e.starts_with("job.toml: source.timeout:"), "{e}");
        let e = refused("config_env = { \"a..b\" = \"X\" }\n");
        assert!(e.starts_with("job.toml: source.config_env.a..b:"), "{e}");
        let e = refused("window = { start_key = \"d\", end_key = \"d\" }\n");
        assert!(e.starts_with("job.toml: source.window.end_key: must differ"), "{e}");
        let e = refused("window = { start_key = \"s\", end_key = \"e\", format = \"unix\" }\n");
        assert!(e.starts_with("job.toml: source.window.format:"), "{e}");
        let e = refused("primary_key = []\n");
        assert!(e.starts_with("job.toml: source.primary_key: must list"), "{e}");
        let e = refused("estimated_records_per_day = 0\n");
        assert!(e.starts_with("job.toml: source.estimated_records_per_day:"), "{e}");
        let e = parse("command = []\nstream = \"users\"\ncursor_field = \"updated_at\"\n")
            .unwrap()
            .validate("job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("job.toml: source.command: must name"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_spec_dir() {
        let text = format!("{MIN}config_file = \"conf/faker.json\"\n").replace("source-faker", "venv/bin/source-faker");
        let mut s = parse(&text).unwrap();
        s.resolve_paths(Path::new("/jobs"));
        let settings = s.settings();
        assert_eq!(settings["command"][0].as_str(), Some("/jobs/venv/bin/source-faker"));
        assert_eq!(settings["config_file"].as_str(), Some("/jobs/conf/faker.json"));
        assert_eq!(settings["state_dir"].as_str(), Some("/jobs/airbyte-state"));
        // A bare program name stays for PATH lookup.
        let mut s = parse(MIN).unwrap();
        s.resolve_paths(Path::new("/jobs"));
        assert_eq!(s.settings()["command"][0].as_str(), Some("source-faker"));
    }
}
