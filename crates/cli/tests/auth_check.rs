//! `ksef-relay ksef auth-check --secret NAME`: a deployed seller's secret read from Secrets
//! Manager (the emulator) and tried against KSeF (the simulator), printing only what may be
//! said: the kind, subject, notAfter, days left and whether the login worked and why not. Never
//! the token, the key or the secret's content, also when the secret is broken.

mod support;

use std::time::Duration;

use support::ksef_relay;

const EC_CERT: &str = include_str!("../../ksef-client/tests/fixtures/openssl-ec-cert.pem");
const EC_KEY: &str = include_str!("../../ksef-client/tests/fixtures/openssl-ec-key.pem");
const MARK: &str = "S3CRETMARK";

async fn put(name: &str, value: &str) {
    let c = relay_tests::emulator::clients().await;
    c.secrets.create_secret().name(name).secret_string(value).send().await.unwrap();
}

async fn auth_check(sim: &ksef_sim::SimHandle, secret: &str) -> support::Ran {
    let args = [
        "ksef".to_owned(),
        "auth-check".to_owned(),
        "--secret".to_owned(),
        secret.to_owned(),
        "--env".to_owned(),
        sim.api_url(),
        "--aws-endpoint".to_owned(),
        relay_tests::emulator::endpoint().to_owned(),
        "--timeout-secs".to_owned(),
        "10".to_owned(),
    ];
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ksef_relay(&args, &[("AWS_REGION", relay_tests::emulator::REGION)])
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_secret_is_checked_by_name_and_nothing_of_it_is_printed() {
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        auth_delay: Duration::from_millis(20),
        ..ksef_sim::SimConfig::default()
    })
    .await;
    let prefix = format!("{}/ksef/", relay_tests::unique_name("authcheck"));

    // A certificate and its key: the facts, and a XAdES login that works.
    let good = format!("{prefix}9999999999");
    put(
        &good,
        &serde_json::json!({"certificate_pem": EC_CERT, "private_key_pem": EC_KEY}).to_string(),
    )
    .await;
    let ran = auth_check(&sim, &good).await;
    assert_eq!(ran.code, Some(0), "{}", ran.text());
    for expected in [
        "context: NIP 9999999999",
        "credential: certificate",
        "key: EC P-256",
        "notAfter: 2126-10-29T00:39:21+00:00",
        "login: ok",
    ] {
        assert!(ran.stdout.contains(expected), "{expected:?} in {}", ran.text());
    }
    let key_body = EC_KEY.lines().nth(1).unwrap();
    assert!(!ran.text().contains(key_body) && !ran.text().contains("BEGIN"), "{}", ran.text());

    // A token KSeF refuses: the kind, token logins' end, and why the login failed; no token.
    let refused = format!("{prefix}5265877635");
    put(&refused, &format!("{{\"token\": \"{MARK}\"}}")).await;
    let ran = auth_check(&sim, &refused).await;
    assert_ne!(ran.code, Some(0), "{}", ran.text());
    assert!(ran.stdout.contains("credential: token"), "{}", ran.text());
    assert!(ran.stdout.contains("token logins end: 2026-12-31T23:00:00+00:00"), "{}", ran.text());
    assert!(ran.stdout.contains("login: FAILED (OPERATOR)"), "{}", ran.text());
    assert!(!ran.text().contains(MARK), "{}", ran.text());

    // A broken secret: which member is wrong, nothing of it.
    let broken = format!("{prefix}1111111111");
    put(
        &broken,
        &serde_json::json!({"certificate_pem": EC_CERT, "private_key_pem": MARK}).to_string(),
    )
    .await;
    let ran = auth_check(&sim, &broken).await;
    assert_ne!(ran.code, Some(0), "{}", ran.text());
    assert!(ran.text().contains("private_key_pem is not a PEM document"), "{}", ran.text());
    assert!(!ran.text().contains(MARK) && !ran.text().contains("BEGIN"), "{}", ran.text());

    // A secret that does not exist: named, and what AWS said.
    let ran = auth_check(&sim, &format!("{prefix}5555555555")).await;
    assert_ne!(ran.code, Some(0), "{}", ran.text());
    assert!(ran.text().contains("ResourceNotFoundException"), "{}", ran.text());
}
