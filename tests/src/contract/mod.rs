//! ONE contract suite per port. Each suite is a set of async functions generic over the port;
//! the `*_contract!` macros turn them into `#[tokio::test]`s for one implementation, given an
//! async factory that makes a fresh, uniquely named instance per test.

pub mod archive;
pub mod document_store;
pub mod queue;
pub mod shared_cache;
