//! Credentials read on demand, per seller, against the simulator: a seller whose secret cannot
//! be used parks only its own work; a refused login is fixed by rotating the secret (here from a
//! token to a certificate), which the probe that ends the block reads without a new deployment;
//! an unchanged secret keeps its client and tokens when its time to live ends, a changed one
//! logs in anew; the shared tokens and session are tied to the secret's version, so a rotation
//! takes effect within the time to live, and a login KSeF refuses reads the secret again
//! before anything is parked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{client_config, invoice, world_with, World};
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::{Queue, SharedCache};
use relay_domain::{DocumentState, ErrorClass};
use relay_pipeline::credentials::{MemoryCredentials, CREDENTIALS_INVALID};
use relay_pipeline::seller_block::SellerGate;
use relay_pipeline::send::send;
use relay_pipeline::sessions::KsefContexts;

const EC_CERT: &str = include_str!("../../ksef-client/tests/fixtures/openssl-ec-cert.pem");
const EC_KEY: &str = include_str!("../../ksef-client/tests/fixtures/openssl-ec-key.pem");

fn certificate_secret() -> String {
    serde_json::json!({"certificate_pem": EC_CERT, "private_key_pem": EC_KEY}).to_string()
}

fn logins(w: &World, route: &str) -> usize {
    w.sim.exchanges().iter().filter(|e| e.route == route).count()
}

fn contexts(w: &World, secrets: &Arc<MemoryCredentials>, cache: &Arc<dyn SharedCache>) -> KsefContexts {
    KsefContexts::new()
        .with_credentials(secrets.clone(), client_config(&w.sim), Duration::from_secs(15 * 60))
        .with_shared_cache(cache.clone())
}

#[tokio::test]
async fn an_unusable_secret_parks_its_seller_and_a_rotation_is_read_by_the_probe() {
    let mut w = world_with(3, true).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    // Not a token the simulator knows, and a secret that is not even readable JSON.
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), "{\"token\": \"revoked\""));
    w.ksef = contexts(&w, &secrets, &cache);
    let first = w.register(&invoice("CRED/1")).await;
    let second = w.register(&invoice("CRED/2")).await;

    let res = w.send(&first).await;
    assert_eq!(res.outcome, "OPERATOR_PARKED");
    let f = res.record.unwrap().last_error.unwrap();
    assert_eq!(
        (f.class.clone(), f.code.as_deref()),
        (ErrorClass::Operator, Some(CREDENTIALS_INVALID))
    );
    assert!(
        f.message.contains("memory:9999999999") && f.message.contains("not valid JSON"),
        "{f}"
    );
    assert!(!f.message.contains("revoked"), "the secret's content never shows: {f}");
    assert!(matches!(w.ksef.seller_gate(&World::nip(), Utc::now()).await, SellerGate::Parked(_)));
    assert_eq!(w.corrections_q.stats().await.unwrap().total(), 0, "nothing blamed on the invoice");

    // The operator fixes it to a token KSeF refuses: the probe reads it and parks again (450).
    let later = Utc::now() + chrono::Duration::hours(2);
    secrets.set(World::nip(), "{\"token\": \"revoked\"}");
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &w.current_request(&second).await, later)
        .await
        .unwrap();
    assert_eq!(res.outcome, "OPERATOR_PARKED");
    assert_eq!(res.record.unwrap().last_error.unwrap().code.as_deref(), Some("450"));

    // Then rotates it to a certificate: the next probe reads it (no new KsefContexts, no
    // redeploy), logs in with XAdES and sends; the block clears and the backlog flows.
    secrets.set(World::nip(), certificate_secret());
    let much_later = later + chrono::Duration::hours(3);
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &w.current_request(&second).await, much_later)
        .await
        .unwrap();
    assert_eq!(res.outcome, "SENT");
    assert_eq!(w.ksef.seller_gate(&World::nip(), much_later).await, SellerGate::Open);
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &w.current_request(&first).await, much_later)
        .await
        .unwrap();
    assert_eq!(res.outcome, "SENT");
    assert_eq!(res.record.unwrap().state, DocumentState::Sent);
    assert_eq!(logins(&w, "/auth/xades-signature"), 1, "one certificate login for both");
}

#[tokio::test]
async fn an_unchanged_secret_keeps_its_client_and_a_changed_one_logs_in_anew() {
    let mut w = world_with(3, true).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), certificate_secret()));
    w.ksef = contexts(&w, &secrets, &cache);
    let now = Utc::now();
    let a = w.ksef.client_ready(&World::nip(), now).await.unwrap();
    // Past the time to live, the same version: the same client, no second login.
    let b = w
        .ksef
        .client_ready(&World::nip(), now + chrono::Duration::minutes(20))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(logins(&w, "/auth/xades-signature"), 1);
    // Rotated (a new version): a new client, which logs in anew rather than take the shared
    // tokens obtained with the old version.
    secrets.set(World::nip(), certificate_secret());
    let c = w
        .ksef
        .client_ready(&World::nip(), now + chrono::Duration::minutes(40))
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert!(c.tokens().await.is_some());
    assert_eq!(logins(&w, "/auth/xades-signature"), 2, "the new version logged in itself");
    // Within the time to live nothing is read: a broken secret is not seen yet.
    secrets.set(World::nip(), "{");
    let d = w
        .ksef
        .client_ready(&World::nip(), now + chrono::Duration::minutes(41))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&c, &d));
    // Past it, a secret that cannot be read again leaves the working client in use.
    let e = w
        .ksef
        .client_ready(&World::nip(), now + chrono::Duration::minutes(60))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&c, &e));
}

/// Failed on main: a secret that broke after the send made every status poll fail and spend a
/// poll (100 of them end FAILED with POLL_LIMIT), while the seller's work was never parked.
#[tokio::test]
async fn a_secret_broken_after_the_send_parks_the_seller_at_the_status_stage_without_spending_polls() {
    let mut w = world_with(3, true).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let token = serde_json::json!({"token": ksef_sim::DEFAULT_TOKEN}).to_string();
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), token.clone()));
    w.ksef = contexts(&w, &secrets, &cache);
    let req = w.register(&invoice("CRED/POLL")).await;
    assert_eq!(w.send(&req).await.outcome, "SENT");

    // The secret breaks; a new status instance reads it on first use.
    secrets.set(World::nip(), "{\"token\": ");
    w.ksef = contexts(&w, &secrets, &cache);
    let m = w
        .status_q
        .receive(1, Duration::from_secs(30), Duration::from_secs(5))
        .await
        .unwrap();
    let status = relay_pipeline::messages::StatusRequest::from_json(&m[0].body).unwrap();
    let now = Utc::now();
    let res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &w.status_cfg(), &status, now)
        .await
        .unwrap();
    assert_eq!(res.outcome, "SELLER_PARKED");
    let relay_pipeline::queue_action::QueueAction::Replace { body, delay } = &res.action else {
        panic!("{:?}", res.action)
    };
    let again = relay_pipeline::messages::StatusRequest::from_json(body).unwrap();
    let r = res.record.clone().unwrap();
    assert_eq!(again.poll, status.poll, "no poll spent on our configuration");
    assert!(!again.is_behind(&r), "the message follows the record's step");
    let SellerGate::Parked(block) = w.ksef.seller_gate(&World::nip(), now).await else {
        panic!("the seller's work is parked")
    };
    assert!(*delay >= Duration::from_secs(1) && block.until > now, "{delay:?}");
    assert_eq!(r.state, DocumentState::Sent, "nothing blamed on the invoice");
    let f = r.last_error.unwrap();
    assert_eq!(
        (f.class.clone(), f.code.as_deref()),
        (ErrorClass::Operator, Some(CREDENTIALS_INVALID))
    );
    assert!(!f.message.contains(ksef_sim::DEFAULT_TOKEN), "the secret never shows: {f}");

    // The operator fixes the secret; once the block has ended the same poll decides the invoice.
    secrets.set(World::nip(), token);
    let later = block.until + chrono::Duration::seconds(1);
    let mut res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &w.status_cfg(), &again, later)
        .await
        .unwrap();
    for _ in 0..50 {
        let relay_pipeline::queue_action::QueueAction::Replace { body, .. } = &res.action else {
            break;
        };
        let next = relay_pipeline::messages::StatusRequest::from_json(body).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        res = relay_pipeline::status::poll(&w.status_ports(), &w.ksef, &w.status_cfg(), &next, later)
            .await
            .unwrap();
    }
    assert_eq!(res.outcome, "ACCEPTED", "{:?}", res.record);
    assert_eq!(
        w.ksef.seller_gate(&World::nip(), later).await,
        SellerGate::Open,
        "the block has ended"
    );
}

/// Each secret read records the login's non-secret facts for the report function (which may
/// not read secrets) in the shared cache: kind, subject, key type, notAfter and when it was
/// read; a rotation from a token to a certificate replaces them; the secret never goes in.
#[tokio::test]
async fn a_secret_read_records_its_facts_and_never_the_secret() {
    use relay_domain::credential_facts::{cache_name, CredentialFacts, LoginKind};
    let mut w = world_with(3, true).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let token = ksef_sim::DEFAULT_TOKEN;
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), serde_json::json!({"token": token}).to_string()));
    w.ksef = contexts(&w, &secrets, &cache);
    let name = cache_name(&World::nip());
    let now = Utc::now();
    assert!(cache.get(&name, now).await.unwrap().is_none(), "nothing before the first read");

    w.ksef.client_ready(&World::nip(), now).await.unwrap();
    let entry = cache.get(&name, now).await.unwrap().expect("facts recorded at the first read");
    assert!(!entry.value.contains(token), "the token never goes in: {}", entry.value);
    let facts = CredentialFacts::from_json(&entry.value).unwrap();
    assert_eq!(facts.kind, LoginKind::Token);
    assert_eq!(facts.not_after, ksef_client::stored_credentials::token_logins_end());
    assert_eq!((facts.subject, facts.key_type), (None, None));
    assert_eq!(facts.read_at, now);
    assert!(
        entry.expires_at > now + chrono::Duration::days(300),
        "kept for quiet sellers: {}",
        entry.expires_at
    );

    // Rotated to a certificate: the next read (past the time to live) records its facts.
    secrets.set(World::nip(), certificate_secret());
    let later = now + chrono::Duration::minutes(20);
    w.ksef.client_ready(&World::nip(), later).await.unwrap();
    let entry = cache.get(&name, later).await.unwrap().unwrap();
    let facts = CredentialFacts::from_json(&entry.value).unwrap();
    assert_eq!(facts.kind, LoginKind::Certificate);
    assert_eq!(facts.key_type.as_deref(), Some("EC P-256"));
    assert!(facts.subject.as_deref().is_some_and(|s| !s.is_empty()));
    assert_eq!(facts.read_at, later);
    let stored = ksef_client::StoredCredentials::parse(&certificate_secret()).unwrap().facts();
    assert_eq!(facts.not_after, stored.not_after);
    for line in EC_KEY.lines().filter(|l| !l.starts_with("-----") && l.len() > 8) {
        assert!(!entry.value.contains(line), "no part of the private key goes in");
    }
    for line in EC_CERT.lines().filter(|l| !l.starts_with("-----") && l.len() > 8) {
        assert!(!entry.value.contains(line), "nor the certificate itself");
    }
}

fn renewed_certificate() -> ksef_client::SigningIdentity {
    let key = ksef_client::stored_credentials::private_key_from_pem(RSA_KEY, "the key").unwrap();
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    ksef_client::SigningIdentity::self_signed_between(
        "CN=Seller 9999999999,2.5.4.97=VATPL-9999999999,C=PL",
        key,
        now - day,
        now + 365 * day,
    )
    .unwrap()
}

const RSA_KEY: &str = include_str!("../../ksef-client/tests/fixtures/xades-test-rsa-key.pem");

/// The certificate logins the simulator saw since `from`: (fingerprint, auth status).
fn certificate_logins(w: &World, from: usize) -> Vec<(String, i32)> {
    w.sim.certificate_logins()[from..]
        .iter()
        .map(|l| (l.fingerprint.clone(), l.status))
        .collect()
}

/// Failed before the shared entries named their secret's version: an instance that read the
/// rotated secret took the tokens (and session) the old certificate had obtained from the
/// shared cache, so the new certificate never logged in until they ended.
#[tokio::test]
async fn a_rotation_within_the_time_to_live_is_not_served_the_old_versions_tokens_or_session() {
    let w = world_with(3, true).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), certificate_secret()));
    let old = ksef_client::SigningIdentity::from_pem(EC_CERT, EC_KEY).unwrap();
    let now = Utc::now();
    // Instance A reads the first version, logs in and opens the shared session.
    let a = contexts(&w, &secrets, &cache);
    let first = a.session(&World::nip(), now).await.unwrap();
    assert_eq!(certificate_logins(&w, 0), vec![(old.fingerprint_hex(), 200)]);

    // The operator rotates the secret to a new certificate. Instance B starts cold (reads the new
    // version) well within A's time to live: it logs in with the new certificate, opens its own
    // session and shares both; the old version's session is closed.
    let renewed = renewed_certificate();
    secrets.set(
        World::nip(),
        serde_json::json!({"certificate_pem": renewed.certificate_pem(), "private_key_pem": RSA_KEY}).to_string(),
    );
    let b = contexts(&w, &secrets, &cache);
    let second = b.session(&World::nip(), now).await.unwrap();
    assert_eq!(
        certificate_logins(&w, 1),
        vec![(renewed.fingerprint_hex(), 200)],
        "the new version logged in, not served the old one's tokens"
    );
    assert_ne!(second.reference, first.reference, "nor the session opened with them");
    let closed = b
        .client(&World::nip())
        .await
        .unwrap()
        .session_status(&first.reference)
        .await
        .unwrap();
    assert_ne!(closed.status.code, 100, "the old version's session was closed: {:?}", closed.status);

    // A, still on the old version (its time to live has not ended), is told its session is
    // closed: it meets the new version's session in the cache, reads the secret again and takes
    // that session and those tokens: no login of its own, and the old certificate is not used.
    a.drop_session(&World::nip(), &first.reference).await;
    let third = a.session(&World::nip(), now + chrono::Duration::minutes(1)).await.unwrap();
    assert_eq!(third.reference, second.reference);
    assert_eq!(certificate_logins(&w, 2), vec![], "no login: A took the new version's tokens");
    let a_client = a.client_ready(&World::nip(), now + chrono::Duration::minutes(1)).await.unwrap();
    let b_client = b.client_ready(&World::nip(), now).await.unwrap();
    assert_eq!(
        a_client.tokens().await.unwrap().auth_reference,
        b_client.tokens().await.unwrap().auth_reference
    );
}

/// Failed without the client's renewal: an instance within its time to live whose tokens end
/// logs in again with the credentials it read before the rotation; KSeF refuses the revoked
/// certificate and the seller's work is parked for minutes although the secret already holds
/// a working certificate.
#[tokio::test]
async fn a_refused_login_reads_the_secret_again_and_logs_in_with_the_rotated_certificate_before_parking() {
    let mut w = world_with(3, true).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), certificate_secret()));
    let old = ksef_client::SigningIdentity::from_pem(EC_CERT, EC_KEY).unwrap();
    w.ksef = contexts(&w, &secrets, &cache);
    let first = w.register(&invoice("ROT/1")).await;
    assert_eq!(w.send(&first).await.outcome, "SENT");

    // Rotated; the old certificate revoked in KSeF and every token it obtained ended. Nothing
    // else happens in between: the time to live (15 min) has not ended.
    let renewed = renewed_certificate();
    secrets.set(
        World::nip(),
        serde_json::json!({"certificate_pem": renewed.certificate_pem(), "private_key_pem": RSA_KEY}).to_string(),
    );
    w.sim.revoke_certificate(&old.fingerprint_hex());
    w.sim.revoke_refresh_tokens();
    let from = w.sim.certificate_logins().len();
    let second = w.register(&invoice("ROT/2")).await;
    let res = w.send(&second).await;
    assert_eq!(res.outcome, "SENT", "{:?}", res.record);
    let record = res.record.unwrap();
    assert_eq!((record.attempts, record.last_error), (0, None), "nothing charged, nothing parked");
    assert_eq!(w.ksef.seller_gate(&World::nip(), Utc::now()).await, SellerGate::Open);
    let logins = certificate_logins(&w, from);
    assert_eq!(logins.last(), Some(&(renewed.fingerprint_hex(), 200)), "{logins:?}");
    assert!(
        logins.iter().all(|(f, s)| *f == renewed.fingerprint_hex() || *s != 200),
        "the revoked certificate got no login: {logins:?}"
    );

    // An unchanged secret: the refusal stands, and the seller is parked.
    w.sim.revoke_certificate(&renewed.fingerprint_hex());
    w.sim.revoke_refresh_tokens();
    let third = w.register(&invoice("ROT/3")).await;
    assert_eq!(w.send(&third).await.outcome, "OPERATOR_PARKED");
    assert!(matches!(w.ksef.seller_gate(&World::nip(), Utc::now()).await, SellerGate::Parked(_)));
}

/// An instance on the old version that meets the new version's shared tokens but cannot read the
/// secret again logs in for itself and leaves the newer tokens where they are.
#[tokio::test]
async fn an_instance_that_cannot_read_the_secret_again_does_not_overwrite_a_newer_versions_tokens() {
    let w = world_with(3, true).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), certificate_secret()));
    let now = Utc::now();
    // A reads the first version (no login yet); the secret is rotated; B reads it and logs in.
    let a = contexts(&w, &secrets, &cache);
    a.client(&World::nip()).await.unwrap();
    let renewed = renewed_certificate();
    secrets.set(
        World::nip(),
        serde_json::json!({"certificate_pem": renewed.certificate_pem(), "private_key_pem": RSA_KEY}).to_string(),
    );
    let b = contexts(&w, &secrets, &cache);
    let theirs = b.client_ready(&World::nip(), now).await.unwrap().tokens().await.unwrap();
    // Then the secret cannot be read: A logs in with what it has and keeps it to itself.
    secrets.set(World::nip(), "{");
    let ours = a.client_ready(&World::nip(), now).await.unwrap().tokens().await.unwrap();
    assert_ne!(ours.auth_reference, theirs.auth_reference, "A logged in for itself");
    let shared = cache.get("ksef/tokens/9999999999", now).await.unwrap().unwrap();
    let tagged: serde_json::Value = serde_json::from_str(&shared.value).unwrap();
    let in_cache = ksef_client::TokenSet::import_secret_json(tagged["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        in_cache.auth_reference, theirs.auth_reference,
        "the newer version's tokens stay shared"
    );
    assert_eq!(tagged["credentialsVersion"], "2");
}
