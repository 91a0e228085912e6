//! Offline invoices: how one was issued, how KSeF filed it, and by when it must be in KSeF.
//!
//! - [`OfflineMode`]: the ERP marks an upload issued offline (offline24, during a declared
//!   unavailability, during a declared failure), or the relay marks it itself when it sends an
//!   invoice after its issue day (KSeF marks such an invoice Offline anyway: API-NOTES §10).
//! - [`InvoicingMode`]: what KSeF says it filed the invoice as (`invoicingMode` in the status,
//!   `TrybWysylki` in the UPO).
//! - [`legal_deadline`]: the deadline per mode, from `P_1`, Polish business days and the
//!   declared failure windows (VAT Act art. 106nda, 106nf, 106nh; API-NOTES §10):
//!
//! | mode | deadline |
//! |---|---|
//! | offline24, sent after the issue day, online (not yet sent) | end of the next business day after `P_1` |
//! | unavailability | end of the next business day after the declared unavailability (covering `P_1`) ends |
//! | failure | end of the 7th business day after the declared failure (covering `P_1`) ends |
//! | failure, the window declared a total failure | none: no obligation to send later |
//!
//! A failure declared before a deadline passes (and not over before the issue day) moves it to
//! the end of the 7th business day after that failure's end, again for each later failure. A
//! failure still open has no end yet: the deadline waits for it ([`LegalDeadline::AfterOpenFailure`]).
//! An unavailability or failure the ERP names but Latarnia never declared counts as offline24:
//! the strict limit, which can only warn early, never late.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::availability::{DeclaredCategory, FailureWindow};
use crate::polish_calendar::{business_days_after, end_of_day, next_business_day, poland_date, poland_midnight};

/// How an invoice was issued offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineMode {
    /// offline24: the taxpayer's choice, for any reason (the ERP marked it).
    Offline24,
    /// Issued during an unavailability of KSeF announced in BIP and Latarnia (the ERP marked it).
    Unavailability,
    /// Issued during a declared KSeF failure (tryb awaryjny; the ERP marked it).
    Failure,
    /// Not marked by the ERP, but sent after its issue day (in Polish time): KSeF files it
    /// Offline itself, so the relay marks it too. Its deadline is offline24's.
    SentAfterIssueDay,
}

/// The metadata an ERP sets on an upload to mark it issued offline (S3 object metadata,
/// `x-amz-meta-ksef-offline-mode`; the SDKs hand it over without the prefix).
pub const OFFLINE_MODE_METADATA: &str = "ksef-offline-mode";

/// The metadata an ERP sets on a technical correction's upload (`x-amz-meta-ksef-corrects`):
/// the ERP document id of the rejected offline upload it corrects, i.e. the `{erpDocId}` of its
/// key `inbox/{sellerNip}/{erpDocId}.xml`, as its outbox result names it (`erpDocumentId`).
pub const CORRECTS_METADATA: &str = "ksef-corrects";

impl OfflineMode {
    /// The values an ERP may give in [`OFFLINE_MODE_METADATA`].
    pub const MARKINGS: [&'static str; 3] = ["offline24", "unavailability", "failure"];

    /// Reads the ERP's marking: one of [`OfflineMode::MARKINGS`] (any case, spaces trimmed), or
    /// `online` / empty for none. Anything else is refused with a message saying what is allowed.
    pub fn from_marking(value: &str) -> Result<Option<OfflineMode>, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "online" => Ok(None),
            "offline24" => Ok(Some(OfflineMode::Offline24)),
            "unavailability" => Ok(Some(OfflineMode::Unavailability)),
            "failure" => Ok(Some(OfflineMode::Failure)),
            _ => Err(format!(
                "the upload's metadata {OFFLINE_MODE_METADATA} is {value:?}; it must be one of {} (or online, or absent, for an invoice issued online)",
                OfflineMode::MARKINGS.join(", ")
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OfflineMode::Offline24 => "offline24",
            OfflineMode::Unavailability => "unavailability",
            OfflineMode::Failure => "failure",
            OfflineMode::SentAfterIssueDay => "sent_after_issue_day",
        }
    }
}

/// How KSeF filed an invoice: `invoicingMode` in its status, `TrybWysylki` in its UPO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoicingMode {
    Online,
    Offline,
}

impl InvoicingMode {
    /// KSeF's word (`Online`, `Offline`; any case); None for anything else.
    pub fn parse(s: &str) -> Option<InvoicingMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "online" => Some(InvoicingMode::Online),
            "offline" => Some(InvoicingMode::Offline),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InvoicingMode::Online => "Online",
            InvoicingMode::Offline => "Offline",
        }
    }
}

/// An offline invoice's two QR codes (KOD I labelled OFFLINE, KOD II), at
/// [`crate::storage_keys::qr_offline_keys`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineCodes {
    /// Not made (not offline, or not tried yet).
    #[default]
    NotMade,
    /// Tried and could not be made (recorded in the history: the seller has no Offline
    /// certificate); tried again at each attempt until written.
    Missing,
    /// Written.
    Written,
}

impl OfflineCodes {
    pub fn is_not_made(&self) -> bool {
        *self == OfflineCodes::NotMade
    }
}

/// By when an invoice must be in KSeF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LegalDeadline {
    /// By this instant (the end of a Polish business day).
    By { at: DateTime<Utc> },
    /// Counted from the end of a declared failure that has not ended yet (`event`, since `start`).
    AfterOpenFailure { event: String, start: DateTime<Utc> },
    /// Issued during a declared total failure (`event`): no obligation to send it later.
    NoObligation { event: String },
}

impl LegalDeadline {
    /// The instant, when there is one.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        match self {
            LegalDeadline::By { at } => Some(*at),
            _ => None,
        }
    }

    /// One line for a document's history.
    pub fn describe(&self) -> String {
        match self {
            LegalDeadline::By { at } => format!("legal deadline {}", at.to_rfc3339()),
            LegalDeadline::AfterOpenFailure { event, start } => format!(
                "legal deadline: 7 business days after declared failure {event} (since {}) ends",
                start.to_rfc3339()
            ),
            LegalDeadline::NoObligation { event } => format!("no legal deadline: issued during declared total failure {event}"),
        }
    }
}

/// Whether `w` overlaps the Polish calendar day `d`.
fn covers_day(w: &FailureWindow, d: NaiveDate) -> bool {
    let (from, to) = (poland_midnight(d), poland_midnight(d.succ_opt().unwrap_or(d)));
    w.start < to && w.end.is_none_or(|e| e > from)
}

/// The deadline counted from a window's end: `days` business days after the Polish day it ends.
fn after_end(w: &FailureWindow, days: u32) -> LegalDeadline {
    match w.end {
        Some(end) => LegalDeadline::By {
            at: end_of_day(business_days_after(poland_date(end), days)),
        },
        None => LegalDeadline::AfterOpenFailure {
            event: w.event.clone(),
            start: w.start,
        },
    }
}

fn is_failure(w: &FailureWindow) -> bool {
    matches!(w.category, DeclaredCategory::Failure | DeclaredCategory::TotalFailure)
}

/// The offline mode of an invoice that arrived while KSeF was declared unavailable: registered
/// (`registered_at`) inside a declared window whose Polish days cover its issue day, so it could
/// not be issued online in KSeF. A maintenance window is an announced unavailability
/// ([`OfflineMode::Unavailability`], the next business day after it ends); a failure or total
/// failure is the emergency mode ([`OfflineMode::Failure`], 7 business days after it ends, none
/// for a total failure), as API-NOTES §10 reads Latarnia's categories. None: not during one
/// (our own evidence of a silent outage declares nothing, and gives no offline mode).
pub fn declared_mode(issue_date: NaiveDate, registered_at: DateTime<Utc>, windows: &[FailureWindow]) -> Option<OfflineMode> {
    windows
        .iter()
        .rfind(|w| w.is_open_at(registered_at) && covers_day(w, issue_date))
        .and_then(|w| match w.category {
            DeclaredCategory::Maintenance => Some(OfflineMode::Unavailability),
            DeclaredCategory::Failure | DeclaredCategory::TotalFailure => Some(OfflineMode::Failure),
            DeclaredCategory::Other(_) => None,
        })
}

/// The deadline of an invoice issued on `issue_date` in `mode` (None: issued online and not yet
/// sent, whose limit is offline24's should it be late), given the declared windows `windows`.
pub fn legal_deadline(mode: Option<OfflineMode>, issue_date: NaiveDate, windows: &[FailureWindow]) -> LegalDeadline {
    let offline24 = LegalDeadline::By {
        at: end_of_day(next_business_day(issue_date)),
    };
    let declared = |pick: fn(&FailureWindow) -> bool| windows.iter().rfind(|w| pick(w) && covers_day(w, issue_date));
    let base = match mode {
        Some(OfflineMode::Failure) => match declared(is_failure) {
            Some(w) if w.category == DeclaredCategory::TotalFailure => {
                return LegalDeadline::NoObligation { event: w.event.clone() };
            }
            Some(w) => after_end(w, 7),
            None => offline24,
        },
        Some(OfflineMode::Unavailability) => {
            match declared(|w| w.category == DeclaredCategory::Maintenance).or_else(|| declared(|_| true)) {
                Some(w) if is_failure(w) => after_end(w, 7),
                Some(w) => after_end(w, 1),
                None => offline24,
            }
        }
        Some(OfflineMode::Offline24) | Some(OfflineMode::SentAfterIssueDay) | None => offline24,
    };
    // A failure declared before the deadline passes (and not over before the issue day) moves
    // it to 7 business days after its end; a later one moves it again.
    let issued = poland_midnight(issue_date);
    let mut deadline = base;
    loop {
        let LegalDeadline::By { at } = deadline else {
            return deadline;
        };
        let moved = windows
            .iter()
            .filter(|w| is_failure(w) && w.start < at && w.end.is_none_or(|e| e > issued))
            .map(|w| after_end(w, 7))
            .find(|d| d.at().is_none_or(|later| later > at));
        match moved {
            Some(later) => deadline = later,
            None => return deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }
    fn t(y: i32, m: u32, day: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, day, h, 0, 0).unwrap()
    }
    fn window(event: &str, category: DeclaredCategory, start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> FailureWindow {
        FailureWindow {
            event: event.into(),
            category,
            start,
            end,
            end_declared: end.is_some(),
            messages: vec![(format!("K/2026/{event}"), 1)],
        }
    }
    fn by(at: DateTime<Utc>) -> LegalDeadline {
        LegalDeadline::By { at }
    }

    #[test]
    fn an_invoice_registered_during_a_declared_window_of_its_issue_day_takes_the_windows_mode() {
        // Friday 2026-11-27, 10:00–14:00 UTC.
        let failure = window("F1", DeclaredCategory::Failure, t(2026, 11, 27, 10), Some(t(2026, 11, 27, 14)));
        let maintenance = window("M1", DeclaredCategory::Maintenance, t(2026, 11, 27, 10), Some(t(2026, 11, 27, 14)));
        let issued = d(2026, 11, 27);
        assert_eq!(
            declared_mode(issued, t(2026, 11, 27, 11), std::slice::from_ref(&failure)),
            Some(OfflineMode::Failure)
        );
        assert_eq!(
            declared_mode(issued, t(2026, 11, 27, 11), std::slice::from_ref(&maintenance)),
            Some(OfflineMode::Unavailability)
        );
        // Registered before it started, or after it ended: not held by it.
        assert_eq!(declared_mode(issued, t(2026, 11, 27, 9), std::slice::from_ref(&failure)), None);
        assert_eq!(declared_mode(issued, t(2026, 11, 27, 14), std::slice::from_ref(&failure)), None);
        // Issued on an earlier day (a late invoice, not one of the window's): no declared mode.
        assert_eq!(
            declared_mode(d(2026, 11, 20), t(2026, 11, 27, 11), std::slice::from_ref(&failure)),
            None
        );
        // Still open: it covers every day since its start; issued before it started, not.
        let open = window("F2", DeclaredCategory::Failure, t(2026, 11, 27, 10), None);
        assert_eq!(
            declared_mode(issued, t(2026, 11, 28, 11), std::slice::from_ref(&open)),
            Some(OfflineMode::Failure)
        );
        assert_eq!(declared_mode(d(2026, 11, 26), t(2026, 11, 28, 11), &[open]), None);
        assert_eq!(declared_mode(issued, t(2026, 11, 27, 11), &[]), None);
        // The window's deadline: a maintenance the next business day after it ends (Monday
        // 30 November), a failure 7 business days after (Tuesday 8 December).
        assert_eq!(
            legal_deadline(Some(OfflineMode::Unavailability), issued, &[maintenance]),
            by(end_of_day(d(2026, 11, 30)))
        );
        assert_eq!(
            legal_deadline(Some(OfflineMode::Failure), issued, &[failure]),
            by(end_of_day(d(2026, 12, 8)))
        );
    }

    #[test]
    fn markings_are_read_and_bad_ones_named() {
        assert_eq!(OfflineMode::from_marking(" Offline24 "), Ok(Some(OfflineMode::Offline24)));
        assert_eq!(OfflineMode::from_marking("unavailability"), Ok(Some(OfflineMode::Unavailability)));
        assert_eq!(OfflineMode::from_marking("FAILURE"), Ok(Some(OfflineMode::Failure)));
        assert_eq!(OfflineMode::from_marking("online"), Ok(None));
        assert_eq!(OfflineMode::from_marking(""), Ok(None));
        let e = OfflineMode::from_marking("offline-24").unwrap_err();
        assert!(
            e.contains("\"offline-24\"") && e.contains("offline24, unavailability, failure"),
            "{e}"
        );
        // The relay's own marking is not the ERP's to give.
        assert!(OfflineMode::from_marking("sent_after_issue_day").is_err());
    }

    #[test]
    fn offline24_and_a_late_send_end_with_the_next_business_day() {
        // Thursday 2026-06-03, Corpus Christi on the 4th: due by the end of Friday the 5th (CEST).
        for mode in [Some(OfflineMode::Offline24), Some(OfflineMode::SentAfterIssueDay), None] {
            assert_eq!(legal_deadline(mode, d(2026, 6, 3), &[]), by(t(2026, 6, 5, 22)), "{mode:?}");
        }
        // Wednesday 2026-12-23: 24th–27th are not business days; end of Monday 28th (CET).
        assert_eq!(
            legal_deadline(Some(OfflineMode::Offline24), d(2026, 12, 23), &[]),
            by(t(2026, 12, 28, 23))
        );
    }

    #[test]
    fn unavailability_ends_the_next_business_day_after_it_ends() {
        // Maintenance Friday 2026-04-03 18:00 UTC to Saturday 02:00; Easter Monday 6th: end of Tuesday 7th.
        let m = window("MNT1", DeclaredCategory::Maintenance, t(2026, 4, 3, 18), Some(t(2026, 4, 4, 2)));
        assert_eq!(
            legal_deadline(Some(OfflineMode::Unavailability), d(2026, 4, 3), std::slice::from_ref(&m)),
            by(t(2026, 4, 7, 22))
        );
        // Not declared for the issue day (Wednesday 8th): offline24's limit, end of Thursday 9th.
        assert_eq!(
            legal_deadline(Some(OfflineMode::Unavailability), d(2026, 4, 8), &[m]),
            by(t(2026, 4, 9, 22))
        );
    }

    #[test]
    fn failure_ends_seven_business_days_after_it_ends_and_total_failure_has_none() {
        // Failure Monday 2026-11-09 08:00 to Tuesday 10th 12:00 UTC; 11.11 a holiday.
        // 7 business days after the 10th: 12, 13, 16, 17, 18, 19, 20 -> end of Friday 20th (CET).
        let f = window("AWR1", DeclaredCategory::Failure, t(2026, 11, 9, 8), Some(t(2026, 11, 10, 12)));
        assert_eq!(
            legal_deadline(Some(OfflineMode::Failure), d(2026, 11, 9), std::slice::from_ref(&f)),
            by(t(2026, 11, 20, 23))
        );
        // Still open: the deadline waits for its end.
        let open = FailureWindow { end: None, ..f.clone() };
        assert_eq!(
            legal_deadline(Some(OfflineMode::Failure), d(2026, 11, 9), &[open]),
            LegalDeadline::AfterOpenFailure {
                event: "AWR1".into(),
                start: t(2026, 11, 9, 8)
            }
        );
        let total = window("TOT1", DeclaredCategory::TotalFailure, t(2026, 11, 9, 8), None);
        assert_eq!(
            legal_deadline(Some(OfflineMode::Failure), d(2026, 11, 9), &[total]),
            LegalDeadline::NoObligation { event: "TOT1".into() }
        );
    }

    #[test]
    fn a_failure_declared_during_an_offline24_deadline_moves_it() {
        // Issued offline24 Monday 2026-11-02: due end of Tuesday 3rd. A failure starts Tuesday
        // 10:00 and ends Wednesday 4th 09:00: 7 business days after the 4th (11.11 a holiday):
        // 5, 6, 9, 10, 12, 13, 16 -> end of Monday 16th.
        let f = window("AWR2", DeclaredCategory::Failure, t(2026, 11, 3, 10), Some(t(2026, 11, 4, 9)));
        assert_eq!(
            legal_deadline(Some(OfflineMode::Offline24), d(2026, 11, 2), &[]),
            by(t(2026, 11, 3, 23))
        );
        assert_eq!(
            legal_deadline(Some(OfflineMode::Offline24), d(2026, 11, 2), std::slice::from_ref(&f)),
            by(t(2026, 11, 16, 23))
        );
        // A second failure within the moved deadline moves it again: 12th–16th -> end of 25th.
        let g = window("AWR3", DeclaredCategory::Failure, t(2026, 11, 12, 10), Some(t(2026, 11, 16, 9)));
        assert_eq!(
            legal_deadline(Some(OfflineMode::Offline24), d(2026, 11, 2), &[f.clone(), g.clone()]),
            by(t(2026, 11, 25, 23))
        );
        // A failure after the deadline passed, or over before the issue day, moves nothing.
        let late = window("AWR4", DeclaredCategory::Failure, t(2026, 11, 4, 0), Some(t(2026, 11, 5, 9)));
        let early = window("AWR5", DeclaredCategory::Failure, t(2026, 10, 30, 0), Some(t(2026, 10, 31, 9)));
        assert_eq!(
            legal_deadline(Some(OfflineMode::Offline24), d(2026, 11, 2), &[late, early]),
            by(t(2026, 11, 3, 23))
        );
        // An unavailability deadline moves as well.
        let m = window("MNT2", DeclaredCategory::Maintenance, t(2026, 11, 2, 10), Some(t(2026, 11, 2, 12)));
        assert_eq!(
            legal_deadline(Some(OfflineMode::Unavailability), d(2026, 11, 2), std::slice::from_ref(&m)),
            by(t(2026, 11, 3, 23))
        );
        assert_eq!(
            legal_deadline(Some(OfflineMode::Unavailability), d(2026, 11, 2), &[m, f]),
            by(t(2026, 11, 16, 23))
        );
    }
}
