//! The simulator's settings: where it listens, who may log in, how fast things move, which
//! limits apply and which faults are switched on at start.

use std::net::SocketAddr;
use std::time::Duration;

use relay_domain::Nip;

use crate::faults::Fault;
use crate::rate_limit::RateLimits;

/// A KSeF token the simulator accepts, and the context it logs into.
#[derive(Clone)]
pub struct SimToken {
    pub token: String,
    pub context: Nip,
}

impl std::fmt::Debug for SimToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential even in a simulator: configs get logged.
        f.debug_struct("SimToken")
            .field("token", &"<redacted>")
            .field("context", &self.context)
            .finish()
    }
}

/// Which RSA keys the simulator publishes.
#[derive(Debug, Clone, Default)]
pub enum KeySource {
    /// The two RSA-2048 keys checked into `crates/ksef-sim/keys/` (fast start; for tests).
    #[default]
    Bundled,
    /// Fresh keys for this run (slow in debug builds: RSA key generation).
    Generate,
}

/// Everything [`crate::start`] needs. `SimConfig::default()` is a working simulator with the
/// production rate limits, short processing delays and one token for NIP 9999999999.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The base URL the simulator writes into links it returns (UPO, batch parts). None means
    /// `http://{bound address}`.
    pub public_base_url: Option<String>,
    pub tokens: Vec<SimToken>,
    /// Certificates (SHA-256 fingerprint, uppercase hex) allowed into a context when the
    /// request says `certificateFingerprint`. With `certificateSubject`, a certificate whose
    /// subject carries `VATPL-{nip}` (organizationIdentifier) or `TINPL-{nip}` (serialNumber)
    /// may log into that NIP, as KSeF does for seals and personal certificates.
    pub certificate_fingerprints: Vec<(String, Nip)>,
    pub keys: KeySource,
    /// How long an auth operation stays in status 100 before 200.
    pub auth_delay: Duration,
    /// A closed batch's archive is unpacked and checked after the close has answered (as KSeF
    /// does; the session reads 150 meanwhile) instead of inside the close request. Off by
    /// default: the crash-point suite counts each stage's calls and needs the synchronous,
    /// deterministic close; `ksef-relay run`/`load` turn it on (thousands of invoices checked
    /// inside the close outlast a client's timeout).
    pub batch_processing_after_close: bool,
    /// How long an invoice stays in 100, then in 150, before its final status.
    pub accept_delay: Duration,
    pub processing_delay: Duration,
    /// How long a session stays open before KSeF closes it (12 h in KSeF).
    pub session_lifetime: Duration,
    /// Invoices allowed in one session (10,000 by default in KSeF; 21155 beyond).
    pub max_invoices_per_session: usize,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub rate_limits: RateLimits,
    /// Simulated seconds per real second for rate-limit windows: 3600 lets a test live
    /// through an hour of limits in one second.
    pub time_scale: f64,
    /// Faults active from the start; the admin endpoint can change them later.
    pub faults: Vec<Fault>,
    /// Seed for the fault dice, so a scenario replays the same way.
    pub seed: u64,
    /// Keep every response (method, route, status, body) for the spec conformance test.
    pub record_exchanges: bool,
    /// Whether the context may send invoices with attachments (batch only, as in KSeF).
    pub attachments_allowed: bool,
    /// Environment name in the UPO's `NazwaPodmiotuPrzyjmujacego`.
    pub receiver_name: String,
    /// When set, every API answer carries this `X-System-Warning` (`[code]: message`), as KSeF
    /// does for behaviour it will reject in future (TEST forces it with `X-Test-System-Warning`).
    pub system_warning: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_base_url: None,
            batch_processing_after_close: false,
            tokens: vec![SimToken {
                token: DEFAULT_TOKEN.to_owned(),
                context: Nip::parse("9999999999").expect("valid NIP"),
            }],
            certificate_fingerprints: Vec::new(),
            keys: KeySource::Bundled,
            auth_delay: Duration::from_millis(30),
            accept_delay: Duration::from_millis(30),
            processing_delay: Duration::from_millis(30),
            session_lifetime: Duration::from_secs(12 * 3600),
            max_invoices_per_session: 10_000,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            rate_limits: RateLimits::production(),
            time_scale: 1.0,
            faults: Vec::new(),
            seed: 0,
            record_exchanges: false,
            attachments_allowed: true,
            receiver_name: "Ministerstwo Finansów - symulator ksef-relay".to_owned(),
            system_warning: None,
        }
    }
}

/// The token `SimConfig::default()` accepts (for NIP 9999999999, the official samples' seller).
pub const DEFAULT_TOKEN: &str = "20251101-EC-0000000000-0000000000-00|nip-9999999999|sim-token-secret";
