//! Batch sessions end to end: ZIP and tar.gz archives split into several encrypted parts,
//! uploaded without the token, processed, and read back per invoice from the session list.

mod common;

use common::*;
use ksef_client::{BatchArchive, SendOptions};
use relay_domain::{ContentHash, ErrorClass};

fn batch_invoices(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("{prefix}-{i}.xml"), invoice(&format!("{prefix}/{i}"))))
        .collect();
    // The sample with an attachment (Zalacznik): allowed in batch only.
    v.push(("przyklad-24.xml".into(), sample("FA_3_Przykład_24.xml")));
    v
}

async fn run_batch(archive: BatchArchive, part_size: usize) {
    run_batch_on(sim().await, archive, part_size).await;
}

async fn run_batch_on(sim: ksef_sim::SimHandle, archive: BatchArchive, part_size: usize) {
    let c = client(&sim);
    let session = c.open_batch_session(&archive, part_size, false).await.unwrap();
    assert!(
        session.parts.len() >= 3,
        "the archive is split into several parts ({})",
        session.parts.len()
    );
    assert_eq!(session.uploads.len(), session.parts.len());
    c.upload_batch_parts(&session).await.unwrap();
    c.close_batch_session(&session.reference).await.unwrap();
    let status = c.wait_for_session(&session.reference, POLL, WAIT).await.unwrap();
    assert_eq!(status.status.code, 200, "{:?}", status.status);
    let results = c.session_invoices(&session.reference).await.unwrap();
    assert_eq!(results.len(), archive.files.len());
    for (name, hash) in &archive.files {
        let r = results
            .iter()
            .find(|r| r.invoice_file_name.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(r.invoice_hash, hash.to_base64(), "{name}");
        assert_eq!(r.status.code, 200, "{name}: {:?}", r.status);
        assert!(r.ksef_number.is_some());
    }
    let ledger = sim.ledger().entries();
    assert_eq!(ledger.len(), archive.files.len());
    for (_, hash) in &archive.files {
        assert_eq!(sim.ledger().count_hash(hash), 1);
    }
}

#[tokio::test]
async fn a_zip_batch_in_several_parts_is_processed_invoice_by_invoice() {
    let archive = BatchArchive::zip(&batch_invoices("ZIP", 6)).unwrap();
    run_batch(archive, 4096).await;
}

#[tokio::test]
async fn a_batch_processed_after_its_close_has_answered_is_read_back_the_same() {
    // As KSeF does (and `ksef-relay run`/`load` configure): the close answers, then the archive
    // is unpacked; the session reads 150 until it is done.
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        batch_processing_after_close: true,
        ..sim_config()
    })
    .await;
    let archive = BatchArchive::zip(&batch_invoices("LATE", 6)).unwrap();
    run_batch_on(sim, archive, 4096).await;
}

#[tokio::test]
async fn a_tar_gz_batch_works_the_same() {
    let archive = BatchArchive::tar_gz(&batch_invoices("TGZ", 6)).unwrap();
    let size = archive.bytes.len();
    run_batch(archive, size / 3 + 1).await;
}

#[tokio::test]
async fn a_missing_part_keeps_the_session_from_closing_and_bad_invoices_fail_alone() {
    let sim = sim().await;
    let c = client(&sim);
    let mut files = batch_invoices("PART", 3);
    files.push(("broken.xml".into(), b"<Faktura>".to_vec()));
    let archive = BatchArchive::zip(&files).unwrap();
    let mut session = c.open_batch_session(&archive, 2048, false).await.unwrap();
    let last = session.uploads.pop().unwrap();
    c.upload_batch_parts(&session).await.unwrap();
    let f = c.close_batch_session(&session.reference).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::NeedsNewSession, Some("21205")));
    // Upload the last part too; now it closes. One bad invoice does not reject the package.
    session.uploads = vec![last];
    c.upload_batch_parts(&session).await.unwrap();
    c.close_batch_session(&session.reference).await.unwrap();
    c.wait_for_session(&session.reference, POLL, WAIT).await.unwrap();
    let failed = c.failed_session_invoices(&session.reference).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].invoice_file_name.as_deref(), Some("broken.xml"));
    assert_eq!(failed[0].status.code, 450);
    assert_eq!(sim.ledger().len(), files.len() - 1);
    // The same invoices again online: every one is a duplicate of its batch original.
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &files[0].1, &SendOptions::default()).await.unwrap();
    let (_, o) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    let ksef_client::InvoiceOutcome::Failed(f) = o else {
        panic!("{o:?}")
    };
    let original = sim
        .ledger()
        .entries()
        .into_iter()
        .find(|e| e.invoice_hash == ContentHash::of(&files[0].1))
        .unwrap()
        .ksef_number;
    assert_eq!(f.class, ErrorClass::Duplicate { original });
}

#[tokio::test]
async fn part_uploads_never_carry_the_access_token() {
    // The simulator's storage refuses an Authorization header, as a pre-signed URL would; a
    // direct PUT with the token proves the check is there, the client's upload proves it sends none.
    let sim = sim().await;
    let c = client(&sim);
    let archive = BatchArchive::zip(&batch_invoices("TOK", 1)).unwrap();
    let session = c.open_batch_session(&archive, 1 << 20, false).await.unwrap();
    let u = &session.uploads[0];
    let token = c.access_token().await.unwrap();
    let r = reqwest::Client::new()
        .put(&u.url)
        .header("x-ms-blob-type", "BlockBlob")
        .bearer_auth(token.expose_secret())
        .body(session.parts[0].bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    c.upload_batch_parts(&session).await.unwrap();
    c.close_batch_session(&session.reference).await.unwrap();
}

#[tokio::test]
async fn the_simulator_takes_parts_larger_than_a_web_servers_default_body_limit() {
    // KSeF takes parts of up to 100 MB; the simulator once refused anything over axum's default
    // 2 MB with 413 (a load run's batch of about 1,800 invoices). A 3 MB body must reach the
    // storage handler (201), whatever it holds.
    let sim = sim().await;
    let c = client(&sim);
    let archive = BatchArchive::zip(&batch_invoices("BIG", 1)).unwrap();
    let session = c.open_batch_session(&archive, 1 << 20, false).await.unwrap();
    let r = reqwest::Client::new()
        .put(&session.uploads[0].url)
        .header("x-ms-blob-type", "BlockBlob")
        .body(vec![7u8; 3_000_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}
