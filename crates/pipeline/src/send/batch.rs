//! The batch channel: an invoice with an attachment (KSeF takes `Zalacznik` only in batch) goes
//! in a batch session of its own: open (SB), record SendStarted, upload the encrypted part,
//! close. Nothing is known about the invoice until KSeF has processed the session, so the send
//! stays unconfirmed (`AwaitingBatch`) and later attempts reconcile against the session
//! ([`ksef_client::BatchInvoice`]): while it is processing they wait, a session left open by a
//! crash is closed, and only a final session that does not list our hash counts as "not
//! received" (charged, then sent in a new batch).

use std::time::Duration;

use ksef_client::batch::MAX_PART_SIZE;
use ksef_client::{BatchArchive, BatchInvoice};
use relay_domain::{Change, DocumentRecord, ErrorClass, KsefReference};

use super::attempt::{again, until, Attempt, Channel, Reconciled, SendStore};
use crate::queue_action::{done, StageError, StageResult};

pub(super) struct Batch;

impl Channel for Batch {
    async fn reconcile<S: SendStore + ?Sized>(
        &self,
        a: &Attempt<'_, S>,
        r: DocumentRecord,
        session: KsefReference,
    ) -> Result<Reconciled, StageError> {
        let wait = batch_wait(a);
        let found = match a.client.find_in_batch(session.as_str(), &r.content_hash).await {
            Ok(found) => found,
            Err(f) => return a.read_failed(r, f).await.map(Reconciled::Decided),
        };
        let decided = match found {
            BatchInvoice::SessionOpen => return close_left_open(a, r, session, wait).await,
            // Any copy with our hash is ours, whatever its status: the status stage accepts,
            // rejects (with KSeF's words) or resends it.
            BatchInvoice::Listed(invoice_reference) => a.sent(&r, session, invoice_reference, "RECONCILED_SENT").await,
            BatchInvoice::ListedUnreadable(f) => a.fail(r, f, true).await,
            // Absence means something only once the session is final: KSeF may not have listed
            // it yet.
            BatchInvoice::NotYet { status } => {
                let detail = format!("batch session {session}: {status}, our invoice not listed yet; checking again later");
                await_batch(a, &r, detail, wait, "BATCH_PROCESSING").await
            }
            // Charged, so a batch that keeps failing ends in FAILED rather than a loop.
            BatchInvoice::Missing(f) => a.fail(r, f, false).await,
        };
        decided.map(Reconciled::Decided)
    }

    async fn submit<S: SendStore + ?Sized>(&self, a: &Attempt<'_, S>, r: DocumentRecord, bytes: &[u8]) -> Result<StageResult, StageError> {
        let archive = match BatchArchive::zip(&[(format!("{}.xml", r.content_hash.to_hex()), bytes.to_vec())]) {
            Ok(archive) => archive,
            Err(f) => return a.fail(r, f, false).await,
        };
        // Opening sends no invoice: a failure here cannot hide a receipt.
        let batch = match a.client.open_batch_session(&archive, MAX_PART_SIZE, r.offline).await {
            Ok(b) => b,
            Err(f) => return a.fail(r, f, false).await,
        };
        let (r, batch_ref) = match a.send_started(r, &batch.reference).await? {
            Ok(started) => started,
            Err(answer) => return Ok(answer),
        };
        tracing::info!(document = %r.key, trace_id = %r.trace_id, seller_nip = %r.key.seller_nip, session = %batch_ref, "invoice with an attachment: sending in a batch session");
        // From here on KSeF may end up with the invoice. A refused upload (429, 4xx) left the
        // batch without its part, so it can never carry the invoice: the next attempt opens a new
        // one. A transient failure may hide a stored part: the next attempt reconciles (closes)
        // first.
        if let Err(f) = a.client.upload_batch_parts(&batch).await {
            let maybe_stored = f.class == ErrorClass::Transient;
            return a.fail(r, f, maybe_stored).await;
        }
        if let Err(f) = a.client.close_batch_session(&batch.reference).await {
            return a.fail(r, f, true).await;
        }
        let detail = format!("batch session {batch_ref} closed; KSeF is processing it");
        await_batch(a, &r, detail, a.cfg.first_poll_delay, "BATCH_CLOSED").await
    }
}

/// A batch session opened but never closed (a crash, or a failed upload or close): close it
/// now. With the part uploaded KSeF processes it; without, it refuses and nothing was received.
async fn close_left_open<S: SendStore + ?Sized>(
    a: &Attempt<'_, S>,
    r: DocumentRecord,
    session: KsefReference,
    wait: Duration,
) -> Result<Reconciled, StageError> {
    let decided = match a.client.close_batch_session(session.as_str()).await {
        Ok(()) => {
            let detail = format!("batch session {session} was left open by an earlier attempt; closed it");
            await_batch(a, &r, detail, wait, "BATCH_CLOSED").await
        }
        Err(f)
            if matches!(
                f.class,
                ErrorClass::Transient | ErrorClass::RateLimited { .. } | ErrorClass::NeedsReauth
            ) =>
        {
            if f.class == ErrorClass::NeedsReauth {
                a.client.forget_access_token().await;
            }
            a.fail(r, f, true).await
        }
        Err(f) => {
            let detail = format!(
                "batch session {session} could not be closed ({}): KSeF did not take the earlier attempt; sending again",
                f.message
            );
            let r = a.ports.store.transition(&r, Change::Reconciled { detail }, a.now).await?;
            return Ok(Reconciled::NotReceived(r));
        }
    };
    decided.map(Reconciled::Decided)
}

/// How long to wait before looking at a batch session again: a quarter of the time since the
/// send, between the first poll delay and 15 minutes (seconds at first, minutes for a slow one).
fn batch_wait<S: SendStore + ?Sized>(a: &Attempt<'_, S>) -> Duration {
    let first = a.cfg.first_poll_delay;
    let elapsed = a.sent_at.map(|t| until(t, a.now)).unwrap_or_default();
    (elapsed / 4).clamp(first, Duration::from_secs(15 * 60).max(first))
}

/// KSeF has the batch (or may have it): the send stays unconfirmed, checked again after `wait`.
async fn await_batch<S: SendStore + ?Sized>(
    a: &Attempt<'_, S>,
    r: &DocumentRecord,
    detail: String,
    wait: Duration,
    outcome: &'static str,
) -> Result<StageResult, StageError> {
    let check_at = a.now + chrono::Duration::from_std(wait).unwrap_or_default();
    let r = a
        .ports
        .store
        .transition(r, Change::AwaitingBatch { detail, check_at }, a.now)
        .await?;
    done(again(&r, wait), outcome, Some(r))
}
