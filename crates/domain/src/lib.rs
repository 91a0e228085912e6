//! # relay-domain: the core of ksef-relay
//!
//! Everything the relay knows about invoices and their delivery to KSeF, with no AWS, no HTTP
//! and no Lambda in it (`cargo tree -p relay-domain -e normal` proves it):
//!
//! - [`ids`]: typed values built by parsing: a [`ids::Nip`] cannot hold a bad checksum, a
//!   [`ids::KsefNumber`] cannot hold a bad CRC-8. The business identity [`ids::DocumentKey`] is
//!   KSeF's own duplicate key: seller NIP + RodzajFaktury + P_2.
//! - [`state`]: the state machine (QUEUED → SENT → PROCESSING → ACCEPTED, and REJECTED,
//!   FAILED, CONFLICT), with its Polish labels; every transition is checked there.
//! - [`record`]: the document record, the only code that changes it ([`record::DocumentRecord::apply`],
//!   [`record::DocumentRecord::claim`]), and its append-only history.
//! - [`failure`]: the one error taxonomy ([`failure::ErrorClass`]) every failure ends in.
//! - [`retry_policy`]: when to try again, and when to give up.
//! - [`availability`]: one availability state per KSeF environment, from Latarnia's messages and
//!   the relay's own evidence, and the declared failure windows offline deadlines count from.
//! - [`offline`]: how an invoice was issued offline, how KSeF filed it, and its legal deadline
//!   per mode, counted in Polish business days ([`polish_calendar`]) from the declared outages.
//! - [`credential_facts`]: what may be known about a seller's KSeF login without its secret
//!   (kind, subject, key type, notAfter), recorded for the report function.
//! - [`ports`]: the traits the use cases need (document store, queue, archive), split by
//!   capability; [`memory`] implements them in memory with the same semantics as the AWS adapters.
//!
//! The key design decision: adapters store, they never decide. A store persists exactly what
//! `apply`/`claim` computed, conditioned on the version it read, so the in-memory and DynamoDB
//! stores cannot disagree about what a transition means.

pub mod availability;
pub mod clock;
pub mod credential_facts;
pub mod failure;
pub mod ids;
pub mod memory;
pub mod offline;
pub mod polish_calendar;
pub mod ports;
pub mod record;
pub mod retry_policy;
pub mod state;
pub mod storage_keys;

pub use availability::{Availability, AvailabilitySource, AvailabilityState, DeclaredMessage, FailureWindow, LatarniaReading, OwnEvidence};
pub use clock::{Clock, ManualClock, SystemClock};
pub use failure::{ErrorClass, ErrorSource, Failure};
pub use ids::{ContentHash, DocumentKey, ErpDocumentId, InvoiceKind, InvoiceNumber, KsefNumber, KsefReference, Nip, ParseError, TraceId};
pub use offline::{InvoicingMode, LegalDeadline, OfflineCodes, OfflineMode};
pub use record::{
    Applied, Change, ClaimPurpose, ClaimRefused, CorrectedUpload, Document, DocumentRecord, HistoryEntry, HistoryEvent, InitialState,
    KsefRefs, Lease, NewDocument, Resolution, SendMode, StorageKeys, WITHDRAWN,
};
pub use retry_policy::{Charge, RetryDecision, RetryPolicy};
pub use state::{DocumentState, TransitionError};
