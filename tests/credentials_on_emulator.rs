//! Per-seller credentials read from Secrets Manager on the AWS emulator, through the real
//! functions: two sellers, one with a KSeF certificate and its key (JSON secret, PEM), one whose
//! secret is broken. The broken one's invoice parks with an operator's error that names the
//! secret and never quotes it; the other's reaches ACCEPTED through the simulator, which saw a
//! XAdES certificate login and no token login.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use relay_aws::settings::{IntakeSettings, SendSettings, StatusSettings};
use relay_aws::{provision, SqsQueue};
use relay_domain::ports::DocumentRegistry;
use relay_domain::{DocumentKey, DocumentState, ErrorClass, InvoiceKind, InvoiceNumber, Nip};
use relay_pipeline::seller_block::SellerGate;
use relay_tests::emulator;
use relay_tests::lambda_events::deliver;

const SAMPLE_1: &[u8] = include_bytes!("../data/ksef/samples/FA_3_Przykład_1.xml");
const EC_CERT: &str = include_str!("../crates/ksef-client/tests/fixtures/openssl-ec-cert.pem");
const EC_KEY: &str = include_str!("../crates/ksef-client/tests/fixtures/openssl-ec-key.pem");
/// Planted in the broken secret: it must show up nowhere.
const MARK: &str = "S3CRETMARK";

const GOOD: &str = "9999999999";
const BROKEN: &str = "5265877635";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_secret_parks_its_seller_while_a_certificate_seller_reaches_accepted() {
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        record_exchanges: true,
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("creds");
    provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
    provision::create_bucket(&c.s3, &name, emulator::REGION).await.unwrap();
    let mut queues = HashMap::new();
    for stage in ["intake", "send", "status", "corrections"] {
        let pair = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-{stage}"), 5, Duration::from_secs(60))
            .await
            .unwrap();
        queues.insert(stage.to_owned(), pair.url);
        queues.insert(format!("{stage}-dlq"), pair.dlq_url);
    }
    provision::notify_queue_on_create(&c.s3, &c.sqs, &name, &queues["intake"], "inbox/")
        .await
        .unwrap();
    let prefix = format!("{name}/ksef/");
    let secrets = [
        (
            GOOD,
            serde_json::json!({"certificate_pem": EC_CERT, "private_key_pem": EC_KEY}).to_string(),
        ),
        (
            BROKEN,
            serde_json::json!({
                "certificate_pem": format!("-----BEGIN CERTIFICATE-----\n{MARK}\n-----END CERTIFICATE-----\n"),
                "private_key_pem": MARK,
            })
            .to_string(),
        ),
    ];
    for (nip, value) in secrets {
        c.secrets
            .create_secret()
            .name(format!("{prefix}{nip}"))
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
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
        ("KSEF_TOKEN_SECRET_PREFIX", prefix.clone()),
        ("KSEF_SELLER_NIPS", format!("{GOOD},{BROKEN}")),
        ("KSEF_CACHE_KEY_ID", cache_key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(&vars).unwrap()).await;
    let send = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(&vars).unwrap())
        .await
        .unwrap();
    let mut status = relay_fn_status::StatusDeps::from_settings(&StatusSettings::from_env(&vars).unwrap())
        .await
        .unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    let sqs = |q: &str| SqsQueue::new(c.sqs.clone(), &queues[q]);
    let (intake_q, send_q, status_q) = (sqs("intake"), sqs("send"), sqs("status"));

    let theirs = String::from_utf8(SAMPLE_1.to_vec())
        .unwrap()
        .replacen(&format!("<NIP>{GOOD}</NIP>"), &format!("<NIP>{BROKEN}</NIP>"), 1);
    for (key, bytes) in [
        (format!("inbox/{GOOD}/FV-150.xml"), SAMPLE_1.to_vec()),
        (format!("inbox/{BROKEN}/FV-150.xml"), theirs.into_bytes()),
    ] {
        c.s3.put_object()
            .bucket(&name)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .unwrap();
    }
    let key = |nip: &str| {
        DocumentKey::new(
            Nip::parse(nip).unwrap(),
            InvoiceKind::Vat,
            InvoiceNumber::parse("FV2026/02/150").unwrap(),
        )
    };
    // Intake, send and status, as their event sources would run them, until both documents
    // are decided: the parked one's message waits minutes (its block), so the queues never empty.
    let mut settled = false;
    for _ in 0..300 {
        deliver(&intake_q, |e| relay_fn_intake::handle(e, &intake)).await;
        deliver(&send_q, |e| relay_fn_send::handle(e, &send)).await;
        deliver(&status_q, |e| relay_fn_status::handle(e, &status)).await;
        let good = send.store.get(&key(GOOD)).await.unwrap();
        let broken = send.store.get(&key(BROKEN)).await.unwrap();
        if good.is_some_and(|d| d.record.state == DocumentState::Accepted) && broken.is_some_and(|d| d.record.last_error.is_some()) {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let good = send.store.get(&key(GOOD)).await.unwrap().unwrap();
    let broken = send.store.get(&key(BROKEN)).await.unwrap().unwrap();
    assert!(settled, "{:#?}\n{:#?}", good.history, broken.history);

    assert_eq!(good.record.state, DocumentState::Accepted, "{:#?}", good.history);
    assert!(good.record.storage.upo.is_some());
    let routes: Vec<(String, u16)> = sim.exchanges().into_iter().map(|e| (e.route, e.status)).collect();
    assert!(
        routes.iter().any(|(r, s)| r == "/auth/xades-signature" && *s == 202),
        "a certificate login: {routes:?}"
    );
    assert!(!routes.iter().any(|(r, _)| r == "/auth/ksef-token"), "no token login: {routes:?}");
    assert_eq!(sim.ledger().len(), 1, "only the good seller's invoice reached KSeF");

    assert_eq!(broken.record.state, DocumentState::Queued, "{:#?}", broken.history);
    assert_eq!(broken.record.attempts, 0, "no send spent on it");
    let f = broken.record.last_error.clone().unwrap();
    assert_eq!(f.class, ErrorClass::Operator);
    assert_eq!(f.code.as_deref(), Some("CREDENTIALS_INVALID"));
    assert!(
        f.message.contains(&format!("{prefix}{BROKEN}")) && f.message.contains("certificate_pem is not a PEM document"),
        "{f}"
    );
    let story = format!("{:?} {:?}", broken.record, broken.history);
    assert!(!story.contains(MARK), "the secret's content leaked into the record or history");
    assert!(matches!(
        send.ksef.seller_gate(&Nip::parse(BROKEN).unwrap(), chrono::Utc::now()).await,
        SellerGate::Parked(_)
    ));
    assert_eq!(
        send.ksef.seller_gate(&Nip::parse(GOOD).unwrap(), chrono::Utc::now()).await,
        SellerGate::Open
    );
}
