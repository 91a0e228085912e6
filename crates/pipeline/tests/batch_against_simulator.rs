//! Invoices with an attachment go in a batch session (KSeF refuses them online), against the
//! simulator over HTTP: sent once, reconciled only once the session is final, and a batch left
//! open or unanswered by a crash or a timeout never makes a second copy.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::world;
use ksef_client::batch::MAX_PART_SIZE;
use ksef_client::BatchArchive;
use ksef_sim::Fault;
use relay_domain::ports::{DocumentClaims, DocumentRegistry, DocumentUpdates};
use relay_domain::{Change, ClaimPurpose, DocumentState, HistoryEvent, Nip};
use relay_pipeline::messages::SendRequest;
use relay_pipeline::queue_action::{QueueAction, StageResult};
use relay_pipeline::send::{send, SendPorts};

const WITH_ATTACHMENT: &[u8] = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_24.xml");

fn seller() -> Nip {
    Nip::parse("9999999999").unwrap()
}

async fn send_at(w: &common::World, req: &SendRequest, now: DateTime<Utc>) -> StageResult {
    let ports = SendPorts {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        status_queue: &w.status_q,
        corrections_queue: &w.corrections_q,
    };
    send(&ports, &w.ksef, &w.cfg, req, now).await.unwrap()
}

/// Sends again (as the requeued message would, at the time it would come back) until the
/// document leaves QUEUED; returns the outcomes seen on the way.
async fn until_sent(w: &common::World, req: &SendRequest, mut now: DateTime<Utc>) -> Vec<&'static str> {
    let mut outcomes = Vec::new();
    // The message as it comes back: a stage that wrote a new step sends a copy for that step.
    let mut req = w.current_request(req).await;
    for _ in 0..200 {
        let res = send_at(w, &req, now).await;
        outcomes.push(res.outcome);
        if res.record.as_ref().is_some_and(|r| r.state != DocumentState::Queued) {
            return outcomes;
        }
        if let QueueAction::Replace { body, .. } = &res.action {
            req = SendRequest::from_json(body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let due = w.store.get(&req.document).await.unwrap().unwrap().record.next_attempt_at;
        now = (now + chrono::Duration::milliseconds(20)).max(due.unwrap_or(now));
    }
    panic!("not sent after 200 attempts: {outcomes:?}");
}

async fn accepted_once(w: &common::World, req: &SendRequest) {
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Sent);
    let session = r.ksef.session_reference.clone().unwrap();
    assert_eq!(session.kind(), "SB", "sent in a batch session");
    let client = w.ksef.client(&seller()).await.unwrap();
    let status = client
        .wait_for_invoice(
            session.as_str(),
            r.ksef.invoice_reference.unwrap().as_str(),
            Duration::from_millis(20),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(status.0.status.code, 200, "{status:?}");
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1, "KSeF accepted it exactly once");
}

#[tokio::test]
async fn an_invoice_with_an_attachment_is_sent_in_a_batch_and_found_there() {
    let w = world(10).await;
    let req = w.register(WITH_ATTACHMENT).await;
    let first = send_at(&w, &req, Utc::now()).await;
    assert_eq!(first.outcome, "BATCH_CLOSED");
    assert!(matches!(first.action, QueueAction::Replace { .. }));
    let r = first.record.unwrap();
    assert_eq!(r.state, DocumentState::Queued, "nothing is known until KSeF processed the batch");
    let batch = r.ksef.unconfirmed_send.clone().expect("the send stays unconfirmed");
    assert_eq!(batch.kind(), "SB");
    assert!(r.lease.is_none(), "the lease is free for whichever instance checks next");
    assert_eq!(r.attempts, 0);

    let outcomes = until_sent(&w, &req, Utc::now()).await;
    assert_eq!(outcomes.last(), Some(&"RECONCILED_SENT"), "{outcomes:?}");
    accepted_once(&w, &req).await;
    // No online session ever saw it.
    assert_eq!(w.sim.ledger().entries()[0].session_reference, batch);
}

#[tokio::test]
async fn a_batch_left_open_by_a_crash_is_closed_and_not_sent_again() {
    let w = world(10).await;
    let req = w.register(WITH_ATTACHMENT).await;
    // A previous sender opened the batch, recorded it, uploaded the part and died before close.
    let client = w.ksef.client_ready(&seller(), Utc::now()).await.unwrap();
    let archive = BatchArchive::zip(&[("a.xml".into(), WITH_ATTACHMENT.to_vec())]).unwrap();
    let batch = client.open_batch_session(&archive, MAX_PART_SIZE, false).await.unwrap();
    let r = w
        .store
        .claim(&req.document, ClaimPurpose::Send, "crashed", Utc::now(), Duration::from_secs(60))
        .await
        .unwrap();
    let batch_ref = relay_domain::KsefReference::parse(&batch.reference).unwrap();
    w.store
        .transition(
            &r,
            Change::SendStarted {
                session: batch_ref.clone(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    client.upload_batch_parts(&batch).await.unwrap();

    // Once its lease is gone, the next attempt closes that batch instead of opening another.
    let later = Utc::now() + chrono::Duration::seconds(61);
    let res = send_at(&w, &req, later).await;
    assert_eq!(res.outcome, "BATCH_CLOSED");
    let outcomes = until_sent(&w, &req, later).await;
    assert_eq!(outcomes.last(), Some(&"RECONCILED_SENT"), "{outcomes:?}");
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(r.ksef.session_reference, Some(batch_ref), "the crashed attempt's batch carried it");
    accepted_once(&w, &req).await;
}

#[tokio::test]
async fn a_batch_opened_but_never_uploaded_is_abandoned_and_sent_in_a_new_one() {
    let w = world(10).await;
    let req = w.register(WITH_ATTACHMENT).await;
    let client = w.ksef.client_ready(&seller(), Utc::now()).await.unwrap();
    let archive = BatchArchive::zip(&[("a.xml".into(), WITH_ATTACHMENT.to_vec())]).unwrap();
    let batch = client.open_batch_session(&archive, MAX_PART_SIZE, false).await.unwrap();
    let batch_ref = relay_domain::KsefReference::parse(&batch.reference).unwrap();
    let r = w
        .store
        .claim(&req.document, ClaimPurpose::Send, "crashed", Utc::now(), Duration::from_secs(60))
        .await
        .unwrap();
    w.store
        .transition(
            &r,
            Change::SendStarted {
                session: batch_ref.clone(),
            },
            Utc::now(),
        )
        .await
        .unwrap();

    // KSeF refuses to close a batch whose part never arrived: nothing was received, send anew.
    let later = Utc::now() + chrono::Duration::seconds(61);
    let res = send_at(&w, &req, later).await;
    assert_eq!(res.outcome, "BATCH_CLOSED");
    let r = res.record.unwrap();
    let new_batch = r.ksef.unconfirmed_send.clone().unwrap();
    assert_ne!(new_batch, batch_ref);
    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    assert!(
        doc.history
            .iter()
            .any(|h| matches!(&h.event, HistoryEvent::Note { message } if message.contains("could not be closed"))),
        "the history says why it was sent again"
    );
    let outcomes = until_sent(&w, &req, later).await;
    assert_eq!(outcomes.last(), Some(&"RECONCILED_SENT"), "{outcomes:?}");
    accepted_once(&w, &req).await;
}

#[tokio::test]
async fn a_batch_close_that_times_out_is_reconciled_not_resent() {
    let w = world(10).await;
    // KSeF closes the session but answers after the client's 3 s timeout.
    w.sim.faults().set(vec![Fault::CloseTimeout { delay_ms: 4_000 }], 1);
    let req = w.register(WITH_ATTACHMENT).await;
    let first = send_at(&w, &req, Utc::now()).await;
    assert_eq!(first.outcome, "RETRY", "a timeout is transient");
    let r = first.record.unwrap();
    assert_eq!(r.attempts, 1);
    assert!(r.ksef.unconfirmed_send.is_some(), "the close may have worked: reconcile first");
    w.sim.faults().clear();

    let outcomes = until_sent(&w, &req, Utc::now()).await;
    assert!(!outcomes.contains(&"BATCH_CLOSED"), "no second batch: {outcomes:?}");
    assert_eq!(outcomes.last(), Some(&"RECONCILED_SENT"), "{outcomes:?}");
    accepted_once(&w, &req).await;
}
