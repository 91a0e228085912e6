//! A technical correction of a rejected offline invoice (API-NOTES §10) against the simulator:
//! the `reject-offline` scenario rejects the offline original (450), the correction naming its
//! hash is accepted with `hashOfCorrectedInvoice` in the ledger, a second correction is the
//! typed `AlreadyAccepted` (21166), and one naming an invoice that was not a rejected offline
//! invoice is a permanent 21167.

mod common;

use common::*;
use ksef_client::failure_map::{invoice_outcome, InvoiceOutcome};
use ksef_client::{CorrectionSent, SendOptions};
use ksef_sim::{Fault, SimConfig};
use relay_domain::{ContentHash, ErrorClass};

const OFFLINE: SendOptions = SendOptions {
    offline_mode: true,
    hash_of_corrected_invoice: None,
};

#[tokio::test]
async fn a_rejected_offline_invoice_is_corrected_once() {
    let sim = ksef_sim::start(SimConfig {
        faults: vec!["reject-offline".parse::<Fault>().unwrap()],
        seed: 7,
        ..sim_config()
    })
    .await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let original = invoice("F/TC/1");
    let sent = c.send_invoice(&s, &original, &OFFLINE).await.unwrap();
    let st = until_decided(&c, &s.reference, &sent.reference).await;
    let InvoiceOutcome::Failed(f) = invoice_outcome("invoice_status", &st) else {
        panic!("the offline original must be rejected: {st:?}")
    };
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Permanent, Some("450")));

    // The corrected file: other bytes (a whitespace fix), the same business content.
    let mut corrected = original.clone();
    corrected.extend_from_slice(b"\n");
    let rejected_hash = ContentHash::of(&original);
    let CorrectionSent::Sent(fix) = c.send_technical_correction(&s, &corrected, rejected_hash).await.unwrap() else {
        panic!("the first correction is taken")
    };
    let st = until_decided(&c, &s.reference, &fix.reference).await;
    assert!(
        matches!(invoice_outcome("invoice_status", &st), InvoiceOutcome::Accepted { .. }),
        "{st:?}"
    );
    let ledger = sim.ledger().entries();
    assert_eq!(ledger.len(), 1, "only the correction is in KSeF");
    assert_eq!(ledger[0].invoice_hash, ContentHash::of(&corrected));
    assert_eq!(ledger[0].hash_of_corrected_invoice, Some(rejected_hash));
    assert!(ledger[0].offline_requested);

    // KSeF takes one correction per invoice: a second is answered 21166, typed.
    let mut again = corrected.clone();
    again.extend_from_slice(b"\n");
    match c.send_technical_correction(&s, &again, rejected_hash).await.unwrap() {
        CorrectionSent::AlreadyAccepted(f) => assert_eq!(f.code.as_deref(), Some("21166")),
        other => panic!("a second correction must be refused as already accepted: {other:?}"),
    }
    // Naming the accepted correction (not a rejected offline invoice) is 21167, permanent.
    let f = c
        .send_technical_correction(&s, &again, ContentHash::of(&corrected))
        .await
        .unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Permanent, Some("21167")));
    assert_eq!(sim.ledger().len(), 1);
}

#[tokio::test]
async fn a_correction_of_an_unknown_or_online_invoice_is_21167() {
    let sim = sim().await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    // An online invoice, accepted: not correctable.
    let online = invoice("F/TC/2");
    let sent = c.send_invoice(&s, &online, &SendOptions::default()).await.unwrap();
    until_decided(&c, &s.reference, &sent.reference).await;
    let mut fixed = online.clone();
    fixed.extend_from_slice(b"\n");
    for target in [ContentHash::of(&online), ContentHash::of(b"never sent")] {
        let f = c.send_technical_correction(&s, &fixed, target).await.unwrap_err();
        assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Permanent, Some("21167")), "{target}");
    }
    assert_eq!(sim.ledger().len(), 1);
}
