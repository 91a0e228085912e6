//! # ksef-client: the relay's KSeF API 2.0 client
//!
//! KSeF is the relay's only outside party; this crate is the only code that talks to it.
//! It covers what delivering FA(3) invoices needs:
//!
//! - [`environment`]: TEST, DEMO, PROD or any base URL (the simulator);
//! - [`limiter`] and [`governor`]: KSeF's rate limits, per process or shared by a fleet, over
//!   one sliding log that counts a request from its reservation until its answer (where KSeF
//!   may count it), seeded from `GET /rate-limits`; [`online_backlog`]: the send mode chosen at
//!   intake from a seller's online backlog against those limits (online within a target delay,
//!   else batch);
//! - [`client`]: configuration, the one request path (client-side [`limiter`], bearer token,
//!   `X-System-Warning` logging, failure mapping), public keys picked by usage and validity
//!   and refreshed on 21470, and authentication (KSeF token, or a certificate through
//!   [`xades`]) with a token cache that refreshes before expiry and logs in again when the
//!   refresh token is refused;
//! - [`sessions`]: online sessions (open with a wrapped AES-256 key, send, close), session and
//!   invoice status, the session list and each session's invoice list (reconciliation by hash),
//!   UPOs by link and by reference; tokens and open sessions export to a shared cache as
//!   secret JSON; [`batch`]: ZIP or tar.gz archives split into encrypted parts, uploaded to the
//!   pre-signed URLs without the token, and what a batch session says about one invoice sent in
//!   it ([`BatchInvoice`]: open, listed, not yet, missing), so callers never read its codes;
//! - [`failure_map`]: the ONE place where HTTP statuses, KSeF exception codes, transport errors
//!   and final statuses become a [`relay_domain::Failure`] with its [`relay_domain::ErrorClass`],
//!   KSeF's own codes and details kept verbatim, and a 440's original and its session read back
//!   typed ([`failure_map::Duplicate`]);
//! - [`upo_read`]: the facts the relay reads from a UPO (KSeF number, hash, when numbered, and
//!   `TrybWysylki`), read leniently.
//! - [`qr`]: KSeF's QR codes, KOD I (invoice verification) and KOD II (an offline invoice's
//!   issuer, signed with the seller's Offline certificate), as links and as PNG and SVG images;
//! - [`latarnia`]: the Ministry's status service (`GET /status`, `GET /messages`) read into the
//!   domain's availability types, and a light probe of a public KSeF endpoint;
//! - [`secret`]: the KSeF token, bearer tokens and AES keys, in types that never print;
//! - [`stored_credentials`]: the relay's one secret format per seller (a token, or a certificate
//!   and key as PEM or PKCS#12), parsed with errors that never quote the secret.
//!
//! Every fallible call returns `Result<T, relay_domain::Failure>`: callers decide retries from
//! the class alone. The key design decision: the client never retries on its own, except where
//! the retry is provably safe and invisible to KSeF's books (a 401 answered before any work, a
//! 21470 key rotation); everything else goes back classified, because only the caller knows
//! whether a resend is safe (it reconciles by hash first).

// `Failure` is the relay's one error type (152 bytes: verbatim KSeF messages). It is returned
// unboxed so every caller matches on the same type; failures cost a network round trip anyway.
#![allow(clippy::result_large_err)]

pub mod batch;
pub mod batch_builder;
pub mod client;
mod crypto;
pub mod environment;
pub mod failure_map;
pub mod governor;
pub mod latarnia;
pub mod limiter;
pub mod model;
pub mod online_backlog;
pub mod qr;
pub mod secret;
pub mod sessions;
mod sliding_log;
pub mod stored_credentials;
pub mod upo_read;
pub mod xades;

pub use batch::{BatchArchive, BatchInvoice, BatchResults, BatchSession, Compression, EncryptedPart, OpenedBatch};
pub use batch_builder::{ArchiveBuilder, BatchPlan, BatchPlanner, PartDeclaration};
pub use client::{pick_key, ClientConfig, Credentials, CredentialsRenewal, KeyUsage, KsefClient, PublicKey, Result, TokenSet};
pub use environment::Environment;
pub use failure_map::{Duplicate, InvoiceOutcome};
pub use latarnia::{LatarniaClient, LatarniaError, LatarniaStatus};
pub use limiter::{ClientLimits, EffectiveRateLimits, EndpointGroup, Limit};
pub use model::{InvoiceStatus, SessionStatus, SessionSummary, Status};
pub use online_backlog::{ModeChoice, OnlineBacklog};
pub use secret::{BearerToken, KsefToken, SessionKey};
pub use sessions::{send_invoice_body, CorrectionSent, OnlineSession, SendOptions, SentInvoice, Upo};
pub use stored_credentials::{CredentialFacts, CredentialKind, CredentialsError, StoredCredentials};
pub use xades::{SigningIdentity, SigningKey, SubjectIdentifierType};
