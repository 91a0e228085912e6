//! # relay-pipeline: the use cases
//!
//! Each use case takes the ports it needs (by capability) and plain values, and returns an
//! outcome; Lambda handlers and the local runner only decode events and call these.
//!
//! - [`intake`]: read the invoice's identity, keep its exact bytes, register it idempotently,
//!   queue it for sending. (Full FA(3) validation and the corrections queue join it in the
//!   pipeline issue.)
//! - [`send`]: one queued document to KSeF, at most once (claim, reconcile, record "about to
//!   send", send, classify), by the channel its send mode names (online or batch, each a module
//!   of its own behind one interface); [`sessions`] holds the KSeF clients and online sessions per seller,
//!   each client made on first use from the seller's secret ([`credentials`]);
//!   [`seller_block`] parks a seller's work while an operator's problem (credentials, permissions,
//!   an IP block) stands, so it is never blamed on the invoices.
//! - [`availability`]: KSeF's availability per environment (Latarnia's messages archived, our own
//!   probe, one decided state in the shared cache) and the send stage's hold while KSeF is down.
//! - [`status`]: follow a sent invoice to KSeF's decision: UPO archived and ACCEPTED, a
//!   duplicate proven ours (or a CONFLICT), a resend, or REJECTED with KSeF's words;
//!   [`qr_codes`] writes the invoice's QR codes (KOD I at ACCEPTED; KOD I and KOD II of an
//!   offline invoice, for the offline channel to call).
//! - [`replay`]: dlq-replay: dead-lettered messages checked one by one (the document's state,
//!   KSeF's records) and moved back, with filters, a limit and a dry run.
//! - [`resolve`]: a person's decisions on one document: a CONFLICT resolved (ours, recheck,
//!   withdraw), a REJECTED document whose rejection was not about its content sent again.
//! - [`follow_up`]: no document without a next step: a message that finds its record moved on
//!   re-issues the follow-up a crash may have cost; [`sweeper`] re-drives what is overdue on a
//!   schedule and rewrites outbox results that lag.
//! - [`drive`]: pumps the send and status queues through their use cases like the Lambda event
//!   source does; the local runner and the end-to-end tests run on it.
//! - [`send_route`]: Batch-mode send requests to the batch queue, the rest to the send queue
//!   (the deployed functions' two send queues behind one [`relay_domain::ports::Queue`]).
//! - [`queue_action`]: what a handler does with its message (delete, requeue with a delay,
//!   dead-letter), the same in Lambda and in the local runner.
//! - [`outbox`]: the results the ERP reads back.
//! - [`messages`]: the JSON bodies that travel on the queues.
//! - [`s3_event`]: S3 ObjectCreated notifications as real S3 and the emulator send them.

// `Failure` (the one error taxonomy, with KSeF's messages verbatim) is returned unboxed, as in
// ksef-client, so every caller matches on the same type; a failure costs a network call anyway.
#![allow(clippy::result_large_err)]

pub mod availability;
pub mod credentials;
pub mod drive;
pub mod follow_up;
pub mod intake;
pub mod messages;
pub mod offline_send;
pub mod outbox;
pub mod qr_codes;
pub mod queue_action;
pub mod replay;
pub mod resolve;
pub mod s3_event;
pub mod seller_block;
pub mod send;
pub mod send_route;
pub mod sessions;
pub mod status;
pub mod sweeper;
/// The UPO reader lives with KSeF's protocol, in the client; here under its old name.
pub use ksef_client::upo_read;
