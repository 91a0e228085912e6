//! The status use case against the KSeF simulator: ACCEPTED with the UPO archived, REJECTED with
//! KSeF's words, resends after 550, and duplicates proven ours or flagged as conflicts.

mod common;

use chrono::Utc;
use common::{invoice, world, World};
use ksef_client::SendOptions;
use ksef_sim::Fault;
use relay_domain::ports::{Archive, DocumentRegistry, Queue};
use relay_domain::{ContentHash, DocumentState};
use relay_pipeline::queue_action::QueueAction;
use std::time::Duration;

async fn send_raw_and_wait(w: &World, bytes: &[u8]) -> String {
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

#[tokio::test]
async fn an_accepted_invoice_gets_its_number_and_its_upo_archived() {
    let w = world(10).await;
    let req = w.register(&invoice("ST/1")).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let res = w.poll_until_decided().await;
    assert_eq!(res.outcome, "ACCEPTED");
    let r = res.record.unwrap();
    assert_eq!(r.state, DocumentState::Accepted);
    let number = r.ksef.ksef_number.clone().unwrap();
    assert_eq!(number.seller_nip_digits(), "9999999999");
    let upo_key = r.storage.upo.clone().unwrap();
    assert_eq!(upo_key, format!("upo/9999999999/{number}.xml"));
    let upo = w.archive.get(&upo_key).await.unwrap().unwrap();
    let text = String::from_utf8(upo.bytes).unwrap();
    assert!(
        text.contains(&format!("<SkrotDokumentu>{}</SkrotDokumentu>", req.content_hash.to_base64())),
        "the UPO is this document's"
    );
    let outbox: serde_json::Value =
        serde_json::from_slice(&w.archive.get("outbox/9999999999/erp.json").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(
        (outbox["state"].as_str(), outbox["ksefNumber"].as_str()),
        (Some("ACCEPTED"), Some(number.as_str()))
    );
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1);
}

/// KOD I: written when KSeF numbers the invoice, named by the record and the outbox, its link
/// built from the seller, P_1 and the exact bytes' hash for the client's environment (the
/// simulator stands for TEST), labelled with the KSeF number.
#[tokio::test]
async fn an_accepted_invoice_gets_its_qr_code_written_and_named_in_the_outbox() {
    let w = world(10).await;
    let bytes = invoice("QR/1");
    let req = w.register(&bytes).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let r = w.poll_until_decided().await.record.unwrap();
    assert_eq!(r.state, DocumentState::Accepted);
    let number = r.ksef.ksef_number.clone().unwrap();
    let keys = r.storage.qr_code.clone().expect("the record names its QR code");
    assert_eq!(keys.png, format!("qr/9999999999/{number}-kod1.png"));
    assert_eq!(keys.svg, format!("qr/9999999999/{number}-kod1.svg"));

    // The sample's P_1 is 2026-02-15; the hash is the SHA-256 of these very bytes, base64url.
    let hash = ContentHash::of(&bytes)
        .to_base64()
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    let url = format!("https://qr-test.ksef.mf.gov.pl/invoice/9999999999/15-02-2026/{hash}");
    let png = w.archive.get(&keys.png).await.unwrap().expect("the PNG is archived");
    assert_eq!(png.content_type, "image/png");
    assert_eq!(png.metadata.get("qr-url"), Some(&url));
    assert_eq!(png.metadata.get("ksef-number").map(String::as_str), Some(number.as_str()));
    let svg = w.archive.get(&keys.svg).await.unwrap().expect("the SVG is archived");
    assert_eq!(svg.content_type, "image/svg+xml");
    let svg = String::from_utf8(svg.bytes).unwrap();
    assert!(svg.contains(&format!("<title>{url}</title>")), "{svg}");
    assert!(svg.contains(&format!(">{number}</text>")), "labelled with the KSeF number");
    // The images are those of the client's rendering for this link and label: a redelivery that
    // writes them again writes the same bytes.
    let again = ksef_client::qr::render(&url, number.as_str()).unwrap();
    assert_eq!(png.bytes, again.png);
    assert_eq!(svg, again.svg);

    let outbox: serde_json::Value =
        serde_json::from_slice(&w.archive.get("outbox/9999999999/erp.json").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(
        outbox["qrCodes"],
        serde_json::json!([{"code": "KOD_I", "label": number.as_str(), "pngKey": keys.png, "svgKey": keys.svg}])
    );
}

#[tokio::test]
async fn a_permission_refusal_is_kept_verbatim_and_parks_the_seller_instead_of_rejecting() {
    let w = world(10).await;
    // Valid FA(3) for seller 5265877635, but the relay is (mis)configured to send that seller's
    // invoices with credentials for context 9999999999: KSeF answers 410 (wrong permissions).
    // That is the configuration's fault, not the invoice's: before the operator class it was
    // REJECTED with a corrections notice blaming the invoice.
    let text = String::from_utf8(invoice("ST/2")).unwrap();
    let bytes = text.replacen("<NIP>9999999999</NIP>", "<NIP>5265877635</NIP>", 1).into_bytes();
    let req = w.register(&bytes).await;
    let misconfigured =
        relay_pipeline::sessions::KsefContexts::new().with(relay_domain::Nip::parse("5265877635").unwrap(), common::client(&w.sim));
    let sent = relay_pipeline::send::send(&w.send_ports(), &misconfigured, &w.cfg, &req, Utc::now())
        .await
        .unwrap();
    assert_eq!(sent.outcome, "SENT");
    let cfg = w.status_cfg();
    let mut last = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(m) = w
            .status_q
            .receive(1, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .next()
        else {
            continue;
        };
        let sreq = relay_pipeline::messages::StatusRequest::from_json(&m.body).unwrap();
        let res = relay_pipeline::status::poll(&w.status_ports(), &misconfigured, &cfg, &sreq, Utc::now())
            .await
            .unwrap();
        relay_pipeline::queue_action::apply(&res.action, &m, &w.status_q, &w.corrections_q)
            .await
            .unwrap();
        if res.outcome != "PROCESSING" && res.outcome != "POLL_ERROR" {
            last = Some(res);
            break;
        }
    }
    let res = last.expect("a decision");
    assert_eq!(res.outcome, "RESEND");
    let r = res.record.unwrap();
    assert_eq!((r.state, r.attempts), (DocumentState::Queued, 0), "back to the queue, not charged");
    let f = r.last_error.unwrap();
    assert_eq!(
        (f.class.clone(), f.code.as_deref()),
        (relay_domain::ErrorClass::Operator, Some("410"))
    );
    assert!(!f.message.is_empty(), "KSeF's words are kept: {f:?}");
    let notices = w.corrections_q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert!(notices.is_empty(), "nothing blamed on the invoice");
    assert!(matches!(
        misconfigured
            .seller_gate(&relay_domain::Nip::parse("5265877635").unwrap(), Utc::now())
            .await,
        relay_pipeline::seller_block::SellerGate::Parked(_)
    ));
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 0);
}

#[tokio::test]
async fn an_invalid_invoice_is_rejected_at_intake_and_never_reaches_ksef() {
    let w = world(10).await;
    let text = String::from_utf8(invoice("ST/7")).unwrap();
    let bytes = text.replacen("<P_2>ST/7</P_2>", "", 1).into_bytes();
    let ports = relay_pipeline::intake::IntakePorts {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        corrections_queue: &w.corrections_q,
        backlog: None,
    };
    let upload = relay_pipeline::intake::Upload {
        bytes: &bytes,
        source_key: "local/bad.xml".into(),
        erp_document_id: relay_domain::ErpDocumentId::parse("bad").unwrap(),
        expected_seller: None,
        trace_id: None,
        offline_mode: None,
        corrects: None,
    };
    // Without P_2 there is no identity to register: answered, not registered, not sent.
    let outcome = relay_pipeline::intake::intake(&ports, upload, Utc::now()).await.unwrap();
    assert_eq!(outcome.name(), "NOT_REGISTERED");
    // With P_2 but a broken tax-rate code: registered REJECTED with the XML path, not sent.
    let bytes = String::from_utf8(invoice("ST/8"))
        .unwrap()
        .replacen("<P_12>23</P_12>", "<P_12>24</P_12>", 1)
        .into_bytes();
    let upload = relay_pipeline::intake::Upload {
        bytes: &bytes,
        source_key: "local/bad2.xml".into(),
        erp_document_id: relay_domain::ErpDocumentId::parse("bad2").unwrap(),
        expected_seller: None,
        trace_id: None,
        offline_mode: None,
        corrects: None,
    };
    let relay_pipeline::intake::IntakeOutcome::Rejected(r) = relay_pipeline::intake::intake(&ports, upload, Utc::now()).await.unwrap()
    else {
        panic!("expected REJECTED")
    };
    let f = r.last_error.unwrap();
    assert!(f.location.as_deref().is_some_and(|l| l.contains("P_12")), "{f:?}");
    assert_eq!(w.send_q.stats().await.unwrap().total(), 0);
    assert!(w.sim.ledger().is_empty());
}

#[tokio::test]
async fn a_550_sends_it_again_and_it_is_accepted_once() {
    let w = world(10).await;
    let req = w.register(&invoice("ST/3")).await;
    w.sim.faults().set(vec![Fault::Status550 { rate: 1.0 }], 5);
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let res = w.poll_until_decided().await;
    assert_eq!(res.outcome, "RESEND");
    let r = res.record.unwrap();
    assert_eq!((r.state, r.attempts), (DocumentState::Queued, 1));
    w.sim.faults().clear();
    let m = w.send_q.receive(1, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
    assert_eq!(m.len(), 1, "back on the send queue");
    let resend = relay_pipeline::messages::SendRequest::from_json(&m[0].body).unwrap();
    assert_eq!(resend.step, r.step, "for the step the resend wrote");
    // The original send message, were it delivered again, is a leftover: it sends nothing.
    assert_eq!(w.send(&req).await.outcome, "LEFTOVER");
    assert_eq!(w.send(&resend).await.outcome, "SENT");
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED");
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1);
}

#[tokio::test]
async fn a_duplicate_whose_original_is_ours_is_accepted_under_the_original_number() {
    let w = world(10).await;
    let bytes = invoice("ST/4");
    let req = w.register(&bytes).await;
    // The same bytes reached KSeF before (say, from a relay whose state was restored from an
    // older backup): KSeF holds them under a number we never recorded.
    let original = send_raw_and_wait(&w, &bytes).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let res = w.poll_until_decided().await;
    assert_eq!(res.outcome, "ACCEPTED_DUPLICATE_OURS");
    let r = res.record.unwrap();
    assert_eq!(r.ksef.ksef_number.as_ref().map(|n| n.as_str()), Some(original.as_str()));
    // Legally received when the original was numbered: its UPO's date, not the time of this poll.
    let upo = w.archive.get(r.storage.upo.as_deref().unwrap()).await.unwrap().unwrap();
    let numbered_at = relay_pipeline::upo_read::documents(&upo.bytes)[0]
        .numbered_at
        .expect("the UPO's DataNadaniaNumeruKSeF");
    assert_eq!(r.ksef.acquisition_date, Some(numbered_at));
    assert!(w.archive.get(r.storage.upo.as_deref().unwrap()).await.unwrap().is_some());
    assert_eq!(
        w.sim.ledger().count_hash(&ContentHash::of(&bytes)),
        1,
        "accepted once, by KSeF's own books"
    );
}

#[tokio::test]
async fn a_duplicate_of_someone_elses_content_is_a_conflict() {
    let w = world(10).await;
    let ours = invoice("ST/5");
    let req = w.register(&ours).await;
    let theirs = String::from_utf8(ours.clone())
        .unwrap()
        .replace("<P_1>2026-02-15</P_1>", "<P_1>2026-02-14</P_1>")
        .into_bytes();
    assert_ne!(theirs, ours);
    send_raw_and_wait(&w, &theirs).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let res = w.poll_until_decided().await;
    assert_eq!(res.outcome, "CONFLICT");
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Conflict);
    assert!(r.last_error.unwrap().message.contains("another invoice holds this number"));
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 0);
}

#[tokio::test]
async fn an_invoice_stuck_in_processing_is_polled_again_not_resent() {
    let w = world(10).await;
    let req = w.register(&invoice("ST/6")).await;
    w.sim.faults().set(vec![Fault::StuckProcessing { rate: 1.0, for_ms: None }], 9);
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let cfg = w.status_cfg();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let m = w
            .status_q
            .receive(1, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap()
            .remove(0);
        let sreq = relay_pipeline::messages::StatusRequest::from_json(&m.body).unwrap();
        let res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &sreq, Utc::now())
            .await
            .unwrap();
        outcomes.push(res.outcome);
        relay_pipeline::queue_action::apply(&res.action, &m, &w.status_q, &w.corrections_q)
            .await
            .unwrap();
    }
    assert!(outcomes.iter().all(|o| *o == "PROCESSING"), "{outcomes:?}");
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Processing);
    assert_eq!(
        w.send_q.stats().await.unwrap().total(),
        0,
        "nothing is resent while KSeF is still working"
    );
}

#[tokio::test]
async fn past_the_poll_limit_it_fails_and_a_native_redrive_goes_back_to_the_dlq() {
    let w = world(10).await;
    let req = w.register(&invoice("ST/7")).await;
    w.sim.faults().set(vec![Fault::StuckProcessing { rate: 1.0, for_ms: None }], 9);
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let cfg = relay_pipeline::status::StatusConfig {
        max_polls: 1,
        ..w.status_cfg()
    };
    let m = w
        .status_q
        .receive(1, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    let first = relay_pipeline::messages::StatusRequest::from_json(&m.body).unwrap();
    let polled = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &first, Utc::now())
        .await
        .unwrap();
    assert_eq!(polled.outcome, "PROCESSING");
    let QueueAction::Replace { body, .. } = &polled.action else {
        panic!("{:?}", polled.action)
    };
    let second = relay_pipeline::messages::StatusRequest::from_json(body).unwrap();
    assert_eq!(second.poll, 1);
    let res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &second, Utc::now())
        .await
        .unwrap();
    assert_eq!((res.outcome, &res.action), ("FAILED", &QueueAction::DeadLetter));
    // The console's native redrive brings it back without dlq-replay's checks: back to the DLQ.
    let again = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &second, Utc::now())
        .await
        .unwrap();
    assert_eq!((again.outcome, &again.action), ("FAILED_BACK_TO_DLQ", &QueueAction::DeadLetter));
}

/// Issue 11: a KSeF number already known was dropped when the UPO download kept failing (200,
/// then poll errors until the poll limit, then FAILED without the number). Now the number
/// reaches the record and the outbox at once, the poll limit does not apply to fetching the
/// UPO, and the UPO is archived once KSeF serves it.
#[tokio::test]
async fn a_known_ksef_number_is_kept_while_the_upo_cannot_be_fetched() {
    let w = world(10).await;
    let req = w.register(&invoice("ST/UPO")).await;
    // KSeF will not serve this invoice's UPO for as long as this test runs.
    w.sim.faults().set(vec![Fault::UpoNotReady { delay_ms: 3_600_000_000 }], 3);
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let cfg = relay_pipeline::status::StatusConfig {
        max_polls: 2,
        ..w.status_cfg()
    };
    let client = w.ksef.client(&World::nip()).await.unwrap();
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    client
        .wait_for_invoice(
            r.ksef.session_reference.as_ref().unwrap().as_str(),
            r.ksef.invoice_reference.as_ref().unwrap().as_str(),
            Duration::from_millis(20),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let m = w
        .status_q
        .receive(1, Duration::from_secs(30), Duration::from_secs(1))
        .await
        .unwrap()
        .remove(0);
    let mut req_status = relay_pipeline::messages::StatusRequest::from_json(&m.body).unwrap();
    let first = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &req_status, Utc::now())
        .await
        .unwrap();
    assert_eq!(first.outcome, "ACCEPTED_UPO_PENDING");
    let r = first.record.clone().unwrap();
    assert_eq!(r.state, DocumentState::Accepted, "numbered: the invoice legally exists");
    let number = r.ksef.ksef_number.clone().expect("the number is recorded at once");
    assert!(r.storage.upo.is_none());
    let outbox: serde_json::Value =
        serde_json::from_slice(&w.archive.get("outbox/9999999999/erp.json").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(outbox["state"], "ACCEPTED");
    assert_eq!(outbox["ksefNumber"], number.as_str(), "the ERP has the number before the UPO");
    let QueueAction::Replace { body, .. } = &first.action else {
        panic!("{:?}", first.action)
    };
    req_status = relay_pipeline::messages::StatusRequest::from_json(body).unwrap();
    // Past the poll limit, still fetching, never FAILED.
    for _ in 0..4 {
        let QueueAction::Replace { body, .. } = w.status_action_after(&req_status, &cfg).await else {
            panic!("the UPO is fetched again later")
        };
        req_status = relay_pipeline::messages::StatusRequest::from_json(&body).unwrap();
    }
    assert!(req_status.poll > cfg.max_polls);
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(
        (r.state, r.ksef.ksef_number.clone()),
        (DocumentState::Accepted, Some(number.clone()))
    );
    // KSeF serves the UPO: archived, the outbox names it.
    w.sim.faults().clear();
    let done = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &req_status, Utc::now())
        .await
        .unwrap();
    assert_eq!((done.outcome, &done.action), ("UPO_ARCHIVED", &QueueAction::Delete));
    let r = done.record.unwrap();
    let upo = r.storage.upo.clone().expect("archived");
    assert!(w.archive.get(&upo).await.unwrap().is_some());
    let outbox: serde_json::Value =
        serde_json::from_slice(&w.archive.get("outbox/9999999999/erp.json").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(outbox["upoKey"], upo.as_str());
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1);
}

/// Issue 11: a 440 whose proof UPO could not be fetched became a CONFLICT saying another invoice
/// holds the number. No answer is no proof: the status stage asks again later.
#[tokio::test]
async fn a_duplicate_whose_proof_cannot_be_read_yet_is_no_conflict() {
    let w = world(10).await;
    let bytes = invoice("ST/440");
    let req = w.register(&bytes).await;
    send_raw_and_wait(&w, &bytes).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    // The original's UPO (read by KSeF number) answers 503 for now.
    w.sim.faults().set(
        vec![Fault::Unavailable {
            rate: 1.0,
            on: Some("/invoices/ksef/".into()),
        }],
        5,
    );
    let cfg = w.status_cfg();
    let mut outcomes = Vec::new();
    let mut unproven = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(m) = w.status_q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap().pop() else {
            continue;
        };
        let sreq = relay_pipeline::messages::StatusRequest::from_json(&m.body).unwrap();
        let res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &sreq, Utc::now())
            .await
            .unwrap();
        outcomes.push(res.outcome);
        relay_pipeline::queue_action::apply(&res.action, &m, &w.status_q, &relay_domain::memory::MemoryQueue::new("dlq"))
            .await
            .unwrap();
        if res.outcome == "DUPLICATE_UNPROVEN" {
            unproven = res.record;
            break;
        }
    }
    let r = unproven.unwrap_or_else(|| panic!("{outcomes:?}"));
    assert!(
        matches!(r.state, DocumentState::Sent | DocumentState::Processing),
        "still being polled, not a CONFLICT: {:?} {outcomes:?}",
        r.state
    );
    assert!(r.last_error.unwrap().message.contains("could not be read"));
    // Once the proof can be read, it is ours: ACCEPTED under the original number.
    w.sim.faults().clear();
    assert_eq!(w.poll_until_decided().await.outcome, "ACCEPTED_DUPLICATE_OURS");
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1);
}

/// Issue 11: status polling honours a Retry-After longer than the queue's 15-minute delay: the
/// next poll time is kept in the record and the message hops until then.
#[tokio::test]
async fn a_retry_after_longer_than_fifteen_minutes_is_honoured_by_status_polling() {
    let w = world(10).await;
    let req = w.register(&invoice("ST/429")).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");
    w.sim.faults().set(
        vec![Fault::TooManyRequests {
            rate: 1.0,
            retry_after_s: 3600,
            on: Some("/invoices/".into()),
        }],
        1,
    );
    let cfg = w.status_cfg();
    let m = w
        .status_q
        .receive(1, Duration::from_secs(30), Duration::from_secs(1))
        .await
        .unwrap()
        .remove(0);
    let sreq = relay_pipeline::messages::StatusRequest::from_json(&m.body).unwrap();
    let now = Utc::now();
    let res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &sreq, now)
        .await
        .unwrap();
    assert_eq!(res.outcome, "POLL_ERROR");
    let r = res.record.unwrap();
    let next = r.next_attempt_at.expect("the next poll time is recorded");
    assert!(next - now >= chrono::Duration::minutes(59), "{next} vs {now}");
    let QueueAction::Replace { body, .. } = res.action else { panic!() };
    let hop = relay_pipeline::messages::StatusRequest::from_json(&body).unwrap();
    // The message comes back after the queue's 15 minutes: too early, it hops again.
    let early = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &cfg, &hop, now + chrono::Duration::minutes(15))
        .await
        .unwrap();
    assert_eq!(early.outcome, "NOT_YET");
    let QueueAction::Requeue { delay } = early.action else { panic!() };
    assert!(delay >= Duration::from_secs(44 * 60), "{delay:?}");
}

/// The runner's end condition (a CI run stopped with a document ACCEPTED but without its UPO and
/// no message left for it): an ACCEPTED document still waiting for its UPO is open work, so
/// `run_until_quiet` does not stop while one has no message, and its sweep re-drives it.
#[tokio::test]
async fn the_runner_does_not_stop_while_an_accepted_document_waits_for_its_upo() {
    let w = world(10).await;
    let req = w.register(&invoice("ST/RUN")).await;
    w.sim.faults().set(vec![Fault::UpoNotReady { delay_ms: 3_600_000_000 }], 3);
    assert_eq!(w.send(&req).await.outcome, "SENT");
    let cfg = w.status_cfg();
    let res = w.poll_until_decided_or(&cfg, "ACCEPTED_UPO_PENDING").await;
    assert_eq!(res.outcome, "ACCEPTED_UPO_PENDING");
    // Its next message is lost.
    let lost = w
        .status_q
        .receive(10, Duration::from_secs(30), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(lost.len(), 1);
    w.status_q.delete(&lost[0].receipt).await.unwrap();
    w.sim.faults().clear();
    let (send_dlq, status_dlq) = (
        relay_domain::memory::MemoryQueue::new("send-dlq"),
        relay_domain::memory::MemoryQueue::new("status-dlq"),
    );
    let stages = relay_pipeline::drive::Stages {
        store: &w.store,
        archive: &w.archive,
        send_queue: &w.send_q,
        send_dlq: &send_dlq,
        status_queue: &w.status_q,
        status_dlq: &status_dlq,
        corrections_queue: &w.corrections_q,
        ksef: &w.ksef,
        send_cfg: &w.cfg,
        status_cfg: &cfg,
        visibility: Duration::from_secs(30),
        clock: &relay_domain::clock::SystemClock,
        sweep: relay_pipeline::sweeper::SweepConfig {
            grace: Duration::ZERO,
            ..relay_pipeline::sweeper::SweepConfig::standard()
        },
        batch_cfg: relay_pipeline::send::BatchConfig::default(),
    };
    let mut outcomes = Vec::new();
    let quiet = stages
        .run_until_quiet(Duration::from_secs(20), Duration::from_millis(20), |s| outcomes.push(s.outcome))
        .await
        .unwrap();
    assert!(quiet, "{outcomes:?}");
    assert_eq!(outcomes.first(), Some(&"REDRIVEN"), "{outcomes:?}");
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Accepted);
    assert!(r.storage.upo.is_some(), "the UPO was fetched after the re-drive: {outcomes:?}");
}
