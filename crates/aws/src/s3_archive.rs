//! The archive port on S3. Put-if-absent is S3's conditional write (`If-None-Match: *`), so two
//! writers racing for one key cannot both win and nothing is ever overwritten. The bucket is
//! versioned: a read may name the version an S3 event announced.

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use relay_domain::ports::archive::check_key;
use relay_domain::ports::{Archive, ArchiveError, ObjectBody, PutOutcome};

/// One S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Archive {
    client: aws_sdk_s3::Client,
    bucket: String,
}

fn unavailable<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(op: &str, e: SdkError<E, R>) -> ArchiveError {
    ArchiveError::Unavailable(format!("S3 {op}: {}", DisplayErrorContext(&e)))
}

impl S3Archive {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Archive {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn put_request(&self, key: &str, body: ObjectBody) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(body.content_type)
            .set_metadata((!body.metadata.is_empty()).then(|| body.metadata.into_iter().collect()))
            .body(ByteStream::from(body.bytes))
    }
}

impl S3Archive {
    /// GetObject, of one version or the current one; a missing key or version is None.
    async fn read(&self, key: &str, version_id: Option<&str>) -> Result<Option<ObjectBody>, ArchiveError> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned));
        let out = match request.send().await {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_key() || s.code() == Some("NoSuchVersion")) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(unavailable("GetObject", e)),
        };
        let content_type = out.content_type().unwrap_or("application/octet-stream").to_owned();
        let metadata = out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| ArchiveError::Unavailable(format!("S3 GetObject body: {e}")))?
            .into_bytes()
            .to_vec();
        Ok(Some(ObjectBody {
            bytes,
            content_type,
            metadata,
        }))
    }
}

#[async_trait]
impl Archive for S3Archive {
    async fn put_if_absent(&self, key: &str, body: ObjectBody) -> Result<PutOutcome, ArchiveError> {
        check_key(key)?;
        body.check()?;
        match self.put_request(key, body).if_none_match("*").send().await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let code = e.as_service_error().and_then(|s| s.code()).map(str::to_owned);
                if status == Some(412) || code.as_deref() == Some("PreconditionFailed") {
                    Ok(PutOutcome::AlreadyExists)
                } else {
                    // 409 ConditionalRequestConflict: a concurrent write to the key is in flight; retry.
                    Err(unavailable("PutObject", e))
                }
            }
        }
    }

    async fn put(&self, key: &str, body: ObjectBody) -> Result<(), ArchiveError> {
        check_key(key)?;
        body.check()?;
        self.put_request(key, body).send().await.map_err(|e| unavailable("PutObject", e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        check_key(key)?;
        self.read(key, None).await
    }

    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        check_key(key)?;
        self.read(key, Some(version_id)).await
    }

    async fn current_version(&self, key: &str) -> Result<Option<String>, ArchiveError> {
        check_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(out.version_id().filter(|v| *v != "null").map(str::to_owned)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(unavailable("HeadObject", e)),
        }
    }
}
