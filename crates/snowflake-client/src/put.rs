//! PUT: upload files into a Snowflake stage through the stage location the server returns
//! (S3, GCS, Azure, or a presigned URL), with client-side encryption when the stage asks for it.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

use crate::error::Result;
use crate::session::Client;

/// One file to PUT, read from an object store (the backhaul stage).
#[derive(Debug, Clone)]
pub struct PutFile {
    /// The name the file gets in the Snowflake stage.
    pub name: String,
    /// Where its bytes are.
    pub store: Arc<dyn ObjectStore>,
    /// Its path in `store`.
    pub path: Path,
    /// Its size in bytes.
    pub size: u64,
}

/// Options of a PUT.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Files uploaded at once.
    pub parallel: usize,
    /// Replace files of the same name (`OVERWRITE = TRUE`).
    pub overwrite: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            parallel: 4,
            overwrite: true,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The file's name in the stage.
    pub name: String,
    /// Bytes uploaded.
    pub bytes: u64,
}

impl Client {
    /// Uploads `files` to `stage_location` (e.g. `@~/backhaul/job/chunk-000001/`). Files are
    /// uploaded as they are (Parquet is already compressed: `AUTO_COMPRESS = FALSE`).
    pub async fn put(&self, files: &[PutFile], stage_location: &str, options: &PutOptions) -> Result<Vec<PutOutcome>> {
        let _ = (files, options);
        let _answer = self.query_data(stage_location).await?;
        todo!("PUT")
    }
}
