//! # ksef-sim: a faithful KSeF API 2.0 simulator
//!
//! The relay's only outside party is KSeF, and the real TEST environment cannot fail on demand.
//! This crate serves the part of the official API (data/ksef/openapi/open-api.json) the relay
//! uses, under the spec's paths (`/v2/...`), field names, status codes and error bodies, with
//! real crypto: its own RSA keys and self-signed certificates, RSA-OAEP-SHA256 token and key
//! unwrapping, AES-256-CBC invoice decryption, size and hash checks. It validates each invoice
//! (basic form, see [`invoice_check`]), detects duplicates on seller NIP + RodzajFaktury + P_2,
//! assigns KSeF numbers with a valid CRC-8, produces UPO v4-3 XML, counts rate limits per
//! (context, IP) in sliding windows and plays seeded fault scenarios.
//!
//! Embed it in a test:
//!
//! ```no_run
//! # async fn demo() {
//! let sim = ksef_sim::start(ksef_sim::SimConfig::default()).await;
//! let api = sim.api_url(); // http://127.0.0.1:PORT/v2
//! // ... drive the client against `api` ...
//! assert!(sim.ledger().entries().iter().all(|e| sim.ledger().count_hash(&e.invoice_hash) == 1));
//! # }
//! ```
//!
//! Layout: [`config`] (settings), [`keys`] (RSA keys, certificates), `http_*` (one file per
//! area of the API, plus `/_sim` admin), `server` (routes, the middleware that plays faults and
//! limits, the accept loop), `state` (sessions, invoices, the 100 → 150 → final step),
//! [`ledger`], [`faults`], [`rate_limit`], [`invoice_check`], [`upo`], [`xades_verify`]
//! (certificate login: the XAdES signature checked for real). README.md has the CLI and the
//! admin endpoints.
//!
//! The key design decision: an invoice's fate is decided when it arrives (decryption, checks,
//! fault dice) but revealed on KSeF's schedule, and duplicates and KSeF numbers are settled at
//! the final step in arrival order, so what a test sees is both realistic and deterministic.

mod aes_cbc;
mod api_error;
pub mod config;
pub mod exchange_log;
pub mod faults;
mod http_admin;
mod http_auth;
mod http_batch;
mod http_sessions;
pub mod invoice_check;
pub mod keys;
pub mod latarnia;
pub mod ledger;
pub mod operation_counts;
pub mod rate_limit;
mod server;
mod state;
pub mod upo;
pub mod xades_verify;

use std::sync::{Arc, Mutex, RwLock};

pub use config::{KeySource, SimConfig, SimToken, DEFAULT_TOKEN};
pub use exchange_log::Exchange;
pub use faults::{Fault, FaultSwitch};
pub use latarnia::{Latarnia, LatarniaFault, LatarniaMessage};
pub use ledger::{Ledger, LedgerEntry};
pub use operation_counts::{OperationCount, OperationCounts};
pub use rate_limit::{Arrival, Group, Limit, RateLimits};
pub use state::CertificateLogin;

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    base_url: String,
    local: std::net::SocketAddr,
    sim: Arc<state::Sim>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The API root the client talks to: `{base_url}/v2`.
    pub fn api_url(&self) -> String {
        format!("{}/v2", self.base_url)
    }

    /// Where the simulator itself listens (differs from [`SimHandle::api_url`] when a
    /// `public_base_url` puts a proxy in front of it).
    pub fn local_url(&self) -> String {
        format!("http://{}", self.local)
    }

    pub fn ledger(&self) -> Ledger {
        self.sim.ledger.clone()
    }

    /// The simulator's Latarnia (status service): set its status, publish messages, play faults.
    pub fn latarnia(&self) -> Latarnia {
        self.sim.latarnia.clone()
    }

    /// Latarnia's root on this simulator: `{base_url}/latarnia` (`/status`, `/messages`).
    pub fn latarnia_url(&self) -> String {
        format!("{}/latarnia", self.base_url)
    }

    pub fn faults(&self) -> FaultSwitch {
        self.sim.faults.clone()
    }

    /// How many requests were answered, per operation and status (always kept).
    pub fn operation_counts(&self) -> OperationCounts {
        self.sim.operations.clone()
    }

    /// Every request the rate limiter counted, with its arrival time and whether it passed:
    /// what KSeF's sliding windows saw, to compare with a client's reservations.
    pub fn rate_arrivals(&self) -> Vec<Arrival> {
        self.sim.limiter.arrivals()
    }

    /// Every response so far (only when `record_exchanges` was set).
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.sim.exchanges.all()
    }

    /// An emergency key rotation: both `publicKeyId`s change; the old ones get 21470.
    pub fn rotate_keys(&self) {
        self.sim
            .keys
            .write()
            .expect("keys lock")
            .rotate()
            .expect("re-certifying a loaded key");
    }

    /// All access tokens stop working (401); refresh tokens still work.
    pub fn expire_access_tokens(&self) {
        self.sim.expire_access_tokens();
    }

    /// All refresh tokens are revoked (21301) and access tokens expire: a full re-auth is needed.
    pub fn revoke_refresh_tokens(&self) {
        self.sim.revoke_refresh_tokens();
    }

    /// Revokes a certificate (SHA-256 of its DER, hex): its logins from now on end with auth
    /// status 460, as KSeF answers a revoked KSeF certificate. Tokens already issued stay valid
    /// until they expire, as in KSeF.
    pub fn revoke_certificate(&self, fingerprint: &str) {
        self.sim
            .store
            .lock()
            .expect("store lock")
            .revoked_certificates
            .insert(fingerprint.to_ascii_uppercase());
    }

    /// Every XAdES login whose signature verified so far: the certificate, the context and
    /// the auth status given.
    pub fn certificate_logins(&self) -> Vec<CertificateLogin> {
        self.sim.store.lock().expect("store lock").certificate_logins.clone()
    }

    pub fn config(&self) -> &SimConfig {
        &self.sim.cfg
    }

    /// Waits until the server task ends (it does not end on its own; for the binary).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts a simulator; panics if it cannot (tests want a loud failure). See [`try_start`].
pub async fn start(config: SimConfig) -> SimHandle {
    try_start(config).await.expect("starting the KSeF simulator")
}

/// Starts a simulator on `config.addr` and returns once it accepts connections.
pub async fn try_start(config: SimConfig) -> anyhow::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let local = listener.local_addr()?;
    let base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"))
        .trim_end_matches('/')
        .to_owned();
    let keys = keys::SimKeys::load(&config.keys)?;
    // Scripted outages count from here, in simulated seconds.
    let faults = FaultSwitch::new(config.faults.clone(), config.seed).with_clock(std::time::Instant::now(), config.time_scale);
    let latarnia = Latarnia::default();
    let now = chrono::Utc::now();
    let at = |sim_s: f64| {
        now + chrono::Duration::from_std(std::time::Duration::from_secs_f64(sim_s / config.time_scale.max(1e-6))).unwrap_or_default()
    };
    for f in &config.faults {
        if let Fault::Outage {
            start_s,
            end_s,
            announced: true,
        } = f
        {
            latarnia.script_failure(at(*start_s), at(*end_s));
        }
    }
    let sim = Arc::new(state::Sim {
        base_url: base_url.clone(),
        keys: RwLock::new(keys),
        store: Mutex::new(state::Store::default()),
        ledger: Ledger::default(),
        faults,
        limiter: rate_limit::RateLimiter::new(config.rate_limits.clone(), config.time_scale),
        exchanges: exchange_log::ExchangeLog::new(config.record_exchanges),
        operations: OperationCounts::default(),
        latarnia,
        cfg: config,
    });
    let task = server::serve(listener, server::router(sim.clone()), sim.clone());
    Ok(SimHandle {
        base_url,
        local,
        sim,
        task: Some(task),
    })
}
