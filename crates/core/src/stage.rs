//! The stage: where Parquet files wait between the writer and the destination.
//!
//! It is an `object_store` so a local directory, S3 and GCS look the same to everyone else.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};

/// A staging area.
#[derive(Clone, Debug)]
pub struct Stage {
    store: Arc<dyn ObjectStore>,
    description: String,
    /// The directory of a local stage.
    local_root: Option<PathBuf>,
}

impl Stage {
    /// A stage in a local directory, created when missing. Checks that it is writable by
    /// writing and deleting a probe object, so a bad path fails before any chunk runs.
    pub async fn local(dir: &FsPath) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(
                "<spec>",
                "stage.path",
                format!("cannot create stage directory {}: {e}", dir.display()),
            )
        })?;
        let abs: PathBuf = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let store = LocalFileSystem::new_with_prefix(&abs)
            .map_err(|e| Error::config("<spec>", "stage.path", format!("{}: {e}", abs.display())))?;
        let stage = Stage {
            store: Arc::new(store),
            description: abs.display().to_string(),
            local_root: Some(abs.clone()),
        };
        // Unique per check: several workers of one process check the same stage at once.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = Path::from(format!(".backhaul-write-probe-{}-{n}", std::process::id()));
        stage
            .store
            .put(&probe, PutPayload::from_static(b"probe"))
            .await
            .map_err(|e| {
                Error::config(
                    "<spec>",
                    "stage.path",
                    format!("stage directory {} is not writable: {e}", abs.display()),
                )
            })?;
        stage.store.delete(&probe).await?;
        Ok(stage)
    }

    /// The object store behind the stage.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where the stage is, for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Deterministic stage path of one part of one attempt of one chunk.
    pub fn part_path(job_id: &str, chunk_id: u64, attempt: u32, part: u32) -> Path {
        Path::from(format!(
            "{job_id}/chunk-{chunk_id:06}/attempt-{attempt:03}/part-{part:04}.parquet"
        ))
    }

    /// Stage prefix of every attempt of one chunk.
    pub fn chunk_prefix(job_id: &str, chunk_id: u64) -> Path {
        Path::from(format!("{job_id}/chunk-{chunk_id:06}"))
    }

    /// Stage prefix of one attempt of one chunk.
    pub fn attempt_prefix(job_id: &str, chunk_id: u64, attempt: u32) -> Path {
        Path::from(format!("{job_id}/chunk-{chunk_id:06}/attempt-{attempt:03}"))
    }

    /// The local file holding `location`, when the stage is a local directory; `None` for
    /// object stores. Lets a destination on the same machine link a staged file instead of
    /// copying it.
    pub fn local_path(&self, location: &Path) -> Option<PathBuf> {
        let root = self.local_root.as_ref()?;
        let mut path = root.clone();
        path.extend(location.parts().map(|p| p.as_ref().to_string()));
        Some(path)
    }
}
