//! Offline invoices at the moment they are sent: the check every claimed document passes before
//! its channel sends it (the online channel and every batch member).
//!
//! 1. The mode: the ERP's marking from the record, or the relay's own when the invoice goes
//!    after its issue day (`P_1`'s calendar day, Polish time, before today): KSeF files such an
//!    invoice Offline anyway (API-NOTES §10), so the relay sends it with `offlineMode: true` and
//!    gives it offline24's deadline.
//! 2. The legal deadline, again, with the declared failure windows known now (the shared
//!    availability state): a failure declared since registration moves it.
//! 3. An offline invoice's QR codes: KOD I labelled OFFLINE and KOD II signed with the seller's
//!    Offline certificate ([`crate::qr_codes::write_offline_codes`]), named in the outbox. For
//!    an invoice the ERP marked offline, a seller without an Offline certificate gets
//!    `OFFLINE_CERTIFICATE_MISSING` (an operator's problem, never REJECTED) in the document's
//!    history and the ERP's outbox, once; the invoice is sent all the same (delivering it in
//!    time is the legal duty; the codes are for its printout), and the codes are tried again
//!    at every later attempt until they are written. An invoice the relay marked (sent late)
//!    gets its codes when the seller has an Offline certificate, and no error when it has none.
//!
//! One write ([`Change::OfflineChecked`]) records all three, only when something changed, and
//! keeps the claim: the same attempt goes on to send. What a death leaves: after the codes,
//! before the write, the next attempt writes them again (KOD I is the same bytes, KOD II keeps
//! its first link); after the write, the next attempt finds nothing to change; after the
//! outbox, nothing is left to do.

use chrono::{DateTime, Utc};
use relay_domain::polish_calendar::is_offline_at;
use relay_domain::{Change, DocumentRecord, FailureWindow, OfflineCodes, OfflineMode};

use crate::outbox::OutboxResult;
use crate::queue_action::StageError;
use crate::send::{SendPorts, SendStore};
use crate::sessions::KsefContexts;

/// The mode `r` is sent in at `now`: the ERP's marking; else the declared window's when it
/// arrived during a declared unavailability of its issue day
/// ([`relay_domain::offline::declared_mode`]: held while KSeF was declared down, it could not be
/// issued online); else the relay's when it is late.
pub fn mode_at(r: &DocumentRecord, now: DateTime<Utc>, windows: &[FailureWindow]) -> Option<OfflineMode> {
    r.offline_mode
        .or_else(|| {
            r.issue_date
                .and_then(|issued| relay_domain::offline::declared_mode(issued, r.created_at, windows))
        })
        .or_else(|| {
            r.issue_date
                .filter(|issued| is_offline_at(*issued, now))
                .map(|_| OfflineMode::SentAfterIssueDay)
        })
}

/// The check before a send (see the module's docs): the record to send, as written. `windows`:
/// the declared failure windows of the environment `ksef` sends to (from the availability the
/// send read, [`crate::availability::AvailabilityLook::declared_failures`]).
pub async fn check<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    r: DocumentRecord,
    windows: &[FailureWindow],
    now: DateTime<Utc>,
) -> Result<DocumentRecord, StageError> {
    let Some(issued) = r.issue_date else {
        return Ok(r);
    };
    let mode = mode_at(&r, now, windows);
    let deadline = relay_domain::offline::legal_deadline(mode, issued, windows);
    let newly_offline = mode.is_some() && r.offline_mode != mode;
    let codes = match mode {
        Some(_) if r.offline_codes != OfflineCodes::Written => {
            match crate::qr_codes::write_offline_codes(ports.archive, ksef, &r, now).await? {
                Ok(_) => Some(Ok(())),
                // Only the ERP's marking claims the invoice went out offline, with its codes; one
                // merely sent late gets them when the seller has an Offline certificate. Recorded
                // once: later attempts try again quietly.
                Err(f) if r.offline_codes == OfflineCodes::NotMade && mode != Some(OfflineMode::SentAfterIssueDay) => {
                    tracing::error!(document = %r.key, trace_id = %r.trace_id, code = ?f.code, error = %f.message, "an offline invoice's QR codes could not be made; it is sent all the same");
                    Some(Err(f))
                }
                Err(_) => None,
            }
        }
        _ => None,
    };
    if !newly_offline && r.legal_deadline.as_ref() == Some(&deadline) && codes.is_none() {
        return Ok(r);
    }
    let report = codes.clone();
    let r = ports
        .store
        .transition(&r, Change::OfflineChecked { mode, deadline, codes }, now)
        .await?;
    // The ERP learns the codes (or why there are none) before KSeF numbers the invoice.
    match report {
        Some(Ok(())) => OutboxResult::for_record(&r, Vec::new()).publish(ports.archive).await?,
        Some(Err(f)) => OutboxResult::for_record(&r, vec![f]).publish(ports.archive).await?,
        None => {}
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use relay_domain::{
        ContentHash, DocumentKey, ErpDocumentId, InitialState, InvoiceKind, InvoiceNumber, NewDocument, Nip, SendMode, StorageKeys, TraceId,
    };

    fn record(issued: NaiveDate, marked: Option<OfflineMode>) -> DocumentRecord {
        let new = NewDocument {
            key: DocumentKey::new(
                Nip::parse("9999999999").unwrap(),
                InvoiceKind::Vat,
                InvoiceNumber::parse("FV/1").unwrap(),
            ),
            content_hash: ContentHash::of(b"x"),
            content_size: 1,
            trace_id: TraceId::parse("t").unwrap(),
            erp_document_id: ErpDocumentId::parse("erp").unwrap(),
            storage: StorageKeys::default(),
            offline_mode: marked,
            issue_date: Some(issued),
            send_mode: SendMode::Online,
            send_mode_reason: None,
            initial: InitialState::Queued,
        };
        DocumentRecord::register(new, Utc::now()).record
    }

    #[test]
    fn late_is_by_the_polish_calendar_day_and_the_erps_marking_wins() {
        let issued = NaiveDate::from_ymd_opt(2026, 2, 12).unwrap();
        // 22:30 UTC on the 12th is 23:30 in Warsaw: still the issue day.
        assert_eq!(
            mode_at(&record(issued, None), Utc.with_ymd_and_hms(2026, 2, 12, 22, 30, 0).unwrap(), &[]),
            None
        );
        // 23:30 UTC is 00:30 on the 13th in Warsaw: late, marked by the relay.
        assert_eq!(
            mode_at(&record(issued, None), Utc.with_ymd_and_hms(2026, 2, 12, 23, 30, 0).unwrap(), &[]),
            Some(OfflineMode::SentAfterIssueDay)
        );
        let failure = record(issued, Some(OfflineMode::Failure));
        assert_eq!(
            mode_at(&failure, Utc.with_ymd_and_hms(2026, 2, 20, 9, 0, 0).unwrap(), &[]),
            Some(OfflineMode::Failure)
        );
    }

    #[test]
    fn an_invoice_registered_during_a_declared_window_goes_in_its_mode_and_the_erps_marking_still_wins() {
        let now = Utc::now();
        let today = relay_domain::polish_calendar::poland_date(now);
        let window = |category| FailureWindow {
            event: "E".into(),
            category,
            start: now - chrono::Duration::minutes(1),
            end: Some(now + chrono::Duration::minutes(1)),
            end_declared: true,
            messages: vec![("K/1".into(), 1)],
        };
        let r = record(today, None);
        use relay_domain::availability::DeclaredCategory;
        assert_eq!(
            mode_at(&r, now, &[window(DeclaredCategory::Maintenance)]),
            Some(OfflineMode::Unavailability),
            "the same day: held, not late"
        );
        assert_eq!(mode_at(&r, now, &[window(DeclaredCategory::Failure)]), Some(OfflineMode::Failure));
        assert_eq!(mode_at(&r, now, &[]), None, "nothing declared: online");
        let marked = record(today, Some(OfflineMode::Offline24));
        assert_eq!(
            mode_at(&marked, now, &[window(DeclaredCategory::Failure)]),
            Some(OfflineMode::Offline24)
        );
    }
}
