//! Azure stages: Put Blob for a small file; Put Block per part and Put Block List for a large
//! one, so a failed part is retried alone (Microsoft's published Blob REST API, authorized by
//! the stage's SAS token).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use super::FileMeta;
use super::answer::StageAnswer;
use super::failure::{Backoff, UploadError};
use super::http::send_retrying;
use super::parts::PartReader;
use crate::error::{Error, Result};
use crate::session::Secret;

const API_VERSION: &str = "2021-08-06";
const DIGEST: &str = "x-ms-meta-sfcdigest";
const MATDESC: &str = "x-ms-meta-matdesc";
const ENCRYPTION_DATA: &str = "x-ms-meta-encryptiondata";

/// Where one file goes.
pub(crate) struct AzureTarget {
    /// The blob URL without the SAS token.
    blob_url: reqwest::Url,
    sas: Secret,
}

impl AzureTarget {
    pub(crate) fn new(answer: &StageAnswer, name: &str) -> Result<AzureTarget> {
        let account = answer
            .storage_account
            .as_deref()
            .ok_or_else(|| Error::Protocol("Azure stage answer has no storageAccount".into()))?;
        let sas = answer
            .creds
            .azure_sas_token
            .clone()
            .ok_or_else(|| Error::Protocol("Azure stage answer has no AZURE_SAS_TOKEN".into()))?;
        let endpoint = answer.endpoint.as_deref().unwrap_or("blob.core.windows.net");
        // An endpoint with a scheme is a full service URL in path style (`<url>/<account>`,
        // as Azure-compatible servers serve it); the usual form is the host suffix.
        let base = if endpoint.contains("://") {
            format!("{}/{account}/", endpoint.trim_end_matches('/'))
        } else {
            let suffix = endpoint.strip_prefix("blob.").unwrap_or(endpoint);
            format!("https://{account}.blob.{suffix}/")
        };
        let (container, prefix) = answer.bucket_and_prefix();
        let mut blob_url = reqwest::Url::parse(&base)
            .map_err(|e| Error::Protocol(format!("Azure stage endpoint is not a URL: {e}")))?;
        blob_url
            .path_segments_mut()
            .map_err(|_| Error::Protocol("Azure stage endpoint cannot take a path".into()))?
            .pop_if_empty()
            .push(&container)
            .extend(prefix.split('/').filter(|s| !s.is_empty()))
            .push(name);
        Ok(AzureTarget {
            blob_url,
            sas: Secret::new(sas.expose().trim_start_matches('?').to_string()),
        })
    }

    fn url(&self, operation: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.blob_url.clone();
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in operation {
                query.append_pair(k, v);
            }
        }
        // The SAS token is already encoded; append it as it came.
        let query = match url.query() {
            Some(q) if !q.is_empty() => format!("{q}&{}", self.sas.expose()),
            _ => self.sas.expose().to_string(),
        };
        url.set_query(Some(&query));
        url
    }

    fn metadata(request: reqwest::RequestBuilder, meta: &FileMeta) -> reqwest::RequestBuilder {
        let mut request = request.header(DIGEST, &meta.digest);
        if let Some(enc) = &meta.encryption {
            request = request
                .header(ENCRYPTION_DATA, enc.encryption_data("AES_CBC_128"))
                .header(MATDESC, &enc.matdesc);
        }
        request
    }

    fn put(&self, http: &reqwest::Client, url: reqwest::Url) -> reqwest::RequestBuilder {
        http.put(url)
            .header("x-ms-version", API_VERSION)
            .header("x-ms-date", httpdate_now())
    }

    /// Put Blob of a body held in memory.
    pub(crate) async fn put_single(
        &self,
        http: &reqwest::Client,
        backoff: &Backoff,
        name: &str,
        body: Bytes,
        meta: &FileMeta,
    ) -> Result<(), UploadError> {
        let url = self.url(&[]);
        send_retrying(name, "Azure Put Blob", false, backoff, || {
            let request = self
                .put(http, url.clone())
                .header("x-ms-blob-type", "BlockBlob")
                .header(CONTENT_LENGTH, body.len())
                .body(body.clone());
            Self::metadata(request, meta)
        })
        .await
        .map(|_| ())
    }

    /// Put Block for each part (each retried alone), then Put Block List with the metadata and
    /// the MD5 of the whole blob (which Azure does not compute for a blob made of blocks).
    pub(crate) async fn put_blocks(
        &self,
        http: &reqwest::Client,
        backoff: &Backoff,
        name: &str,
        mut reader: PartReader,
        meta: &FileMeta,
    ) -> Result<(), UploadError> {
        let mut block_ids = Vec::new();
        let mut md5 = Md5::new();
        while let Some(part) = reader.next_part().await? {
            let hashed = part.clone();
            md5 = tokio::task::spawn_blocking(move || {
                md5.update(&hashed);
                md5
            })
            .await
            .expect("hashing does not panic");
            // Block ids are base64 of equal-length strings within one blob.
            let id = STANDARD.encode(format!("backhaul-block-{:06}", block_ids.len()));
            let url = self.url(&[("comp", "block"), ("blockid", &id)]);
            send_retrying(name, "Azure Put Block", false, backoff, || {
                self.put(http, url.clone())
                    .header(CONTENT_LENGTH, part.len())
                    .body(part.clone())
            })
            .await?;
            block_ids.push(id);
        }
        let mut list = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for id in &block_ids {
            list.push_str("<Latest>");
            list.push_str(id);
            list.push_str("</Latest>");
        }
        list.push_str("</BlockList>");
        let list = Bytes::from(list);
        let content_md5 = STANDARD.encode(md5.finalize());
        let url = self.url(&[("comp", "blocklist")]);
        send_retrying(name, "Azure Put Block List", false, backoff, || {
            let request = self
                .put(http, url.clone())
                .header(CONTENT_TYPE, "application/xml")
                .header("x-ms-blob-content-md5", &content_md5)
                .header(CONTENT_LENGTH, list.len())
                .body(list.clone());
            Self::metadata(request, meta)
        })
        .await
        .map(|_| ())
    }
}

/// The current time in the HTTP date format Azure wants in `x-ms-date`.
fn httpdate_now() -> String {
    chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_azure_answer_gives_the_account_blob_url_with_the_sas_appended() {
        let answer = StageAnswer::parse(&serde_json::json!({
            "command": "UPLOAD",
            "stageInfo": {"locationType": "AZURE", "location": "stage-container/abc/users/1/", "endPoint": "blob.core.windows.net",
                          "storageAccount": "sfcacct", "region": "westus2",
                          "creds": {"AZURE_SAS_TOKEN": "?sv=2021-08-06&se=2030&sig=abc%2Bdef"}}
        }))
        .unwrap();
        let target = AzureTarget::new(&answer, "part 1.parquet").unwrap();
        assert_eq!(
            target.url(&[("comp", "block"), ("blockid", "YQ==")]).as_str(),
            "https://sfcacct.blob.core.windows.net/stage-container/abc/users/1/part%201.parquet\
             ?comp=block&blockid=YQ%3D%3D&sv=2021-08-06&se=2030&sig=abc%2Bdef"
        );
        assert_eq!(
            target.url(&[]).as_str(),
            "https://sfcacct.blob.core.windows.net/stage-container/abc/users/1/part%201.parquet\
             ?sv=2021-08-06&se=2030&sig=abc%2Bdef"
        );
    }
}
