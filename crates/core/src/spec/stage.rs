//! `[stage]`: where Parquet parts wait between the writer and the destination.
//!
//! A stage is a local directory (`path = "dir"`, or `url = "file:///abs/dir"`) or an object store
//! prefix (`url = "s3://bucket/prefix"`, `url = "gs://bucket/prefix"`). Credentials never appear
//! here: they come from the environment and the machine's identity when the stage is built
//! ([`crate::stage::Stage::from_spec`]). [`StageSpec::validate`] is pure.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[stage]`: exactly one of `path` and `url`, plus options for object stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// A local directory (created when missing); shorthand for a `file://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `s3://bucket/prefix`, `gs://bucket/prefix` or `file:///absolute/dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Endpoint of an S3-compatible store (or a GCS base URL), e.g. `http://127.0.0.1:9000`;
    /// plain `http://` is allowed only because it is written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region; defaults to the environment's (`AWS_REGION`, `AWS_DEFAULT_REGION`), else
    /// `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Which kind of store a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// A local directory.
    Local,
    /// Amazon S3 or an S3-compatible store.
    S3,
    /// Google Cloud Storage.
    Gcs,
}

impl StageKind {
    /// The URL scheme of the kind: `file`, `s3` or `gs`.
    pub fn scheme(self) -> &'static str {
        match self {
            StageKind::Local => "file",
            StageKind::S3 => "s3",
            StageKind::Gcs => "gs",
        }
    }
}

/// Where a validated stage is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageLocation {
    /// A local directory. `key` is the spec key it came from (`stage.path` or `stage.url`).
    Local {
        /// The directory (relative paths are resolved by [`StageSpec::resolve_paths`]).
        dir: PathBuf,
        /// `stage.path` or `stage.url`, for errors.
        key: &'static str,
    },
    /// A bucket and a prefix in an object store.
    Bucket {
        /// S3 or GCS.
        kind: StageKind,
        /// The bucket name.
        bucket: String,
        /// The prefix inside the bucket, without leading or trailing `/`; may be empty.
        prefix: String,
    },
}

impl StageLocation {
    /// The kind of store.
    pub fn kind(&self) -> StageKind {
        match self {
            StageLocation::Local { .. } => StageKind::Local,
            StageLocation::Bucket { kind, .. } => *kind,
        }
    }

    /// The spec key that names where the stage is (`stage.path` or `stage.url`).
    pub fn key(&self) -> &'static str {
        match self {
            StageLocation::Local { key, .. } => key,
            StageLocation::Bucket { .. } => "stage.url",
        }
    }
}

impl StageSpec {
    /// A local directory stage.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        StageSpec {
            path: Some(dir.into()),
            ..StageSpec::default()
        }
    }

    /// A stage at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        StageSpec {
            url: Some(url.into()),
            ..StageSpec::default()
        }
    }

    /// Pure validation: the location is well formed, and options fit its kind. `origin` names
    /// the spec file in errors.
    pub fn validate(&self, origin: &str) -> Result<StageLocation> {
        let err = |field: &str, msg: String| Error::config(origin, field, msg);
        let location = match (&self.path, &self.url) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "stage",
                    "give either `path` (a local directory) or `url`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(err(
                    "stage",
                    "missing `url` (s3://bucket/prefix, gs://bucket/prefix, file:///dir) or `path` (a local directory)"
                        .into(),
                ));
            }
            (Some(path), None) => {
                if path.as_os_str().is_empty() {
                    return Err(err("stage.path", "must not be empty".into()));
                }
                StageLocation::Local {
                    dir: path.clone(),
                    key: "stage.path",
                }
            }
            (None, Some(url)) => parse_url(url).map_err(|m| err("stage.url", m))?,
        };
        if let Some(endpoint) = &self.endpoint {
            if location.kind() == StageKind::Local {
                return Err(err("stage.endpoint", "is only for s3:// and gs:// stages".into()));
            }
            check_endpoint(endpoint).map_err(|m| err("stage.endpoint", m))?;
        }
        if let Some(region) = &self.region {
            if location.kind() != StageKind::S3 {
                return Err(err("stage.region", "is only for s3:// stages".into()));
            }
            let plain = !region.is_empty()
                && region
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
            if !plain {
                return Err(err(
                    "stage.region",
                    format!("`{region}` is not a region name such as `eu-west-1`"),
                ));
            }
        }
        Ok(location)
    }

    /// Makes a relative `path` relative to `base` (the spec file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.path.as_mut()
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
    }

    /// Whether `endpoint` is plain HTTP, which the store must then be told to allow.
    pub fn endpoint_is_http(&self) -> bool {
        self.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))
    }
}

/// Parses `s3://bucket/prefix`, `gs://bucket/prefix` or `file:///dir`. Messages never repeat a
/// URL that looks like it holds credentials.
fn parse_url(url: &str) -> std::result::Result<StageLocation, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{url}` is not a URL; use s3://bucket/prefix, gs://bucket/prefix or file:///dir"
        ));
    };
    let kind = match scheme {
        "s3" => StageKind::S3,
        "gs" => StageKind::Gcs,
        "file" => StageKind::Local,
        other => {
            return Err(format!(
                "unsupported scheme `{other}://`; use s3://bucket/prefix, gs://bucket/prefix or file:///dir"
            ));
        }
    };
    if rest.contains(['?', '#']) {
        return Err("must not have a query or fragment (`?`, `#`)".into());
    }
    if kind == StageKind::Local {
        if !rest.starts_with('/') {
            return Err("a file URL needs an absolute path: file:///dir (three slashes)".into());
        }
        let dir = rest.trim_end_matches('/');
        if dir.is_empty() {
            return Err("a file URL needs a directory below `/`".into());
        }
        return Ok(StageLocation::Local {
            dir: PathBuf::from(dir),
            key: "stage.url",
        });
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') || bucket.contains(':') {
        return Err("must not hold credentials or a port; credentials come from the environment".into());
    }
    if !is_valid_bucket(bucket) {
        return Err(format!(
            "`{bucket}` is not a bucket name: 3-63 lower-case letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty() {
        object_store::path::Path::parse(prefix)
            .map_err(|e| format!("prefix `{prefix}` is not a valid object path: {e}"))?;
    }
    Ok(StageLocation::Bucket {
        kind,
        bucket: bucket.into(),
        prefix: prefix.into(),
    })
}

/// The naming rule both S3 and GCS share (GCS allows longer dotted names, which we do not need).
fn is_valid_bucket(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.' || *c == b'_')
}

/// An endpoint is `http(s)://host[:port][/path]` without credentials.
fn check_endpoint(endpoint: &str) -> std::result::Result<(), String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| format!("`{endpoint}` is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not hold credentials; they come from the environment".into());
    }
    if authority.is_empty() || endpoint.contains(char::is_whitespace) || rest.contains(['?', '#']) {
        return Err(format!("`{endpoint}` is not a URL with a host"));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("`{endpoint}` has an invalid port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: StageSpec) -> std::result::Result<StageLocation, String> {
        spec.validate("job.toml").map_err(|e| e.to_string())
    }

    fn with(url: &str, endpoint: Option<&str>, region: Option<&str>) -> StageSpec {
        StageSpec {
            endpoint: endpoint.map(Into::into),
            region: region.map(Into::into),
            ..StageSpec::url(url)
        }
    }

    #[test]
    fn urls_of_each_kind_parse() {
        assert_eq!(
            check(StageSpec::url("s3://my-bucket/some/prefix/")).unwrap(),
            StageLocation::Bucket {
                kind: StageKind::S3,
                bucket: "my-bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            check(StageSpec::url("gs://bkt")).unwrap(),
            StageLocation::Bucket {
                kind: StageKind::Gcs,
                bucket: "bkt".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            check(StageSpec::url("file:///var/stage/")).unwrap(),
            StageLocation::Local {
                dir: "/var/stage".into(),
                key: "stage.url"
            }
        );
        assert_eq!(check(StageSpec::local("st")).unwrap().key(), "stage.path");
    }

    #[test]
    fn bad_urls_name_file_and_key() {
        for (url, needle) in [
            ("ftp://x", "unsupported scheme `ftp://`"),
            ("bucket/prefix", "is not a URL"),
            ("s3://", "is not a bucket name"),
            ("s3:///prefix", "is not a bucket name"),
            ("s3://Upper/p", "is not a bucket name"),
            ("gs://bkt/a//c", "not a valid object path"),
            ("s3://bkt/a/../b", "not a valid object path"),
            ("file://relative/dir", "absolute path"),
            ("s3://bkt/p?x=1", "query"),
        ] {
            let e = check(StageSpec::url(url)).unwrap_err();
            assert!(e.starts_with("job.toml: stage.url: "), "{url}: {e}");
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_echoing_them() {
        let e = check(StageSpec::url("s3://AKIAX:s3cr3t@bucket/p")).unwrap_err();
        assert!(e.contains("stage.url") && !e.contains("s3cr3t"), "{e}");
        let e = check(with("s3://bkt/p", Some("http://user:s3cr3t@127.0.0.1:9000"), None)).unwrap_err();
        assert!(e.contains("stage.endpoint") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn exactly_one_of_path_and_url() {
        let both = StageSpec {
            path: Some("st".into()),
            ..StageSpec::url("s3://bkt")
        };
        assert!(check(both).unwrap_err().contains("job.toml: stage: "));
        assert!(check(StageSpec::default()).unwrap_err().contains("missing `url`"));
        assert!(check(StageSpec::local("")).unwrap_err().contains("stage.path"));
    }

    #[test]
    fn endpoint_and_region_fit_the_kind() {
        check(with("s3://bkt/p", Some("http://127.0.0.1:9000"), Some("eu-west-1"))).unwrap();
        check(with("gs://bkt/p", Some("https://storage.example.com"), None)).unwrap();
        for (spec, key) in [
            (with("s3://bkt", Some("127.0.0.1:9000"), None), "stage.endpoint"),
            (with("s3://bkt", Some("http://"), None), "stage.endpoint"),
            (with("s3://bkt", Some("http://h:port"), None), "stage.endpoint"),
            (with("file:///d", Some("http://h"), None), "stage.endpoint"),
            (with("gs://bkt", None, Some("eu-west-1")), "stage.region"),
            (with("s3://bkt", None, Some("EU West")), "stage.region"),
        ] {
            let e = check(spec).unwrap_err();
            assert!(e.starts_with(&format!("job.toml: {key}: ")), "{e}");
        }
        assert!(with("s3://b", Some("http://h:1"), None).endpoint_is_http());
        assert!(!with("s3://b", Some("https://h"), None).endpoint_is_http());
    }

    #[test]
    fn unknown_keys_are_refused_and_old_specs_serialize_unchanged() {
        let e = toml::from_str::<StageSpec>("url = \"s3://b\"\naccess_key = \"x\"").unwrap_err();
        assert!(e.to_string().contains("access_key"), "{e}");
        let spec: StageSpec = toml::from_str("path = \"stage\"").unwrap();
        assert_eq!(toml::to_string(&spec).unwrap().trim(), "path = \"stage\"");
    }

    #[test]
    fn relative_paths_resolve_against_the_spec_dir() {
        let mut spec = StageSpec::local("st");
        spec.resolve_paths(Path::new("/jobs"));
        assert_eq!(spec.path.as_deref(), Some(Path::new("/jobs/st")));
        let mut url = StageSpec::url("s3://bkt/p");
        url.resolve_paths(Path::new("/jobs"));
        assert_eq!(url, StageSpec::url("s3://bkt/p"));
    }
}
