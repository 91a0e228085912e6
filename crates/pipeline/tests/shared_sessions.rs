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
use relay_domain::ports::SharedCache;
use relay_domain::Nip;
use relay_pipeline::sessions::KsefContexts;

#[tokio::test]
async fn instances_share_one_login_and_one_session() {
    let sim = ksef_sim::start(SimConfig {
        time_scale: SCALE,
        record_exchanges: true,
        auth_delay: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let nip = Nip::parse("9999999999").unwrap();
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
    let listed = instances[4].client(&nip).unwrap().session_invoices(&references[0]).await.unwrap();
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
