use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::clock::{Clock, SystemClock};
use crate::ports::queue::{check_receive, check_visibility};
use crate::ports::{OutgoingMessage, Queue, QueueError, QueueStats, ReceivedMessage};

#[derive(Debug, Clone)]
struct StoredMessage {
    id: String,
    body: String,
    attributes: BTreeMap<String, String>,
    sent_at: DateTime<Utc>,
    visible_at: DateTime<Utc>,
    receive_count: u32,
    receipt: Option<String>,
    /// Still inside its initial delay (SQS counts these as "delayed", not "not visible").
    delayed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    messages: Vec<StoredMessage>,
    next_id: u64,
}

/// A queue with SQS semantics in memory: delays, visibility, receive counts, redrive to a DLQ.
#[derive(Clone)]
pub struct MemoryQueue {
    name: String,
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    redrive: Option<(Box<MemoryQueue>, u32)>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue").field("name", &self.name).finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// A queue without a DLQ, on the wall clock.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_clock(name, Arc::new(SystemClock))
    }

    pub fn with_clock(name: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        MemoryQueue {
            name: name.into(),
            inner: Arc::default(),
            clock,
            redrive: None,
        }
    }

    /// A queue and its DLQ: a message received `max_receive_count` times without being deleted
    /// moves to the DLQ on the next receive, as SQS's redrive policy does.
    pub fn with_dlq(name: impl Into<String>, max_receive_count: u32, clock: Arc<dyn Clock>) -> (MemoryQueue, MemoryQueue) {
        let name = name.into();
        let dlq = MemoryQueue::with_clock(format!("{name}-dlq"), clock.clone());
        let mut main = MemoryQueue::with_clock(name, clock);
        main.redrive = Some((Box::new(dlq.clone()), max_receive_count.max(1)));
        (main, dlq)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn push(&self, msg: StoredMessage) {
        self.inner.lock().expect("queue lock").messages.push(msg);
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        message.check()?;
        let now = self.clock.now();
        let mut inner = self.inner.lock().expect("queue lock");
        inner.next_id += 1;
        let id = format!("{}-{}", self.name, inner.next_id);
        inner.messages.push(StoredMessage {
            id: id.clone(),
            body: message.body,
            attributes: message.attributes,
            sent_at: now,
            visible_at: now + chrono::Duration::from_std(message.delay).expect("checked delay"),
            receive_count: 0,
            receipt: None,
            delayed: !message.delay.is_zero(),
        });
        Ok(id)
    }

    async fn receive(&self, max: u32, visibility: Duration, _wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        check_receive(max, visibility)?;
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut to_dlq = Vec::new();
        {
            let mut inner = self.inner.lock().expect("queue lock");
            let mut i = 0;
            while i < inner.messages.len() && out.len() < max as usize {
                let m = &mut inner.messages[i];
                if m.visible_at > now {
                    i += 1;
                    continue;
                }
                m.delayed = false;
                if let Some((_, max_receives)) = &self.redrive {
                    if m.receive_count >= *max_receives {
                        let mut moved = inner.messages.remove(i);
                        moved.receive_count += 1;
                        moved.receipt = None;
                        to_dlq.push(moved);
                        continue;
                    }
                }
                m.receive_count += 1;
                let receipt = format!("{}#{}", m.id, m.receive_count);
                m.receipt = Some(receipt.clone());
                m.visible_at = now + chrono::Duration::from_std(visibility).expect("checked visibility");
                out.push(ReceivedMessage {
                    message_id: m.id.clone(),
                    receipt,
                    body: m.body.clone(),
                    attributes: m.attributes.clone(),
                    receive_count: m.receive_count,
                    sent_at: m.sent_at,
                });
                i += 1;
            }
        }
        if let Some((dlq, _)) = &self.redrive {
            for mut m in to_dlq {
                // The DLQ keeps the original enqueue time and receive count, as SQS does.
                m.visible_at = now;
                dlq.push(m);
            }
        }
        Ok(out)
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        check_visibility(timeout)?;
        let now = self.clock.now();
        let mut inner = self.inner.lock().expect("queue lock");
        let m = inner
            .messages
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(receipt))
            .ok_or_else(|| QueueError::ReceiptInvalid(receipt.to_owned()))?;
        m.visible_at = now + chrono::Duration::from_std(timeout).expect("checked visibility");
        Ok(())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let mut inner = self.inner.lock().expect("queue lock");
        let before = inner.messages.len();
        inner.messages.retain(|m| m.receipt.as_deref() != Some(receipt));
        if inner.messages.len() == before {
            return Err(QueueError::ReceiptInvalid(receipt.to_owned()));
        }
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let now = self.clock.now();
        let inner = self.inner.lock().expect("queue lock");
        let mut s = QueueStats::default();
        for m in &inner.messages {
            if m.visible_at <= now {
                s.visible += 1;
            } else if m.delayed {
                s.delayed += 1;
            } else {
                s.in_flight += 1;
            }
        }
        s.oldest_age = inner
            .messages
            .iter()
            .map(|m| m.sent_at)
            .min()
            .map(|t| (now - t).to_std().unwrap_or_default());
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn the_oldest_message_age_follows_the_clock() {
        let clock = ManualClock::starting_at(Utc::now());
        let q = MemoryQueue::with_clock("q", Arc::new(clock.clone()));
        assert_eq!(q.stats().await.unwrap().oldest_age, None);
        q.send(OutgoingMessage::new("old")).await.unwrap();
        clock.advance(Duration::from_secs(90));
        q.send(OutgoingMessage::new("new")).await.unwrap();
        assert_eq!(q.stats().await.unwrap().oldest_age, Some(Duration::from_secs(90)));
        // A manual clock lets a test live through a 15-minute backoff at once.
        let m = q.receive(1, Duration::from_secs(900), Duration::ZERO).await.unwrap().remove(0);
        assert_eq!(m.body, "old");
        clock.advance(Duration::from_secs(901));
        assert_eq!(q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap().len(), 2);
    }
}
