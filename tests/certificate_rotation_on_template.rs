//! Certificate rotation on the deployed template with the credentials' default time to live
//! (issue 13's must-shows; `certificates_on_template.rs` shows the rest with a time to live of
//! 0), on the AWS emulator and the KSeF simulator: the SAM template deployed as a stack to moto,
//! the intake, send and status functions built from the environment CloudFormation resolved for
//! them, each seller's credentials a secret in Secrets Manager under the template's prefix.
//!
//! - 9999999999 logs in with an RSA certificate, 5265877635 with an EC P-256 one; the send
//!   function logs in with both and shares the tokens.
//! - Mid-run, well within the 15 minutes after which the functions read a secret again anyway,
//!   9999999999's secret is rotated to a new certificate (a new secret version). A send instance
//!   started then does not take the old certificate's tokens from the shared cache (they still
//!   work): it logs in with the new certificate.
//! - KSeF revokes the old certificate and every token ends. A status instance, alone, reads the
//!   secrets through its own role and logs in with the RSA and the EC certificate itself to
//!   decide the invoices.
//! - The first send instance, not rebuilt and within its time to live, meets KSeF's refusal of
//!   the old certificate, reads the secret again and logs in with the new one: both sellers'
//!   next invoices are ACCEPTED, nothing is charged and no seller is parked.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use relay_aws::settings::{IntakeSettings, SendSettings, StatusSettings};
use relay_aws::SqsQueue;
use relay_domain::ports::DocumentRegistry;
use relay_domain::{ContentHash, DocumentState, Nip};
use relay_pipeline::seller_block::SellerGate;
use relay_tests::deployed_stack::DeployedStack;
use relay_tests::lambda_events::deliver;
use relay_tests::recording_proxy::{RecordingProxy, Resource};
use relay_tests::seller_certificates::{certificate, invoice, key, secret, Captured, EC_KEY, EC_SELLER, RSA_KEY, RSA_SELLER};
use relay_tests::{emulator, template};

const DAY: Duration = Duration::from_secs(86_400);

/// The certificate logins the simulator saw since `from`: (context, fingerprint, auth status).
fn logins_since(sim: &ksef_sim::SimHandle, from: usize) -> Vec<(String, String, i32)> {
    sim.certificate_logins()[from..]
        .iter()
        .map(|l| (l.context.clone(), l.fingerprint.clone(), l.status))
        .collect()
}

/// The secrets a function read through its recording proxy since `from` calls.
fn secrets_read(proxy: &RecordingProxy, from: usize) -> Vec<String> {
    proxy.calls()[from..]
        .iter()
        .filter(|c| c.action == "secretsmanager:GetSecretValue")
        .filter_map(|c| match &c.resource {
            Resource::Secret { id } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_logs_in_with_certificates_and_a_rotation_takes_over_within_the_time_to_live() {
    let metrics = Captured::default();
    relay_observe::emf::set_sink(Box::new(metrics.clone()));
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("rotate");
    let prefix = format!("{name}/ksef/");
    let sellers = format!("{RSA_SELLER},{EC_SELLER}");
    let params = [("KsefTokenSecretPrefix", prefix.as_str()), ("KsefSellerNips", sellers.as_str())];
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

    let now = SystemTime::now();
    let rsa = certificate(RSA_SELLER, RSA_KEY, now - DAY, now + 365 * DAY);
    let ec = certificate(EC_SELLER, EC_KEY, now - DAY, now + 200 * DAY);
    for (nip, value) in [(RSA_SELLER, secret(&rsa, RSA_KEY)), (EC_SELLER, secret(&ec, EC_KEY))] {
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
    // The environment as the template gives it: no time to live of our own.
    let env = |f: &str| {
        let endpoint = proxies.get(f).map_or(emulator::endpoint().to_owned(), |p| p.url.clone());
        stack.env(f, &ksef, &endpoint)
    };
    let send_settings = SendSettings::from_env(&env("SendFunction")).unwrap();
    let status_settings = StatusSettings::from_env(&env("StatusFunction")).unwrap();
    for ttl in [send_settings.ksef.credentials_ttl, status_settings.ksef.credentials_ttl] {
        assert_eq!(ttl, Duration::from_secs(900), "the deployed default time to live");
    }
    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(&env("IntakeFunction")).unwrap()).await;
    let send = relay_fn_send::SendDeps::from_settings(&send_settings).await.unwrap();
    let (bucket, table) = (stack.physical("ArchiveBucket"), stack.physical("DocumentsTable"));
    let sqs = |logical: &str| SqsQueue::new(c.sqs.clone(), stack.physical(logical));
    let (intake_q, send_q, status_q) = (sqs("IntakeQueue"), sqs("SendQueue"), sqs("StatusQueue"));
    let observer = relay_aws::DynamoDocumentStore::new(c.dynamodb.clone(), &table);
    let put = |key: String, bytes: Vec<u8>| c.s3.put_object().bucket(&bucket).key(key).body(ByteStream::from(bytes)).send();
    let state = |nip: &'static str, number: &'static str| {
        let observer = &observer;
        async move { observer.get(&key(nip, number)).await.unwrap().map(|d| d.record) }
    };
    let story = |nip: &'static str, number: &'static str| {
        let observer = &observer;
        async move { format!("{:#?}", observer.get(&key(nip, number)).await.unwrap()) }
    };
    let is = |r: Option<relay_domain::DocumentRecord>, s: DocumentState| r.is_some_and(|r| r.state == s);
    // Lambda's event sources until `done` holds (bounded by passes, not by time): intake, the
    // given send instance (unless `status_only`) and status instance (if any).
    macro_rules! run_until {
        ($send:expr, $status:expr, $done:expr, $status_only:expr) => {{
            let send_deps: &relay_fn_send::SendDeps = $send;
            let status_deps: Option<&relay_fn_status::StatusDeps> = $status;
            let mut done = false;
            for _ in 0..300 {
                deliver(&intake_q, |e| relay_fn_intake::handle(e, &intake)).await;
                if !$status_only {
                    deliver(&send_q, |e| relay_fn_send::handle(e, send_deps)).await;
                }
                if let Some(st) = status_deps {
                    deliver(&status_q, |e| relay_fn_status::handle(e, st)).await;
                }
                if $done {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done
        }};
    }

    // 1. The send function logs in with both certificates and sends; it shares its tokens.
    for nip in [RSA_SELLER, EC_SELLER] {
        put(format!("inbox/{nip}/FV-150.xml"), invoice(nip, "FV2026/02/150")).await.unwrap();
    }
    let sent = run_until!(
        &send,
        None,
        is(state(RSA_SELLER, "FV2026/02/150").await, DocumentState::Sent)
            && is(state(EC_SELLER, "FV2026/02/150").await, DocumentState::Sent),
        false
    );
    assert!(
        sent,
        "{}\n{}",
        story(RSA_SELLER, "FV2026/02/150").await,
        story(EC_SELLER, "FV2026/02/150").await
    );
    for (nip, cert) in [(RSA_SELLER, &rsa), (EC_SELLER, &ec)] {
        assert!(
            logins_since(&sim, 0).contains(&(nip.to_owned(), cert.fingerprint_hex(), 200)),
            "the send function logged in with {nip}'s certificate"
        );
    }

    // 2. Mid-run, well within the time to live: 9999999999's secret gets a new certificate (a
    // new version; the same RSA key). The old certificate still works and so do the tokens it
    // obtained, shared in the cache. A send instance started now (a cold start) reads the new
    // version: it must not take those tokens, so it logs in with the new certificate.
    let renewed = certificate(RSA_SELLER, RSA_KEY, now - DAY, now + 730 * DAY);
    c.secrets
        .put_secret_value()
        .secret_id(format!("{prefix}{RSA_SELLER}"))
        .secret_string(secret(&renewed, RSA_KEY))
        .send()
        .await
        .unwrap();
    let from = sim.certificate_logins().len();
    let cold = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(&env("SendFunction")).unwrap())
        .await
        .unwrap();
    put(format!("inbox/{RSA_SELLER}/FV-151.xml"), invoice(RSA_SELLER, "FV2026/02/151"))
        .await
        .unwrap();
    let sent = run_until!(
        &cold,
        None,
        is(state(RSA_SELLER, "FV2026/02/151").await, DocumentState::Sent),
        false
    );
    assert!(sent, "{}", story(RSA_SELLER, "FV2026/02/151").await);
    assert_eq!(
        logins_since(&sim, from),
        vec![(RSA_SELLER.to_owned(), renewed.fingerprint_hex(), 200)],
        "the cold instance logged in with the new certificate, not with the old one's tokens"
    );

    // 3. KSeF revokes the old certificate and every token ends. A status instance starts and
    // only it runs: it reads the secrets through its own role and logs in with the RSA and the
    // EC certificate itself to decide the three invoices.
    sim.revoke_certificate(&rsa.fingerprint_hex());
    sim.revoke_refresh_tokens();
    let mut status = relay_fn_status::StatusDeps::from_settings(&status_settings).await.unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    let from = sim.certificate_logins().len();
    let accepted = run_until!(
        &send,
        Some(&status),
        is(state(RSA_SELLER, "FV2026/02/150").await, DocumentState::Accepted)
            && is(state(EC_SELLER, "FV2026/02/150").await, DocumentState::Accepted)
            && is(state(RSA_SELLER, "FV2026/02/151").await, DocumentState::Accepted),
        true
    );
    assert!(
        accepted,
        "{}\n{}\n{}",
        story(RSA_SELLER, "FV2026/02/150").await,
        story(EC_SELLER, "FV2026/02/150").await,
        story(RSA_SELLER, "FV2026/02/151").await
    );
    let by_status = logins_since(&sim, from);
    for (nip, cert) in [(RSA_SELLER, &renewed), (EC_SELLER, &ec)] {
        assert!(
            by_status.contains(&(nip.to_owned(), cert.fingerprint_hex(), 200)),
            "the status function logged in with {nip}'s {} certificate: {by_status:?}",
            cert.key_type()
        );
    }
    assert_eq!((renewed.key_type().as_str(), ec.key_type().as_str()), ("RSA-2048", "EC P-256"));
    assert!(
        !by_status.iter().any(|(_, f, _)| *f == rsa.fingerprint_hex()),
        "the status instance read the new version: it never tried the old certificate: {by_status:?}"
    );
    for (nip, number) in [
        (RSA_SELLER, "FV2026/02/150"),
        (EC_SELLER, "FV2026/02/150"),
        (RSA_SELLER, "FV2026/02/151"),
    ] {
        assert_eq!(sim.ledger().count_hash(&ContentHash::of(&invoice(nip, number))), 1);
    }
    let read = secrets_read(&proxies["StatusFunction"], 0);
    for nip in [RSA_SELLER, EC_SELLER] {
        assert!(read.contains(&format!("{prefix}{nip}")), "status read {nip}'s secret: {read:?}");
    }
    stack.assert_allowed("StatusFunction", &proxies["StatusFunction"].calls(), &params);

    // 4. The first send instance, not rebuilt and still within its time to live, holds the old
    // certificate's credentials and its ended tokens: KSeF refuses the old certificate, the
    // instance reads the secret again and logs in with the new one. Both sellers' next invoices
    // are ACCEPTED; nothing is charged, no seller is parked.
    let from = sim.certificate_logins().len();
    let send_calls = proxies["SendFunction"].calls().len();
    for nip in [RSA_SELLER, EC_SELLER] {
        put(format!("inbox/{nip}/FV-152.xml"), invoice(nip, "FV2026/02/152")).await.unwrap();
    }
    let accepted = run_until!(
        &send,
        Some(&status),
        is(state(RSA_SELLER, "FV2026/02/152").await, DocumentState::Accepted)
            && is(state(EC_SELLER, "FV2026/02/152").await, DocumentState::Accepted),
        false
    );
    assert!(
        accepted,
        "{}\n{}",
        story(RSA_SELLER, "FV2026/02/152").await,
        story(EC_SELLER, "FV2026/02/152").await
    );
    let after = logins_since(&sim, from);
    assert!(
        after.contains(&(RSA_SELLER.to_owned(), rsa.fingerprint_hex(), 460)),
        "the first send instance tried the old certificate, which KSeF refused: {after:?}"
    );
    assert!(
        after.contains(&(RSA_SELLER.to_owned(), renewed.fingerprint_hex(), 200)),
        "then logged in with the new one: {after:?}"
    );
    assert!(
        !after.iter().any(|(_, f, s)| *f == rsa.fingerprint_hex() && *s == 200),
        "the revoked certificate got no login: {after:?}"
    );
    for nip in [RSA_SELLER, EC_SELLER] {
        let record = observer.get(&key(nip, "FV2026/02/152")).await.unwrap().unwrap().record;
        assert_eq!(record.attempts, 0, "nothing charged: {nip}");
        assert_eq!(sim.ledger().count_hash(&ContentHash::of(&invoice(nip, "FV2026/02/152"))), 1);
        assert_eq!(
            send.ksef.seller_gate(&Nip::parse(nip).unwrap(), chrono::Utc::now()).await,
            SellerGate::Open,
            "{nip} was never parked"
        );
    }
    assert!(
        !metrics.lines().iter().any(|l| l.get("SellerParked").is_some()),
        "no seller was parked"
    );
    let read = secrets_read(&proxies["SendFunction"], send_calls);
    assert!(
        read.contains(&format!("{prefix}{RSA_SELLER}")),
        "the first send instance read the rotated secret again: {read:?}"
    );
    stack.assert_allowed("SendFunction", &proxies["SendFunction"].calls(), &params);
}
