//! S3 blob store (aws-sdk-s3). Files live at `<job id>/<name>` in one
//! bucket; uploads stream from disk, downloads stream to the client (or
//! redirect to a presigned URL when `s3.presign_secs` is set).

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use futures::StreamExt;
use std::path::Path;
use std::time::Duration;
use tokio_util::io::ReaderStream;

use kumulus_core::config::S3Config;
use kumulus_core::job::JobId;
use kumulus_core::ports::{is_safe_file_name, Blob, BlobStore, PortError, PortResult};

const BACKEND: &str = "s3";

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::unavailable(BACKEND, e)
}

#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
    presign: Option<Duration>,
}

fn key(job: JobId, name: &str) -> PortResult<String> {
    if !is_safe_file_name(name) {
        return Err(PortError::Internal(format!("unsafe file name {name:?}")));
    }
    Ok(format!("{job}/{name}"))
}

/// The full error text (the SDK's Display is only "service error").
fn describe<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl S3Blobs {
    pub fn new(cfg: &S3Config) -> Self {
        let creds = Credentials::new(
            cfg.access_key.expose(),
            cfg.secret_key.expose(),
            None,
            None,
            "kumulus-config",
        );
        let mut conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(creds)
            .force_path_style(cfg.path_style)
            // S3 servers other than AWS often lack the newer checksum headers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(Duration::from_secs(30))
                    .build(),
            );
        if !cfg.endpoint.is_empty() {
            conf = conf.endpoint_url(&cfg.endpoint);
        }
        Self {
            client: Client::from_conf(conf.build()),
            bucket: cfg.bucket.clone(),
            presign: (cfg.presign_secs > 0).then(|| Duration::from_secs(cfg.presign_secs)),
        }
    }

    /// Creates the bucket when it is missing.
    pub async fn ensure_bucket(&self) -> PortResult<()> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created bucket");
                Ok(())
            }
            Err(e) => {
                let err = e.into_service_error();
                if err.is_bucket_already_owned_by_you() || err.is_bucket_already_exists() {
                    Ok(())
                } else {
                    Err(unavailable(format!(
                        "cannot create bucket {}: {}",
                        self.bucket,
                        describe(&err)
                    )))
                }
            }
        }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put_file(&self, job: JobId, name: &str, path: &Path) -> PortResult<()> {
        let key = key(job, name)?;
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| PortError::Internal(format!("cannot read {}: {e}", path.display())))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(format!("cannot store {key}: {}", describe(&e))))?;
        Ok(())
    }

    async fn get(&self, job: JobId, name: &str) -> PortResult<Option<Blob>> {
        let key = key(job, name)?;
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let err = e.into_service_error();
                if err.is_no_such_key() {
                    return Ok(None);
                }
                return Err(unavailable(format!(
                    "cannot read {key}: {}",
                    describe(&err)
                )));
            }
        };
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let reader = out.body.into_async_read();
        Ok(Some(Blob {
            len,
            body: ReaderStream::new(reader).boxed(),
        }))
    }

    async fn remove_job(&self, job: JobId) -> PortResult<u64> {
        // Every key under `<job>/`, page by page; each deleted on its own
        // (DeleteObjects is not in every S3-compatible server).
        let prefix = format!("{job}/");
        let mut removed = 0;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| unavailable(format!("cannot list {prefix}: {}", describe(&e))))?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| unavailable(format!("cannot remove {key}: {}", describe(&e))))?;
                removed += 1;
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(removed),
            }
        }
    }

    async fn presign(&self, job: JobId, name: &str) -> PortResult<Option<String>> {
        let Some(ttl) = self.presign else {
            return Ok(None);
        };
        let key = key(job, name)?;
        let config =
            PresigningConfig::expires_in(ttl).map_err(|e| PortError::Internal(e.to_string()))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .presigned(config)
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        Ok(Some(req.uri().to_string()))
    }
}
