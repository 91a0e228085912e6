//! The limits a fleet keeps to come from KSeF (`GET /rate-limits`, API-NOTES §15: trust it over
//! any table), read once per seller by the first instance and shared through the cache, so a
//! cold-start storm does not spend KSeF's "other" group (120 an hour) asking. A failed read keeps
//! the published defaults. Against the simulator over HTTP, configured with a limit of its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::invoice;
use ksef_client::{ClientConfig, ClientLimits, EndpointGroup, Environment, Limit, SendOptions};
use ksef_sim::{Group, RateLimits, SimConfig};
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::SharedCache;
use relay_domain::Nip;
use relay_pipeline::credentials::MemoryCredentials;
use relay_pipeline::sessions::{KsefContexts, DEFAULT_CREDENTIALS_TTL};

/// One simulated hour is 30 s: no hour window slides while the test runs.
const SCALE: f64 = 120.0;
/// This seller's sends, as KSeF reports them: 6 an hour (the published value is 180).
const SEND_LIMIT: Limit = Limit::new(100, 100, 6);

async fn sim(faults: Vec<ksef_sim::Fault>) -> ksef_sim::SimHandle {
    ksef_sim::start(SimConfig {
        time_scale: SCALE,
        rate_limits: RateLimits::production().with(Group::InvoiceSend, ksef_sim::Limit::new(100, 100, 6)),
        auth_delay: Duration::from_millis(10),
        accept_delay: Duration::from_millis(10),
        processing_delay: Duration::from_millis(10),
        faults,
        ..SimConfig::default()
    })
    .await
}

fn config(sim: &ksef_sim::SimHandle) -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_secs(3),
        limits: ClientLimits::official().scaled(SCALE),
        auth_poll_interval: Duration::from_millis(10),
        ..ClientConfig::new(Environment::Custom(sim.api_url()))
    }
}

/// A cold instance as a Lambda has it: credentials read on demand, the shared cache, the fleet
/// governor.
fn instance(sim: &ksef_sim::SimHandle, cache: &Arc<dyn SharedCache>) -> KsefContexts {
    let secrets = Arc::new(MemoryCredentials::new().with(nip(), ksef_sim::DEFAULT_TOKEN));
    KsefContexts::new()
        .with_credentials(secrets, config(sim), DEFAULT_CREDENTIALS_TTL)
        .with_shared_cache(cache.clone())
        .with_fleet_governor("test")
}

fn nip() -> Nip {
    Nip::parse("9999999999").unwrap()
}

fn rate_limit_reads(sim: &ksef_sim::SimHandle, status: u16) -> u64 {
    sim.operation_counts().count("GET", "/rate-limits", |s| s == status)
}

#[tokio::test]
async fn a_fleet_reads_the_sellers_limits_once_and_keeps_to_them_together() {
    let sim = sim(Vec::new()).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let (a, b) = (instance(&sim, &cache), instance(&sim, &cache));
    let ca = a.client_ready(&nip(), Utc::now()).await.unwrap();
    let cb = b.client_ready(&nip(), Utc::now()).await.unwrap();
    for c in [&ca, &cb] {
        let limits = c.rate_limits();
        assert_eq!(
            limits.groups[&EndpointGroup::InvoiceSend],
            SEND_LIMIT,
            "KSeF's value, not the table's"
        );
        assert_eq!(limits.time_scale, SCALE, "the configured time scale is kept");
    }
    assert_eq!(rate_limit_reads(&sim, 200), 1, "the second instance took the first one's reading");

    // Together they send 6 in KSeF's hour and hold the rest back without calling KSeF.
    let sa = a.session(&nip(), Utc::now()).await.unwrap();
    let sb = b.session(&nip(), Utc::now()).await.unwrap();
    let (mut sent, mut held) = (0, 0);
    for n in 0..8 {
        let (c, s) = if n % 2 == 0 { (&ca, &sa) } else { (&cb, &sb) };
        match c.send_invoice(s, &invoice(&format!("SEED/{n}")), &SendOptions::default()).await {
            Ok(_) => sent += 1,
            Err(f) if f.code.as_deref() == Some("GOVERNOR") => held += 1,
            Err(f) => panic!("send {n}: {f:?}"),
        }
    }
    assert_eq!(sim.operation_counts().too_many_requests(), 0);
    assert_eq!((sent, held), (6, 2));
}

#[tokio::test]
async fn a_failed_read_keeps_the_published_defaults_and_delivery_goes_on() {
    let sim = sim(vec!["unavailable:1@/rate-limits".parse().unwrap()]).await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let a = instance(&sim, &cache);
    let c = a.client_ready(&nip(), Utc::now()).await.unwrap();
    assert_eq!(c.rate_limits(), ClientLimits::official().scaled(SCALE));
    let s = a.session(&nip(), Utc::now()).await.unwrap();
    c.send_invoice(&s, &invoice("DEFAULTS/1"), &SendOptions::default()).await.unwrap();
    // Once per cold start: this instance does not ask again; the next one does.
    a.client_ready(&nip(), Utc::now()).await.unwrap();
    assert_eq!(rate_limit_reads(&sim, 503), 1);
    instance(&sim, &cache).client_ready(&nip(), Utc::now()).await.unwrap();
    assert_eq!(rate_limit_reads(&sim, 503), 2, "nothing was shared, so the next cold start asks");
}
