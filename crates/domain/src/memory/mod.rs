//! In-memory adapters with the same semantics as the AWS ones (the shared contract suite proves
//! it). They are the local runner's default stores and make fast simulation tests possible; they
//! do not replace the tests against the AWS emulator.

mod archive;
mod document_store;
mod queue;
mod shared_cache;

pub use archive::MemoryArchive;
pub use document_store::MemoryDocumentStore;
pub use queue::MemoryQueue;
pub use shared_cache::MemorySharedCache;
