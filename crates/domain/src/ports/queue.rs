//! A message queue with SQS semantics: at-least-once delivery, delays, visibility timeouts,
//! and a dead-letter queue after too many receives. Never deduplicate on message ids:
//! redriven messages get new ones.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ids::TraceId;

/// The message attribute that carries the document's trace id.
pub const TRACE_ID_ATTRIBUTE: &str = "trace-id";
/// The longest per-message delay SQS allows.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// The longest visibility timeout SQS allows.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    pub delay: Duration,
    pub attributes: BTreeMap<String, String>,
}

impl OutgoingMessage {
    pub fn new(body: impl Into<String>) -> Self {
        OutgoingMessage {
            body: body.into(),
            delay: Duration::ZERO,
            attributes: BTreeMap::new(),
        }
    }

    pub fn with_trace_id(mut self, trace: &TraceId) -> Self {
        self.attributes.insert(TRACE_ID_ATTRIBUTE.to_owned(), trace.to_string());
        self
    }

    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The checks SQS makes, made the same way by every adapter.
    pub fn check(&self) -> Result<(), QueueError> {
        if self.delay > MAX_DELAY {
            return Err(QueueError::Invalid(format!("delay {:?} is over the 15-minute maximum", self.delay)));
        }
        if self.body.is_empty() {
            return Err(QueueError::Invalid("message body is empty".into()));
        }
        if self.body.len() > 256 * 1024 {
            return Err(QueueError::Invalid("message body is over 256 KiB".into()));
        }
        for name in self.attributes.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(QueueError::Invalid(format!("attribute name {name:?} is not allowed")));
            }
        }
        Ok(())
    }
}

/// A received message; `receipt` identifies this delivery for delete and visibility changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    pub sent_at: DateTime<Utc>,
}

impl ReceivedMessage {
    pub fn trace_id(&self) -> Option<TraceId> {
        self.attributes.get(TRACE_ID_ATTRIBUTE).and_then(|t| TraceId::parse(t).ok())
    }
}

/// How full a queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Age of the oldest message, where the backend can tell. SQS cannot (it is only a CloudWatch
    /// metric there, read by the alarms), so its adapter reports None.
    pub oldest_age: Option<Duration>,
}

impl QueueStats {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// Why a queue operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue request: {0}")]
    Invalid(String),
    #[error("receipt is no longer valid: {0}")]
    ReceiptInvalid(String),
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

/// One queue (its dead-letter queue is another instance).
#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError>;

    /// Up to `max` (1..=10) messages, hidden from others for `visibility`, waiting at most `wait`.
    /// A message already received maxReceiveCount times goes to the DLQ instead.
    async fn receive(&self, max: u32, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Hides a received message for `timeout` from now (0 makes it visible at once).
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError>;

    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    async fn stats(&self) -> Result<QueueStats, QueueError>;
}

/// Checks receive arguments the way SQS does.
pub fn check_receive(max: u32, visibility: Duration) -> Result<(), QueueError> {
    if !(1..=10).contains(&max) {
        return Err(QueueError::Invalid(format!("max messages {max} is outside 1..=10")));
    }
    check_visibility(visibility)
}

pub fn check_visibility(visibility: Duration) -> Result<(), QueueError> {
    if visibility > MAX_VISIBILITY {
        return Err(QueueError::Invalid(format!(
            "visibility {visibility:?} is over the 12-hour maximum"
        )));
    }
    Ok(())
}
