//! The four Lambda handlers end to end on the AWS emulator and the KSeF simulator, over HTTP on
//! both sides: S3 uploads → intake → send → status → ACCEPTED with the UPO in S3; a repeat
//! upload sends nothing; an invalid file is REJECTED and never reaches KSeF; an outage past the
//! budget ends FAILED in the DLQ, and dlq-replay (dry run first) brings it home, once; every
//! bundled sample (one with an attachment, sent in a batch session) ends ACCEPTED with its UPO and
//! outbox result, and a changed file under an accepted number ends in CONFLICT. Each function is
//! built from its typed settings, with the KSeF token read from Secrets Manager.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use relay_aws::settings::{IntakeSettings, ReplaySettings, SendSettings, StatusSettings};
use relay_aws::{provision, SqsQueue};
use relay_domain::ports::{DocumentRegistry, Queue};
use relay_domain::{ContentHash, DocumentKey, DocumentState, InvoiceKind, InvoiceNumber, Nip};
use relay_pipeline::follow_up::count_open;
use relay_tests::emulator;
use relay_tests::lambda_events::deliver;

const SAMPLE_1: &[u8] = include_bytes!("../data/ksef/samples/FA_3_Przykład_1.xml");
const SAMPLE_10: &[u8] = include_bytes!("../data/ksef/samples/FA_3_Przykład_10.xml");

/// The functions' log lines, shown with a failing test's output (libtest captures them per
/// test, from the runtime's threads too), so a failure says what each handler decided.
fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .try_init();
}

/// Runs the intake function until its queue is empty (a notification whose intake failed comes
/// back after its visibility timeout, as in Lambda).
async fn take_in(intake_q: &SqsQueue, intake: &relay_fn_intake::IntakeDeps) {
    for _ in 0..200 {
        let n = deliver(intake_q, |e| relay_fn_intake::handle(e, intake)).await;
        if n == 0 && intake_q.stats().await.unwrap().total() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the intake queue did not drain");
}

/// Runs the send and status functions until both queues are empty and no document is open.
/// Empty-looking queues alone are not the end: a follow-up can be on its way as a delayed message
/// and queue counts are approximate (on SQS, and on moto before scripts/moto_server.py took them
/// at one instant); the store says whether every document has arrived. A document left open with
/// no message anywhere (a lost follow-up) makes this panic with its record, never pass.
async fn pump(send_q: &SqsQueue, status_q: &SqsQueue, send: &relay_fn_send::SendDeps, status: &relay_fn_status::StatusDeps) {
    for _ in 0..200 {
        let n = deliver(send_q, |e| relay_fn_send::handle(e, send)).await + deliver(status_q, |e| relay_fn_status::handle(e, status)).await;
        if n == 0
            && send_q.stats().await.unwrap().total() + status_q.stats().await.unwrap().total() == 0
            && count_open(&send.store, chrono::Utc::now()).await.unwrap() == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = count_open(&send.store, chrono::Utc::now()).await.unwrap();
    panic!("the pipeline did not settle: {open} document(s) still open (QUEUED, SENT, PROCESSING, or ACCEPTED without a UPO)");
}

struct Env {
    vars: HashMap<String, String>,
    queues: HashMap<&'static str, String>,
    bucket: String,
}

async fn environment(sim: &ksef_sim::SimHandle, max_attempts: u32) -> Env {
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("relay");
    provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
    provision::create_bucket(&c.s3, &name, emulator::REGION).await.unwrap();
    let mut queues = HashMap::new();
    for stage in ["intake", "send", "status", "corrections"] {
        let pair = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-{stage}"), 5, Duration::from_secs(60))
            .await
            .unwrap();
        queues.insert(stage, pair.url);
        queues.insert(
            match stage {
                "intake" => "intake-dlq",
                "send" => "send-dlq",
                "status" => "status-dlq",
                _ => "corrections-dlq",
            },
            pair.dlq_url,
        );
    }
    provision::notify_queue_on_create(&c.s3, &c.sqs, &name, &queues["intake"], "inbox/")
        .await
        .unwrap();
    let prefix = format!("{name}/ksef-token/");
    c.secrets
        .create_secret()
        .name(format!("{prefix}9999999999"))
        .secret_string(ksef_sim::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    // The KMS key that seals the KSeF tokens and session the functions share.
    let cache_key = c.kms.create_key().send().await.unwrap().key_metadata.unwrap().arn.unwrap();
    let vars: HashMap<String, String> = [
        ("AWS_REGION", emulator::REGION.to_owned()),
        (relay_aws::settings::ENDPOINT_VAR, emulator::endpoint().to_owned()),
        ("DOCUMENTS_TABLE", name.clone()),
        ("ARCHIVE_BUCKET", name.clone()),
        ("SEND_QUEUE_URL", queues["send"].clone()),
        ("SEND_DLQ_URL", queues["send-dlq"].clone()),
        ("STATUS_QUEUE_URL", queues["status"].clone()),
        ("STATUS_DLQ_URL", queues["status-dlq"].clone()),
        ("CORRECTIONS_QUEUE_URL", queues["corrections"].clone()),
        ("KSEF_ENV", sim.api_url()),
        ("KSEF_TOKEN_SECRET_PREFIX", prefix),
        ("KSEF_SELLER_NIPS", "9999999999".to_owned()),
        ("KSEF_CACHE_KEY_ID", cache_key),
        ("MAX_ATTEMPTS", max_attempts.to_string()),
        (
            "REPLAY_QUEUES",
            format!(
                "send={}>{},status={}>{}",
                queues["send-dlq"], queues["send"], queues["status-dlq"], queues["status"]
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Env {
        vars,
        queues,
        bucket: name,
    }
}

fn sample_key(number: &str) -> DocumentKey {
    DocumentKey::new(
        Nip::parse("9999999999").unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse(number).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_travel_through_all_four_functions_to_accepted_once() {
    capture_logs();
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let env = environment(&sim, 1).await;
    let c = emulator::clients().await;
    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(&env.vars).unwrap()).await;
    let send = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(&env.vars).unwrap())
        .await
        .unwrap();
    let status_settings = StatusSettings::from_env(&env.vars).unwrap();
    let mut status = relay_fn_status::StatusDeps::from_settings(&status_settings).await.unwrap();
    status.cfg.schedule = vec![Duration::ZERO]; // poll again at once: the simulator decides in ~100 ms
    let replay = relay_fn_dlq_replay::ReplayDeps::from_settings(&ReplaySettings::from_env(&env.vars).unwrap())
        .await
        .unwrap();
    let sqs = |name: &str| SqsQueue::new(c.sqs.clone(), &env.queues[name]);
    let (intake_q, send_q, status_q, send_dlq) = (sqs("intake"), sqs("send"), sqs("status"), sqs("send-dlq"));

    let put = |key: String, bytes: Vec<u8>| c.s3.put_object().bucket(&env.bucket).key(key).body(ByteStream::from(bytes)).send();
    put("inbox/9999999999/FV-150.xml".into(), SAMPLE_1.to_vec()).await.unwrap();
    put("inbox/9999999999/FV-150-again.xml".into(), SAMPLE_1.to_vec()).await.unwrap();
    let invalid = String::from_utf8(SAMPLE_1.to_vec())
        .unwrap()
        .replace("<P_2>FV2026/02/150</P_2>", "<P_2>BAD/1</P_2>")
        .replacen("<P_12>23</P_12>", "<P_12>24</P_12>", 1);
    put("inbox/9999999999/BAD-1.xml".into(), invalid.into_bytes()).await.unwrap();
    take_in(&intake_q, &intake).await;
    pump(&send_q, &status_q, &send, &status).await;

    let doc = send.store.get(&sample_key("FV2026/02/150")).await.unwrap().unwrap();
    assert_eq!(doc.record.state, DocumentState::Accepted, "{:?}\n{:#?}", doc.record, doc.history);
    let upo_key = doc.record.storage.upo.clone().unwrap();
    let upo =
        c.s3.get_object()
            .bucket(&env.bucket)
            .key(&upo_key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
    assert!(
        String::from_utf8_lossy(&upo).contains(&ContentHash::of(SAMPLE_1).to_base64()),
        "the UPO in S3 is this invoice's"
    );
    let outbox =
        c.s3.get_object()
            .bucket(&env.bucket)
            .key(format!("outbox/9999999999/{}.json", doc.record.erp_document_id))
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
    let outbox: serde_json::Value = serde_json::from_slice(&outbox).unwrap();
    assert_eq!(
        (outbox["state"].as_str(), outbox["upoKey"].as_str()),
        (Some("ACCEPTED"), Some(upo_key.as_str()))
    );
    assert_eq!(
        sim.ledger().count_hash(&ContentHash::of(SAMPLE_1)),
        1,
        "the repeat upload sent nothing"
    );
    let bad = send.store.get(&sample_key("BAD/1")).await.unwrap().unwrap();
    assert_eq!(bad.record.state, DocumentState::Rejected);
    assert_eq!(sim.ledger().len(), 1, "the invalid file never reached KSeF");
    // The send went through the seller's fleet rate governor, kept in the documents table.
    let governed = relay_domain::ports::SharedCache::get(
        &relay_aws::DynamoSharedCache::new(c.dynamodb.clone(), &env.bucket),
        "ratelog/9999999999@nat/InvoiceSend",
        chrono::Utc::now(),
    )
    .await
    .unwrap()
    .expect("the governor's log of online sends");
    assert!(governed.value.contains("\"t\":["), "{}", governed.value);

    // An outage longer than the budget (1 attempt here): FAILED, the message in the send DLQ.
    sim.faults().set(
        vec![ksef_sim::Fault::Unavailable {
            rate: 1.0,
            on: Some("/invoices".into()),
        }],
        3,
    );
    put("inbox/9999999999/FZ-150.xml".into(), SAMPLE_10.to_vec()).await.unwrap();
    take_in(&intake_q, &intake).await;
    pump(&send_q, &status_q, &send, &status).await;
    let zal = DocumentKey::new(
        Nip::parse("9999999999").unwrap(),
        InvoiceKind::Zal,
        InvoiceNumber::parse("FZ2026/02/150").unwrap(),
    );
    assert_eq!(send.store.get(&zal).await.unwrap().unwrap().record.state, DocumentState::Failed);
    assert_eq!(send_dlq.stats().await.unwrap().visible, 1);

    // Recovery; ops replays from the console: a dry run first, then for real.
    sim.faults().clear();
    let dry = relay_fn_dlq_replay::handle(serde_json::json!({"queue": "send", "dry_run": true}), &replay)
        .await
        .unwrap()
        .into_replay()
        .unwrap();
    assert_eq!((dry.examined, dry.requeued), (1, 1), "{dry:?}");
    assert_eq!(
        send.store.get(&zal).await.unwrap().unwrap().record.state,
        DocumentState::Failed,
        "a dry run changes nothing"
    );
    let done = relay_fn_dlq_replay::handle(serde_json::json!({"queue": "send", "limit": 10}), &replay)
        .await
        .unwrap()
        .into_replay()
        .unwrap();
    assert_eq!(done.requeued, 1, "{done:?}");
    assert_eq!(done.items, dry.items, "the dry run said exactly what the real run did");
    pump(&send_q, &status_q, &send, &status).await;
    assert_eq!(send.store.get(&zal).await.unwrap().unwrap().record.state, DocumentState::Accepted);
    assert_eq!(sim.ledger().count_hash(&ContentHash::of(SAMPLE_10)), 1, "accepted exactly once");
    assert!(
        relay_fn_dlq_replay::handle(serde_json::json!({"queue": "sned"}), &replay)
            .await
            .is_err(),
        "a typo is an error, not a no-op"
    );
}

async fn object(c: &relay_aws::AwsClients, bucket: &str, key: &str) -> Vec<u8> {
    c.s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bundled_sample_reaches_accepted_through_the_four_functions() {
    capture_logs();
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let env = environment(&sim, 10).await;
    let c = emulator::clients().await;
    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(&env.vars).unwrap()).await;
    let mut send = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(&env.vars).unwrap())
        .await
        .unwrap();
    send.cfg.first_poll_delay = Duration::ZERO;
    let mut status = relay_fn_status::StatusDeps::from_settings(&StatusSettings::from_env(&env.vars).unwrap())
        .await
        .unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    let sqs = |name: &str| SqsQueue::new(c.sqs.clone(), &env.queues[name]);
    let (intake_q, send_q, status_q) = (sqs("intake"), sqs("send"), sqs("status"));

    let samples = ksef_relay::bundled_samples::run_set();
    for (name, bytes) in &samples {
        let key = format!("inbox/9999999999/{name}");
        c.s3.put_object()
            .bucket(&env.bucket)
            .key(key)
            .body(ByteStream::from(bytes.clone()))
            .send()
            .await
            .unwrap();
    }
    take_in(&intake_q, &intake).await;
    pump(&send_q, &status_q, &send, &status).await;

    for (name, bytes) in &samples {
        let key = relay_fa3::read_identity(bytes).unwrap().key;
        let doc = send
            .store
            .get(&key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name} not registered"));
        let r = &doc.record;
        assert_eq!(r.state, DocumentState::Accepted, "{name}: {:?}", r.last_error);
        let upo = object(&c, &env.bucket, r.storage.upo.as_deref().unwrap()).await;
        assert!(
            String::from_utf8_lossy(&upo).contains(&ContentHash::of(bytes).to_base64()),
            "{name}: the UPO in S3 is this invoice's"
        );
        let outbox: serde_json::Value =
            serde_json::from_slice(&object(&c, &env.bucket, &format!("outbox/9999999999/{}.json", r.erp_document_id)).await).unwrap();
        assert_eq!(outbox["state"], "ACCEPTED", "{name}");
        let session = r.ksef.session_reference.as_ref().unwrap();
        let with_attachment = relay_fa3::read_identity(bytes).unwrap().has_attachment;
        assert_eq!(session.kind() == "SB", with_attachment, "{name} went in {session}");
        assert_eq!(sim.ledger().count_hash(&ContentHash::of(bytes)), 1, "{name} accepted exactly once");
    }
    assert_eq!(sim.ledger().len(), samples.len());

    // Other content under an accepted number: CONFLICT, a person is told, KSeF hears nothing.
    let changed = String::from_utf8(samples[0].1.clone())
        .unwrap()
        .replacen("</P_2>", "</P_2><!-- changed -->", 1);
    c.s3.put_object()
        .bucket(&env.bucket)
        .key("inbox/9999999999/changed.xml")
        .body(ByteStream::from(changed.into_bytes()))
        .send()
        .await
        .unwrap();
    take_in(&intake_q, &intake).await;
    pump(&send_q, &status_q, &send, &status).await;
    let first = relay_fa3::read_identity(&samples[0].1).unwrap().key;
    let doc = send.store.get(&first).await.unwrap().unwrap();
    assert_eq!(doc.record.state, DocumentState::Accepted, "the accepted original stays as it was");
    let outbox: serde_json::Value = serde_json::from_slice(&object(&c, &env.bucket, "outbox/9999999999/changed.json").await).unwrap();
    assert_eq!(outbox["state"], "CONFLICT", "{outbox}");
    assert!(sqs("corrections").stats().await.unwrap().total() >= 1, "a person is told");
    assert_eq!(sim.ledger().len(), samples.len(), "nothing more reached KSeF");
}

/// A real CONFLICT on the emulator (KSeF holds other content under the number: sent by hand),
/// resolved by a person through dlq-replay's console event: a dry run changes nothing; `ours`
/// fetches the original's UPO from KSeF into S3, records its number and KSeF's acquisition date,
/// and the ERP's outbox says so; the same event again does no harm. A REJECTED document whose
/// rejection was not about its content is sent again by `send_again`, a content one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_resolves_a_conflict_and_sends_a_rejection_again_through_dlq_replay() {
    capture_logs();
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(20),
        processing_delay: Duration::from_millis(20),
        auth_delay: Duration::from_millis(20),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let env = environment(&sim, 10).await;
    let c = emulator::clients().await;
    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(&env.vars).unwrap()).await;
    let mut send = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(&env.vars).unwrap())
        .await
        .unwrap();
    send.cfg.first_poll_delay = Duration::ZERO;
    let mut status = relay_fn_status::StatusDeps::from_settings(&StatusSettings::from_env(&env.vars).unwrap())
        .await
        .unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    let replay = relay_fn_dlq_replay::ReplayDeps::from_settings(&ReplaySettings::from_env(&env.vars).unwrap())
        .await
        .unwrap();
    let sqs = |name: &str| SqsQueue::new(c.sqs.clone(), &env.queues[name]);
    let (intake_q, send_q, status_q) = (sqs("intake"), sqs("send"), sqs("status"));

    let ours = String::from_utf8(SAMPLE_1.to_vec())
        .unwrap()
        .replace("<P_2>FV2026/02/150</P_2>", "<P_2>RES/1</P_2>");
    let theirs = ours.replace("<P_1>2026-02-15</P_1>", "<P_1>2026-02-14</P_1>");
    assert_ne!(ours, theirs);
    // Theirs reaches KSeF first, by hand.
    let client = send.ksef.client(&Nip::parse("9999999999").unwrap()).await.unwrap();
    let session = client.open_online_session().await.unwrap();
    let sent = client
        .send_invoice(&session, theirs.as_bytes(), &ksef_client::SendOptions::default())
        .await
        .unwrap();
    let original = client
        .wait_for_invoice(
            &session.reference,
            &sent.reference,
            Duration::from_millis(20),
            Duration::from_secs(30),
        )
        .await
        .unwrap()
        .0
        .ksef_number
        .expect("numbered");
    c.s3.put_object()
        .bucket(&env.bucket)
        .key("inbox/9999999999/RES-1.xml")
        .body(ByteStream::from(ours.clone().into_bytes()))
        .send()
        .await
        .unwrap();
    take_in(&intake_q, &intake).await;
    pump(&send_q, &status_q, &send, &status).await;
    let key = sample_key("RES/1");
    let before = send.store.get(&key).await.unwrap().unwrap().record;
    assert_eq!(before.state, DocumentState::Conflict, "{before:?}");

    let resolve = |dry_run: bool| serde_json::json!({"resolve": {"document": key.storage_id(), "decision": "ours", "by": "jan.kowalski", "reason": "ticket 42", "dry_run": dry_run}});
    let dry = relay_fn_dlq_replay::handle(resolve(true), &replay)
        .await
        .unwrap()
        .into_decision()
        .unwrap();
    assert_eq!(dry.state, DocumentState::Conflict, "{dry:?}");
    assert_eq!(
        send.store.get(&key).await.unwrap().unwrap().record,
        before,
        "a dry run changes nothing"
    );
    let done = relay_fn_dlq_replay::handle(resolve(false), &replay)
        .await
        .unwrap()
        .into_decision()
        .unwrap();
    assert_eq!(done.state, DocumentState::Accepted, "{done:?}");
    let doc = send.store.get(&key).await.unwrap().unwrap();
    let r = &doc.record;
    assert_eq!(r.ksef.ksef_number.as_ref().map(|n| n.as_str()), Some(original.as_str()));
    let upo = object(&c, &env.bucket, r.storage.upo.as_deref().expect("the original's UPO archived")).await;
    let numbered_at = relay_pipeline::upo_read::documents(&upo)[0].numbered_at;
    assert_eq!(r.ksef.acquisition_date, numbered_at, "KSeF's acquisition date");
    assert!(
        doc.history.iter().any(|h| matches!(&h.event, relay_domain::HistoryEvent::StateChanged { reason, .. } if reason == "resolved by jan.kowalski (ours): ticket 42")),
        "{:#?}",
        doc.history
    );
    let outbox: serde_json::Value = serde_json::from_slice(&object(&c, &env.bucket, "outbox/9999999999/RES-1.json").await).unwrap();
    assert_eq!(
        (outbox["state"].as_str(), outbox["ksefNumber"].as_str(), outbox["upoKey"].as_str()),
        (Some("ACCEPTED"), Some(original.as_str()), r.storage.upo.as_deref())
    );
    let again = relay_fn_dlq_replay::handle(resolve(false), &replay)
        .await
        .unwrap()
        .into_decision()
        .unwrap();
    assert_eq!(again.outcome, relay_pipeline::resolve::DecisionOutcome::AlreadyDone);
    assert_eq!(
        send.store.get(&key).await.unwrap().unwrap().record.version,
        r.version,
        "the second run wrote nothing"
    );
    assert_eq!(
        sim.ledger().count_hash(&ContentHash::of(ours.as_bytes())),
        0,
        "our bytes were never numbered"
    );

    // Rejected before the Operator class existed, by a 403 (not the content): sent again.
    let refused = String::from_utf8(SAMPLE_1.to_vec())
        .unwrap()
        .replace("<P_2>FV2026/02/150</P_2>", "<P_2>RES/2</P_2>");
    c.s3.put_object()
        .bucket(&env.bucket)
        .key("inbox/9999999999/RES-2.xml")
        .body(ByteStream::from(refused.clone().into_bytes()))
        .send()
        .await
        .unwrap();
    take_in(&intake_q, &intake).await;
    let key2 = sample_key("RES/2");
    let queued = send.store.get(&key2).await.unwrap().unwrap().record;
    let f = relay_domain::Failure::new(
        relay_domain::ErrorClass::Permanent,
        relay_domain::ErrorSource::Ksef {
            operation: "send_invoice".into(),
        },
        "ip-not-allowed",
    )
    .with_code("403");
    use relay_domain::ports::DocumentUpdates;
    send.store
        .transition(&queued, relay_domain::Change::Rejected { failures: vec![f] }, chrono::Utc::now())
        .await
        .unwrap();
    // Its send message finds it REJECTED and does nothing.
    pump(&send_q, &status_q, &send, &status).await;
    assert_eq!(sim.ledger().count_hash(&ContentHash::of(refused.as_bytes())), 0);
    let again = serde_json::json!({"send_again": {"document": key2.storage_id(), "by": "ops", "reason": "allow-list fixed"}});
    let done = relay_fn_dlq_replay::handle(again, &replay).await.unwrap().into_decision().unwrap();
    assert_eq!(done.state, DocumentState::Queued, "{done:?}");
    pump(&send_q, &status_q, &send, &status).await;
    assert_eq!(send.store.get(&key2).await.unwrap().unwrap().record.state, DocumentState::Accepted);
    assert_eq!(
        sim.ledger().count_hash(&ContentHash::of(refused.as_bytes())),
        1,
        "sent again, accepted once"
    );
    // A content rejection (our validation) is refused with the reason.
    let invalid = String::from_utf8(SAMPLE_1.to_vec())
        .unwrap()
        .replace("<P_2>FV2026/02/150</P_2>", "<P_2>RES/3</P_2>")
        .replacen("<P_12>23</P_12>", "<P_12>24</P_12>", 1);
    c.s3.put_object()
        .bucket(&env.bucket)
        .key("inbox/9999999999/RES-3.xml")
        .body(ByteStream::from(invalid.into_bytes()))
        .send()
        .await
        .unwrap();
    take_in(&intake_q, &intake).await;
    let bad = serde_json::json!({"send_again": {"document": sample_key("RES/3").storage_id(), "by": "ops", "reason": "try"}});
    let err = relay_fn_dlq_replay::handle(bad, &replay).await.unwrap_err().to_string();
    assert!(err.contains("for its content"), "{err}");
    assert_eq!(
        send.store.get(&sample_key("RES/3")).await.unwrap().unwrap().record.state,
        DocumentState::Rejected
    );
}
