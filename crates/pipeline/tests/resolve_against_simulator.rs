//! A person's decisions, against the KSeF simulator: a real CONFLICT (KSeF holds other content
//! under the same identity) resolved as ours (with KSeF's UPO fetched at once, or by the status
//! stage after the person gave the date), withdrawn, or rechecked; and a REJECTED document sent
//! again by dlq-replay or by name only when its rejection was not about its content.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{invoice, world, World};
use ksef_client::SendOptions;
use relay_domain::memory::MemoryQueue;
use relay_domain::ports::{Archive, DocumentRegistry, DocumentUpdates, OutgoingMessage, Queue};
use relay_domain::{Change, DocumentRecord, DocumentState, ErrorClass, ErrorSource, Failure, HistoryEvent, WITHDRAWN};
use relay_pipeline::messages::SendRequest;
use relay_pipeline::replay::{replay, ReplayAction, ReplayPorts, ReplayRequest};
use relay_pipeline::resolve::{
    resolve_conflict, send_again, DecisionError, DecisionOutcome, DecisionPorts, ResolveRequest, SendAgainRequest,
};

/// Sends `bytes` straight to KSeF (not through the relay) and waits for its number.
async fn send_raw(w: &World, bytes: &[u8]) -> String {
    let client = w.ksef.client(&World::nip()).await.unwrap();
    let session = client.open_online_session().await.unwrap();
    let sent = client.send_invoice(&session, bytes, &SendOptions::default()).await.unwrap();
    let st = client
        .wait_for_invoice(
            &session.reference,
            &sent.reference,
            Duration::from_millis(20),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    st.0.ksef_number.expect("accepted")
}

/// A real CONFLICT: KSeF already holds another file under this identity (another date of issue,
/// say, sent by hand); the relay's send is answered 440 and the original is not provably ours.
async fn conflict(w: &World, number: &str) -> (SendRequest, String) {
    let ours = invoice(number);
    let theirs = String::from_utf8(ours.clone())
        .unwrap()
        .replace("<P_1>2026-02-15</P_1>", "<P_1>2026-02-14</P_1>")
        .into_bytes();
    let original = send_raw(w, &theirs).await;
    let req = w.register(&ours).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    assert_eq!(w.poll_until_decided().await.outcome, "CONFLICT");
    (req, original)
}

fn ports(w: &World) -> DecisionPorts<'_, relay_domain::memory::MemoryDocumentStore> {
    DecisionPorts {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        status_queue: &w.status_q,
    }
}

fn decision(req: &SendRequest, json: serde_json::Value) -> ResolveRequest {
    let mut v =
        serde_json::json!({ "document": req.document.storage_id(), "by": "jan.kowalski", "reason": "checked in KSeF's app, ticket 42" });
    v.as_object_mut().unwrap().extend(json.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}

async fn record(w: &World, req: &SendRequest) -> DocumentRecord {
    w.store.get(&req.document).await.unwrap().unwrap().record
}

async fn outbox(w: &World) -> serde_json::Value {
    serde_json::from_slice(&w.archive.get("outbox/9999999999/erp.json").await.unwrap().unwrap().bytes).unwrap()
}

#[tokio::test]
async fn a_person_confirms_the_original_is_ours_and_the_relay_takes_its_upo_and_date_from_ksef() {
    let w = world(10).await;
    let (req, original) = conflict(&w, "RS/1").await;
    let before = record(&w, &req).await;

    // A dry run says what would happen and changes nothing (and calls nobody).
    let dry = resolve_conflict(
        &ports(&w),
        Some(&w.ksef),
        &decision(&req, serde_json::json!({"decision": "ours", "dry_run": true})),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(
        (dry.outcome, dry.state),
        (DecisionOutcome::Done, DocumentState::Conflict),
        "{dry:?}"
    );
    assert_eq!(record(&w, &req).await, before);

    let now = Utc::now();
    let done = resolve_conflict(
        &ports(&w),
        Some(&w.ksef),
        &decision(&req, serde_json::json!({"decision": "ours"})),
        now,
    )
    .await
    .unwrap();
    assert_eq!(done.state, DocumentState::Accepted, "{done:?}");
    let r = record(&w, &req).await;
    assert_eq!(r.ksef.ksef_number.as_ref().map(|n| n.as_str()), Some(original.as_str()));
    let upo = w
        .archive
        .get(r.storage.upo.as_deref().expect("the UPO archived"))
        .await
        .unwrap()
        .unwrap();
    let numbered_at = relay_pipeline::upo_read::documents(&upo.bytes)[0].numbered_at.unwrap();
    assert_eq!(
        r.ksef.acquisition_date,
        Some(numbered_at),
        "KSeF's own date, not the operator's or now"
    );
    assert_ne!(r.ksef.acquisition_date, Some(now));
    let history = w.store.get(&req.document).await.unwrap().unwrap().history;
    assert!(
        history.iter().any(
            |h| matches!(&h.event, HistoryEvent::StateChanged { from: Some(DocumentState::Conflict), to: DocumentState::Accepted, reason }
            if reason == "resolved by jan.kowalski (ours): checked in KSeF's app, ticket 42")
        ),
        "{history:#?}"
    );
    let o = outbox(&w).await;
    assert_eq!(
        (o["state"].as_str(), o["ksefNumber"].as_str()),
        (Some("ACCEPTED"), Some(original.as_str()))
    );
    assert_eq!(o["upoKey"].as_str(), r.storage.upo.as_deref());
    assert_eq!(w.status_q.stats().await.unwrap().total(), 0, "nothing left to fetch");

    // Again: no harm, nothing changes.
    let again = resolve_conflict(
        &ports(&w),
        Some(&w.ksef),
        &decision(&req, serde_json::json!({"decision": "ours"})),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(again.outcome, DecisionOutcome::AlreadyDone);
    assert_eq!(record(&w, &req).await.version, r.version);
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 0, "our own bytes were never numbered");
}

#[tokio::test]
async fn without_ksef_access_the_person_gives_the_date_and_the_status_stage_fetches_the_original_upo() {
    let w = world(10).await;
    let (req, original) = conflict(&w, "RS/2").await;
    let refused = resolve_conflict(
        &ports(&w),
        None,
        &decision(&req, serde_json::json!({"decision": "ours"})),
        Utc::now(),
    )
    .await;
    assert!(
        matches!(&refused, Err(DecisionError::Refused(why)) if why.contains("acquisition_date")),
        "{refused:?}"
    );
    let dry = resolve_conflict(
        &ports(&w),
        None,
        &decision(&req, serde_json::json!({"decision": "ours", "dry_run": true})),
        Utc::now(),
    )
    .await;
    assert!(
        matches!(&dry, Err(DecisionError::Refused(_))),
        "the dry run refuses as the real run would: {dry:?}"
    );
    let unnamed = resolve_conflict(
        &ports(&w),
        None,
        &decision(&req, serde_json::json!({"decision": "ours", "by": " "})),
        Utc::now(),
    )
    .await;
    assert!(
        matches!(&unnamed, Err(DecisionError::Refused(why)) if why.contains("who decides")),
        "{unnamed:?}"
    );
    assert_eq!(record(&w, &req).await.state, DocumentState::Conflict);

    let date: DateTime<Utc> = "2026-02-14T10:00:00Z".parse().unwrap();
    let done = resolve_conflict(
        &ports(&w),
        None,
        &decision(&req, serde_json::json!({"decision": "ours", "acquisition_date": date})),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(done.state, DocumentState::Accepted);
    let r = record(&w, &req).await;
    assert_eq!((r.ksef.acquisition_date, r.storage.upo.clone()), (Some(date), None));
    assert_eq!(
        outbox(&w).await["ksefNumber"].as_str(),
        Some(original.as_str()),
        "the ERP has the number at once"
    );
    // The status stage fetches the original's UPO (by number, in the session that holds it).
    let res = w.poll_until_decided().await;
    assert_eq!(res.outcome, "UPO_ARCHIVED");
    let r = record(&w, &req).await;
    let upo = w.archive.get(r.storage.upo.as_deref().unwrap()).await.unwrap().unwrap();
    assert!(String::from_utf8(upo.bytes).unwrap().contains(&original));
    assert_eq!(outbox(&w).await["upoKey"].as_str(), r.storage.upo.as_deref());
}

#[tokio::test]
async fn a_withdrawn_conflict_is_rejected_for_good_and_a_recheck_asks_ksef_again() {
    let w = world(10).await;
    let (req, _) = conflict(&w, "RS/3").await;
    let done = resolve_conflict(
        &ports(&w),
        None,
        &decision(&req, serde_json::json!({"decision": "withdraw"})),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(done.state, DocumentState::Rejected);
    let r = record(&w, &req).await;
    assert_eq!(r.last_error.as_ref().and_then(|f| f.code.as_deref()), Some(WITHDRAWN));
    let o = outbox(&w).await;
    assert_eq!(o["state"].as_str(), Some("REJECTED"));
    assert!(
        o["errors"][0]["message"].as_str().unwrap().contains("withdrawn by jan.kowalski"),
        "{o}"
    );
    // Neither a person's send-again nor dlq-replay sends a withdrawn document.
    let again = SendAgainRequest {
        document: req.document.storage_id(),
        by: "ops".into(),
        reason: "try".into(),
        dry_run: false,
    };
    assert!(matches!(
        send_again(&ports(&w), &again, Utc::now()).await,
        Err(DecisionError::Refused(_))
    ));
    // A second resolution does no harm; a different one on a document no longer in CONFLICT is
    // reported as already resolved too (the first decision stands).
    let twice = resolve_conflict(
        &ports(&w),
        None,
        &decision(&req, serde_json::json!({"decision": "recheck"})),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(
        (twice.outcome, twice.state),
        (DecisionOutcome::AlreadyDone, DocumentState::Rejected)
    );

    // Recheck: back to QUEUED with a fresh budget and a send message; KSeF answers 440 again.
    let (req2, _) = conflict(&w, "RS/4").await;
    let done = resolve_conflict(
        &ports(&w),
        None,
        &decision(&req2, serde_json::json!({"decision": "recheck"})),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(done.state, DocumentState::Queued);
    let m = w
        .send_q
        .receive(1, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .expect("a send message");
    w.send_q.delete(&m.receipt).await.unwrap();
    assert_eq!(w.send(&SendRequest::from_json(&m.body).unwrap()).await.outcome, "SENT");
    assert_eq!(w.poll_until_decided().await.outcome, "CONFLICT", "still not ours, still a person's");
    assert_eq!(w.sim.ledger().count_hash(&req2.content_hash), 0);

    // Not in CONFLICT and never resolved: refused.
    let queued = w.register(&invoice("RS/5")).await;
    let refused = resolve_conflict(
        &ports(&w),
        None,
        &decision(&queued, serde_json::json!({"decision": "withdraw"})),
        Utc::now(),
    )
    .await;
    assert!(
        matches!(&refused, Err(DecisionError::Refused(why)) if why.contains("not CONFLICT")),
        "{refused:?}"
    );
}

fn rejected_by(code: &str, message: &str) -> Change {
    Change::Rejected {
        failures: vec![Failure::new(
            ErrorClass::Permanent,
            ErrorSource::Ksef {
                operation: "invoice_status".into(),
            },
            message,
        )
        .with_code(code)],
    }
}

async fn move_to(w: &World, req: &SendRequest, change: Change) {
    let r = record(w, req).await;
    w.store.transition(&r, change, Utc::now()).await.unwrap();
}

#[tokio::test]
async fn dlq_replay_sends_again_a_rejection_not_about_the_content_and_refuses_a_content_rejection() {
    let w = world(10).await;
    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    // Rejected before the Operator class existed: a permission status (410) is not the content.
    let operator = w.register(&invoice("RS/6")).await;
    move_to(&w, &operator, rejected_by("410", "Brak uprawnień")).await;
    let content = w.register(&invoice("RS/7")).await;
    move_to(&w, &content, rejected_by("450", "Błąd weryfikacji semantyki dokumentu faktury")).await;
    for req in [&operator, &content] {
        send_dlq.send(OutgoingMessage::new(req.to_json())).await.unwrap();
    }
    let rp = ReplayPorts {
        store: &w.store,
        send_dlq: &send_dlq,
        status_dlq: &status_dlq,
        send_queue: &w.send_q,
        status_queue: &w.status_q,
    };
    let req: ReplayRequest = serde_json::from_value(serde_json::json!({"queue": "send"})).unwrap();
    let done = replay(&rp, &w.ksef, &req, Utc::now()).await.unwrap();
    let by_doc = |d: &SendRequest| {
        done.items
            .iter()
            .find(|i| i.document == Some(d.document.to_string()))
            .unwrap()
            .clone()
    };
    assert_eq!(by_doc(&operator).action, ReplayAction::RequeuedSend, "{done:#?}");
    assert_eq!(by_doc(&content).action, ReplayAction::Dropped, "{done:#?}");
    assert!(by_doc(&content).reason.contains("REJECTED"));
    let r = record(&w, &operator).await;
    assert_eq!((r.state, r.attempts), (DocumentState::Queued, 0));
    assert_eq!(record(&w, &content).await.state, DocumentState::Rejected);
    let m = w
        .send_q
        .receive(1, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    w.send_q.delete(&m.receipt).await.unwrap();
    assert_eq!(w.send(&SendRequest::from_json(&m.body).unwrap()).await.outcome, "SENT");
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
    assert_eq!(w.sim.ledger().count_hash(&operator.content_hash), 1);
    assert_eq!(w.sim.ledger().count_hash(&content.content_hash), 0);
}

#[tokio::test]
async fn a_person_sends_again_by_name_only_a_rejection_not_about_the_content() {
    let w = world(10).await;
    let operator = w.register(&invoice("RS/8")).await;
    move_to(&w, &operator, rejected_by("403", "ip-not-allowed")).await;
    let content = w.register(&invoice("RS/9")).await;
    move_to(&w, &content, rejected_by("450", "Błąd weryfikacji semantyki dokumentu faktury")).await;
    let ask = |req: &SendRequest, dry_run: bool| SendAgainRequest {
        document: req.document.storage_id(),
        by: "ops".into(),
        reason: "IP allow-list fixed".into(),
        dry_run,
    };
    let refused = send_again(&ports(&w), &ask(&content, false), Utc::now()).await;
    assert!(
        matches!(&refused, Err(DecisionError::Refused(why)) if why.contains("for its content")),
        "{refused:?}"
    );
    let dry = send_again(&ports(&w), &ask(&operator, true), Utc::now()).await.unwrap();
    assert_eq!(dry.state, DocumentState::Rejected);
    assert_eq!(w.send_q.stats().await.unwrap().total(), 0, "a dry run sends nothing");
    let done = send_again(&ports(&w), &ask(&operator, false), Utc::now()).await.unwrap();
    assert_eq!(done.state, DocumentState::Queued);
    assert_eq!(outbox(&w).await["state"].as_str(), Some("QUEUED"));
    let again = send_again(&ports(&w), &ask(&operator, false), Utc::now()).await.unwrap();
    assert_eq!(again.outcome, DecisionOutcome::AlreadyDone);
    let history = w.store.get(&operator.document).await.unwrap().unwrap().history;
    assert!(history.iter().any(
        |h| matches!(&h.event, HistoryEvent::StateChanged { reason, .. } if reason.contains("sent again by ops: IP allow-list fixed"))
    ));
}
