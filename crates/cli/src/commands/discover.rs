//! `backhaul discover`: list a database source's tables with their columns, primary keys and
//! cursor candidates, and write a pipeline spec for the user to edit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use backhaul_core::discover::{CandidateRole, Catalog, DiscoveredTable};
use backhaul_core::spec::{ConnectorSection, is_valid_name};
use clap::Args;

use super::common::spec_origin;
use crate::connectors::builtin_connectors;
use crate::{Globals, OutputFormat, output};

/// Arguments of `discover`.
#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// A TOML file whose `[source]` section is a database connection (no table), e.g. a
    /// pipeline spec.
    source: PathBuf,
    /// The schema (PostgreSQL, default `public`) or database (MySQL, default the connection's).
    #[arg(long)]
    schema: Option<String>,
    /// Write a pipeline spec of every table to this file (refused if it exists).
    #[arg(long, value_name = "PIPELINE_TOML")]
    write: Option<PathBuf>,
    /// The written pipeline's name; default the schema's name.
    #[arg(long, requires = "write")]
    name: Option<String>,
}

/// Reads the catalog and prints it; writes the pipeline when asked.
pub async fn run(globals: &Globals, args: DiscoverArgs) -> Result<u8> {
    let (origin, base) = spec_origin(&args.source)?;
    let text = std::fs::read_to_string(&args.source).with_context(|| format!("reading {origin}"))?;
    let document: toml::Table = toml::from_str(&text).map_err(|e| anyhow!("{origin}: {}", e.message().trim()))?;
    let section: ConnectorSection = match document.get("source") {
        Some(value) => value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| anyhow!("{origin}: source: {}", e.message().trim()))?,
        None => {
            return Err(anyhow!(
                "{origin}: source: missing; discover reads the [source] section"
            ));
        }
    };
    let registry = builtin_connectors();
    let kind = registry.source_kind(&section, &origin)?;
    let catalog = kind
        .discover(&section.settings, &origin, &base, args.schema.as_deref())
        .await?;
    match globals.output {
        OutputFormat::Json => output::print_json(&serde_json::to_value(&catalog)?),
        OutputFormat::Text => print!("{}", catalog_text(&catalog)),
    }
    if let Some(path) = &args.write {
        let name = args.name.clone().unwrap_or_else(|| default_name(&catalog.schema));
        if !is_valid_name(&name) {
            return Err(anyhow!(
                "--name: `{name}` is not a valid pipeline name: use lower-case letters, digits, `-` or `_`"
            ));
        }
        write_new(path, &pipeline_toml(&name, &origin, &document, &section, &catalog)?)?;
        eprintln!(
            "wrote {} with {} tables: check each table's cursor, sync_mode and blocked_columns before running it",
            path.display(),
            catalog.tables.len()
        );
    }
    Ok(0)
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn default_name(schema: &str) -> String {
    let name: String = schema
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    if is_valid_name(&name) { name } else { "pipeline".into() }
}

/// The catalog for people.
fn catalog_text(catalog: &Catalog) -> String {
    let mut out = format!("{}: {} tables\n", catalog.schema, catalog.tables.len());
    for t in &catalog.tables {
        let key = if t.primary_key.is_empty() {
            "no primary key".to_string()
        } else {
            format!("primary key ({})", t.primary_key.join(", "))
        };
        let _ = writeln!(out, "\n{}  {key}", t.table);
        let candidates: Vec<String> = t
            .cursor_candidates
            .iter()
            .map(|c| format!("{} ({})", c.column, c.role.describe()))
            .collect();
        let _ = writeln!(
            out,
            "  cursor candidates: {}",
            if candidates.is_empty() {
                "none".to_string()
            } else {
                candidates.join(", ")
            }
        );
        for c in &t.columns {
            let _ = writeln!(
                out,
                "    {:<32} {}{}",
                c.name,
                c.source_type,
                if c.nullable { "" } else { " not null" }
            );
        }
    }
    out
}

/// What discover proposes for a table: its cursor and sync mode, and why.
struct Proposal<'a> {
    cursor: &'a str,
    role: CandidateRole,
    mode: &'static str,
}

fn propose(t: &DiscoveredTable) -> Option<Proposal<'_>> {
    // An integer key needs an integer range, which the shared time range is not.
    let best = t
        .cursor_candidates
        .iter()
        .find(|c| c.role != CandidateRole::IntegerKey)?;
    let mode = if best.role == CandidateRole::UpdatedAt && !t.primary_key.is_empty() {
        "dedup"
    } else {
        "append"
    };
    Some(Proposal {
        cursor: &best.column,
        role: best.role,
        mode,
    })
}

/// The integer range discover writes for a `full_refresh` table keyed by an integer: every
/// key a table of a few rows plausibly has, far from overflowing the planner's arithmetic.
const FULL_REFRESH_KEY_FROM: &str = "-1000000000000000000";
const FULL_REFRESH_KEY_TO: &str = "1000000000000000000";

/// A pipeline spec of every table, with comments saying what to check.
fn pipeline_toml(
    name: &str,
    origin: &str,
    document: &toml::Table,
    source: &ConnectorSection,
    catalog: &Catalog,
) -> Result<String> {
    let section = |key: &str, default: &str| -> Result<String> {
        match document.get(key) {
            Some(value) => {
                let mut table = toml::Table::new();
                table.insert(key.into(), value.clone());
                Ok(toml::to_string(&table)?)
            }
            None => Ok(default.to_string()),
        }
    };
    let mut source_table = toml::Table::new();
    source_table.insert("source".into(), toml::Value::try_from(source)?);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Pipeline written by `backhaul discover` from {origin} (schema `{}`, {} tables).\n\
         # Check before running it (docs/pipelines.md):\n\
         # - each table's `cursor`: a column every insert (and, for dedup, every update) sets to\n\
         #   the current time; discover ranked last-modified times first, then creation times;\n\
         # - `sync_mode`: \"dedup\" keeps the newest version of each primary key (tables whose rows\n\
         #   change), \"append\" loads each row once (insert-only tables), \"full_refresh\" reads the\n\
         #   whole table again on every sync and swaps it in (small tables without a time cursor);\n\
         # - `blocked_columns`: columns that must not leave the source (personal data, secrets);\n\
         # - [range] from: the oldest rows to load; [stage] and [destination]: where rows go.\n",
        catalog.schema,
        catalog.tables.len()
    );
    let _ = writeln!(
        out,
        "version = 1\n\n[pipeline]\nname = \"{name}\"\n# Source connections open at once, across all tables.\nmax_source_connections = 4\n"
    );
    out.push_str(&toml::to_string(&source_table)?);
    out.push('\n');
    out.push_str(&section(
        "range",
        "[range]\nfrom = \"2020-01-01\"  # CHECK: the oldest rows to load\nto = \"now\"\n",
    )?);
    out.push('\n');
    if document.contains_key("chunking") {
        out.push_str(&section("chunking", "")?);
        out.push('\n');
    }
    out.push_str(&section("stage", "[stage]\npath = \"stage\"\n")?);
    out.push('\n');
    out.push_str(&section(
        "destination",
        "[destination]\nkind = \"local\"\npath = \"warehouse\"\n",
    )?);
    out.push('\n');
    out.push_str(&section(
        "sync",
        "[sync]\nmode = \"append\"  # each table below sets its own sync_mode\nlag = \"5m\"\n",
    )?);
    for t in &catalog.tables {
        out.push('\n');
        let others: Vec<&str> = t.cursor_candidates.iter().skip(1).map(|c| c.column.as_str()).collect();
        match propose(t) {
            Some(p) => {
                let _ = writeln!(out, "[[tables]]\ntable = {}", toml_string(&t.table));
                let mut cursor_note = p.role.describe().to_string();
                if !others.is_empty() {
                    let _ = write!(cursor_note, "; other candidates: {}", others.join(", "));
                }
                let _ = writeln!(out, "cursor = {}  # {cursor_note}", toml_string(p.cursor));
                let key_note = if t.primary_key.is_empty() {
                    "no primary key: dedup would need `primary_key = [...]`".to_string()
                } else {
                    format!("primary key ({})", t.primary_key.join(", "))
                };
                let _ = writeln!(out, "sync_mode = \"{}\"  # {key_note}", p.mode);
                let _ = writeln!(out, "# blocked_columns = []");
            }
            None if t.cursor_candidates.iter().any(|c| c.role == CandidateRole::IntegerKey) => {
                // No time cursor to follow changes by: refresh the whole table on every sync,
                // chunked by nothing, bounded by its integer key.
                let key = t
                    .cursor_candidates
                    .iter()
                    .find(|c| c.role == CandidateRole::IntegerKey)
                    .map(|c| c.column.as_str())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "# {}: no date or timestamp column to follow changes by: each sync reads the whole table\n\
                     # again and swaps it in (small tables only). The integer key bounds what is read.\n\
                     [[tables]]\ntable = {}\ncursor = {}  # {}\nsync_mode = \"full_refresh\"\n# blocked_columns = []\n\
                     [tables.range]  # CHECK: every key lies in it\nfrom = \"{FULL_REFRESH_KEY_FROM}\"\nto = \"{FULL_REFRESH_KEY_TO}\"",
                    t.table,
                    toml_string(&t.table),
                    toml_string(key),
                    CandidateRole::IntegerKey.describe(),
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "# {}: no date or timestamp column to be a time cursor{}. To load it, give it a cursor\n\
                     # and, for an integer cursor, its own integer range ([tables.range] from/to).\n\
                     # [[tables]]\n# table = {}\n# cursor = \"...\"",
                    t.table,
                    if t.cursor_candidates.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (candidates: {})",
                            t.cursor_candidates
                                .iter()
                                .map(|c| c.column.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    toml_string(&t.table)
                );
            }
        }
    }
    Ok(out)
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.into()).to_string()
}
