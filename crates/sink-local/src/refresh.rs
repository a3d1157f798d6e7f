//! Full refresh (`[sync] mode = "full_refresh"`): every chunk is a whole new version of the
//! table, and the table is exactly its newest committed version.
//!
//! A refresh chunk is written aside like any chunk (its own files, its own manifest), and the
//! rename of its manifest, under the table lock, is the swap: from then on readers see only
//! it ([`current`]). Until then they see the previous version, so a refresh killed anywhere
//! before the rename leaves the old version in place. After the rename the previous versions'
//! manifests move to `_superseded/` (`chunk-NNNNNN-aNNN.json`) (history for `cost --actual`) and their data files are
//! deleted; a crash in between leaves extra manifests that [`current`] ignores and the next
//! refresh retires.

use std::path::PathBuf;

use backhaul_core::connector::ChunkCommit;
use backhaul_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::meta::{ChunkManifest, TablePaths, manifest_name, read_all_manifests, read_manifests_in};

/// What a refresh commit records in its manifest: every row of a refresh is rewritten, so
/// all count as active rows. The first version's rows are inserted, a later version's updated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshManifest {
    /// Rows of the first version of the table.
    pub rows_inserted: u64,
    /// Rows of a version that replaced an earlier one.
    pub rows_updated: u64,
}

/// The refresh part of a commit's manifest, or `None` when the commit is not a refresh.
/// Blocking; call under the table lock.
pub(crate) fn refresh_manifest(paths: &TablePaths, commit: &ChunkCommit, rows: u64) -> Result<Option<RefreshManifest>> {
    if !commit.sync.as_ref().is_some_and(|s| s.mode.replaces_table()) {
        return Ok(None);
    }
    let earlier = read_all_manifests(paths)?
        .iter()
        .chain(read_manifests_in(&paths.superseded_dir())?.iter())
        .any(|m| m.chunk_id != commit.chunk_id);
    Ok(Some(if earlier {
        RefreshManifest {
            rows_inserted: 0,
            rows_updated: rows,
        }
    } else {
        RefreshManifest {
            rows_inserted: rows,
            rows_updated: 0,
        }
    }))
}

/// The manifests readers see: all of them, unless the newest is a refresh, which is then the
/// whole table. `manifests` are sorted by chunk id.
pub(crate) fn current(mut manifests: Vec<ChunkManifest>) -> Vec<ChunkManifest> {
    if manifests.last().is_some_and(|m| m.refresh.is_some()) {
        manifests.drain(..manifests.len() - 1);
    }
    manifests
}

/// Retires every version but the current one: moves its manifest to `_superseded/`, then
/// deletes its data files. Blocking; call under the table lock, after the commit point.
/// Cleanup cannot fail the commit: problems are logged and the next refresh tries again.
pub(crate) fn retire_superseded(paths: &TablePaths) -> Result<()> {
    let all = read_all_manifests(paths)?;
    let Some(newest) = all.last().filter(|m| m.refresh.is_some()) else {
        return Ok(());
    };
    let dir = paths.superseded_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for old in all.iter().filter(|m| m.chunk_id != newest.chunk_id) {
        let from = paths.manifest(old.chunk_id);
        // Named by attempt too, so a replayed version retired again keeps the first as history.
        let to = dir.join(format!(
            "{}-a{:03}.json",
            manifest_name(old.chunk_id).trim_end_matches(".json"),
            old.attempt
        ));
        if let Err(e) = std::fs::rename(&from, &to) {
            tracing::warn!(manifest = %from.display(), error = %e, "cannot retire a superseded version");
            continue;
        }
        let files: Vec<PathBuf> = old.files.iter().map(|f| paths.data_file(&f.name)).collect();
        for path in files {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete a superseded data file");
            }
        }
    }
    Ok(())
}

/// `(committed at, inserted, updated)` of every refresh the table had, current and superseded.
pub(crate) fn refresh_counts(paths: &TablePaths) -> Result<Vec<(Option<i64>, u64, u64)>> {
    let mut manifests = read_manifests_in(&paths.superseded_dir())?;
    manifests.extend(read_all_manifests(paths)?);
    Ok(manifests
        .iter()
        .filter_map(|m| {
            let r = m.refresh.as_ref()?;
            Some((m.committed_at_us, r.rows_inserted, r.rows_updated))
        })
        .collect())
}
