//! S3 stages through object_store's S3 client with the stage's temporary credentials: one PUT
//! for a small file, a multipart upload for a large one. object_store retries each request
//! (each part on its own) on throttling and transient failures, so a failed part is sent again
//! without re-sending the parts before it.

use std::time::Duration;

use backhaul_core::ErrorClass;
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, ObjectStore, PutMultipartOptions, PutOptions as StorePutOptions, PutPayload,
    RetryConfig,
};

use super::FileMeta;
use super::answer::StageAnswer;
use super::failure::{Backoff, UploadError};
use super::parts::PartReader;
use crate::error::{Error, Result};

/// Where one file goes.
pub(crate) struct S3Target {
    store: AmazonS3,
    key: Path,
}

impl S3Target {
    pub(crate) fn new(answer: &StageAnswer, name: &str, backoff: &Backoff) -> Result<S3Target> {
        let (bucket, prefix) = answer.bucket_and_prefix();
        let creds = &answer.creds;
        let (Some(key_id), Some(secret)) = (&creds.aws_key_id, &creds.aws_secret_key) else {
            return Err(Error::Protocol(
                "S3 stage answer lacks AWS_KEY_ID or AWS_SECRET_KEY".into(),
            ));
        };
        let region = answer.region.clone().unwrap_or_else(|| "us-east-1".into());
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(&region)
            .with_access_key_id(key_id.expose())
            .with_secret_access_key(secret.expose())
            // The body is not hashed for the signature (as the official connectors do): no
            // CPU pass over every part on the IO runtime.
            .with_unsigned_payload(true)
            .with_retry(RetryConfig {
                max_retries: backoff.max_attempts.saturating_sub(1) as usize,
                retry_timeout: Duration::from_secs(300),
                backoff: BackoffConfig {
                    init_backoff: backoff.base_delay,
                    max_backoff: backoff.max_delay,
                    base: 2.0,
                },
            });
        if let Some(token) = &creds.aws_token {
            builder = builder.with_token(token.expose());
        }
        match answer.endpoint.as_deref() {
            // An endpoint with a scheme is an S3-compatible service URL, addressed path-style.
            Some(endpoint) if endpoint.contains("://") => {
                builder = builder
                    .with_endpoint(endpoint.trim_end_matches('/'))
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            // Snowflake sends a host suffix (FIPS, private link): virtual-hosted style.
            Some(endpoint) => {
                builder = builder
                    .with_endpoint(format!("https://{bucket}.{}", endpoint.trim_end_matches('/')))
                    .with_virtual_hosted_style_request(true);
            }
            None if region.starts_with("cn-") => {
                builder = builder
                    .with_endpoint(format!("https://{bucket}.s3.{region}.amazonaws.com.cn"))
                    .with_virtual_hosted_style_request(true);
            }
            // `<bucket>.s3.<region>.amazonaws.com`: regional (what `useS3RegionalUrl` asks
            // for, and right for every region) and virtual-hosted, which every bucket supports
            // (path-style does not work for buckets made since 2020).
            None => builder = builder.with_virtual_hosted_style_request(true),
        }
        let store = builder
            .build()
            .map_err(|e| Error::Protocol(format!("S3 stage answer unusable: {e}")))?;
        let key = Path::parse(format!("{prefix}{name}"))
            .map_err(|e| Error::Protocol(format!("S3 key for {name} is not valid: {e}")))?;
        Ok(S3Target { store, key })
    }

    fn attributes(meta: &FileMeta) -> Attributes {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::Metadata("sfc-digest".into()), meta.digest.clone().into());
        if let Some(enc) = &meta.encryption {
            attributes.insert(Attribute::Metadata("x-amz-key".into()), enc.wrapped_key.clone().into());
            attributes.insert(Attribute::Metadata("x-amz-iv".into()), enc.iv.clone().into());
            attributes.insert(Attribute::Metadata("x-amz-matdesc".into()), enc.matdesc.clone().into());
        }
        attributes
    }

    pub(crate) async fn put_single(&self, name: &str, body: Bytes, meta: &FileMeta) -> Result<(), UploadError> {
        let options = StorePutOptions {
            attributes: Self::attributes(meta),
            ..Default::default()
        };
        self.store
            .put_opts(&self.key, PutPayload::from_bytes(body), options)
            .await
            .map(|_| ())
            .map_err(|e| store_error(name, e))
    }

    pub(crate) async fn put_parts(
        &self,
        name: &str,
        mut reader: PartReader,
        meta: &FileMeta,
    ) -> Result<(), UploadError> {
        let options = PutMultipartOptions {
            attributes: Self::attributes(meta),
            ..Default::default()
        };
        let mut upload = self
            .store
            .put_multipart_opts(&self.key, options)
            .await
            .map_err(|e| store_error(name, e))?;
        let result = async {
            while let Some(part) = reader.next_part().await? {
                upload
                    .put_part(PutPayload::from_bytes(part))
                    .await
                    .map_err(|e| store_error(name, e))?;
            }
            upload.complete().await.map_err(|e| store_error(name, e))
        }
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                // Leave no half-finished upload behind (it would be billed until it expires).
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(file = name, error = %abort, "aborting the S3 multipart upload failed");
                }
                Err(e)
            }
        }
    }
}

/// object_store has already retried throttled and transient failures. What is left: refused
/// credentials (403/401), and failures it reports without a status (`Generic`) — among them
/// S3's `400 ExpiredToken` and 5xx after the retries ran out — which get one credential refresh
/// and then count as transient; network failures are transient.
fn store_error(file: &str, e: object_store::Error) -> UploadError {
    let message = format!("S3 upload: {e}");
    match e {
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            UploadError::permanent(file, message).suspect_credentials()
        }
        object_store::Error::Generic { ref source, .. } if is_network(source.as_ref()) => {
            UploadError::new(file, message, ErrorClass::Transient)
        }
        object_store::Error::Generic { .. } => {
            UploadError::new(file, message, ErrorClass::Transient).suspect_credentials()
        }
        _ => UploadError::permanent(file, message),
    }
}

fn is_network(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<object_store::client::HttpError>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}
