//! What changed in KSeF in 2026 (API-NOTES §15), against the simulator over HTTP: closing a
//! session has its own rate-limit groups, `GET /rate-limits` says what is in force, error 21184
//! means "open a new session and go on", batch packages have KSeF's limits with their codes, and
//! the links KSeF hands out name a host the caller can reach.

mod common;

use common::*;
use ksef_client::{ClientConfig, ClientLimits, EndpointGroup, Environment, KsefClient, Limit, SendOptions};
use ksef_sim::{Fault, Group, RateLimits, SimConfig};
use relay_domain::ErrorClass;

#[tokio::test]
async fn rate_limits_reports_every_group_with_the_close_groups_of_september_2026() {
    let sim = sim().await;
    let c = client(&sim);
    let effective = c.effective_rate_limits().await.unwrap();
    assert_eq!(effective.limit(EndpointGroup::OnlineSession), Some(Limit::new(10, 30, 120)));
    assert_eq!(effective.limit(EndpointGroup::OnlineSessionClose), Some(Limit::new(20, 60, 240)));
    assert_eq!(effective.limit(EndpointGroup::BatchSession), Some(Limit::new(10, 20, 60)));
    assert_eq!(effective.limit(EndpointGroup::BatchSessionClose), Some(Limit::new(20, 40, 120)));
    assert_eq!(effective.limit(EndpointGroup::InvoiceSend), Some(Limit::new(10, 30, 180)));
    // The spec's required groups the simulator does not serve are there too.
    for name in [
        "invoiceMetadata",
        "invoiceExport",
        "invoiceExportStatus",
        "invoiceDownload",
        "other",
        "sessionMisc",
    ] {
        assert!(effective.groups.contains_key(name), "{name} missing from {effective:?}");
    }
    // The published table and the simulator agree: seeding changes nothing.
    assert_eq!(ClientLimits::official().seeded_from(&effective), ClientLimits::official());
}

#[tokio::test]
async fn a_client_seeded_from_rate_limits_keeps_to_a_lowered_limit() {
    // KSeF lowered this context's online sends (say, after abuse): the client learns it.
    let sim = ksef_sim::start(SimConfig {
        rate_limits: RateLimits::production().with(Group::InvoiceSend, ksef_sim::Limit::new(2, 4, 6)),
        ..sim_config()
    })
    .await;
    let effective = client(&sim).effective_rate_limits().await.unwrap();
    let seeded = ClientLimits::official().seeded_from(&effective);
    assert_eq!(seeded.groups[&EndpointGroup::InvoiceSend], Limit::new(2, 4, 6));
    assert_eq!(
        seeded.groups[&EndpointGroup::InvoiceStatus],
        Limit::new(30, 120, 1200),
        "the others stay"
    );
    // A report from before September 2026 (no close groups): closing counts as opening.
    let old = ksef_client::EffectiveRateLimits {
        groups: [("onlineSession".to_owned(), Limit::new(10, 30, 120))].into_iter().collect(),
    };
    assert_eq!(old.limit(EndpointGroup::OnlineSessionClose), Some(Limit::new(10, 30, 120)));
}

#[tokio::test]
async fn closing_a_session_does_not_spend_the_opening_budget() {
    // One opening an hour: before September 2026 the close shared that group and met 429.
    let sim = ksef_sim::start(SimConfig {
        rate_limits: RateLimits::production().with(Group::OnlineSession, ksef_sim::Limit::new(1, 1, 1)),
        ..sim_config()
    })
    .await;
    let c = KsefClient::new(
        ClientConfig {
            limits: ClientLimits::disabled(),
            ..client_config(&sim)
        },
        Some(credentials()),
    )
    .unwrap();
    let s = c.open_online_session().await.unwrap();
    c.close_online_session(&s.reference).await.expect("the close has its own group");
    let f = c.open_online_session().await.unwrap_err();
    assert!(
        matches!(f.class, ErrorClass::RateLimited { .. }),
        "the second opening is over the limit: {f:?}"
    );
}

#[tokio::test]
async fn error_21184_asks_for_a_new_session_and_the_invoice_goes_in_the_next_one() {
    let sim = ksef_sim::start(SimConfig {
        faults: vec!["session21184:1".parse::<Fault>().unwrap()],
        ..sim_config()
    })
    .await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let xml = invoice("F/21184");
    let f = c.send_invoice(&s, &xml, &SendOptions::default()).await.unwrap_err();
    assert_eq!(
        (f.class.clone(), f.code.as_deref()),
        (ErrorClass::NeedsNewSession, Some("21184")),
        "{f:?}"
    );
    assert!(sim.ledger().is_empty(), "KSeF did not take it");
    sim.faults().clear();
    let next = c.open_online_session().await.unwrap();
    assert_ne!(next.reference, s.reference);
    let sent = c.send_invoice(&next, &xml, &SendOptions::default()).await.unwrap();
    assert_eq!(until_decided(&c, &next.reference, &sent.reference).await.status.code, 200);
    assert_eq!(sim.ledger().count_hash(&relay_domain::ContentHash::of(&xml)), 1);
}

#[tokio::test]
async fn a_package_over_fifty_parts_is_refused_with_21161() {
    let sim = sim().await;
    let c = client(&sim);
    let token = c.access_token().await.unwrap();
    let part = serde_json::json!({"ordinalNumber": 1, "fileSize": 10, "fileHash": relay_domain::ContentHash::of(b"x").to_base64()});
    let parts: Vec<_> = (1..=51)
        .map(|n| {
            let mut p = part.clone();
            p["ordinalNumber"] = n.into();
            p
        })
        .collect();
    let body = serde_json::json!({
        "formCode": {"systemCode": "FA (3)", "schemaVersion": "1-0E", "value": "FA"},
        "batchFile": {"fileSize": 510, "fileHash": relay_domain::ContentHash::of(b"x").to_base64(), "fileParts": parts},
        "encryption": {"encryptedSymmetricKey": "AA==", "initializationVector": "AA=="},
    });
    let answer = reqwest::Client::new()
        .post(format!("{}/sessions/batch", sim.api_url()))
        .bearer_auth(token.expose_secret())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["exception"]["exceptionDetailList"][0]["exceptionCode"], 21161, "{body}");
}

#[tokio::test]
async fn links_name_the_host_the_client_called() {
    let sim = sim().await;
    // The simulator listens on 127.0.0.1; the client calls it by another name.
    let port = sim.local_url().rsplit(':').next().unwrap().to_owned();
    let c = KsefClient::new(
        ClientConfig {
            environment: Environment::Custom(format!("http://localhost:{port}/v2")),
            ..client_config(&sim)
        },
        Some(credentials()),
    )
    .unwrap();
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &invoice("F/HOST"), &SendOptions::default()).await.unwrap();
    let status = until_decided(&c, &s.reference, &sent.reference).await;
    let url = status.upo_download_url.expect("a UPO link");
    assert!(url.starts_with(&format!("http://localhost:{port}/")), "{url}");
    c.download_upo(&url).await.expect("the link works from where the client stands");
}
