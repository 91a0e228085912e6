//! Is KSeF up? One availability state per KSeF environment, decided from evidence.
//!
//! Two sources, because neither is enough alone: the Ministry's status service (Latarnia), which
//! declares failures, total failures and maintenance with messages that have a start and an end,
//! and the relay's own evidence (a light probe of a public KSeF endpoint, and a run of failed
//! KSeF calls), because Latarnia itself has failed (502 for hours) and stayed silent during real
//! trouble. [`Availability::decide`] is the one pure function that combines them; the scheduled
//! poll (`relay_pipeline::availability`) calls it and shares the result through the shared
//! cache, where the send stage reads it and holds sending while [`Availability::holds_sending`].
//!
//! The declared failure windows ([`Availability::declared_failures`], [`failure_windows`]) are
//! what the legal deadlines of offline invoices are computed from (API-NOTES §10: next business
//! day after an unavailability ends, 7 business days after a failure ends).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The environments an availability may be kept for (`ksef_client::latarnia::environment_key`).
pub const ENVIRONMENTS: [&str; 4] = ["PROD", "TEST", "DEMO", "CUSTOM"];

/// The shared cache entry that holds `env`'s decided availability.
pub fn cache_name(env: &str) -> String {
    format!("relay/availability/{env}")
}

/// KSeF's availability, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AvailabilityState {
    /// Nothing declared, our own evidence is good.
    Available,
    /// Nothing declared, but our own evidence says KSeF does not answer (a silent outage).
    Degraded,
    /// A declared maintenance in progress.
    Maintenance,
    /// A declared failure (awaria): offline invoices get 7 business days after its end.
    Failure,
    /// A declared total failure (awaria całkowita): no obligation to send later.
    TotalFailure,
}

impl AvailabilityState {
    pub fn as_str(self) -> &'static str {
        match self {
            AvailabilityState::Available => "AVAILABLE",
            AvailabilityState::Degraded => "DEGRADED",
            AvailabilityState::Maintenance => "MAINTENANCE",
            AvailabilityState::Failure => "FAILURE",
            AvailabilityState::TotalFailure => "TOTAL_FAILURE",
        }
    }

    /// Latarnia's own words (`AVAILABLE`, `MAINTENANCE`, `FAILURE`, `TOTAL_FAILURE`); anything
    /// else is not a state Latarnia declares.
    pub fn from_latarnia(s: &str) -> Option<AvailabilityState> {
        match s.trim().to_ascii_uppercase().as_str() {
            "AVAILABLE" => Some(AvailabilityState::Available),
            "MAINTENANCE" => Some(AvailabilityState::Maintenance),
            "FAILURE" => Some(AvailabilityState::Failure),
            "TOTAL_FAILURE" => Some(AvailabilityState::TotalFailure),
            _ => None,
        }
    }

    /// A number for the metric (0 best .. 4 worst), so one alarm can watch `>= 1`.
    pub fn level(self) -> u8 {
        self as u8
    }

    /// Whether the send stage holds documents (no KSeF call, no budget spent) in this state.
    /// DEGRADED holds too: that is the silent outage Latarnia does not announce, and the poll's
    /// probe ends it as soon as KSeF answers again.
    pub fn holds_sending(self) -> bool {
        self != AvailabilityState::Available
    }
}

impl fmt::Display for AvailabilityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Latarnia message's `category`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeclaredCategory {
    Failure,
    TotalFailure,
    Maintenance,
    /// A category this code does not know, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

impl DeclaredCategory {
    pub fn parse(s: &str) -> DeclaredCategory {
        match s.trim().to_ascii_uppercase().as_str() {
            "FAILURE" => DeclaredCategory::Failure,
            "TOTAL_FAILURE" => DeclaredCategory::TotalFailure,
            "MAINTENANCE" => DeclaredCategory::Maintenance,
            _ => DeclaredCategory::Other(s.to_owned()),
        }
    }

    /// The state a window of this category means while it is open.
    pub fn state(&self) -> Option<AvailabilityState> {
        match self {
            DeclaredCategory::Failure => Some(AvailabilityState::Failure),
            DeclaredCategory::TotalFailure => Some(AvailabilityState::TotalFailure),
            DeclaredCategory::Maintenance => Some(AvailabilityState::Maintenance),
            DeclaredCategory::Other(_) => None,
        }
    }
}

/// A Latarnia message's `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeclaredKind {
    FailureStart,
    FailureEnd,
    MaintenanceAnnouncement,
    #[serde(untagged)]
    Other(String),
}

impl DeclaredKind {
    pub fn parse(s: &str) -> DeclaredKind {
        match s.trim().to_ascii_uppercase().as_str() {
            "FAILURE_START" => DeclaredKind::FailureStart,
            "FAILURE_END" => DeclaredKind::FailureEnd,
            "MAINTENANCE_ANNOUNCEMENT" => DeclaredKind::MaintenanceAnnouncement,
            _ => DeclaredKind::Other(s.to_owned()),
        }
    }
}

/// One Latarnia message, one version of it (a message may be republished with a higher version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeclaredMessage {
    /// e.g. `K/2026/AWR/02`.
    pub id: String,
    /// The event the message belongs to (a FAILURE_START and its FAILURE_END share it).
    #[serde(default)]
    pub event_id: Option<String>,
    pub category: DeclaredCategory,
    #[serde(rename = "type")]
    pub kind: DeclaredKind,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end: Option<DateTime<Utc>>,
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub published: Option<DateTime<Utc>>,
}

impl DeclaredMessage {
    /// The event this message belongs to: its `eventId`, else its own id.
    pub fn event(&self) -> &str {
        self.event_id.as_deref().filter(|e| !e.is_empty()).unwrap_or(&self.id)
    }
}

/// A declared unavailability: from its start to its end (None while it has not ended), with the
/// messages that declared it. What offline deadlines are computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureWindow {
    /// The event id (or the message id when the message names no event).
    pub event: String,
    pub category: DeclaredCategory,
    pub start: DateTime<Utc>,
    /// When it ended (a FAILURE_END) or is announced to end (a maintenance); None: still open.
    pub end: Option<DateTime<Utc>>,
    /// Whether a FAILURE_END was published for it (a maintenance's end is only announced).
    pub end_declared: bool,
    /// The messages (id and version) that make up the window, latest version of each.
    pub messages: Vec<(String, u32)>,
}

impl FailureWindow {
    /// Whether the window covers `now`.
    pub fn is_open_at(&self, now: DateTime<Utc>) -> bool {
        self.start <= now && self.end.is_none_or(|e| now < e)
    }

    /// The id of the message that declared it (its start), for history lines.
    pub fn declaring_message(&self) -> &str {
        self.messages.first().map_or(self.event.as_str(), |(id, _)| id.as_str())
    }
}

/// The declared windows in `messages` (any versions, any order): the latest version of each
/// message counts; messages group by event; a window starts at the earliest start and ends at a
/// FAILURE_END's end (its start or publication when it has no end), or at a maintenance's
/// announced end. Windows sorted by start.
pub fn failure_windows(messages: &[DeclaredMessage]) -> Vec<FailureWindow> {
    let mut latest: BTreeMap<&str, &DeclaredMessage> = BTreeMap::new();
    for m in messages {
        match latest.get(m.id.as_str()) {
            Some(seen) if seen.version >= m.version => {}
            _ => {
                latest.insert(&m.id, m);
            }
        }
    }
    let mut events: BTreeMap<&str, Vec<&DeclaredMessage>> = BTreeMap::new();
    for m in latest.values() {
        events.entry(m.event()).or_default().push(m);
    }
    let mut windows: Vec<FailureWindow> = events
        .into_iter()
        .filter_map(|(event, mut ms)| {
            ms.sort_by_key(|m| {
                (
                    m.kind != DeclaredKind::FailureStart && m.kind != DeclaredKind::MaintenanceAnnouncement,
                    m.published,
                    m.id.clone(),
                )
            });
            let start = ms.iter().filter_map(|m| m.start).min()?;
            let category = ms
                .iter()
                .find(|m| m.kind != DeclaredKind::FailureEnd)
                .unwrap_or(&ms[0])
                .category
                .clone();
            let ended = ms.iter().find(|m| m.kind == DeclaredKind::FailureEnd);
            let end = match ended {
                Some(m) => m.end.or(m.start).or(m.published),
                None => ms
                    .iter()
                    .filter(|m| m.kind == DeclaredKind::MaintenanceAnnouncement)
                    .filter_map(|m| m.end)
                    .max(),
            };
            Some(FailureWindow {
                event: event.to_owned(),
                category,
                start,
                end,
                end_declared: ended.is_some(),
                messages: ms.iter().map(|m| (m.id.clone(), m.version)).collect(),
            })
        })
        .collect();
    windows.sort_by_key(|w| (w.start, w.event.clone()));
    windows
}

/// What Latarnia answered at one poll, read by the client into types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LatarniaReading {
    /// `GET /status`: the declared state (Err: why it could not be read).
    pub status: Option<Result<AvailabilityState, String>>,
    /// `GET /messages` (Err: why it could not be read).
    pub messages: Option<Result<Vec<DeclaredMessage>, String>>,
}

impl LatarniaReading {
    /// No Latarnia for this environment (DEMO has none).
    pub fn none() -> LatarniaReading {
        LatarniaReading::default()
    }
}

/// The relay's own evidence about KSeF, beside Latarnia's word.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OwnEvidence {
    /// A light probe of a public KSeF endpoint: None when not run, Some(Err(why)) when it failed.
    pub probe: Option<Result<(), String>>,
    /// KSeF calls that failed as KSeF being down (5xx, timeout, connection) since the last poll,
    /// with no call getting through after them, across all sellers.
    pub failed_calls: u32,
    /// How many sellers those failures came from.
    pub failing_sellers: u32,
}

/// How many failed calls in a row (with no success after them) count as KSeF being down.
pub const FAILED_CALLS_DOWN: u32 = 5;

impl OwnEvidence {
    /// Why our evidence says KSeF is down, or None when it does not. A good probe outweighs
    /// a run of failed calls (they may be one seller's network path).
    pub fn down(&self) -> Option<String> {
        match &self.probe {
            Some(Err(why)) => Some(format!("the probe of KSeF failed: {why}")),
            Some(Ok(())) => None,
            None if self.failed_calls >= FAILED_CALLS_DOWN => Some(format!(
                "{} KSeF calls failed (5xx, timeouts, connections) from {} seller(s)",
                self.failed_calls, self.failing_sellers
            )),
            None => None,
        }
    }
}

/// The shared cache entry that counts `env`'s failed KSeF calls since the last call that got
/// through (or the last good probe): the relay's own evidence between two polls.
pub fn failed_calls_cache_name(env: &str) -> String {
    format!("relay/availability/{env}/failed-calls")
}

/// KSeF calls that failed as KSeF being down (5xx, timeouts, connections), across every instance
/// and seller, since the last call that got through: one shared count per environment. Its
/// [`FailedCalls::evidence`] holds sending once [`FAILED_CALLS_DOWN`] calls failed in a row; a
/// call that gets through or a good probe resets it, and only the probe is meant to find KSeF
/// back (held documents make no calls).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FailedCalls {
    pub failed: u32,
    /// The sellers whose calls failed (NIPs), to tell one seller's network path from KSeF.
    #[serde(default)]
    pub sellers: std::collections::BTreeSet<String>,
    /// When the first of them failed (None: none since the reset).
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
}

impl FailedCalls {
    /// One more failed call of `seller` at `now`.
    pub fn with_failure(mut self, seller: &str, now: DateTime<Utc>) -> FailedCalls {
        self.failed = self.failed.saturating_add(1);
        self.sellers.insert(seller.to_owned());
        self.since.get_or_insert(now);
        self
    }

    /// As evidence beside a probe (`probe`: None when none ran).
    pub fn evidence(&self, probe: Option<Result<(), String>>) -> OwnEvidence {
        OwnEvidence {
            probe,
            failed_calls: self.failed,
            failing_sellers: self.sellers.len() as u32,
        }
    }
}

/// Where the state came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AvailabilitySource {
    /// Declared by Latarnia; `message` is the declaring message's id when one is known.
    Latarnia { message: Option<String> },
    /// Latarnia said nothing (or could not be read): the relay's own evidence.
    OwnEvidence { detail: String },
    /// Nothing against it.
    Nothing,
}

impl fmt::Display for AvailabilitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AvailabilitySource::Latarnia { message: Some(m) } => write!(f, "Latarnia message {m}"),
            AvailabilitySource::Latarnia { message: None } => f.write_str("Latarnia status"),
            AvailabilitySource::OwnEvidence { detail } => write!(f, "the relay's own evidence ({detail})"),
            AvailabilitySource::Nothing => f.write_str("no evidence of trouble"),
        }
    }
}

/// One environment's availability, as the poll last decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// `PROD`, `TEST`, `DEMO` or `CUSTOM`.
    pub environment: String,
    pub state: AvailabilityState,
    pub source: AvailabilitySource,
    /// Since when this state holds (the declared window's start when Latarnia gave one).
    pub since: DateTime<Utc>,
    /// When the poll decided it.
    pub checked_at: DateTime<Utc>,
    /// Whether Latarnia answered at this poll (None: no Latarnia for the environment).
    pub latarnia_answered: Option<bool>,
    /// Every declared window Latarnia's messages describe (latest versions), oldest first.
    #[serde(default)]
    pub windows: Vec<FailureWindow>,
    /// The own evidence seen at this poll.
    #[serde(default)]
    pub evidence: OwnEvidence,
}

impl Availability {
    /// Decides the state at `now` from Latarnia's answer and our own evidence. When Latarnia
    /// cannot be read, what it declared last stands (a declared failure is over only when
    /// Latarnia says so), and the windows known before are kept.
    pub fn decide(
        environment: &str,
        previous: Option<&Availability>,
        latarnia: &LatarniaReading,
        evidence: &OwnEvidence,
        now: DateTime<Utc>,
    ) -> Availability {
        let windows = match &latarnia.messages {
            Some(Ok(ms)) => failure_windows(ms),
            _ => previous.map(|p| p.windows.clone()).unwrap_or_default(),
        };
        let open = windows.iter().rev().find(|w| w.is_open_at(now) && w.category.state().is_some());
        let answered = latarnia
            .status
            .as_ref()
            .map(|s| s.is_ok() || matches!(latarnia.messages, Some(Ok(_))));
        // What Latarnia declares now: its status when it answered; else an open window in its
        // messages; else what it declared at the last poll.
        let declared: Option<(AvailabilityState, Option<String>, Option<DateTime<Utc>>)> = match &latarnia.status {
            Some(Ok(state)) => {
                let w = open.filter(|w| w.category.state() == Some(*state));
                Some((*state, w.map(|w| w.declaring_message().to_owned()), w.map(|w| w.start)))
            }
            Some(Err(_)) | None if latarnia.messages.as_ref().is_some_and(|m| m.is_ok()) => {
                Some(open.map_or((AvailabilityState::Available, None, None), |w| {
                    (
                        w.category.state().unwrap_or(AvailabilityState::Failure),
                        Some(w.declaring_message().to_owned()),
                        Some(w.start),
                    )
                }))
            }
            Some(Err(_)) => previous.and_then(|p| match &p.source {
                AvailabilitySource::Latarnia { message } => Some((p.state, message.clone(), Some(p.since))),
                _ => None,
            }),
            None => None,
        };
        let (state, source, declared_since) = match declared {
            Some((s, message, since)) if s != AvailabilityState::Available => (s, AvailabilitySource::Latarnia { message }, since),
            _ => match evidence.down() {
                Some(detail) => (AvailabilityState::Degraded, AvailabilitySource::OwnEvidence { detail }, None),
                None => (AvailabilityState::Available, AvailabilitySource::Nothing, None),
            },
        };
        let since = match previous {
            Some(p) if p.state == state => p.since,
            _ => declared_since.filter(|s| *s <= now).unwrap_or(now),
        };
        Availability {
            environment: environment.to_owned(),
            state,
            source,
            since,
            checked_at: now,
            latarnia_answered: answered,
            windows,
            evidence: evidence.clone(),
        }
    }

    /// Whether the send stage holds documents now.
    pub fn holds_sending(&self) -> bool {
        self.state.holds_sending()
    }

    /// The declared failures and maintenances (start and end of each), oldest first: for the
    /// legal deadlines of offline invoices.
    pub fn declared_failures(&self) -> &[FailureWindow] {
        &self.windows
    }

    /// One line for a document's history and the logs.
    pub fn describe(&self) -> String {
        format!(
            "KSeF {} is {} since {} ({})",
            self.environment,
            self.state,
            self.since.to_rfc3339(),
            self.source
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn msg(id: &str, event: &str, kind: &str, start: &str, end: Option<&str>, version: u32) -> DeclaredMessage {
        DeclaredMessage {
            id: id.into(),
            event_id: Some(event.into()),
            category: DeclaredCategory::Failure,
            kind: DeclaredKind::parse(kind),
            title: "Awaria".into(),
            text: String::new(),
            start: Some(at(start)),
            end: end.map(at),
            version,
            published: Some(at(start)),
        }
    }

    #[test]
    fn a_failure_start_and_end_make_one_window_and_the_latest_version_counts() {
        let ms = vec![
            msg("K/2026/AWR/02", "E1", "FAILURE_START", "2026-11-20T08:00:00Z", None, 1),
            msg("K/2026/AWR/02", "E1", "FAILURE_START", "2026-11-20T07:30:00Z", None, 2),
            msg(
                "K/2026/AWR/03",
                "E1",
                "FAILURE_END",
                "2026-11-20T12:00:00Z",
                Some("2026-11-20T11:45:00Z"),
                1,
            ),
        ];
        let w = failure_windows(&ms);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].start, at("2026-11-20T07:30:00Z"), "version 2 moved the start");
        assert_eq!(w[0].end, Some(at("2026-11-20T11:45:00Z")));
        assert!(w[0].end_declared);
        assert_eq!(w[0].declaring_message(), "K/2026/AWR/02");
        assert!(w[0].is_open_at(at("2026-11-20T09:00:00Z")));
        assert!(!w[0].is_open_at(at("2026-11-20T12:00:00Z")));
    }

    #[test]
    fn latarnia_declares_and_its_silence_keeps_the_declared_state_while_our_evidence_covers_a_silent_outage() {
        let t = at("2026-11-20T09:00:00Z");
        let start = msg("K/1", "E1", "FAILURE_START", "2026-11-20T08:00:00Z", None, 1);
        let reading = LatarniaReading {
            status: Some(Ok(AvailabilityState::Failure)),
            messages: Some(Ok(vec![start.clone()])),
        };
        let a = Availability::decide("PROD", None, &reading, &OwnEvidence::default(), t);
        assert_eq!(a.state, AvailabilityState::Failure);
        assert_eq!(
            a.source,
            AvailabilitySource::Latarnia {
                message: Some("K/1".into())
            }
        );
        assert_eq!(a.since, at("2026-11-20T08:00:00Z"));
        assert!(a.holds_sending());

        // Latarnia answers 502: the declared failure stands.
        let down = LatarniaReading {
            status: Some(Err("502".into())),
            messages: Some(Err("502".into())),
        };
        let b = Availability::decide("PROD", Some(&a), &down, &OwnEvidence::default(), t + chrono::Duration::minutes(5));
        assert_eq!(
            (b.state, b.since, b.latarnia_answered),
            (AvailabilityState::Failure, a.since, Some(false))
        );
        assert_eq!(b.declared_failures().len(), 1);

        // FAILURE_END published: available again.
        let end = msg("K/2", "E1", "FAILURE_END", "2026-11-20T10:00:00Z", Some("2026-11-20T10:00:00Z"), 1);
        let back = LatarniaReading {
            status: Some(Ok(AvailabilityState::Available)),
            messages: Some(Ok(vec![start, end])),
        };
        let c = Availability::decide("PROD", Some(&b), &back, &OwnEvidence::default(), at("2026-11-20T10:05:00Z"));
        assert_eq!(c.state, AvailabilityState::Available);
        assert!(!c.holds_sending());
        assert_eq!(c.declared_failures()[0].end, Some(at("2026-11-20T10:00:00Z")));

        // Latarnia says AVAILABLE but the probe fails: DEGRADED on our own evidence.
        let silent = LatarniaReading {
            status: Some(Ok(AvailabilityState::Available)),
            messages: Some(Ok(vec![])),
        };
        let probe_failed = OwnEvidence {
            probe: Some(Err("503 Service Unavailable".into())),
            ..OwnEvidence::default()
        };
        let d = Availability::decide("PROD", Some(&c), &silent, &probe_failed, at("2026-11-20T11:00:00Z"));
        assert_eq!(d.state, AvailabilityState::Degraded);
        assert!(matches!(d.source, AvailabilitySource::OwnEvidence { .. }));
        assert_eq!(d.since, at("2026-11-20T11:00:00Z"));
        // A run of failed calls alone, with no probe, also counts; a good probe outweighs it.
        let calls = OwnEvidence {
            probe: None,
            failed_calls: FAILED_CALLS_DOWN,
            failing_sellers: 2,
        };
        assert!(calls.down().is_some());
        let good = OwnEvidence {
            probe: Some(Ok(())),
            ..calls
        };
        assert!(good.down().is_none());
    }

    #[test]
    fn a_maintenance_announced_for_later_is_not_in_progress_until_it_starts() {
        let mut m = msg(
            "K/M/1",
            "M1",
            "MAINTENANCE_ANNOUNCEMENT",
            "2026-11-21T16:00:00Z",
            Some("2026-11-21T18:00:00Z"),
            1,
        );
        m.category = DeclaredCategory::Maintenance;
        let reading = |status| LatarniaReading {
            status: Some(Err::<AvailabilityState, String>(status)),
            messages: Some(Ok(vec![m.clone()])),
        };
        let before = Availability::decide(
            "TEST",
            None,
            &reading("504".into()),
            &OwnEvidence::default(),
            at("2026-11-21T15:00:00Z"),
        );
        assert_eq!(before.state, AvailabilityState::Available);
        let during = Availability::decide(
            "TEST",
            None,
            &reading("504".into()),
            &OwnEvidence::default(),
            at("2026-11-21T16:30:00Z"),
        );
        assert_eq!(during.state, AvailabilityState::Maintenance);
        assert_eq!(during.windows[0].end, Some(at("2026-11-21T18:00:00Z")));
        assert!(!during.windows[0].end_declared);
    }

    #[test]
    fn failed_calls_count_up_to_a_hold_and_a_good_probe_outweighs_them() {
        let t = at("2026-11-20T09:00:00Z");
        let mut calls = FailedCalls::default();
        for i in 0..FAILED_CALLS_DOWN {
            assert!(calls.evidence(None).down().is_none(), "{i} failures do not hold");
            calls = calls.with_failure(
                if i % 2 == 0 { "1111111111" } else { "2222222222" },
                t + chrono::Duration::seconds(i.into()),
            );
        }
        assert_eq!((calls.failed, calls.sellers.len(), calls.since), (FAILED_CALLS_DOWN, 2, Some(t)));
        let down = calls.evidence(None).down().expect("held");
        assert!(down.contains("from 2 seller(s)"), "{down}");
        let a = Availability::decide("PROD", None, &LatarniaReading::none(), &calls.evidence(None), t);
        assert_eq!(a.state, AvailabilityState::Degraded);
        assert!(calls.evidence(Some(Ok(()))).down().is_none(), "a good probe outweighs them");
    }

    #[test]
    fn unknown_states_categories_and_kinds_are_kept_not_refused() {
        assert_eq!(
            AvailabilityState::from_latarnia("total_failure"),
            Some(AvailabilityState::TotalFailure)
        );
        assert_eq!(AvailabilityState::from_latarnia("PARTIAL"), None);
        assert_eq!(DeclaredCategory::parse("NEW"), DeclaredCategory::Other("NEW".into()));
        assert_eq!(DeclaredKind::parse("x"), DeclaredKind::Other("x".into()));
        assert!(AvailabilityState::Available.level() < AvailabilityState::TotalFailure.level());
    }
}
