//! The document state machine. Every transition in the relay is checked here and nowhere else.
//!
//! ```text
//!            +-----------------------------+ (resend in a new session: 405, 550)
//!            v                             |
//!  QUEUED --send--> SENT --poll--> PROCESSING --200--> ACCEPTED (final)
//!    |  ^             |                |
//!    |  |             +----------------+--4xx--> REJECTED --corrected file--> QUEUED
//!    |  +-- replay -- FAILED <---- budget spent (any in-flight state)
//!    |                  +--replay, KSeF has it--> SENT (status polling resumes)
//!    +--- 440 not ours / changed content --> CONFLICT --a person resolves--> QUEUED | ACCEPTED | REJECTED
//! ```
//!
//! ACCEPTED is the only final state: an invoice with a KSeF number exists legally and is never
//! sent again. Every other state has a way out, so nothing is stuck for good.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::ParseError;

/// Where a document is in its journey to KSeF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DocumentState {
    /// Validated, waiting to be sent.
    Queued,
    /// KSeF accepted the send request; the invoice reference is known.
    Sent,
    /// KSeF reports status 100/150 for the invoice.
    Processing,
    /// KSeF number assigned, UPO archived. Final.
    Accepted,
    /// Permanent error (our validation or a KSeF 4xx status): needs a corrected document.
    Rejected,
    /// Transient errors spent the retry budget: in a DLQ, alarm raised.
    Failed,
    /// Same identity with other content, or a KSeF duplicate that is not ours: needs a person.
    Conflict,
}

impl DocumentState {
    pub const ALL: [DocumentState; 7] = [
        DocumentState::Queued,
        DocumentState::Sent,
        DocumentState::Processing,
        DocumentState::Accepted,
        DocumentState::Rejected,
        DocumentState::Failed,
        DocumentState::Conflict,
    ];

    /// The stable code used in stores, metrics and the outbox.
    pub fn code(self) -> &'static str {
        match self {
            DocumentState::Queued => "QUEUED",
            DocumentState::Sent => "SENT",
            DocumentState::Processing => "PROCESSING",
            DocumentState::Accepted => "ACCEPTED",
            DocumentState::Rejected => "REJECTED",
            DocumentState::Failed => "FAILED",
            DocumentState::Conflict => "CONFLICT",
        }
    }

    /// The Polish label shown to accountants.
    pub fn label_pl(self) -> &'static str {
        match self {
            DocumentState::Queued => "OCZEKUJE_WYSYŁKI",
            DocumentState::Sent => "WYSŁANA",
            DocumentState::Processing => "W_TRAKCIE_PRZETWARZANIA",
            DocumentState::Accepted => "PRZYJĘTA",
            DocumentState::Rejected => "ODRZUCONA_LOGICZNIE",
            DocumentState::Failed => "BŁĄD_TECHNICZNY",
            DocumentState::Conflict => "KONFLIKT_WYMAGA_DECYZJI",
        }
    }

    pub fn is_final(self) -> bool {
        self == DocumentState::Accepted
    }

    /// The states reachable from this one in a single transition.
    pub fn successors(self) -> &'static [DocumentState] {
        use DocumentState::*;
        match self {
            Queued => &[Queued, Sent, Accepted, Rejected, Failed, Conflict],
            Sent => &[Sent, Processing, Accepted, Rejected, Failed, Conflict, Queued],
            Processing => &[Processing, Accepted, Rejected, Failed, Conflict, Queued],
            Accepted => &[],
            Rejected => &[Queued],
            Failed => &[Queued, Sent, Accepted, Rejected, Conflict],
            Conflict => &[Queued, Accepted, Rejected],
        }
    }

    /// The one check every state change goes through.
    pub fn check_transition(self, to: DocumentState) -> Result<(), TransitionError> {
        if self.successors().contains(&to) {
            Ok(())
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for DocumentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for DocumentState {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        DocumentState::ALL.into_iter().find(|st| st.code() == s).ok_or_else(|| ParseError {
            field: "document state",
            value: s.chars().take(40).collect(),
            reason: "not a known state".into(),
        })
    }
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a document in state {from} ({}) cannot move to {to} ({})", from.label_pl(), to.label_pl())]
pub struct TransitionError {
    pub from: DocumentState,
    pub to: DocumentState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashSet, VecDeque};

    fn reachable_from(start: DocumentState) -> HashSet<DocumentState> {
        let mut seen = HashSet::from([start]);
        let mut todo = VecDeque::from([start]);
        while let Some(s) = todo.pop_front() {
            for &n in s.successors() {
                if seen.insert(n) {
                    todo.push_back(n);
                }
            }
        }
        seen
    }

    #[test]
    fn accepted_is_final_and_the_only_final_state() {
        for s in DocumentState::ALL {
            assert_eq!(s.is_final(), s.successors().is_empty(), "{s}");
        }
        assert!(DocumentState::Accepted.is_final());
    }

    #[test]
    fn every_non_final_state_can_still_reach_accepted() {
        for s in DocumentState::ALL {
            assert!(reachable_from(s).contains(&DocumentState::Accepted), "{s} cannot reach ACCEPTED");
        }
    }

    #[test]
    fn codes_and_labels_round_trip() {
        for s in DocumentState::ALL {
            assert_eq!(s.code().parse::<DocumentState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.code()));
            assert!(!s.label_pl().is_empty());
        }
        assert_eq!(DocumentState::Queued.label_pl(), "OCZEKUJE_WYSYŁKI");
        assert_eq!(DocumentState::Accepted.label_pl(), "PRZYJĘTA");
    }

    fn any_state() -> impl Strategy<Value = DocumentState> {
        proptest::sample::select(DocumentState::ALL.to_vec())
    }

    proptest! {
        /// Random walks through allowed transitions never leave ACCEPTED once there, and the
        /// checker agrees with the table for arbitrary pairs.
        #[test]
        fn random_walks_respect_finality(start in any_state(), picks in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40), probes in proptest::collection::vec(any_state(), 0..40)) {
            let mut s = start;
            for (i, pick) in picks.iter().enumerate() {
                let next = s.successors();
                if next.is_empty() {
                    prop_assert_eq!(s, DocumentState::Accepted);
                    let probe = probes.get(i).copied().unwrap_or(DocumentState::Queued);
                    prop_assert!(s.check_transition(probe).is_err());
                    break;
                }
                let to = next[pick.index(next.len())];
                prop_assert!(s.check_transition(to).is_ok());
                s = to;
            }
            for p in probes {
                prop_assert_eq!(s.check_transition(p).is_ok(), s.successors().contains(&p));
            }
        }
    }
}
