//! KSeF counts a request when it arrives, the client when it takes a slot; what lies between
//! (the client's scheduling, a new connection, the network, KSeF's front end) is uneven. Measured
//! in `ksef-relay load --sim-time-scale 1` (docs/performance.md): a send arrived 57 ms after its
//! reservation, the one reserved a window later 1 ms after its own, and KSeF saw eleven in one
//! second. Here the simulator's `lag` fault makes that gap large and certain: at real time and
//! production's send limit (10 a second), the first ten sends reach KSeF's counters 800 ms late,
//! the next ten on time. A limiter counting reservation times lets the second ten in 1.02 s after
//! the first ten were reserved, 0.22 s after KSeF counted them: 429. Counting each request as on
//! its way until its answer, and then at the answer's time, it cannot happen, however slow the
//! machine: the test asserts KSeF's own counters, not a timing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ksef_client::governor::FleetGovernor;
use ksef_client::{ClientConfig, ClientLimits, KsefClient, SendOptions};
use ksef_sim::{Group, RateLimits, SimConfig};
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::SharedCache;

const LAG_MS: u64 = 800;

async fn real_time_sim() -> ksef_sim::SimHandle {
    ksef_sim::start(SimConfig {
        time_scale: 1.0,
        rate_limits: RateLimits::production(),
        ..sim_config()
    })
    .await
}

fn instance(sim: &ksef_sim::SimHandle, governor: Option<FleetGovernor>) -> KsefClient {
    KsefClient::new(
        ClientConfig {
            limits: ClientLimits::official(),
            governor,
            ..client_config(sim)
        },
        Some(credentials()),
    )
    .unwrap()
}

/// Ten sends spread over `clients`, all at once; each must be taken.
async fn burst(clients: &[KsefClient], sessions: &[ksef_client::OnlineSession], tag: &str) {
    let sends = (0..10).map(|n| {
        let i = n % clients.len();
        let (c, s) = (&clients[i], &sessions[i]);
        async move {
            c.send_invoice(s, &invoice(&format!("{tag}/{n}")), &SendOptions::default())
                .await
                .unwrap_or_else(|f| panic!("send {tag}/{n}: {f:?}"))
        }
    });
    futures::future::join_all(sends).await;
}

/// Two bursts of ten, the first held on its way, the second not; then KSeF's verdict.
async fn lagged_then_prompt(sim: &ksef_sim::SimHandle, clients: &[KsefClient]) {
    let mut sessions = Vec::new();
    for c in clients {
        sessions.push(c.open_online_session().await.unwrap());
    }
    sim.faults().set(vec![format!("lag:1:{LAG_MS}@/invoices").parse().unwrap()], 0);
    burst(clients, &sessions, "LAGGED").await;
    sim.faults().clear();
    burst(clients, &sessions, "PROMPT").await;

    let mut sends: Vec<_> = sim.rate_arrivals().into_iter().filter(|a| a.group == Group::InvoiceSend).collect();
    sends.sort_by_key(|a| a.at);
    let refused = sends.iter().filter(|a| !a.admitted).count();
    assert_eq!(
        sim.operation_counts().too_many_requests(),
        0,
        "KSeF refused {refused} of {} sends",
        sends.len()
    );
    assert_eq!(sends.len(), 20, "every send reached KSeF once");
    // KSeF's own view: no second holds more than ten arrivals.
    for (i, a) in sends.iter().enumerate() {
        let within = sends[i..]
            .iter()
            .take_while(|b| b.at.duration_since(a.at).unwrap_or_default() < Duration::from_secs(1))
            .count();
        assert!(within <= 10, "{within} sends arrived within a second of send {i}");
    }
}

#[tokio::test]
async fn the_process_limiter_keeps_to_the_window_ksef_counts_in() {
    let sim = real_time_sim().await;
    lagged_then_prompt(&sim, &[instance(&sim, None)]).await;
}

#[tokio::test]
async fn two_instances_sharing_the_governor_keep_to_the_window_ksef_counts_in() {
    let sim = real_time_sim().await;
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let governor = || {
        Some(FleetGovernor::new(cache.clone(), "9999999999@test", ClientLimits::official()).with_max_inline_wait(Duration::from_secs(5)))
    };
    lagged_then_prompt(&sim, &[instance(&sim, governor()), instance(&sim, governor())]).await;
}
