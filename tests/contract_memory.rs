//! The contract suites against the in-memory adapters.

use std::sync::Arc;

use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue, MemorySharedCache};
use relay_domain::SystemClock;

async fn store() -> MemoryDocumentStore {
    MemoryDocumentStore::new()
}

async fn queues(max_receive_count: u32) -> (MemoryQueue, MemoryQueue) {
    MemoryQueue::with_dlq(relay_tests::unique_name("q"), max_receive_count, Arc::new(SystemClock))
}

async fn archive() -> MemoryArchive {
    MemoryArchive::new()
}

async fn cache() -> MemorySharedCache {
    MemorySharedCache::new()
}

relay_tests::document_store_contract!(store);
relay_tests::shared_cache_contract!(cache);
relay_tests::queue_contract!(queues);
relay_tests::archive_contract!(archive);
