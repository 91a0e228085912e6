//! The fleet rate governor over the deployed relay's shared cache (DynamoDB, here moto over the
//! wire): two instances sending for one seller at once stay inside KSeF's hourly limit
//! together, judged by the simulator's counters (it answers 429 to whatever goes over). The
//! in-memory cache runs the same scenario in `crates/ksef-client/tests/fleet_governor.rs`.
//!
//! Only an hour window (20 sends), at 120x: one simulated hour is 30 s of real time, longer than
//! the test runs, so no window slides during it and a loaded machine cannot change the outcome.

use std::sync::Arc;
use std::time::Duration;

use ksef_client::governor::FleetGovernor;
use ksef_client::{ClientConfig, ClientLimits, Credentials, EndpointGroup, Environment, KsefClient, KsefToken, Limit, SendOptions};
use ksef_sim::{RateLimits, SimConfig};
use relay_aws::{provision, DynamoSharedCache};
use relay_domain::ports::SharedCache;
use relay_domain::Nip;
use relay_tests::emulator;

const SCALE: f64 = 120.0;

fn hourly() -> Limit {
    Limit {
        per_second: None,
        per_minute: None,
        per_hour: Some(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_the_dynamodb_governor_stay_inside_the_hourly_limit() {
    let sim = ksef_sim::start(SimConfig {
        time_scale: SCALE,
        rate_limits: RateLimits::production().with(
            ksef_sim::Group::InvoiceSend,
            ksef_sim::Limit {
                per_second: None,
                per_minute: None,
                per_hour: Some(20),
            },
        ),
        accept_delay: Duration::from_millis(20),
        processing_delay: Duration::from_millis(20),
        auth_delay: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await;
    let c = emulator::clients().await;
    let table = relay_tests::unique_name("governor");
    provision::create_documents_table(&c.dynamodb, &table).await.unwrap();
    let limits = ClientLimits::official().scaled(SCALE).with(EndpointGroup::InvoiceSend, hourly());
    let instance = || {
        // Each instance has its own cache client, as two Lambda instances would.
        let cache: Arc<dyn SharedCache> = Arc::new(DynamoSharedCache::new(c.dynamodb.clone(), &table));
        let governor = FleetGovernor::new(cache, "9999999999@test", limits.clone()).with_max_inline_wait(Duration::ZERO);
        KsefClient::new(
            ClientConfig {
                limits: limits.clone(),
                governor: Some(governor),
                auth_poll_interval: Duration::from_millis(10),
                ..ClientConfig::new(Environment::Custom(sim.api_url()))
            },
            Some(Credentials::Token {
                context: Nip::parse("9999999999").unwrap(),
                token: KsefToken::new(ksef_sim::DEFAULT_TOKEN),
            }),
        )
        .unwrap()
    };
    let sample = String::from_utf8(include_bytes!("../data/ksef/samples/FA_3_Przykład_1.xml").to_vec()).unwrap();
    let runs = (0..2).map(|i| {
        let client = instance();
        let sample = sample.clone();
        async move {
            let s = client.open_online_session().await.unwrap();
            let (mut sent, mut held, mut refused) = (0, 0, 0);
            for n in 0..15 {
                let xml = sample.replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>GOV/{i}/{n}</P_2>"));
                match client.send_invoice(&s, xml.as_bytes(), &SendOptions::default()).await {
                    Ok(_) => sent += 1,
                    Err(f) if f.code.as_deref() == Some("GOVERNOR") => held += 1,
                    Err(f) if f.code.as_deref() == Some("429") => refused += 1,
                    Err(f) => panic!("unexpected failure: {f:?}"),
                }
            }
            (sent, held, refused)
        }
    });
    let results = futures::future::join_all(runs).await;
    let (sent, held, refused) = results.iter().fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    assert_eq!(refused, 0, "KSeF never had to refuse a send: {results:?}");
    assert_eq!(
        (sent, held),
        (20, 10),
        "the hour's 20, the rest held back without a KSeF call: {results:?}"
    );
}
