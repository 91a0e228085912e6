//! # relay-tests: the shared test harness and the contract suites
//!
//! - [`emulator`]: the local AWS emulator (moto in server mode) on a loopback port. `make test`
//!   (scripts/test.sh) installs moto into `.venv`, starts one server and exports its URL in
//!   `KSEF_RELAY_TEST_AWS_ENDPOINT`; when that is not set, the first test that needs AWS starts
//!   `.venv/bin/moto_server` itself on a free port, and it stops when the test process exits.
//! - [`lambda_events`]: Lambda SQS events built from received messages, for handler tests.
//! - [`recording_proxy`]: an HTTP proxy before the emulator that notes each AWS call a function
//!   makes (IAM action and resource), to check them against the function's role.
//! - [`deployed_stack`]: what a stack deployed to the emulator created, and each function's
//!   environment as CloudFormation resolved it.
//! - [`iam_policy`]: IAM statements evaluated for one request (Deny wins, Allow, else denied), for
//!   the policy tests.
//! - [`template`]: the SAM template translated offline and deployed as a stack to the emulator.
//! - [`contract`]: ONE contract suite per port (document store, queue, archive). The test targets
//!   `contract_memory.rs` and `contract_aws.rs` instantiate the same suites against the in-memory
//!   and the AWS adapters; every test makes its own table, queue and bucket names.

pub mod contract;
pub mod deployed_stack;
pub mod emulator;
pub mod iam_policy;
pub mod lambda_events;
pub mod recording_proxy;
pub mod seller_certificates;
pub mod template;

/// A name no other test uses: `{prefix}-{8 random hex}` (lowercase, valid for S3, SQS, DynamoDB).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}
