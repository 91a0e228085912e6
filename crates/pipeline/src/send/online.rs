//! The online channel: the invoice goes alone in the seller's shared online session, and KSeF's
//! 202 names it at once. An unconfirmed send (a timeout, a 5xx, a crash after the POST) is
//! reconciled by looking for our hash among the session's live invoices; a copy KSeF cancelled
//! (550, 405) does not count, it was not kept.

use ksef_client::{CorrectionSent, SendOptions};
use relay_domain::{Change, DocumentRecord, ErrorClass, Failure, KsefReference};

use super::attempt::{relay_failure, Attempt, Channel, Reconciled, SendStore};
use crate::messages::report_for_correction;
use crate::queue_action::{done, QueueAction, StageError, StageResult};

pub(super) struct Online;

impl Channel for Online {
    async fn reconcile<S: SendStore + ?Sized>(
        &self,
        a: &Attempt<'_, S>,
        r: DocumentRecord,
        session: KsefReference,
    ) -> Result<Reconciled, StageError> {
        let decided = match a.ksef.find_live_invoice(&r.key.seller_nip, &session, &r.content_hash).await {
            Ok(Some(invoice_reference)) => a.sent(&r, session, invoice_reference, "RECONCILED_SENT").await,
            Ok(None) => {
                let detail = format!(
                    "session {session} holds no live invoice with hash {}: KSeF did not take the earlier attempt (or cancelled it); sending again",
                    r.content_hash
                );
                let r = a.ports.store.transition(&r, Change::Reconciled { detail }, a.now).await?;
                return Ok(Reconciled::NotReceived(r));
            }
            Err(f) => a.read_failed(r, f).await,
        };
        decided.map(Reconciled::Decided)
    }

    async fn submit<S: SendStore + ?Sized>(&self, a: &Attempt<'_, S>, r: DocumentRecord, bytes: &[u8]) -> Result<StageResult, StageError> {
        let seller = r.key.seller_nip.clone();
        let session = match a.ksef.session(&seller, a.now).await {
            Ok(s) => s,
            Err(f) => return a.fail(r, f, false).await,
        };
        // Record "about to send" before the POST.
        let (r, session_ref) = match a.send_started(r, &session.reference).await? {
            Ok(started) => started,
            Err(answer) => return Ok(answer),
        };
        // A technical correction goes with offlineMode true and the rejected file's hash.
        let answer = match &r.corrects {
            Some(c) => a.client.send_technical_correction(&session, bytes, c.content_hash).await,
            None => {
                let opts = SendOptions {
                    offline_mode: r.offline,
                    hash_of_corrected_invoice: None,
                };
                a.client.send_invoice(&session, bytes, &opts).await.map(CorrectionSent::Sent)
            }
        };
        match answer {
            Ok(CorrectionSent::AlreadyAccepted(f)) => already_corrected(a, r, f).await,
            Ok(CorrectionSent::Sent(sent)) => {
                let Ok(invoice_reference) = KsefReference::parse(&sent.reference) else {
                    let f = relay_failure(
                        format!("KSeF answered with an unreadable invoice reference {:?}", sent.reference),
                        "BAD_REFERENCE",
                    );
                    return a.fail(r, f, true).await;
                };
                a.sent(&r, session_ref, invoice_reference, "SENT").await
            }
            Err(f) => {
                if f.class == ErrorClass::NeedsNewSession {
                    a.ksef.drop_session(&seller, &session.reference).await;
                }
                if f.class == ErrorClass::NeedsReauth {
                    a.client.forget_access_token().await;
                }
                // Only a transient failure (timeout, reset, 5xx) may hide a receipt; KSeF refused
                // everything else outright.
                let maybe_received = f.class == ErrorClass::Transient;
                a.fail(r, f, maybe_received).await
            }
        }
    }
}

/// KSeF answered 21166: a technical correction of that invoice is already accepted. Ours, sent
/// earlier and lost track of (a crash after the POST in a session no longer recorded): found by
/// hash among the seller's online sessions since the document was registered, it is SENT there
/// and polled, never sent again. Not found: KSeF holds another correction of that invoice, a
/// person decides (CONFLICT); never REJECTED, the invoice's content is not at fault.
async fn already_corrected<S: SendStore + ?Sized>(a: &Attempt<'_, S>, r: DocumentRecord, f: Failure) -> Result<StageResult, StageError> {
    match a
        .ksef
        .find_live_invoice_since(&r.key.seller_nip, r.created_at, &r.content_hash)
        .await
    {
        Ok(Some((session, invoice_reference))) => a.sent(&r, session, invoice_reference, "RECONCILED_SENT").await,
        Ok(None) => {
            let f = Failure {
                message: format!(
                    "{} KSeF holds a technical correction of the invoice with hash {} that is not this file ({}): a person decides",
                    f.message,
                    r.corrects.as_ref().map(|c| c.content_hash.to_string()).unwrap_or_default(),
                    r.content_hash
                ),
                ..f
            }
            .with_code("TECHNICAL_CORRECTION_ACCEPTED_ELSEWHERE");
            let r = a.ports.store.transition(&r, Change::Conflict { failure: f.clone() }, a.now).await?;
            report_for_correction(a.ports.archive, a.ports.corrections_queue, &r, "CONFLICT", f).await?;
            done(QueueAction::Delete, "CONFLICT", Some(r))
        }
        Err(f) => a.read_failed(r, f).await,
    }
}
