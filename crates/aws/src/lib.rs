//! # relay-aws: the AWS side of ksef-relay's ports
//!
//! Adapters that implement `relay-domain`'s ports on AWS, with the same semantics as the
//! in-memory ones (one contract suite in `tests/` runs against both, the AWS side against the
//! moto emulator over the real wire):
//!
//! - [`dynamodb_store::DynamoDocumentStore`]: the document store (one table, record + history
//!   items, a sparse GSI by state and age, conditional writes only).
//! - [`dynamodb_cache::DynamoSharedCache`]: the shared cache (tokens, sessions) in the same
//!   table, versioned and expiring.
//! - [`kms_sealer::KmsSealer`]: seals the secrets in that cache (KSeF tokens, session keys) with
//!   a KMS key only the KSeF-calling functions may use.
//! - [`sqs_queue::SqsQueue`]: a queue; its DLQ is SQS's redrive policy.
//! - [`s3_archive::S3Archive`]: the archive; put-if-absent is `If-None-Match: *`.
//!
//! Also: [`secrets`] (KSeF tokens from Secrets Manager, one per seller NIP), [`settings`] (one typed settings struct per Lambda binary, read from the environment at
//! cold start), [`clients`] (SDK clients built once, pointable at the emulator with
//! `KSEF_RELAY_AWS_ENDPOINT`) and [`provision`] (creating tables, queues and buckets for local runs
//! and tests; in AWS the SAM template does it).

pub mod clients;
pub mod dynamodb_cache;
pub mod dynamodb_store;
pub mod kms_sealer;
pub mod provision;
pub mod s3_archive;
pub mod secrets;
pub mod settings;
pub mod sns_topic;
pub mod sqs_queue;

pub use clients::AwsClients;
pub use dynamodb_cache::DynamoSharedCache;
pub use dynamodb_store::DynamoDocumentStore;
pub use kms_sealer::KmsSealer;
pub use s3_archive::S3Archive;
pub use sns_topic::SnsTopic;
pub use sqs_queue::SqsQueue;
