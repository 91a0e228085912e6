//! # relay-report: the relay's story told to people
//!
//! Everything here reads the document store and writes for people, never changes a document:
//!
//! - [`snapshot`]: the documents at one moment (open ones, recent decisions, counts by state);
//! - [`metrics`]: the business and regulatory metric levels (EMF), from a snapshot;
//! - [`credentials`]: each seller's KSeF login (kind, notAfter, days left) from the facts the
//!   KSeF-calling functions record, as `CredentialDaysLeft` lines and a status-page section;
//! - [`deadline`]: when an invoice must be in KSeF by law (next business day after `P_1`);
//! - [`status_page`]: the self-contained HTML status page;
//! - [`weekly`]: the weekly report (HTML, CSV, a summary for the alarm topic);
//! - [`lookup`]: a document's whole story for `ksef-relay status`;
//! - [`jobs`]: the two scheduled jobs of the report function (`snapshot`, `weekly`), written
//!   against the ports so the Lambda and the local runner run the same code.

pub mod availability;
pub mod credentials;
pub mod deadline;
pub mod jobs;
pub mod lookup;
pub mod metrics;
pub mod snapshot;
pub mod status_page;
pub mod weekly;
