//! What the emulator cannot show, asserted on the template translated to plain CloudFormation:
//! alarms and the dashboard (moto skips them), TTL, versioning, lifecycle rules, bucket and
//! queue policies (moto skips or ignores them), point-in-time recovery, deletion protection,
//! encryption, and the queue/function timing rules.

use relay_tests::template::{resources_of, target, translated};
use serde_json::{json, Value};

fn resource(logical: &str) -> &'static Value {
    let r = &translated()["Resources"][logical];
    assert!(r.is_object(), "the template has no {logical}");
    r
}

fn props(logical: &str) -> &'static Value {
    &resource(logical)["Properties"]
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

const QUEUES: [(&str, &str); 5] = [
    ("IntakeQueue", "IntakeDlq"),
    ("SendQueue", "SendDlq"),
    ("BatchQueue", "BatchDlq"),
    ("StatusQueue", "StatusDlq"),
    ("CorrectionsQueue", "CorrectionsDlq"),
];

#[test]
fn every_queue_has_a_dlq_with_redrive_and_longer_retention_and_encryption() {
    for (queue, dlq) in QUEUES {
        let q = props(queue);
        let d = props(dlq);
        assert_eq!(
            target(&q["RedrivePolicy"]["deadLetterTargetArn"]),
            Some(dlq),
            "{queue} redrives to {dlq}"
        );
        assert!(num(&q["RedrivePolicy"]["maxReceiveCount"]) >= 5, "{queue}: maxReceiveCount >= 5");
        assert!(
            num(&d["MessageRetentionPeriod"]) > num(&q["MessageRetentionPeriod"]),
            "{dlq} keeps messages longer than {queue}"
        );
        for p in [q, d] {
            assert_eq!(p["SqsManagedSseEnabled"], json!(true), "{queue}/{dlq}: server-side encryption");
        }
    }
}

#[test]
fn visibility_timeouts_are_at_least_six_times_the_consuming_functions_timeout() {
    let mut consumed = Vec::new();
    for (name, esm) in resources_of(translated(), "AWS::Lambda::EventSourceMapping") {
        let p = &esm["Properties"];
        let queue = target(&p["EventSourceArn"]).expect("a queue");
        let function = target(&p["FunctionName"]).expect("a function");
        let timeout = num(&props(function)["Timeout"]);
        let visibility = num(&props(queue)["VisibilityTimeout"]);
        assert!(
            visibility >= 6 * timeout,
            "{queue}: visibility {visibility} < 6 x {function} timeout {timeout}"
        );
        assert_eq!(p["FunctionResponseTypes"], json!(["ReportBatchItemFailures"]), "{name}");
        consumed.push(queue.to_owned());
    }
    consumed.sort();
    assert_eq!(consumed, ["BatchQueue", "IntakeQueue", "SendQueue", "StatusQueue"]);
}

#[test]
fn send_concurrency_is_capped() {
    let (_, esm) = resources_of(translated(), "AWS::Lambda::EventSourceMapping")
        .into_iter()
        .find(|(_, r)| target(&r["Properties"]["FunctionName"]) == Some("SendFunction"))
        .expect("the send event source");
    assert_eq!(
        esm["Properties"]["ScalingConfig"]["MaximumConcurrency"],
        json!({"Ref": "SendMaxConcurrency"})
    );
    let param = &translated()["Parameters"]["SendMaxConcurrency"];
    assert_eq!(
        (num(&param["Default"]), num(&param["MinValue"])),
        (2, 2),
        "2 is the least SQS allows"
    );
}

/// The batch queue's event source gathers many messages per invocation within Lambda's limits
/// (standard SQS: BatchSize up to 10,000, a batching window of 1 to 300 s when BatchSize > 10,
/// the 6 MB invoke payload), capped like the send function's; the function has the batch
/// builder's memory (docs/performance.md) and a lease that outlives its timeout.
#[test]
fn the_batch_queue_gathers_many_per_invocation_within_lambdas_limits() {
    let (_, esm) = resources_of(translated(), "AWS::Lambda::EventSourceMapping")
        .into_iter()
        .find(|(_, r)| target(&r["Properties"]["FunctionName"]) == Some("SendBatchFunction"))
        .expect("the batch event source");
    let p = &esm["Properties"];
    assert_eq!(target(&p["EventSourceArn"]), Some("BatchQueue"));
    let (size, window) = (num(&p["BatchSize"]), num(&p["MaximumBatchingWindowInSeconds"]));
    assert!(size > 10 && size <= 10_000, "BatchSize {size}");
    assert!((1..=300).contains(&window), "MaximumBatchingWindowInSeconds {window}");
    // A send request's SQS record in the event (body, attributes, ids, ARN) is about 1.2 kB; with
    // 2 kB each the batch must still fit the 6 MB invoke payload.
    assert!(size * 2048 <= 6 * 1024 * 1024, "{size} records may exceed the 6 MB payload");
    assert_eq!(p["ScalingConfig"]["MaximumConcurrency"], json!({"Ref": "SendMaxConcurrency"}));
    let f = props("SendBatchFunction");
    assert!(num(&f["MemorySize"]) >= 1024, "the builder holds up to ~3 parts of 100 MB");
    let lease: u64 = f["Environment"]["Variables"]["LEASE_SECONDS"].as_str().unwrap().parse().unwrap();
    assert!(lease > num(&f["Timeout"]), "a claim must outlive the invocation");
    let visibility = num(&props("BatchQueue")["VisibilityTimeout"]);
    assert!(visibility >= 6 * num(&f["Timeout"]) + window, "visibility {visibility}");
    assert_eq!(
        target(&props("BatchQueue")["RedrivePolicy"]["deadLetterTargetArn"]),
        Some("BatchDlq")
    );
}

#[test]
fn functions_run_on_al2023_with_the_architecture_parameter_defaulting_to_arm64() {
    let params = &translated()["Parameters"]["Architecture"];
    assert_eq!(params["Default"], "arm64");
    assert_eq!(params["AllowedValues"], json!(["arm64", "x86_64"]));
    let functions = resources_of(translated(), "AWS::Lambda::Function");
    assert!(functions.len() >= 4);
    for (name, f) in functions {
        let p = &f["Properties"];
        assert_eq!(p["Runtime"], "provided.al2023", "{name}");
        assert_eq!(p["Architectures"], json!([{"Ref": "Architecture"}]), "{name}");
        assert!(p["Role"]["Fn::GetAtt"].is_array(), "{name} has its own role");
    }
}

#[test]
fn the_table_has_ttl_pitr_on_demand_and_deletion_protection_in_prod() {
    let t = props("DocumentsTable");
    assert_eq!(t["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        t["TimeToLiveSpecification"],
        json!({"AttributeName": relay_aws::dynamodb_store::TTL_ATTRIBUTE, "Enabled": true})
    );
    assert_eq!(t["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], json!(true));
    assert_eq!(t["DeletionProtectionEnabled"], json!({"Fn::If": ["IsProd", true, false]}));
    assert_eq!(
        translated()["Conditions"]["IsProd"],
        json!({"Fn::Equals": [{"Ref": "Stage"}, "prod"]})
    );
    assert_eq!(resource("DocumentsTable")["DeletionPolicy"], "Retain");
}

#[test]
fn the_bucket_is_private_encrypted_versioned_and_tls_only() {
    let b = props("ArchiveBucket");
    assert_eq!(b["VersioningConfiguration"]["Status"], "Enabled");
    for flag in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
        assert_eq!(b["PublicAccessBlockConfiguration"][flag], json!(true), "{flag}");
    }
    assert!(b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"].is_string());
    assert_eq!(resource("ArchiveBucket")["DeletionPolicy"], "Retain");
    let policy = &props("ArchiveBucketPolicy")["PolicyDocument"]["Statement"];
    let deny = policy
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Effect"] == "Deny" && s["Condition"]["Bool"]["aws:SecureTransport"] == "false")
        .expect("a statement denying non-TLS access");
    assert_eq!(deny["Principal"], "*");
    assert_eq!(deny["Resource"].as_array().map(Vec::len), Some(2), "the bucket and its objects");
}

#[test]
fn lifecycle_rules_never_expire_current_objects_nor_anything_in_archive_or_upo() {
    let rules = props("ArchiveBucket")["LifecycleConfiguration"]["Rules"]
        .as_array()
        .expect("lifecycle rules");
    for rule in rules {
        let id = rule["Id"].as_str().unwrap_or("?");
        assert!(
            rule.get("ExpirationInDays").is_none() && rule.get("ExpirationDate").is_none(),
            "{id} expires current objects"
        );
        assert!(rule.get("ExpiredObjectDeleteMarker").is_none(), "{id}");
        let prefix = rule["Prefix"].as_str().or_else(|| rule["Filter"]["Prefix"].as_str()).unwrap_or("");
        let protected = prefix.is_empty() || "archive/".starts_with(prefix) || "upo/".starts_with(prefix);
        if protected {
            for deleting in ["NoncurrentVersionExpiration", "NoncurrentVersionExpirationInDays"] {
                assert!(rule.get(deleting).is_none(), "{id} would delete versions under archive/ or upo/");
            }
        }
    }
    for kept in ["archive/", "upo/"] {
        let rule = rules
            .iter()
            .find(|r| r["Prefix"] == kept)
            .unwrap_or_else(|| panic!("a rule for {kept}"));
        assert!(
            rule["Transitions"].as_array().is_some_and(|t| !t.is_empty()),
            "{kept} moves to cheaper storage"
        );
    }
}

#[test]
fn inbox_uploads_notify_the_intake_queue_which_lets_only_this_bucket_send() {
    let qc = &props("ArchiveBucket")["NotificationConfiguration"]["QueueConfigurations"];
    assert_eq!(qc.as_array().map(Vec::len), Some(1));
    assert_eq!(qc[0]["Event"], "s3:ObjectCreated:*");
    assert_eq!(target(&qc[0]["Queue"]), Some("IntakeQueue"));
    assert_eq!(
        qc[0]["Filter"]["S3Key"]["Rules"],
        json!([{"Name": "prefix", "Value": relay_domain::storage_keys::INBOX_PREFIX}])
    );
    let policy = props("IntakeQueuePolicy");
    assert_eq!(policy["Queues"], json!([{"Ref": "IntakeQueue"}]));
    let st = &policy["PolicyDocument"]["Statement"][0];
    assert_eq!(
        (st["Effect"].as_str(), st["Action"].as_str()),
        (Some("Allow"), Some("sqs:SendMessage"))
    );
    assert_eq!(st["Principal"], json!({"Service": "s3.amazonaws.com"}));
    let source_arn = st["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
        .as_str()
        .expect("aws:SourceArn");
    let bucket_name = props("ArchiveBucket")["BucketName"]["Fn::Sub"]
        .as_str()
        .expect("a fixed bucket name");
    assert_eq!(
        source_arn,
        format!("arn:${{AWS::Partition}}:s3:::{bucket_name}"),
        "the condition names this bucket"
    );
    assert_eq!(
        st["Condition"]["StringEquals"]["aws:SourceAccount"],
        json!({"Ref": "AWS::AccountId"})
    );
    let depends = &resource("ArchiveBucket")["DependsOn"];
    assert!(depends == "IntakeQueuePolicy" || depends.as_array().is_some_and(|d| d.contains(&json!("IntakeQueuePolicy"))));
}

fn alarms() -> Vec<(&'static str, &'static Value)> {
    resources_of(translated(), "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(k, r)| (k, &r["Properties"]))
        .collect()
}

fn alarm_on(namespace: &str, metric: &str, dimension_target: Option<&str>) -> Option<&'static Value> {
    alarms().into_iter().map(|(_, p)| p).find(|p| {
        p["Namespace"] == namespace
            && p["MetricName"] == metric
            && dimension_target.is_none_or(|t| {
                p["Dimensions"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| target(&d["Value"]) == Some(t)))
            })
    })
}

#[test]
fn alarms_cover_queue_age_dead_letters_function_errors_and_throttles_and_overdue_documents() {
    for (queue, dlq) in QUEUES {
        assert!(
            alarm_on("AWS/SQS", "ApproximateAgeOfOldestMessage", Some(queue)).is_some(),
            "age alarm on {queue}"
        );
        let d = alarm_on("AWS/SQS", "ApproximateNumberOfMessagesVisible", Some(dlq)).unwrap_or_else(|| panic!("alarm on {dlq}"));
        assert_eq!(
            (d["ComparisonOperator"].as_str(), num(&d["Threshold"])),
            (Some("GreaterThanThreshold"), 0),
            "any message in {dlq}"
        );
    }
    for (function, _) in resources_of(translated(), "AWS::Lambda::Function") {
        for metric in ["Errors", "Throttles"] {
            assert!(
                alarm_on("AWS/Lambda", metric, Some(function)).is_some(),
                "{metric} alarm on {function}"
            );
        }
    }
    let overdue = alarm_on("KsefRelay", "DocumentsOverdue", None).expect("the overdue documents alarm");
    assert_eq!((overdue["Statistic"].as_str(), num(&overdue["Threshold"])), (Some("Maximum"), 0));
    // Each document's legal deadline: ahead of it (due within 12 h) and past it.
    for metric in ["OfflineDocumentsNearingDeadline", "DocumentsPastLegalDeadline"] {
        let a = alarm_on("KsefRelay", metric, None).unwrap_or_else(|| panic!("an alarm on {metric}"));
        assert_eq!(
            (a["Statistic"].as_str(), num(&a["Threshold"]), a["ComparisonOperator"].as_str()),
            (Some("Maximum"), 0, Some("GreaterThanThreshold")),
            "{metric}"
        );
    }
    // KSeF's availability in the deployment's environment (the poll's dimension is the
    // parameter's value, PROD/TEST/DEMO): down for three polls in a row.
    let down = alarm_on("KsefRelay", "KsefAvailability", None).expect("an alarm on KsefAvailability");
    assert_eq!(
        down["Dimensions"],
        json!([{"Name": "Environment", "Value": {"Ref": "KsefEnvironment"}}])
    );
    assert_eq!(
        (
            down["Statistic"].as_str(),
            num(&down["Period"]),
            num(&down["EvaluationPeriods"]),
            num(&down["DatapointsToAlarm"]),
            num(&down["Threshold"]),
            down["ComparisonOperator"].as_str(),
        ),
        (Some("Minimum"), 300, 3, 3, 0, Some("GreaterThanThreshold"))
    );
    let operator = alarm_on("KsefRelay", "SellerParked", None).expect("the operator problem alarm");
    assert_eq!((operator["Statistic"].as_str(), num(&operator["Threshold"])), (Some("Sum"), 0));
    // The sweeper's re-drives, not per stage: any for three 5-minute periods in a row.
    let redriven = alarm_on("KsefRelay", "DocumentsRedriven", None).expect("the re-driven documents alarm");
    assert!(redriven.get("Dimensions").is_none(), "on the total, not one stage");
    assert_eq!(
        (
            redriven["Statistic"].as_str(),
            num(&redriven["Period"]),
            num(&redriven["EvaluationPeriods"]),
            num(&redriven["DatapointsToAlarm"]),
            num(&redriven["Threshold"]),
            redriven["ComparisonOperator"].as_str(),
            redriven["TreatMissingData"].as_str(),
        ),
        (Some("Sum"), 300, 3, 3, 0, Some("GreaterThanThreshold"), Some("notBreaching"))
    );
    // A seller's login ends (certificate notAfter, or the end of token logins): 30 and 7 days
    // ahead, on the minimum over sellers; a quiet hour keeps the state.
    let mut thresholds: Vec<u64> = alarms()
        .into_iter()
        .filter(|(_, p)| p["Namespace"] == "KsefRelay" && p["MetricName"] == "CredentialDaysLeft")
        .map(|(_, p)| {
            assert!(p.get("Dimensions").is_none(), "over all sellers");
            assert_eq!(
                (
                    p["Statistic"].as_str(),
                    p["ComparisonOperator"].as_str(),
                    p["TreatMissingData"].as_str()
                ),
                (Some("Minimum"), Some("LessThanThreshold"), Some("ignore"))
            );
            num(&p["Threshold"])
        })
        .collect();
    thresholds.sort();
    assert_eq!(thresholds, vec![7, 30], "credential expiry alarms at 30 and 7 days");
    for (name, p) in alarms() {
        assert_eq!(p["AlarmActions"], json!([{"Ref": "AlarmTopic"}]), "{name} notifies the alarm topic");
    }
}

#[test]
fn the_dashboard_shows_queues_states_and_ksef_calls() {
    let body = props("Dashboard")["DashboardBody"]["Fn::Sub"][0]
        .as_str()
        .expect("a dashboard body");
    for needle in [
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "DocumentsInState",
        "KsefCallLatency",
        "KsefCallErrors",
        "DocumentsOverdue",
        "DocumentsRedriven",
    ] {
        assert!(body.contains(needle), "the dashboard lacks {needle}");
    }
}

#[test]
fn the_sweeper_runs_every_five_minutes_one_at_a_time_and_finishes_before_the_next() {
    let p = props("SweeperFunction");
    assert_eq!(num(&p["ReservedConcurrentExecutions"]), 1, "a sweep never races another");
    assert!(num(&p["Timeout"]) < 300, "a sweep ends before the next one is due");
    let rules: Vec<&Value> = resources_of(translated(), "AWS::Events::Rule")
        .into_iter()
        .map(|(_, r)| &r["Properties"])
        .filter(|r| {
            r["Targets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| target(&t["Arn"]) == Some("SweeperFunction")))
        })
        .collect();
    assert_eq!(rules.len(), 1, "one schedule");
    assert_eq!(rules[0]["ScheduleExpression"], "rate(5 minutes)");
    assert!(
        rules[0].get("State").is_none_or(|s| s == "ENABLED"),
        "the schedule is enabled (EventBridge's default)"
    );
    assert!(
        resource("SweeperFunction").get("Condition").is_none(),
        "the sweeper is part of delivery: always deployed"
    );
}

#[test]
fn the_ksef_environment_is_a_parameter_the_send_and_status_functions_read() {
    assert_eq!(
        translated()["Parameters"]["KsefEnvironment"]["AllowedValues"],
        json!(["TEST", "DEMO", "PROD"])
    );
    for f in ["SendFunction", "StatusFunction", "DlqReplayFunction"] {
        assert_eq!(
            props(f)["Environment"]["Variables"]["KSEF_ENV"],
            json!({"Ref": "KsefEnvironment"}),
            "{f}"
        );
    }
}

#[test]
fn samconfig_sets_only_template_parameters_with_allowed_values() {
    let text = std::fs::read_to_string(relay_tests::template::repo_root().join("samconfig.toml")).unwrap();
    assert!(text.contains("template_file = \"infra/template.yaml\""));
    let params = &translated()["Parameters"];
    let mut envs = 0;
    for line in text.lines().filter(|l| l.starts_with("parameter_overrides")) {
        envs += 1;
        let value = line.split_once('=').unwrap().1.trim().trim_matches('"');
        for pair in value.split_whitespace() {
            let (key, v) = pair.split_once('=').unwrap_or_else(|| panic!("samconfig: {pair}"));
            let p = &params[key];
            assert!(p.is_object(), "samconfig sets {key}, which the template does not declare");
            if let Some(allowed) = p["AllowedValues"].as_array() {
                assert!(
                    allowed
                        .iter()
                        .any(|a| a.as_str() == Some(v) || a.as_u64().map(|n| n.to_string()).as_deref() == Some(v)),
                    "samconfig: {key}={v} is not one of {allowed:?}"
                );
            }
        }
        for required in ["Stage", "KsefEnvironment", "KsefSellerNips", "KsefTokenSecretPrefix"] {
            assert!(value.contains(&format!("{required}=")), "samconfig: {line} does not set {required}");
        }
    }
    assert_eq!(envs, 2, "dev and prod");
    assert!(text.contains("KsefEnvironment=PROD") && text.contains("Stage=prod"));
}

#[test]
fn every_function_is_built_by_cargo_lambda_from_a_workspace_binary() {
    let root = relay_tests::template::repo_root();
    let manifests: Vec<String> = std::fs::read_dir(root.join("functions"))
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("Cargo.toml")).ok())
        .collect();
    let mut bins = Vec::new();
    for (name, f) in resources_of(translated(), "AWS::Lambda::Function") {
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}");
        let bin = f["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no Binary"));
        let declared = manifests
            .iter()
            .any(|m| m.contains("[[bin]]") && m.contains(&format!("name = \"{bin}\"")));
        assert!(declared, "{name}: no [[bin]] named {bin} in functions/*/Cargo.toml");
        bins.push(bin.to_owned());
    }
    bins.sort();
    assert_eq!(bins, ["dlq-replay", "intake", "report", "send", "send-batch", "status", "sweeper"]);
}

/// The seal-failure alarm watches the very metric the pipeline emits when a KSeF secret cannot
/// be sealed for the shared cache, and fires on one.
#[test]
fn an_unsealable_ksef_secret_alarms() {
    let e = relay_domain::ports::SealError::Refused("disabled".into());
    let line = relay_pipeline::sessions::seal_failed_line("ksef/tokens/9999999999", &e, chrono::Utc::now())
        .to_line()
        .unwrap();
    let line: Value = serde_json::from_str(&line).unwrap();
    let metric = &line["_aws"]["CloudWatchMetrics"][0];
    let (namespace, name) = (
        metric["Namespace"].as_str().unwrap(),
        metric["Metrics"][0]["Name"].as_str().unwrap(),
    );
    let alarm = alarm_on(namespace, name, None).unwrap_or_else(|| panic!("no alarm on {namespace}/{name}"));
    assert_eq!(metric["Dimensions"], json!([[]]), "no dimensions, as the alarm has none");
    assert!(alarm.get("Dimensions").is_none());
    assert_eq!(
        (
            alarm["Statistic"].as_str(),
            alarm["ComparisonOperator"].as_str(),
            num(&alarm["Threshold"])
        ),
        (Some("Sum"), Some("GreaterThanThreshold"), 0)
    );
    assert_eq!(line[name], 1.0);
    assert_eq!(alarm["AlarmActions"], json!([{"Ref": "AlarmTopic"}]));
}
