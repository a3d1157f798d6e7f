//! GCS stages: one HTTP PUT per file, to a presigned URL the server made for that file, or to
//! the XML API with the stage's access token (as the official connectors do). Large files are
//! streamed part by part with bounded memory; a failed stream is retried by the caller as a
//! whole file.

use bytes::Bytes;
use futures::stream;
use reqwest::header::CONTENT_LENGTH;

use super::FileMeta;
use super::answer::StageAnswer;
use super::failure::{Backoff, UploadError};
use super::http::{check_once, send_retrying};
use super::parts::PartReader;
use crate::error::{Error, Result};
use crate::session::Secret;

const DIGEST: &str = "x-goog-meta-sfc-digest";
const MATDESC: &str = "x-goog-meta-matdesc";
const ENCRYPTION_DATA: &str = "x-goog-meta-encryptiondata";
/// GCS's region whose stages need the regional endpoint (as the official connectors decide).
const REGIONAL_ONLY: &str = "me-central2";

/// Where one file goes.
pub(crate) struct GcsTarget {
    url: Secret,
    bearer: Option<Secret>,
}

impl GcsTarget {
    /// The target of `name`: the presigned URL when the answer carries one (it was made for
    /// this file), else the XML API URL with the access token.
    pub(crate) fn new(answer: &StageAnswer, name: &str) -> Result<GcsTarget> {
        if let Some(token) = &answer.creds.gcs_access_token {
            let (bucket, prefix) = answer.bucket_and_prefix();
            let base = match (&answer.endpoint, answer.use_virtual_url) {
                (Some(endpoint), _) => {
                    let endpoint = endpoint.trim_end_matches('/');
                    let endpoint = if endpoint.contains("://") {
                        endpoint.to_string()
                    } else {
                        format!("https://{endpoint}")
                    };
                    format!("{endpoint}/{bucket}/")
                }
                (None, true) => format!("https://{bucket}.storage.googleapis.com/"),
                (None, false) => match answer.region.as_deref() {
                    Some(region) if answer.use_s3_regional_url || region.eq_ignore_ascii_case(REGIONAL_ONLY) => {
                        format!(
                            "https://storage.{}.rep.googleapis.com/{bucket}/",
                            region.to_ascii_lowercase()
                        )
                    }
                    _ => format!("https://storage.googleapis.com/{bucket}/"),
                },
            };
            let mut url = reqwest::Url::parse(&base)
                .map_err(|e| Error::Protocol(format!("GCS stage endpoint is not a URL: {e}")))?;
            url.path_segments_mut()
                .map_err(|_| Error::Protocol("GCS stage endpoint cannot take a path".into()))?
                .pop_if_empty()
                .extend(prefix.split('/').filter(|s| !s.is_empty()))
                .push(name);
            return Ok(GcsTarget {
                url: Secret::new(url.to_string()),
                bearer: Some(token.clone()),
            });
        }
        match &answer.presigned_url {
            Some(url) => Ok(GcsTarget {
                url: url.clone(),
                bearer: None,
            }),
            None => Err(Error::Protocol(
                "GCS stage answer has neither an access token nor a presigned URL".into(),
            )),
        }
    }

    fn presigned(&self) -> bool {
        self.bearer.is_none()
    }

    fn request(&self, http: &reqwest::Client, meta: &FileMeta, len: u64) -> reqwest::RequestBuilder {
        let mut request = http
            .put(self.url.expose())
            .header(CONTENT_LENGTH, len)
            .header(DIGEST, &meta.digest);
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token.expose());
        }
        if let Some(enc) = &meta.encryption {
            request = request
                .header(ENCRYPTION_DATA, enc.encryption_data("AES_CBC_256"))
                .header(MATDESC, &enc.matdesc);
        }
        request
    }

    /// Uploads a body held in memory, retrying the PUT on transient failures.
    pub(crate) async fn put_single(
        &self,
        http: &reqwest::Client,
        backoff: &Backoff,
        name: &str,
        body: Bytes,
        meta: &FileMeta,
    ) -> Result<(), UploadError> {
        let len = body.len() as u64;
        send_retrying(name, "GCS PUT", self.presigned(), backoff, || {
            self.request(http, meta, len).body(body.clone())
        })
        .await
        .map(|_| ())
    }

    /// Streams a large file in one PUT of `len` bytes.
    pub(crate) async fn put_stream(
        &self,
        http: &reqwest::Client,
        name: &str,
        reader: PartReader,
        len: u64,
        meta: &FileMeta,
    ) -> Result<(), UploadError> {
        let (failure_tx, mut failure_rx) = tokio::sync::mpsc::channel::<UploadError>(1);
        let parts = stream::unfold((reader, failure_tx), |(mut reader, failure_tx)| async move {
            match reader.next_part().await {
                Ok(Some(part)) => Some((Ok::<Bytes, std::io::Error>(part), (reader, failure_tx))),
                Ok(None) => None,
                Err(e) => {
                    let message = e.error.to_string();
                    let _ = failure_tx.try_send(e);
                    Some((Err(std::io::Error::other(message)), (reader, failure_tx)))
                }
            }
        });
        let sent = self
            .request(http, meta, len)
            .body(reqwest::Body::wrap_stream(parts))
            .send()
            .await;
        // A source failure is reported as itself, not as the network error it caused.
        if let Ok(source_failure) = failure_rx.try_recv() {
            return Err(source_failure);
        }
        check_once(name, "GCS PUT", self.presigned(), sent).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(extra: serde_json::Value) -> StageAnswer {
        let mut info = serde_json::json!({"locationType": "GCS", "location": "sfc-gcs/stages/abc/",
                                          "creds": {"GCS_ACCESS_TOKEN": "ya29.x"}});
        info.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        StageAnswer::parse(&serde_json::json!({"command": "UPLOAD", "stageInfo": info})).unwrap()
    }

    #[test]
    fn token_urls_follow_the_stage_answer() {
        let url = |extra| {
            GcsTarget::new(&answer(extra), "a b.parquet")
                .unwrap()
                .url
                .expose()
                .to_string()
        };
        assert_eq!(
            url(serde_json::json!({})),
            "https://storage.googleapis.com/sfc-gcs/stages/abc/a%20b.parquet"
        );
        assert_eq!(
            url(serde_json::json!({"region": "ME-CENTRAL2"})),
            "https://storage.me-central2.rep.googleapis.com/sfc-gcs/stages/abc/a%20b.parquet"
        );
        assert_eq!(
            url(serde_json::json!({"useVirtualUrl": true})),
            "https://sfc-gcs.storage.googleapis.com/stages/abc/a%20b.parquet"
        );
        assert_eq!(
            url(serde_json::json!({"endPoint": "storage.example.net/"})),
            "https://storage.example.net/sfc-gcs/stages/abc/a%20b.parquet"
        );
    }
}
