//! Certificate logins on the deployed template (issue 13's must-shows), on the AWS emulator and
//! the KSeF simulator: the SAM template deployed as a stack to moto, the intake, send, status
//! and report functions built from the environment CloudFormation resolved for them, each
//! seller's credentials a secret in Secrets Manager under the template's prefix.
//!
//! Three sellers and a stray upload:
//! - 9999999999 logs in with an RSA certificate and its key, 5265877635 with an EC P-256 one:
//!   their invoices are ACCEPTED, the simulator saw those certificates log in and no token, and
//!   send and status read the secrets through their own roles;
//! - 1111111111's certificate has expired: KSeF refuses it (21115), the seller is parked
//!   (`SellerParked`, the OperatorProblem alarm's metric) with nothing spent, and the report's
//!   scheduled snapshot emits `CredentialDaysLeft` <= 0 for it (the CredentialExpiry alarms'
//!   metric, below their thresholds) and says EXPIRED on the status page, which shows no piece
//!   of any key or certificate;
//! - an invoice of 5265877635 uploaded into 9999999999's folder is refused, answered in
//!   9999999999's outbox only, never registered or sent.
//!
//! Then 9999999999's secret is rotated to a new certificate (a new secret version; the old
//! certificate revoked in KSeF and the tokens obtained with it ended): the same function
//! instances, not rebuilt, send its next invoice with a login by the new certificate, and the
//! old one never logs in again. Moto does not evaluate alarms, so the test checks the emitted
//! lines against the alarms' definitions in the translated template.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use relay_aws::settings::{IntakeSettings, ReportSettings, SendSettings, StatusSettings};
use relay_aws::SqsQueue;
use relay_domain::ports::DocumentRegistry;
use relay_domain::{ContentHash, DocumentState, ErrorClass, Nip};
use relay_pipeline::seller_block::SellerGate;
use relay_tests::deployed_stack::DeployedStack;
use relay_tests::lambda_events::deliver;
use relay_tests::recording_proxy::{RecordingProxy, Resource};
use relay_tests::seller_certificates::{certificate, invoice, key, secret, Captured, EC_KEY, EC_SELLER, RSA_KEY, RSA_SELLER};
use relay_tests::{emulator, template};
use serde_json::Value;

const EXPIRED_SELLER: &str = "1111111111";
const DAY: Duration = Duration::from_secs(86_400);

/// The alarm's comparison holds for `value`.
fn breaches(alarm: &Value, value: f64) -> bool {
    let threshold = alarm["Threshold"].as_f64().unwrap();
    match alarm["ComparisonOperator"].as_str().unwrap() {
        "LessThanThreshold" => value < threshold,
        "LessThanOrEqualToThreshold" => value <= threshold,
        "GreaterThanThreshold" => value > threshold,
        "GreaterThanOrEqualToThreshold" => value >= threshold,
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_secrets_manager_on_the_deployed_template() {
    let metrics = Captured::default();
    relay_observe::emf::set_sink(Box::new(metrics.clone()));
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("certs");
    let prefix = format!("{name}/ksef/");
    let sellers = format!("{RSA_SELLER},{EC_SELLER},{EXPIRED_SELLER}");
    let params = [
        ("KsefTokenSecretPrefix", prefix.as_str()),
        ("KsefSellerNips", sellers.as_str()),
        ("EnableReport", "true"),
    ];
    let stack = DeployedStack {
        created: template::deploy_to_emulator(&name, &params),
    };
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        ..ksef_sim::SimConfig::default()
    })
    .await;

    // The operator's secrets: RSA, EC, and an expired certificate (it ended yesterday).
    let now = SystemTime::now();
    let rsa = certificate(RSA_SELLER, RSA_KEY, now - DAY, now + 365 * DAY);
    let ec = certificate(EC_SELLER, EC_KEY, now - DAY, now + 200 * DAY);
    let expired = certificate(EXPIRED_SELLER, RSA_KEY, now - 400 * DAY, now - DAY);
    for (nip, value) in [
        (RSA_SELLER, secret(&rsa, RSA_KEY)),
        (EC_SELLER, secret(&ec, EC_KEY)),
        (EXPIRED_SELLER, secret(&expired, RSA_KEY)),
    ] {
        c.secrets
            .create_secret()
            .name(format!("{prefix}{nip}"))
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }

    let proxies: HashMap<&str, RecordingProxy> = ["SendFunction", "StatusFunction"]
        .into_iter()
        .map(|f| (f, RecordingProxy::start(emulator::endpoint())))
        .collect();
    let ksef = sim.api_url();
    let env = |f: &str| {
        let endpoint = proxies.get(f).map_or(emulator::endpoint().to_owned(), |p| p.url.clone());
        let mut env = stack.env(f, &ksef, &endpoint);
        // Read a seller's secret at each use instead of every 15 minutes: the rotation below
        // shows at the next invoice, with no wait.
        env.insert("KSEF_CREDENTIALS_TTL_SECONDS".into(), "0".into());
        env
    };
    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(&env("IntakeFunction")).unwrap()).await;
    let send = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(&env("SendFunction")).unwrap())
        .await
        .unwrap();
    let mut status = relay_fn_status::StatusDeps::from_settings(&StatusSettings::from_env(&env("StatusFunction")).unwrap())
        .await
        .unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    let report = relay_fn_report::ReportDeps::from_settings(&ReportSettings::from_env(&env("ReportFunction")).unwrap()).await;
    let (bucket, table) = (stack.physical("ArchiveBucket"), stack.physical("DocumentsTable"));
    let sqs = |logical: &str| SqsQueue::new(c.sqs.clone(), stack.physical(logical));
    let (intake_q, send_q, status_q) = (sqs("IntakeQueue"), sqs("SendQueue"), sqs("StatusQueue"));
    let observer = relay_aws::DynamoDocumentStore::new(c.dynamodb.clone(), &table);
    let put = |key: String, bytes: Vec<u8>| c.s3.put_object().bucket(&bucket).key(key).body(ByteStream::from(bytes)).send();
    let get = |key: String| c.s3.get_object().bucket(&bucket).key(key).send();
    let state = |nip: &'static str, number: &'static str| {
        let observer = &observer;
        async move { observer.get(&key(nip, number)).await.unwrap().map(|d| d.record) }
    };
    // Lambda's event sources, until `done` holds (bounded by passes, not by time).
    macro_rules! run_until {
        ($done:expr) => {{
            let mut done = false;
            for _ in 0..300 {
                deliver(&intake_q, |e| relay_fn_intake::handle(e, &intake)).await;
                deliver(&send_q, |e| relay_fn_send::handle(e, &send)).await;
                deliver(&status_q, |e| relay_fn_status::handle(e, &status)).await;
                if $done {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done
        }};
    }

    let stray = invoice(EC_SELLER, "FV2026/02/160");
    for (key, bytes) in [
        (format!("inbox/{RSA_SELLER}/FV-150.xml"), invoice(RSA_SELLER, "FV2026/02/150")),
        (format!("inbox/{EC_SELLER}/FV-150.xml"), invoice(EC_SELLER, "FV2026/02/150")),
        (
            format!("inbox/{EXPIRED_SELLER}/FV-150.xml"),
            invoice(EXPIRED_SELLER, "FV2026/02/150"),
        ),
        // Seller 5265877635's invoice, in 9999999999's folder.
        (format!("inbox/{RSA_SELLER}/FV-stray.xml"), stray.clone()),
    ] {
        put(key, bytes).await.unwrap();
    }
    let accepted = |r: Option<relay_domain::DocumentRecord>| r.is_some_and(|r| r.state == DocumentState::Accepted);
    let settled = run_until!(
        accepted(state(RSA_SELLER, "FV2026/02/150").await)
            && accepted(state(EC_SELLER, "FV2026/02/150").await)
            && state(EXPIRED_SELLER, "FV2026/02/150").await.is_some_and(|r| r.last_error.is_some())
            && get(format!("outbox/{RSA_SELLER}/FV-stray.json")).await.is_ok()
    );
    let story = |nip: &'static str| {
        let observer = &observer;
        async move { format!("{:#?}", observer.get(&key(nip, "FV2026/02/150")).await.unwrap()) }
    };
    assert!(
        settled,
        "{}\n{}\n{}",
        story(RSA_SELLER).await,
        story(EC_SELLER).await,
        story(EXPIRED_SELLER).await
    );

    // RSA and EC certificates logged in (and nothing else did), and both invoices are in KSeF.
    let logins: Vec<(String, String, i32)> = sim
        .certificate_logins()
        .into_iter()
        .map(|l| (l.context, l.fingerprint, l.status))
        .collect();
    for (nip, cert) in [(RSA_SELLER, &rsa), (EC_SELLER, &ec)] {
        assert!(
            logins.contains(&(nip.to_owned(), cert.fingerprint_hex(), 200)),
            "{nip} logged in with its certificate: {logins:?}"
        );
        assert_eq!(sim.ledger().count_hash(&ContentHash::of(&invoice(nip, "FV2026/02/150"))), 1);
    }
    assert!(
        !logins.iter().any(|(_, f, _)| *f == expired.fingerprint_hex()),
        "the expired certificate never started a login: {logins:?}"
    );
    let counts = sim.operation_counts();
    assert_eq!(counts.count("POST", "/auth/ksef-token", |_| true), 0, "no token login");
    assert!(
        counts.count("POST", "/auth/xades-signature", |s| s == 202) >= 2,
        "{:?}",
        counts.snapshot()
    );
    // Send and status read the certificates from Secrets Manager, each through its own role.
    for f in ["SendFunction", "StatusFunction"] {
        let read: Vec<String> = proxies[f]
            .calls()
            .into_iter()
            .filter(|c| c.action == "secretsmanager:GetSecretValue")
            .filter_map(|c| match c.resource {
                Resource::Secret { id } => Some(id),
                _ => None,
            })
            .collect();
        for nip in [RSA_SELLER, EC_SELLER] {
            assert!(read.contains(&format!("{prefix}{nip}")), "{f} read {nip}'s secret: {read:?}");
        }
        let grants = template::granted(f);
        assert!(
            grants.contains(&(
                "secretsmanager:GetSecretValue".to_owned(),
                "secret:KsefTokenSecretPrefix*".to_owned()
            )),
            "{f}'s role reads the secrets under the prefix: {grants:?}"
        );
    }

    // The expired certificate: KSeF's refusal parks its seller, nothing spent, nothing sent.
    let parked = state(EXPIRED_SELLER, "FV2026/02/150").await.unwrap();
    assert_eq!(parked.state, DocumentState::Queued);
    assert_eq!(parked.attempts, 0, "no send spent on it");
    let f = parked.last_error.clone().unwrap();
    assert_eq!((f.class.clone(), f.code.as_deref()), (ErrorClass::Operator, Some("21115")), "{f}");
    assert!(matches!(
        send.ksef
            .seller_gate(&Nip::parse(EXPIRED_SELLER).unwrap(), chrono::Utc::now())
            .await,
        SellerGate::Parked(_)
    ));
    for nip in [RSA_SELLER, EC_SELLER] {
        assert_eq!(
            send.ksef.seller_gate(&Nip::parse(nip).unwrap(), chrono::Utc::now()).await,
            SellerGate::Open
        );
    }
    assert_eq!(
        sim.ledger().count_hash(&ContentHash::of(&invoice(EXPIRED_SELLER, "FV2026/02/150"))),
        0
    );

    // The stray upload: answered in 9999999999's folder only, never registered or sent.
    let answer = get(format!("outbox/{RSA_SELLER}/FV-stray.json"))
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        (answer["state"].as_str(), answer["errors"][0]["code"].as_str()),
        (Some("NOT_REGISTERED"), Some("SELLER_FOLDER")),
        "{answer}"
    );
    assert!(
        get(format!("outbox/{EC_SELLER}/FV-stray.json")).await.is_err(),
        "nothing in the other seller's outbox"
    );
    assert!(state(EC_SELLER, "FV2026/02/160").await.is_none(), "not registered");
    assert_eq!(sim.ledger().count_hash(&ContentHash::of(&stray)), 0, "not sent");

    // The report's scheduled snapshot: CredentialDaysLeft <= 0 for the expired seller, under both
    // expiry alarms' thresholds; EXPIRED on the status page. The parking's SellerParked line
    // breaches the OperatorProblem alarm.
    relay_fn_report::handle(serde_json::json!({"kind": "snapshot"}), &report, chrono::Utc::now())
        .await
        .unwrap();
    let lines = metrics.lines();
    let days_left: Vec<f64> = lines
        .iter()
        .filter(|l| l["SellerNip"] == EXPIRED_SELLER)
        .filter_map(|l| l["CredentialDaysLeft"].as_f64())
        .collect();
    assert!(!days_left.is_empty(), "CredentialDaysLeft for the expired seller");
    assert!(days_left.iter().all(|d| *d <= 0.0), "{days_left:?}");
    let translated = template::translated();
    let alarm = |logical: &str| &translated["Resources"][logical]["Properties"];
    for logical in ["CredentialExpiry30DaysAlarm", "CredentialExpiry7DaysAlarm"] {
        let a = alarm(logical);
        assert_eq!(
            (a["Namespace"].as_str(), a["MetricName"].as_str()),
            (Some("KsefRelay"), Some("CredentialDaysLeft"))
        );
        assert!(breaches(a, days_left[days_left.len() - 1]), "{logical}: {a}");
    }
    let a = alarm("OperatorProblemAlarm");
    let parked_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["SellerNip"] == EXPIRED_SELLER && l.get(a["MetricName"].as_str().unwrap()).is_some())
        .collect();
    assert!(!parked_lines.is_empty(), "a {} line for the expired seller", a["MetricName"]);
    assert!(breaches(a, parked_lines[0][a["MetricName"].as_str().unwrap()].as_f64().unwrap()));
    for line in lines.iter().filter(|l| l["SellerNip"] == RSA_SELLER || l["SellerNip"] == EC_SELLER) {
        assert!(line.get("SellerParked").is_none(), "a working seller parked: {line}");
        if let Some(d) = line["CredentialDaysLeft"].as_f64() {
            assert!(d > 30.0, "{line}");
        }
    }
    let page = get("reports/status/index.html".into())
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("EXPIRED"), "the status page says EXPIRED");
    // Secret hygiene: no piece of any key or certificate on the page (subjects and dates only).
    for (what, pem) in [
        ("the RSA key", RSA_KEY.to_owned()),
        ("the EC key", EC_KEY.to_owned()),
        ("a certificate", rsa.certificate_pem()),
        ("a certificate", expired.certificate_pem()),
    ] {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        for chunk in body.as_bytes().chunks(24).filter(|c| c.len() == 24) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(!page.contains(chunk), "{what} shows on the status page");
        }
    }
    assert!(!page.contains("-----BEGIN"), "no PEM on the status page");

    // Rotation: 9999999999's secret gets a new certificate (another key, EC) as a new version;
    // the old certificate is revoked in KSeF and the tokens it obtained end. The same function
    // instances send the next invoices; the other working seller keeps sending too.
    let renewed = certificate(RSA_SELLER, EC_KEY, now - DAY, now + 730 * DAY);
    c.secrets
        .put_secret_value()
        .secret_id(format!("{prefix}{RSA_SELLER}"))
        .secret_string(secret(&renewed, EC_KEY))
        .send()
        .await
        .unwrap();
    sim.revoke_certificate(&rsa.fingerprint_hex());
    sim.revoke_refresh_tokens();
    let logins_before = sim.certificate_logins().len();
    put(format!("inbox/{RSA_SELLER}/FV-151.xml"), invoice(RSA_SELLER, "FV2026/02/151"))
        .await
        .unwrap();
    put(format!("inbox/{EC_SELLER}/FV-151.xml"), invoice(EC_SELLER, "FV2026/02/151"))
        .await
        .unwrap();
    let settled = run_until!(accepted(state(RSA_SELLER, "FV2026/02/151").await) && accepted(state(EC_SELLER, "FV2026/02/151").await));
    assert!(settled, "{:#?}", observer.get(&key(RSA_SELLER, "FV2026/02/151")).await.unwrap());
    let after: Vec<(String, String, i32)> = sim.certificate_logins()[logins_before..]
        .iter()
        .map(|l| (l.context.clone(), l.fingerprint.clone(), l.status))
        .collect();
    assert!(
        after.contains(&(RSA_SELLER.to_owned(), renewed.fingerprint_hex(), 200)),
        "the renewed certificate logged in: {after:?}"
    );
    assert!(
        !after.iter().any(|(_, f, _)| *f == rsa.fingerprint_hex()),
        "the old certificate was not tried after the rotation: {after:?}"
    );
    let record = state(RSA_SELLER, "FV2026/02/151").await.unwrap();
    assert_eq!(record.attempts, 0, "no failed attempt charged for the rotation");
    assert_eq!(sim.ledger().count_hash(&ContentHash::of(&invoice(RSA_SELLER, "FV2026/02/151"))), 1);
    assert_eq!(
        state(EXPIRED_SELLER, "FV2026/02/150").await.unwrap().state,
        DocumentState::Queued,
        "still parked"
    );
}
