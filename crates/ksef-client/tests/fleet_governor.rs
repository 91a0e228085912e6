//! Two instances (two clients, as two Lambda instances would have) sending for one seller and
//! sharing one rate governor stay inside KSeF's limits together; each with only its own
//! limiter, they do not. The simulator's counters are the judge: it answers 429 to whatever goes
//! over. A 429 met by one instance stops the other too.
//!
//! The limit here has only an hour window (20 invoices), at 120x: one simulated hour is 30 s of
//! real time, far longer than the test runs, so no window slides during it and the outcome does
//! not depend on how fast a loaded machine is.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ksef_client::governor::FleetGovernor;
use ksef_client::{ClientConfig, ClientLimits, EndpointGroup, KsefClient, Limit, SendOptions};
use ksef_sim::{RateLimits, SimConfig};
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::SharedCache;
use relay_domain::ErrorClass;

const SCALE: f64 = 120.0;
const PER_HOUR: u32 = 20;

fn hourly() -> Limit {
    Limit {
        per_second: None,
        per_minute: None,
        per_hour: Some(PER_HOUR),
    }
}

async fn sim_with_hourly_sends() -> ksef_sim::SimHandle {
    let l = hourly();
    ksef_sim::start(SimConfig {
        time_scale: SCALE,
        rate_limits: RateLimits::production().with(
            ksef_sim::Group::InvoiceSend,
            ksef_sim::Limit {
                per_second: l.per_second,
                per_minute: l.per_minute,
                per_hour: l.per_hour,
            },
        ),
        ..sim_config()
    })
    .await
}

fn limits() -> ClientLimits {
    ClientLimits::official().scaled(SCALE).with(EndpointGroup::InvoiceSend, hourly())
}

fn instance(sim: &ksef_sim::SimHandle, governor: Option<FleetGovernor>) -> KsefClient {
    KsefClient::new(
        ClientConfig {
            limits: limits(),
            governor,
            ..client_config(sim)
        },
        Some(credentials()),
    )
    .unwrap()
}

/// What each of `clients` got for `per_client` sends, all at once: (sent, refused by the
/// governor, refused by KSeF with 429).
async fn send_from_all(clients: &[KsefClient], per_client: usize, tag: &str) -> (usize, usize, usize) {
    let runs = clients.iter().enumerate().map(|(i, c)| async move {
        let s = c.open_online_session().await.unwrap();
        let mut out = (0, 0, 0);
        for n in 0..per_client {
            match c
                .send_invoice(&s, &invoice(&format!("{tag}/{i}/{n}")), &SendOptions::default())
                .await
            {
                Ok(_) => out.0 += 1,
                Err(f) if f.code.as_deref() == Some("GOVERNOR") => {
                    assert!(matches!(f.class, ErrorClass::RateLimited { .. }), "{f:?}");
                    out.1 += 1
                }
                Err(f) if f.code.as_deref() == Some("429") => out.2 += 1,
                Err(f) => panic!("unexpected failure: {f:?}"),
            }
        }
        out
    });
    futures::future::join_all(runs)
        .await
        .into_iter()
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

#[tokio::test]
async fn two_instances_sharing_the_governor_stay_inside_the_hourly_limit() {
    let sim = sim_with_hourly_sends().await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let governor = || Some(FleetGovernor::new(cache.clone(), "9999999999@test", limits()).with_max_inline_wait(Duration::ZERO));
    let clients = [instance(&sim, governor()), instance(&sim, governor())];
    let (sent, held, refused) = send_from_all(&clients, 15, "GOV").await;
    assert_eq!(refused, 0, "KSeF never had to refuse a send");
    assert_eq!(sent, PER_HOUR as usize, "the hour's sends, and not one more");
    assert_eq!(held, 30 - PER_HOUR as usize, "the rest were held back without calling KSeF");
}

#[tokio::test]
async fn two_instances_with_only_their_own_limiters_go_over_the_limit() {
    // The control: the same two instances, each keeping to the limit on its own.
    let sim = sim_with_hourly_sends().await;
    let clients = [instance(&sim, None), instance(&sim, None)];
    // Each process limiter would wait for the hour window after its 20th send: stop before.
    let (sent, held, refused) = send_from_all(&clients, 15, "OWN").await;
    assert_eq!(held, 0);
    assert_eq!(sent, PER_HOUR as usize, "KSeF takes its 20");
    assert_eq!(refused, 10, "and refuses the 10 that two separate limiters let through");
}

#[tokio::test]
async fn a_429_met_by_one_instance_stops_the_other_without_calling_ksef() {
    let sim = ksef_sim::start(SimConfig {
        faults: vec!["burst429:1:30000@/invoices".parse().unwrap()],
        ..sim_config()
    })
    .await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let gov = || {
        Some(FleetGovernor::new(
            cache.clone(),
            "9999999999@test",
            ClientLimits::official().scaled(TIME_SCALE),
        ))
    };
    let (a, b) = (instance(&sim, gov()), instance(&sim, gov()));
    let sa = a.open_online_session().await.unwrap();
    let sb = b.open_online_session().await.unwrap();
    let f = a.send_invoice(&sa, &invoice("BLOCK/A"), &SendOptions::default()).await.unwrap_err();
    assert_eq!(f.code.as_deref(), Some("429"), "{f:?}");
    let ErrorClass::RateLimited { until: ksef_until } = f.class else {
        panic!("{f:?}")
    };
    let f = b.send_invoice(&sb, &invoice("BLOCK/B"), &SendOptions::default()).await.unwrap_err();
    assert_eq!(f.code.as_deref(), Some("GOVERNOR"), "B did not call KSeF: {f:?}");
    let ErrorClass::RateLimited { until } = f.class else {
        panic!("{f:?}")
    };
    assert!(
        (until - ksef_until).num_milliseconds().abs() < 1,
        "B waits as long as KSeF told A: {until} vs {ksef_until}"
    );
    // Other groups are not blocked: B can still ask about its session.
    b.session_status(&sb.reference).await.unwrap();
}
