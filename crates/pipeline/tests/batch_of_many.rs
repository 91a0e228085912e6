//! Many Batch-mode invoices of one seller in one batch session, against the simulator over HTTP
//! (real crypto): `send_batch` claims them, records the batch, opens one session, uploads the
//! archive in parts and closes it; the harvest reads the session once (status, invoice list) for
//! all its members and finishes each from the list: ACCEPTED with its UPO fetched through the
//! pre-signed link, exactly once in KSeF, with at most 1.05 KSeF calls per invoice (counted by
//! the simulator, logins and UPO downloads included).

mod common;

use std::time::Duration;

use chrono::Utc;
use common::world;
use relay_domain::ports::{Archive, DocumentRegistry, Queue};
use relay_domain::{DocumentState, HistoryEvent};
use relay_pipeline::messages::SendRequest;
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::send::{send_batch, BatchConfig};

fn with_attachment(number: &str) -> Vec<u8> {
    String::from_utf8(include_bytes!("../../../data/ksef/samples/FA_3_Przykład_24.xml").to_vec())
        .unwrap()
        .replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{number}</P_2>"))
        .into_bytes()
}

fn total_calls(sim: &ksef_sim::SimHandle) -> u64 {
    sim.operation_counts().snapshot().iter().map(|c| c.count).sum()
}

/// The batch consumer: every request that is due goes to `send_batch` at once; what comes back
/// (a batch to check, a retry) goes round again, until nothing is left.
async fn deliver(w: &common::World, batch_cfg: &BatchConfig, reqs: Vec<SendRequest>) -> Vec<&'static str> {
    let mut pending = reqs;
    let mut outcomes = Vec::new();
    for _ in 0..200 {
        if pending.is_empty() {
            return outcomes;
        }
        let results = send_batch(&w.send_ports(), &w.ksef, &w.cfg, batch_cfg, &pending, Utc::now()).await;
        assert_eq!(results.len(), pending.len());
        let mut next = Vec::new();
        for (req, res) in pending.iter().zip(results) {
            let res = res.unwrap();
            if res.outcome == "RETRY" {
                let f = res.record.as_ref().and_then(|r| r.last_error.as_ref()).map(|f| f.message.clone());
                panic!("a member failed: {f:?}");
            }
            outcomes.push(res.outcome);
            match res.action {
                QueueAction::Delete => {}
                QueueAction::Replace { body, .. } => next.push(SendRequest::from_json(&body).unwrap()),
                QueueAction::Requeue { .. } | QueueAction::Release => next.push(req.clone()),
                other => panic!("{other:?}"),
            }
        }
        pending = next;
        // Let the simulator finish what it was given: it decides an invoice once
        // accept_delay + processing_delay have passed since it received it, so after this wait
        // the next round finds the batch final however slow the machine is (a shorter, fixed
        // pause made the count of status reads, and so the calls per invoice, depend on load).
        let cfg = w.sim.config();
        tokio::time::sleep(cfg.accept_delay + cfg.processing_delay + Duration::from_millis(1)).await;
    }
    let mut counts = std::collections::BTreeMap::new();
    for o in &outcomes {
        *counts.entry(*o).or_insert(0) += 1;
    }
    panic!("not settled: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_invoices_go_in_one_batch_session_and_are_harvested_with_at_most_1_05_calls_each() {
    let mut w = world(10).await;
    // The simulator validates a batch's invoices inside the close call (KSeF answers 204 and
    // processes afterwards): 500 invoices outlast the tests' usual 3-second timeout.
    let cfg = ksef_client::ClientConfig {
        timeout: Duration::from_secs(120),
        ..common::client_config(&w.sim)
    };
    let creds = ksef_client::Credentials::Token {
        context: common::World::nip(),
        token: ksef_client::KsefToken::new(ksef_sim::DEFAULT_TOKEN),
    };
    w.ksef =
        relay_pipeline::sessions::KsefContexts::new().with(common::World::nip(), ksef_client::KsefClient::new(cfg, Some(creds)).unwrap());
    let n = 500;
    let mut reqs = Vec::new();
    for i in 0..n {
        reqs.push(w.register(&with_attachment(&format!("MANY/{i}"))).await);
    }
    let before = total_calls(&w.sim);
    // Parts of 400 kB: the archive spans several parts.
    let batch_cfg = BatchConfig {
        part_size: 400_000,
        max_members: 10_000,
    };
    let outcomes = deliver(&w, &batch_cfg, reqs.clone()).await;
    assert_eq!(
        outcomes.iter().filter(|o| **o == "BATCH_CLOSED").count(),
        n,
        "all in the first batch: {outcomes:?}"
    );

    // Each member was finished from the session's list: no status check is left to run (one
    // would only find its document done, and write its outbox again).
    let leftovers = w.status_q.receive(10, Duration::from_secs(60), Duration::ZERO).await.unwrap();
    assert!(
        leftovers.is_empty(),
        "status checks queued for decided members: {}",
        leftovers.len()
    );
    let calls = total_calls(&w.sim) - before;

    let mut sessions = std::collections::BTreeSet::new();
    let mut batches = std::collections::BTreeSet::new();
    let mut parts = std::collections::BTreeSet::new();
    for req in &reqs {
        let doc = w.store.get(&req.document).await.unwrap().unwrap();
        let r = &doc.record;
        assert_eq!(r.state, DocumentState::Accepted, "{:?}", doc.history);
        let number = r.ksef.ksef_number.as_ref().unwrap();
        let upo_key = format!("upo/9999999999/{}.xml", number.as_str());
        assert_eq!(r.storage.upo.as_deref(), Some(upo_key.as_str()));
        assert!(w.archive.get(&upo_key).await.unwrap().is_some(), "the UPO is archived");
        assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1, "KSeF has it exactly once");
        sessions.insert(r.ksef.session_reference.clone().unwrap());
        batches.insert(r.ksef.batch.clone().unwrap());
        for h in &doc.history {
            if let HistoryEvent::JoinedBatch { part, .. } = &h.event {
                parts.insert(*part);
            }
        }
    }
    assert_eq!(sessions.len(), 1, "one batch session for all");
    assert_eq!(batches.len(), 1, "one batch for all");
    assert!(parts.len() > 1, "members' history names their parts: {parts:?}");
    let batch = batches.into_iter().next().unwrap();
    let item = w.archive.get(&format!("batches/9999999999/{batch}.json")).await.unwrap().unwrap();
    let item: serde_json::Value = serde_json::from_slice(&item.bytes).unwrap();
    assert_eq!(item["members"].as_array().unwrap().len(), n);
    assert_eq!(item["session"].as_str(), Some(sessions.iter().next().unwrap().as_str()));

    let per_invoice = calls as f64 / n as f64;
    println!(
        "{n} invoices in one batch: {calls} KSeF calls ({per_invoice:.3} per invoice): {:?}",
        w.sim.operation_counts().snapshot()
    );
    assert!(
        per_invoice <= 1.05,
        "{calls} calls for {n} invoices: {:?}",
        w.sim.operation_counts().snapshot()
    );
}

/// The local driver (`drive::Stages`, used by `ksef-relay run` and `load`) gathers the queued
/// Batch-mode messages of a seller into one batch session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_gathers_a_sellers_queued_batch_documents_into_one_session() {
    use relay_domain::memory::MemoryQueue;
    use relay_domain::ports::OutgoingMessage;
    let w = world(10).await;
    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    let status_cfg = w.status_cfg();
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
        status_cfg: &status_cfg,
        visibility: Duration::from_secs(30),
        clock: &relay_domain::clock::SystemClock,
        sweep: relay_pipeline::sweeper::SweepConfig::standard(),
        batch_cfg: BatchConfig::default(),
    };
    let n = 25;
    let mut reqs = Vec::new();
    for i in 0..n {
        let req = w.register(&with_attachment(&format!("DRV/{i}"))).await;
        assert_eq!(req.mode, Some(relay_domain::SendMode::Batch), "the message names its channel");
        w.send_q.send(OutgoingMessage::new(req.to_json())).await.unwrap();
        reqs.push(req);
    }
    let mut steps = std::collections::BTreeMap::new();
    assert!(stages
        .run_until_quiet(Duration::from_secs(60), Duration::from_millis(20), |s| {
            *steps.entry((s.stage, s.outcome)).or_insert(0) += 1;
        })
        .await
        .unwrap());
    println!("{steps:?}");
    let opened = w.sim.operation_counts().count("POST", "/sessions/batch", |s| s == 201);
    assert_eq!(opened, 1, "one batch session for the seller's {n} invoices: {steps:?}");
    for req in &reqs {
        let r = w.store.get(&req.document).await.unwrap().unwrap().record;
        assert_eq!(r.state, DocumentState::Accepted);
        assert!(r.storage.upo.is_some());
        assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1);
    }
}

/// Month-end with several sellers (issue 12): the driver gathers each seller's Batch-mode
/// messages into that seller's own batch session, up to `max_members` each, however the
/// sellers' messages are interleaved on the queue; a seller with more than a session's worth
/// goes in a second session, its other messages handed back for the next pump rather than sent
/// one batch session each. A run of other messages between the Batch-mode ones (here 25
/// unreadable ones, in a load run the Online messages parked by the governor) does not cut the
/// gathering short: each seller's messages still go in one session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_gathers_each_seller_into_its_own_batch_session() {
    use ksef_client::{Credentials, KsefClient, KsefToken};
    use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue};
    use relay_domain::ports::OutgoingMessage;
    use relay_domain::Nip;
    let sellers: Vec<(Nip, String)> = ["9999999999", "5260000011", "5260000028"]
        .iter()
        .map(|n| (Nip::parse(n).unwrap(), format!("gather-token-{n}")))
        .collect();
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        time_scale: common::SCALE,
        auth_delay: Duration::from_millis(10),
        accept_delay: Duration::from_millis(10),
        processing_delay: Duration::from_millis(10),
        tokens: sellers
            .iter()
            .map(|(nip, token)| ksef_sim::SimToken {
                token: token.clone(),
                context: nip.clone(),
            })
            .collect(),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let mut ksef = relay_pipeline::sessions::KsefContexts::new();
    for (nip, token) in &sellers {
        let creds = Credentials::Token {
            context: nip.clone(),
            token: KsefToken::new(token),
        };
        ksef = ksef.with(nip.clone(), KsefClient::new(common::client_config(&sim), Some(creds)).unwrap());
    }
    let base = common::world(10).await;
    let w = common::World {
        sim,
        store: MemoryDocumentStore::new(),
        archive: MemoryArchive::new(),
        send_q: MemoryQueue::new("send"),
        status_q: MemoryQueue::new("status"),
        corrections_q: MemoryQueue::new("corrections"),
        ksef,
        cfg: base.cfg.clone(),
    };
    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    let status_cfg = w.status_cfg();
    let max_members = 8;
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
        status_cfg: &status_cfg,
        // Gathering stops at half of it: far more than this test's gathering takes.
        visibility: Duration::from_secs(600),
        clock: &relay_domain::clock::SystemClock,
        sweep: relay_pipeline::sweeper::SweepConfig::standard(),
        batch_cfg: BatchConfig {
            max_members,
            ..BatchConfig::default()
        },
    };
    // Seller 0 has a session and a half, the others one session each; interleaved on the queue.
    let counts = [12usize, 8, 8];
    let mut reqs: Vec<(usize, SendRequest)> = Vec::new();
    for i in 0..counts[0] {
        for (s, (nip, _)) in sellers.iter().enumerate() {
            if i >= counts[s] {
                continue;
            }
            let bytes = String::from_utf8(with_attachment(&format!("GATHER/{s}/{i}")))
                .unwrap()
                .replacen("<NIP>9999999999</NIP>", &format!("<NIP>{nip}</NIP>"), 1)
                .into_bytes();
            let req = w.register(&bytes).await;
            assert_eq!(req.document.seller_nip, *nip);
            assert_eq!(req.mode, Some(relay_domain::SendMode::Batch));
            reqs.push((s, req));
        }
    }
    // Queued once all are registered (`register` takes the intake's message off the queue),
    // with 25 other messages after the first round: at least two receives of ten hold no
    // Batch-mode message.
    let others = 25;
    for (k, (_, req)) in reqs.iter().enumerate() {
        w.send_q.send(OutgoingMessage::new(req.to_json())).await.unwrap();
        if k + 1 == sellers.len() {
            for j in 0..others {
                w.send_q
                    .send(OutgoingMessage::new(format!("not a send request {j}")))
                    .await
                    .unwrap();
            }
        }
    }
    let mut steps = std::collections::BTreeMap::new();
    assert!(stages
        .run_until_quiet(Duration::from_secs(120), Duration::from_millis(20), |s| {
            *steps.entry((s.stage, s.outcome)).or_insert(0) += 1;
        })
        .await
        .unwrap());
    println!("{steps:?}");
    let opened = w.sim.operation_counts().count("POST", "/sessions/batch", |s| s == 201);
    assert_eq!(opened, 4, "seller 0 in two sessions, the others in one each: {steps:?}");
    assert_eq!(steps.get(&("send", "UNREADABLE_MESSAGE")), Some(&others), "{steps:?}");
    assert_eq!(send_dlq.stats().await.unwrap().total(), others as u64);
    let mut sessions: std::collections::BTreeMap<usize, std::collections::BTreeSet<String>> = Default::default();
    let mut members: std::collections::BTreeMap<String, usize> = Default::default();
    for (s, req) in &reqs {
        let r = w.store.get(&req.document).await.unwrap().unwrap().record;
        assert_eq!(r.state, DocumentState::Accepted, "{}", req.document);
        assert!(r.storage.upo.is_some());
        assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1, "{} once in KSeF", req.document);
        let entry = w
            .sim
            .ledger()
            .entries()
            .into_iter()
            .find(|e| e.invoice_hash == req.content_hash)
            .unwrap();
        sessions.entry(*s).or_default().insert(entry.session_reference.to_string());
        *members.entry(entry.session_reference.to_string()).or_default() += 1;
    }
    assert_eq!(sessions[&0].len(), 2, "seller 0: {sessions:?}");
    assert_eq!((sessions[&1].len(), sessions[&2].len()), (1, 1), "{sessions:?}");
    assert!(members.values().all(|n| *n <= max_members), "{members:?}");
    assert_eq!(w.sim.ledger().len(), reqs.len(), "nothing else in KSeF");
}
