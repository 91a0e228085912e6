//! What the client writes to the logs during a whole flow: KSeF's X-System-Warning is there,
//! and no secret (KSeF token, access or refresh token) and no invoice content ever is.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use ksef_client::SendOptions;
use ksef_sim::SimConfig;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn warnings_are_logged_and_secrets_and_invoices_never_are() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let warning = "[1001]: Pole X jest przestarzałe | [1002]: Inne ostrzeżenie";
    let sim = ksef_sim::start(SimConfig {
        system_warning: Some(warning.into()),
        ..sim_config()
    })
    .await;
    let c = client(&sim);
    let xml = invoice("LOGS/SECRET-INVOICE-NUMBER-77");
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &xml, &SendOptions::default()).await.unwrap();
    c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    sim.expire_access_tokens();
    c.close_online_session(&s.reference).await.unwrap(); // a 401, a refresh, a retry
    let tokens = c.tokens().await.unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("X-System-Warning") && text.contains("[1001]: Pole X jest przestarzałe"),
        "{text}"
    );
    for secret in [
        ksef_sim::DEFAULT_TOKEN,
        tokens.access.expose_secret(),
        tokens.refresh.expose_secret(),
        "SECRET-INVOICE-NUMBER-77",
        "ABC AGD",
    ] {
        assert!(!text.contains(secret), "the logs contain {secret:?}");
    }
    // The simulator logs too (same subscriber): its lines must be as clean.
    assert!(!text.is_empty());
}
