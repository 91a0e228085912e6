//! The ports: what the use cases need from the outside world (a document store, queues, an
//! archive, a shared cache for tokens and sessions and the sealer for the secrets in it), split by capability so each
//! function's trait bounds match its IAM policy. Each port has an AWS adapter (`relay-aws`) and
//! an in-memory adapter ([`crate::memory`]); one contract suite (`tests/src/contract`) runs
//! against both, so they cannot drift apart.

pub mod archive;
pub mod document_store;
pub mod queue;
pub mod secret_sealer;
pub mod shared_cache;

pub use archive::{Archive, ArchiveError, ObjectBody, PutOutcome};
pub use document_store::{DocumentClaims, DocumentQueries, DocumentRegistry, DocumentStore, DocumentUpdates, Registration, StoreError};
pub use queue::{OutgoingMessage, Queue, QueueError, QueueStats, ReceivedMessage, MAX_DELAY, MAX_VISIBILITY, TRACE_ID_ATTRIBUTE};
pub use secret_sealer::{SealError, SecretSealer};
pub use shared_cache::{CacheEntry, Expect, SharedCache};
