//! `[sync]`: how a job keeps loading after its backfill (docs/pipelines.md).
//!
//! A job with a `[sync]` section can be extended by `backhaul sync`: its range grows from the
//! high-water mark (the end of the last planned range) to `now − lag`, and in `dedup` mode a
//! lookback chunk re-reads `[mark − lookback, mark)` for rows that arrived late.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::units::Span;

/// `lag` when the spec does not say: rows younger than this may still be in flight.
pub const DEFAULT_LAG: &str = "5m";
/// `lookback` when the spec does not say.
pub const DEFAULT_LOOKBACK: &str = "1h";

/// How synced rows land at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Insert-only tables, by a creation cursor: each row is loaded once, with its chunk.
    Append,
    /// Mutable tables, by an `updated_at`-like cursor: the destination keeps exactly the newest
    /// version (by cursor) of each primary key.
    Dedup,
    /// Small tables without a usable incremental cursor: every sync reads the whole range
    /// again as one chunk, a new *version* of the table, which replaces the previous version
    /// atomically once it is committed (docs/pipelines.md#full-refresh).
    FullRefresh,
}

impl SyncMode {
    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Append => "append",
            SyncMode::Dedup => "dedup",
            SyncMode::FullRefresh => "full_refresh",
        }
    }

    /// Whether each chunk of the mode is a whole new version of the table: then the table is
    /// exactly its newest committed chunk, and earlier chunks are superseded.
    pub fn replaces_table(self) -> bool {
        self == SyncMode::FullRefresh
    }
}

/// `sync.deletes`: what happens to rows deleted at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// Deleted rows stay at the destination as they were (the default).
    #[default]
    Off,
    /// After each sync, keys deleted at the source are detected (`backhaul_core::deletes`) and
    /// flagged `_backhaul_deleted = true` at the destination.
    Soft,
}

/// `[sync]` as written. Optional keys stay absent when not written, so the canonical spec of a
/// job does not change when defaults do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    /// `append`, `dedup` or `full_refresh`.
    pub mode: SyncMode,
    /// How far behind now a sync stops when `range.to = "now"`; default [`DEFAULT_LAG`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<String>,
    /// How far before the mark a `dedup` sync re-reads; default [`DEFAULT_LOOKBACK`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
    /// Key columns for `dedup`, when the source declares none (or to override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Vec<String>>,
    /// Hard-delete detection (`dedup` mode); default off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<DeleteMode>,
    /// Whether the destination shows `_backhaul_deleted` and `_backhaul_synced_at`; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_columns: Option<bool>,
}

/// `[sync]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPolicy {
    /// The mode.
    pub mode: SyncMode,
    /// Lag behind now.
    pub lag: Span,
    /// Lookback before the mark (used in `dedup` mode only).
    pub lookback: Span,
    /// Key columns the spec names; empty means "the source's primary key".
    pub primary_key: Vec<String>,
    /// Hard-delete detection.
    pub deletes: DeleteMode,
    /// `_backhaul_deleted` / `_backhaul_synced_at` at the destination.
    pub metadata_columns: bool,
}

impl SyncPolicy {
    /// The key columns a `dedup` job uses: the spec's, else the source's `key_columns`. Errors
    /// name the table and the key when there is none.
    pub fn key_columns(&self, origin: &str, table: &str, source_keys: &[String]) -> Result<Vec<String>> {
        let keys = if self.primary_key.is_empty() {
            source_keys.to_vec()
        } else {
            self.primary_key.clone()
        };
        if keys.is_empty() && self.mode == SyncMode::Dedup {
            return Err(Error::config(
                origin,
                "sync.primary_key",
                format!(
                    "table `{table}` has no primary key, and dedup mode needs one: declare a primary key on the table or set sync.primary_key"
                ),
            ));
        }
        Ok(keys)
    }
}

impl SyncSpec {
    /// Pure validation; errors name `origin` and the dotted key.
    pub fn validate(&self, origin: &str) -> Result<SyncPolicy> {
        let span = |value: &Option<String>, default: &str, key: &str| {
            Span::parse(value.as_deref().unwrap_or(default)).map_err(|m| Error::config(origin, key, m))
        };
        let lag = span(&self.lag, DEFAULT_LAG, "sync.lag")?;
        let lookback = span(&self.lookback, DEFAULT_LOOKBACK, "sync.lookback")?;
        if self.mode == SyncMode::FullRefresh && self.lookback.is_some() {
            return Err(Error::config(
                origin,
                "sync.lookback",
                "full_refresh re-reads the whole range on every sync, so there is nothing to look back for; remove lookback",
            ));
        }
        if self.mode == SyncMode::Append && self.lookback.is_some() {
            return Err(Error::config(
                origin,
                "sync.lookback",
                "append mode never re-reads a committed range (that would load its rows twice); lookback needs mode = \"dedup\"",
            ));
        }
        let primary_key = self.primary_key.clone().unwrap_or_default();
        if self.primary_key.is_some() && primary_key.is_empty() {
            return Err(Error::config(origin, "sync.primary_key", "name at least one column"));
        }
        if let Some(bad) = primary_key.iter().find(|c| !super::is_valid_identifier(c)) {
            return Err(Error::config(
                origin,
                "sync.primary_key",
                format!("`{bad}` is not a plain column name"),
            ));
        }
        let deletes = self.deletes.unwrap_or_default();
        let metadata_columns = self.metadata_columns.unwrap_or(false);
        if deletes == DeleteMode::Soft && self.mode != SyncMode::Dedup {
            return Err(Error::config(
                origin,
                "sync.deletes",
                "delete detection compares the keys of the newest versions, which only mode = \"dedup\" keeps",
            ));
        }
        if metadata_columns && self.mode == SyncMode::FullRefresh {
            return Err(Error::config(
                origin,
                "sync.metadata_columns",
                "the metadata columns are built for mode = \"dedup\" and \"append\" only, so far",
            ));
        }
        if deletes == DeleteMode::Soft && !metadata_columns {
            return Err(Error::config(
                origin,
                "sync.deletes",
                "soft deletes are shown in the `_backhaul_deleted` column: set sync.metadata_columns = true",
            ));
        }
        Ok(SyncPolicy {
            mode: self.mode,
            lag,
            lookback,
            primary_key,
            deletes,
            metadata_columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SyncSpec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_apply_and_stay_out_of_the_canonical_form() {
        let spec = parse("mode = \"dedup\"");
        let policy = spec.validate("job.toml").unwrap();
        assert_eq!(policy.lag, Span::parse("5m").unwrap());
        assert_eq!(policy.lookback, Span::parse("1h").unwrap());
        assert_eq!(toml::to_string(&spec).unwrap().trim(), "mode = \"dedup\"");
    }

    #[test]
    fn bad_keys_name_file_and_key() {
        let e = parse("mode = \"dedup\"\nlag = \"soon\"")
            .validate("job.toml")
            .unwrap_err();
        assert!(e.to_string().starts_with("job.toml: sync.lag:"), "{e}");
        let e = parse("mode = \"append\"\nlookback = \"1h\"")
            .validate("job.toml")
            .unwrap_err();
        assert!(e.to_string().starts_with("job.toml: sync.lookback:"), "{e}");
        let e = parse("mode = \"dedup\"\nprimary_key = []")
            .validate("job.toml")
            .unwrap_err();
        assert!(e.to_string().starts_with("job.toml: sync.primary_key:"), "{e}");
        assert!(toml::from_str::<SyncSpec>("mode = \"merge\"").is_err());
        assert!(toml::from_str::<SyncSpec>("mode = \"dedup\"\nextra = 1").is_err());
    }

    #[test]
    fn deletes_need_dedup_and_the_metadata_columns() {
        let e = parse("mode = \"append\"\ndeletes = \"soft\"\nmetadata_columns = true")
            .validate("job.toml")
            .unwrap_err();
        assert!(e.to_string().starts_with("job.toml: sync.deletes:"), "{e}");
        let e = parse("mode = \"dedup\"\ndeletes = \"soft\"")
            .validate("job.toml")
            .unwrap_err();
        assert!(
            e.to_string().starts_with("job.toml: sync.deletes:") && e.to_string().contains("metadata_columns"),
            "{e}"
        );
        // Append mode shows the metadata columns too (`_backhaul_deleted` stays false there).
        let append = parse("mode = \"append\"\nmetadata_columns = true")
            .validate("job.toml")
            .unwrap();
        assert!(append.metadata_columns);
        let ok = parse("mode = \"dedup\"\ndeletes = \"soft\"\nmetadata_columns = true")
            .validate("job.toml")
            .unwrap();
        assert_eq!((ok.deletes, ok.metadata_columns), (DeleteMode::Soft, true));
        assert!(toml::from_str::<SyncSpec>("mode = \"dedup\"\ndeletes = \"hard\"").is_err());
    }

    #[test]
    fn full_refresh_refuses_lookback_deletes_and_metadata_columns_naming_the_key() {
        let ok = parse("mode = \"full_refresh\"").validate("job.toml").unwrap();
        assert!(ok.mode.replaces_table() && !SyncMode::Dedup.replaces_table());
        assert_eq!(ok.mode.as_str(), "full_refresh");
        for (extra, key) in [
            ("lookback = \"1h\"", "sync.lookback"),
            ("deletes = \"soft\"\nmetadata_columns = true", "sync.deletes"),
            ("metadata_columns = true", "sync.metadata_columns"),
        ] {
            let e = parse(&format!("mode = \"full_refresh\"\n{extra}"))
                .validate("job.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("job.toml: {key}:")), "{e}");
        }
        // No key needed: a refresh replaces every row, whatever its key.
        assert!(ok.key_columns("j", "t", &[]).unwrap().is_empty());
    }

    #[test]
    fn dedup_without_any_key_names_table_and_key() {
        let policy = parse("mode = \"dedup\"").validate("job.toml").unwrap();
        let e = policy
            .key_columns("job.toml", "public.events", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sync.primary_key") && e.contains("public.events"), "{e}");
        assert_eq!(policy.key_columns("j", "t", &["id".into()]).unwrap(), ["id"]);
        let append = parse("mode = \"append\"").validate("job.toml").unwrap();
        assert!(append.key_columns("j", "t", &[]).unwrap().is_empty());
    }
}
