//! Whose fault is it? An operator's problem (a refused login, a 403, an unknown status) parks the
//! seller's work and is never blamed on the invoices; reads and recoveries that sent nothing do
//! not spend the send budget. Against the simulator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{client, invoice, world, World};
use ksef_client::{ClientConfig, ClientLimits, Credentials, Environment, KsefClient, KsefToken};
use ksef_sim::{Fault, SimHandle};
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::{DocumentRegistry, DocumentUpdates, Queue, SharedCache};
use relay_domain::{Change, DocumentState, ErpDocumentId, ErrorClass, ErrorSource, Failure};
use relay_pipeline::intake::{intake, IntakeOutcome, IntakePorts, Upload};
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::seller_block::SellerGate;
use relay_pipeline::send::send;
use relay_pipeline::sessions::KsefContexts;

fn client_with_token(sim: &SimHandle, token: &str) -> KsefClient {
    let cfg = ClientConfig {
        timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(2),
        limits: ClientLimits::official().scaled(common::SCALE),
        auth_poll_interval: Duration::from_millis(10),
        auth_poll_timeout: Duration::from_secs(5),
        ..ClientConfig::new(Environment::Custom(sim.api_url()))
    };
    let creds = Credentials::Token {
        context: World::nip(),
        token: KsefToken::new(token),
    };
    KsefClient::new(cfg, Some(creds)).unwrap()
}

/// Failed on main: the refused login was PERMANENT, so the first invoice became REJECTED (and
/// so would the whole backlog), with a corrections notice blaming the invoice.
#[tokio::test]
async fn a_refused_login_parks_the_sellers_work_instead_of_rejecting_the_backlog() {
    let mut w = world(3).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    w.ksef = KsefContexts::new()
        .with(World::nip(), client_with_token(&w.sim, "revoked-token"))
        .with_shared_cache(cache.clone());
    let first = w.register(&invoice("OP/1")).await;
    let second = w.register(&invoice("OP/2")).await;

    let res = w.send(&first).await;
    assert_eq!(res.outcome, "OPERATOR_PARKED");
    let (QueueAction::Requeue { delay } | QueueAction::Replace { delay, .. }) = res.action else {
        panic!("{:?}", res.action)
    };
    assert!(delay >= Duration::from_secs(299), "a delayed message, minutes away: {delay:?}");
    let r = res.record.unwrap();
    assert_eq!((r.state, r.attempts, r.recoveries), (DocumentState::Queued, 0, 0));
    assert_eq!(r.last_error.as_ref().unwrap().class, ErrorClass::Operator);
    assert_eq!(r.last_error.as_ref().unwrap().code.as_deref(), Some("450"), "KSeF's words kept");
    assert_eq!(w.corrections_q.stats().await.unwrap().total(), 0, "nothing blamed on the invoice");

    // Every instance now sees the seller parked; the other invoice waits without a KSeF call.
    let res = w.send(&second).await;
    assert_eq!(res.outcome, "SELLER_PARKED");
    let r = res.record.unwrap();
    assert_eq!((r.state, r.attempts), (DocumentState::Queued, 0));
    assert!(r.next_attempt_at.unwrap() > Utc::now() + chrono::Duration::minutes(4));
    assert!(r.last_error.unwrap().message.contains("parked"));
    assert!(r.lease.is_none(), "not claimed: no KSeF call while parked");
    let other = KsefContexts::new().with_shared_cache(cache.clone());
    assert!(matches!(other.seller_gate(&World::nip(), Utc::now()).await, SellerGate::Parked(_)));

    // An operator puts the right token in; when the wait ends, one attempt probes and gets through.
    w.ksef = KsefContexts::new()
        .with(World::nip(), client(&w.sim))
        .with_shared_cache(cache.clone());
    let later = Utc::now() + chrono::Duration::hours(2);
    let second = w.current_request(&second).await;
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &second, later).await.unwrap();
    assert_eq!(res.outcome, "SENT");
    assert_eq!(
        w.ksef.seller_gate(&World::nip(), later).await,
        SellerGate::Open,
        "the probe cleared the block"
    );
    let first = w.current_request(&first).await;
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &first, later).await.unwrap();
    assert_eq!(res.outcome, "SENT");
    assert_eq!(res.record.unwrap().attempts, 0);
}

/// Failed on main: a 403 (IP not allowed) on the send was PERMANENT: REJECTED.
#[tokio::test]
async fn a_403_ip_block_is_never_a_rejection() {
    let w = world(3).await;
    let req = w.register(&invoice("OP/3")).await;
    // Log in first, then the IP block starts.
    w.ksef.session(&World::nip(), Utc::now()).await.unwrap();
    w.sim.faults().set(
        vec![Fault::Forbidden {
            rate: 1.0,
            reason_code: "ip-not-allowed".into(),
            on: Some("/invoices".into()),
        }],
        1,
    );
    let res = w.send(&req).await;
    assert_eq!(res.outcome, "OPERATOR_PARKED");
    let r = res.record.unwrap();
    assert_eq!((r.state, r.attempts), (DocumentState::Queued, 0));
    assert_eq!(r.last_error.unwrap().code.as_deref(), Some("403 ip-not-allowed"));
    assert_eq!(r.ksef.unconfirmed_send, None, "KSeF refused it outright");
    assert!(matches!(w.ksef.seller_gate(&World::nip(), Utc::now()).await, SellerGate::Parked(_)));
}

/// Issue 11: status polling ignored the seller's block and kept calling KSeF into the same
/// refusal. A parked seller's status message waits for the block's end without a KSeF call.
#[tokio::test]
async fn a_parked_sellers_status_polls_wait_without_calling_ksef() {
    let w = world(3).await;
    let req = w.register(&invoice("OP/POLL")).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let block = w
        .ksef
        .park_seller(
            &World::nip(),
            &Failure::new(ErrorClass::Operator, ErrorSource::Relay, "test: the seller's token was revoked").with_code("TEST"),
            Utc::now(),
        )
        .await;
    // A call now would be refused: every status read answers 403.
    w.sim.faults().set(
        vec![Fault::Forbidden {
            rate: 1.0,
            reason_code: "ip-not-allowed".into(),
            on: None,
        }],
        1,
    );
    let m = w
        .status_q
        .receive(1, Duration::from_secs(30), Duration::from_secs(5))
        .await
        .unwrap();
    let status = relay_pipeline::messages::StatusRequest::from_json(&m[0].body).unwrap();
    let res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &w.status_cfg(), &status, Utc::now())
        .await
        .unwrap();
    assert_eq!(res.outcome, "SELLER_PARKED");
    let QueueAction::Requeue { delay } = res.action else {
        panic!("{:?}", res.action)
    };
    assert!(delay >= Duration::from_secs(1) && block.until > Utc::now(), "{delay:?}");
    let r = res.record.unwrap();
    assert_eq!(
        (r.state, r.last_error),
        (DocumentState::Sent, None),
        "nothing written, no KSeF error met"
    );
    // Once the block is gone, the same message (back from its delay) polls and the invoice is
    // decided.
    w.status_q.delete(&m[0].receipt).await.unwrap();
    w.status_q
        .send(relay_domain::ports::OutgoingMessage::new(m[0].body.clone()))
        .await
        .unwrap();
    w.ksef.clear_seller_block(&World::nip(), Utc::now()).await;
    w.sim.faults().clear();
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
}

/// Failed on main: a 403 on a status read was a failed poll like any other (spent, the seller's
/// other work not parked), so an IP block ran a SENT invoice's polls down to POLL_LIMIT.
#[tokio::test]
async fn a_403_on_a_status_read_parks_the_seller_without_spending_a_poll() {
    let w = world(3).await;
    let req = w.register(&invoice("OP/POLL403")).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    w.sim.faults().set(
        vec![Fault::Forbidden {
            rate: 1.0,
            reason_code: "ip-not-allowed".into(),
            on: None,
        }],
        1,
    );
    let m = w
        .status_q
        .receive(1, Duration::from_secs(30), Duration::from_secs(5))
        .await
        .unwrap();
    let status = relay_pipeline::messages::StatusRequest::from_json(&m[0].body).unwrap();
    let now = Utc::now();
    let res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &w.status_cfg(), &status, now)
        .await
        .unwrap();
    assert_eq!(res.outcome, "SELLER_PARKED");
    let QueueAction::Replace { body, delay } = &res.action else {
        panic!("{:?}", res.action)
    };
    let again = relay_pipeline::messages::StatusRequest::from_json(body).unwrap();
    assert_eq!(again.poll, status.poll, "no poll spent on an IP block");
    assert!(*delay >= Duration::from_secs(1), "{delay:?}");
    let r = res.record.unwrap();
    assert_eq!(r.state, DocumentState::Sent);
    assert_eq!(r.last_error.unwrap().code.as_deref(), Some("403 ip-not-allowed"));
    assert!(matches!(
        w.ksef.seller_gate(&World::nip(), now).await,
        relay_pipeline::seller_block::SellerGate::Parked(_)
    ));
}

/// Failed on main: each failed `session_invoices` read was charged like a send, so the
/// invoice reached FAILED after max_attempts reads that sent nothing.
#[tokio::test]
async fn failed_reconciliation_reads_spend_their_own_limit_not_the_send_budget() {
    let w = world(3).await;
    let req = w.register(&invoice("OP/4")).await;
    w.sim.faults().set(
        vec![Fault::Unavailable {
            rate: 1.0,
            on: Some("/invoices".into()),
        }],
        7,
    );
    // The send itself: a 503 that may hide a receipt. One attempt of the budget.
    let t0 = Utc::now();
    let res = w.send(&req).await;
    assert_eq!(res.outcome, "RETRY");
    assert_eq!(res.record.unwrap().attempts, 1);
    // Then only reads (is it in the session?), all failing.
    let max_recoveries = w.cfg.policy.max_recoveries();
    for i in 1..max_recoveries {
        let at = t0 + chrono::Duration::hours(2 * i64::from(i));
        let req = w.current_request(&req).await;
        let res = send(&w.send_ports(), &w.ksef, &w.cfg, &req, at).await.unwrap();
        assert_eq!(res.outcome, "RETRY", "read {i}");
        let r = res.record.unwrap();
        assert_eq!((r.state, r.attempts, r.recoveries), (DocumentState::Queued, 1, i), "read {i}");
        assert!(r.ksef.unconfirmed_send.is_some(), "still to be reconciled");
    }
    // An endless loop of failed reads still ends, FAILED, saying why.
    let at = t0 + chrono::Duration::hours(2 * i64::from(max_recoveries));
    let req = w.current_request(&req).await;
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &req, at).await.unwrap();
    assert_eq!(res.outcome, "FAILED");
    let r = res.record.unwrap();
    assert_eq!(r.attempts, 1, "one send in all");
    assert!(r.last_error.unwrap().message.contains("recoveries"));
}

/// Failed on main: the same file re-uploaded was a no-op "Repeat", so a document REJECTED for an
/// IP block (before the operator class existed) could never be sent again.
#[tokio::test]
async fn re_uploading_a_file_rejected_for_something_other_than_its_content_sends_it_again() {
    let w = world(3).await;
    let bytes = invoice("OP/5");
    let req = w.register(&bytes).await;
    fn upload(bytes: &[u8]) -> Upload<'_> {
        Upload {
            bytes,
            source_key: "local/again.xml".into(),
            erp_document_id: ErpDocumentId::parse("erp").unwrap(),
            expected_seller: None,
            trace_id: None,
            offline_mode: None,
            corrects: None,
        }
    }
    let rejected_for = |code: &str, operation: &str| {
        Failure::new(
            ErrorClass::Permanent,
            ErrorSource::Ksef {
                operation: operation.into(),
            },
            "x",
        )
        .with_code(code)
    };
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    let r = w
        .store
        .transition(
            &r,
            Change::Rejected {
                failures: vec![rejected_for("403 ip-not-allowed", "send_invoice")],
            },
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(r.state, DocumentState::Rejected);
    let ports = IntakePorts {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        corrections_queue: &w.corrections_q,
        backlog: None,
    };
    let out = intake(&ports, upload(&bytes), Utc::now()).await.unwrap();
    let IntakeOutcome::Resubmitted(r) = out else { panic!("{out:?}") };
    assert_eq!((r.state, r.attempts), (DocumentState::Queued, 0));
    assert_eq!(w.send_q.stats().await.unwrap().total(), 1, "queued for sending");
    assert_eq!(w.send(&w.current_request(&req).await).await.outcome, "SENT");

    // A rejection for the content stays: the same bytes again are a repeat.
    let bytes = invoice("OP/6");
    let req = w.register(&bytes).await;
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    w.store
        .transition(
            &r,
            Change::Rejected {
                failures: vec![rejected_for("450", "invoice_status")],
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let out = intake(&ports, upload(&bytes), Utc::now()).await.unwrap();
    assert!(matches!(out, IntakeOutcome::Repeat(_)), "{out:?}");
}
