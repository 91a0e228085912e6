//! Each fault scenario of the simulator, and the class the client maps it to. The faults are
//! narrowed to the operation under test (`@path`), so authentication keeps working.

mod common;

use std::time::Duration;

use common::*;
use ksef_client::failure_map::InvoiceOutcome;
use ksef_client::{ClientLimits, KsefClient, SendOptions};
use ksef_sim::{Fault, Group, Limit, RateLimits, SimConfig};
use relay_domain::ErrorClass;

/// A simulator with one fault switched on from the start (as `ksef-relay sim --fault` does).
async fn sim_with(fault: &str) -> ksef_sim::SimHandle {
    ksef_sim::start(SimConfig {
        faults: vec![fault.parse::<Fault>().unwrap()],
        seed: 7,
        ..sim_config()
    })
    .await
}

#[tokio::test]
async fn service_unavailable_is_transient() {
    let sim = sim_with("unavailable:1@/invoices").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let f = c.send_invoice(&s, &invoice("F/503"), &SendOptions::default()).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Transient, Some("503")));
    assert!(sim.ledger().is_empty());
}

#[tokio::test]
async fn a_slow_answer_past_the_client_timeout_is_transient_and_reconciled_by_hash() {
    // The send's answer comes 6 s late; only the send is made by a client whose patience (3 s)
    // ends first (a short timeout on every call made the login time out on a loaded machine).
    let sim = sim_with("slow:1:6000@/invoices").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let impatient = KsefClient::new(
        ksef_client::ClientConfig {
            timeout: Duration::from_secs(3),
            ..client_config(&sim)
        },
        Some(credentials()),
    )
    .unwrap();
    impatient.set_tokens(c.tokens().await.expect("logged in")).await;
    let xml = invoice("F/SLOW");
    let f = impatient.send_invoice(&s, &xml, &SendOptions::default()).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Transient, Some("timeout")));
    // The request did arrive: the session's list shows it by hash, so no resend is needed.
    sim.faults().clear();
    let deadline = std::time::Instant::now() + WAIT;
    while c
        .find_invoice_by_hash(&s.reference, &relay_domain::ContentHash::of(&xml))
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow send was processed and is found by its hash"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_connection_reset_is_transient() {
    let sim = sim_with("reset:1@/invoices").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let f = c.send_invoice(&s, &invoice("F/RESET"), &SendOptions::default()).await.unwrap_err();
    assert_eq!(f.class, ErrorClass::Transient, "{f}");
    assert_eq!(f.code.as_deref(), Some("network"), "{f}");
    // The connection is gone, the server is not: the next call works.
    sim.faults().clear();
    c.send_invoice(&s, &invoice("F/RESET"), &SendOptions::default()).await.unwrap();
}

#[tokio::test]
async fn status_550_is_transient_and_405_style_errors_are_not_permanent() {
    let sim = sim_with("status550:1").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &invoice("F/550"), &SendOptions::default()).await.unwrap();
    let (_, o) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    let InvoiceOutcome::Failed(f) = o else { panic!("{o:?}") };
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Transient, Some("550")));
    assert!(sim.ledger().is_empty());
}

#[tokio::test]
async fn an_invoice_stuck_in_150_stays_pending() {
    let sim = sim_with("stuck150:1").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &invoice("F/STUCK"), &SendOptions::default()).await.unwrap();
    let f = c
        .wait_for_invoice(&s.reference, &sent.reference, POLL, Duration::from_millis(400))
        .await
        .unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Transient, Some("150")));
    let st = c.invoice_status(&s.reference, &sent.reference).await.unwrap();
    assert_eq!(st.status.code, 150);
    assert_eq!(
        ksef_client::failure_map::invoice_outcome("invoice_status", &st),
        InvoiceOutcome::Pending
    );
    // A session with a stuck invoice does not finish processing either.
    c.close_online_session(&s.reference).await.unwrap();
    assert_eq!(c.session_status(&s.reference).await.unwrap().status.code, 170);
}

#[tokio::test]
async fn a_close_that_times_out_did_close_and_a_retry_says_so() {
    // The close's answer comes 6 s late; only the close is made by a client whose patience
    // (3 s) ends first. (Giving every call a short timeout made the login itself time out on a
    // loaded machine.)
    let sim = sim_with("close-timeout::6000").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let impatient = KsefClient::new(
        ksef_client::ClientConfig {
            timeout: Duration::from_secs(3),
            ..client_config(&sim)
        },
        Some(credentials()),
    )
    .unwrap();
    impatient.set_tokens(c.tokens().await.expect("logged in")).await;
    let f = impatient.close_online_session(&s.reference).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Transient, Some("timeout")));
    // KSeF did close it (the simulator answers late, after doing the work): no longer 100
    // (open); an empty session closes as 440.
    let deadline = std::time::Instant::now() + WAIT;
    while c.session_status(&s.reference).await.unwrap().status.code == 100 {
        assert!(std::time::Instant::now() < deadline, "the session never closed");
        tokio::time::sleep(POLL).await;
    }
    // Closing is safe to retry: 21180 means it is closed already. A refused close answers at
    // once, the fault still set: only a close KSeF takes is slow (a refusal delayed past every
    // client's timeout left a batch whose part never arrived unclosable for ever).
    let f = impatient.close_online_session(&s.reference).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::NeedsNewSession, Some("21180")));
    sim.faults().clear();
}

#[tokio::test]
async fn intermittent_435_is_permanent_for_that_send() {
    // Half the invoices fail decryption (seeded): the statuses say which.
    let sim = ksef_sim::start(SimConfig {
        faults: vec![Fault::Decryption435 { rate: 0.5 }],
        seed: 3,
        ..sim_config()
    })
    .await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let mut codes = Vec::new();
    for i in 0..8 {
        let sent = c
            .send_invoice(&s, &invoice(&format!("F/435/{i}")), &SendOptions::default())
            .await
            .unwrap();
        let (_, o) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
        codes.push(match o {
            InvoiceOutcome::Accepted { .. } => 200,
            InvoiceOutcome::Failed(f) => {
                assert_eq!(f.class, ErrorClass::Permanent);
                f.code.unwrap().parse().unwrap()
            }
            InvoiceOutcome::Pending => unreachable!(),
        });
    }
    assert!(codes.contains(&200) && codes.contains(&435), "{codes:?}");
    assert_eq!(sim.ledger().len(), codes.iter().filter(|c| **c == 200).count());
}

#[tokio::test]
async fn a_late_upo_is_transient_until_it_exists() {
    let sim = sim_with("upo-late::600").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &invoice("F/UPO"), &SendOptions::default()).await.unwrap();
    let (st, o) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    assert!(matches!(o, InvoiceOutcome::Accepted { .. }));
    let f = c.download_upo(st.upo_download_url.as_deref().unwrap()).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Transient, Some("404")));
    let f = c.invoice_upo(&s.reference, &sent.reference).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Transient, Some("21178")));
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.download_upo(st.upo_download_url.as_deref().unwrap()).await.unwrap();
    c.invoice_upo(&s.reference, &sent.reference).await.unwrap();
}

#[tokio::test]
async fn a_429_burst_is_rate_limited_until_retry_after() {
    let sim = sim_with("burst429:1:30000@/invoices").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let before = chrono::Utc::now();
    let f = c.send_invoice(&s, &invoice("F/429"), &SendOptions::default()).await.unwrap_err();
    let ErrorClass::RateLimited { until } = f.class else {
        panic!("{f}")
    };
    let wait = (until - before).num_seconds();
    assert!((29..=31).contains(&wait), "Retry-After 30 s gave {wait} s");
    assert_eq!(f.code.as_deref(), Some("429"));
    assert!(f.details[0].contains("Spróbuj ponownie"), "{f}");
}

#[tokio::test]
async fn a_429_on_the_upo_link_keeps_its_retry_after() {
    // The UPO link is fetched without the token and outside the API's paths; its 429 must still
    // carry KSeF's Retry-After, not a default guess (which once stalled a poller for a minute).
    let sim = sim_with("burst429:1:2000@/storage/upo").await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &invoice("F/UPO429"), &SendOptions::default()).await.unwrap();
    let (st, _) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    let before = chrono::Utc::now();
    let f = c.download_upo(st.upo_download_url.as_deref().unwrap()).await.unwrap_err();
    let ErrorClass::RateLimited { until } = f.class else {
        panic!("{f}")
    };
    let wait = (until - before).num_milliseconds();
    assert!((1000..=3000).contains(&wait), "Retry-After 2 s gave {wait} ms");
}

#[tokio::test]
async fn the_simulator_s_own_limits_answer_429_to_a_client_that_ignores_them() {
    // invoiceSend at 3 per second; the client's own limiter is off.
    let limits = RateLimits::production().with(Group::InvoiceSend, Limit::new(3, 30, 180));
    let sim = ksef_sim::start(SimConfig {
        rate_limits: limits,
        time_scale: 1.0,
        ..sim_config()
    })
    .await;
    let c = KsefClient::new(
        ksef_client::ClientConfig {
            limits: ClientLimits::disabled(),
            ..client_config(&sim)
        },
        Some(credentials()),
    )
    .unwrap();
    let s = c.open_online_session().await.unwrap();
    let mut limited = None;
    for i in 0..4 {
        match c.send_invoice(&s, &invoice(&format!("F/RL/{i}")), &SendOptions::default()).await {
            Ok(_) => {}
            Err(f) => {
                limited = Some((i, f));
                break;
            }
        }
    }
    let (i, f) = limited.expect("the fourth send within a second is refused");
    assert_eq!(i, 3);
    let ErrorClass::RateLimited { until } = f.class else {
        panic!("{f}")
    };
    assert!(until > chrono::Utc::now());
    assert!(f.details[0].contains("Przekroczono limit 3"), "{f}");
}

#[tokio::test]
async fn a_client_keeping_the_official_limits_never_meets_429_through_a_simulated_hour() {
    // Both sides at 3600x: one simulated hour of invoiceSend (180 allowed) passes in a second.
    // The client sends 200 back to back; its limiter spaces them so none is refused, and the
    // 181st waits for the hour window. At this scale the minute window is 17 ms real, so the
    // client keeps a 25% margin (2% in production) against scheduling jitter on a busy machine.
    let sim = ksef_sim::start(SimConfig {
        time_scale: 3600.0,
        accept_delay: Duration::from_millis(5),
        processing_delay: Duration::from_millis(5),
        ..sim_config()
    })
    .await;
    let limits = ClientLimits::official().scaled(3600.0).with_margin(0.25);
    let c = KsefClient::new(
        ksef_client::ClientConfig {
            limits,
            ..client_config(&sim)
        },
        Some(credentials()),
    )
    .unwrap();
    let s = c.open_online_session().await.unwrap();
    let body_xml = invoice("F/HOUR");
    let start = std::time::Instant::now();
    for _ in 0..200 {
        if let Err(f) = c.send_invoice(&s, &body_xml, &SendOptions::default()).await {
            panic!("refused: {f}");
        }
    }
    // Without the limiter the simulator would have refused the 181st send within the hour.
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "200 sends passed in {:?}: the hour window was not kept",
        start.elapsed()
    );
}
