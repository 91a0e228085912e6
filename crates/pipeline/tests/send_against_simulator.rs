//! The send use case against the KSeF simulator over HTTP (real RSA/AES), with in-memory stores:
//! at most one send per document through faults, crashes and repeated messages.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{invoice, world};
use ksef_client::SendOptions;
use ksef_sim::Fault;
use relay_domain::ports::{Archive, DocumentClaims, DocumentRegistry, DocumentUpdates, Queue};
use relay_domain::{Change, ClaimPurpose, DocumentState, KsefReference, Nip};
use relay_pipeline::messages::{SendRequest, StatusRequest};
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::send::{send, SendPorts};

#[tokio::test]
async fn a_queued_document_is_sent_once_and_a_repeated_message_sends_nothing() {
    let w = world(10).await;
    let req = w.register(&invoice("SEND/1")).await;
    let res = w.send(&req).await;
    assert_eq!((res.outcome, &res.action), ("SENT", &QueueAction::Delete));
    let r = res.record.unwrap();
    assert_eq!(r.state, DocumentState::Sent);
    assert_eq!(r.ksef.unconfirmed_send, None);
    let session = r.ksef.session_reference.clone().unwrap();
    // A status check is queued, carrying the trace id.
    let checks = w.status_q.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].trace_id(), Some(r.trace_id.clone()));
    assert_eq!(
        StatusRequest::from_json(&checks[0].body).unwrap().invoice_reference,
        r.ksef.invoice_reference.clone().unwrap()
    );
    // The same message again (SQS delivers at least once): nothing is sent. The document is a
    // step ahead of it and its follow-up (the status check) is not overdue: a leftover.
    let again = w.send(&req).await;
    assert_eq!((again.outcome, &again.action), ("LEFTOVER", &QueueAction::Delete));
    assert_eq!(w.copies_in_session(&session, &req).await, 1);
    // And KSeF accepts it: the simulator's ledger has it exactly once.
    let client = w.ksef.client(&Nip::parse("9999999999").unwrap()).await.unwrap();
    let inv = r.ksef.invoice_reference.unwrap();
    client
        .wait_for_invoice(session.as_str(), inv.as_str(), Duration::from_millis(20), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1);
    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    assert!(
        doc.history
            .iter()
            .any(|h| matches!(h.event, relay_domain::HistoryEvent::SendStarted { .. })),
        "about-to-send is recorded"
    );
}

#[tokio::test]
async fn a_crash_after_ksef_took_the_invoice_is_reconciled_not_resent() {
    let w = world(10).await;
    let bytes = invoice("SEND/2");
    let req = w.register(&bytes).await;
    // A previous sender got as far as the POST (KSeF took it) and died before writing SENT.
    let seller = Nip::parse("9999999999").unwrap();
    let session = w.ksef.session(&seller, Utc::now()).await.unwrap();
    let session_ref = KsefReference::parse(&session.reference).unwrap();
    let r = w
        .store
        .claim(
            &req.document,
            ClaimPurpose::Send,
            "crashed-sender",
            Utc::now(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    w.store
        .transition(
            &r,
            Change::SendStarted {
                session: session_ref.clone(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    w.ksef
        .client(&seller)
        .await
        .unwrap()
        .send_invoice(&session, &bytes, &SendOptions::default())
        .await
        .unwrap();
    // Its lease is still held for a minute: the next sender waits rather than racing it...
    let busy = w.send(&req).await;
    assert_eq!(busy.outcome, "BUSY");
    // ...and once the lease is gone, it finds the invoice in the session instead of resending.
    let ports = SendPorts {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        status_queue: &w.status_q,
        corrections_queue: &w.corrections_q,
    };
    let later = Utc::now() + chrono::Duration::seconds(61);
    let res = send(&ports, &w.ksef, &w.cfg, &req, later).await.unwrap();
    assert_eq!(res.outcome, "RECONCILED_SENT");
    assert_eq!(res.record.unwrap().state, DocumentState::Sent);
    assert_eq!(w.copies_in_session(&session_ref, &req).await, 1, "KSeF got it exactly once");
    let status: Vec<StatusRequest> = w
        .status_q
        .receive(10, Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|m| StatusRequest::from_json(&m.body).unwrap())
        .collect();
    assert!(status.is_empty() || status[0].session == session_ref);
}

#[tokio::test]
async fn a_503_is_retried_after_checking_that_ksef_did_not_take_it() {
    let w = world(10).await;
    let req = w.register(&invoice("SEND/3")).await;
    w.sim.faults().set(
        vec![Fault::Unavailable {
            rate: 1.0,
            on: Some("/invoices".into()),
        }],
        7,
    );
    let res = w.send(&req).await;
    assert_eq!(res.outcome, "RETRY");
    let QueueAction::Replace { body, delay } = &res.action else {
        panic!("{:?}", res.action)
    };
    assert_eq!(*delay, Duration::ZERO, "the first retry is immediate");
    let req = SendRequest::from_json(body).unwrap();
    assert_eq!(
        req.step,
        res.record.as_ref().unwrap().step,
        "the retry's message is for the step just written"
    );
    let r = res.record.unwrap();
    assert_eq!((r.state, r.attempts), (DocumentState::Queued, 1));
    assert!(r.ksef.unconfirmed_send.is_some(), "a 503 after the POST may hide a receipt");
    assert_eq!(r.last_error.as_ref().unwrap().class, relay_domain::ErrorClass::Transient);
    w.sim.faults().clear();
    let res = w.send(&req).await;
    assert_eq!(res.outcome, "SENT");
    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    let notes: Vec<String> = doc
        .history
        .iter()
        .filter_map(|h| serde_json::to_value(h).ok())
        .map(|v| v.to_string())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("did not take the earlier attempt")),
        "it reconciled first: {notes:?}"
    );
    assert_eq!(
        w.copies_in_session(doc.record.ksef.session_reference.as_ref().unwrap(), &req).await,
        1
    );
}

#[tokio::test]
async fn a_429_parks_without_charging_the_budget() {
    let w = world(10).await;
    let req = w.register(&invoice("SEND/4")).await;
    w.sim.faults().set(
        vec![Fault::TooManyRequests {
            rate: 1.0,
            retry_after_s: 30,
            on: Some("/invoices".into()),
        }],
        1,
    );
    let started = std::time::Instant::now();
    let res = w.send(&req).await;
    let took = started.elapsed();
    assert_eq!(res.outcome, "PARKED");
    let QueueAction::Replace { body, delay } = res.action else {
        panic!("{:?}", res.action)
    };
    // KSeF's Retry-After (30 s) counts from its answer, the policy adds up to 2 s of spread so
    // parked documents do not all wake at once, and the delay counts from the handler's `now`,
    // taken before the call: so at most 32 s plus the time the call took, plus a second for
    // rounding (a fixed 33 s bound failed once at 33.45 s on a loaded machine).
    assert!(
        delay >= Duration::from_secs(29) && delay <= Duration::from_secs(33) + took,
        "{delay:?} (the send took {took:?})"
    );
    let req = SendRequest::from_json(&body).unwrap();
    let r = res.record.unwrap();
    assert_eq!(r.attempts, 0, "rate limits cost no attempt");
    assert_eq!(r.ksef.unconfirmed_send, None, "KSeF refused it outright: nothing to reconcile");
    // Until then, the message just waits: no KSeF call, no claim.
    let early = w.send(&req).await;
    assert_eq!(early.outcome, "NOT_YET");
}

/// KSeF's 2026 error 21184 ("session temporarily unavailable"): a new session and on, charged
/// to the recovery limit, never to the invoice's budget.
#[tokio::test]
async fn error_21184_opens_a_new_session_without_charging_the_budget() {
    let w = world(10).await;
    let req = w.register(&invoice("SEND/21184")).await;
    w.sim.faults().set(vec![Fault::SessionUnavailable { rate: 1.0 }], 1);
    let res = w.send(&req).await;
    assert_eq!(res.outcome, "RETRY");
    let r = res.record.clone().unwrap();
    assert_eq!((r.attempts, r.recoveries), (0, 1), "a recovery, not an attempt");
    assert_eq!(r.ksef.unconfirmed_send, None, "KSeF refused it outright: nothing to reconcile");
    let first_session = r.last_error.as_ref().map(|f| f.code.clone());
    assert_eq!(first_session, Some(Some("21184".to_owned())));
    w.sim.faults().clear();
    let QueueAction::Replace { body, .. } = res.action else {
        panic!("{:?}", res.action)
    };
    let res = w.send(&SendRequest::from_json(&body).unwrap()).await;
    assert_eq!(res.outcome, "SENT");
    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    let sessions: Vec<_> = doc
        .history
        .iter()
        .filter_map(|h| match &h.event {
            relay_domain::HistoryEvent::SendStarted { session, .. } => Some(session.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_ne!(sessions[0], sessions[1], "the second try went in a new session");
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1);
}

#[tokio::test]
async fn an_exhausted_budget_ends_failed_in_the_dlq_with_an_outbox_result() {
    let w = world(2).await;
    let req = w.register(&invoice("SEND/5")).await;
    w.sim.faults().set(
        vec![Fault::Unavailable {
            rate: 1.0,
            on: Some("/invoices".into()),
        }],
        3,
    );
    assert_eq!(w.send(&req).await.outcome, "RETRY");
    // Every later attempt first looks for the earlier one in its session, and that read fails
    // too: the reads spend the recovery limit (not the send budget) until it ends.
    let t0 = Utc::now();
    let mut req = w.current_request(&req).await;
    let mut res = w.send(&req).await;
    for hours in 1..=w.cfg.policy.max_recoveries() {
        if res.outcome == "FAILED" {
            break;
        }
        assert_eq!(res.outcome, "RETRY");
        req = w.current_request(&req).await;
        let at = t0 + chrono::Duration::hours(2 * i64::from(hours));
        res = send(&w.send_ports(), &w.ksef, &w.cfg, &req, at).await.unwrap();
    }
    assert_eq!((res.outcome, &res.action), ("FAILED", &QueueAction::DeadLetter));
    let r = res.record.unwrap();
    assert_eq!(r.state, DocumentState::Failed);
    assert!(r.ksef.unconfirmed_send.is_some(), "a replay must reconcile before resending");
    let outbox = w.archive.get("outbox/9999999999/erp.json").await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&outbox.bytes).unwrap();
    assert_eq!(v["state"], "FAILED");
    assert_eq!(v["errors"][0]["class"], "TRANSIENT");
    // The console's native DLQ redrive brings the message back without dlq-replay's checks:
    // it goes back to the DLQ rather than vanishing, and nothing is sent.
    let sent_before = w.sim.ledger().len();
    let redriven = w.send(&req).await;
    assert_eq!(
        (redriven.outcome, &redriven.action),
        ("FAILED_BACK_TO_DLQ", &QueueAction::DeadLetter)
    );
    assert_eq!(redriven.record.unwrap().state, DocumentState::Failed);
    assert_eq!(w.sim.ledger().len(), sent_before);
}
