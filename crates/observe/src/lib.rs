//! # relay-observe: what the relay tells the people who run it
//!
//! - [`logging`]: one JSON log format for the Lambda functions and the CLI. The use cases open a
//!   span per document (trace id, seller NIP, document key, ERP document id, state, error class),
//!   so every line written while a document is handled carries its story's fields. Invoice
//!   content and secrets are never logged: only identifiers, states, codes and KSeF's messages.
//! - [`emf`]: CloudWatch Embedded Metric Format: metrics as structured log lines, so emitting one
//!   costs no API call (CloudWatch Logs extracts them). A small writer that validates what it
//!   writes against the EMF limits (≤ 100 metrics per directive, ≤ 30 dimensions per set, every
//!   declared metric and dimension present as a top-level member of the right type).
//! - [`ksef_metrics`]: the technical level: one EMF line per KSeF call (latency and outcome per
//!   endpoint, timeouts, 5xx, 429s, error class, token refreshes and full logins).
//! - [`credential_metrics`]: `CredentialDaysLeft`, the days left on a seller's KSeF login.
//!
//! The business and regulatory levels (documents per state, backlog age, legal deadlines) are
//! computed from the document store by the report function (`relay-report`) every 15 minutes.

pub mod credential_metrics;
pub mod emf;
pub mod ksef_metrics;
pub mod logging;

/// The CloudWatch namespace of every relay metric.
pub const NAMESPACE: &str = "KsefRelay";
