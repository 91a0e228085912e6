//! What the `ksef-relay` binary shares with the end-to-end tests: the bundled official samples
//! as `ksef-relay run` sends them.

pub mod bundled_samples;
