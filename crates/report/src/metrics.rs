//! The business and regulatory levels, computed from a [`Snapshot`] and written as EMF lines
//! (namespace `KsefRelay`) by the report function every 15 minutes.
//!
//! | metric | unit | dimensions | level | meaning |
//! |---|---|---|---|---|
//! | `DocumentsInState` | Count | `State` | business | documents in each state (whole store) |
//! | `DocumentsOverdue` | Count | - | business | open documents registered more than `OVERDUE_AFTER_HOURS` ago |
//! | `DocumentsWaitingOverOneHour` | Count | - | business | open documents registered more than 1 h ago |
//! | `OldestOpenDocumentAgeSeconds` | Seconds | - | business | age of the oldest open document (0 if none) |
//! | `DocumentsPastLegalDeadline` | Count | - | regulatory | no KSeF number, past its legal deadline (per its offline mode and the declared outages, `relay_domain::offline`) |
//! | `OfflineDocumentsNearingDeadline` | Count | - | regulatory | offline (marked, or its issue day over), no KSeF number, deadline within 12 h |
//!
//! "Open" is QUEUED, SENT, PROCESSING, FAILED or CONFLICT: the relay (or a person at the relay)
//! still owes the invoice its way into KSeF. REJECTED waits for the ERP's corrected file and is
//! counted by `DocumentsInState` and, while it has no KSeF number, by the regulatory metrics.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use relay_domain::{DocumentRecord, DocumentState};
use relay_observe::emf::{MetricLine, Unit};
use relay_observe::NAMESPACE;

use crate::deadline::is_offline_at;
use crate::snapshot::{Snapshot, OPEN_STATES};
use relay_domain::FailureWindow;

/// How near a deadline must be to count as nearing.
pub const NEARING_WINDOW_HOURS: i64 = 12;

/// The business and regulatory figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Levels {
    pub in_state: BTreeMap<DocumentState, u64>,
    pub overdue: u64,
    pub waiting_over_one_hour: u64,
    pub oldest_open_age_seconds: f64,
    pub past_legal_deadline: u64,
    pub offline_nearing_deadline: u64,
}

pub fn is_open(state: DocumentState) -> bool {
    OPEN_STATES.contains(&state)
}

/// The legal deadline of a document without a KSeF number, if its issue date is known and the
/// deadline is an instant: from its offline mode and the declared failure windows `declared`
/// (none known: the strict offline24 limit). None too while it counts from a failure that has
/// not ended, and for one issued during a total failure (no obligation).
pub fn deadline_of(r: &DocumentRecord, declared: &[FailureWindow]) -> Option<DateTime<Utc>> {
    if r.ksef.ksef_number.is_some() {
        return None;
    }
    r.issue_date
        .and_then(|d| relay_domain::offline::legal_deadline(r.offline_mode, d, declared).at())
}

impl Levels {
    pub fn compute(s: &Snapshot, overdue_after: Duration) -> Levels {
        Levels::compute_with(s, overdue_after, &[])
    }

    /// As [`Levels::compute`], with the declared failure windows the legal deadlines count from.
    pub fn compute_with(s: &Snapshot, overdue_after: Duration, declared: &[FailureWindow]) -> Levels {
        let now = s.taken_at;
        let mut l = Levels {
            in_state: s.counts.clone(),
            overdue: 0,
            waiting_over_one_hour: 0,
            oldest_open_age_seconds: 0.0,
            past_legal_deadline: 0,
            offline_nearing_deadline: 0,
        };
        for d in &s.documents {
            let r = &d.record;
            if is_open(r.state) {
                let age = now - r.created_at;
                if age > overdue_after {
                    l.overdue += 1;
                }
                if age > Duration::hours(1) {
                    l.waiting_over_one_hour += 1;
                }
                l.oldest_open_age_seconds = l.oldest_open_age_seconds.max(age.num_milliseconds() as f64 / 1000.0);
            }
            if let (Some(deadline), Some(issued)) = (deadline_of(r, declared), r.issue_date) {
                if now >= deadline {
                    l.past_legal_deadline += 1;
                } else if (r.offline_mode.is_some() || is_offline_at(issued, now))
                    && deadline - now <= Duration::hours(NEARING_WINDOW_HOURS)
                {
                    l.offline_nearing_deadline += 1;
                }
            }
        }
        l
    }

    /// The EMF lines: one without dimensions, one per state (a member holds one `State` value).
    pub fn lines(&self, at: DateTime<Utc>) -> Vec<MetricLine> {
        let mut lines = vec![MetricLine::new(NAMESPACE, at).group(
            &[],
            &[
                ("DocumentsOverdue", Unit::Count, self.overdue as f64),
                ("DocumentsWaitingOverOneHour", Unit::Count, self.waiting_over_one_hour as f64),
                ("OldestOpenDocumentAgeSeconds", Unit::Seconds, self.oldest_open_age_seconds),
                ("DocumentsPastLegalDeadline", Unit::Count, self.past_legal_deadline as f64),
                ("OfflineDocumentsNearingDeadline", Unit::Count, self.offline_nearing_deadline as f64),
            ],
        )];
        for state in DocumentState::ALL {
            let n = self.in_state.get(&state).copied().unwrap_or(0);
            lines.push(MetricLine::new(NAMESPACE, at).group(&[("State", state.code())], &[("DocumentsInState", Unit::Count, n as f64)]));
        }
        lines
    }

    pub fn emit(&self, at: DateTime<Utc>) {
        for line in self.lines(at) {
            line.emit();
        }
    }
}
