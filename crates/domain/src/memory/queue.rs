use std::collections::{BTreeMap, HashMap};
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

/// Where a message sits: when it becomes visible, then the order it arrived in.
type Slot = (DateTime<Utc>, u64);

/// The messages ordered by when they become visible, so that a receive takes the visible ones
/// from the front and a delete finds its message by receipt, without walking the queue: a month
/// end's 50,000 messages in flight made each receive of ten walk all of them (and each delete
/// compare every receipt).
#[derive(Debug, Default)]
struct Inner {
    messages: BTreeMap<Slot, StoredMessage>,
    receipts: HashMap<String, Slot>,
    next_id: u64,
    next_slot: u64,
}

impl Inner {
    fn insert(&mut self, m: StoredMessage) {
        self.next_slot += 1;
        let slot = (m.visible_at, self.next_slot);
        if let Some(r) = &m.receipt {
            self.receipts.insert(r.clone(), slot);
        }
        self.messages.insert(slot, m);
    }

    fn take(&mut self, receipt: &str) -> Option<StoredMessage> {
        let slot = self.receipts.remove(receipt)?;
        self.messages.remove(&slot)
    }
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
        self.inner.lock().expect("queue lock").insert(msg);
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
        inner.insert(StoredMessage {
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
            let hidden_until = now + chrono::Duration::from_std(visibility).expect("checked visibility");
            let mut received = Vec::new();
            while out.len() < max as usize {
                let Some(entry) = inner.messages.first_entry() else { break };
                if entry.key().0 > now {
                    break;
                }
                let mut m = entry.remove();
                if let Some(old) = m.receipt.take() {
                    inner.receipts.remove(&old);
                }
                m.delayed = false;
                if let Some((_, max_receives)) = &self.redrive {
                    if m.receive_count >= *max_receives {
                        m.receive_count += 1;
                        to_dlq.push(m);
                        continue;
                    }
                }
                m.receive_count += 1;
                let receipt = format!("{}#{}", m.id, m.receive_count);
                m.receipt = Some(receipt.clone());
                m.visible_at = hidden_until;
                out.push(ReceivedMessage {
                    message_id: m.id.clone(),
                    receipt,
                    body: m.body.clone(),
                    attributes: m.attributes.clone(),
                    receive_count: m.receive_count,
                    sent_at: m.sent_at,
                });
                received.push(m);
            }
            // Put back after the loop: with a zero visibility timeout they are visible at once,
            // and must not be received twice by this receive.
            for m in received {
                inner.insert(m);
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
        let mut m = inner.take(receipt).ok_or_else(|| QueueError::ReceiptInvalid(receipt.to_owned()))?;
        m.visible_at = now + chrono::Duration::from_std(timeout).expect("checked visibility");
        inner.insert(m);
        Ok(())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let mut inner = self.inner.lock().expect("queue lock");
        match inner.take(receipt) {
            Some(_) => Ok(()),
            None => Err(QueueError::ReceiptInvalid(receipt.to_owned())),
        }
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let now = self.clock.now();
        let inner = self.inner.lock().expect("queue lock");
        let mut s = QueueStats::default();
        for m in inner.messages.values() {
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
            .values()
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

    #[tokio::test]
    async fn a_zero_visibility_receive_takes_each_message_once_and_old_receipts_lapse() {
        let clock = ManualClock::starting_at(Utc::now());
        let q = MemoryQueue::with_clock("q", Arc::new(clock.clone()));
        q.send(OutgoingMessage::new("a")).await.unwrap();
        q.send(OutgoingMessage::new("b")).await.unwrap();
        let first = q.receive(10, Duration::ZERO, Duration::ZERO).await.unwrap();
        assert_eq!(first.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        // Visible again at once, received again with new receipts; the first ones lapse.
        let again = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 2);
        assert!(matches!(q.delete(&first[0].receipt).await, Err(QueueError::ReceiptInvalid(_))));
        q.delete(&again[0].receipt).await.unwrap();
        // The other one, made visible again by its receipt, is the only one left.
        q.change_visibility(&again[1].receipt, Duration::ZERO).await.unwrap();
        let last = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        assert_eq!(last.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(q.stats().await.unwrap().total(), 1);
    }
}
