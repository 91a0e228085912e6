//! Offline invoices against the simulator over HTTP (real crypto), KSeF marking them as KSeF
//! does (offlineMode true, or `P_1`'s day before the invoicing day in Poland):
//!
//! - an invoice sent after its issue day is marked offline by the relay itself, sent with
//!   `offlineMode: true`, filed Offline in the simulator's ledger, and its record keeps KSeF's
//!   `invoicingMode` and the UPO's `TrybWysylki`;
//! - one the ERP marked offline24 gets KOD I (OFFLINE) and KOD II, signed with the seller's
//!   Offline certificate, named in the outbox before and after KSeF numbers it;
//! - one the ERP marked offline for a seller without an Offline certificate is ACCEPTED all the
//!   same, with `OFFLINE_CERTIFICATE_MISSING` (an operator's problem) in its history and outbox,
//!   never REJECTED;
//! - batch members never share a session across modes: offline ones go in their own session,
//!   opened with `offlineMode: true`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{client_config, world, world_with, World};
use relay_domain::polish_calendar::poland_date;
use relay_domain::ports::{Archive, DocumentRegistry, Queue};
use relay_domain::{DocumentState, ErpDocumentId, HistoryEvent, InvoicingMode, OfflineCodes, OfflineMode};
use relay_pipeline::credentials::MemoryCredentials;
use relay_pipeline::intake::{intake, IntakeOutcome, IntakePorts, Upload};
use relay_pipeline::messages::SendRequest;
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::send::{send_batch, BatchConfig};
use relay_pipeline::sessions::{KsefContexts, OFFLINE_CERTIFICATE_MISSING};

const EC_CERT: &str = include_str!("../../ksef-client/tests/fixtures/openssl-ec-cert.pem");
const EC_KEY: &str = include_str!("../../ksef-client/tests/fixtures/openssl-ec-key.pem");

/// The seller's contexts from a credentials secret: a token, with an Offline certificate or not.
fn contexts(w: &World, offline_certificate: bool) -> KsefContexts {
    let secret = if offline_certificate {
        serde_json::json!({"token": ksef_sim::DEFAULT_TOKEN, "offline_certificate_pem": EC_CERT, "offline_private_key_pem": EC_KEY})
    } else {
        serde_json::json!({ "token": ksef_sim::DEFAULT_TOKEN })
    };
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), secret.to_string()));
    KsefContexts::new().with_credentials(secrets, client_config(&w.sim), Duration::from_secs(900))
}

/// Sample 1 numbered `number`, issued on `issued` (its P_1).
fn invoice_issued(number: &str, issued: &str) -> Vec<u8> {
    String::from_utf8(common::invoice(number))
        .unwrap()
        .replace("<P_1>2026-02-15</P_1>", &format!("<P_1>{issued}</P_1>"))
        .into_bytes()
}

/// Sample 24 (with an attachment: KSeF takes it only in a batch) numbered `number`, issued `issued`.
fn batch_invoice(number: &str, issued: &str) -> Vec<u8> {
    String::from_utf8(include_bytes!("../../../data/ksef/samples/FA_3_Przykład_24.xml").to_vec())
        .unwrap()
        .replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{number}</P_2>"))
        .replace("<P_1>2026-02-28</P_1>", &format!("<P_1>{issued}</P_1>"))
        .into_bytes()
}

/// Intake of `bytes` as the ERP marked it; the send request it queued.
async fn register(w: &World, bytes: &[u8], erp: &str, marked: Option<OfflineMode>) -> SendRequest {
    let ports = IntakePorts {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        corrections_queue: &w.corrections_q,
        backlog: None,
    };
    let upload = Upload {
        bytes,
        source_key: format!("inbox/9999999999/{erp}.xml"),
        erp_document_id: ErpDocumentId::parse(erp).unwrap(),
        expected_seller: None,
        trace_id: None,
        offline_mode: marked,
        corrects: None,
    };
    let outcome = intake(&ports, upload, Utc::now()).await.unwrap();
    assert!(matches!(outcome, IntakeOutcome::Queued(_)), "{outcome:?}");
    let m = w
        .send_q
        .receive(1, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    w.send_q.delete(&m.receipt).await.unwrap();
    SendRequest::from_json(&m.body).unwrap()
}

async fn outbox(w: &World, erp: &str) -> serde_json::Value {
    let o = w.archive.get(&format!("outbox/9999999999/{erp}.json")).await.unwrap().unwrap();
    serde_json::from_slice(&o.bytes).unwrap()
}

/// The `offlineMode` each accepted invoice was sent with, as the simulator's ledger keeps it.
fn offline_modes_sent(w: &World) -> Vec<bool> {
    w.sim.ledger().entries().iter().map(|e| e.offline_requested).collect()
}

#[tokio::test]
async fn an_invoice_sent_after_its_issue_day_is_marked_offline_by_the_relay_and_filed_offline() {
    let w = world_with(10, true).await;
    // Issued yesterday (Polish calendar), or earlier: late by any clock.
    let yesterday = poland_date(Utc::now()) - chrono::Duration::days(1);
    let bytes = invoice_issued("LATE/1", &yesterday.to_string());
    let req = register(&w, &bytes, "late-1", None).await;
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!((r.offline_mode, r.offline), (None, false), "nothing marks it at intake");

    assert_eq!(w.send(&req).await.outcome, "SENT");
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");

    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    let r = &doc.record;
    assert_eq!(r.state, DocumentState::Accepted);
    assert_eq!((r.offline_mode, r.offline), (Some(OfflineMode::SentAfterIssueDay), true));
    assert_eq!(
        (r.ksef.invoicing_mode, r.ksef.upo_mode),
        (Some(InvoicingMode::Offline), Some(InvoicingMode::Offline)),
        "KSeF's invoicingMode and the UPO's TrybWysylki"
    );
    let due = relay_domain::offline::legal_deadline(Some(OfflineMode::SentAfterIssueDay), yesterday, &[]);
    assert_eq!(r.legal_deadline.as_ref(), Some(&due));
    assert_eq!(offline_modes_sent(&w), [true], "sent with offlineMode true");
    let ledger = w.sim.ledger().entries();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].invoicing_mode, InvoicingMode::Offline, "the simulator filed it Offline");
    let said = doc
        .history
        .iter()
        .any(|h| matches!(&h.event, HistoryEvent::Note { message } if message.contains("sent after its issue day")));
    assert!(said, "the history says why: {:#?}", doc.history);
    assert!(
        !doc.history.iter().any(|h| matches!(&h.event, HistoryEvent::Error { .. })),
        "no Offline certificate is no error for an invoice merely sent late: {:#?}",
        doc.history
    );
    let out = outbox(&w, "late-1").await;
    assert_eq!(
        (out["offlineMode"].as_str(), out["invoicingMode"].as_str()),
        (Some("sent_after_issue_day"), Some("Offline"))
    );
}

#[tokio::test]
async fn an_invoice_of_today_goes_online_and_is_filed_online() {
    let w = world_with(10, true).await;
    let today = poland_date(Utc::now());
    let bytes = invoice_issued("TODAY/1", &today.to_string());
    let req = register(&w, &bytes, "today-1", None).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let sent_on = poland_date(Utc::now());
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    if sent_on != today {
        // Polish midnight passed between the intake and the send: the invoice was late after all.
        assert_eq!(r.offline_mode, Some(OfflineMode::SentAfterIssueDay));
        return;
    }
    assert_eq!((r.offline_mode, r.offline), (None, false));
    assert_eq!(offline_modes_sent(&w), [false]);
    assert_eq!(r.ksef.invoicing_mode, Some(InvoicingMode::Online));
    assert_eq!(w.sim.ledger().entries()[0].invoicing_mode, InvoicingMode::Online);
}

#[tokio::test]
async fn an_invoice_the_erp_marked_offline24_gets_kod_i_offline_and_kod_ii_named_in_the_outbox() {
    let mut w = world_with(10, true).await;
    w.ksef = contexts(&w, true);
    let bytes = common::invoice("OFF24/1");
    let req = register(&w, &bytes, "off24-1", Some(OfflineMode::Offline24)).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");

    // Before KSeF numbers it, the ERP can already print both codes.
    let sent = outbox(&w, "off24-1").await;
    assert_eq!(sent["ksefNumber"], serde_json::Value::Null);
    let codes: Vec<(String, String)> = sent["qrCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["code"].as_str().unwrap().to_owned(), c["label"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(codes, [("KOD_I".into(), "OFFLINE".into()), ("KOD_II".into(), "CERTYFIKAT".into())]);
    for c in sent["qrCodes"].as_array().unwrap() {
        for key in [&c["pngKey"], &c["svgKey"]] {
            let key = key.as_str().unwrap();
            assert!(w.archive.get(key).await.unwrap().is_some(), "{key} is written");
        }
    }

    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(
        (r.offline_mode, r.offline_codes),
        (Some(OfflineMode::Offline24), OfflineCodes::Written)
    );
    assert_eq!(r.ksef.invoicing_mode, Some(InvoicingMode::Offline));
    assert_eq!(offline_modes_sent(&w), [true]);
    let done = outbox(&w, "off24-1").await;
    let labels: Vec<&str> = done["qrCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, [r.ksef.ksef_number.as_ref().unwrap().as_str(), "OFFLINE", "CERTYFIKAT"]);
}

#[tokio::test]
async fn a_seller_without_an_offline_certificate_gets_an_operators_problem_and_the_invoice_is_accepted() {
    let mut w = world(10).await;
    w.ksef = contexts(&w, false);
    let bytes = common::invoice("FAIL/1");
    let req = register(&w, &bytes, "fail-1", Some(OfflineMode::Failure)).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let sent = outbox(&w, "fail-1").await;
    assert_eq!(sent["errors"][0]["code"], OFFLINE_CERTIFICATE_MISSING, "{sent:#}");
    assert_eq!(sent["errors"][0]["class"], "OPERATOR", "{sent:#}");
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    assert_eq!(
        doc.record.state,
        DocumentState::Accepted,
        "never REJECTED for a missing certificate"
    );
    let missing = doc
        .history
        .iter()
        .filter(|h| matches!(&h.event, HistoryEvent::Error { failure } if failure.code.as_deref() == Some(OFFLINE_CERTIFICATE_MISSING)))
        .count();
    assert_eq!(missing, 1, "recorded once: {:#?}", doc.history);
    assert_eq!(doc.record.offline_codes, OfflineCodes::Missing);
}

#[tokio::test]
async fn batch_members_are_grouped_by_mode_offline_ones_in_a_session_of_their_own() {
    let w = world_with(10, true).await;
    let today = poland_date(Utc::now());
    let mut reqs = Vec::new();
    for (n, marked) in [
        (1, None),
        (2, Some(OfflineMode::Offline24)),
        (3, None),
        (4, Some(OfflineMode::Unavailability)),
    ] {
        let bytes = batch_invoice(&format!("B/{n}"), &today.to_string());
        reqs.push(register(&w, &bytes, &format!("b-{n}"), marked).await);
    }
    let batch_cfg = BatchConfig::default();
    let mut pending = reqs.clone();
    for _ in 0..200 {
        if pending.is_empty() {
            break;
        }
        let results = send_batch(&w.send_ports(), &w.ksef, &w.cfg, &batch_cfg, &pending, Utc::now()).await;
        let mut next = Vec::new();
        for (req, res) in pending.iter().zip(results) {
            match res.unwrap().action {
                QueueAction::Delete => {}
                QueueAction::Replace { body, .. } => next.push(SendRequest::from_json(&body).unwrap()),
                QueueAction::Requeue { .. } | QueueAction::Release => next.push(req.clone()),
                other => panic!("{other:?}"),
            }
        }
        pending = next;
        let cfg = w.sim.config();
        tokio::time::sleep(cfg.accept_delay + cfg.processing_delay + Duration::from_millis(1)).await;
    }
    assert!(pending.is_empty(), "not settled");
    let sent_on = poland_date(Utc::now());
    if sent_on != today {
        // Polish midnight passed during the test: every member was late, so all went offline.
        return;
    }
    let ledger = w.sim.ledger().entries();
    assert_eq!(ledger.len(), 4, "each accepted once");
    let mut sessions: Vec<(String, bool)> = ledger
        .iter()
        .map(|e| (e.session_reference.to_string(), e.offline_requested))
        .collect();
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), 2, "one online and one offline batch session: {sessions:?}");
    assert_ne!(sessions[0].1, sessions[1].1, "{sessions:?}");
    for (n, req) in reqs.iter().enumerate() {
        let r = w.store.get(&req.document).await.unwrap().unwrap().record;
        assert_eq!(r.state, DocumentState::Accepted);
        let filed = ledger.iter().find(|e| e.invoice_hash == r.content_hash).unwrap().invoicing_mode;
        let want = if n % 2 == 1 {
            InvoicingMode::Offline
        } else {
            InvoicingMode::Online
        };
        assert_eq!((filed, r.ksef.invoicing_mode), (want, Some(want)), "B/{}", n + 1);
    }
}
