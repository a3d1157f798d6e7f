//! The server's answer to a PUT statement: where the files go and with which credentials.
//!
//! Parsing is lenient on purpose: real Snowflake sends many fields (`ciphers`, `credExpiryTime`,
//! `presignedUrls`, …) and test servers omit most of them, so only what the upload needs is
//! read and every field has a default.

use std::fmt;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::session::Secret;

/// Where a stage keeps its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationType {
    /// Amazon S3 (or an S3-compatible endpoint).
    S3,
    /// Google Cloud Storage (with an access token or a presigned URL per file).
    Gcs,
    /// Azure Blob Storage (with a SAS token).
    Azure,
    /// The server's own file system (test servers only; nothing to upload to).
    LocalFs,
}

/// The parsed PUT answer (the `data` object of the PUT statement's response).
#[derive(Clone)]
pub struct StageAnswer {
    /// `UPLOAD` for PUT.
    pub command: String,
    /// The stage's kind.
    pub location_type: LocationType,
    /// `bucket/prefix/` (S3, GCS) or `container/prefix/` (Azure).
    pub location: String,
    /// The cloud region, when given.
    pub region: Option<String>,
    /// A storage endpoint the server asks for (FIPS, private link), when given.
    pub endpoint: Option<String>,
    /// S3: use the regional endpoint `s3.<region>.amazonaws.com`.
    pub use_s3_regional_url: bool,
    /// GCS: use `<bucket>.storage.googleapis.com`.
    pub use_virtual_url: bool,
    /// Azure: the storage account.
    pub storage_account: Option<String>,
    /// A presigned URL for the one file the statement named (GCS without a token).
    pub presigned_url: Option<Secret>,
    /// Temporary credentials.
    pub creds: StageCreds,
    /// The key material when the stage encrypts on the client (internal stages).
    pub encryption: Option<EncryptionMaterial>,
    /// The server's multipart threshold in bytes, when it says. Informational: parts are cut
    /// by [`crate::UploadTuning::part_size`], which also bounds memory.
    pub threshold: Option<u64>,
    /// The parallelism the server echoes back.
    pub parallel: Option<usize>,
}

impl fmt::Debug for StageAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageAnswer")
            .field("command", &self.command)
            .field("location_type", &self.location_type)
            .field("location", &self.location)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("storage_account", &self.storage_account)
            .field("presigned_url", &self.presigned_url.as_ref().map(|_| "***"))
            .field("creds", &self.creds)
            .field("encrypted", &self.encryption.is_some())
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// Temporary stage credentials; `Debug` shows only which ones are present.
#[derive(Clone, Default)]
pub struct StageCreds {
    /// `AWS_KEY_ID`.
    pub aws_key_id: Option<Secret>,
    /// `AWS_SECRET_KEY`.
    pub aws_secret_key: Option<Secret>,
    /// `AWS_TOKEN`.
    pub aws_token: Option<Secret>,
    /// `GCS_ACCESS_TOKEN`.
    pub gcs_access_token: Option<Secret>,
    /// `AZURE_SAS_TOKEN`.
    pub azure_sas_token: Option<Secret>,
}

impl fmt::Debug for StageCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = [
            ("AWS_KEY_ID", &self.aws_key_id),
            ("AWS_SECRET_KEY", &self.aws_secret_key),
            ("AWS_TOKEN", &self.aws_token),
            ("GCS_ACCESS_TOKEN", &self.gcs_access_token),
            ("AZURE_SAS_TOKEN", &self.azure_sas_token),
        ];
        let mut list = f.debug_map();
        for (name, value) in present {
            if value.is_some() {
                list.entry(&name, &"***");
            }
        }
        list.finish()
    }
}

/// The query stage master key and what names it (`encryptionMaterial`).
#[derive(Clone)]
pub struct EncryptionMaterial {
    /// The query stage master key, base64 (16 or 32 bytes decoded).
    pub query_stage_master_key: Secret,
    /// The PUT statement's query id (goes into the material descriptor).
    pub query_id: String,
    /// The stage master key id (a number on the wire, sometimes a string).
    pub smk_id: String,
}

impl fmt::Debug for EncryptionMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionMaterial")
            .field("query_stage_master_key", &"***")
            .field("query_id", &self.query_id)
            .field("smk_id", &self.smk_id)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAnswer {
    #[serde(default)]
    command: Option<String>,
    stage_info: Option<RawStageInfo>,
    #[serde(default)]
    encryption_material: serde_json::Value,
    #[serde(default)]
    threshold: Option<u64>,
    #[serde(default)]
    parallel: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStageInfo {
    location_type: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default, rename = "endPoint")]
    end_point: Option<String>,
    #[serde(default)]
    use_s3_regional_url: Option<bool>,
    #[serde(default)]
    use_regional_url: Option<bool>,
    #[serde(default)]
    use_virtual_url: Option<bool>,
    #[serde(default)]
    storage_account: Option<String>,
    #[serde(default)]
    presigned_url: Option<String>,
    #[serde(default)]
    creds: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    query_stage_master_key: String,
    #[serde(default)]
    query_id: Option<String>,
    #[serde(default)]
    smk_id: serde_json::Value,
}

impl StageAnswer {
    /// Reads the `data` object of a PUT statement's response.
    pub fn parse(data: &serde_json::Value) -> Result<StageAnswer> {
        let raw: RawAnswer = serde_json::from_value(data.clone())
            .map_err(|e| Error::Protocol(format!("PUT answer not understood: {e}")))?;
        let command = raw.command.unwrap_or_default();
        if !command.is_empty() && !command.eq_ignore_ascii_case("UPLOAD") {
            return Err(Error::Protocol(format!(
                "PUT answer has command {command:?}, expected UPLOAD"
            )));
        }
        let info = raw
            .stage_info
            .ok_or_else(|| Error::Protocol("PUT answer has no stageInfo".into()))?;
        let location_type = match info.location_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("S3") => LocationType::S3,
            Some("GCS") => LocationType::Gcs,
            Some("AZURE") => LocationType::Azure,
            Some("LOCAL_FS") => LocationType::LocalFs,
            other => {
                return Err(Error::Protocol(format!(
                    "PUT answer has stage locationType {other:?}, expected S3, GCS, AZURE or LOCAL_FS"
                )));
            }
        };
        let secret = |key: &str| {
            info.creds
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(Secret::new)
        };
        let creds = StageCreds {
            aws_key_id: secret("AWS_KEY_ID"),
            aws_secret_key: secret("AWS_SECRET_KEY"),
            aws_token: secret("AWS_TOKEN"),
            gcs_access_token: secret("GCS_ACCESS_TOKEN"),
            azure_sas_token: secret("AZURE_SAS_TOKEN"),
        };
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(StageAnswer {
            command,
            location_type,
            location: info.location.unwrap_or_default(),
            region: non_empty(info.region),
            endpoint: non_empty(info.end_point),
            use_s3_regional_url: info.use_s3_regional_url.or(info.use_regional_url).unwrap_or(false),
            use_virtual_url: info.use_virtual_url.unwrap_or(false),
            storage_account: non_empty(info.storage_account),
            presigned_url: non_empty(info.presigned_url).map(Secret::new),
            creds,
            encryption: parse_material(raw.encryption_material)?,
            threshold: raw.threshold,
            parallel: raw.parallel,
        })
    }

    /// `(bucket or container, key prefix ending in '/' or empty)` of `location`.
    pub fn bucket_and_prefix(&self) -> (String, String) {
        let (bucket, path) = self.location.split_once('/').unwrap_or((&self.location, ""));
        let mut prefix = path.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        (bucket.to_string(), prefix)
    }
}

/// `encryptionMaterial` is one object for PUT, a list (with nulls) for GET; absent or null
/// when the stage does not encrypt on the client.
fn parse_material(value: serde_json::Value) -> Result<Option<EncryptionMaterial>> {
    let value = match value {
        serde_json::Value::Array(items) => items.into_iter().find(|v| !v.is_null()),
        serde_json::Value::Null => None,
        other => Some(other),
    };
    let Some(value) = value else { return Ok(None) };
    let raw: RawMaterial = serde_json::from_value(value)
        .map_err(|e| Error::Protocol(format!("PUT answer's encryptionMaterial not understood: {e}")))?;
    let smk_id = match raw.smk_id {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    Ok(Some(EncryptionMaterial {
        query_stage_master_key: Secret::new(raw.query_stage_master_key),
        query_id: raw.query_id.unwrap_or_default(),
        smk_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like a real S3 internal-stage PUT answer: the fields the official Python
    /// connector's unit tests mock (`test/unit/test_s3_util.py`: `command`, `src_locations`,
    /// `stageInfo{creds, location, region, locationType, path, endPoint}`) plus the
    /// encryption material, threshold and parallelism real stages send.
    const S3_ANSWER: &str = r#"{
        "autoCompress": false, "command": "UPLOAD", "overwrite": true, "parallel": 4,
        "queryId": "01b2-put", "sourceCompression": "none", "src_locations": ["/tmp/a.parquet"],
        "encryptionMaterial": {"queryId": "01b2-put", "queryStageMasterKey": "AAECAwQFBgcICQoLDA0ODw==", "smkId": 11624616794387406},
        "stageInfo": {
            "ciphers": "AES_CBC", "isClientSideEncrypted": true,
            "creds": {"AWS_ID": "id", "AWS_KEY": "k", "AWS_KEY_ID": "id", "AWS_SECRET_KEY": "k", "AWS_TOKEN": "t"},
            "endPoint": null, "location": "sfc-bucket/z6x/users/1/backhaul/", "locationType": "S3",
            "path": "z6x/users/1/backhaul/", "region": "us-west-2", "storageAccount": null, "useS3RegionalUrl": false
        },
        "threshold": 209715200
    }"#;

    #[test]
    fn s3_answer_parses_with_material_and_threshold() {
        let answer = StageAnswer::parse(&serde_json::from_str(S3_ANSWER).unwrap()).unwrap();
        assert_eq!(answer.location_type, LocationType::S3);
        assert_eq!(
            answer.bucket_and_prefix(),
            ("sfc-bucket".to_string(), "z6x/users/1/backhaul/".to_string())
        );
        assert_eq!(answer.region.as_deref(), Some("us-west-2"));
        assert_eq!(answer.endpoint, None);
        assert_eq!(answer.threshold, Some(209_715_200));
        let material = answer.encryption.as_ref().unwrap();
        assert_eq!(material.smk_id, "11624616794387406");
        assert_eq!(material.query_id, "01b2-put");
        assert_eq!(answer.creds.aws_token.as_ref().unwrap().expose(), "t");
        let debug = format!("{answer:?}");
        assert!(!debug.contains("AAECAw"), "{debug}");
        assert!(debug.contains("AWS_SECRET_KEY"), "{debug}");
    }

    #[test]
    fn fakesnow_style_answer_parses_without_most_fields() {
        // What fakesnow 0.12 answers: a GCS stage with a presigned URL and nothing else.
        let data = serde_json::json!({
            "stageInfo": {"locationType": "GCS", "location": "fs_bucket/DB/SCH/ST/", "creds": {},
                          "presignedUrl": "http://127.0.0.1:1/fs_bucket/DB/SCH/ST/a.parquet?sig=1"},
            "src_locations": ["/x/a.parquet"], "parallel": 4, "autoCompress": false,
            "sourceCompression": "none", "overwrite": true, "command": "UPLOAD"
        });
        let answer = StageAnswer::parse(&data).unwrap();
        assert_eq!(answer.location_type, LocationType::Gcs);
        assert!(answer.encryption.is_none());
        assert!(answer.creds.gcs_access_token.is_none());
        assert!(!format!("{answer:?}").contains("sig=1"));
    }

    #[test]
    fn material_as_list_and_bad_location_type() {
        let data = serde_json::json!({
            "command": "UPLOAD",
            "stageInfo": {"locationType": "azure", "location": "container", "storageAccount": "acct",
                          "creds": {"AZURE_SAS_TOKEN": "?sv=1&sig=2"}},
            "encryptionMaterial": [null, {"queryStageMasterKey": "a2V5", "queryId": "q", "smkId": "7"}]
        });
        let answer = StageAnswer::parse(&data).unwrap();
        assert_eq!(answer.location_type, LocationType::Azure);
        assert_eq!(answer.bucket_and_prefix(), ("container".to_string(), String::new()));
        assert_eq!(answer.encryption.unwrap().smk_id, "7");

        let bad = serde_json::json!({"stageInfo": {"locationType": "FTP"}});
        assert!(matches!(StageAnswer::parse(&bad), Err(Error::Protocol(_))));
        let get = serde_json::json!({"command": "DOWNLOAD", "stageInfo": {"locationType": "S3"}});
        assert!(matches!(StageAnswer::parse(&get), Err(Error::Protocol(_))));
    }
}
