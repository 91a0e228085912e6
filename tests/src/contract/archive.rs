//! The archive contract.

use relay_domain::ports::{Archive, ArchiveError, ObjectBody, PutOutcome};

/// Generates one `#[tokio::test]` per case; `$make` is an async fn returning a fresh archive.
#[macro_export]
macro_rules! archive_contract {
    ($make:path) => {
        mod archive_contract {
            use super::*;
            $crate::archive_contract!(@cases $make;
                put_if_absent_never_overwrites,
                get_of_a_missing_key_is_none,
                put_replaces,
                bytes_round_trip_exactly,
                metadata_s3_would_mangle_is_refused,
                a_named_version_reads_as_it_was_written,
            );
        }
    };
    (@cases $make:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::contract::archive::$case($make().await).await;
            }
        )+
    };
}

fn xml(body: &str) -> ObjectBody {
    ObjectBody::new(body.as_bytes().to_vec(), "application/xml")
        .with_metadata("trace-id", "abc123")
        .with_metadata("content-sha256", "q1w2")
}

pub async fn put_if_absent_never_overwrites<A: Archive>(archive: A) {
    let key = "archive/5265877635/00ff.xml";
    assert_eq!(archive.put_if_absent(key, xml("<first/>")).await.unwrap(), PutOutcome::Created);
    assert_eq!(
        archive.put_if_absent(key, xml("<second/>")).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    let got = archive.get(key).await.unwrap().unwrap();
    assert_eq!(got.bytes, b"<first/>");
    assert_eq!(got.content_type, "application/xml");
    assert_eq!(got.metadata.get("trace-id").map(String::as_str), Some("abc123"));
}

pub async fn get_of_a_missing_key_is_none<A: Archive>(archive: A) {
    assert_eq!(archive.get("upo/5265877635/none.xml").await.unwrap(), None);
}

pub async fn put_replaces<A: Archive>(archive: A) {
    let key = "outbox/5265877635/FV-1.json";
    archive
        .put(key, ObjectBody::new(br#"{"state":"QUEUED"}"#.to_vec(), "application/json"))
        .await
        .unwrap();
    archive
        .put(key, ObjectBody::new(br#"{"state":"ACCEPTED"}"#.to_vec(), "application/json"))
        .await
        .unwrap();
    assert_eq!(archive.get(key).await.unwrap().unwrap().bytes, br#"{"state":"ACCEPTED"}"#);
}

pub async fn bytes_round_trip_exactly<A: Archive>(archive: A) {
    // CRLF, a BOM-like prefix, invalid UTF-8 and a megabyte: the archive keeps bytes, not text.
    let mut bytes = b"\xEF\xBB\xBF<a>\r\n\xFF\xFE</a>".to_vec();
    bytes.extend((0..1_000_000u32).map(|i| (i % 251) as u8));
    let key = "archive/5265877635/bytes.xml";
    archive
        .put_if_absent(key, ObjectBody::new(bytes.clone(), "application/octet-stream"))
        .await
        .unwrap();
    let got = archive.get(key).await.unwrap().unwrap();
    assert_eq!(got.bytes.len(), bytes.len());
    assert!(got.bytes == bytes, "bytes differ");
}

pub async fn metadata_s3_would_mangle_is_refused<A: Archive>(archive: A) {
    let upper = ObjectBody::new(b"x".to_vec(), "text/plain").with_metadata("Trace-Id", "x");
    assert!(matches!(
        archive.put_if_absent("k/upper", upper).await,
        Err(ArchiveError::Invalid(_))
    ));
    let polish = ObjectBody::new(b"x".to_vec(), "text/plain").with_metadata("name", "Zażółć");
    assert!(matches!(archive.put("k/polish", polish).await, Err(ArchiveError::Invalid(_))));
    assert!(matches!(archive.get("/leading-slash").await, Err(ArchiveError::Invalid(_))));
    assert_eq!(archive.get("k/upper").await.unwrap(), None, "nothing refused was stored");
}

pub async fn a_named_version_reads_as_it_was_written<A: Archive>(archive: A) {
    // The ERP overwrites an upload before the intake reads it: each event's version is intact.
    let key = "inbox/5265877635/FV-1.xml";
    assert_eq!(archive.current_version(key).await.unwrap(), None, "no object, no version");
    archive.put(key, xml("<first/>")).await.unwrap();
    let first = archive.current_version(key).await.unwrap().expect("a versioned store");
    archive.put(key, xml("<second/>")).await.unwrap();
    let second = archive.current_version(key).await.unwrap().unwrap();
    assert_ne!(first, second);
    let got = archive.get_version(key, &first).await.unwrap().unwrap();
    assert_eq!(
        (got.bytes.as_slice(), got.metadata.get("trace-id").map(String::as_str)),
        (&b"<first/>"[..], Some("abc123"))
    );
    assert_eq!(archive.get_version(key, &second).await.unwrap().unwrap().bytes, b"<second/>");
    assert_eq!(
        archive.get(key).await.unwrap().unwrap().bytes,
        b"<second/>",
        "plain get reads the current one"
    );
    assert_eq!(
        archive.get_version("inbox/5265877635/none.xml", &first).await.unwrap(),
        None,
        "a version of another key is nothing"
    );
}
