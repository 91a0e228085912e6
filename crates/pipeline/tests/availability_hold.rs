//! Hold sending while KSeF is declared down: the poll reads the simulator's Latarnia, archives
//! each message version once and shares the availability; the send stage then holds the
//! document as a delayed message (no KSeF call, no attempt spent, a history line naming the
//! state and the Latarnia message), and sends it once the poll sees FAILURE_END: ACCEPTED,
//! exactly once in KSeF's ledger.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{client, invoice, world, World};
use ksef_client::{Environment, LatarniaClient};
use ksef_sim::latarnia::message;
use ksef_sim::Fault;
use relay_domain::memory::{MemoryArchive, MemorySharedCache};
use relay_domain::ports::{Archive, DocumentRegistry, SharedCache};
use relay_domain::{AvailabilityState, DocumentState};
use relay_pipeline::availability::{poll, PollPorts, PollTargets};
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::send::{send, AVAILABILITY_HELD};
use relay_pipeline::sessions::KsefContexts;

#[tokio::test]
async fn a_declared_failure_holds_sending_without_spending_attempts_and_delivery_follows_its_end() {
    let mut w = world(2).await;
    let env = Environment::Custom(w.sim.api_url());
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    w.ksef = KsefContexts::new()
        .with(World::nip(), client(&w.sim))
        .with_shared_cache(cache.clone())
        .with_availability(&env);
    let latarnia = LatarniaClient::for_environment(&env, Duration::from_secs(5)).unwrap();
    let archive = MemoryArchive::new();
    let ports = PollPorts {
        cache: cache.as_ref(),
        archive: &archive,
    };
    let targets = PollTargets {
        environment: &env,
        latarnia: Some(&latarnia),
        probe_timeout: Duration::from_secs(5),
    };

    // KSeF fails (every call 503) and Latarnia declares it. The held deliveries happen at the
    // times their delayed messages name, in the past of the real clock, so that the status
    // stage (on the real clock) follows the send at once.
    let t0 = Utc::now() - chrono::Duration::minutes(40);
    let start = t0 - chrono::Duration::minutes(10);
    w.sim.faults().set(vec!["unavailable:1".parse::<Fault>().unwrap()], 1);
    w.sim.latarnia().declare_failure("K/2026/AWR/02", "E-1", start);
    let first = poll(&ports, &targets, t0).await.unwrap();
    assert_eq!(first.availability.state, AvailabilityState::Failure);
    assert_eq!(first.archived, vec!["latarnia/CUSTOM/K_2F2026_2FAWR_2F02/v1.json".to_owned()]);
    assert!(first.shared);
    // A second poll archives nothing new.
    assert!(poll(&ports, &targets, t0).await.unwrap().archived.is_empty());

    let req = w.register(&invoice("HOLD/1")).await;
    let calls_before = w.sim.operation_counts().snapshot().iter().map(|c| c.count).sum::<u64>();
    let mut at = t0;
    for _ in 0..3 {
        let current = w.current_request(&req).await;
        let res = send(&w.send_ports(), &w.ksef, &w.cfg, &current, at).await.unwrap();
        assert_eq!(res.outcome, AVAILABILITY_HELD);
        let QueueAction::Replace { delay, .. } = res.action else {
            panic!("a delayed message, not {:?}", res.action)
        };
        assert!(delay >= Duration::from_secs(60), "{delay:?}");
        let r = res.record.unwrap();
        assert_eq!(
            (r.state, r.attempts, r.recoveries),
            (DocumentState::Queued, 0, 0),
            "no budget spent"
        );
        assert!(r.lease.is_none(), "not claimed");
        at = r.next_attempt_at.unwrap();
    }
    assert_eq!(
        w.sim.operation_counts().snapshot().iter().map(|c| c.count).sum::<u64>(),
        calls_before,
        "no KSeF call while held"
    );
    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    let held: Vec<String> = doc
        .history
        .iter()
        .map(|h| serde_json::to_string(&h.event).unwrap())
        .filter(|e| e.contains("sending held"))
        .collect();
    assert_eq!(held.len(), 3);
    assert!(
        held[0].contains("FAILURE") && held[0].contains("Latarnia message K/2026/AWR/02"),
        "{}",
        held[0]
    );

    // Republished with a higher version: archived once more.
    w.sim
        .latarnia()
        .publish(message("K/2026/AWR/02", "E-1", "FAILURE", "FAILURE_START", start, None, 2));
    let again = poll(&ports, &targets, at).await.unwrap();
    assert_eq!(again.archived, vec!["latarnia/CUSTOM/K_2F2026_2FAWR_2F02/v2.json".to_owned()]);
    assert_eq!(again.availability.since, start);

    // KSeF is back and Latarnia says so.
    w.sim.faults().set(vec![], 1);
    w.sim.latarnia().end_failure("K/2026/AWR/03", "E-1", start, at);
    let back = poll(&ports, &targets, at).await.unwrap();
    assert_eq!(back.availability.state, AvailabilityState::Available);
    assert_eq!(back.archived.len(), 1);
    let window = &back.availability.declared_failures()[0];
    assert_eq!((window.start, window.end_declared), (start, true));
    for v in [
        "latarnia/CUSTOM/K_2F2026_2FAWR_2F02/v1.json",
        "latarnia/CUSTOM/K_2F2026_2FAWR_2F03/v1.json",
    ] {
        assert!(archive.get(v).await.unwrap().is_some(), "{v}");
    }

    let current = w.current_request(&req).await;
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &current, Utc::now()).await.unwrap();
    assert_eq!(res.outcome, "SENT");
    assert_eq!(res.record.as_ref().unwrap().attempts, 0, "the hold charged nothing");
    let decided = w.poll_until_decided().await;
    assert_eq!(decided.record.unwrap().state, DocumentState::Accepted);
    assert_eq!(w.sim.ledger().entries().len(), 1);
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1, "exactly once");
}

#[tokio::test]
async fn a_silent_outage_holds_on_the_probe_and_a_poll_that_stops_cannot_hold_for_ever() {
    let mut w = world(2).await;
    let env = Environment::Custom(w.sim.api_url());
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    w.ksef = KsefContexts::new()
        .with(World::nip(), client(&w.sim))
        .with_shared_cache(cache.clone())
        .with_availability(&env);
    let latarnia = LatarniaClient::for_environment(&env, Duration::from_secs(5)).unwrap();
    let archive = MemoryArchive::new();
    let ports = PollPorts {
        cache: cache.as_ref(),
        archive: &archive,
    };
    let targets = PollTargets {
        environment: &env,
        latarnia: Some(&latarnia),
        probe_timeout: Duration::from_secs(5),
    };
    // Latarnia answers 502 and KSeF 503: only our own evidence sees it.
    w.sim.faults().set(vec!["unavailable:1".parse::<Fault>().unwrap()], 1);
    w.sim.latarnia().set_fault(Some(ksef_sim::LatarniaFault::BadGateway));
    let t0 = Utc::now();
    let p = poll(&ports, &targets, t0).await.unwrap();
    assert_eq!(p.availability.state, AvailabilityState::Degraded);
    assert_eq!(p.availability.latarnia_answered, Some(false));
    let req = w.register(&invoice("HOLD/2")).await;
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &req, t0).await.unwrap();
    assert_eq!(res.outcome, AVAILABILITY_HELD);
    assert_eq!(res.record.unwrap().attempts, 0);
    // No poll for longer than the state lives: sending is not held by a stale state.
    let late = t0 + relay_pipeline::availability::STATE_TTL + chrono::Duration::minutes(1);
    assert!(w.ksef.availability_hold(late).await.is_none());
}

#[tokio::test]
async fn a_silent_outage_between_polls_holds_after_a_bounded_run_of_failed_sends_and_the_probe_finds_ksef_back() {
    use relay_domain::availability::{failed_calls_cache_name, FailedCalls, FAILED_CALLS_DOWN};
    let mut w = world(10).await;
    let env = Environment::Custom(w.sim.api_url());
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    w.ksef = KsefContexts::new()
        .with(World::nip(), client(&w.sim))
        .with_shared_cache(cache.clone())
        .with_availability(&env);
    let latarnia = LatarniaClient::for_environment(&env, Duration::from_secs(5)).unwrap();
    let archive = MemoryArchive::new();
    let ports = PollPorts {
        cache: cache.as_ref(),
        archive: &archive,
    };
    let targets = PollTargets {
        environment: &env,
        latarnia: Some(&latarnia),
        probe_timeout: Duration::from_secs(5),
    };
    // The poll saw KSeF up; then KSeF answers 503 to everything and Latarnia says nothing.
    // Times in the past of the real clock, so that the status stage follows the sends at once.
    let t0 = Utc::now() - chrono::Duration::minutes(40);
    assert_eq!(
        poll(&ports, &targets, t0).await.unwrap().availability.state,
        AvailabilityState::Available
    );
    w.sim.faults().set(vec!["unavailable:1".parse::<Fault>().unwrap()], 1);
    let mut reqs = Vec::new();
    for i in 0..8 {
        reqs.push(w.register(&invoice(&format!("SILENT/{i}"))).await);
    }
    let calls = || w.sim.operation_counts().snapshot().iter().map(|c| c.count).sum::<u64>();
    let at = t0 + chrono::Duration::seconds(30);
    let mut outcomes = Vec::new();
    let mut calls_after_hold = None;
    for req in &reqs {
        let res = send(&w.send_ports(), &w.ksef, &w.cfg, req, at).await.unwrap();
        if res.outcome == AVAILABILITY_HELD && calls_after_hold.is_none() {
            calls_after_hold = Some(calls());
        }
        let r = res.record.unwrap();
        outcomes.push((res.outcome, r.attempts));
    }
    // The first FAILED_CALLS_DOWN sends met the 503 (one attempt each); the rest were held with
    // no KSeF call and no attempt spent.
    let down = FAILED_CALLS_DOWN as usize;
    assert!(outcomes[..down].iter().all(|o| *o == ("RETRY", 1)), "{outcomes:?}");
    assert!(outcomes[down..].iter().all(|o| *o == (AVAILABILITY_HELD, 0)), "{outcomes:?}");
    assert_eq!(calls(), calls_after_hold.unwrap(), "no KSeF call while held");
    let held = w.store.get(&reqs[down].document).await.unwrap().unwrap();
    let line = serde_json::to_string(&held.history).unwrap();
    assert!(
        line.contains("DEGRADED") && line.contains(&format!("{FAILED_CALLS_DOWN} KSeF calls failed")),
        "{line}"
    );
    // A retried one is held too when its time comes, without calling KSeF.
    let retried = w.current_request(&reqs[0]).await;
    let res = send(&w.send_ports(), &w.ksef, &w.cfg, &retried, at + chrono::Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!((res.outcome, res.record.unwrap().attempts), (AVAILABILITY_HELD, 1));
    assert_eq!(calls(), calls_after_hold.unwrap());

    // The next poll: its probe fails, the state says DEGRADED with the failed calls.
    let p = poll(&ports, &targets, t0 + chrono::Duration::minutes(5)).await.unwrap();
    assert_eq!(p.availability.state, AvailabilityState::Degraded);
    assert_eq!(p.availability.evidence.failed_calls, FAILED_CALLS_DOWN);
    // KSeF is back: the probe, not a send, finds it; the count is reset.
    w.sim.faults().set(vec![], 1);
    let back = poll(&ports, &targets, t0 + chrono::Duration::minutes(10)).await.unwrap();
    assert_eq!(back.availability.state, AvailabilityState::Available);
    let entry = cache
        .get(&failed_calls_cache_name("CUSTOM"), t0 + chrono::Duration::minutes(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::from_str::<FailedCalls>(&entry.value).unwrap(), FailedCalls::default());
    for req in &reqs {
        let current = w.current_request(req).await;
        let res = send(&w.send_ports(), &w.ksef, &w.cfg, &current, Utc::now()).await.unwrap();
        assert_eq!(res.outcome, "SENT", "{:?}", res.record.map(|r| r.last_error));
    }
    for _ in &reqs {
        assert_eq!(w.poll_until_decided().await.record.unwrap().state, DocumentState::Accepted);
    }
    assert_eq!(w.sim.ledger().entries().len(), reqs.len());
    for req in &reqs {
        assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1, "exactly once");
    }
}
