//! The sample events in `events/` parse with the very code the handlers use, so they cannot go
//! stale: the Lambda SQS event type, then the S3 notification reader and the inbox key layout
//! (intake), `SendRequest` (send), `StatusRequest` (status), `ReplayRequest` (dlq-replay); the
//! report and sweeper samples are exactly the `Input` of the template's schedules for them, and
//! the sweeper's parses as its `SweepEvent`.

use aws_lambda_events::sqs::SqsEvent;
use relay_domain::storage_keys::parse_inbox_key;
use relay_pipeline::messages::{SendRequest, StatusRequest};
use relay_pipeline::replay::ReplayRequest;
use relay_pipeline::s3_event::created_objects;
use relay_tests::template;

fn sample(name: &str) -> String {
    std::fs::read_to_string(template::repo_root().join("events").join(name)).unwrap_or_else(|e| panic!("events/{name}: {e}"))
}

fn sqs_bodies(name: &str) -> Vec<String> {
    let event: SqsEvent = serde_json::from_str(&sample(name)).unwrap_or_else(|e| panic!("events/{name} is not a Lambda SQS event: {e}"));
    assert!(!event.records.is_empty(), "events/{name} has no records");
    event
        .records
        .into_iter()
        .map(|r| {
            assert_eq!(r.event_source.as_deref(), Some("aws:sqs"), "events/{name}");
            assert!(
                r.message_id.is_some(),
                "events/{name}: Lambda needs the message id for batchItemFailures"
            );
            r.body.expect("a body")
        })
        .collect()
}

#[test]
fn the_intake_sample_is_an_s3_notification_of_an_inbox_upload() {
    for body in sqs_bodies("intake-s3-in-sqs.json") {
        let objects = created_objects(&body).expect("an S3 notification");
        assert_eq!(objects.len(), 1);
        let (seller, erp) = parse_inbox_key(&objects[0].key).expect("inbox/{sellerNip}/{erpDocId}.xml");
        assert_eq!(
            (seller.to_string(), erp.to_string()),
            ("9999999999".into(), "FV-2026-02-150".into())
        );
        assert!(objects[0].event_name.starts_with("ObjectCreated:"));
        // Real S3 records carry these (the emulator's do not); keep the sample AWS-shaped.
        let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
        for field in ["userIdentity", "requestParameters", "responseElements"] {
            assert!(raw["Records"][0].get(field).is_some(), "the sample lacks {field}");
        }
    }
}

#[test]
fn the_send_sample_is_a_send_request() {
    for body in sqs_bodies("send-sqs.json") {
        let req = SendRequest::from_json(&body).expect("a SendRequest");
        assert_eq!(req.document.seller_nip.to_string(), "9999999999");
    }
}

#[test]
fn the_status_sample_is_a_status_request() {
    for body in sqs_bodies("status-sqs.json") {
        let req = StatusRequest::from_json(&body).expect("a StatusRequest");
        assert_eq!(req.poll, 0);
    }
}

#[test]
fn the_dlq_replay_samples_are_replay_requests() {
    let dry: ReplayRequest = serde_json::from_str(&sample("dlq-replay-dry-run.json")).expect("a ReplayRequest");
    assert!(dry.dry_run && dry.queue == "send");
    let filtered: ReplayRequest = serde_json::from_str(&sample("dlq-replay-filtered.json")).expect("a ReplayRequest");
    assert!(filtered.seller_nip.is_some() && filtered.error_class.is_some() && filtered.min_age_minutes.is_some());
    // The person's decisions, decoded as the handler decodes them.
    use relay_fn_dlq_replay::ConsoleEvent;
    let event = |name: &str| ConsoleEvent::from_json(serde_json::from_str(&sample(name)).unwrap()).expect(name);
    assert!(matches!(event("dlq-replay-resolve.json"), ConsoleEvent::Resolve(r) if r.dry_run && r.document.starts_with("9999999999|")));
    assert!(matches!(event("dlq-replay-send-again.json"), ConsoleEvent::SendAgain(r) if r.dry_run));
    assert!(matches!(event("dlq-replay-dry-run.json"), ConsoleEvent::Replay(_)));
    let typo =
        serde_json::json!({"resolve": {"document": "9999999999|VAT|X", "decision": "ours", "by": "a", "reason": "b", "dryrun": true}});
    assert!(
        ConsoleEvent::from_json(typo).is_err(),
        "a misspelt field is an error, not a real run"
    );
}

/// The constant `Input` of every schedule that targets `function`, sorted.
fn schedule_inputs(function: &str) -> Vec<serde_json::Value> {
    let t = template::translated();
    let mut inputs: Vec<serde_json::Value> = template::resources_of(t, "AWS::Events::Rule")
        .into_iter()
        .flat_map(|(_, r)| r["Properties"]["Targets"].as_array().cloned().unwrap_or_default())
        .filter(|target| template::target(&target["Arn"]) == Some(function))
        .map(|target| serde_json::from_str(target["Input"].as_str().expect("a constant Input")).unwrap())
        .collect();
    inputs.sort_by_key(|v| v.to_string());
    inputs
}

#[test]
fn the_report_samples_are_the_inputs_of_the_templates_schedules() {
    let mut samples: Vec<serde_json::Value> = ["report-snapshot.json", "report-weekly.json"]
        .iter()
        .map(|n| serde_json::from_str(&sample(n)).unwrap())
        .collect();
    samples.sort_by_key(|v| v.to_string());
    assert_eq!(
        schedule_inputs("ReportFunction"),
        samples,
        "events/report-*.json must be what the schedules deliver"
    );
}

#[test]
fn the_sweeper_sample_is_the_input_of_its_schedule_and_a_sweep_event() {
    let sample: serde_json::Value = serde_json::from_str(&sample("sweeper-schedule.json")).unwrap();
    assert_eq!(
        schedule_inputs("SweeperFunction"),
        std::slice::from_ref(&sample),
        "events/sweeper-schedule.json must be what its schedule delivers"
    );
    let event: relay_fn_sweeper::SweepEvent = serde_json::from_value(sample).expect("a SweepEvent");
    assert_eq!(event.trigger.as_deref(), Some("schedule"));
    // Every schedule targets one of the two scheduled functions.
    let all = template::resources_of(template::translated(), "AWS::Events::Rule").len();
    assert_eq!(
        all,
        schedule_inputs("ReportFunction").len() + schedule_inputs("SweeperFunction").len()
    );
}

#[test]
fn every_sample_is_listed_in_the_events_readme() {
    let readme = sample("README.md");
    for entry in std::fs::read_dir(template::repo_root().join("events")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            assert!(readme.contains(&name), "events/README.md does not describe {name}");
        }
    }
}
