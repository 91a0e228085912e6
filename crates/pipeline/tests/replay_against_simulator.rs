//! An outage longer than the retry budget, then dlq-replay: dry run first (changes nothing),
//! then the real replay after recovery brings every document to ACCEPTED, each accepted by KSeF
//! exactly once; an ACCEPTED document's stale message is dropped, never resent. The status DLQ
//! too: a FAILED document KSeF holds goes back to polling, never resent. A dry run's items are
//! the real run's items, and one message that cannot be moved does not stop the rest.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use common::{invoice, world};
use ksef_sim::Fault;
use relay_domain::memory::MemoryQueue;
use relay_domain::ports::{DocumentRegistry, DocumentUpdates, OutgoingMessage, Queue, QueueError, QueueStats, ReceivedMessage};
use relay_domain::{Change, DocumentState, ErrorClass, ErrorSource, Failure};
use relay_pipeline::drive::Stages;
use relay_pipeline::replay::{replay, ReplayAction, ReplayPorts, ReplayRequest};

fn request(dry_run: bool) -> ReplayRequest {
    serde_json::from_value(serde_json::json!({ "queue": "send", "limit": 50, "dry_run": dry_run })).unwrap()
}

#[tokio::test]
async fn an_outage_past_the_budget_fails_and_a_replay_after_recovery_delivers_once() {
    let w = world(3).await;
    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    let status_cfg = w.status_cfg();
    let stages = Stages {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        send_dlq: &send_dlq,
        status_queue: &w.status_q,
        status_dlq: &status_dlq,
        corrections_queue: &w.corrections_q,
        ksef: &w.ksef,
        send_cfg: &w.cfg,
        status_cfg: &status_cfg,
        visibility: Duration::from_secs(30),
        clock: &relay_domain::clock::SystemClock,
        sweep: relay_pipeline::sweeper::SweepConfig::standard(),
        batch_cfg: relay_pipeline::send::BatchConfig::default(),
    };
    let mut docs = Vec::new();
    for n in ["RP/1", "RP/2"] {
        let req = w.register(&invoice(n)).await;
        w.send_q.send(OutgoingMessage::new(req.to_json())).await.unwrap();
        docs.push(req);
    }
    // KSeF is down for sending for longer than the budget (3 attempts; immediate, then ~30 s...).
    w.sim.faults().set(
        vec![Fault::Unavailable {
            rate: 1.0,
            on: Some("/invoices".into()),
        }],
        1,
    );
    let fast = relay_domain::RetryPolicy::new(
        3,
        vec![Duration::ZERO, Duration::from_millis(50)],
        2.0,
        Duration::from_millis(200),
        0.0,
    )
    .unwrap();
    let send_cfg = relay_pipeline::send::SendConfig {
        policy: fast,
        ..w.cfg.clone()
    };
    let stages = Stages {
        send_cfg: &send_cfg,
        ..stages
    };
    assert!(stages
        .run_until_quiet(Duration::from_secs(20), Duration::from_millis(20), |_| {})
        .await
        .unwrap());
    for d in &docs {
        assert_eq!(w.store.get(&d.document).await.unwrap().unwrap().record.state, DocumentState::Failed);
    }
    assert_eq!(send_dlq.stats().await.unwrap().total(), 2, "both dead-lettered");

    let ports = ReplayPorts {
        store: &w.store,
        send_dlq: &send_dlq,
        status_dlq: &status_dlq,
        send_queue: &w.send_q,
        status_queue: &w.status_q,
    };
    // While KSeF is still down, a replay cannot check KSeF's records, so it moves nothing.
    let blind = replay(&ports, &w.ksef, &request(false), Utc::now()).await.unwrap();
    assert_eq!((blind.examined, blind.requeued, blind.skipped), (2, 0, 2), "{blind:?}");
    assert!(blind.items[0].reason.contains("cannot ask KSeF"), "{blind:?}");
    // KSeF recovers. A dry run says what it would do and changes nothing.
    w.sim.faults().clear();
    let dry = replay(&ports, &w.ksef, &request(true), Utc::now()).await.unwrap();
    assert_eq!((dry.examined, dry.requeued, dry.dry_run), (2, 2, true), "{dry:?}");
    assert_eq!(send_dlq.stats().await.unwrap().visible, 2, "still in the DLQ, visible");
    assert_eq!(w.send_q.stats().await.unwrap().total(), 0);
    for d in &docs {
        assert_eq!(w.store.get(&d.document).await.unwrap().unwrap().record.state, DocumentState::Failed);
    }

    // The replay moves them back with a fresh budget.
    let done = replay(&ports, &w.ksef, &request(false), Utc::now()).await.unwrap();
    assert_eq!((done.examined, done.requeued), (2, 2), "{done:?}");
    assert_eq!(send_dlq.stats().await.unwrap().total(), 0);
    let r = w.store.get(&docs[0].document).await.unwrap().unwrap().record;
    assert_eq!((r.state, r.attempts), (DocumentState::Queued, 0));
    assert!(stages
        .run_until_quiet(Duration::from_secs(20), Duration::from_millis(20), |_| {})
        .await
        .unwrap());
    for d in &docs {
        assert_eq!(
            w.store.get(&d.document).await.unwrap().unwrap().record.state,
            DocumentState::Accepted
        );
        assert_eq!(w.sim.ledger().count_hash(&d.content_hash), 1, "accepted exactly once");
    }

    // A stale message for an ACCEPTED document is dropped, never resent.
    send_dlq.send(OutgoingMessage::new(docs[0].to_json())).await.unwrap();
    let again = replay(&ports, &w.ksef, &request(false), Utc::now()).await.unwrap();
    assert_eq!((again.requeued, again.dropped), (0, 1), "{again:?}");
    assert!(again.items[0].reason.contains("ACCEPTED"));
    assert_eq!(w.send_q.stats().await.unwrap().total(), 0);
    assert_eq!(w.sim.ledger().count_hash(&docs[0].content_hash), 1);
}

#[tokio::test]
async fn the_console_event_is_strict_and_filters_leave_the_rest_in_place() {
    let bad: Result<ReplayRequest, _> = serde_json::from_value(serde_json::json!({ "queue": "send", "dryrun": true }));
    assert!(bad.is_err(), "a misspelt field is an error, not a silent real run");
    let w = world(3).await;
    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    let req = w.register(&invoice("RP/3")).await;
    send_dlq.send(OutgoingMessage::new(req.to_json())).await.unwrap();
    let ports = ReplayPorts {
        store: &w.store,
        send_dlq: &send_dlq,
        status_dlq: &status_dlq,
        send_queue: &w.send_q,
        status_queue: &w.status_q,
    };
    let only_other: ReplayRequest = serde_json::from_value(serde_json::json!({ "queue": "send", "seller_nip": "5265877635" })).unwrap();
    let s = replay(&ports, &w.ksef, &only_other, Utc::now()).await.unwrap();
    assert_eq!((s.examined, s.skipped, s.requeued), (1, 1, 0));
    assert_eq!(send_dlq.stats().await.unwrap().visible, 1, "left in the DLQ, visible");
    let wrong: ReplayRequest = serde_json::from_value(serde_json::json!({ "queue": "intake" })).unwrap();
    assert!(replay(&ports, &w.ksef, &wrong, Utc::now()).await.is_err());
}

/// The items of a summary in a stable order (an SQS-like queue need not keep the order).
fn sorted(items: &[relay_pipeline::replay::ReplayItem]) -> Vec<String> {
    let mut v: Vec<String> = items
        .iter()
        .map(|i| format!("{:?} {:?} {}", i.document, i.action, i.reason))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_status_dlq_replays_a_failed_document_that_ksef_holds_back_to_polling_once() {
    let w = world(3).await;
    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    // KSeF keeps the invoice in 150 for longer than the relay polls (2 polls): FAILED, status DLQ.
    w.sim.faults().set(
        vec![Fault::StuckProcessing {
            rate: 1.0,
            for_ms: Some(1500),
        }],
        1,
    );
    let status_cfg = relay_pipeline::status::StatusConfig {
        max_polls: 2,
        ..w.status_cfg()
    };
    let stages = Stages {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        send_dlq: &send_dlq,
        status_queue: &w.status_q,
        status_dlq: &status_dlq,
        corrections_queue: &w.corrections_q,
        ksef: &w.ksef,
        send_cfg: &w.cfg,
        status_cfg: &status_cfg,
        visibility: Duration::from_secs(30),
        clock: &relay_domain::clock::SystemClock,
        sweep: relay_pipeline::sweeper::SweepConfig::standard(),
        batch_cfg: relay_pipeline::send::BatchConfig::default(),
    };
    let req = w.register(&invoice("RS/1")).await;
    w.send_q.send(OutgoingMessage::new(req.to_json())).await.unwrap();
    assert!(stages
        .run_until_quiet(Duration::from_secs(20), Duration::from_millis(20), |_| {})
        .await
        .unwrap());
    let failed = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(failed.state, DocumentState::Failed);
    assert!(failed.ksef.invoice_reference.is_some(), "KSeF has it under a reference");
    assert_eq!(status_dlq.stats().await.unwrap().total(), 1, "dead-lettered by the status stage");
    w.sim.faults().clear();
    tokio::time::sleep(Duration::from_millis(1600)).await; // KSeF decides

    let ports = ReplayPorts {
        store: &w.store,
        send_dlq: &send_dlq,
        status_dlq: &status_dlq,
        send_queue: &w.send_q,
        status_queue: &w.status_q,
    };
    let status =
        |dry_run: bool| -> ReplayRequest { serde_json::from_value(serde_json::json!({ "queue": "status", "dry_run": dry_run })).unwrap() };
    let dry = replay(&ports, &w.ksef, &status(true), Utc::now()).await.unwrap();
    assert_eq!((dry.examined, dry.requeued, dry.failed), (1, 1, 0), "{dry:?}");
    assert_eq!(dry.items[0].action, ReplayAction::RequeuedStatus);
    assert_eq!(
        w.store.get(&req.document).await.unwrap().unwrap().record,
        failed,
        "a dry run changes nothing"
    );

    let done = replay(&ports, &w.ksef, &status(false), Utc::now()).await.unwrap();
    assert_eq!(
        sorted(&done.items),
        sorted(&dry.items),
        "the dry run said exactly what the real run did"
    );
    assert_eq!((done.requeued, done.failed), (1, 0), "{done:?}");
    assert_eq!(status_dlq.stats().await.unwrap().total(), 0);
    let resumed = w.store.get(&req.document).await.unwrap().unwrap();
    assert_eq!((resumed.record.state, resumed.record.attempts), (DocumentState::Sent, 0));
    assert!(resumed.history.iter().any(|h| matches!(&h.event,
        relay_domain::HistoryEvent::StateChanged { from: Some(DocumentState::Failed), to: DocumentState::Sent, reason } if reason.contains("dlq-replay"))));
    assert_eq!(w.send_q.stats().await.unwrap().total(), 0, "never resent");
    assert!(stages
        .run_until_quiet(Duration::from_secs(20), Duration::from_millis(20), |_| {})
        .await
        .unwrap());
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Accepted, "{:?}", r.last_error);
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1, "accepted exactly once");
}

/// Puts a document straight into `change`'s state.
async fn move_to(w: &common::World, req: &relay_pipeline::messages::SendRequest, change: Change) {
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    w.store.transition(&r, change, Utc::now()).await.unwrap();
}

fn gave_up() -> Change {
    Change::Failed {
        failure: Failure::new(ErrorClass::Transient, ErrorSource::Relay, "the budget is spent"),
    }
}

#[tokio::test]
async fn the_dry_run_reports_exactly_what_the_real_run_does_on_the_same_dlq() {
    let w = world(3).await;
    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    let failed = w.register(&invoice("DR/1")).await;
    move_to(&w, &failed, gave_up()).await;
    let conflict = w.register(&invoice("DR/2")).await;
    move_to(
        &w,
        &conflict,
        Change::Conflict {
            failure: Failure::new(ErrorClass::Permanent, ErrorSource::Relay, "a person decides"),
        },
    )
    .await;
    // The failed document twice (a redelivered message dead-lettered again), a conflict, junk.
    for body in [failed.to_json(), failed.to_json(), conflict.to_json(), "{\"junk\":1}".to_owned()] {
        send_dlq.send(OutgoingMessage::new(body)).await.unwrap();
    }
    let ports = ReplayPorts {
        store: &w.store,
        send_dlq: &send_dlq,
        status_dlq: &status_dlq,
        send_queue: &w.send_q,
        status_queue: &w.status_q,
    };
    let dry = replay(&ports, &w.ksef, &request(true), Utc::now()).await.unwrap();
    assert_eq!(send_dlq.stats().await.unwrap().visible, 4, "a dry run leaves every message");
    let done = replay(&ports, &w.ksef, &request(false), Utc::now()).await.unwrap();
    assert_eq!(sorted(&done.items), sorted(&dry.items), "dry {dry:#?}\nreal {done:#?}");
    assert_eq!(
        (done.examined, done.requeued, done.dropped, done.skipped, done.failed),
        (4, 1, 2, 1, 0),
        "{done:#?}"
    );
    assert_eq!((dry.examined, dry.requeued, dry.dropped, dry.skipped, dry.failed), (4, 1, 2, 1, 0));
    assert_eq!(
        w.send_q.stats().await.unwrap().total(),
        1,
        "the failed document is sent once, not twice"
    );
    assert_eq!(send_dlq.stats().await.unwrap().visible, 1, "only the junk stays, for a person");
}

/// A queue whose first send fails (SQS throttling, a network error).
struct FailsFirstSend<'a> {
    inner: &'a MemoryQueue,
    failed: AtomicBool,
}

#[async_trait]
impl Queue for FailsFirstSend<'_> {
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err(QueueError::Unavailable("SQS SendMessage: throttled".into()));
        }
        self.inner.send(message).await
    }
    async fn receive(&self, max: u32, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(max, visibility, wait).await
    }
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.change_visibility(receipt, timeout).await
    }
    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt).await
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.stats().await
    }
}

#[tokio::test]
async fn one_message_that_cannot_be_moved_is_reported_and_the_replay_goes_on() {
    let w = world(3).await;
    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    let mut docs = Vec::new();
    for n in ["OF/1", "OF/2"] {
        let req = w.register(&invoice(n)).await;
        move_to(&w, &req, gave_up()).await;
        send_dlq.send(OutgoingMessage::new(req.to_json())).await.unwrap();
        docs.push(req);
    }
    let flaky = FailsFirstSend {
        inner: &w.send_q,
        failed: AtomicBool::new(false),
    };
    let ports = ReplayPorts {
        store: &w.store,
        send_dlq: &send_dlq,
        status_dlq: &status_dlq,
        send_queue: &flaky,
        status_queue: &w.status_q,
    };
    let s = replay(&ports, &w.ksef, &request(false), Utc::now()).await.unwrap();
    assert_eq!((s.examined, s.requeued, s.failed), (2, 1, 1), "{s:#?}");
    let failed = s.items.iter().find(|i| i.action == ReplayAction::Failed).unwrap();
    assert!(
        failed.reason.contains("throttled") && failed.reason.contains("left in the DLQ"),
        "{failed:?}"
    );
    assert_eq!(send_dlq.stats().await.unwrap().visible, 1, "the one that failed stays, visible");
    // The next replay finishes the job (the document is QUEUED already: it is sent, once).
    let again = replay(&ports, &w.ksef, &request(false), Utc::now()).await.unwrap();
    assert_eq!((again.requeued, again.failed), (1, 0), "{again:#?}");
    assert_eq!(send_dlq.stats().await.unwrap().total(), 0);
    assert_eq!(w.send_q.stats().await.unwrap().total(), 2, "one message per document");
    for d in &docs {
        assert_eq!(w.store.get(&d.document).await.unwrap().unwrap().record.state, DocumentState::Queued);
    }
}
