//! The rule of `[sync] mode = "dedup"` in SQL warehouses, stated once: after a commit the
//! table holds exactly the **newest version of each key** (the largest cursor), and a staged
//! version with the **same cursor** as the stored one replaces it (the commit that runs later
//! wins the tie; in practice a lookback chunk re-reading a row its earlier chunk loaded).
//!
//! Inside its transaction, a warehouse commit keeps the chunk's rows in the table's **versions
//! table** (every chunk's rows, tagged with their chunk id in [`CHUNK_COLUMN`]; a chunk's proof
//! is measured there, at commit and by `read_back`, since the target's rows are no longer the
//! chunk's) and applies the rule to the target from the staged rows, either as one `MERGE` or
//! as the equivalent `DELETE` + `INSERT`
//! (docs/destinations/snowflake.md says why Snowflake's is the latter). [`DedupSql`] renders
//! the pieces both destinations share, in their quoting. The local warehouse applies the same
//! rule when reading (sink-local's `dedup.rs`), where each row still knows its chunk, so its
//! ties go to the highest chunk id.

use crate::connector::{ChunkCommit, SyncCommit, SyncMode};
use crate::error::{Error, Result};

/// The alias of the rank column [`DedupSql::newest_staged`] adds (and filters on).
const RANK: &str = "__backhaul_rank";

/// The versions table's column holding the chunk id of each row.
pub const CHUNK_COLUMN: &str = "_backhaul_chunk_id";

/// The versions table's rows of chunk `chunk_id` (a `WHERE` condition), quoted by `quote`.
pub fn chunk_rows(chunk_id: u64, quote: impl Fn(&str) -> String) -> String {
    format!("{} = {chunk_id}", quote(CHUNK_COLUMN))
}

/// The `[sync]` of `commit` when it is a dedup commit (`None` for a plain or append one),
/// checked against the table: refuses an empty key (naming `sync.primary_key`) and a key or
/// cursor column for which `has_column` is false, naming `table`.
pub fn dedup_sync<'a>(
    commit: &'a ChunkCommit,
    table: &str,
    has_column: impl Fn(&str) -> bool,
) -> Result<Option<&'a SyncCommit>> {
    let Some(sync) = commit.sync.as_ref().filter(|s| s.mode == SyncMode::Dedup) else {
        return Ok(None);
    };
    if sync.key_columns.is_empty() {
        return Err(Error::config(
            "<spec>",
            "sync.primary_key",
            format!("table `{table}` has no primary key, and dedup mode needs one"),
        ));
    }
    for column in sync.key_columns.iter().chain([&commit.cursor_column]) {
        if !has_column(column) {
            return Err(Error::InvalidObject {
                object: format!("table {table}"),
                message: format!("dedup key or cursor column `{column}` is not a column of the table"),
            });
        }
    }
    Ok(Some(sync))
}

/// SQL pieces of the dedup rule for one table, with identifiers already quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupSql {
    keys: Vec<String>,
    cursor: String,
    columns: Vec<String>,
    rank: String,
    chunk_id: u64,
    chunk_rows: String,
    chunk_column: String,
}

impl DedupSql {
    /// The pieces for `commit` when it is a dedup commit (`None` for a plain or append one), over
    /// the table's `columns`, quoted by `quote`; refused as [`dedup_sync`] says.
    pub fn for_commit(
        commit: &ChunkCommit,
        table: &str,
        columns: &[String],
        quote: impl Fn(&str) -> String,
    ) -> Result<Option<DedupSql>> {
        let Some(sync) = dedup_sync(commit, table, |c| columns.iter().any(|have| have == c))? else {
            return Ok(None);
        };
        Ok(Some(DedupSql {
            keys: sync.key_columns.iter().map(|c| quote(c)).collect(),
            cursor: quote(&commit.cursor_column),
            columns: columns.iter().map(|c| quote(c)).collect(),
            rank: quote(RANK),
            chunk_id: commit.chunk_id,
            chunk_rows: chunk_rows(commit.chunk_id, &quote),
            chunk_column: quote(CHUNK_COLUMN),
        }))
    }

    /// The table's columns, quoted and comma-separated.
    pub fn column_list(&self) -> String {
        self.columns.join(", ")
    }

    /// `DELETE` of the chunk's rows (an earlier attempt's) from `versions_table`.
    pub fn forget_chunk(&self, versions_table: &str) -> String {
        format!("DELETE FROM {versions_table} WHERE {}", self.chunk_rows)
    }

    /// `INSERT` of every staged row into `versions_table`, tagged with the chunk id.
    pub fn keep_chunk(&self, versions_table: &str, staged_table: &str) -> String {
        let columns = self.column_list();
        format!(
            "INSERT INTO {versions_table} ({columns}, {}) SELECT {columns}, {} FROM {staged_table}",
            self.chunk_column, self.chunk_id
        )
    }

    /// The chunk's rows in `versions_table`, with the table's columns: a subquery to stage from.
    pub fn chunk_versions(&self, versions_table: &str) -> String {
        format!(
            "(SELECT {} FROM {versions_table} WHERE {})",
            self.column_list(),
            self.chunk_rows
        )
    }

    /// The chunk's rows in the versions table (a `WHERE` condition).
    pub fn chunk_rows(&self) -> &str {
        &self.chunk_rows
    }

    /// `a.k1 = b.k1 AND …`: rows `a` and `b` hold the same key.
    pub fn same_key(&self, a: &str, b: &str) -> String {
        self.keys
            .iter()
            .map(|k| format!("{a}.{k} = {b}.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Staged version `staged` replaces stored version `target` of the same key: its cursor is
    /// newer or the same (ties to the later commit).
    pub fn staged_wins(&self, staged: &str, target: &str) -> String {
        format!("{staged}.{c} >= {target}.{c}", c = self.cursor)
    }

    /// A query of the newest staged version of each key in `staged_table`, aliased `alias`,
    /// with the table's columns (and the rank column, always 1). Ties inside one chunk (two
    /// rows of one key with one cursor, which a source keyed by it cannot yield) pick one.
    pub fn newest_staged(&self, staged_table: &str, alias: &str) -> String {
        format!(
            "(SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {cursor} DESC) AS {rank} \
             FROM {staged_table}) AS ranked WHERE {rank} = 1) AS {alias}",
            keys = self.keys.join(", "),
            cursor = self.cursor,
            rank = self.rank,
        )
    }

    /// The `DELETE` condition on stored row `target` (the target table's alias or name): a
    /// staged version of its key wins over it.
    pub fn superseded(&self, staged_table: &str, target: &str) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {staged_table} AS staged WHERE {} AND {})",
            self.same_key("staged", target),
            self.staged_wins("staged", target)
        )
    }

    /// `INSERT INTO {target_table} … SELECT` of the newest staged versions whose key the
    /// target no longer holds: run after deleting what they supersede, so exactly the versions
    /// that won land and a newer stored version stays.
    pub fn insert_winners(&self, target_table: &str, staged_table: &str) -> String {
        let columns = self.column_list();
        let chosen: Vec<String> = self.columns.iter().map(|c| format!("newest.{c}")).collect();
        format!(
            "INSERT INTO {target_table} ({columns}) SELECT {} FROM {} \
             WHERE NOT EXISTS (SELECT 1 FROM {target_table} AS stored WHERE {})",
            chosen.join(", "),
            self.newest_staged(staged_table, "newest"),
            self.same_key("stored", "newest"),
        )
    }

    /// One `MERGE` applying the rule from `staged_table` into `target_table`.
    pub fn merge(&self, target_table: &str, staged_table: &str) -> String {
        let set: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.keys.contains(c))
            .map(|c| format!("{c} = newest.{c}"))
            .collect();
        let values: Vec<String> = self.columns.iter().map(|c| format!("newest.{c}")).collect();
        let update = if set.is_empty() {
            String::new()
        } else {
            format!(
                "WHEN MATCHED AND {} THEN UPDATE SET {} ",
                self.staged_wins("newest", "stored"),
                set.join(", ")
            )
        };
        format!(
            "MERGE INTO {target_table} AS stored USING {} ON {} {update}\
             WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
            self.newest_staged(staged_table, "newest"),
            self.same_key("stored", "newest"),
            self.column_list(),
            values.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::CursorRange;

    fn commit(mode: SyncMode, keys: &[&str]) -> ChunkCommit {
        ChunkCommit {
            job_id: "j".into(),
            chunk_id: 1,
            attempt: 1,
            range: CursorRange::new(0, 10),
            cursor_column: "updated_at".into(),
            files: vec![],
            extracted: Default::default(),
            sync: Some(SyncCommit {
                mode,
                key_columns: keys.iter().map(|k| k.to_string()).collect(),
                metadata_columns: false,
            }),
        }
    }

    fn columns() -> Vec<String> {
        ["id", "updated_at", "v"].iter().map(|c| c.to_string()).collect()
    }

    fn quote(c: &str) -> String {
        format!("`{c}`")
    }

    #[test]
    fn only_dedup_commits_get_the_rule() {
        let plain = DedupSql::for_commit(&commit(SyncMode::Append, &["id"]), "t", &columns(), quote).unwrap();
        assert!(plain.is_none());
        let e = DedupSql::for_commit(&commit(SyncMode::Dedup, &[]), "t", &columns(), quote)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sync.primary_key") && e.contains("`t`"), "{e}");
        let e = DedupSql::for_commit(&commit(SyncMode::Dedup, &["nope"]), "t", &columns(), quote)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`"), "{e}");
    }

    #[test]
    fn delete_insert_and_merge_share_one_rule() {
        let sql = DedupSql::for_commit(&commit(SyncMode::Dedup, &["id"]), "t", &columns(), quote)
            .unwrap()
            .unwrap();
        assert_eq!(sql.forget_chunk("v"), "DELETE FROM v WHERE `_backhaul_chunk_id` = 1");
        assert_eq!(
            sql.keep_chunk("v", "s"),
            "INSERT INTO v (`id`, `updated_at`, `v`, `_backhaul_chunk_id`) SELECT `id`, `updated_at`, `v`, 1 FROM s"
        );
        assert_eq!(
            sql.superseded("s", "t"),
            "EXISTS (SELECT 1 FROM s AS staged WHERE staged.`id` = t.`id` AND staged.`updated_at` >= t.`updated_at`)"
        );
        let newest = "(SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `updated_at` DESC) \
                      AS `__backhaul_rank` FROM s) AS ranked WHERE `__backhaul_rank` = 1) AS newest";
        assert_eq!(
            sql.insert_winners("t", "s"),
            format!(
                "INSERT INTO t (`id`, `updated_at`, `v`) SELECT newest.`id`, newest.`updated_at`, newest.`v` FROM {newest} \
                 WHERE NOT EXISTS (SELECT 1 FROM t AS stored WHERE stored.`id` = newest.`id`)"
            )
        );
        assert_eq!(
            sql.merge("t", "s"),
            format!(
                "MERGE INTO t AS stored USING {newest} ON stored.`id` = newest.`id` \
                 WHEN MATCHED AND newest.`updated_at` >= stored.`updated_at` \
                 THEN UPDATE SET `updated_at` = newest.`updated_at`, `v` = newest.`v` \
                 WHEN NOT MATCHED THEN INSERT (`id`, `updated_at`, `v`) \
                 VALUES (newest.`id`, newest.`updated_at`, newest.`v`)"
            )
        );
    }
}
