//! A person's decisions on one document, named by its identity: resolving a CONFLICT, and
//! sending again a REJECTED document whose rejection was not about its content. Reached from
//! dlq-replay's console event and from `ksef-relay resolve` / `ksef-relay send-again`.
//!
//! Every decision needs who (`by`) and why (`reason`), both kept in the document's history; it is
//! written through the state machine ([`Change::Resolved`], [`Change::Requeued`]), then its
//! follow-up (the next message, the outbox result) is issued. Running a decision twice does no
//! harm: the second finds the document moved on, changes nothing and writes its outbox result
//! again; a crash between the state write and the next message is repaired by the sweeper (the
//! document is open and overdue), as after any stage's write.

use chrono::{DateTime, Utc};
use ksef_client::Duplicate;
use relay_domain::ports::{Archive, DocumentRegistry, DocumentUpdates, ObjectBody, Queue, StoreError};
use relay_domain::storage_keys::upo_key;
use relay_domain::{Change, DocumentKey, DocumentRecord, DocumentState, HistoryEvent, KsefNumber, KsefReference, Resolution};
use serde::{Deserialize, Serialize};

use crate::follow_up::NextMessage;
use crate::outbox::OutboxResult;
use crate::queue_action::StageError;
use crate::sessions::KsefContexts;

/// The change that sends a REJECTED document again, if its rejection was not about its content
/// (and no person withdrew it): the one rule behind a re-uploaded file and dlq-replay.
pub fn send_again_change(r: &DocumentRecord, why: &str) -> Option<Change> {
    if !r.may_send_again() {
        return None;
    }
    let rejection = r.last_error.as_ref().map(|f| f.to_string()).unwrap_or_default();
    Some(Change::Requeued {
        reason: format!("{why}; its rejection ({rejection}) was not about its content, so it is sent again with a fresh budget"),
        reset_budget: true,
    })
}

/// What a person decides about a CONFLICT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The KSeF original is this invoice.
    Ours,
    /// Send it again so KSeF answers again and the duplicate is proven anew.
    Recheck,
    /// It will not be sent.
    Withdraw,
}

/// `{"document": "9999999999|VAT|FV/1", "decision": "ours", "by": "jan", "reason": "..."}`;
/// for `ours`, optionally `ksef_number` and `original_session` (default: what KSeF's 440 named)
/// and `acquisition_date` (needed only when the original's UPO cannot be fetched now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The document's identity: `{sellerNip}|{kind}|{P_2}`.
    pub document: String,
    pub decision: Decision,
    /// Who decides (a name or login), for the history.
    pub by: String,
    /// Why, for the history (a ticket, what was checked in KSeF).
    pub reason: String,
    #[serde(default)]
    pub ksef_number: Option<KsefNumber>,
    #[serde(default)]
    pub original_session: Option<KsefReference>,
    #[serde(default)]
    pub acquisition_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub dry_run: bool,
}

/// `{"document": "9999999999|VAT|FV/1", "by": "jan", "reason": "IP allow-list fixed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendAgainRequest {
    pub document: String,
    pub by: String,
    pub reason: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DecisionOutcome {
    /// The state moved (or, in a dry run, would move).
    Done,
    /// Already decided before: nothing changed, the outbox result was written again.
    AlreadyDone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionReport {
    pub document: String,
    pub dry_run: bool,
    pub outcome: DecisionOutcome,
    /// The document's state after the decision (before it, in a dry run).
    pub state: DocumentState,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl From<StoreError> for DecisionError {
    fn from(e: StoreError) -> Self {
        DecisionError::Stage(e.into())
    }
}

fn refuse<T>(why: impl Into<String>) -> Result<T, DecisionError> {
    Err(DecisionError::Refused(why.into()))
}

/// The ports a decision writes through: the record, the outbox (and a UPO), the next message.
pub struct DecisionPorts<'a, S: DocumentRegistry + DocumentUpdates + ?Sized> {
    pub store: &'a S,
    pub archive: &'a dyn Archive,
    pub send_queue: &'a dyn Queue,
    pub status_queue: &'a dyn Queue,
}

async fn load<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &DecisionPorts<'_, S>,
    document: &str,
    by: &str,
    reason: &str,
) -> Result<(DocumentRecord, Vec<relay_domain::HistoryEntry>), DecisionError> {
    if by.trim().is_empty() || reason.trim().is_empty() {
        return refuse("say who decides (by) and why (reason): both go into the document's history");
    }
    let key = DocumentKey::parse_storage_id(document).map_err(|e| DecisionError::Refused(e.to_string()))?;
    match ports.store.get(&key).await? {
        Some(doc) => Ok((doc.record, doc.history)),
        None => refuse(format!("no document {document} in the store")),
    }
}

/// Issues what the record now implies: its next message if it has one (only right after the
/// decision's own write: a repeated decision leaves a lost message to the sweeper, which re-drives
/// an open document that is overdue, rather than send a second one), and its outbox result.
async fn follow_up<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &DecisionPorts<'_, S>,
    r: &DocumentRecord,
    with_message: bool,
    now: DateTime<Utc>,
) -> Result<(), StageError> {
    if let Some(next) = NextMessage::for_record(r).filter(|_| with_message) {
        next.send(ports.send_queue, ports.status_queue, r, now).await?;
    }
    let errors = r.last_error.iter().cloned().collect();
    OutboxResult::for_record(r, errors).publish(ports.archive).await?;
    Ok(())
}

/// Whether the document ever left `from` for `to` (any `to` if None). Only a person's
/// resolution leads out of CONFLICT (the state machine admits nothing else), so a move out of
/// it is a resolution.
fn left(history: &[relay_domain::HistoryEntry], from: DocumentState, to: Option<DocumentState>) -> bool {
    history
        .iter()
        .any(|h| matches!(&h.event, HistoryEvent::StateChanged { from: Some(f), to: t, .. } if *f == from && to.is_none_or(|to| to == *t)))
}

/// Resolves a CONFLICT as a person decided. `ksef` (when given) fetches the original's UPO for
/// `ours`, so the acquisition date is KSeF's own; without it (the CLI holds no KSeF token) the
/// person gives the date and the status stage fetches the UPO.
pub async fn resolve_conflict<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &DecisionPorts<'_, S>,
    ksef: Option<&KsefContexts>,
    req: &ResolveRequest,
    now: DateTime<Utc>,
) -> Result<DecisionReport, DecisionError> {
    let (r, history) = load(ports, &req.document, &req.by, &req.reason).await?;
    let report = |outcome, state, detail: String| DecisionReport {
        document: req.document.clone(),
        dry_run: req.dry_run,
        outcome,
        state,
        detail,
    };
    if r.state != DocumentState::Conflict {
        if !left(&history, DocumentState::Conflict, None) {
            return refuse(format!("{} is {}, not CONFLICT: nothing to resolve", req.document, r.state));
        }
        if !req.dry_run {
            follow_up(ports, &r, false, now).await?;
        }
        return Ok(report(
            DecisionOutcome::AlreadyDone,
            r.state,
            format!("already resolved (now {}); its outbox result was written again", r.state),
        ));
    }
    let resolution = match req.decision {
        Decision::Recheck => Resolution::Recheck,
        Decision::Withdraw => Resolution::Withdrawn,
        Decision::Ours => ours(ports, ksef, req, &r, now).await?,
    };
    let target = match &resolution {
        Resolution::Ours { .. } => DocumentState::Accepted,
        Resolution::Recheck => DocumentState::Queued,
        Resolution::Withdrawn => DocumentState::Rejected,
    };
    let detail = match &resolution {
        Resolution::Ours {
            ksef_number,
            acquisition_date,
            upo_key,
            ..
        } => format!(
            "ACCEPTED under {ksef_number}, acquired {}; {}",
            acquisition_date.to_rfc3339(),
            if upo_key.is_some() {
                "the original's UPO is archived"
            } else {
                "its UPO is fetched by the status stage"
            }
        ),
        Resolution::Recheck => "QUEUED with a fresh budget: KSeF is asked again".into(),
        Resolution::Withdrawn => "REJECTED (WITHDRAWN): it will not be sent".into(),
    };
    if req.dry_run {
        let detail = match (&resolution, ksef) {
            // A dry run does not call KSeF: say what the real run will try.
            (Resolution::Ours { ksef_number, .. }, Some(_)) => format!(
                "ACCEPTED under {ksef_number}, with the original's UPO and acquisition date fetched from KSeF{}",
                req.acquisition_date
                    .map(|d| format!(
                        " (if it cannot be fetched: acquired {}, the UPO fetched by the status stage)",
                        d.to_rfc3339()
                    ))
                    .unwrap_or_else(|| " (if it cannot be fetched, the run is refused: give acquisition_date)".into())
            ),
            (Resolution::Ours { .. }, None) if req.acquisition_date.is_none() => {
                return refuse(
                    "without KSeF access here, give the acquisition date KSeF shows (acquisition_date; the CLI's --acquisition-date)",
                )
            }
            _ => detail,
        };
        return Ok(report(DecisionOutcome::Done, r.state, format!("would be {detail}")));
    }
    let change = Change::Resolved {
        resolution,
        by: req.by.clone(),
        reason: req.reason.clone(),
    };
    let r = ports.store.transition(&r, change, now).await?;
    debug_assert_eq!(r.state, target);
    follow_up(ports, &r, true, now).await?;
    tracing::warn!(document = %r.key, trace_id = %r.trace_id, decision = ?req.decision, by = %req.by, "CONFLICT resolved by a person");
    Ok(report(DecisionOutcome::Done, r.state, detail))
}

/// The KSeF number and acquisition date of the original, and its UPO if it can be fetched now.
async fn ours<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &DecisionPorts<'_, S>,
    ksef: Option<&KsefContexts>,
    req: &ResolveRequest,
    r: &DocumentRecord,
    now: DateTime<Utc>,
) -> Result<Resolution, DecisionError> {
    let named = r.last_error.as_ref().and_then(Duplicate::of);
    let Some(number) = req.ksef_number.clone().or(named.as_ref().map(|d| d.original.clone())) else {
        return refuse("KSeF named no original for this CONFLICT: give its KSeF number (ksef_number; the CLI's --ksef-number)");
    };
    let session = req.original_session.clone().or(named.and_then(|d| d.original_session));
    let Some(session) = session else {
        return refuse(format!(
            "the session that holds {number} is not known, so its UPO cannot be fetched: give it (original_session; the CLI's --original-session)"
        ));
    };
    if r.ksef.session_reference.is_none() || r.ksef.invoice_reference.is_none() {
        return refuse(
            "this CONFLICT was recorded before KSeF gave the send a reference: the status stage cannot fetch the UPO for it; use recheck",
        );
    }
    let mut fetched = None;
    let mut why_not = "the relay has no KSeF access here".to_owned();
    if let (Some(ksef), false) = (ksef, req.dry_run) {
        let upo = match ksef.client_ready(&r.key.seller_nip, now).await {
            Ok(client) => client.invoice_upo_by_ksef_number(session.as_str(), number.as_str()).await,
            Err(f) => Err(f),
        };
        match upo {
            Ok(upo) => fetched = Some(upo.xml),
            Err(f) => why_not = format!("the original's UPO could not be fetched now ({f})"),
        }
    }
    let (acquisition_date, upo_key) = match fetched {
        Some(xml) => {
            let numbered_at = crate::upo_read::documents(&xml)
                .into_iter()
                .find(|d| d.ksef_number == number.as_str())
                .and_then(|d| d.numbered_at);
            let Some(date) = numbered_at.or(req.acquisition_date) else {
                return refuse(format!("the UPO of {number} gives no acquisition date: give it (acquisition_date)"));
            };
            let key = upo_key(&r.key.seller_nip, &number);
            let body = ObjectBody::new(xml, "application/xml")
                .with_metadata("trace-id", r.trace_id.as_str())
                .with_metadata("ksef-number", number.as_str());
            ports.archive.put_if_absent(&key, body).await.map_err(StageError::from)?;
            (date, Some(key))
        }
        None => match req.acquisition_date {
            Some(date) => (date, None),
            None if req.dry_run => (now, None),
            None => {
                return refuse(format!(
                    "{why_not}: give the acquisition date KSeF shows for {number} (acquisition_date; the CLI's --acquisition-date); the status stage fetches the UPO"
                ))
            }
        },
    };
    Ok(Resolution::Ours {
        ksef_number: number,
        acquisition_date,
        original_session: Some(session),
        upo_key,
    })
}

/// Sends again a REJECTED document whose rejection was not about its content (the same rule as
/// the same file uploaded again). A content rejection is refused: it needs a corrected file.
pub async fn send_again<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &DecisionPorts<'_, S>,
    req: &SendAgainRequest,
    now: DateTime<Utc>,
) -> Result<DecisionReport, DecisionError> {
    let (r, history) = load(ports, &req.document, &req.by, &req.reason).await?;
    let report = |outcome, state, detail: String| DecisionReport {
        document: req.document.clone(),
        dry_run: req.dry_run,
        outcome,
        state,
        detail,
    };
    if r.state != DocumentState::Rejected {
        // Sent again already (or replaced by a corrected file): it is on its way.
        if !left(&history, DocumentState::Rejected, Some(DocumentState::Queued)) {
            return refuse(format!("{} is {}, not REJECTED: nothing to send again", req.document, r.state));
        }
        if !req.dry_run {
            follow_up(ports, &r, false, now).await?;
        }
        return Ok(report(
            DecisionOutcome::AlreadyDone,
            r.state,
            format!("already sent again (now {})", r.state),
        ));
    }
    let why = format!("sent again by {}: {}", req.by, req.reason);
    let Some(change) = send_again_change(&r, &why) else {
        let rejection = r.last_error.as_ref().map(|f| f.to_string()).unwrap_or_default();
        return refuse(format!(
            "{} was rejected for its content or withdrawn by a person ({rejection}): sending it again would fail the same way; upload a corrected file",
            req.document
        ));
    };
    if req.dry_run {
        return Ok(report(DecisionOutcome::Done, r.state, "would be QUEUED with a fresh budget".into()));
    }
    let r = ports.store.transition(&r, change, now).await?;
    follow_up(ports, &r, true, now).await?;
    Ok(report(DecisionOutcome::Done, r.state, "QUEUED with a fresh budget".into()))
}
