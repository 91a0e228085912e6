//! The Latarnia client against the simulator's Latarnia: status, messages, republished
//! versions, its own failures (502, 504, an empty answer), and the light probe of KSeF.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use ksef_client::latarnia::probe_ksef;
use ksef_client::{Environment, LatarniaClient, LatarniaError};
use ksef_sim::latarnia::message;
use ksef_sim::{Fault, LatarniaFault, SimConfig};
use relay_domain::availability::{Availability, AvailabilitySource, AvailabilityState, DeclaredKind, OwnEvidence};

fn client(sim: &ksef_sim::SimHandle) -> LatarniaClient {
    let env = Environment::Custom(sim.api_url());
    let c = LatarniaClient::for_environment(&env, Duration::from_secs(5)).expect("a custom root has one");
    assert_eq!(c.base_url(), sim.latarnia_url());
    c
}

#[tokio::test]
async fn status_messages_and_a_republished_version() {
    let sim = ksef_sim::start(SimConfig::default()).await;
    let l = client(&sim);
    let s = l.status().await.unwrap();
    assert_eq!((s.state, s.messages.len()), (AvailabilityState::Available, 0));
    assert!(l.messages().await.unwrap().is_empty());

    let start = Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
    sim.latarnia().declare_failure("K/2026/AWR/02", "E-1", start);
    let s = l.status().await.unwrap();
    assert_eq!(s.state, AvailabilityState::Failure);
    assert_eq!(s.messages[0].id, "K/2026/AWR/02", "/status carries the messages when not AVAILABLE");
    let ms = l.messages().await.unwrap();
    assert_eq!((ms.len(), ms[0].version, ms[0].kind.clone()), (1, 1, DeclaredKind::FailureStart));

    // Republished with a higher version and an earlier start.
    let earlier = start - chrono::Duration::minutes(30);
    sim.latarnia()
        .publish(message("K/2026/AWR/02", "E-1", "FAILURE", "FAILURE_START", earlier, None, 2));
    let reading = l.read().await;
    let a = Availability::decide(
        "CUSTOM",
        None,
        &reading,
        &OwnEvidence::default(),
        start + chrono::Duration::hours(1),
    );
    assert_eq!(a.state, AvailabilityState::Failure);
    assert_eq!(
        a.source,
        AvailabilitySource::Latarnia {
            message: Some("K/2026/AWR/02".into())
        }
    );
    assert_eq!(a.declared_failures()[0].start, earlier);
    assert_eq!(a.declared_failures()[0].messages, vec![("K/2026/AWR/02".to_owned(), 2)]);

    let end = start + chrono::Duration::hours(3);
    sim.latarnia().end_failure("K/2026/AWR/03", "E-1", start, end);
    let reading = l.read().await;
    let b = Availability::decide(
        "CUSTOM",
        Some(&a),
        &reading,
        &OwnEvidence::default(),
        end + chrono::Duration::minutes(1),
    );
    assert_eq!(b.state, AvailabilityState::Available);
    let w = &b.declared_failures()[0];
    assert_eq!((w.start, w.end, w.end_declared), (earlier, Some(end), true));
}

#[tokio::test]
async fn latarnias_own_failures_are_typed_and_never_read_as_available() {
    let sim = ksef_sim::start(SimConfig::default()).await;
    let l = client(&sim);
    sim.latarnia().set_fault(Some(LatarniaFault::BadGateway));
    assert_eq!(l.status().await, Err(LatarniaError::Http { status: 502 }));
    assert_eq!(l.messages().await, Err(LatarniaError::Http { status: 502 }));
    sim.latarnia().set_fault(Some(LatarniaFault::GatewayTimeout));
    assert_eq!(l.status().await, Err(LatarniaError::Http { status: 504 }));
    sim.latarnia().set_fault(Some(LatarniaFault::Empty));
    assert_eq!(l.status().await, Err(LatarniaError::Empty));
    assert_eq!(l.messages().await, Err(LatarniaError::Empty));
    sim.latarnia().set_fault(None);
    sim.latarnia().set_status("PARTIAL_OUTAGE");
    assert_eq!(l.status().await, Err(LatarniaError::UnknownStatus("PARTIAL_OUTAGE".into())));
    // Nobody listening.
    let gone = LatarniaClient::new("http://127.0.0.1:9/latarnia", Duration::from_secs(2));
    assert!(matches!(gone.status().await, Err(LatarniaError::Transport(_))));
    assert!(sim.latarnia().requests() >= 6);
}

#[tokio::test]
async fn a_silent_outage_is_seen_by_the_probe_not_by_latarnia() {
    let sim = ksef_sim::start(SimConfig::default()).await;
    let env = Environment::Custom(sim.api_url());
    assert_eq!(probe_ksef(&env, Duration::from_secs(5)).await, Ok(()));
    // A 429 is KSeF answering: not evidence of an outage.
    sim.faults().set(vec!["burst429:1:2000".parse::<Fault>().unwrap()], 1);
    assert_eq!(probe_ksef(&env, Duration::from_secs(5)).await, Ok(()));
    // KSeF answers 503 to everything; Latarnia still says AVAILABLE.
    sim.faults().set(vec!["unavailable:1".parse::<Fault>().unwrap()], 1);
    let probe = probe_ksef(&env, Duration::from_secs(5)).await;
    assert_eq!(probe, Err("HTTP 503".into()));
    let reading = client(&sim).read().await;
    let evidence = OwnEvidence {
        probe: Some(probe),
        ..OwnEvidence::default()
    };
    let a = Availability::decide("CUSTOM", None, &reading, &evidence, Utc::now());
    assert_eq!(a.state, AvailabilityState::Degraded);
    assert!(a.holds_sending());
    assert!(matches!(a.source, AvailabilitySource::OwnEvidence { ref detail } if detail.contains("503")));
}
