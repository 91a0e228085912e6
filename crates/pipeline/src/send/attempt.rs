//! One attempt at a claimed document: what its steps share, whatever the channel. The
//! [`Channel`] interface every channel implements, and [`Attempt`]: SENT with its status check,
//! and the retry policy applied to a failure ([`on_failure`]) or to a failed reconciliation read;
//! and the stage's ports and settings.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ksef_client::KsefClient;
use relay_domain::ports::{DocumentClaims, DocumentRegistry, DocumentUpdates, OutgoingMessage};
use relay_domain::{Change, Charge, DocumentRecord, ErrorClass, ErrorSource, Failure, KsefReference, RetryDecision, RetryPolicy};

use crate::follow_up::FollowUpPorts;
use crate::messages::{report_for_correction, SendRequest, StatusRequest};
use crate::outbox::give_up;
use crate::queue_action::{done, QueueAction, StageError, StageResult};
use crate::sessions::KsefContexts;

/// What the send use case needs of the document store.
pub trait SendStore: DocumentRegistry + DocumentClaims + DocumentUpdates {}
impl<T: DocumentRegistry + DocumentClaims + DocumentUpdates + ?Sized> SendStore for T {}

/// The ports the send use case needs: a stage's store, outbox and queues (its own queue too: a
/// leftover message that finds its document's follow-up lost re-issues it).
pub type SendPorts<'a, S> = FollowUpPorts<'a, S>;

/// Tunables, from the function's settings.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub policy: RetryPolicy,
    /// Who holds the lease (the function instance).
    pub owner: String,
    pub lease: Duration,
    /// When to ask KSeF for the status the first time.
    pub first_poll_delay: Duration,
}

/// The outcome of a document parked for an operator's problem it met itself.
pub(super) const OPERATOR_PARKED: &str = "OPERATOR_PARKED";
/// A way to KSeF. Each channel submits in its own way and reconciles the sends it left
/// unconfirmed; the claim, the seller's gate, SENT and the retry policy are the stage's
/// ([`Attempt`]).
pub(super) trait Channel {
    /// The send in `session` has no known result (a timeout, a crash, a batch KSeF has not
    /// processed yet): find out whether KSeF has the invoice before anything is sent again.
    async fn reconcile<S: SendStore + ?Sized>(
        &self,
        a: &Attempt<'_, S>,
        r: DocumentRecord,
        session: KsefReference,
    ) -> Result<Reconciled, StageError>;

    /// Sends the invoice's exact `bytes`: SendStarted before KSeF can receive anything.
    async fn submit<S: SendStore + ?Sized>(&self, a: &Attempt<'_, S>, r: DocumentRecord, bytes: &[u8]) -> Result<StageResult, StageError>;
}

/// What reconciling an unconfirmed send found.
pub(super) enum Reconciled {
    /// The attempt is decided (sent, waiting, retry scheduled).
    Decided(StageResult),
    /// KSeF did not take the invoice: send it again (the record says so).
    NotReceived(DocumentRecord),
}

/// One attempt at a claimed document, with its seller's client ready: what its steps share.
pub(super) struct Attempt<'a, S: SendStore + ?Sized> {
    pub ports: &'a SendPorts<'a, S>,
    pub ksef: &'a KsefContexts,
    pub cfg: &'a SendConfig,
    pub client: Arc<KsefClient>,
    /// When the document's last send was started (its history).
    pub sent_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

impl<S: SendStore + ?Sized> Attempt<'_, S> {
    /// KSeF has the invoice as `invoice_reference`: SENT, and a status check queued.
    pub async fn sent(
        &self,
        r: &DocumentRecord,
        session: KsefReference,
        invoice_reference: KsefReference,
        outcome: &'static str,
    ) -> Result<StageResult, StageError> {
        let r = self.record_sent(r, session.clone(), invoice_reference.clone()).await?;
        let msg = StatusRequest::first(&r, session, invoice_reference);
        self.queue_status(&r, msg.to_json(), self.cfg.first_poll_delay).await?;
        done(QueueAction::Delete, outcome, Some(r))
    }

    /// SENT, with nothing queued yet: the caller queues what follows. A death before that is
    /// caught up by the send message itself (redelivered, it finds the record a step ahead and
    /// re-drives it once its status check is due) or by the sweeper.
    pub async fn record_sent(
        &self,
        r: &DocumentRecord,
        session: KsefReference,
        invoice_reference: KsefReference,
    ) -> Result<DocumentRecord, StageError> {
        let change = Change::Sent {
            session,
            invoice_reference,
        };
        Ok(self.ports.store.transition(r, change, self.now).await?)
    }

    /// Queues a status-stage message for `r`.
    pub async fn queue_status(&self, r: &DocumentRecord, body: String, delay: Duration) -> Result<(), StageError> {
        self.ports
            .status_queue
            .send(OutgoingMessage::new(body).with_trace_id(&r.trace_id).delayed(delay))
            .await?;
        Ok(())
    }

    /// Records "about to send" in the session KSeF opened (`raw`: its reference) before KSeF
    /// can receive anything. The record and the session, or the stage's answer when the
    /// reference does not parse.
    pub async fn send_started(
        &self,
        r: DocumentRecord,
        raw: &str,
    ) -> Result<Result<(DocumentRecord, KsefReference), StageResult>, StageError> {
        let Ok(session) = KsefReference::parse(raw) else {
            let f = relay_failure(
                format!("KSeF opened a session with an unreadable reference {raw:?}"),
                "BAD_REFERENCE",
            );
            return self.fail(r, f, false).await.map(Err);
        };
        let change = Change::SendStarted { session: session.clone() };
        let r = self.ports.store.transition(&r, change, self.now).await?;
        Ok(Ok((r, session)))
    }

    /// The attempt failed with `f`: the retry policy decides ([`on_failure`]).
    pub async fn fail(&self, r: DocumentRecord, f: Failure, maybe_received: bool) -> Result<StageResult, StageError> {
        on_failure(self.ports, self.cfg, r, f, maybe_received, self.now).await
    }

    /// A reconciliation read failed (is our invoice in that session?). It sent nothing and says
    /// nothing about the invoice: it spends the recovery limit, never the send budget, and is
    /// never a rejection. The unconfirmed send stays unconfirmed.
    pub async fn read_failed(&self, r: DocumentRecord, f: Failure) -> Result<StageResult, StageError> {
        let (cfg, now) = (self.cfg, self.now);
        let recoveries = r.recoveries + 1;
        let (delay, outcome) = match cfg.policy.decide_read_now(&f.class, recoveries, now) {
            RetryDecision::RetryAfter { delay } => (delay, "RETRY"),
            RetryDecision::FixAndRetry => (Duration::ZERO, "RETRY"),
            RetryDecision::Exhausted => {
                let f = Failure {
                    message: format!(
                        "{} (reconciliation read; {} recoveries spent, the limit is {})",
                        f.message,
                        r.recoveries,
                        cfg.policy.max_recoveries()
                    ),
                    ..f
                };
                return give_up(self.ports.store, self.ports.archive, &r, f, now).await;
            }
            // A rate limit or an operator's problem: the same as for any call, uncharged.
            _ => return self.fail(r, f, true).await,
        };
        relay_observe::logging::note_error_class(f.class.name());
        tracing::warn!(document = %r.key, trace_id = %r.trace_id, class = f.class.name(), code = ?f.code, recoveries, "reconciliation read failed");
        let retry_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
        let change = Change::RecoveryScheduled {
            failure: f,
            retry_at,
            maybe_received: true,
        };
        let r = self.ports.store.transition(&r, change, now).await?;
        done(again(&r, delay), outcome, Some(r))
    }
}

pub(super) fn relay_failure(message: impl Into<String>, code: &str) -> Failure {
    // Our own inability to proceed (missing credentials, missing bytes) is technical: it ends in
    // FAILED and an alarm, never in REJECTED, which would blame the invoice.
    Failure::new(ErrorClass::Transient, ErrorSource::Relay, message).with_code(code)
}

pub(super) fn until(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or_default()
}

/// The same document's next send attempt, after `delay`, for the step just written.
pub(super) fn again(r: &DocumentRecord, delay: Duration) -> QueueAction {
    QueueAction::Replace {
        body: SendRequest::for_record(r).to_json(),
        delay,
    }
}

/// Classifies `f` with the retry policy and records the decision.
pub(super) async fn on_failure<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    r: DocumentRecord,
    f: Failure,
    maybe_received: bool,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let charge = RetryPolicy::charge(&f.class);
    let charged = charge == Charge::Attempt;
    let spent = match charge {
        Charge::Attempt => r.attempts + 1,
        Charge::Recovery => r.recoveries + 1,
        Charge::Nothing => r.attempts,
    };
    relay_observe::logging::note_error_class(f.class.name());
    tracing::warn!(document = %r.key, trace_id = %r.trace_id, class = f.class.name(), code = ?f.code, attempts = r.attempts + u32::from(charged), recoveries = r.recoveries, "send attempt failed");
    let retry = |retry_at: DateTime<Utc>, charged: bool| Change::RetryScheduled {
        failure: f.clone(),
        retry_at,
        charged,
        maybe_received,
    };
    match cfg.policy.decide_now(&f.class, spent, now) {
        RetryDecision::RetryAfter { delay } => {
            let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            let r = ports.store.transition(&r, retry(at, charged), now).await?;
            done(again(&r, delay), "RETRY", Some(r))
        }
        RetryDecision::FixAndRetry => {
            // A new session or login: nothing was sent, so the recovery limit pays, not the budget.
            let change = Change::RecoveryScheduled {
                failure: f.clone(),
                retry_at: now,
                maybe_received,
            };
            let r = ports.store.transition(&r, change, now).await?;
            done(again(&r, Duration::ZERO), "RETRY", Some(r))
        }
        RetryDecision::ParkUntil { until: t } => {
            let r = ports.store.transition(&r, retry(t, false), now).await?;
            done(again(&r, until(now, t)), "PARKED", Some(r))
        }
        RetryDecision::ParkForOperator => {
            // Not the invoice's fault and not charged; `send` parks the seller's work (the wait
            // grows with the seller's strikes) and the alarm fires.
            let t = now + chrono::Duration::from_std(RetryPolicy::operator_wait(1, 0.0)).unwrap_or_default();
            let r = ports.store.transition(&r, retry(t, false), now).await?;
            done(again(&r, until(now, t)), OPERATOR_PARKED, Some(r))
        }
        RetryDecision::Exhausted => {
            let f = match charge {
                Charge::Recovery => Failure {
                    message: format!(
                        "{} ({} recoveries (new sessions, logins, reconciliation reads) spent, the limit is {})",
                        f.message,
                        r.recoveries,
                        cfg.policy.max_recoveries()
                    ),
                    ..f
                },
                _ => f,
            };
            give_up(ports.store, ports.archive, &r, f, now).await
        }
        RetryDecision::Reject => {
            let r = ports
                .store
                .transition(&r, Change::Rejected { failures: vec![f.clone()] }, now)
                .await?;
            report_for_correction(ports.archive, ports.corrections_queue, &r, "REJECTED", f).await?;
            done(QueueAction::Delete, "REJECTED", Some(r))
        }
        RetryDecision::ResolveDuplicate => {
            // KSeF reports duplicates through the invoice status, where the status function
            // proves whether the original is ours; a synchronous duplicate cannot be proven here.
            let r = ports.store.transition(&r, Change::Conflict { failure: f.clone() }, now).await?;
            report_for_correction(ports.archive, ports.corrections_queue, &r, "CONFLICT", f).await?;
            done(QueueAction::Delete, "CONFLICT", Some(r))
        }
    }
}
