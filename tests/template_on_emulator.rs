//! The SAM template, translated offline and deployed as a CloudFormation stack to the AWS
//! emulator; then the functions run against what the stack created, each built from its
//! settings read from the environment CloudFormation resolved for it (every Ref, GetAtt and Sub
//! replaced by the created resources). So the template and the code cannot drift apart: a
//! missing or misnamed variable, a queue wired to the wrong DLQ, a notification on the wrong
//! prefix or a table the store cannot use fails here.
//!
//! The emulator does not run Lambda code (no container runtime) and skips alarms, TTL,
//! versioning, lifecycle and the bucket/queue policies: `template_translated.rs` asserts those
//! on the translated template. It also ignores the bucket's NotificationConfiguration, so the
//! deploy script applies exactly the template's notification through the S3 API
//! (scripts/template_on_emulator.py). Lambda's SQS event source is played by `relay_tests::lambda_events::deliver`.
//!
//! Each function reaches the emulator through its own recording proxy, and at the end every AWS
//! call it made must be allowed by its role in the template: a permission the code needs but
//! the template forgot fails here, not in production.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;
use relay_aws::settings::{IntakeSettings, ReplaySettings, ReportSettings, SendSettings, StatusSettings, SweeperSettings};
use relay_aws::{provision, SqsQueue};
use relay_domain::ports::{DocumentRegistry, Queue};
use relay_domain::{ContentHash, DocumentKey, DocumentState, InvoiceKind, InvoiceNumber, Nip};
use relay_tests::deployed_stack::DeployedStack;
use relay_tests::lambda_events::deliver;
use relay_tests::recording_proxy::RecordingProxy;
use relay_tests::{emulator, template};
use serde_json::Value;

const SAMPLE_1: &[u8] = include_bytes!("../data/ksef/samples/FA_3_Przykład_1.xml");
const NIP: &str = "9999999999";

fn json_str(s: &str) -> Value {
    Value::String(s.to_owned())
}

async fn queue_attributes(sqs: &aws_sdk_sqs::Client, url: &str) -> HashMap<QueueAttributeName, String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_template_runs_an_upload_through_intake_send_and_status() {
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("stack");
    let prefix = format!("{name}/ksef-token/");
    let params = [
        ("KsefTokenSecretPrefix", prefix.as_str()),
        ("KsefSellerNips", NIP),
        ("EnableReport", "true"),
    ];
    let stack = DeployedStack {
        created: template::deploy_to_emulator(&name, &params),
    };
    let proxies: HashMap<&str, RecordingProxy> = [
        "IntakeFunction",
        "SendFunction",
        "StatusFunction",
        "DlqReplayFunction",
        "ReportFunction",
        "SweeperFunction",
    ]
    .into_iter()
    .map(|f| (f, RecordingProxy::start(emulator::endpoint())))
    .collect();

    // Names: every function's settings load from what the stack gave it, and name the
    // resources the stack created.
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let ksef = sim.api_url();
    let env = |f: &str| stack.env(f, &ksef, &proxies[f].url);
    for f in proxies.keys() {
        if let Some(k) = stack.function(f)["environment"].get("KSEF_ENV") {
            assert_eq!(k, "TEST", "{f}: KSEF_ENV comes from the KsefEnvironment parameter");
        }
    }
    let intake_settings = IntakeSettings::from_env(&env("IntakeFunction")).expect("intake's settings");
    let send_settings = SendSettings::from_env(&env("SendFunction")).expect("send's settings");
    let status_settings = StatusSettings::from_env(&env("StatusFunction")).expect("status's settings");
    let replay_settings = ReplaySettings::from_env(&env("DlqReplayFunction")).expect("dlq-replay's settings");
    let report_settings = ReportSettings::from_env(&env("ReportFunction")).expect("report's settings");
    let sweeper_settings = SweeperSettings::from_env(&env("SweeperFunction")).expect("the sweeper's settings");
    assert_eq!(report_settings.overdue_after_hours, 4);
    let (table, bucket) = (stack.physical("DocumentsTable"), stack.physical("ArchiveBucket"));
    for r in [
        &intake_settings.resources,
        &send_settings.resources,
        &status_settings.resources,
        &replay_settings.resources,
        &report_settings.resources,
        &sweeper_settings.resources,
    ] {
        assert_eq!((&r.table, &r.bucket), (&table, &bucket));
    }
    let url = |logical: &str| stack.physical(logical);
    assert_eq!(
        (&intake_settings.send_queue_url, &intake_settings.corrections_queue_url),
        (&url("SendQueue"), &url("CorrectionsQueue"))
    );
    assert_eq!(
        [
            &send_settings.send_queue_url,
            &send_settings.send_dlq_url,
            &send_settings.status_queue_url
        ],
        [&url("SendQueue"), &url("SendDlq"), &url("StatusQueue")]
    );
    assert_eq!(
        [
            &status_settings.status_queue_url,
            &status_settings.status_dlq_url,
            &status_settings.send_queue_url
        ],
        [&url("StatusQueue"), &url("StatusDlq"), &url("SendQueue")]
    );
    assert_eq!(
        [
            &sweeper_settings.send_queue_url,
            &sweeper_settings.status_queue_url,
            &sweeper_settings.corrections_queue_url
        ],
        [&url("SendQueue"), &url("StatusQueue"), &url("CorrectionsQueue")]
    );
    let routes: Vec<(&str, &str, &str)> = replay_settings
        .queues
        .iter()
        .map(|r| (r.name.as_str(), r.dlq_url.as_str(), r.target_url.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            ("send", url("SendDlq").as_str(), url("SendQueue").as_str()),
            ("batch", url("BatchDlq").as_str(), url("BatchQueue").as_str()),
            ("status", url("StatusDlq").as_str(), url("StatusQueue").as_str())
        ]
    );
    // Batch-mode sends: every function that queues a send request knows the batch queue.
    for batch_queue in [
        &intake_settings.batch_queue_url,
        &send_settings.batch_queue_url,
        &status_settings.batch_queue_url,
        &sweeper_settings.batch_queue_url,
    ] {
        assert_eq!(batch_queue.as_deref(), Some(url("BatchQueue").as_str()));
    }
    assert_eq!(send_settings.ksef.token_secret_prefix, prefix);
    assert_eq!(send_settings.max_attempts, 10);

    // Redrive: each queue to its own DLQ after at least 5 receives; visibility >= 6 x the
    // timeout of the function its event source feeds.
    let arn = |attrs: &HashMap<QueueAttributeName, String>| attrs[&QueueAttributeName::QueueArn].clone();
    for (queue, dlq, consumer) in [
        ("IntakeQueue", "IntakeDlq", Some("IntakeFunction")),
        ("SendQueue", "SendDlq", Some("SendFunction")),
        ("BatchQueue", "BatchDlq", Some("SendBatchFunction")),
        ("StatusQueue", "StatusDlq", Some("StatusFunction")),
        ("CorrectionsQueue", "CorrectionsDlq", None),
    ] {
        let q = queue_attributes(&c.sqs, &url(queue)).await;
        let d = queue_attributes(&c.sqs, &url(dlq)).await;
        let redrive: Value = serde_json::from_str(&q[&QueueAttributeName::RedrivePolicy]).unwrap();
        assert_eq!(redrive["deadLetterTargetArn"].as_str(), Some(arn(&d).as_str()), "{queue} -> {dlq}");
        let max_receive = redrive["maxReceiveCount"]
            .as_u64()
            .or_else(|| redrive["maxReceiveCount"].as_str().and_then(|s| s.parse().ok()))
            .unwrap();
        assert!(max_receive >= 5, "{queue}: maxReceiveCount {max_receive}");
        let retention = |a: &HashMap<QueueAttributeName, String>| a[&QueueAttributeName::MessageRetentionPeriod].parse::<u64>().unwrap();
        assert!(retention(&d) > retention(&q), "{dlq} outlives {queue}'s messages");
        assert_eq!(q[&QueueAttributeName::SqsManagedSseEnabled], "true");
        if let Some(function) = consumer {
            let timeout = stack.function(function)["timeout"].as_u64().unwrap();
            let visibility: u64 = q[&QueueAttributeName::VisibilityTimeout].parse().unwrap();
            assert!(
                visibility >= 6 * timeout,
                "{queue}: visibility {visibility} vs {function} timeout {timeout}"
            );
            let name = stack.function(function)["name"].as_str().unwrap();
            let sources: Vec<&str> = stack.created["event_source_mappings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| {
                    m["function_arn"]
                        .as_str()
                        .is_some_and(|a| a.ends_with(&format!(":function:{name}")))
                })
                .map(|m| m["source_arn"].as_str().unwrap())
                .collect();
            assert_eq!(sources, [arn(&q).as_str()], "{function} is triggered by {queue}");
        }
    }

    // The table: the same schema the code's provisioning creates (and the store expects).
    let ours = format!("{name}-provisioned");
    provision::create_documents_table(&c.dynamodb, &ours).await.unwrap();
    let describe = |t: String| {
        let db = c.dynamodb.clone();
        async move { db.describe_table().table_name(t).send().await.unwrap().table.unwrap() }
    };
    let (deployed, provisioned) = (describe(table.clone()).await, describe(ours).await);
    // What the store relies on, in a form both descriptions can be compared by.
    macro_rules! schema {
        ($t:expr) => {{
            let t = &$t;
            let mut attributes: Vec<String> = t
                .attribute_definitions()
                .iter()
                .map(|d| format!("{}:{}", d.attribute_name(), d.attribute_type().as_str()))
                .collect();
            attributes.sort();
            let indexes: Vec<String> = t
                .global_secondary_indexes()
                .iter()
                .map(|g| {
                    format!(
                        "{:?} {:?} {:?}",
                        g.index_name(),
                        g.key_schema(),
                        g.projection().and_then(|p| p.projection_type())
                    )
                })
                .collect();
            (
                attributes,
                format!("{:?}", t.key_schema()),
                indexes,
                format!("{:?}", t.billing_mode_summary().and_then(|b| b.billing_mode())),
            )
        }};
    }
    let (deployed, provisioned) = (schema!(deployed), schema!(provisioned));
    assert!(!deployed.2.is_empty(), "the by-state index");
    assert_eq!(deployed, provisioned, "the deployed table vs provision::create_documents_table");

    // The operator's first-deploy step: one secret per seller NIP under the template's prefix.
    c.secrets
        .create_secret()
        .name(format!("{prefix}{NIP}"))
        .secret_string(ksef_sim::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    let intake = relay_fn_intake::IntakeDeps::new(&intake_settings).await;
    let send = relay_fn_send::SendDeps::from_settings(&send_settings).await.unwrap();
    let mut status = relay_fn_status::StatusDeps::from_settings(&status_settings).await.unwrap();
    status.cfg.schedule = vec![Duration::ZERO]; // the simulator decides in ~100 ms
    let replay = relay_fn_dlq_replay::ReplayDeps::from_settings(&replay_settings)
        .await
        .expect("dlq-replay builds from its settings");
    let sqs = |logical: &str| SqsQueue::new(c.sqs.clone(), url(logical));
    let (intake_q, send_q, status_q) = (sqs("IntakeQueue"), sqs("SendQueue"), sqs("StatusQueue"));

    // Notifications: an upload under inbox/ reaches the intake queue; a key elsewhere does not.
    let put = |key: &str, bytes: &[u8]| {
        c.s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
    };
    put("outbox/9999999999/not-an-upload.json", b"{}").await.unwrap();
    put("inbox/9999999999/FV-150.xml", SAMPLE_1).await.unwrap();
    let mut created = 0;
    for _ in 0..5 {
        let batch = intake_q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        for m in &batch {
            if let Ok(objects) = relay_pipeline::s3_event::created_objects(&m.body) {
                for o in objects {
                    assert!(o.key.starts_with("inbox/"), "a notification for {} reached the intake queue", o.key);
                    assert_eq!(o.bucket, bucket);
                    created += 1;
                }
            }
            intake_q.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
        }
        if created > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(created, 1, "the inbox upload, and only it, notified the intake queue");

    // intake -> send -> status, as the event sources would run them.
    for _ in 0..5 {
        deliver(&intake_q, |e| relay_fn_intake::handle(e, &intake)).await;
    }
    // The test's own view of the table (not through a function's proxy, whose every call must be
    // one its role allows).
    let observer = relay_aws::DynamoDocumentStore::new(c.dynamodb.clone(), &table);
    let mut settled = false;
    for _ in 0..200 {
        let n =
            deliver(&send_q, |e| relay_fn_send::handle(e, &send)).await + deliver(&status_q, |e| relay_fn_status::handle(e, &status)).await;
        // Empty-looking queues are not the end while a document is open (a delayed follow-up
        // may be on its way; queue counts are approximate): the store says.
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
    let key = DocumentKey::new(
        Nip::parse(NIP).unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse("FV2026/02/150").unwrap(),
    );
    let doc = send.store.get(&key).await.unwrap().expect("registered in the stack's table");
    assert_eq!(doc.record.state, DocumentState::Accepted, "{:?}\n{:#?}", doc.record, doc.history);
    let upo_key = doc.record.storage.upo.clone().expect("a UPO");
    assert!(upo_key.starts_with("upo/9999999999/"), "{upo_key}");
    let get = |key: String| c.s3.get_object().bucket(&bucket).key(key).send();
    let upo = get(upo_key.clone()).await.unwrap().body.collect().await.unwrap().into_bytes();
    assert!(String::from_utf8_lossy(&upo).contains(&ContentHash::of(SAMPLE_1).to_base64()));
    let outbox = get("outbox/9999999999/FV-150.json".into())
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let outbox: Value = serde_json::from_slice(&outbox).unwrap();
    assert_eq!(outbox["state"], "ACCEPTED");
    assert_eq!(sim.ledger().count_hash(&ContentHash::of(SAMPLE_1)), 1, "accepted once");
    let dlq = SqsQueue::new(c.sqs.clone(), url("SendDlq"));
    assert_eq!(dlq.stats().await.unwrap().total(), 0);
    // Ops' dry run over both (empty) DLQs: the console event from events/.
    for queue in ["send", "batch", "status"] {
        let summary = relay_fn_dlq_replay::handle(serde_json::json!({"queue": queue, "limit": 50, "dry_run": true}), &replay)
            .await
            .unwrap()
            .into_replay()
            .unwrap();
        assert_eq!(summary.examined, 0);
    }

    // The report function's snapshot (the 15-minute schedule's event from the template) reads
    // the stack's table and writes the status page into its bucket; the weekly job also
    // publishes its summary to the stack's alarm topic.
    let report = relay_fn_report::ReportDeps::from_settings(&report_settings).await;
    let outcome = relay_fn_report::handle(serde_json::json!({"kind": "snapshot"}), &report, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(outcome.documents, 1);
    let page = get("reports/status/index.html".into())
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(String::from_utf8_lossy(&page).contains("<td class=\"erp\">FV-150</td>"));
    relay_fn_report::handle(serde_json::json!({"kind": "weekly"}), &report, chrono::Utc::now())
        .await
        .unwrap();

    // The sweeper: a second invoice is sent, then its status message vanishes (the queue is
    // purged), leaving it SENT with nothing to move it on; and the first invoice's outbox result
    // is lost. One sweep (the schedule's event) re-drives the one and rewrites the other; the
    // status function then takes the re-driven document to ACCEPTED.
    let mut sweeper = relay_fn_sweeper::SweeperDeps::from_settings(&sweeper_settings).await;
    sweeper.cfg.grace = Duration::ZERO; // overdue at once: the test does not wait out the grace
    let second = String::from_utf8_lossy(SAMPLE_1).replace("FV2026/02/150", "FV2026/02/151");
    let second_key = DocumentKey::new(
        Nip::parse(NIP).unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse("FV2026/02/151").unwrap(),
    );
    put("inbox/9999999999/FV-151.xml", second.as_bytes()).await.unwrap();
    let mut state = None;
    for _ in 0..100 {
        deliver(&intake_q, |e| relay_fn_intake::handle(e, &intake)).await;
        deliver(&send_q, |e| relay_fn_send::handle(e, &send)).await;
        state = send.store.get(&second_key).await.unwrap().map(|d| d.record.state);
        if state == Some(DocumentState::Sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, Some(DocumentState::Sent), "the second invoice was sent");
    c.sqs.purge_queue().queue_url(url("StatusQueue")).send().await.unwrap();
    assert_eq!(status_q.stats().await.unwrap().total(), 0, "its status message is gone");
    c.s3.delete_object()
        .bucket(&bucket)
        .key("outbox/9999999999/FV-150.json")
        .send()
        .await
        .unwrap();
    let schedule: Value = serde_json::from_str(include_str!("../events/sweeper-schedule.json")).unwrap();
    let swept = relay_fn_sweeper::handle(schedule, &sweeper, chrono::Utc::now())
        .await
        .expect("a sweep");
    let redriven: Vec<(&str, DocumentState, &str)> = swept.redriven.iter().map(|s| (s.document.as_str(), s.state, s.stage)).collect();
    assert_eq!(
        redriven,
        [(second_key.to_string().as_str(), DocumentState::Sent, "status")],
        "{swept:?}"
    );
    let rewritten: Vec<(&str, DocumentState)> = swept.outbox_rewritten.iter().map(|s| (s.document.as_str(), s.state)).collect();
    assert_eq!(rewritten, [(key.to_string().as_str(), DocumentState::Accepted)], "{swept:?}");
    assert!(swept.held_back.is_empty(), "{swept:?}");
    let outbox = get("outbox/9999999999/FV-150.json".into())
        .await
        .expect("the outbox result is back")
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let outbox: Value = serde_json::from_slice(&outbox).unwrap();
    assert_eq!(
        (&outbox["state"], &outbox["ksefNumber"]),
        (
            &json_str("ACCEPTED"),
            &json_str(doc.record.ksef.ksef_number.as_ref().unwrap().as_str())
        )
    );
    let mut state = None;
    for _ in 0..100 {
        deliver(&status_q, |e| relay_fn_status::handle(e, &status)).await;
        state = send.store.get(&second_key).await.unwrap().map(|d| d.record.state);
        if state == Some(DocumentState::Accepted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        state,
        Some(DocumentState::Accepted),
        "the re-driven document reached KSeF's decision"
    );
    let history = send.store.get(&second_key).await.unwrap().unwrap().history;
    let history = serde_json::to_string(&history).unwrap();
    assert!(
        history.contains("re-driven: the sweeper found it SENT since"),
        "its history says why: {history}"
    );
    assert_eq!(sim.ledger().count_hash(&ContentHash::of(second.as_bytes())), 1, "sent once");

    // Least privilege, the other way round: nothing any function did needs more than its role.
    for (function, proxy) in &proxies {
        let calls = proxy.calls();
        stack.assert_allowed(function, &calls, &params);
    }
    let actions = |f: &str| -> std::collections::BTreeSet<String> { proxies[f].calls().into_iter().map(|c| c.action).collect() };
    assert!(
        actions("IntakeFunction").contains("s3:GetObject"),
        "intake read the upload through its proxy"
    );
    assert!(actions("SendFunction").contains("secretsmanager:GetSecretValue"));
    assert!(
        actions("StatusFunction").contains("s3:PutObject"),
        "status stored the UPO through its proxy"
    );
    assert!(actions("DlqReplayFunction").contains("sqs:ReceiveMessage"));
    assert_eq!(
        actions("ReportFunction"),
        ["dynamodb:Query", "s3:PutObject", "sns:Publish"].map(String::from).into(),
        "the report function only queries the table, writes its pages and publishes the summary"
    );
    assert_eq!(
        actions("SweeperFunction"),
        [
            "dynamodb:PutItem",
            "dynamodb:Query",
            "s3:GetObject",
            "s3:PutObject",
            "sqs:GetQueueAttributes",
            "sqs:SendMessage"
        ]
        .map(String::from)
        .into(),
        "the sweeper lists by state, re-drives, reads and rewrites the outbox, checks the backlogs, sends follow-ups"
    );
}
