//! The dlq-replay use case: ops moves dead-lettered messages back, one checked message at a
//! time (receive, check, send, delete), instead of SQS's native redrive, because each message
//! needs the checks below:
//!
//! - the document is re-read: an ACCEPTED one is never requeued (its message is dropped), a
//!   REJECTED one is sent again only if its rejection was not about its content (the rule of a
//!   re-uploaded file, [`crate::resolve::send_again_change`]), a CONFLICT needs a person
//!   ([`crate::resolve`], the `resolve` event);
//! - KSeF is asked before a resend: a FAILED document whose last send's result is unknown is
//!   looked up by hash in that session; if KSeF has it, it goes to the status stage, not back to
//!   sending;
//! - a FAILED document gets a fresh retry budget; one that KSeF holds goes back to status
//!   polling through the state machine's own `Resumed` change (FAILED → SENT), never resent;
//! - filters (seller NIP, error class, minimum age) and a limit pick what moves; a dry run
//!   computes the very decisions a real run would carry out (a second message for a document
//!   already moved is a duplicate in both) and changes nothing;
//! - a message whose decision cannot be carried out (a store or queue error) is reported as
//!   `FAILED` with its reason and left in the DLQ; the replay goes on with the rest.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::{DocumentRegistry, DocumentUpdates, OutgoingMessage, Queue, QueueError, ReceivedMessage, StoreError};
use relay_domain::{Change, DocumentKey, DocumentRecord, DocumentState, Nip};
use serde::{Deserialize, Serialize};

use crate::messages::{SendRequest, StatusRequest};
use crate::sessions::KsefContexts;

/// The console event: `{"queue": "send", "limit": 50, "dry_run": true, "seller_nip": "...",
/// "error_class": "TRANSIENT", "min_age_minutes": 30}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Which DLQ: `send` or `status`.
    pub queue: String,
    /// At most this many messages are moved (default 10).
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Report only; change nothing (default false).
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub seller_nip: Option<Nip>,
    /// Only documents whose last error has this class (`TRANSIENT`, `RATE_LIMITED`, ...).
    #[serde(default)]
    pub error_class: Option<String>,
    /// Only documents in their current state for at least this long.
    #[serde(default)]
    pub min_age_minutes: Option<u64>,
}

fn default_limit() -> usize {
    10
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplayAction {
    /// Back to the send queue (a FAILED document with a fresh budget).
    RequeuedSend,
    /// Back to the status queue (a FAILED document that KSeF holds resumes polling).
    RequeuedStatus,
    /// Deleted from the DLQ: the document is final or needs a person, or another message for
    /// it was already moved by this replay.
    Dropped,
    /// Left in the DLQ (a filter, or nothing safe to do yet).
    Skipped,
    /// Carrying out the decision failed (a store or queue error); left in the DLQ, the rest of
    /// the replay went on. A dry run never reports this.
    Failed,
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayItem {
    pub document: Option<String>,
    pub action: ReplayAction,
    pub reason: String,
}

/// The answer to the console and the log line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    pub dry_run: bool,
    pub examined: usize,
    pub requeued: usize,
    pub dropped: usize,
    pub skipped: usize,
    /// Items whose decision could not be carried out (left in the DLQ).
    pub failed: usize,
    pub items: Vec<ReplayItem>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("unknown queue {0:?}: use send or status")]
    UnknownQueue(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

pub struct ReplayPorts<'a, S: DocumentRegistry + DocumentUpdates + ?Sized> {
    pub store: &'a S,
    pub send_dlq: &'a dyn Queue,
    pub status_dlq: &'a dyn Queue,
    pub send_queue: &'a dyn Queue,
    pub status_queue: &'a dyn Queue,
}

/// One message's decision. A dry run stops here; a real run carries it out with
/// [`carry_out`], so both report the very same decisions.
enum Decision {
    Send(DocumentRecord, String),
    Status(DocumentRecord, StatusRequest, String),
    Drop(String),
    Skip(String),
}

impl Decision {
    fn action(&self) -> ReplayAction {
        match self {
            Decision::Send(..) => ReplayAction::RequeuedSend,
            Decision::Status(..) => ReplayAction::RequeuedStatus,
            Decision::Drop(_) => ReplayAction::Dropped,
            Decision::Skip(_) => ReplayAction::Skipped,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Decision::Send(_, r) | Decision::Status(_, _, r) | Decision::Drop(r) | Decision::Skip(r) => r,
        }
    }
}

/// Replays up to `req.limit` messages from the chosen DLQ. One message whose decision cannot be
/// carried out is reported as [`ReplayAction::Failed`] and left in the DLQ; the others go on.
pub async fn replay<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &ReplayPorts<'_, S>,
    ksef: &KsefContexts,
    req: &ReplayRequest,
    now: DateTime<Utc>,
) -> Result<ReplaySummary, ReplayError> {
    let dlq = match req.queue.as_str() {
        "send" => ports.send_dlq,
        "status" => ports.status_dlq,
        other => return Err(ReplayError::UnknownQueue(other.to_owned())),
    };
    let mut summary = ReplaySummary {
        dry_run: req.dry_run,
        ..Default::default()
    };
    let mut seen = HashSet::new();
    // Documents this replay moved: a second message for one of them is a duplicate, in a dry
    // run and a real run alike (the real run would otherwise find the state it just wrote).
    let mut moved: HashSet<DocumentKey> = HashSet::new();
    let mut held: Vec<ReceivedMessage> = Vec::new();
    while summary.requeued < req.limit {
        let batch = dlq.receive(10, Duration::from_secs(120), Duration::ZERO).await?;
        if batch.is_empty() {
            break;
        }
        let mut fresh = false;
        for m in batch {
            if !seen.insert(m.message_id.clone()) {
                held.push(m);
                continue;
            }
            fresh = true;
            summary.examined += 1;
            let (key, decision) = match decide(ports, ksef, req, &m, &moved, now).await {
                Ok(decided) => decided,
                Err(e) => {
                    summary.failed += 1;
                    summary.items.push(ReplayItem {
                        document: None,
                        action: ReplayAction::Failed,
                        reason: format!("cannot decide: {e}; left in the DLQ"),
                    });
                    held.push(m);
                    continue;
                }
            };
            let document = key.as_ref().map(|k| k.to_string());
            let action = decision.action();
            let reason = decision.reason().to_owned();
            let keep = matches!(decision, Decision::Skip(_)) || req.dry_run;
            let carried = if req.dry_run {
                Ok(())
            } else {
                carry_out(ports, dlq, &m, decision, now).await
            };
            match carried {
                Ok(()) => {
                    match action {
                        ReplayAction::RequeuedSend | ReplayAction::RequeuedStatus => {
                            summary.requeued += 1;
                            moved.extend(key);
                        }
                        ReplayAction::Dropped => summary.dropped += 1,
                        ReplayAction::Skipped | ReplayAction::Failed => summary.skipped += 1,
                    }
                    summary.items.push(ReplayItem { document, action, reason });
                    if keep {
                        held.push(m);
                    }
                }
                Err(e) => {
                    tracing::warn!(document = ?document, error = %e, "dlq-replay: one message failed; going on");
                    summary.failed += 1;
                    summary.items.push(ReplayItem {
                        document,
                        action: ReplayAction::Failed,
                        reason: format!("{reason}, but that failed: {e}; left in the DLQ"),
                    });
                    held.push(m);
                }
            }
            if summary.requeued >= req.limit {
                break;
            }
        }
        if !fresh {
            break;
        }
    }
    // What stays in the DLQ becomes visible again at once, for the next replay or a person.
    for m in held {
        dlq.change_visibility(&m.receipt, Duration::ZERO).await?;
    }
    tracing::info!(queue = %req.queue, dry_run = req.dry_run, examined = summary.examined, requeued = summary.requeued, dropped = summary.dropped, skipped = summary.skipped, failed = summary.failed, "dlq-replay done");
    Ok(summary)
}

/// Carries out one decision of a real run: the state change, the new message, then the DLQ
/// message's deletion (so a failure part-way leaves the message to replay again).
async fn carry_out<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &ReplayPorts<'_, S>,
    dlq: &dyn Queue,
    m: &ReceivedMessage,
    decision: Decision,
    now: DateTime<Utc>,
) -> Result<(), ReplayError> {
    match decision {
        Decision::Skip(_) => {}
        Decision::Drop(_) => dlq.delete(&m.receipt).await?,
        Decision::Send(r, reason) => {
            let change = match r.state {
                DocumentState::Failed => Some(Change::Requeued {
                    reason: format!("dlq-replay: {reason}"),
                    reset_budget: true,
                }),
                DocumentState::Rejected => crate::resolve::send_again_change(&r, "dlq-replay"),
                _ => None,
            };
            let r = match change {
                Some(change) => ports.store.transition(&r, change, now).await?,
                None => r,
            };
            let msg = SendRequest::for_record(&r);
            ports
                .send_queue
                .send(OutgoingMessage::new(msg.to_json()).with_trace_id(&r.trace_id))
                .await?;
            dlq.delete(&m.receipt).await?;
        }
        Decision::Status(r, status, reason) => {
            let r = if r.state == DocumentState::Failed {
                let change = Change::Resumed {
                    session: status.session.clone(),
                    invoice_reference: status.invoice_reference.clone(),
                    reason: format!("dlq-replay: {reason}"),
                };
                ports.store.transition(&r, change, now).await?
            } else {
                r
            };
            // For the step the resume just wrote (or the record's current one).
            let status = StatusRequest { step: r.step, ..status };
            ports
                .status_queue
                .send(OutgoingMessage::new(status.to_json()).with_trace_id(&r.trace_id))
                .await?;
            dlq.delete(&m.receipt).await?;
        }
    }
    Ok(())
}

async fn decide<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &ReplayPorts<'_, S>,
    ksef: &KsefContexts,
    req: &ReplayRequest,
    m: &ReceivedMessage,
    moved: &HashSet<DocumentKey>,
    now: DateTime<Utc>,
) -> Result<(Option<DocumentKey>, Decision), ReplayError> {
    let key = SendRequest::from_json(&m.body)
        .map(|r| r.document)
        .or_else(|_| StatusRequest::from_json(&m.body).map(|r| r.document));
    let Ok(key) = key else {
        return Ok((None, Decision::Skip("not a send or status request; left for a person".into())));
    };
    if moved.contains(&key) {
        return Ok((
            Some(key),
            Decision::Drop("a duplicate: this replay already moved another message for this document".into()),
        ));
    }
    let Some(doc) = ports.store.get(&key).await? else {
        return Ok((Some(key), Decision::Skip("the store does not know this document".into())));
    };
    let r = doc.record;
    if req.seller_nip.as_ref().is_some_and(|n| *n != r.key.seller_nip) {
        return Ok((Some(key), Decision::Skip("another seller NIP (filter)".into())));
    }
    if let Some(class) = &req.error_class {
        if r.last_error.as_ref().map(|f| f.class.name()) != Some(class.as_str()) {
            return Ok((Some(key), Decision::Skip(format!("last error is not {class} (filter)"))));
        }
    }
    if let Some(min) = req.min_age_minutes {
        if now - r.state_since < chrono::Duration::minutes(min as i64) {
            return Ok((
                Some(key),
                Decision::Skip(format!("in {} for less than {min} min (filter)", r.state)),
            ));
        }
    }
    match r.state {
        DocumentState::Accepted => Ok((Some(key), Decision::Drop("already ACCEPTED: never sent again".into()))),
        // Rejected for something other than its content (an operator's problem recorded before
        // it had its own class): sent again, as when the ERP uploads the same file again.
        DocumentState::Rejected if r.may_send_again() => Ok((
            Some(key),
            Decision::Send(
                r,
                "REJECTED, but not for its content: fresh retry budget, back to the send stage".into(),
            ),
        )),
        DocumentState::Rejected | DocumentState::Conflict => Ok((
            Some(key),
            Decision::Drop(format!(
                "{}: needs a correction or a person, not a retry (a CONFLICT is resolved with {{\"resolve\": ...}})",
                r.state
            )),
        )),
        DocumentState::Queued => Ok((Some(key), Decision::Send(r, "still QUEUED: back to the send stage".into()))),
        DocumentState::Sent | DocumentState::Processing => match (r.ksef.session_reference.clone(), r.ksef.invoice_reference.clone()) {
            (Some(session), Some(inv)) => {
                let reason = format!("{}: back to the status stage", r.state);
                let status = StatusRequest::first(&r, session, inv);
                Ok((Some(key), Decision::Status(r, status, reason)))
            }
            _ => Ok((
                Some(key),
                Decision::Skip("SENT without KSeF references: inconsistent, left for a person".into()),
            )),
        },
        DocumentState::Failed => {
            // Ask KSeF before sending again: the failed attempts may have reached it after all.
            if let (Some(session), Some(inv)) = (r.ksef.session_reference.clone(), r.ksef.invoice_reference.clone()) {
                let status = StatusRequest::first(&r, session, inv);
                return Ok((
                    Some(key),
                    Decision::Status(r, status, "FAILED while KSeF was processing it: status checked again".into()),
                ));
            }
            if let Some(session) = r.ksef.unconfirmed_send.clone() {
                match ksef.find_live_invoice(&r.key.seller_nip, &session, &r.content_hash).await {
                    Ok(Some(inv)) => {
                        let status = StatusRequest::first(&r, session, inv);
                        return Ok((
                            Some(key),
                            Decision::Status(
                                r,
                                status,
                                "KSeF has it after all (found by hash): status checked, not resent".into(),
                            ),
                        ));
                    }
                    Ok(None) => {}
                    Err(f) => {
                        return Ok((
                            Some(key),
                            Decision::Skip(format!("cannot ask KSeF before a resend ({f}); try again later")),
                        ))
                    }
                }
            }
            Ok((
                Some(key),
                Decision::Send(
                    r,
                    "FAILED: fresh retry budget, back to the send stage (it reconciles before resending)".into(),
                ),
            ))
        }
    }
}
