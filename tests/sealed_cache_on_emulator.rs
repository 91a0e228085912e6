//! The KSeF secrets the functions share through the documents table are sealed with KMS, on the
//! AWS emulator (DynamoDB and KMS over the wire) through the real send and status functions:
//! an invoice reaches ACCEPTED, and the raw cache items hold neither access nor refresh token nor
//! the session's AES key in clear (each is found only after opening the item with the key);
//! another key cannot open them. Then the functions are started again with a new key (a key
//! replaced): what the old key sealed counts as absent, they log in again once, re-seal with the
//! new key, and the next invoice reaches ACCEPTED too.
//!
//! Log hygiene on this path: every line the functions log meanwhile (debug level, in the
//! Lambda functions' JSON format, including the warnings about entries that do not open) and
//! every history line carries none of those secrets, the KSeF token, a sealed value or invoice
//! content.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use relay_aws::settings::{IntakeSettings, SendSettings, StatusSettings};
use relay_aws::{provision, AwsClients, KmsSealer, SqsQueue};
use relay_domain::ports::{DocumentRegistry, SecretSealer};
use relay_domain::{DocumentKey, DocumentState, InvoiceKind, InvoiceNumber, Nip};
use relay_tests::emulator;
use relay_tests::lambda_events::deliver;

const SAMPLE_1: &[u8] = include_bytes!("../data/ksef/samples/FA_3_Przykład_1.xml");
const NIP: &str = "9999999999";

struct Functions {
    intake: relay_fn_intake::IntakeDeps,
    send: relay_fn_send::SendDeps,
    status: relay_fn_status::StatusDeps,
}

async fn functions(vars: &HashMap<String, String>) -> Functions {
    let intake = relay_fn_intake::IntakeDeps::new(&IntakeSettings::from_env(vars).unwrap()).await;
    let send = relay_fn_send::SendDeps::from_settings(&SendSettings::from_env(vars).unwrap())
        .await
        .unwrap();
    let mut status = relay_fn_status::StatusDeps::from_settings(&StatusSettings::from_env(vars).unwrap())
        .await
        .unwrap();
    status.cfg.schedule = vec![Duration::ZERO];
    Functions { intake, send, status }
}

/// Uploads invoice `number` (sample 1 renumbered) and runs the functions until it is decided.
async fn deliver_one(c: &AwsClients, bucket: &str, queues: &HashMap<String, String>, f: &Functions, number: &str) -> DocumentState {
    let xml = String::from_utf8(SAMPLE_1.to_vec())
        .unwrap()
        .replacen("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{number}</P_2>"), 1);
    assert!(xml.contains(number));
    c.s3.put_object()
        .bucket(bucket)
        .key(format!("inbox/{NIP}/{}.xml", number.replace('/', "-")))
        .body(ByteStream::from(xml.into_bytes()))
        .send()
        .await
        .unwrap();
    let key = DocumentKey::new(Nip::parse(NIP).unwrap(), InvoiceKind::Vat, InvoiceNumber::parse(number).unwrap());
    let sqs = |q: &str| SqsQueue::new(c.sqs.clone(), &queues[q]);
    let (intake_q, send_q, status_q) = (sqs("intake"), sqs("send"), sqs("status"));
    for _ in 0..300 {
        deliver(&intake_q, |e| relay_fn_intake::handle(e, &f.intake)).await;
        deliver(&send_q, |e| relay_fn_send::handle(e, &f.send)).await;
        deliver(&status_q, |e| relay_fn_status::handle(e, &f.status)).await;
        if let Some(d) = f.send.store.get(&key).await.unwrap() {
            if d.record.state.is_final() {
                return d.record.state;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{number} was not decided: {:#?}", f.send.store.get(&key).await.unwrap());
}

/// The raw cache item `CACHE#{name}` as DynamoDB returns it, and its `value`.
async fn raw_item(c: &AwsClients, table: &str, name: &str) -> (String, String) {
    let out = c
        .dynamodb
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("CACHE#{name}")))
        .key("sk", AttributeValue::S("CACHE".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = out.item().unwrap_or_else(|| panic!("no cache item {name}")).clone();
    let value = item["value"].as_s().unwrap().clone();
    (format!("{item:?}"), value)
}

/// The secret strings inside an opened cache value (the JSON's string fields of any length
/// worth searching for: tokens, key, IV). The value names the secret version that obtained it
/// (`credentialsVersion`) and holds the tokens or session as JSON text in `value`.
fn secrets_in(plain: &str, fields: &[&str]) -> Vec<String> {
    let tagged: serde_json::Value = serde_json::from_str(plain).unwrap();
    assert!(tagged.get("credentialsVersion").is_some(), "the entry names its secret version");
    let json: serde_json::Value = serde_json::from_str(tagged["value"].as_str().expect("the tagged value")).unwrap();
    fields
        .iter()
        .map(|f| {
            let v = json[*f].as_str().unwrap_or_else(|| panic!("{f} in {plain:.0}")).to_owned();
            assert!(v.len() >= 16, "{f} is too short to search for");
            v
        })
        .collect()
}

/// Log lines, captured in the format every function logs in (`relay_observe::logging`).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn count_logins(sim: &ksef_sim::SimHandle) -> usize {
    sim.exchanges()
        .into_iter()
        .filter(|e| e.route == "/auth/ksef-token" && e.status == 202)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tokens_and_session_keys_are_sealed_and_a_replaced_key_means_a_new_login() {
    let logs = Captured::default();
    relay_observe::logging::init(relay_observe::logging::LogFormat::Json, "debug", logs.clone());
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(50),
        processing_delay: Duration::from_millis(50),
        auth_delay: Duration::from_millis(20),
        record_exchanges: true,
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("sealed");
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
    let prefix = format!("{name}/ksef-token/");
    c.secrets
        .create_secret()
        .name(format!("{prefix}{NIP}"))
        .secret_string(ksef_sim::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    let new_key = || async { c.kms.create_key().send().await.unwrap().key_metadata.unwrap().arn.unwrap() };
    let (key_a, key_b) = (new_key().await, new_key().await);
    let vars = |key: &str| -> HashMap<String, String> {
        [
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
            ("KSEF_SELLER_NIPS", NIP.to_owned()),
            ("KSEF_CACHE_KEY_ID", key.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let (tokens, session) = (format!("ksef/tokens/{NIP}"), format!("ksef/session/{NIP}"));
    let sealer_a = KmsSealer::new(c.kms.clone(), &key_a);
    let sealer_b = KmsSealer::new(c.kms.clone(), &key_b);

    // Sealed with key A: the invoice goes, and nothing secret is in the table in clear.
    let first = functions(&vars(&key_a)).await;
    assert_eq!(
        deliver_one(&c, &name, &queues, &first, "FV2026/02/150").await,
        DocumentState::Accepted
    );
    assert_eq!(count_logins(&sim).await, 1, "send and status share one login");
    let mut found = Vec::new();
    for (entry, fields) in [(&tokens, &["access", "refresh"][..]), (&session, &["key", "iv"][..])] {
        let (raw, value) = raw_item(&c, &name, entry).await;
        assert!(value.starts_with("kms1:"), "{entry} is sealed");
        let plain = sealer_a.open(entry, &value).await.expect("key A opens what it sealed");
        for secret in secrets_in(&plain, fields) {
            assert!(!raw.contains(&secret), "{entry}'s raw item holds a secret in clear");
            found.push(secret);
        }
        for field in fields {
            assert!(!raw.contains(&format!("\"{field}\"")), "{entry}'s raw item shows its JSON");
        }
        assert!(sealer_b.open(entry, &value).await.is_err(), "another key opens {entry}");
        // Bound to its entry: the same value does not open as another entry.
        let other = if entry == &tokens { &session } else { &tokens };
        assert!(sealer_a.open(other, &value).await.is_err(), "{entry}'s value opens as {other}");
    }
    assert_eq!(found.len(), 4);

    // The key replaced (functions started again with key B): what A sealed does not open, so
    // they log in again once, share under B, and the next invoice goes.
    let second = functions(&vars(&key_b)).await;
    assert_eq!(
        deliver_one(&c, &name, &queues, &second, "FV2026/02/151").await,
        DocumentState::Accepted
    );
    assert_eq!(
        count_logins(&sim).await,
        2,
        "one new login under the new key, shared by send and status"
    );
    for entry in [&tokens, &session] {
        let (raw, value) = raw_item(&c, &name, entry).await;
        assert!(sealer_b.open(entry, &value).await.is_ok(), "{entry} re-sealed with key B");
        assert!(sealer_a.open(entry, &value).await.is_err(), "{entry} no longer opens with key A");
        for secret in &found {
            assert!(!raw.contains(secret.as_str()));
        }
    }
    assert_eq!(sim.ledger().len(), 2, "each invoice accepted once");

    // Nothing secret in a log line or a history line.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.lines().count() > 50, "a debug run logs plenty: {}", text.lines().count());
    assert!(
        text.contains("a shared KSeF secret does not open"),
        "the replaced key's entries were logged as not opening"
    );
    let mut histories = String::new();
    for number in ["FV2026/02/150", "FV2026/02/151"] {
        let key = DocumentKey::new(Nip::parse(NIP).unwrap(), InvoiceKind::Vat, InvoiceNumber::parse(number).unwrap());
        let d = second.send.store.get(&key).await.unwrap().unwrap();
        histories.push_str(&format!("{:?}\n{:?}\n", d.record, d.history));
    }
    let token = ksef_sim::DEFAULT_TOKEN;
    let mut forbidden: Vec<&str> = vec![token, token.rsplit('|').next().unwrap(), "kms1:", "Bearer ", "<Faktura", "<?xml"];
    forbidden.extend(found.iter().map(String::as_str));
    // Sample 1's parties, address and a line item.
    forbidden.extend([
        "lodówka Zimnotech mk1",
        "ABC AGD sp. z o. o.",
        "F.H.U. Jan Kowalski",
        "ul. Kwiatowa 1 m. 2",
    ]);
    for line in text.lines().chain(histories.lines()) {
        for f in &forbidden {
            assert!(!line.contains(f), "{f:?} leaked into a log or history line: {line}");
        }
    }
}
