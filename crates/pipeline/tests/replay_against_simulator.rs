//! An outage longer than the retry budget, then dlq-replay: dry run first (changes nothing),
//! then the real replay after recovery brings every document to ACCEPTED, each accepted by KSeF
//! exactly once; an ACCEPTED document's stale message is dropped, never resent.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{invoice, world};
use ksef_sim::Fault;
use relay_domain::memory::MemoryQueue;
use relay_domain::ports::{DocumentRegistry, OutgoingMessage, Queue};
use relay_domain::DocumentState;
use relay_pipeline::drive::Stages;
use relay_pipeline::replay::{replay, ReplayPorts, ReplayRequest};

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
