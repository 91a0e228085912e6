//! Several function instances sharing one KSeF login and one online session through the
//! store's shared cache: a cold-start storm authenticates and opens a session once, not once per
//! instance; a session KSeF says is broken is dropped for everyone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{client, invoice, SCALE};
use ksef_sim::SimConfig;
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::{Queue, SharedCache};
use relay_domain::Nip;
use relay_pipeline::sessions::KsefContexts;

/// The simulator (recording its exchanges), one shared cache, the seller.
async fn setup() -> (ksef_sim::SimHandle, Arc<dyn SharedCache>, Nip) {
    let sim = ksef_sim::start(SimConfig {
        time_scale: SCALE,
        record_exchanges: true,
        auth_delay: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    (sim, Arc::new(MemorySharedCache::new()), Nip::parse("9999999999").unwrap())
}

#[tokio::test]
async fn instances_share_one_login_and_one_session() {
    let (sim, cache, nip) = setup().await;
    // Five cold instances, each with its own client (as separate Lambda instances would have).
    let instances: Vec<KsefContexts> = (0..5)
        .map(|_| KsefContexts::new().with(nip.clone(), client(&sim)).with_shared_cache(cache.clone()))
        .collect();
    let mut references = Vec::new();
    for (i, ctx) in instances.iter().enumerate() {
        let session = ctx.session(&nip, Utc::now()).await.unwrap();
        let c = ctx.client_ready(&nip, Utc::now()).await.unwrap();
        c.send_invoice(&session, &invoice(&format!("SHARE/{i}")), &ksef_client::SendOptions::default())
            .await
            .unwrap();
        references.push(session.reference.clone());
    }
    references.dedup();
    assert_eq!(references.len(), 1, "every instance sent in the one shared session");
    let count = |method: &str, route: &str| sim.exchanges().iter().filter(|e| e.method == method && e.route == route).count();
    assert_eq!(count("POST", "/auth/ksef-token"), 1, "one login for five instances");
    assert_eq!(count("POST", "/sessions/online"), 1, "one session for five instances");
    // All five invoices are in that session, each decrypted with the shared key.
    let listed = instances[4]
        .client(&nip)
        .await
        .unwrap()
        .session_invoices(&references[0])
        .await
        .unwrap();
    assert_eq!(listed.len(), 5);

    // KSeF says the session is broken: dropped for everyone; the next instance opens a new one.
    instances[0].drop_session(&nip, &references[0]).await;
    let fresh = instances[3].session(&nip, Utc::now()).await.unwrap();
    assert_eq!(fresh.reference, references[0], "instance 3 still holds it locally until told");
    instances[3].drop_session(&nip, &references[0]).await;
    let cold = KsefContexts::new().with(nip.clone(), client(&sim)).with_shared_cache(cache.clone());
    let newer = cold.session(&nip, Utc::now()).await.unwrap();
    assert_ne!(newer.reference, references[0], "a dropped session is not handed out again");
    assert_eq!(count("POST", "/sessions/online"), 2);
    assert_eq!(count("POST", "/auth/ksef-token"), 1, "the cold instance reused the shared login");
}

async fn closed_by_ksef(ctx: &KsefContexts, nip: &Nip, reference: &str) -> bool {
    let s = ctx
        .client_ready(nip, Utc::now())
        .await
        .unwrap()
        .session_status(reference)
        .await
        .unwrap();
    s.status.code != 100
}

#[tokio::test]
async fn a_shared_session_is_closed_once_the_send_queue_is_drained() {
    let (sim, cache, nip) = setup().await;
    let a = KsefContexts::new().with(nip.clone(), client(&sim)).with_shared_cache(cache.clone());
    let b = KsefContexts::new().with(nip.clone(), client(&sim)).with_shared_cache(cache.clone());
    let session = a.session(&nip, Utc::now()).await.unwrap();
    b.session(&nip, Utc::now()).await.unwrap();
    let queue = relay_domain::memory::MemoryQueue::new("send");
    let min_age = Duration::from_secs(300);
    let later = Utc::now() + chrono::Duration::minutes(6);

    // Too young: kept, however empty the queue.
    assert_eq!(a.close_when_drained(&queue, Utc::now(), min_age).await.unwrap(), 0);
    // Work still waiting (a delayed retry counts): kept.
    queue
        .send(relay_domain::ports::OutgoingMessage::new("{}").delayed(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(a.close_when_drained(&queue, later, min_age).await.unwrap(), 0);
    assert!(!closed_by_ksef(&a, &nip, &session.reference).await);

    // Drained and old enough: closed at KSeF, and no instance is handed it again.
    let empty = relay_domain::memory::MemoryQueue::new("send-empty");
    assert_eq!(a.close_when_drained(&empty, later, min_age).await.unwrap(), 1);
    assert!(closed_by_ksef(&a, &nip, &session.reference).await);
    let cold = KsefContexts::new().with(nip.clone(), client(&sim)).with_shared_cache(cache.clone());
    assert_ne!(cold.session(&nip, Utc::now()).await.unwrap().reference, session.reference);
    // Instance b still held the old one locally: the cache entry is no longer its version, so it
    // does not close the newer session the cold instance opened.
    assert_eq!(b.close_when_drained(&empty, later, min_age).await.unwrap(), 0);
    let count = |method: &str, route: &str| sim.exchanges().iter().filter(|e| e.method == method && e.route == route).count();
    assert_eq!(count("POST", "/sessions/online/{referenceNumber}/close"), 1, "closed exactly once");
}

#[tokio::test]
async fn a_session_near_its_twelve_hours_is_replaced_and_closed() {
    let (sim, cache, nip) = setup().await;
    let a = KsefContexts::new().with(nip.clone(), client(&sim)).with_shared_cache(cache.clone());
    let old = a.session(&nip, Utc::now()).await.unwrap();
    // Ten minutes before validUntil (inside the 15-minute margin) the session is replaced...
    let near_end = old.valid_until - chrono::Duration::minutes(10);
    let b = KsefContexts::new().with(nip.clone(), client(&sim)).with_shared_cache(cache.clone());
    let new = b.session(&nip, near_end).await.unwrap();
    assert_ne!(new.reference, old.reference);
    // ...and the instance that replaced it closed the old one.
    assert!(closed_by_ksef(&b, &nip, &old.reference).await);
    assert!(!closed_by_ksef(&b, &nip, &new.reference).await);
    // Another instance gets the new one from the cache, and closes nothing.
    let c = KsefContexts::new().with(nip.clone(), client(&sim)).with_shared_cache(cache.clone());
    assert_eq!(c.session(&nip, Utc::now()).await.unwrap().reference, new.reference);
    assert!(!closed_by_ksef(&c, &nip, &new.reference).await);
}
