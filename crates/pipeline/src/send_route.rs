//! Which queue a send request goes to: Batch-mode documents to the batch queue, the rest to the
//! send queue.
//!
//! In AWS the two modes have queues of their own: the send function handles online sends a few
//! at a time, the send-batch function gathers Batch-mode messages (thousands per invocation) and
//! sends each seller's in one batch session ([`crate::send::send_batch`]). Every place that
//! queues a `SendRequest` (intake, a stage's retry, status's resend, the sweeper's re-drive,
//! dlq-replay) does it through a [`Queue`]; [`SendRouting`] is that queue in the deployed
//! functions, so none of those use cases needs to know there are two. The local runner keeps
//! one send queue (its driver gathers Batch-mode messages itself) and needs no routing.
//!
//! A message whose body is not a `SendRequest`, or names no mode (one from before the relay
//! carried it), goes to the send queue, whose lone path reads the record.

use std::time::Duration;

use async_trait::async_trait;
use relay_domain::ports::{OutgoingMessage, Queue, QueueError, QueueStats, ReceivedMessage};
use relay_domain::SendMode;

use crate::messages::SendRequest;

/// A send-only [`Queue`] that routes each `SendRequest` by its mode.
pub struct SendRouting<'a> {
    pub online: &'a dyn Queue,
    pub batch: &'a dyn Queue,
}

impl<'a> SendRouting<'a> {
    pub fn new(online: &'a dyn Queue, batch: &'a dyn Queue) -> Self {
        SendRouting { online, batch }
    }

    /// Without a batch queue (a deployment that has none), everything goes to the send queue.
    pub fn with_optional(online: &'a dyn Queue, batch: Option<&'a dyn Queue>) -> Self {
        SendRouting {
            online,
            batch: batch.unwrap_or(online),
        }
    }

    /// The queue a message with this body belongs on.
    pub fn queue_for(&self, body: &str) -> &'a dyn Queue {
        match SendRequest::from_json(body) {
            Ok(req) if req.mode == Some(SendMode::Batch) => self.batch,
            _ => self.online,
        }
    }
}

fn send_only(what: &str) -> QueueError {
    QueueError::Invalid(format!(
        "{what} on a send route: it only sends; receive from the send or the batch queue itself"
    ))
}

#[async_trait]
impl Queue for SendRouting<'_> {
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        self.queue_for(&message.body).send(message).await
    }

    async fn receive(&self, _max: u32, _visibility: Duration, _wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        Err(send_only("receive"))
    }

    async fn change_visibility(&self, _receipt: &str, _timeout: Duration) -> Result<(), QueueError> {
        Err(send_only("change_visibility"))
    }

    async fn delete(&self, _receipt: &str) -> Result<(), QueueError> {
        Err(send_only("delete"))
    }

    /// Both queues together: "a send backlog" (the sweeper holds re-drives back while one is
    /// visible) is a backlog on either.
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let a = self.online.stats().await?;
        if std::ptr::addr_eq(self.online, self.batch) {
            return Ok(a);
        }
        let b = self.batch.stats().await?;
        Ok(QueueStats {
            visible: a.visible + b.visible,
            in_flight: a.in_flight + b.in_flight,
            delayed: a.delayed + b.delayed,
            oldest_age: a.oldest_age.max(b.oldest_age),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_domain::memory::MemoryQueue;
    use relay_domain::{ContentHash, DocumentKey, InvoiceKind, InvoiceNumber, Nip, TraceId};

    fn request(mode: Option<SendMode>) -> String {
        SendRequest {
            document: DocumentKey::new(
                Nip::parse("9999999999").unwrap(),
                InvoiceKind::Vat,
                InvoiceNumber::parse("FV/1").unwrap(),
            ),
            content_hash: ContentHash::of(b"x"),
            trace_id: TraceId::generate(),
            step: 1,
            mode,
        }
        .to_json()
    }

    async fn bodies(q: &MemoryQueue) -> Vec<String> {
        q.receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect()
    }

    #[tokio::test]
    async fn batch_mode_requests_go_to_the_batch_queue_and_the_rest_to_the_send_queue() {
        let (online, batch) = (MemoryQueue::new("send"), MemoryQueue::new("batch"));
        let route = SendRouting::new(&online, &batch);
        let (b, o, old) = (request(Some(SendMode::Batch)), request(Some(SendMode::Online)), request(None));
        for body in [&b, &o, &old, &"not json".to_owned()] {
            route.send(OutgoingMessage::new(body.clone())).await.unwrap();
        }
        assert_eq!(bodies(&batch).await, [b]);
        assert_eq!(bodies(&online).await, [o, old, "not json".to_owned()]);
    }

    #[tokio::test]
    async fn a_route_only_sends_and_its_backlog_is_both_queues() {
        let (online, batch) = (MemoryQueue::new("send"), MemoryQueue::new("batch"));
        let route = SendRouting::new(&online, &batch);
        route.send(OutgoingMessage::new(request(Some(SendMode::Batch)))).await.unwrap();
        route.send(OutgoingMessage::new(request(None))).await.unwrap();
        assert_eq!(route.stats().await.unwrap().visible, 2);
        assert!(route.receive(1, Duration::from_secs(1), Duration::ZERO).await.is_err());
        assert!(route.delete("r").await.is_err());
    }
}
