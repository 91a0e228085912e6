//! The deployed relay's batch path on the AWS emulator: the SAM template deployed as a stack,
//! its functions built from the environment CloudFormation resolved for them, run as their
//! SQS event sources would (the batch queue's gathering many messages per invocation), against
//! the KSeF simulator over HTTP with real crypto.
//!
//! A burst for one seller larger than its online target: intake (the backlog rule over the
//! stack's table) sends the first invoice online and, the seller's online hour being taken,
//! routes the rest to the batch queue; the
//! send-batch function sends them many per batch session; every invoice ends ACCEPTED exactly
//! once in the simulator's ledger, with its outbox result and its UPO under `upo/`, and every
//! AWS call each function made is allowed by its role.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use relay_aws::settings::{IntakeSettings, SendBatchSettings, SendSettings, StatusSettings};
use relay_aws::SqsQueue;
use relay_domain::ports::{DocumentRegistry, Queue};
use relay_domain::{ContentHash, DocumentKey, DocumentState, InvoiceKind, InvoiceNumber, Nip, SendMode};
use relay_tests::deployed_stack::DeployedStack;
use relay_tests::lambda_events::{deliver, deliver_gathered};
use relay_tests::recording_proxy::RecordingProxy;
use relay_tests::{emulator, template};
use serde_json::Value;

const SAMPLE_1: &[u8] = include_bytes!("../data/ksef/samples/FA_3_Przykład_1.xml");
const NIP: &str = "9999999999";
/// More than KSeF lets one seller send online in a minute (30), so with a 5 s target some must
/// go in batch while the burst's intake takes under a minute.
const BURST: usize = 40;

fn invoice(i: usize) -> (String, DocumentKey) {
    let number = format!("FV2026/02/B{i:03}");
    let xml = String::from_utf8_lossy(SAMPLE_1).replace("FV2026/02/150", &number);
    let key = DocumentKey::new(Nip::parse(NIP).unwrap(), InvoiceKind::Vat, InvoiceNumber::parse(&number).unwrap());
    (xml, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_seller_goes_partly_in_batch_sessions_through_the_batch_queue_each_accepted_once() {
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("batchstack");
    let prefix = format!("{name}/ksef-token/");
    let params = [
        ("KsefTokenSecretPrefix", prefix.as_str()),
        ("KsefSellerNips", NIP),
        ("EnableReport", "false"),
        ("BatchTargetDelaySeconds", "5"),
    ];
    let stack = DeployedStack {
        created: template::deploy_to_emulator(&name, &params),
    };
    let physical = |logical: &str| stack.physical(logical);
    let functions = ["IntakeFunction", "SendFunction", "SendBatchFunction", "StatusFunction"];
    let proxies: HashMap<&str, RecordingProxy> = functions
        .into_iter()
        .map(|f| (f, RecordingProxy::start(emulator::endpoint())))
        .collect();
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let ksef = sim.api_url();
    let env = |f: &str| stack.env(f, &ksef, &proxies[f].url);
    let intake_settings = IntakeSettings::from_env(&env("IntakeFunction")).expect("intake's settings");
    assert_eq!(intake_settings.batch_target_delay, Duration::from_secs(5));
    let send_settings = SendSettings::from_env(&env("SendFunction")).expect("send's settings");
    let batch_settings = SendBatchSettings::from_env(&env("SendBatchFunction")).expect("send-batch's settings");
    assert_eq!(
        (&batch_settings.batch_queue_url, &batch_settings.batch_dlq_url),
        (&physical("BatchQueue"), &physical("BatchDlq"))
    );
    let status_settings = StatusSettings::from_env(&env("StatusFunction")).expect("status's settings");
    c.secrets
        .create_secret()
        .name(format!("{prefix}{NIP}"))
        .secret_string(ksef_sim::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    let intake = relay_fn_intake::IntakeDeps::new(&intake_settings).await;
    let send = relay_fn_send::SendDeps::from_settings(&send_settings).await.unwrap();
    let batch = relay_fn_send_batch::SendBatchDeps::from_settings(&batch_settings).await.unwrap();
    let mut status = relay_fn_status::StatusDeps::from_settings(&status_settings).await.unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    let sqs = |logical: &str| SqsQueue::new(c.sqs.clone(), physical(logical));
    let (intake_q, send_q, batch_q, status_q) = (sqs("IntakeQueue"), sqs("SendQueue"), sqs("BatchQueue"), sqs("StatusQueue"));
    let observer = relay_aws::DynamoDocumentStore::new(c.dynamodb.clone(), physical("DocumentsTable"));
    let bucket = physical("ArchiveBucket");

    // The burst: uploads, then intake as its event source runs it. The first invoice meets a
    // quiet seller and goes online; then the seller's online backlog is filled for the hour, as
    // 179 earlier online choices would have (projected 3 s apart, inside KSeF's 30 a minute with
    // the client's margin, over the next nine minutes), so every later invoice goes in batch
    // however slowly intake runs on a busy machine (no wall-clock race decides the split).
    let started = Instant::now();
    let invoices: Vec<(String, DocumentKey)> = (0..BURST).map(invoice).collect();
    let upload_and_take_in = |range: std::ops::Range<usize>| {
        let (invoices, intake_q, intake, observer, s3, bucket) = (&invoices, &intake_q, &intake, &observer, &c.s3, &bucket);
        async move {
            for i in range.clone() {
                s3.put_object()
                    .bucket(bucket)
                    .key(format!("inbox/{NIP}/FV-B{i:03}.xml"))
                    .body(ByteStream::from(invoices[i].0.as_bytes().to_vec()))
                    .send()
                    .await
                    .unwrap();
            }
            let mut registered = 0;
            for _ in 0..300 {
                deliver(intake_q, |e| relay_fn_intake::handle(e, intake)).await;
                registered = 0;
                for (_, key) in &invoices[range.clone()] {
                    registered += usize::from(observer.get(key).await.unwrap().is_some());
                }
                if registered == range.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            registered
        }
    };
    let mut registered = upload_and_take_in(0..1).await;
    let backlog = &intake.batch.as_ref().expect("intake has the batch queue and the backlog").1;
    let seller = Nip::parse(NIP).unwrap();
    let seeded_from = chrono::Utc::now();
    for k in 1..180 {
        let choice = backlog.choose(&seller, false, seeded_from + chrono::Duration::seconds(3 * k)).await;
        assert_eq!(choice.mode, SendMode::Online, "seeding the backlog, choice {k}: {}", choice.reason);
    }
    registered += upload_and_take_in(1..BURST).await;
    assert_eq!(registered, BURST, "every upload registered");
    let intake_took = started.elapsed();
    let mut modes: BTreeMap<String, usize> = BTreeMap::new();
    for (_, key) in &invoices {
        let r = observer.get(key).await.unwrap().unwrap().record;
        *modes.entry(format!("{:?}", r.send_mode())).or_default() += 1;
    }
    let (online, batched) = (
        modes.get(&format!("{:?}", Some(SendMode::Online))).copied().unwrap_or(0),
        modes.get(&format!("{:?}", Some(SendMode::Batch))).copied().unwrap_or(0),
    );
    assert_eq!(online + batched, BURST, "{modes:?}");
    // The first online (a quiet seller), the rest in batch (the hour's online sends taken).
    assert_eq!(online, 1, "{modes:?}");
    assert_eq!(batched, BURST - 1, "{modes:?}");
    assert!(
        batch_q.stats().await.unwrap().total() >= 1,
        "Batch-mode sends are on the batch queue"
    );

    // send (online), send-batch (gathered) and status, as their event sources run them.
    let mut invocations = 0;
    let mut settled = false;
    for _ in 0..600 {
        let gathered = deliver_gathered(&batch_q, 2000, |e| relay_fn_send_batch::handle(e, &batch)).await;
        invocations += usize::from(gathered > 0);
        let n = gathered
            + deliver(&send_q, |e| relay_fn_send::handle(e, &send)).await
            + deliver(&status_q, |e| relay_fn_status::handle(e, &status)).await;
        if n == 0
            && send_q.stats().await.unwrap().total() + batch_q.stats().await.unwrap().total() + status_q.stats().await.unwrap().total() == 0
            && relay_pipeline::follow_up::count_open(&observer, chrono::Utc::now()).await.unwrap() == 0
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "the pipeline did not settle");
    assert!(invocations >= 1);

    // Every invoice accepted once, the outbox in agreement, the UPO stored; the batch members
    // shared sessions (many per session, not one each).
    let mut members_per_session: BTreeMap<String, usize> = BTreeMap::new();
    let get = |key: String| c.s3.get_object().bucket(&bucket).key(key).send();
    for (i, (xml, key)) in invoices.iter().enumerate() {
        let doc = observer.get(key).await.unwrap().unwrap();
        let r = &doc.record;
        assert_eq!(r.state, DocumentState::Accepted, "{key}: {:#?}", doc.history);
        assert_eq!(sim.ledger().count_hash(&ContentHash::of(xml.as_bytes())), 1, "{key} accepted once");
        let upo = r.storage.upo.clone().expect("a UPO");
        assert!(upo.starts_with(&format!("upo/{NIP}/")), "{upo}");
        let upo = get(upo).await.unwrap().body.collect().await.unwrap().into_bytes();
        assert!(String::from_utf8_lossy(&upo).contains(&ContentHash::of(xml.as_bytes()).to_base64()));
        let outbox = get(format!("outbox/{NIP}/FV-B{i:03}.json"))
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let outbox: Value = serde_json::from_slice(&outbox).unwrap();
        assert_eq!(outbox["state"], "ACCEPTED", "{key}");
        assert_eq!(outbox["ksefNumber"].as_str(), r.ksef.ksef_number.as_ref().map(|n| n.as_str()));
        if r.send_mode() == Some(SendMode::Batch) {
            let session = r.ksef.session_reference.as_ref().expect("a batch session").to_string();
            *members_per_session.entry(session).or_default() += 1;
            let history = serde_json::to_string(&doc.history).unwrap();
            assert!(
                history.contains("\"event\":\"joined_batch\""),
                "{key}: its history names its batch: {history}"
            );
        }
    }
    assert_eq!(members_per_session.values().sum::<usize>(), batched);
    if batched >= 2 {
        assert!(
            members_per_session.values().any(|n| *n >= 2),
            "Batch-mode invoices share batch sessions: {members_per_session:?}"
        );
    }
    assert!(
        members_per_session.len() <= invocations,
        "at most one batch session per seller and invocation: {members_per_session:?} in {invocations} invocations"
    );
    println!(
        "burst of {BURST}: {online} online, {batched} batch; intake {intake_took:?}; {} batch session(s) {members_per_session:?} over {invocations} send-batch invocation(s)",
        members_per_session.len()
    );
    for dlq in ["SendDlq", "BatchDlq", "StatusDlq"] {
        assert_eq!(sqs(dlq).stats().await.unwrap().total(), 0, "{dlq}");
    }

    // Least privilege at run time: nothing any function did needs more than its role.
    for (function, proxy) in &proxies {
        let calls = proxy.calls();
        if calls.is_empty() && *function == "SendFunction" && online == 0 {
            continue;
        }
        stack.assert_allowed(function, &calls, &params);
    }
    let actions = |f: &str| -> std::collections::BTreeSet<String> { proxies[f].calls().into_iter().map(|c| c.action).collect() };
    assert!(
        actions("IntakeFunction").contains("dynamodb:UpdateItem"),
        "intake wrote the send-mode log"
    );
    assert!(
        actions("SendBatchFunction").contains("s3:PutObject"),
        "send-batch recorded its batches"
    );
}

const SAMPLE_24: &[u8] = include_bytes!("../data/ksef/samples/FA_3_Przykład_24.xml");

/// The deployed send-batch function takes a seller's Online documents still waiting for their
/// online turn into the seller's batch that is going anyway (issue 12): KSeF allows this seller
/// only two online sends an hour (`GET /rate-limits`, which the deployed client reads), so the
/// send function sends at most two of six Online invoices and the fleet governor parks the rest
/// for up to an hour (a delayed message, their records' next attempt an hour ahead: no
/// wall-clock race). An invoice with an attachment then goes to the batch queue; the send-batch
/// function's batch takes the parked ones too: each ends ACCEPTED once in KSeF, its history
/// naming the mode change and why, its online message (when it comes) doing nothing; every AWS
/// call within its function's role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_batch_takes_online_documents_still_waiting_for_their_turn() {
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("movestack");
    let prefix = format!("{name}/ksef-token/");
    let params = [
        ("KsefTokenSecretPrefix", prefix.as_str()),
        ("KsefSellerNips", NIP),
        ("EnableReport", "false"),
        ("BatchTargetDelaySeconds", "300"),
    ];
    let stack = DeployedStack {
        created: template::deploy_to_emulator(&name, &params),
    };
    let physical = |logical: &str| stack.physical(logical);
    let functions = ["IntakeFunction", "SendFunction", "SendBatchFunction", "StatusFunction"];
    let proxies: HashMap<&str, RecordingProxy> = functions
        .into_iter()
        .map(|f| (f, RecordingProxy::start(emulator::endpoint())))
        .collect();
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        rate_limits: ksef_sim::RateLimits::production().with(ksef_sim::Group::InvoiceSend, ksef_sim::Limit::new(100, 100, 2)),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let ksef = sim.api_url();
    let env = |f: &str| stack.env(f, &ksef, &proxies[f].url);
    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(&env("IntakeFunction")).unwrap()).await;
    let send = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(&env("SendFunction")).unwrap())
        .await
        .unwrap();
    let batch = relay_fn_send_batch::SendBatchDeps::from_settings(&SendBatchSettings::from_env(&env("SendBatchFunction")).unwrap())
        .await
        .unwrap();
    let mut status = relay_fn_status::StatusDeps::from_settings(&StatusSettings::from_env(&env("StatusFunction")).unwrap())
        .await
        .unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    c.secrets
        .create_secret()
        .name(format!("{prefix}{NIP}"))
        .secret_string(ksef_sim::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    let sqs = |logical: &str| SqsQueue::new(c.sqs.clone(), physical(logical));
    let (intake_q, send_q, batch_q, status_q) = (sqs("IntakeQueue"), sqs("SendQueue"), sqs("BatchQueue"), sqs("StatusQueue"));
    let observer = relay_aws::DynamoDocumentStore::new(c.dynamodb.clone(), physical("DocumentsTable"));
    let bucket = physical("ArchiveBucket");
    let take_in = |items: Vec<(String, String, DocumentKey)>| {
        let (intake_q, intake, observer, s3, bucket) = (&intake_q, &intake, &observer, &c.s3, &bucket);
        async move {
            for (file, xml, _) in &items {
                s3.put_object()
                    .bucket(bucket)
                    .key(format!("inbox/{NIP}/{file}.xml"))
                    .body(ByteStream::from(xml.as_bytes().to_vec()))
                    .send()
                    .await
                    .unwrap();
            }
            for _ in 0..300 {
                deliver(intake_q, |e| relay_fn_intake::handle(e, intake)).await;
                let mut registered = 0;
                for (_, _, key) in &items {
                    registered += usize::from(observer.get(key).await.unwrap().is_some());
                }
                if registered == items.len() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("not every upload was registered");
        }
    };
    let online_sends = || {
        sim.operation_counts()
            .count("POST", "/sessions/online/{referenceNumber}/invoices", |s| s == 202)
    };

    // Six attachment-free invoices in a quiet hour: all Online (well within the 300 s target).
    let online: Vec<(String, String, DocumentKey)> = (0..6)
        .map(|i| {
            let (xml, key) = invoice(100 + i);
            (format!("FV-M{i}"), xml, key)
        })
        .collect();
    take_in(online.clone()).await;
    for (_, _, key) in &online {
        let r = observer.get(key).await.unwrap().unwrap().record;
        assert_eq!(r.send_mode(), Some(SendMode::Online), "{key}");
    }
    // The send function as its event source runs it, until nothing on its queue is due: KSeF's
    // two an hour go, the governor parks the others (delayed messages, no sleep).
    for _ in 0..100 {
        if deliver(&send_q, |e| relay_fn_send::handle(e, &send)).await == 0 && send_q.stats().await.unwrap().visible == 0 {
            break;
        }
    }
    let now = chrono::Utc::now();
    let mut parked = Vec::new();
    for (_, _, key) in &online {
        let r = observer.get(key).await.unwrap().unwrap().record;
        if r.state == DocumentState::Queued {
            assert!(
                r.next_attempt_at.is_some_and(|t| t > now + chrono::Duration::minutes(5)),
                "{key} parked for its online turn: {r:?}"
            );
            parked.push(r);
        }
    }
    let sent_online = online_sends();
    assert!((1..=2).contains(&sent_online), "KSeF's two an hour, at most: {sent_online}");
    assert_eq!(parked.len() as u64, 6 - sent_online, "the rest wait for their turn");

    // An invoice with an attachment: Batch, so a batch of this seller is going.
    let with_attachment = String::from_utf8_lossy(SAMPLE_24).replace("FV2026/02/150", "FV2026/02/M-ATT");
    let att_key = DocumentKey::new(
        Nip::parse(NIP).unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse("FV2026/02/M-ATT").unwrap(),
    );
    take_in(vec![("FV-MATT".into(), with_attachment.clone(), att_key.clone())]).await;
    assert_eq!(
        observer.get(&att_key).await.unwrap().unwrap().record.send_mode(),
        Some(SendMode::Batch)
    );

    // send-batch (gathered), send and status, until every document is finished and nothing is
    // due; the parked online messages are still delayed on the send queue.
    let mut settled = false;
    for _ in 0..600 {
        let n = deliver_gathered(&batch_q, 2000, |e| relay_fn_send_batch::handle(e, &batch)).await
            + deliver(&send_q, |e| relay_fn_send::handle(e, &send)).await
            + deliver(&status_q, |e| relay_fn_status::handle(e, &status)).await;
        let due = |s: relay_domain::ports::QueueStats| s.visible + s.in_flight;
        if n == 0
            && due(send_q.stats().await.unwrap()) + batch_q.stats().await.unwrap().total() + status_q.stats().await.unwrap().total() == 0
            && relay_pipeline::follow_up::count_open(&observer, chrono::Utc::now()).await.unwrap() == 0
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "the pipeline did not settle");

    // The parked online messages, when they come, find their documents moved on: nothing sent.
    for r in &parked {
        let m = relay_domain::ports::ReceivedMessage {
            message_id: format!("parked-{}", r.key.storage_id()),
            receipt: "parked".into(),
            body: relay_pipeline::messages::SendRequest::for_record(r).to_json(),
            attributes: Default::default(),
            receive_count: 1,
            sent_at: now,
        };
        let response = relay_fn_send::handle(relay_tests::lambda_events::sqs_event(&[m]), &send).await;
        assert!(response.batch_item_failures.is_empty());
    }
    assert_eq!(online_sends(), sent_online, "no moved document was sent online");

    let mut batch_sessions = BTreeMap::new();
    let all = online
        .iter()
        .map(|(_, xml, key)| (xml.clone(), key.clone()))
        .chain([(with_attachment, att_key.clone())]);
    for (xml, key) in all {
        let doc = observer.get(&key).await.unwrap().unwrap();
        let r = &doc.record;
        assert_eq!(r.state, DocumentState::Accepted, "{key}: {:#?}", doc.history);
        assert!(r.storage.upo.is_some(), "{key}");
        assert_eq!(sim.ledger().count_hash(&ContentHash::of(xml.as_bytes())), 1, "{key} accepted once");
        let history = serde_json::to_string(&doc.history).unwrap();
        let was_parked = parked.iter().any(|p| p.key == key);
        if was_parked || key == att_key {
            assert_eq!(r.send_mode(), Some(SendMode::Batch), "{key}");
            assert!(history.contains("\"event\":\"joined_batch\""), "{key}: {history}");
            let session = r.ksef.session_reference.as_ref().expect("a batch session").to_string();
            *batch_sessions.entry(session).or_insert(0) += 1;
        } else {
            assert_eq!(r.send_mode(), Some(SendMode::Online), "{key}");
        }
        assert_eq!(
            history.contains("send mode online → batch: its seller's batch session was going anyway"),
            was_parked,
            "{key}: the history says why it moved: {history}"
        );
    }
    assert_eq!(
        batch_sessions.len(),
        1,
        "the parked ones went in the attachment's batch: {batch_sessions:?}"
    );
    assert_eq!(batch_sessions.values().sum::<usize>(), parked.len() + 1);
    assert_eq!(sim.ledger().len(), 7, "nothing else in KSeF");
    for dlq in ["SendDlq", "BatchDlq", "StatusDlq"] {
        assert_eq!(sqs(dlq).stats().await.unwrap().total(), 0, "{dlq}");
    }
    println!(
        "{sent_online} sent online, {} moved into the batch session {batch_sessions:?}",
        parked.len()
    );

    // Least privilege at run time, send-batch's new reads and writes of the online log included.
    for (function, proxy) in &proxies {
        stack.assert_allowed(function, &proxy.calls(), &params);
    }
    // The moved documents' online slots were freed in the seller's log (send-batch wrote it).
    let backlog = &intake.batch.as_ref().expect("intake has the online backlog").1;
    let logged = backlog
        .queued_online(&Nip::parse(NIP).unwrap(), chrono::DateTime::UNIX_EPOCH, chrono::Utc::now())
        .await
        .unwrap();
    for r in &parked {
        assert!(!logged.contains(&r.key.storage_id()), "{} still counted online: {logged:?}", r.key);
    }
}

/// A record stored before the relay kept the send mode (no `send_mode`), whose invoice has an
/// attachment, met by the deployed send function (its message has no mode either, so it is not
/// moved to the batch queue): the send function reads the mode from the invoice and sends it
/// alone in a batch session, recorded under `batches/` first. It ends ACCEPTED once in KSeF
/// with its UPO, and every call the send and status functions made is within their roles (the
/// send role may write `batches/*` for this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_batch_without_a_recorded_mode_is_sent_by_the_send_function_within_its_role() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("lonestack");
    let prefix = format!("{name}/ksef-token/");
    let params = [
        ("KsefTokenSecretPrefix", prefix.as_str()),
        ("KsefSellerNips", NIP),
        ("EnableReport", "false"),
    ];
    let stack = DeployedStack {
        created: template::deploy_to_emulator(&name, &params),
    };
    let physical = |logical: &str| stack.physical(logical);
    let functions = ["IntakeFunction", "SendFunction", "StatusFunction"];
    let proxies: HashMap<&str, RecordingProxy> = functions
        .into_iter()
        .map(|f| (f, RecordingProxy::start(emulator::endpoint())))
        .collect();
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let ksef = sim.api_url();
    let env = |f: &str| stack.env(f, &ksef, &proxies[f].url);
    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(&env("IntakeFunction")).unwrap()).await;
    let send = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(&env("SendFunction")).unwrap())
        .await
        .unwrap();
    let mut status = relay_fn_status::StatusDeps::from_settings(&StatusSettings::from_env(&env("StatusFunction")).unwrap())
        .await
        .unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    c.secrets
        .create_secret()
        .name(format!("{prefix}{NIP}"))
        .secret_string(ksef_sim::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    let sqs = |logical: &str| SqsQueue::new(c.sqs.clone(), physical(logical));
    let (intake_q, send_q, batch_q, status_q) = (sqs("IntakeQueue"), sqs("SendQueue"), sqs("BatchQueue"), sqs("StatusQueue"));
    let table = physical("DocumentsTable");
    let observer = relay_aws::DynamoDocumentStore::new(c.dynamodb.clone(), &table);
    let bucket = physical("ArchiveBucket");

    let xml = String::from_utf8_lossy(SAMPLE_24).replace("FV2026/02/150", "FV2026/02/LONE");
    let key = DocumentKey::new(
        Nip::parse(NIP).unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse("FV2026/02/LONE").unwrap(),
    );
    c.s3.put_object()
        .bucket(&bucket)
        .key(format!("inbox/{NIP}/FV-LONE.xml"))
        .body(ByteStream::from(xml.as_bytes().to_vec()))
        .send()
        .await
        .unwrap();
    for _ in 0..300 {
        deliver(&intake_q, |e| relay_fn_intake::handle(e, &intake)).await;
        if observer.get(&key).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Make it a record of before the mode was kept: no mode on the record, none on its message
    // (the Batch-mode message intake queued is taken off the batch queue).
    let received = batch_q.receive(10, Duration::from_secs(60), Duration::ZERO).await.unwrap();
    assert_eq!(received.len(), 1, "intake queued it for a batch");
    batch_q.delete(&received[0].receipt).await.unwrap();
    let item = c
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("DOC#{}", key.storage_id())))
        .key("sk", AttributeValue::S("DOC".into()))
        .send()
        .await
        .unwrap();
    let mut doc: Value = serde_json::from_str(item.item().unwrap()["doc"].as_s().unwrap()).unwrap();
    assert!(doc.as_object_mut().unwrap().remove("send_mode").is_some(), "{doc}");
    c.dynamodb
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("DOC#{}", key.storage_id())))
        .key("sk", AttributeValue::S("DOC".into()))
        .update_expression("SET #d = :d")
        .expression_attribute_names("#d", "doc")
        .expression_attribute_values(":d", AttributeValue::S(doc.to_string()))
        .send()
        .await
        .unwrap();
    let r = observer.get(&key).await.unwrap().unwrap().record;
    assert_eq!(r.send_mode(), None, "a record of before the mode was kept");
    let req = relay_pipeline::messages::SendRequest::for_record(&r);
    assert_eq!(req.mode, None);
    send_q.send(relay_domain::ports::OutgoingMessage::new(req.to_json())).await.unwrap();

    let mut settled = false;
    for _ in 0..600 {
        let n =
            deliver(&send_q, |e| relay_fn_send::handle(e, &send)).await + deliver(&status_q, |e| relay_fn_status::handle(e, &status)).await;
        if n == 0
            && send_q.stats().await.unwrap().total() + status_q.stats().await.unwrap().total() == 0
            && relay_pipeline::follow_up::count_open(&observer, chrono::Utc::now()).await.unwrap() == 0
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "the pipeline did not settle");
    let doc = observer.get(&key).await.unwrap().unwrap();
    let r = &doc.record;
    assert_eq!(r.state, DocumentState::Accepted, "{:#?}", doc.history);
    assert!(r.storage.upo.is_some());
    assert_eq!(sim.ledger().count_hash(&ContentHash::of(xml.as_bytes())), 1, "accepted once");
    assert_eq!(
        sim.operation_counts().count("POST", "/sessions/batch", |s| s == 201),
        1,
        "in a batch session"
    );
    assert_eq!(batch_q.stats().await.unwrap().total(), 0, "the send function sent it itself");
    let history = serde_json::to_string(&doc.history).unwrap();
    assert!(history.contains("\"event\":\"joined_batch\""), "{history}");
    let send_calls = proxies["SendFunction"].calls();
    assert!(
        send_calls
            .iter()
            .any(|call| call.action == "s3:PutObject" && format!("{:?}", call.resource).contains("batches/")),
        "the send function recorded the batch: {send_calls:?}"
    );
    for (function, proxy) in &proxies {
        stack.assert_allowed(function, &proxy.calls(), &params);
    }
}
