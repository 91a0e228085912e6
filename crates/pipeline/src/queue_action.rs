//! What a queue-driven handler does with the message it was given, decided by the use case
//! and carried out by the Lambda handler or the local runner in the same way.
//!
//! Delays are carried out by sending a fresh copy of the message with `DelaySeconds` (at most
//! 15 minutes; a longer wait is walked in 15-minute hops, each checking the document's
//! `next_attempt_at`) and deleting the original. Unlike stretching the visibility timeout, this
//! keeps each message's receive count at one in normal operation, so SQS's own redrive to the
//! DLQ (maxReceiveCount) fires only for what it is meant for: a handler that keeps crashing.
//! The retry budget is the document's, counted in the store, and exhausting it sends the
//! message to the DLQ explicitly.

use std::time::Duration;

use relay_domain::ports::{OutgoingMessage, Queue, QueueError, ReceivedMessage, MAX_DELAY};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueAction {
    /// Done with: delete the message.
    Delete,
    /// Try again after `delay`: a fresh copy with that delay (capped at 15 min), then delete.
    Requeue { delay: Duration },
    /// Like `Requeue`, with a new body (the status poll counter moves on).
    Replace { body: String, delay: Duration },
    /// Give up on it: copy it to the dead-letter queue (an alarm fires there), then delete.
    DeadLetter,
    /// Leave it: it comes back after its visibility timeout (the work could not even be judged).
    Release,
}

/// Carries out `action` for `message` taken from `queue`.
pub async fn apply(action: &QueueAction, message: &ReceivedMessage, queue: &dyn Queue, dlq: &dyn Queue) -> Result<(), QueueError> {
    let copy = || {
        let mut m = OutgoingMessage::new(message.body.clone());
        m.attributes = message.attributes.clone();
        m
    };
    match action {
        QueueAction::Delete => queue.delete(&message.receipt).await,
        QueueAction::Requeue { delay } => {
            queue.send(copy().delayed((*delay).min(MAX_DELAY))).await?;
            queue.delete(&message.receipt).await
        }
        QueueAction::Replace { body, delay } => {
            let mut m = OutgoingMessage::new(body.clone());
            m.attributes = message.attributes.clone();
            queue.send(m.delayed((*delay).min(MAX_DELAY))).await?;
            queue.delete(&message.receipt).await
        }
        QueueAction::DeadLetter => {
            dlq.send(copy()).await?;
            queue.delete(&message.receipt).await
        }
        QueueAction::Release => Ok(()),
    }
}
