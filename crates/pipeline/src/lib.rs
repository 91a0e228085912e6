//! # relay-pipeline: the use cases
//!
//! Each use case takes the ports it needs (by capability) and plain values, and returns an
//! outcome; Lambda handlers and the local runner only decode events and call these.
//!
//! - [`intake`]: read the invoice's identity, keep its exact bytes, register it idempotently,
//!   queue it for sending. (Full FA(3) validation and the corrections queue join it in the
//!   pipeline issue.)
//! - [`messages`]: the JSON bodies that travel on the queues.
//! - [`s3_event`]: S3 ObjectCreated notifications as real S3 and the emulator send them.

pub mod intake;
pub mod messages;
pub mod outbox;
pub mod s3_event;
