//! S3 ObjectCreated notifications as they arrive in an SQS message body: from real S3, and from
//! the local emulator, which omits `userIdentity`, `requestParameters` and `responseElements`
//! (so `aws_lambda_events::s3::S3Event` cannot parse it). Setting up a notification also sends
//! an `s3:TestEvent` with no records, which is skipped. Keys arrive form-urlencoded (S3 leaves
//! `/` alone, the emulator encodes it, both turn a space into `+`), so `+` becomes a space and
//! then percent-escapes are decoded: that reads all of them right.

use serde::Deserialize;

/// One object an event says was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    pub bucket: String,
    /// The decoded key.
    pub key: String,
    pub size: Option<u64>,
    pub event_name: String,
    pub version_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3EventError {
    #[error("the message is not an S3 notification: {0}")]
    NotANotification(String),
    #[error("object key {0:?} is not valid percent-encoded UTF-8")]
    BadKey(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    #[serde(default)]
    records: Option<Vec<Record>>,
    #[serde(default)]
    event: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    version_id: Option<String>,
}

/// Decodes an S3 event key: `+` is a space, then percent-escapes.
pub fn decode_key(raw: &str) -> Result<String, S3EventError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| S3EventError::BadKey(raw.to_owned()))
}

/// The created objects in one SQS message body; empty for `s3:TestEvent` and non-create events.
pub fn created_objects(body: &str) -> Result<Vec<CreatedObject>, S3EventError> {
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| S3EventError::NotANotification(e.to_string()))?;
    if envelope.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let records = envelope
        .records
        .ok_or_else(|| S3EventError::NotANotification("no Records and not an s3:TestEvent".into()))?;
    records
        .into_iter()
        .filter(|r| r.event_name.starts_with("ObjectCreated:"))
        .map(|r| {
            Ok(CreatedObject {
                bucket: r.s3.bucket.name,
                key: decode_key(&r.s3.object.key)?,
                size: r.s3.object.size,
                event_name: r.event_name,
                version_id: r.s3.object.version_id,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As real S3 sends it (fields trimmed to the ones that matter, plus the ones moto omits).
    const AWS: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"eu-central-1","eventTime":"2026-11-21T10:00:00.000Z","eventName":"ObjectCreated:Put","userIdentity":{"principalId":"AWS:X"},"requestParameters":{"sourceIPAddress":"1.2.3.4"},"responseElements":{"x-amz-request-id":"R"},"s3":{"s3SchemaVersion":"1.0","configurationId":"inbox","bucket":{"name":"relay-bucket","ownerIdentity":{"principalId":"X"},"arn":"arn:aws:s3:::relay-bucket"},"object":{"key":"inbox/5265877635/FV+2026%2F01.xml","size":3387,"eTag":"e","versionId":"v1","sequencer":"0A"}}}]}"#;
    /// As moto sends it: no userIdentity/requestParameters/responseElements, `/` encoded too.
    const MOTO: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"eu-central-1","eventTime":"2026-11-21T10:00:00.000Z","eventName":"ObjectCreated:Put","s3":{"s3SchemaVersion":"1.0","configurationId":"inbox","bucket":{"name":"relay-bucket","arn":"arn:aws:s3:::relay-bucket"},"object":{"key":"inbox%2F5265877635%2Fwith+space%2Bplus.xml","size":10,"eTag":"e"}}}]}"#;
    const TEST_EVENT: &str = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-21T10:00:00.000Z","Bucket":"relay-bucket","RequestId":"R","HostId":"H"}"#;

    #[test]
    fn reads_real_s3_and_emulator_notifications() {
        let aws = created_objects(AWS).unwrap();
        assert_eq!(aws.len(), 1);
        assert_eq!(aws[0].key, "inbox/5265877635/FV 2026/01.xml");
        assert_eq!(
            (aws[0].bucket.as_str(), aws[0].size, aws[0].version_id.as_deref()),
            ("relay-bucket", Some(3387), Some("v1"))
        );
        let moto = created_objects(MOTO).unwrap();
        assert_eq!(moto[0].key, "inbox/5265877635/with space+plus.xml");
        assert_eq!(moto[0].version_id, None);
    }

    #[test]
    fn test_events_and_other_events_yield_nothing_and_junk_is_named() {
        assert!(created_objects(TEST_EVENT).unwrap().is_empty());
        let removed = AWS.replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        assert!(created_objects(&removed).unwrap().is_empty());
        assert!(matches!(created_objects("{}"), Err(S3EventError::NotANotification(_))));
        assert!(matches!(created_objects("not json"), Err(S3EventError::NotANotification(_))));
        assert!(matches!(decode_key("inbox/%FF.xml"), Err(S3EventError::BadKey(_))));
    }
}
