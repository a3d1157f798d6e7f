//! The stage: where Parquet files wait between the writer and the destination.
//!
//! It is an `object_store` so a local directory, S3 and GCS look the same to everyone else. The
//! stage's URL prefix is applied inside the store, so part paths ([`Stage::part_path`]) stay
//! relative; [`Stage::file_url`] turns one back into a URL a destination can load from
//! (`s3://…`, `gs://…`, `file:///…`).
//!
//! Credentials come only from the environment and the machine's identity, found the way each
//! cloud's SDKs find them (object_store's `from_env` builders: `AWS_*` variables, web identity,
//! ECS/EC2 instance metadata; `GOOGLE_*` variables, application default credentials, GCE
//! metadata). They are never in the spec and never printed: `Stage`'s `Debug` shows its URL only.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
pub use crate::spec::stage::StageKind;
use crate::spec::stage::{StageLocation, StageSpec};

/// A staging area.
#[derive(Clone)]
pub struct Stage {
    store: Arc<dyn ObjectStore>,
    kind: StageKind,
    /// The stage's root URL, without a trailing `/`.
    url: String,
    /// The directory of a local stage.
    local_root: Option<PathBuf>,
}

impl fmt::Debug for Stage {
    // The store's own Debug would show its client configuration; the URL is all that matters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Environment variables that cloud credentials and settings are read from (the process's by
/// default). Only the names object_store's `from_env` builders look at are kept; `Debug` shows
/// names, never values.
#[derive(Clone, Default)]
pub struct StageEnv {
    vars: Vec<(String, String)>,
}

impl fmt::Debug for StageEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.vars.iter().map(|(k, _)| k)).finish()
    }
}

/// Variables naming a credentials file: checked before the client is built, so a wrong one is
/// reported by name instead of as a bare path.
const GCS_CREDENTIAL_FILE_VARS: [&str; 4] = [
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_PATH",
    "SERVICE_ACCOUNT",
];

impl StageEnv {
    /// The process environment.
    pub fn process() -> Self {
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    /// Given variables (tests).
    pub fn from_vars<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        StageEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k == "SERVICE_ACCOUNT")
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.vars
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Stage {
    /// Builds the stage a spec describes and checks it is writable by writing and deleting a
    /// probe object, so a bad stage fails before any chunk runs. `origin` names the spec file
    /// in errors, which name the key (`stage.url`, `stage.path`).
    pub async fn from_spec(spec: &StageSpec, origin: &str) -> Result<Self> {
        Self::from_spec_in(spec, origin, &StageEnv::process()).await
    }

    /// [`Stage::from_spec`] with credentials from `env` instead of the process environment.
    pub async fn from_spec_in(spec: &StageSpec, origin: &str, env: &StageEnv) -> Result<Self> {
        let location = spec.validate(origin)?;
        let stage = Self::build(spec, &location, origin, env)?;
        stage.probe(origin, location.key()).await?;
        Ok(stage)
    }

    /// The stage a spec describes, for checks that need no IO (`backhaul plan` extracts
    /// nothing, so it creates and writes nothing): no probe is written and a missing local
    /// directory is not created. Such a stage's store then reaches nothing on disk; never
    /// write through it.
    pub fn unprobed(spec: &StageSpec, origin: &str) -> Result<Self> {
        let location = spec.validate(origin)?;
        if let StageLocation::Local { dir, .. } = &location
            && !dir.exists()
        {
            let abs = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
            return Ok(Stage {
                store: Arc::new(object_store::memory::InMemory::new()),
                kind: StageKind::Local,
                url: format!("file://{}", percent_encode_path(&abs.to_string_lossy())),
                local_root: Some(abs),
            });
        }
        Self::build(spec, &location, origin, &StageEnv::process())
    }

    /// A stage in a local directory, created when missing and checked writable.
    pub async fn local(dir: &FsPath) -> Result<Self> {
        Self::from_spec(&StageSpec::local(dir), "<spec>").await
    }

    /// Builds the store without talking to it (a local directory is created).
    fn build(spec: &StageSpec, location: &StageLocation, origin: &str, env: &StageEnv) -> Result<Self> {
        let key = location.key();
        match location {
            StageLocation::Local { dir, .. } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::config(
                        origin,
                        key,
                        format!("cannot create stage directory {}: {e}", dir.display()),
                    )
                })?;
                let abs: PathBuf = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
                // Deleting a committed chunk's parts also removes the attempt and chunk
                // directories they leave empty (never the stage root itself).
                let store = LocalFileSystem::new_with_prefix(&abs)
                    .map_err(|e| Error::config(origin, key, format!("{}: {e}", abs.display())))?
                    .with_automatic_cleanup(true);
                Ok(Stage {
                    store: Arc::new(store),
                    kind: StageKind::Local,
                    url: format!("file://{}", percent_encode_path(&abs.to_string_lossy())),
                    local_root: Some(abs),
                })
            }
            StageLocation::Bucket { kind, bucket, prefix } => {
                let url = bucket_url(*kind, bucket, prefix);
                let built = match kind {
                    StageKind::S3 => s3_builder(spec, bucket, env).build().map(|s| with_prefix(s, prefix)),
                    StageKind::Gcs => {
                        check_gcs_credential_files(env).map_err(|m| Error::config(origin, key, m))?;
                        gcs_builder(spec, bucket, env).build().map(|s| with_prefix(s, prefix))
                    }
                    StageKind::Local => unreachable!("local stages are directories"),
                };
                let store = built.map_err(|e| {
                    Error::config(
                        origin,
                        key,
                        format!("cannot set up the client for {url} from the environment: {e}"),
                    )
                })?;
                Ok(Stage {
                    store,
                    kind: *kind,
                    url,
                    local_root: None,
                })
            }
        }
    }

    /// Writes and deletes a probe object at the stage's root.
    async fn probe(&self, origin: &str, key: &str) -> Result<()> {
        // Unique per check: several workers of one process check the same stage at once.
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let probe = Path::from(format!(".backhaul-write-probe-{}-{n}", std::process::id()));
        let result = match self.store.put(&probe, PutPayload::from_static(b"probe")).await {
            Ok(_) => self.store.delete(&probe).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| self.probe_error(e, origin, key))
    }

    /// A stage that refuses us is a configuration problem; one we cannot reach may recover.
    fn probe_error(&self, e: object_store::Error, origin: &str, key: &str) -> Error {
        use object_store::Error as E;
        let refused = matches!(
            e,
            E::NotFound { .. }
                | E::PermissionDenied { .. }
                | E::Unauthenticated { .. }
                | E::InvalidPath { .. }
                | E::NotSupported { .. }
        );
        if self.kind == StageKind::Local || refused {
            Error::config(origin, key, format!("stage {} is not writable: {e}", self.url))
        } else {
            Error::Unreachable {
                system: format!("stage {}", self.url),
                message: e.to_string(),
            }
        }
    }

    /// The object store behind the stage; paths are relative to the stage's URL.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Which kind of store this is.
    pub fn kind(&self) -> StageKind {
        self.kind
    }

    /// The stage's URL: `s3://bucket/prefix`, `gs://bucket/prefix` or `file:///abs/dir`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of a staged file, e.g. `s3://bucket/prefix/job/chunk-000001/attempt-001/part-0000.parquet`.
    pub fn file_url(&self, path: &Path) -> String {
        match self.kind {
            StageKind::Local => format!("{}/{}", self.url, percent_encode_path(path.as_ref())),
            StageKind::S3 | StageKind::Gcs => format!("{}/{}", self.url, path),
        }
    }

    /// Where the stage is, for messages: its URL.
    pub fn description(&self) -> &str {
        &self.url
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

    /// Where a writer should spool the parts of one attempt before staging them: the
    /// attempt's own directory of a local stage (created when missing), so a finished part
    /// enters the stage by rename on the same file system (see [`crate::localfile::place`]),
    /// and whatever a killed writer left there goes with the chunk's other leftovers once the
    /// chunk commits. Writers spool in a hidden sub-directory. `None` for object stores,
    /// whose parts are uploaded from wherever the worker spools.
    pub fn local_spool_dir(&self, job_id: &str, chunk_id: u64, attempt: u32) -> Option<Result<PathBuf>> {
        let dir = self.local_path(&Self::attempt_prefix(job_id, chunk_id, attempt))?;
        Some(
            std::fs::create_dir_all(&dir)
                .map(|()| dir.clone())
                .map_err(|e| Error::io(&dir, e)),
        )
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

fn bucket_url(kind: StageKind, bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("{}://{bucket}", kind.scheme())
    } else {
        format!("{}://{bucket}/{prefix}", kind.scheme())
    }
}

fn with_prefix<S: ObjectStore>(store: S, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// `AmazonS3Builder::from_env()` over `env`, then the spec's settings on top.
fn s3_builder(spec: &StageSpec, bucket: &str, env: &StageEnv) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new();
    for (name, value) in env.with_prefix("AWS_") {
        if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    builder = builder.with_bucket_name(bucket);
    if let Some(region) = &spec.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &spec.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if spec.endpoint_is_http() {
        builder = builder.with_allow_http(true);
    }
    builder
}

/// `GoogleCloudStorageBuilder::from_env()` over `env`, then the spec's settings on top.
fn gcs_builder(spec: &StageSpec, bucket: &str, env: &StageEnv) -> GoogleCloudStorageBuilder {
    let mut builder = GoogleCloudStorageBuilder::new();
    if let Some(path) = env.get("SERVICE_ACCOUNT") {
        builder = builder.with_service_account_path(path);
    }
    for (name, value) in env.with_prefix("GOOGLE_") {
        if let Ok(key) = name.to_ascii_lowercase().parse::<GoogleConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    builder = builder.with_bucket_name(bucket);
    if let Some(endpoint) = &spec.endpoint {
        builder = builder.with_base_url(endpoint);
    }
    if spec.endpoint_is_http() {
        builder = builder.with_config(GoogleConfigKey::Client(ClientConfigKey::AllowHttp), "true");
    }
    builder
}

/// A credentials file named by a variable must be readable; the message names the variable
/// and the path, never the file's contents.
fn check_gcs_credential_files(env: &StageEnv) -> std::result::Result<(), String> {
    for var in GCS_CREDENTIAL_FILE_VARS {
        if let Some(path) = env.get(var)
            && let Err(e) = std::fs::File::open(path)
        {
            return Err(format!(
                "{var} names the credentials file {path}, which cannot be read: {e}"
            ));
        }
    }
    Ok(())
}

/// Percent-encodes what may not appear in a URL path; `/` stays.
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    use super::*;

    fn spec(url: &str) -> StageSpec {
        StageSpec::url(url)
    }

    fn build(spec: &StageSpec, env: &StageEnv) -> Result<Stage> {
        let location = spec.validate("job.toml")?;
        Stage::build(spec, &location, "job.toml", env)
    }

    #[tokio::test]
    async fn local_stage_urls_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("st");
        let stage = Stage::from_spec(&StageSpec::local(&root), "job.toml").await.unwrap();
        let abs = std::fs::canonicalize(&root).unwrap();
        assert_eq!(stage.kind(), StageKind::Local);
        assert_eq!(stage.url(), format!("file://{}", abs.display()));
        let part = Stage::part_path("job", 1, 2, 3);
        assert_eq!(
            stage.file_url(&part),
            format!(
                "file://{}/job/chunk-000001/attempt-002/part-0003.parquet",
                abs.display()
            )
        );
        stage.store().put(&part, PutPayload::from_static(b"x")).await.unwrap();
        assert!(abs.join("job/chunk-000001/attempt-002/part-0003.parquet").exists());

        let by_url = Stage::from_spec(&spec(&format!("file://{}", abs.display())), "job.toml")
            .await
            .unwrap();
        assert_eq!(by_url.url(), stage.url());
        let listed: Vec<_> = by_url.store().list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1, "the probe leaves nothing behind");
    }

    #[tokio::test]
    async fn deleting_a_chunk_s_parts_removes_its_empty_directories_but_not_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("st");
        let stage = Stage::from_spec(&StageSpec::local(&root), "job.toml").await.unwrap();
        for part in [Stage::part_path("job", 1, 1, 0), Stage::part_path("job", 1, 2, 0)] {
            stage.store().put(&part, PutPayload::from_static(b"x")).await.unwrap();
        }
        let other = Stage::part_path("job", 2, 1, 0);
        stage.store().put(&other, PutPayload::from_static(b"x")).await.unwrap();
        let parts: Vec<_> = stage
            .store()
            .list(Some(&Stage::chunk_prefix("job", 1)))
            .try_collect()
            .await
            .unwrap();
        for meta in parts {
            stage.store().delete(&meta.location).await.unwrap();
        }
        assert!(
            !root.join("job/chunk-000001").exists(),
            "empty attempt directories are left"
        );
        assert!(root.join("job/chunk-000002/attempt-001").is_dir());
        stage.store().delete(&other).await.unwrap();
        assert!(root.is_dir() && !root.join("job").exists());
    }

    #[test]
    fn an_unprobed_stage_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("not-yet");
        let stage = Stage::unprobed(&StageSpec::local(&root), "job.toml").unwrap();
        assert_eq!(stage.kind(), StageKind::Local);
        assert_eq!(stage.url(), format!("file://{}", root.display()));
        assert!(!root.exists());
        let e = Stage::unprobed(&spec("ftp://x"), "job.toml").unwrap_err().to_string();
        assert!(e.contains("stage.url"), "{e}");
    }

    #[tokio::test]
    async fn an_unwritable_local_stage_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let e = Stage::from_spec(&StageSpec::local(file.join("below")), "job.toml")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("job.toml: stage.path: "), "{e}");
        let url = spec(&format!("file://{}/below", file.display()));
        let e = Stage::from_spec(&url, "job.toml").await.unwrap_err().to_string();
        assert!(e.starts_with("job.toml: stage.url: "), "{e}");
    }

    #[test]
    fn percent_encoding_keeps_plain_paths() {
        assert_eq!(percent_encode_path("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(percent_encode_path("/my dir/ü"), "/my%20dir/%C3%BC");
    }

    #[test]
    fn s3_builder_takes_the_environment_and_the_spec_on_top() {
        let env = StageEnv::from_vars([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
            ("AWS_REGION", "eu-west-1"),
            ("HOME", "/root"),
        ]);
        let s = StageSpec {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("us-west-2".into()),
            ..spec("s3://bkt/pre/fix")
        };
        let b = s3_builder(&s, "bkt", &env);
        let get = |k| b.get_config_value(&k);
        assert_eq!(get(AmazonS3ConfigKey::Bucket).as_deref(), Some("bkt"));
        assert_eq!(get(AmazonS3ConfigKey::Region).as_deref(), Some("us-west-2"));
        assert_eq!(
            get(AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(get(AmazonS3ConfigKey::AccessKeyId).as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(
            get(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("true")
        );
        // Without a spec region the environment's applies.
        let b = s3_builder(&spec("s3://bkt"), "bkt", &env);
        assert_eq!(
            b.get_config_value(&AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            b.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
                .as_deref(),
            Some("false")
        );

        let stage = build(&s, &env).unwrap();
        assert_eq!(stage.kind(), StageKind::S3);
        assert_eq!(stage.url(), "s3://bkt/pre/fix");
        assert_eq!(
            stage.file_url(&Stage::part_path("j", 7, 1, 0)),
            "s3://bkt/pre/fix/j/chunk-000007/attempt-001/part-0000.parquet"
        );
        let shown = format!("{stage:?} {env:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!format!("{env:?}").contains("HOME"), "only cloud variables are kept");
    }

    #[test]
    fn gcs_urls_and_builder_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("adc.json");
        std::fs::write(&key_file, "{}").unwrap();
        let env = StageEnv::from_vars([("GOOGLE_APPLICATION_CREDENTIALS", key_file.to_str().unwrap())]);
        let s = spec("gs://bkt/exports/orders");
        let b = gcs_builder(&s, "bkt", &env);
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::ApplicationCredentials).as_deref(),
            key_file.to_str()
        );
        assert_eq!(b.get_config_value(&GoogleConfigKey::Bucket).as_deref(), Some("bkt"));

        let with_endpoint = StageSpec {
            endpoint: Some("http://127.0.0.1:4443".into()),
            ..s.clone()
        };
        let b = gcs_builder(&with_endpoint, "bkt", &StageEnv::default());
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::BaseUrl).as_deref(),
            Some("http://127.0.0.1:4443")
        );
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::Client(ClientConfigKey::AllowHttp))
                .as_deref(),
            Some("true")
        );
        let sa = StageEnv::from_vars([("SERVICE_ACCOUNT", "/sa.json")]);
        assert_eq!(
            gcs_builder(&s, "bkt", &sa)
                .get_config_value(&GoogleConfigKey::ServiceAccount)
                .as_deref(),
            Some("/sa.json")
        );
    }

    #[test]
    fn gcs_stage_builds_from_a_service_account_key_without_printing_it() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("sa.json");
        std::fs::write(&key_file, TEST_SERVICE_ACCOUNT).unwrap();
        let env = StageEnv::from_vars([("GOOGLE_SERVICE_ACCOUNT", key_file.to_str().unwrap())]);
        let stage = build(&spec("gs://bkt/exports"), &env).unwrap();
        assert_eq!(stage.kind(), StageKind::Gcs);
        assert_eq!(stage.url(), "gs://bkt/exports");
        assert_eq!(
            stage.file_url(&Stage::chunk_prefix("j", 2)),
            "gs://bkt/exports/j/chunk-000002"
        );
        let shown = format!("{stage:?}");
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains("client_email"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_gcs_credentials_file_names_the_variable() {
        let env = StageEnv::from_vars([("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")]);
        let e = build(&spec("gs://bkt/p"), &env).unwrap_err().to_string();
        assert!(e.starts_with("job.toml: stage.url: "), "{e}");
        assert!(e.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{e}");
        assert!(e.contains("/nonexistent/adc.json"), "{e}");
    }

    #[test]
    fn an_undecodable_gcs_credentials_file_is_a_config_error_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("adc.json");
        std::fs::write(&key_file, "not json s3cr3t-value").unwrap();
        let env = StageEnv::from_vars([("GOOGLE_APPLICATION_CREDENTIALS", key_file.to_str().unwrap())]);
        let e = build(&spec("gs://bkt/p"), &env).unwrap_err().to_string();
        assert!(e.starts_with("job.toml: stage.url: "), "{e}");
        assert!(!e.contains("s3cr3t-value"), "{e}");
    }

    /// A service-account file as emulators use them: `disable_oauth` means no token exchange,
    /// so the key is never parsed and may be a placeholder.
    const TEST_SERVICE_ACCOUNT: &str = r#"{
        "private_key": "-----BEGIN PRIVATE KEY-----\nplaceholder\n-----END PRIVATE KEY-----\n",
        "private_key_id": "k1",
        "client_email": "loader@example.iam.gserviceaccount.com",
        "disable_oauth": true
    }"#;
}
