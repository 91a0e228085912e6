//! Shared test setup: a simulator on loopback and a client pointed at it, both at the same
//! time scale so an hour of rate limits passes in seconds.

#![allow(dead_code)]

use std::time::Duration;

use ksef_client::{ClientConfig, ClientLimits, Credentials, Environment, KsefClient, KsefToken};
use ksef_sim::{SimConfig, SimHandle};
use relay_domain::Nip;

/// Simulated seconds per real second, for the simulator's windows and the client's limiter.
pub const TIME_SCALE: f64 = 1000.0;
pub const POLL: Duration = Duration::from_millis(20);
pub const WAIT: Duration = Duration::from_secs(10);

pub fn sim_config() -> SimConfig {
    SimConfig {
        time_scale: TIME_SCALE,
        auth_delay: Duration::from_millis(20),
        accept_delay: Duration::from_millis(20),
        processing_delay: Duration::from_millis(20),
        ..SimConfig::default()
    }
}

pub async fn sim() -> SimHandle {
    ksef_sim::start(sim_config()).await
}

pub fn client_config(sim: &SimHandle) -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        limits: ClientLimits::official().scaled(TIME_SCALE),
        auth_poll_interval: Duration::from_millis(10),
        auth_poll_timeout: Duration::from_secs(5),
        ..ClientConfig::new(Environment::Custom(sim.api_url()))
    }
}

pub fn credentials() -> Credentials {
    Credentials::Token {
        context: Nip::parse("9999999999").unwrap(),
        token: KsefToken::new(ksef_sim::DEFAULT_TOKEN),
    }
}

pub fn client(sim: &SimHandle) -> KsefClient {
    KsefClient::new(client_config(sim), Some(credentials())).unwrap()
}

pub fn samples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef/samples")
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(samples_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every official sample invoice (file name, bytes), plus the PDF generator's example.
pub fn all_samples() -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(samples_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    names.push("cirfmf-templates/ksef-pdf-generator-invoice.xml".into());
    names.into_iter().map(|n| (n.clone(), sample(&n))).collect()
}

/// Sample 1 with its own invoice number (P_2), so each is a distinct business identity.
pub fn invoice(number: &str) -> Vec<u8> {
    let text = String::from_utf8(sample("FA_3_Przykład_1.xml")).unwrap();
    let out = text.replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{number}</P_2>"));
    assert_ne!(out, text);
    out.into_bytes()
}

/// Polls an invoice's status until KSeF decides (not 100/150), within [`WAIT`].
pub async fn until_decided(c: &KsefClient, session: &str, invoice: &str) -> ksef_client::InvoiceStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = c.invoice_status(session, invoice).await.unwrap();
        if !matches!(status.status.code, 100 | 150) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "no decision within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
}
