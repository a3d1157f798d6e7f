//! PUT: upload files into a Snowflake stage through the stage location the server returns
//! (S3, GCS, Azure, or a presigned URL), with client-side encryption when the stage asks for it.
//!
//! [`Client::put`] sends one `PUT` statement naming the first file; its answer
//! ([`StageAnswer`]) carries the stage's location and temporary credentials, used for every
//! file. A GCS stage without an access token gets a presigned URL per file, so each further
//! file is named in its own `PUT` statement (as the official connectors do). Files go up
//! `parallel` at a time, each read from its object store part by part (bounded memory): small
//! files in one request retried whole, large ones in parts retried one by one.

mod answer;
mod azure;
mod crypto;
mod failure;
mod gcs;
mod http;
mod parts;
mod s3;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;

pub use answer::{EncryptionMaterial, LocationType, StageAnswer, StageCreds};
pub use crypto::EncryptionMetadata;

use crate::error::{Error, Result};
use crate::session::Client;
use crypto::ContentEncryptor;
use failure::{Backoff, UploadError};

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
    /// Bytes uploaded (the file's own size; an encrypted stage stores up to 16 bytes more).
    pub bytes: u64,
}

/// How uploads are cut and retried.
#[derive(Debug, Clone)]
pub struct UploadTuning {
    /// Files larger than this go up in parts of this size (S3 multipart, Azure blocks; GCS
    /// streams them in one request). Memory per file in flight is about one part. Rounded
    /// down to a multiple of 16 (the AES block); S3 needs at least 5 MiB.
    pub part_size: usize,
    /// Attempts per request (or per small file), including the first.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub retry_base_delay: Duration,
    /// Longest delay between attempts.
    pub retry_max_delay: Duration,
    /// Connecting to storage may take this long.
    pub connect_timeout: Duration,
    /// A storage request may wait this long for the next bytes of an answer.
    pub read_timeout: Duration,
}

impl Default for UploadTuning {
    fn default() -> Self {
        UploadTuning {
            part_size: 16 << 20,
            max_attempts: 5,
            retry_base_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl UploadTuning {
    fn backoff(&self) -> Backoff {
        Backoff {
            max_attempts: self.max_attempts.max(1),
            base_delay: self.retry_base_delay,
            max_delay: self.retry_max_delay,
        }
    }

    fn part_size(&self) -> usize {
        (self.part_size / crypto::BLOCK).max(1) * crypto::BLOCK
    }
}

/// Asks the server for a stage answer naming one file: a fresh presigned URL for it, or fresh
/// credentials after they expired. [`Client`] does it with a `PUT` statement; tests answer
/// from fixtures.
pub trait StageAnswers: Send + Sync {
    /// The answer to a `PUT` of the file `name`.
    fn answer_for<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<StageAnswer>>;
}

/// The `sfc-digest` and encryption metadata stored with one file.
pub(crate) struct FileMeta {
    pub(crate) digest: String,
    pub(crate) encryption: Option<EncryptionMetadata>,
}

impl Client {
    /// Uploads `files` to `stage_location` (e.g. `@~/backhaul/job/chunk-000001/`). Files are
    /// uploaded as they are (Parquet is already compressed: `AUTO_COMPRESS = FALSE`).
    pub async fn put(&self, files: &[PutFile], stage_location: &str, options: &PutOptions) -> Result<Vec<PutOutcome>> {
        self.put_tuned(files, stage_location, options, &UploadTuning::default())
            .await
    }

    /// [`Client::put`] with explicit part size and retries.
    pub async fn put_tuned(
        &self,
        files: &[PutFile],
        stage_location: &str,
        options: &PutOptions,
        tuning: &UploadTuning,
    ) -> Result<Vec<PutOutcome>> {
        let Some(first) = files.first() else {
            return Ok(Vec::new());
        };
        let commands = PutStatements {
            client: self,
            stage_location,
            options,
        };
        let answer = commands.answer_for(&first.name).await?;
        upload_files(answer, files, options, tuning, &commands).await
    }
}

/// Sends `PUT` statements for single files.
struct PutStatements<'c> {
    client: &'c Client,
    stage_location: &'c str,
    options: &'c PutOptions,
}

impl StageAnswers for PutStatements<'_> {
    fn answer_for<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<StageAnswer>> {
        Box::pin(async move {
            let sql = put_statement(name, self.stage_location, self.options)?;
            let data = self.client.query_data(&sql).await?;
            StageAnswer::parse(&data)
        })
    }
}

/// `PUT 'file:///backhaul/<name>' <stage> AUTO_COMPRESS = FALSE …`. The server takes only the
/// file name from the local path (the bytes never come from this machine's file system).
pub fn put_statement(name: &str, stage_location: &str, options: &PutOptions) -> Result<String> {
    if name.is_empty() || name.contains(['/', '\\', '\'', '\n', '\r', '*', '?']) {
        return Err(Error::Config {
            field: "put file name".into(),
            message: format!("{name:?} is not a plain file name"),
        });
    }
    if !stage_location.starts_with('@') || stage_location.contains(['\'', '\n', '\r']) {
        return Err(Error::Config {
            field: "stage location".into(),
            message: format!("{stage_location:?} must start with @ and contain no quotes"),
        });
    }
    // Quoted only when needed: some servers (fakesnow) parse an unquoted stage only.
    let plain = stage_location
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "@~%_./-$=".contains(c));
    let stage = if plain {
        stage_location.to_string()
    } else {
        format!("'{stage_location}'")
    };
    Ok(format!(
        "PUT 'file:///backhaul/{name}' {stage} AUTO_COMPRESS = FALSE SOURCE_COMPRESSION = NONE OVERWRITE = {} PARALLEL = {}",
        if options.overwrite { "TRUE" } else { "FALSE" },
        options.parallel.clamp(1, 99)
    ))
}

/// Uploads `files` as `answer` (the answer to a PUT naming `files[0]`) says, `parallel` at a
/// time, in order of `files`. `answers` gives presigned URLs for the other files and fresh
/// credentials when they expire.
pub async fn upload_files(
    answer: StageAnswer,
    files: &[PutFile],
    options: &PutOptions,
    tuning: &UploadTuning,
    answers: &dyn StageAnswers,
) -> Result<Vec<PutOutcome>> {
    if answer.location_type == LocationType::LocalFs {
        return Err(Error::Protocol(
            "the stage is on the server's local file system (LOCAL_FS): nothing to upload to".into(),
        ));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(tuning.connect_timeout)
        .read_timeout(tuning.read_timeout)
        .build()
        .map_err(|e| Error::Protocol(format!("HTTP client for uploads: {e}")))?;
    let answer = &answer;
    let http = &http;
    futures::stream::iter(files.iter().enumerate())
        .map(|(index, file)| async move {
            upload_one(answer, index == 0, file, tuning, answers, http).await?;
            Ok::<_, Error>(PutOutcome {
                name: file.name.clone(),
                bytes: file.size,
            })
        })
        .buffered(options.parallel.max(1))
        .try_collect()
        .await
}

/// One file: at most one credential refresh, then its failure as it is.
async fn upload_one(
    first_answer: &StageAnswer,
    answer_names_this_file: bool,
    file: &PutFile,
    tuning: &UploadTuning,
    answers: &dyn StageAnswers,
    http: &reqwest::Client,
) -> Result<()> {
    let needs_own_url = first_answer.location_type == LocationType::Gcs
        && first_answer.creds.gcs_access_token.is_none()
        && !answer_names_this_file;
    let mut own_answer = if needs_own_url {
        Some(answers.answer_for(&file.name).await?)
    } else {
        None
    };
    let mut refreshed = false;
    loop {
        let answer = own_answer.as_ref().unwrap_or(first_answer);
        match upload_with(answer, file, tuning, http).await {
            Ok(()) => return Ok(()),
            Err(e) if e.credentials_suspect && !refreshed => {
                tracing::info!(file = %file.name, error = %e.error, "stage refused the upload; asking for fresh credentials once");
                refreshed = true;
                own_answer = Some(answers.answer_for(&file.name).await?);
            }
            Err(e) => return Err(e.error),
        }
    }
}

enum Target {
    S3(s3::S3Target),
    Gcs(gcs::GcsTarget),
    Azure(azure::AzureTarget),
}

/// One attempt at one file with one stage answer.
async fn upload_with(
    answer: &StageAnswer,
    file: &PutFile,
    tuning: &UploadTuning,
    http: &reqwest::Client,
) -> Result<(), UploadError> {
    let backoff = tuning.backoff();
    let not_usable = |e: Error| UploadError {
        error: e,
        credentials_suspect: false,
    };
    let target = match answer.location_type {
        LocationType::S3 => Target::S3(s3::S3Target::new(answer, &file.name, &backoff).map_err(not_usable)?),
        LocationType::Gcs => Target::Gcs(gcs::GcsTarget::new(answer, &file.name).map_err(not_usable)?),
        LocationType::Azure => Target::Azure(azure::AzureTarget::new(answer, &file.name).map_err(not_usable)?),
        LocationType::LocalFs => unreachable!("rejected before uploading"),
    };
    let encryption = match &answer.encryption {
        Some(material) => Some(ContentEncryptor::new(material).map_err(not_usable)?),
        None => None,
    };
    let (encryptor, encryption_meta) = match encryption {
        Some((encryptor, meta)) => (Some(encryptor), Some(meta)),
        None => (None, None),
    };
    let part_size = tuning.part_size();
    if file.size <= part_size as u64 {
        // Small: read once, retried whole from memory.
        let (digest, body) = parts::read_whole(file, encryptor).await?;
        let meta = FileMeta {
            digest,
            encryption: encryption_meta,
        };
        return match &target {
            Target::S3(t) => t.put_single(&file.name, body, &meta).await,
            Target::Gcs(t) => t.put_single(http, &backoff, &file.name, body, &meta).await,
            Target::Azure(t) => t.put_single(http, &backoff, &file.name, body, &meta).await,
        };
    }
    // Large: the digest goes into metadata sent before the content, so it takes a first pass.
    let meta = FileMeta {
        digest: parts::plaintext_digest(file).await?,
        encryption: encryption_meta,
    };
    let uploaded_len = match encryptor {
        Some(_) => crypto::encrypted_len(file.size),
        None => file.size,
    };
    match &target {
        Target::S3(t) => {
            let reader = parts::PartReader::open(file, part_size, encryptor).await?;
            t.put_parts(&file.name, reader, &meta).await
        }
        Target::Azure(t) => {
            let reader = parts::PartReader::open(file, part_size, encryptor).await?;
            t.put_blocks(http, &backoff, &file.name, reader, &meta).await
        }
        Target::Gcs(t) => {
            // One streamed request: retried whole, re-reading the source (with the same key,
            // so the metadata stays right).
            let mut attempt = 1;
            loop {
                let reader = parts::PartReader::open(file, part_size, encryptor.clone()).await?;
                match t.put_stream(http, &file.name, reader, uploaded_len, &meta).await {
                    Err(e)
                        if attempt < backoff.max_attempts
                            && !e.credentials_suspect
                            && e.error.class() != backhaul_core::ErrorClass::Permanent =>
                    {
                        tokio::time::sleep(backoff.delay(attempt)).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_statement_quotes_the_file_and_only_an_unusual_stage() {
        let options = PutOptions::default();
        assert_eq!(
            put_statement("part-000.parquet", "@~/backhaul/job-1/chunk-000001/", &options).unwrap(),
            "PUT 'file:///backhaul/part-000.parquet' @~/backhaul/job-1/chunk-000001/ AUTO_COMPRESS = FALSE \
             SOURCE_COMPRESSION = NONE OVERWRITE = TRUE PARALLEL = 4"
        );
        let options = PutOptions {
            parallel: 500,
            overwrite: false,
        };
        assert_eq!(
            put_statement("a.parquet", "@\"My Stage\"/x", &options).unwrap(),
            "PUT 'file:///backhaul/a.parquet' '@\"My Stage\"/x' AUTO_COMPRESS = FALSE \
             SOURCE_COMPRESSION = NONE OVERWRITE = FALSE PARALLEL = 99"
        );
        assert!(put_statement("../a", "@st", &options).is_err());
        assert!(put_statement("a'b", "@st", &options).is_err());
        assert!(put_statement("a", "st", &options).is_err());
        assert!(put_statement("a", "@st'x", &options).is_err());
    }
}
