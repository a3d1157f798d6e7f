//! What `backhaul discover` finds in a database source: its tables, their columns, primary keys
//! and candidate cursor columns, ranked by one rule for every source kind
//! ([`rank_cursor_candidates`]).
//!
//! A source kind reads its catalog ([`crate::registry::SourceKind::discover`]) and fills in
//! [`DiscoveredTable`]s with each column's [`CursorKind`] (when the column could bound chunks);
//! the ranking and the glob patterns of pipeline specs live here.

use serde::Serialize;

use crate::cursor::CursorKind;

/// The tables of one schema (PostgreSQL) or database (MySQL).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Catalog {
    /// The schema or database read.
    pub schema: String,
    /// Its tables, by name.
    pub tables: Vec<DiscoveredTable>,
}

/// One column of a catalog query's answer, rows of a table next to each other in column order.
#[derive(Debug, Clone)]
pub struct CatalogRow {
    /// The table's unqualified name.
    pub table: String,
    /// The column.
    pub column: DiscoveredColumn,
    /// Its place in the primary key (from 1), if it is part of it.
    pub key_position: Option<u64>,
}

impl Catalog {
    /// Groups a catalog query's rows into tables; `spec_name` turns an unqualified table name
    /// into what the source's `table` key takes.
    pub fn from_rows(
        schema: &str,
        rows: impl IntoIterator<Item = CatalogRow>,
        spec_name: impl Fn(&str) -> String,
    ) -> Catalog {
        let mut tables: Vec<DiscoveredTable> = Vec::new();
        let mut columns: Vec<DiscoveredColumn> = Vec::new();
        let mut key: Vec<(u64, String)> = Vec::new();
        let mut current: Option<String> = None;
        let mut finish = |name: String, columns: &mut Vec<DiscoveredColumn>, key: &mut Vec<(u64, String)>| {
            key.sort();
            let primary_key = key.drain(..).map(|(_, c)| c).collect();
            tables.push(DiscoveredTable::new(
                spec_name(&name),
                name,
                std::mem::take(columns),
                primary_key,
            ));
        };
        for row in rows {
            if current.as_ref().is_some_and(|name| *name != row.table)
                && let Some(name) = current.take()
            {
                finish(name, &mut columns, &mut key);
            }
            current.get_or_insert(row.table);
            if let Some(position) = row.key_position {
                key.push((position, row.column.name.clone()));
            }
            columns.push(row.column);
        }
        if let Some(name) = current {
            finish(name, &mut columns, &mut key);
        }
        Catalog {
            schema: schema.to_string(),
            tables,
        }
    }

    /// The table named `name`, as a spec's `table` key or unqualified.
    pub fn table(&self, name: &str) -> Option<&DiscoveredTable> {
        self.tables.iter().find(|t| t.table == name || t.name == name)
    }
}

/// One table as discovered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveredTable {
    /// The table as the source's `table` key takes it (e.g. `public.orders`).
    pub table: String,
    /// The unqualified name (`orders`), which names the table's job in a pipeline.
    pub name: String,
    /// Columns in table order.
    pub columns: Vec<DiscoveredColumn>,
    /// Primary key columns in key order; empty when the table declares none.
    pub primary_key: Vec<String>,
    /// Columns that could be the cursor, best first.
    pub cursor_candidates: Vec<CursorCandidate>,
}

impl DiscoveredTable {
    /// A table with its cursor candidates ranked from its columns and key.
    pub fn new(table: String, name: String, columns: Vec<DiscoveredColumn>, primary_key: Vec<String>) -> Self {
        let cursor_candidates = rank_cursor_candidates(&columns, &primary_key);
        DiscoveredTable {
            table,
            name,
            columns,
            primary_key,
            cursor_candidates,
        }
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&DiscoveredColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// One column as discovered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveredColumn {
    /// Column name.
    pub name: String,
    /// Type as the source declares it, e.g. `timestamp with time zone`.
    pub source_type: String,
    /// Whether NULLs are allowed.
    pub nullable: bool,
    /// The cursor this column could be, if its type can bound chunks.
    #[serde(serialize_with = "serialize_kind")]
    pub cursor_kind: Option<CursorKind>,
}

fn serialize_kind<S: serde::Serializer>(kind: &Option<CursorKind>, s: S) -> Result<S::Ok, S::Error> {
    match kind {
        Some(k) => s.serialize_some(k.as_str()),
        None => s.serialize_none(),
    }
}

/// Why a column is a cursor candidate; the order is the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateRole {
    /// A last-modification time (`updated_at`, `modified_at`, ...): catches updates, for
    /// `dedup` syncs.
    UpdatedAt,
    /// A creation time (`created_at`, `inserted_at`, ...): for insert-only tables (`append`).
    CreatedAt,
    /// A single-column integer primary key: for insert-only tables with growing ids.
    IntegerKey,
    /// Another date or timestamp column: check what it means before using it.
    OtherTime,
}

impl CandidateRole {
    /// A few words for people.
    pub fn describe(self) -> &'static str {
        match self {
            CandidateRole::UpdatedAt => "last-modified time",
            CandidateRole::CreatedAt => "creation time",
            CandidateRole::IntegerKey => "integer primary key",
            CandidateRole::OtherTime => "other time column",
        }
    }
}

/// One candidate cursor column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CursorCandidate {
    /// The column.
    pub column: String,
    /// Why it is a candidate.
    pub role: CandidateRole,
}

/// Names of last-modification columns, compared without case and `_`.
const UPDATED_NAMES: &[&str] = &[
    "updatedat",
    "updated",
    "updatedon",
    "updatetime",
    "updatetimestamp",
    "modifiedat",
    "modified",
    "modifiedon",
    "lastmodified",
    "lastmodifiedat",
    "lastupdated",
    "lastupdatedat",
    "lastupdate",
    "changedat",
    "modifytime",
    "mtime",
    "dateupdated",
    "datemodified",
];

/// Names of creation columns, compared the same way.
const CREATED_NAMES: &[&str] = &[
    "createdat",
    "created",
    "createdon",
    "createtime",
    "creationtime",
    "creationdate",
    "insertedat",
    "inserted",
    "insertedon",
    "datecreated",
    "ctime",
];

fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Ranks a table's candidate cursors: last-modification timestamps first, then creation
/// timestamps, then a single-column integer primary key, then any other date or timestamp.
/// Within a role, columns keep table order.
pub fn rank_cursor_candidates(columns: &[DiscoveredColumn], primary_key: &[String]) -> Vec<CursorCandidate> {
    let mut ranked: Vec<CursorCandidate> = columns
        .iter()
        .filter_map(|c| {
            let role = match c.cursor_kind? {
                CursorKind::Timestamp | CursorKind::Date => {
                    let name = normalized(&c.name);
                    if UPDATED_NAMES.contains(&name.as_str()) {
                        CandidateRole::UpdatedAt
                    } else if CREATED_NAMES.contains(&name.as_str()) {
                        CandidateRole::CreatedAt
                    } else {
                        CandidateRole::OtherTime
                    }
                }
                CursorKind::Integer if primary_key == [c.name.clone()] => CandidateRole::IntegerKey,
                CursorKind::Integer => return None,
            };
            Some(CursorCandidate {
                column: c.name.clone(),
                role,
            })
        })
        .collect();
    ranked.sort_by_key(|c| c.role);
    ranked
}

/// Checks a pipeline's include/exclude pattern: table-name characters plus `*` (any run) and
/// `?` (one character). Returns what is wrong.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty pattern matches nothing".into());
    }
    match pattern
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '$' | '-' | '.' | '*' | '?')))
    {
        Some(c) => Err(format!(
            "`{pattern}`: `{c}` is not allowed; a pattern is a table name with `*` (any characters) and `?` (one character)"
        )),
        None => Ok(()),
    }
}

/// Whether `name` matches the glob `pattern` (`*` any run, `?` one character; case-sensitive).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with one backtrack point: linear in practice.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: Option<CursorKind>) -> DiscoveredColumn {
        DiscoveredColumn {
            name: name.into(),
            source_type: "t".into(),
            nullable: true,
            cursor_kind: kind,
        }
    }

    #[test]
    fn candidates_rank_updated_then_created_then_key() {
        let columns = vec![
            col("id", Some(CursorKind::Integer)),
            col("shipped_on", Some(CursorKind::Date)),
            col("createdAt", Some(CursorKind::Timestamp)),
            col("quantity", Some(CursorKind::Integer)),
            col("note", None),
            col("last_modified", Some(CursorKind::Timestamp)),
        ];
        let ranked = rank_cursor_candidates(&columns, &["id".into()]);
        let got: Vec<(&str, CandidateRole)> = ranked.iter().map(|c| (c.column.as_str(), c.role)).collect();
        assert_eq!(
            got,
            [
                ("last_modified", CandidateRole::UpdatedAt),
                ("createdAt", CandidateRole::CreatedAt),
                ("id", CandidateRole::IntegerKey),
                ("shipped_on", CandidateRole::OtherTime),
            ]
        );
        // An integer is a candidate only as the whole primary key; a name alone is not enough.
        let ranked = rank_cursor_candidates(&[col("updated_at", None), col("id", Some(CursorKind::Integer))], &[]);
        assert!(ranked.is_empty(), "{ranked:?}");
    }

    #[test]
    fn rows_group_into_tables_with_their_keys_in_key_order() {
        let row = |table: &str, name: &str, key: Option<u64>| CatalogRow {
            table: table.into(),
            column: col(name, None),
            key_position: key,
        };
        let catalog = Catalog::from_rows(
            "s",
            [
                row("a", "x", None),
                row("a", "k2", Some(2)),
                row("a", "k1", Some(1)),
                row("b", "y", None),
            ],
            |n| format!("s.{n}"),
        );
        assert_eq!(catalog.tables.len(), 2);
        assert_eq!(catalog.tables[0].table, "s.a");
        assert_eq!(catalog.tables[0].primary_key, ["k1", "k2"]);
        assert_eq!(catalog.tables[0].columns.len(), 3);
        assert!(catalog.tables[1].primary_key.is_empty());
        assert_eq!(catalog.table("b").unwrap().table, "s.b");
    }

    #[test]
    fn globs_match_and_bad_patterns_are_named() {
        assert!(glob_matches("*", "orders"));
        assert!(glob_matches("order*", "orders"));
        assert!(glob_matches("t_??", "t_01"));
        assert!(!glob_matches("t_??", "t_1"));
        assert!(glob_matches("*_log*", "audit_log_2024"));
        assert!(!glob_matches("tmp_*", "orders"));
        assert!(check_pattern("tmp_*").is_ok());
        assert!(check_pattern("").is_err());
        let e = check_pattern("orders[0-9]").unwrap_err();
        assert!(e.contains("`[`"), "{e}");
    }
}
