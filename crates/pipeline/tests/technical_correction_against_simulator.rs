//! A technical correction of a rejected offline invoice (issue 14 item 5, API-NOTES §10) against
//! the simulator over HTTP (real crypto). The simulator's `reject-offline` scenario rejects the
//! offline original (450); the ERP uploads the fixed file naming the rejected upload
//! (`ksef-corrects`), and the relay sends it online with `offlineMode: true` and
//! `hashOfCorrectedInvoice`, the SHA-256 of the rejected file's exact bytes (checked in the
//! simulator's ledger). The two uploads name each other in the history and in both outbox
//! results. A marking that names no rejected offline invoice of the identity is refused with
//! `TECHNICAL_CORRECTION_TARGET` and sends nothing.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{world, World};
use relay_domain::ports::{Archive, DocumentRegistry, Queue};
use relay_domain::{ContentHash, DocumentState, ErpDocumentId, HistoryEvent, OfflineMode};
use relay_pipeline::intake::{intake, IntakeOutcome, IntakePorts, Upload};
use relay_pipeline::messages::SendRequest;

/// Intake of `bytes` uploaded as `erp`, offline as `marked`, correcting `corrects`.
async fn take_in(w: &World, bytes: &[u8], erp: &str, marked: Option<OfflineMode>, corrects: Option<&str>) -> IntakeOutcome {
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
        expected_seller: Some(World::nip()),
        trace_id: None,
        offline_mode: marked,
        corrects: corrects.map(|c| ErpDocumentId::parse(c).unwrap()),
    };
    intake(&ports, upload, Utc::now()).await.unwrap()
}

/// The one send request on the queue (taken off it).
async fn queued(w: &World) -> SendRequest {
    let m = w
        .send_q
        .receive(1, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    w.send_q.delete(&m.receipt).await.unwrap();
    SendRequest::from_json(&m.body).unwrap()
}

async fn nothing_queued(w: &World) -> bool {
    w.send_q
        .receive(10, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap()
        .is_empty()
}

async fn outbox(w: &World, erp: &str) -> serde_json::Value {
    let o = w.archive.get(&format!("outbox/9999999999/{erp}.json")).await.unwrap().unwrap();
    serde_json::from_slice(&o.bytes).unwrap()
}

/// The fixed file: other bytes (a technical fix: here whitespace), the same business content.
fn fixed(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.extend_from_slice(b"\n");
    out
}

/// An offline invoice the simulator rejects technically: REJECTED by KSeF, its words kept.
async fn rejected_offline(w: &World, number: &str, erp: &str) -> Vec<u8> {
    w.sim.faults().set(vec!["reject-offline".parse().unwrap()], 7);
    let original = common::invoice(number);
    let outcome = take_in(w, &original, erp, Some(OfflineMode::Offline24), None).await;
    assert!(matches!(outcome, IntakeOutcome::Queued(_)), "{outcome:?}");
    let req = queued(w).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    assert_eq!(w.poll_until_decided().await.outcome, "REJECTED");
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Rejected);
    assert_eq!(r.last_error.as_ref().and_then(|f| f.code.as_deref()), Some("450"));
    original
}

#[tokio::test]
async fn a_technical_correction_of_a_rejected_offline_invoice_is_accepted_and_linked_both_ways() {
    let w = world(10).await;
    let original = rejected_offline(&w, "TC/1", "off-1").await;
    assert!(w.sim.ledger().is_empty());

    // The ERP uploads the fixed file, naming the rejected upload; it does not mark it offline
    // (the correction is offline because the invoice it corrects was). The fault stays on: it
    // rejects offline originals only, never a correction.
    let corrected = fixed(&original);
    let outcome = take_in(&w, &corrected, "off-1-fix", None, Some("off-1")).await;
    let IntakeOutcome::Resubmitted(r) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(r.corrects.as_ref().map(|c| c.content_hash), Some(ContentHash::of(&original)));
    assert!(r.offline);
    let req = queued(&w).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");

    // KSeF holds the correction once, with the rejected file's SHA-256 as hashOfCorrectedInvoice.
    let ledger = w.sim.ledger().entries();
    assert_eq!(ledger.len(), 1, "{ledger:#?}");
    assert_eq!(ledger[0].invoice_hash, ContentHash::of(&corrected));
    assert_eq!(ledger[0].hash_of_corrected_invoice, Some(ContentHash::of(&original)));
    assert!(ledger[0].offline_requested, "sent with offlineMode true");

    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    assert_eq!(doc.record.state, DocumentState::Accepted);
    let linked = doc.history.iter().any(|h| {
        matches!(&h.event, HistoryEvent::StateChanged { reason, .. }
            if reason.contains("corrects the offline invoice inbox/9999999999/off-1.xml (ERP id off-1")
                && reason.contains("ERP id off-1 is corrected by ERP id off-1-fix"))
    });
    assert!(linked, "the history names both uploads: {:#?}", doc.history);

    // Each upload's answer names the other.
    let fix = outbox(&w, "off-1-fix").await;
    assert_eq!((fix["state"].as_str(), fix["corrects"].as_str()), (Some("ACCEPTED"), Some("off-1")));
    let old = outbox(&w, "off-1").await;
    assert_eq!(
        (old["state"].as_str(), old["correctedBy"].as_str()),
        (Some("REJECTED"), Some("off-1-fix"))
    );
    assert_eq!(old["contentHash"].as_str(), Some(ContentHash::of(&original).to_base64().as_str()));
    assert_eq!(
        old["errors"][0]["code"].as_str(),
        Some("450"),
        "KSeF's rejection stays in its answer"
    );

    // The same correction again is a repeat; a correction of the correction is refused.
    assert!(matches!(
        take_in(&w, &corrected, "off-1-fix", None, Some("off-1")).await,
        IntakeOutcome::Repeat(_)
    ));
    for (erp, names) in [("off-1-fix2", "off-1-fix"), ("off-1-fix3", "off-1")] {
        let IntakeOutcome::NotRegistered(f) = take_in(&w, &fixed(&corrected), erp, None, Some(names)).await else {
            panic!("{erp}")
        };
        assert_eq!(f[0].code.as_deref(), Some("TECHNICAL_CORRECTION_TARGET"));
        assert!(f[0].message.contains("a correction of a correction"), "{}", f[0].message);
    }
    assert!(nothing_queued(&w).await);
    assert_eq!(w.sim.ledger().len(), 1);
}

#[tokio::test]
async fn a_correction_naming_no_rejected_offline_invoice_is_refused_and_sends_nothing() {
    let w = world(10).await;
    // A rejected offline invoice to name wrongly, an accepted online one, one our validation
    // rejected.
    rejected_offline(&w, "TC/2", "off-2").await;
    w.sim.faults().clear();
    let online = common::invoice("TC/3");
    assert!(matches!(take_in(&w, &online, "on-3", None, None).await, IntakeOutcome::Queued(_)));
    let req = queued(&w).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
    let invalid = String::from_utf8(common::invoice("TC/4"))
        .unwrap()
        .replacen("<P_12>23</P_12>", "<P_12>24</P_12>", 1)
        .into_bytes();
    assert!(matches!(
        take_in(&w, &invalid, "bad-4", Some(OfflineMode::Offline24), None).await,
        IntakeOutcome::Rejected(_)
    ));
    let ledger_before = w.sim.ledger().len();

    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        ("unknown", fixed(&common::invoice("TC/9")), "off-9", "no invoice"),
        ("the rejected file itself", common::invoice("TC/2"), "off-2", "byte for byte"),
        (
            "wrong upload",
            fixed(&common::invoice("TC/2")),
            "off-22",
            "was uploaded as ERP id off-2, not off-22",
        ),
        ("accepted", fixed(&online), "on-3", "not REJECTED"),
        ("our own rejection", common::invoice("TC/4"), "bad-4", "not rejected by KSeF"),
    ];
    for (case, bytes, names, says) in cases {
        let erp = format!("fix-{}", case.replace(' ', "-"));
        let outcome = take_in(&w, &bytes, &erp, None, Some(names)).await;
        let IntakeOutcome::NotRegistered(f) = &outcome else {
            panic!("{case}: {outcome:?}")
        };
        assert_eq!(f[0].code.as_deref(), Some("TECHNICAL_CORRECTION_TARGET"), "{case}");
        assert!(f[0].message.contains(says), "{case}: {}", f[0].message);
        // The uploader's answer says why; nothing is registered under the correction's id.
        let answer = outbox(&w, &erp).await;
        assert_eq!(answer["state"].as_str(), Some("NOT_REGISTERED"), "{case}");
        assert_eq!(answer["errors"][0]["code"].as_str(), Some("TECHNICAL_CORRECTION_TARGET"), "{case}");
    }
    assert!(nothing_queued(&w).await, "nothing is sent");
    assert_eq!(w.sim.ledger().len(), ledger_before);
    // The documents named stay as they were.
    for (number, state) in [
        ("TC/2", DocumentState::Rejected),
        ("TC/3", DocumentState::Accepted),
        ("TC/4", DocumentState::Rejected),
    ] {
        let key = relay_domain::DocumentKey::new(
            World::nip(),
            relay_domain::InvoiceKind::Vat,
            relay_domain::InvoiceNumber::parse(number).unwrap(),
        );
        let r = w.store.get(&key).await.unwrap().unwrap().record;
        assert_eq!((r.state, r.corrects.is_none()), (state, true), "{number}");
    }
}

/// KSeF's 21166 (a correction of that invoice already accepted) is never a rejection and never
/// a resend: when KSeF holds these very bytes (sent earlier, the relay lost track: here sent
/// by another client) the document is SENT where KSeF has it and polled to ACCEPTED; when KSeF
/// holds another file as the correction, a person decides (CONFLICT).
#[tokio::test]
async fn an_already_accepted_correction_is_reconciled_not_rejected_or_resent() {
    let w = world(10).await;
    let nip = World::nip();
    for (number, ours) in [("TC/5", true), ("TC/6", false)] {
        let erp = format!("off-{}", &number[3..]);
        let original = rejected_offline(&w, number, &erp).await;
        let corrected = fixed(&original);
        // KSeF already holds a correction of it: this very file, or another.
        let elsewhere = if ours { corrected.clone() } else { fixed(&corrected) };
        let client = w.ksef.client(&nip).await.unwrap();
        let session = client.open_online_session().await.unwrap();
        let taken = client
            .send_technical_correction(&session, &elsewhere, ContentHash::of(&original))
            .await
            .unwrap();
        assert!(matches!(taken, ksef_client::CorrectionSent::Sent(_)), "{taken:?}");

        let fix_erp = format!("{erp}-fix");
        let outcome = take_in(&w, &corrected, &fix_erp, None, Some(&erp)).await;
        assert!(matches!(outcome, IntakeOutcome::Resubmitted(_)), "{outcome:?}");
        let req = queued(&w).await;
        let sent = w.send(&req).await;
        let doc = w.store.get(&req.document).await.unwrap().unwrap();
        if ours {
            assert_eq!(sent.outcome, "RECONCILED_SENT", "{:#?}", doc.history);
            assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
            assert_eq!(w.sim.ledger().count_hash(&ContentHash::of(&corrected)), 1, "accepted once");
        } else {
            assert_eq!(sent.outcome, "CONFLICT", "{:#?}", doc.history);
            let f = doc.record.last_error.clone().unwrap();
            assert_eq!(f.code.as_deref(), Some("TECHNICAL_CORRECTION_ACCEPTED_ELSEWHERE"), "{f:?}");
            assert_eq!(w.sim.ledger().count_hash(&ContentHash::of(&corrected)), 0);
        }
        // One send (answered 21166), never another; never REJECTED.
        let doc = w.store.get(&req.document).await.unwrap().unwrap();
        let sends = doc
            .history
            .iter()
            .filter(|h| matches!(h.event, HistoryEvent::SendStarted { .. }))
            .count();
        // The original's send and the correction's.
        assert_eq!(sends, 2, "{:#?}", doc.history);
        assert_ne!(doc.record.state, DocumentState::Rejected);
        assert!(nothing_queued(&w).await, "no send is left to come");
    }
}
