//! The document record: what the relay knows about one invoice, and the only code that changes
//! it. Stores persist what [`DocumentRecord::apply`] and [`DocumentRecord::claim`] return; they
//! never decide anything themselves, so every adapter has the same semantics by construction.
//!
//! The history is append-only and stored beside the record (never inside it, so a long story
//! cannot outgrow a storage item); [`Document`] is a record together with its history.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::failure::{ErrorClass, ErrorSource, Failure};
use crate::ids::{ContentHash, DocumentKey, ErpDocumentId, KsefNumber, KsefReference, TraceId};
use crate::offline::{InvoicingMode, LegalDeadline, OfflineCodes, OfflineMode};
use crate::state::{DocumentState, TransitionError};

/// Who holds a document for work, and until when. An expired lease may be taken over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until: DateTime<Utc>,
}

/// What KSeF told us about the document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KsefRefs {
    pub session_reference: Option<KsefReference>,
    pub invoice_reference: Option<KsefReference>,
    pub ksef_number: Option<KsefNumber>,
    /// When KSeF assigned the number: legally the date of receipt.
    pub acquisition_date: Option<DateTime<Utc>>,
    /// A send was started in this session and its result is unknown (a timeout, a 5xx, a crash):
    /// before sending again, the session's invoice list must be checked for our hash.
    #[serde(default)]
    pub unconfirmed_send: Option<KsefReference>,
    /// The session that holds the KSeF original this document was resolved to (a duplicate a
    /// person confirmed as ours, [`Resolution::Ours`]): its UPO is fetched there by KSeF number,
    /// since our own send of it was answered 440 and has no receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_session: Option<KsefReference>,
    /// The batch this document last joined (many invoices in one batch session): its id names
    /// the batch item (members, session) in the archive, `batches/{sellerNip}/{id}.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// How KSeF filed the invoice, from its status (`invoicingMode`): Offline when it was sent
    /// with `offlineMode: true` or after its issue day. None before KSeF said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoicing_mode: Option<InvoicingMode>,
    /// The same, from the UPO (`TrybWysylki`), when the UPO was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upo_mode: Option<InvoicingMode>,
}

/// The channel a document goes to KSeF by. Chosen once, at intake (an invoice with an attachment
/// goes in a batch session: KSeF takes attachments only there), and stored on the record, so
/// every attempt sends and reconciles by the same channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendMode {
    /// One invoice at a time in the seller's online session.
    Online,
    /// In a batch session: an archive of invoices uploaded in encrypted parts.
    Batch,
}

impl SendMode {
    /// The mode for an invoice as intake reads it.
    pub fn for_invoice(has_attachment: bool) -> SendMode {
        if has_attachment {
            SendMode::Batch
        } else {
            SendMode::Online
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SendMode::Online => "online",
            SendMode::Batch => "batch",
        }
    }
}

/// Where the document's objects live in the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageKeys {
    /// The object the ERP uploaded (`inbox/{sellerNip}/{erpDocId}.xml`).
    pub source: String,
    /// The exact bytes, kept by content hash (`archive/...`), never overwritten.
    pub archive: Option<String>,
    /// The UPO (`upo/{sellerNip}/{ksefNumber}.xml`).
    pub upo: Option<String>,
    /// KOD I, the invoice's verification QR code (`qr/{sellerNip}/{ksefNumber}-kod1.png|svg`),
    /// written before the document became ACCEPTED. None before the relay made QR codes, and
    /// for a document whose issue date (`P_1`) it did not keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_code: Option<crate::storage_keys::QrCodeKeys>,
}

/// The rejected offline upload a technical correction corrects (API-NOTES §10), as the record
/// held it while KSeF's rejection stood: the ERP named it (object metadata `ksef-corrects`),
/// and its exact bytes' SHA-256 goes to KSeF as `hashOfCorrectedInvoice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectedUpload {
    pub erp_document_id: ErpDocumentId,
    /// The SHA-256 of the rejected file's exact bytes.
    pub content_hash: ContentHash,
    /// Where the ERP uploaded the rejected file.
    pub source: String,
    pub trace_id: TraceId,
    /// KSeF's rejection of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Failure>,
}

/// The current state of one document. Its `version` grows with every write; writers hold the
/// version they read and a store refuses a write when it no longer matches (optimistic locking).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRecord {
    pub key: DocumentKey,
    pub content_hash: ContentHash,
    pub content_size: u64,
    pub trace_id: TraceId,
    pub erp_document_id: ErpDocumentId,
    pub state: DocumentState,
    pub state_since: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
    /// Failed attempts charged to the retry budget (rate limits are not charged).
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease: Option<Lease>,
    pub ksef: KsefRefs,
    pub storage: StorageKeys,
    /// Sent with `offlineMode: true`: issued offline ([`DocumentRecord::offline_mode`]).
    pub offline: bool,
    /// How it was issued offline: marked by the ERP at upload, or by the relay when it sends the
    /// invoice after its issue day. None: issued online (so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_mode: Option<OfflineMode>,
    /// By when it must be in KSeF ([`crate::offline::legal_deadline`]), as last computed: at
    /// registration (no declared outages known there), and again before each send with the
    /// declared failure windows of that moment. None for records written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_deadline: Option<LegalDeadline>,
    /// An offline invoice's two QR codes (KOD I labelled OFFLINE, KOD II).
    #[serde(default, skip_serializing_if = "OfflineCodes::is_not_made")]
    pub offline_codes: OfflineCodes,
    pub last_error: Option<Failure>,
    /// The invoice's issue date (`P_1`): the legal deadline for getting it into KSeF counts
    /// from it. None for records written before the relay kept it.
    #[serde(default)]
    pub issue_date: Option<NaiveDate>,
    /// Which follow-up message is the live one. Every change that hands the document to a new
    /// message (a send, a poll, a retry, a re-drive, a final state) moves it on; the message
    /// carries the step it was sent for. A message behind its record's step is a leftover: it
    /// does no work of its own and only re-emits the record's follow-up if that is overdue
    /// (the crash between a state write and the message write). 0 for records written before.
    #[serde(default)]
    pub step: u64,
    /// Recoveries spent: new sessions, new logins and failed reconciliation reads. They sent
    /// nothing, so they are not charged to `attempts`; their own limit ends an endless loop.
    #[serde(default)]
    pub recoveries: u32,
    /// The channel chosen at intake; read it with [`DocumentRecord::send_mode`]. None for records
    /// registered before the relay kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    send_mode: Option<SendMode>,
    /// A technical correction: the rejected offline upload it corrects. It goes online (even
    /// with an attachment) with `offlineMode: true` and `hashOfCorrectedInvoice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrects: Option<CorrectedUpload>,
}

/// Everything needed to register a document at intake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    pub key: DocumentKey,
    pub content_hash: ContentHash,
    pub content_size: u64,
    pub trace_id: TraceId,
    pub erp_document_id: ErpDocumentId,
    pub storage: StorageKeys,
    /// Issued offline, as the ERP marked the upload (None: online).
    pub offline_mode: Option<OfflineMode>,
    /// The issue date (`P_1`).
    pub issue_date: Option<NaiveDate>,
    /// The channel it goes to KSeF by.
    pub send_mode: SendMode,
    /// Why that channel (the backlog rule's words): appended to the registration's history line.
    pub send_mode_reason: Option<String>,
    /// QUEUED for a valid document; REJECTED with the findings for an invalid one.
    pub initial: InitialState,
}

/// The state a document is registered in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialState {
    Queued,
    Rejected { findings: Vec<Failure> },
}

/// One line of a document's story. Entries are appended and never changed or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: HistoryEvent,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HistoryEvent {
    Registered {
        content_hash: ContentHash,
        erp_document_id: ErpDocumentId,
        trace_id: TraceId,
        source: String,
    },
    StateChanged {
        from: Option<DocumentState>,
        to: DocumentState,
        reason: String,
    },
    /// "About to send": recorded before the POST, so an ambiguous failure can be reconciled.
    SendStarted {
        session: KsefReference,
        content_hash: ContentHash,
        attempt: u32,
    },
    /// Joined batch `batch`, its archive entry starting in part `part`: recorded before the batch
    /// session is opened.
    JoinedBatch {
        batch: String,
        part: u32,
    },
    Error {
        failure: Failure,
    },
    Note {
        message: String,
    },
}

/// A change to a document. [`DocumentRecord::apply`] checks it against the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// About to POST the invoice in `session`. Keeps the lease and the state.
    SendStarted { session: KsefReference },
    /// Joined batch `batch` (entry in `part`), before its session is opened. Keeps the lease and
    /// the state; nothing was sent.
    JoinedBatch { batch: String, part: u32 },
    /// A failed attempt that will be retried at `retry_at`. Rate limits are not charged.
    /// `maybe_received`: KSeF may have taken the invoice after all (timeout, 5xx), so the next
    /// attempt reconciles first; false when KSeF certainly refused it (429, 401, 4xx).
    RetryScheduled {
        failure: Failure,
        retry_at: DateTime<Utc>,
        charged: bool,
        maybe_received: bool,
    },
    /// Reconciliation found no trace of the unconfirmed send in its session: sending is safe.
    Reconciled { detail: String },
    /// The document goes to KSeF by `mode` from now on (an Online document whose online send
    /// has not happened yet joins its seller's batch that is going anyway), `reason` in its
    /// history. Only a QUEUED document with no unconfirmed send changes mode: nothing of it can
    /// be in KSeF. Keeps the lease (the batch that took it goes on under the same claim); moves
    /// the step on, so a message issued for the old mode is a leftover and never sends it.
    ModeChanged { mode: SendMode, reason: String },
    /// Checked before a send: the invoice is offline in `mode` (the ERP's marking, or the
    /// relay's when it is sent after its issue day), its legal deadline is `deadline` (with the
    /// declared outages known now), and its offline QR codes were written (`Ok`), could not be
    /// (`Err`, recorded: the seller's Offline certificate is missing, an operator's problem), or
    /// were not tried (None). Keeps the state, the lease and the step: the same message sends.
    OfflineChecked {
        mode: Option<OfflineMode>,
        deadline: LegalDeadline,
        codes: Option<Result<(), Failure>>,
    },
    /// The invoice went in a batch session that KSeF is still processing: nothing is known
    /// until the session is final, so the send stays unconfirmed and is checked at `check_at`.
    /// Releases the lease (another instance may do the check).
    AwaitingBatch { detail: String, check_at: DateTime<Utc> },
    /// KSeF took the invoice (202) under `invoice_reference`.
    Sent {
        session: KsefReference,
        invoice_reference: KsefReference,
    },
    /// KSeF reports processing (100/150); poll again at `next_poll_at`.
    Processing { detail: String, next_poll_at: DateTime<Utc> },
    /// KSeF assigned a number: the invoice legally exists. `upo_key` is None when the UPO could
    /// not be fetched yet (the status stage fetches it later, see [`Change::UpoArchived`]).
    Accepted {
        ksef_number: KsefNumber,
        acquisition_date: DateTime<Utc>,
        upo_key: Option<String>,
        /// KOD I's images, already written (None when they could not be made).
        qr_code: Option<crate::storage_keys::QrCodeKeys>,
        /// How KSeF filed it: `invoicingMode` from the status, `TrybWysylki` from the UPO.
        invoicing_mode: Option<InvoicingMode>,
        upo_mode: Option<InvoicingMode>,
        reason: String,
    },
    /// Permanent: our validation or KSeF's 4xx. Every finding is recorded.
    Rejected { failures: Vec<Failure> },
    /// The retry budget is spent.
    Failed { failure: Failure },
    /// Needs a person: other content under the same identity, or a duplicate that is not ours.
    Conflict { failure: Failure },
    /// A status poll got no answer (network, 5xx, 429, the UPO not ready): recorded, and the
    /// next poll is due at `next_poll_at`.
    PollFailed { failure: Failure, next_poll_at: DateTime<Utc> },
    /// The document's next step was overdue and no message was handling it (a crash between a
    /// state write and its message, or a lost message): a new follow-up is issued now.
    Redriven { reason: String },
    /// The UPO of an ACCEPTED document (numbered before its UPO could be fetched) is archived.
    UpoArchived { upo_key: String },
    /// Back to the queue: resend in a new session (405, 550), a DLQ replay, a resolved conflict.
    Requeued { reason: String, reset_budget: bool },
    /// A corrected file under the same identity replaces a REJECTED one (a rejected invoice never
    /// legally existed, so its number may be used again): new content, fresh budget, QUEUED.
    Resubmitted {
        content_hash: ContentHash,
        content_size: u64,
        erp_document_id: ErpDocumentId,
        trace_id: TraceId,
        storage: StorageKeys,
        issue_date: Option<NaiveDate>,
        send_mode: SendMode,
        /// The corrected file's offline marking.
        offline_mode: Option<OfflineMode>,
        /// A technical correction of the rejected offline invoice (the ERP named it): the record
        /// keeps what it corrects, and the history says so both ways. Boxed: it is large.
        corrects: Option<Box<CorrectedUpload>>,
    },
    /// dlq-replay: a FAILED document that KSeF holds after all (`invoice_reference` in
    /// `session`) goes back to status polling, with a fresh budget; it is never sent again.
    Resumed {
        session: KsefReference,
        invoice_reference: KsefReference,
        reason: String,
    },
    /// A person resolved a CONFLICT (the only way out of it): `by` and `reason` go into the
    /// history line.
    Resolved {
        resolution: Resolution,
        by: String,
        reason: String,
    },
    /// Like `RetryScheduled`, but spends the recovery limit, not the send budget: a new session
    /// or login KSeF asked for, or a reconciliation read that failed. Nothing was sent.
    RecoveryScheduled {
        failure: Failure,
        retry_at: DateTime<Utc>,
        maybe_received: bool,
    },
}

/// What a person decided about a CONFLICT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The KSeF original is this invoice: ACCEPTED under its number and acquisition date.
    /// `original_session` is where KSeF holds it (its UPO is fetched there by number); `upo_key`
    /// when the UPO is already archived, else the status stage fetches it.
    Ours {
        ksef_number: KsefNumber,
        acquisition_date: DateTime<Utc>,
        original_session: Option<KsefReference>,
        upo_key: Option<String>,
    },
    /// Ask KSeF again: QUEUED with a fresh budget. KSeF never keeps a second invoice under the
    /// same identity (it answers 440 again), and the status stage then tries the proof anew: for
    /// a CONFLICT recorded when the original's receipt could not be read.
    Recheck,
    /// This document will not be sent: REJECTED with the person's reason (code `WITHDRAWN`).
    /// Neither the same file again nor dlq-replay sends it; a corrected file may replace it.
    Withdrawn,
}

impl Resolution {
    /// The name in events, the CLI and history lines.
    pub fn name(&self) -> &'static str {
        match self {
            Resolution::Ours { .. } => "ours",
            Resolution::Recheck => "recheck",
            Resolution::Withdrawn => "withdraw",
        }
    }
}

/// The failure a withdrawn document is REJECTED with.
pub const WITHDRAWN: &str = "WITHDRAWN";

impl Change {
    fn target(&self, current: DocumentState) -> DocumentState {
        match self {
            Change::SendStarted { .. }
            | Change::JoinedBatch { .. }
            | Change::ModeChanged { .. }
            | Change::OfflineChecked { .. }
            | Change::RetryScheduled { .. }
            | Change::Reconciled { .. }
            | Change::AwaitingBatch { .. }
            | Change::PollFailed { .. }
            | Change::Redriven { .. }
            | Change::UpoArchived { .. }
            | Change::RecoveryScheduled { .. } => current,
            Change::Sent { .. } => DocumentState::Sent,
            Change::Processing { .. } => DocumentState::Processing,
            Change::Accepted { .. } => DocumentState::Accepted,
            Change::Rejected { .. } => DocumentState::Rejected,
            Change::Failed { .. } => DocumentState::Failed,
            Change::Conflict { .. } => DocumentState::Conflict,
            Change::Requeued { .. } | Change::Resubmitted { .. } => DocumentState::Queued,
            Change::Resumed { .. } => DocumentState::Sent,
            Change::Resolved { resolution, .. } => match resolution {
                Resolution::Ours { .. } => DocumentState::Accepted,
                Resolution::Recheck => DocumentState::Queued,
                Resolution::Withdrawn => DocumentState::Rejected,
            },
        }
    }

    /// Changes that only make sense from particular states, beyond the state machine's table.
    fn admits(&self, from: DocumentState) -> bool {
        use DocumentState::*;
        match self {
            Change::SendStarted { .. }
            | Change::JoinedBatch { .. }
            | Change::ModeChanged { .. }
            | Change::OfflineChecked { .. }
            | Change::Reconciled { .. }
            | Change::AwaitingBatch { .. } => from == Queued,
            Change::RetryScheduled { .. } | Change::RecoveryScheduled { .. } => matches!(from, Queued | Sent | Processing),
            Change::Resubmitted { .. } => from == Rejected,
            // ACCEPTED too: the number is recorded, the UPO is still to be fetched.
            Change::PollFailed { .. } => matches!(from, Sent | Processing | Accepted),
            // ACCEPTED too: numbered, its UPO still to be fetched (the sweeper re-drives that).
            Change::Redriven { .. } => matches!(from, Queued | Sent | Processing | Accepted),
            Change::UpoArchived { .. } => from == Accepted,
            // KSeF's 202 is taken while sending; out of FAILED only a replay's checked resume leads.
            Change::Sent { .. } => from != Failed,
            Change::Resumed { .. } => from == Failed,
            // Out of CONFLICT only a person's resolution leads, and it leads nowhere else.
            Change::Resolved { .. } => from == Conflict,
            Change::Accepted { .. } | Change::Rejected { .. } | Change::Requeued { .. } => from != Conflict,
            _ => true,
        }
    }
}

/// What [`DocumentRecord::apply`] produced: the new record and the history lines to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub record: DocumentRecord,
    pub history: Vec<HistoryEntry>,
}

/// The work a claim is for; each admits its own states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimPurpose {
    /// The send function: documents waiting to be sent.
    Send,
    /// The status function: documents KSeF is processing.
    Poll,
    /// dlq-replay: documents that failed or were sent and lost track of.
    Replay,
}

impl ClaimPurpose {
    pub fn claimable_states(self) -> &'static [DocumentState] {
        match self {
            ClaimPurpose::Send => &[DocumentState::Queued],
            ClaimPurpose::Poll => &[DocumentState::Sent, DocumentState::Processing],
            ClaimPurpose::Replay => &[
                DocumentState::Failed,
                DocumentState::Queued,
                DocumentState::Sent,
                DocumentState::Processing,
            ],
        }
    }
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefused {
    #[error("document is held by {owner} until {until}")]
    LeaseHeld { owner: String, until: DateTime<Utc> },
    #[error("document is {state}, which {purpose:?} does not claim")]
    WrongState { state: DocumentState, purpose: ClaimPurpose },
}

impl DocumentRecord {
    /// The channel chosen at intake; None for a record registered before the relay kept it (its
    /// sender reads the mode from the invoice).
    pub fn send_mode(&self) -> Option<SendMode> {
        self.send_mode
    }

    /// The send whose result is unknown ([`KsefRefs::unconfirmed_send`]) and the channel it went
    /// by, which is the one that can reconcile it. A record registered before the mode was kept
    /// tells by the session: KSeF names batch sessions `…-SB-…`.
    pub fn unconfirmed_send(&self) -> Option<(KsefReference, SendMode)> {
        let session = self.ksef.unconfirmed_send.clone()?;
        let mode = self.send_mode.unwrap_or(if session.kind() == "SB" {
            SendMode::Batch
        } else {
            SendMode::Online
        });
        Some((session, mode))
    }

    /// A REJECTED document whose rejection was not about its content (an operator's problem
    /// recorded before such failures had their own class: a 403, an unknown status, a refused
    /// login) and that no person withdrew: worth sending again, by the same file uploaded again
    /// or by dlq-replay.
    pub fn may_send_again(&self) -> bool {
        self.state == DocumentState::Rejected
            && self
                .last_error
                .as_ref()
                .is_some_and(|f| !f.is_content_failure() && f.code.as_deref() != Some(WITHDRAWN))
    }

    /// The record a registration writes, with its first history lines.
    pub fn register(new: NewDocument, now: DateTime<Utc>) -> Applied {
        let (state, last_error, mut extra) = match new.initial {
            InitialState::Queued => (DocumentState::Queued, None, Vec::new()),
            InitialState::Rejected { findings } => {
                let last = findings.last().cloned();
                let entries = findings
                    .into_iter()
                    .map(|failure| HistoryEntry {
                        at: now,
                        event: HistoryEvent::Error { failure },
                    })
                    .collect();
                (DocumentState::Rejected, last, entries)
            }
        };
        let record = DocumentRecord {
            key: new.key,
            content_hash: new.content_hash,
            content_size: new.content_size,
            trace_id: new.trace_id.clone(),
            erp_document_id: new.erp_document_id.clone(),
            state,
            state_since: now,
            created_at: now,
            updated_at: now,
            version: 1,
            step: 1,
            attempts: 0,
            next_attempt_at: None,
            lease: None,
            ksef: KsefRefs::default(),
            storage: new.storage.clone(),
            offline: new.offline_mode.is_some(),
            offline_mode: new.offline_mode,
            legal_deadline: new.issue_date.map(|d| crate::offline::legal_deadline(new.offline_mode, d, &[])),
            offline_codes: OfflineCodes::NotMade,
            last_error,
            issue_date: new.issue_date,
            recoveries: 0,
            send_mode: Some(new.send_mode),
            corrects: None,
        };
        let mut history = vec![
            HistoryEntry {
                at: now,
                event: HistoryEvent::Registered {
                    content_hash: new.content_hash,
                    erp_document_id: new.erp_document_id,
                    trace_id: new.trace_id,
                    source: new.storage.source,
                },
            },
            HistoryEntry {
                at: now,
                event: HistoryEvent::StateChanged {
                    from: None,
                    to: state,
                    reason: {
                        let base = match (&new.send_mode_reason, state) {
                            (Some(why), DocumentState::Queued) => format!("registered at intake; {}: {why}", new.send_mode.name()),
                            _ => "registered at intake".into(),
                        };
                        match (new.offline_mode, &record.legal_deadline) {
                            (Some(m), Some(d)) => format!("{base}; issued offline ({}, the ERP's marking); {}", m.name(), d.describe()),
                            (Some(m), None) => format!("{base}; issued offline ({}, the ERP's marking)", m.name()),
                            (None, _) => base,
                        }
                    },
                },
            },
        ];
        history.append(&mut extra);
        Applied { record, history }
    }

    /// Applies `change`, checked against the state machine. The result has `version + 1`;
    /// a store must write it only if the stored version is still `self.version`.
    pub fn apply(&self, change: Change, now: DateTime<Utc>) -> Result<Applied, TransitionError> {
        let from = self.state;
        let to = change.target(from);
        let moves = to != from;
        // SendStarted and RetryScheduled stay put; a state change goes through the one check.
        let stays = matches!(
            change,
            Change::SendStarted { .. }
                | Change::JoinedBatch { .. }
                | Change::ModeChanged { .. }
                | Change::OfflineChecked { .. }
                | Change::RetryScheduled { .. }
                | Change::Reconciled { .. }
                | Change::AwaitingBatch { .. }
                | Change::PollFailed { .. }
                | Change::Redriven { .. }
                | Change::UpoArchived { .. }
                | Change::RecoveryScheduled { .. }
        );
        // An attempt's own bookkeeping (about to send, reconciled) stays with its message; every
        // other change hands the document to a new follow-up.
        let next_step = !matches!(
            change,
            Change::SendStarted { .. } | Change::JoinedBatch { .. } | Change::Reconciled { .. } | Change::OfflineChecked { .. }
        );
        if moves || !stays {
            from.check_transition(to)?;
        }
        if !change.admits(from) {
            return Err(TransitionError { from, to });
        }
        if matches!(change, Change::ModeChanged { mode: SendMode::Batch, .. }) && self.corrects.is_some() {
            // A technical correction goes online: KSeF takes `hashOfCorrectedInvoice` only there.
            return Err(TransitionError { from, to });
        }
        if matches!(change, Change::ModeChanged { .. }) && self.ksef.unconfirmed_send.is_some() {
            // KSeF may hold it by the old channel: only that channel can reconcile it.
            return Err(TransitionError { from, to });
        }
        let mut r = self.clone();
        let mut history = Vec::new();
        let mut release_lease = true;
        let reason: String;
        match change {
            Change::SendStarted { session } => {
                release_lease = false;
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::SendStarted {
                        session: session.clone(),
                        content_hash: r.content_hash,
                        attempt: r.attempts + 1,
                    },
                });
                r.ksef.session_reference = Some(session.clone());
                r.ksef.unconfirmed_send = Some(session);
                reason = String::new();
            }
            Change::JoinedBatch { batch, part } => {
                release_lease = false;
                r.ksef.batch = Some(batch.clone());
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::JoinedBatch { batch, part },
                });
                reason = String::new();
            }
            Change::ModeChanged { mode, reason: why } => {
                release_lease = false;
                let old = r.send_mode.map(|m| m.name()).unwrap_or("unrecorded");
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Note {
                        message: format!("send mode {old} → {}: {why}", mode.name()),
                    },
                });
                r.send_mode = Some(mode);
                // Due at once: the new channel's message (or a re-drive) takes it.
                r.next_attempt_at = None;
                reason = String::new();
            }
            Change::OfflineChecked { mode, deadline, codes } => {
                release_lease = false;
                let mut note = Vec::new();
                if let Some(mode) = mode.filter(|m| r.offline_mode != Some(*m)) {
                    note.push(match mode {
                        OfflineMode::SentAfterIssueDay => {
                            "sent after its issue day (P_1, Polish time): marked offline (KSeF files it Offline anyway), sent with offlineMode true".to_owned()
                        }
                        m => format!("issued offline ({}), sent with offlineMode true", m.name()),
                    });
                    r.offline_mode = Some(mode);
                    r.offline = true;
                }
                if r.legal_deadline.as_ref() != Some(&deadline) {
                    note.push(deadline.describe());
                    r.legal_deadline = Some(deadline);
                }
                match codes {
                    Some(Ok(())) if r.offline_codes != OfflineCodes::Written => {
                        let (kod1, kod2) = crate::storage_keys::qr_offline_keys(&r.key.seller_nip, &r.content_hash);
                        note.push(format!("QR codes KOD I (OFFLINE) at {} and KOD II at {}", kod1.png, kod2.png));
                        r.offline_codes = OfflineCodes::Written;
                    }
                    Some(Err(failure)) => {
                        history.push(HistoryEntry {
                            at: now,
                            event: HistoryEvent::Error { failure },
                        });
                        r.offline_codes = OfflineCodes::Missing;
                    }
                    _ => {}
                }
                if !note.is_empty() {
                    history.push(HistoryEntry {
                        at: now,
                        event: HistoryEvent::Note { message: note.join("; ") },
                    });
                }
                reason = String::new();
            }
            Change::Reconciled { detail } => {
                release_lease = false;
                r.ksef.unconfirmed_send = None;
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Note { message: detail },
                });
                reason = String::new();
            }
            Change::AwaitingBatch { detail, check_at } => {
                r.next_attempt_at = Some(check_at);
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Note { message: detail },
                });
                reason = String::new();
            }
            Change::RetryScheduled {
                failure,
                retry_at,
                charged,
                maybe_received,
            } => {
                if charged {
                    r.attempts += 1;
                }
                if !maybe_received {
                    r.ksef.unconfirmed_send = None;
                }
                r.next_attempt_at = Some(retry_at);
                reason = String::new();
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Error { failure: failure.clone() },
                });
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Note {
                        message: format!(
                            "retry at {} ({} of the budget used{})",
                            retry_at.to_rfc3339(),
                            r.attempts,
                            if charged { "" } else { "; not charged" }
                        ),
                    },
                });
                r.last_error = Some(failure);
            }
            Change::Sent {
                session,
                invoice_reference,
            } => {
                reason = format!("KSeF took the invoice as {invoice_reference} in session {session}");
                r.ksef.session_reference = Some(session);
                r.ksef.invoice_reference = Some(invoice_reference);
                r.ksef.unconfirmed_send = None;
                // The first status poll: the send stage's message says when exactly.
                r.next_attempt_at = Some(now);
            }
            Change::Processing { detail, next_poll_at } => {
                reason = detail;
                r.next_attempt_at = Some(next_poll_at);
            }
            Change::Accepted {
                ksef_number,
                acquisition_date,
                upo_key,
                qr_code,
                invoicing_mode,
                upo_mode,
                reason: why,
            } => {
                let filed = match (invoicing_mode, upo_mode) {
                    (Some(s), Some(u)) if s == u => format!("; filed {}", s.as_str()),
                    (Some(s), Some(u)) => format!("; filed {} (status), {} (UPO)", s.as_str(), u.as_str()),
                    (Some(s), None) | (None, Some(s)) => format!("; filed {}", s.as_str()),
                    (None, None) => String::new(),
                };
                reason = match &qr_code {
                    Some(qr) => format!("KSeF number {ksef_number}: {why}{filed}; QR code (KOD I) at {}", qr.png),
                    None => format!("KSeF number {ksef_number}: {why}{filed}"),
                };
                r.ksef.invoicing_mode = invoicing_mode.or(r.ksef.invoicing_mode);
                r.ksef.upo_mode = upo_mode.or(r.ksef.upo_mode);
                r.ksef.ksef_number = Some(ksef_number);
                r.ksef.acquisition_date = Some(acquisition_date);
                r.storage.upo = upo_key;
                r.storage.qr_code = qr_code;
                r.last_error = None;
                // Without its UPO the document still has a step to come: fetching it.
                r.next_attempt_at = if r.storage.upo.is_none() { Some(now) } else { None };
            }
            Change::UpoArchived { upo_key } => {
                reason = format!("UPO archived at {upo_key}");
                r.storage.upo = Some(upo_key);
                r.next_attempt_at = None;
            }
            Change::PollFailed { failure, next_poll_at } => {
                reason = String::new();
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Error { failure: failure.clone() },
                });
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Note {
                        message: format!("next status poll at {}", next_poll_at.to_rfc3339()),
                    },
                });
                r.next_attempt_at = Some(next_poll_at);
                r.last_error = Some(failure);
            }
            Change::Redriven { reason: why } => {
                reason = String::new();
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Note {
                        message: format!("re-driven: {why}"),
                    },
                });
                r.next_attempt_at = Some(now);
            }
            Change::Rejected { failures } => {
                reason = format!("{} finding(s)", failures.len());
                r.last_error = failures.last().cloned();
                history.extend(failures.into_iter().map(|failure| HistoryEntry {
                    at: now,
                    event: HistoryEvent::Error { failure },
                }));
                r.next_attempt_at = None;
            }
            Change::Failed { failure } | Change::Conflict { failure } => {
                reason = failure.message.clone();
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Error { failure: failure.clone() },
                });
                r.last_error = Some(failure);
                r.next_attempt_at = None;
            }
            Change::Requeued { reason: why, reset_budget } => {
                if reset_budget {
                    r.attempts = 0;
                    r.recoveries = 0;
                }
                reason = why;
                r.next_attempt_at = None;
                // A new session will be opened: the old invoice reference no longer applies.
                r.ksef.invoice_reference = None;
            }
            Change::Resubmitted {
                content_hash,
                content_size,
                erp_document_id,
                trace_id,
                storage,
                issue_date,
                send_mode,
                offline_mode,
                corrects,
            } => {
                reason = match &corrects {
                    None => format!("corrected file {} replaces the rejected content {}", storage.source, r.content_hash),
                    Some(c) => format!(
                        "technical correction: {} (ERP id {erp_document_id}, hash {content_hash}) corrects the offline invoice {} (ERP id {}, hash {}) that KSeF rejected; ERP id {} is corrected by ERP id {erp_document_id}; it goes online with offlineMode true and hashOfCorrectedInvoice {}",
                        storage.source, c.source, c.erp_document_id, c.content_hash, c.erp_document_id, c.content_hash
                    ),
                };
                // A technical correction is an offline invoice, as the one it corrects was.
                let offline_mode = match &corrects {
                    Some(_) => offline_mode.or(r.offline_mode),
                    None => offline_mode,
                };
                r.offline_mode = offline_mode;
                r.offline = offline_mode.is_some() || corrects.is_some();
                r.corrects = corrects.map(|c| *c);
                r.offline_codes = OfflineCodes::NotMade;
                r.legal_deadline = issue_date.map(|d| crate::offline::legal_deadline(offline_mode, d, &[]));
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Registered {
                        content_hash,
                        erp_document_id: erp_document_id.clone(),
                        trace_id: trace_id.clone(),
                        source: storage.source.clone(),
                    },
                });
                r.content_hash = content_hash;
                r.content_size = content_size;
                r.erp_document_id = erp_document_id;
                r.trace_id = trace_id;
                r.storage = storage;
                r.issue_date = issue_date;
                r.send_mode = Some(send_mode);
                r.attempts = 0;
                r.recoveries = 0;
                r.next_attempt_at = None;
                r.last_error = None;
                r.ksef = KsefRefs::default();
            }
            Change::Resumed {
                session,
                invoice_reference,
                reason: why,
            } => {
                reason = format!("{why}: status polling resumes for {invoice_reference} in session {session}");
                r.ksef.session_reference = Some(session);
                r.ksef.invoice_reference = Some(invoice_reference);
                r.ksef.unconfirmed_send = None;
                r.attempts = 0;
                r.next_attempt_at = None;
                r.recoveries = 0;
            }
            Change::Resolved {
                resolution,
                by,
                reason: why,
            } => {
                reason = format!("resolved by {by} ({}): {why}", resolution.name());
                r.next_attempt_at = None;
                match resolution {
                    Resolution::Ours {
                        ksef_number,
                        acquisition_date,
                        original_session,
                        upo_key,
                    } => {
                        history.push(HistoryEntry {
                            at: now,
                            event: HistoryEvent::Note {
                                message: format!(
                                    "KSeF number {ksef_number} (acquired {}) confirmed as this invoice's by {by}",
                                    acquisition_date.to_rfc3339()
                                ),
                            },
                        });
                        r.ksef.ksef_number = Some(ksef_number);
                        r.ksef.acquisition_date = Some(acquisition_date);
                        r.ksef.original_session = original_session;
                        r.storage.upo = upo_key;
                        r.last_error = None;
                        // Without its UPO the document still has a step to come: fetching it.
                        r.next_attempt_at = r.storage.upo.is_none().then_some(now);
                    }
                    Resolution::Recheck => {
                        r.attempts = 0;
                        r.recoveries = 0;
                        r.ksef.invoice_reference = None;
                        r.ksef.unconfirmed_send = None;
                    }
                    Resolution::Withdrawn => {
                        let failure = Failure::new(ErrorClass::Permanent, ErrorSource::Relay, format!("withdrawn by {by}: {why}"))
                            .with_code(WITHDRAWN);
                        history.push(HistoryEntry {
                            at: now,
                            event: HistoryEvent::Error { failure: failure.clone() },
                        });
                        r.last_error = Some(failure);
                    }
                }
            }
            Change::RecoveryScheduled {
                failure,
                retry_at,
                maybe_received,
            } => {
                r.recoveries += 1;
                if !maybe_received {
                    r.ksef.unconfirmed_send = None;
                }
                r.next_attempt_at = Some(retry_at);
                reason = String::new();
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Error { failure: failure.clone() },
                });
                history.push(HistoryEntry {
                    at: now,
                    event: HistoryEvent::Note {
                        message: format!(
                            "retry at {} (recovery {}; not charged to the send budget, {} of it used)",
                            retry_at.to_rfc3339(),
                            r.recoveries,
                            r.attempts
                        ),
                    },
                });
                r.last_error = Some(failure);
            }
        }
        if moves || !reason.is_empty() {
            history.push(HistoryEntry {
                at: now,
                event: HistoryEvent::StateChanged {
                    from: Some(from),
                    to,
                    reason,
                },
            });
        }
        if moves {
            r.state = to;
            r.state_since = now;
        }
        if release_lease {
            r.lease = None;
        }
        r.version = self.version + 1;
        if next_step {
            r.step = self.step + 1;
        }
        r.updated_at = now;
        Ok(Applied { record: r, history })
    }

    /// Takes the document for `purpose` until `now + lease_for`, if its state admits the purpose
    /// and no live lease is held by someone else. The result has `version + 1`.
    pub fn claim(
        &self,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, ClaimRefused> {
        if !purpose.claimable_states().contains(&self.state) {
            return Err(ClaimRefused::WrongState {
                state: self.state,
                purpose,
            });
        }
        if let Some(lease) = &self.lease {
            if lease.until > now {
                return Err(ClaimRefused::LeaseHeld {
                    owner: lease.owner.clone(),
                    until: lease.until,
                });
            }
        }
        let mut r = self.clone();
        r.lease = Some(Lease {
            owner: owner.to_owned(),
            until: now + chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX),
        });
        r.version += 1;
        r.updated_at = now;
        Ok(r)
    }
}

/// A record with its whole history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub record: DocumentRecord,
    pub history: Vec<HistoryEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{ErrorClass, ErrorSource};
    use crate::ids::{InvoiceKind, InvoiceNumber, Nip};

    fn new_doc() -> NewDocument {
        NewDocument {
            key: DocumentKey::new(
                Nip::parse("9999999999").unwrap(),
                InvoiceKind::Vat,
                InvoiceNumber::parse("FV2026/02/150").unwrap(),
            ),
            content_hash: ContentHash::of(b"x"),
            content_size: 1,
            trace_id: TraceId::parse("t-1").unwrap(),
            erp_document_id: ErpDocumentId::parse("erp-1").unwrap(),
            storage: StorageKeys {
                source: "inbox/9999999999/erp-1.xml".into(),
                ..Default::default()
            },
            offline_mode: None,
            issue_date: None,
            send_mode: SendMode::Online,
            send_mode_reason: None,
            initial: InitialState::Queued,
        }
    }

    fn session() -> KsefReference {
        KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-07").unwrap()
    }

    #[test]
    fn joining_a_batch_names_it_and_its_part_keeps_the_lease_and_sends_nothing() {
        let t0 = Utc::now();
        let record = DocumentRecord::register(new_doc(), t0).record;
        let r = record.claim(ClaimPurpose::Send, "send-1", t0, Duration::from_secs(60)).unwrap();
        let a = r
            .apply(
                Change::JoinedBatch {
                    batch: "b-1".into(),
                    part: 3,
                },
                t0,
            )
            .unwrap();
        assert_eq!(a.record.state, DocumentState::Queued);
        assert_eq!(a.record.ksef.batch.as_deref(), Some("b-1"));
        assert_eq!(a.record.ksef.unconfirmed_send, None, "nothing can have reached KSeF yet");
        assert_eq!(a.record.lease, r.lease, "the batch's sender keeps working on it");
        assert_eq!(a.record.step, r.step, "bookkeeping of the attempt, no new follow-up");
        assert_eq!(
            a.history.last().unwrap().event,
            HistoryEvent::JoinedBatch {
                batch: "b-1".into(),
                part: 3
            }
        );
        let sent = DocumentRecord {
            state: DocumentState::Sent,
            ..r
        };
        assert!(
            sent.apply(
                Change::JoinedBatch {
                    batch: "b-2".into(),
                    part: 1
                },
                t0
            )
            .is_err(),
            "only a queued document joins a batch"
        );
    }

    #[test]
    fn awaiting_a_batch_keeps_the_send_unconfirmed_and_frees_the_lease() {
        let t0 = Utc::now();
        let record = DocumentRecord::register(new_doc(), t0).record;
        let r = record.claim(ClaimPurpose::Send, "send-1", t0, Duration::from_secs(60)).unwrap();
        let batch = KsefReference::parse("20250625-SB-2C3E6C8000-B675CF5D68-87").unwrap();
        let a = r.apply(Change::SendStarted { session: batch.clone() }, t0).unwrap();
        let check_at = t0 + chrono::Duration::seconds(30);
        let a = a
            .record
            .apply(
                Change::AwaitingBatch {
                    detail: "closed".into(),
                    check_at,
                },
                t0,
            )
            .unwrap();
        assert_eq!(a.record.state, DocumentState::Queued);
        assert_eq!(a.record.ksef.unconfirmed_send, Some(batch), "still to be reconciled");
        assert_eq!(a.record.next_attempt_at, Some(check_at));
        assert!(a.record.lease.is_none(), "another instance may do the check");
        assert_eq!(a.record.attempts, 0, "waiting is not a failed attempt");
        // Only a queued document waits for its batch.
        let sent = a
            .record
            .apply(
                Change::Sent {
                    session: session(),
                    invoice_reference: KsefReference::parse("20250625-EE-319D7EE000-B67F415CDC-2C").unwrap(),
                },
                t0,
            )
            .unwrap()
            .record;
        assert!(sent
            .apply(
                Change::AwaitingBatch {
                    detail: "x".into(),
                    check_at
                },
                t0
            )
            .is_err());
    }

    #[test]
    fn a_happy_journey_keeps_every_step_in_history() {
        let t0 = Utc::now();
        let Applied { record, mut history } = DocumentRecord::register(new_doc(), t0);
        assert_eq!(record.state, DocumentState::Queued);
        let r = record.claim(ClaimPurpose::Send, "send-1", t0, Duration::from_secs(60)).unwrap();
        let a = r.apply(Change::SendStarted { session: session() }, t0).unwrap();
        assert!(a.record.lease.is_some(), "SendStarted keeps the lease");
        history.extend(a.history);
        let inv = KsefReference::parse("20250625-EE-319D7EE000-B67F415CDC-2C").unwrap();
        let a = a
            .record
            .apply(
                Change::Sent {
                    session: session(),
                    invoice_reference: inv,
                },
                t0,
            )
            .unwrap();
        assert!(a.record.lease.is_none());
        history.extend(a.history);
        let n = KsefNumber::parse("5265877635-20250626-010080DD2B5E-26").unwrap();
        let a = a
            .record
            .apply(
                Change::Accepted {
                    ksef_number: n.clone(),
                    acquisition_date: t0,
                    upo_key: Some("upo/x.xml".into()),
                    qr_code: Some(crate::storage_keys::qr_invoice_keys(&a.record.key.seller_nip, &n)),
                    invoicing_mode: None,
                    upo_mode: None,
                    reason: "status 200".into(),
                },
                t0,
            )
            .unwrap();
        assert!(
            format!("{:?}", a.history).contains("QR code (KOD I) at qr/9999999999/"),
            "the history says where the QR code is: {:?}",
            a.history
        );
        history.extend(a.history);
        assert_eq!(a.record.state, DocumentState::Accepted);
        assert_eq!(
            a.record.storage.qr_code.as_ref().map(|q| q.svg.as_str()),
            Some("qr/9999999999/5265877635-20250626-010080DD2B5E-26-kod1.svg")
        );
        assert_eq!(a.record.ksef.ksef_number, Some(n));
        assert_eq!(a.record.version, 5);
        assert!(history.iter().any(|h| matches!(h.event, HistoryEvent::SendStarted { .. })));
        assert_eq!(
            history
                .iter()
                .filter(|h| matches!(h.event, HistoryEvent::StateChanged { .. }))
                .count(),
            3
        );
        // Final: nothing moves it again.
        assert!(a
            .record
            .apply(
                Change::Requeued {
                    reason: "replay".into(),
                    reset_budget: true
                },
                t0
            )
            .is_err());
    }

    #[test]
    fn rate_limits_are_not_charged_and_transients_are() {
        let t0 = Utc::now();
        let r = DocumentRecord::register(new_doc(), t0).record;
        let f = Failure::new(
            ErrorClass::Transient,
            ErrorSource::Ksef {
                operation: "send_invoice".into(),
            },
            "HTTP 503",
        );
        let r = r
            .apply(
                Change::RetryScheduled {
                    failure: f.clone(),
                    retry_at: t0,
                    charged: true,
                    maybe_received: true,
                },
                t0,
            )
            .unwrap()
            .record;
        let r = r
            .apply(
                Change::RetryScheduled {
                    failure: f,
                    retry_at: t0,
                    charged: false,
                    maybe_received: false,
                },
                t0,
            )
            .unwrap()
            .record;
        assert_eq!(r.attempts, 1);
        assert_eq!(r.state, DocumentState::Queued);
        let r = r
            .apply(
                Change::Requeued {
                    reason: "replay".into(),
                    reset_budget: true,
                },
                t0,
            )
            .unwrap()
            .record;
        assert_eq!(r.attempts, 0);
    }

    #[test]
    fn recoveries_have_their_own_count_and_a_replay_resets_both() {
        let t0 = Utc::now();
        let r = DocumentRecord::register(new_doc(), t0).record;
        let f = Failure::new(
            ErrorClass::Transient,
            ErrorSource::Ksef {
                operation: "session_invoices".into(),
            },
            "HTTP 503",
        );
        let a = r
            .apply(
                Change::RecoveryScheduled {
                    failure: f,
                    retry_at: t0,
                    maybe_received: true,
                },
                t0,
            )
            .unwrap();
        assert_eq!((a.record.attempts, a.record.recoveries), (0, 1));
        assert!(a
            .history
            .iter()
            .any(|h| matches!(&h.event, HistoryEvent::Note { message } if message.contains("not charged"))));
        let r = a
            .record
            .apply(
                Change::Requeued {
                    reason: "replay".into(),
                    reset_budget: true,
                },
                t0,
            )
            .unwrap()
            .record;
        assert_eq!(r.recoveries, 0);
        // Records stored before the field existed read as no recoveries.
        let mut json = serde_json::to_value(&r).unwrap();
        json.as_object_mut().unwrap().remove("recoveries");
        assert_eq!(serde_json::from_value::<DocumentRecord>(json).unwrap().recoveries, 0);
    }

    #[test]
    fn a_corrected_file_replaces_a_rejected_one_and_only_a_rejected_one() {
        let t0 = Utc::now();
        let mut d = new_doc();
        d.initial = InitialState::Rejected {
            findings: vec![Failure::new(ErrorClass::Permanent, ErrorSource::Validation, "bad sum")],
        };
        let rejected = DocumentRecord::register(d, t0).record;
        let fixed = Change::Resubmitted {
            content_hash: ContentHash::of(b"fixed"),
            content_size: 5,
            erp_document_id: ErpDocumentId::parse("erp-1-v2").unwrap(),
            trace_id: TraceId::parse("t-2").unwrap(),
            storage: StorageKeys {
                source: "inbox/9999999999/erp-1-v2.xml".into(),
                ..Default::default()
            },
            issue_date: None,
            send_mode: SendMode::Batch,
            offline_mode: Some(crate::OfflineMode::Offline24),
            corrects: None,
        };
        let a = rejected.apply(fixed.clone(), t0).unwrap();
        assert_eq!(
            (a.record.offline_mode, a.record.offline),
            (Some(crate::OfflineMode::Offline24), true),
            "the corrected file's marking"
        );
        assert_eq!(
            (a.record.state, a.record.content_hash, a.record.last_error.clone()),
            (DocumentState::Queued, ContentHash::of(b"fixed"), None)
        );
        assert!(a.history.iter().any(|h| matches!(h.event, HistoryEvent::Registered { .. })));
        assert_eq!(a.record.send_mode(), Some(SendMode::Batch), "the corrected file's mode");
        let queued = DocumentRecord::register(new_doc(), t0).record;
        assert!(queued.apply(fixed, t0).is_err(), "only a REJECTED document may be replaced");
    }

    #[test]
    fn a_technical_correction_stays_offline_names_both_uploads_and_never_joins_a_batch() {
        let t0 = Utc::now();
        let mut d = new_doc();
        d.offline_mode = Some(crate::OfflineMode::Failure);
        d.initial = InitialState::Rejected {
            findings: vec![Failure::new(
                ErrorClass::Permanent,
                ErrorSource::Ksef {
                    operation: "invoice_status".into(),
                },
                "450",
            )],
        };
        let rejected = DocumentRecord::register(d, t0).record;
        let corrects = CorrectedUpload {
            erp_document_id: rejected.erp_document_id.clone(),
            content_hash: rejected.content_hash,
            source: rejected.storage.source.clone(),
            trace_id: rejected.trace_id.clone(),
            rejection: rejected.last_error.clone(),
        };
        let fix = Change::Resubmitted {
            content_hash: ContentHash::of(b"fixed"),
            content_size: 5,
            erp_document_id: ErpDocumentId::parse("erp-1-fix").unwrap(),
            trace_id: TraceId::parse("t-2").unwrap(),
            storage: StorageKeys {
                source: "inbox/9999999999/erp-1-fix.xml".into(),
                ..Default::default()
            },
            issue_date: None,
            send_mode: SendMode::Online,
            // The ERP did not mark the fixed file: it is offline as the invoice it corrects was.
            offline_mode: None,
            corrects: Some(Box::new(corrects.clone())),
        };
        let a = rejected.apply(fix, t0).unwrap();
        let r = a.record;
        assert_eq!((r.offline, r.offline_mode), (true, Some(crate::OfflineMode::Failure)));
        assert_eq!(r.corrects, Some(corrects));
        let said = a.history.iter().any(|h| {
            matches!(&h.event, HistoryEvent::StateChanged { reason, .. }
                if reason.contains(&format!("ERP id {} is corrected by ERP id erp-1-fix", rejected.erp_document_id))
                    && reason.contains(&format!("hashOfCorrectedInvoice {}", rejected.content_hash)))
        });
        assert!(said, "{:#?}", a.history);
        // KSeF takes hashOfCorrectedInvoice only online: a correction never moves to a batch.
        let to_batch = Change::ModeChanged {
            mode: SendMode::Batch,
            reason: "a batch is going".into(),
        };
        assert!(r.apply(to_batch, t0).is_err());
        // Stored and read back (records before the field read as no correction).
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(serde_json::from_value::<DocumentRecord>(json.clone()).unwrap().corrects, r.corrects);
        let mut old = json;
        old.as_object_mut().unwrap().remove("corrects");
        assert_eq!(serde_json::from_value::<DocumentRecord>(old).unwrap().corrects, None);
    }

    #[test]
    fn the_send_mode_is_stored_and_names_the_channel_of_an_unconfirmed_send() {
        let t0 = Utc::now();
        let mut d = new_doc();
        d.send_mode = SendMode::Batch;
        let r = DocumentRecord::register(d, t0).record;
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["send_mode"], "batch");
        let back: DocumentRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.send_mode(), Some(SendMode::Batch));
        let batch = KsefReference::parse("20250625-SB-2C3E6C8000-B675CF5D68-87").unwrap();
        let sent = r.apply(Change::SendStarted { session: batch.clone() }, t0).unwrap().record;
        assert_eq!(sent.unconfirmed_send(), Some((batch, SendMode::Batch)));
        assert_eq!(DocumentRecord::register(new_doc(), t0).record.unconfirmed_send(), None);
    }

    /// An Online document whose send has not happened moves into a batch: the mode is stored,
    /// the reason is in its history, the lease is kept for the batch, the step moves on (the
    /// old online message is a leftover); one with an unconfirmed send, or past QUEUED, cannot.
    #[test]
    fn a_queued_online_document_changes_mode_and_only_before_any_send() {
        let t0 = Utc::now();
        let r = DocumentRecord::register(new_doc(), t0).record;
        assert_eq!(r.send_mode(), Some(SendMode::Online));
        let claimed = r
            .claim(ClaimPurpose::Send, "batcher", t0, std::time::Duration::from_secs(60))
            .unwrap();
        let change = Change::ModeChanged {
            mode: SendMode::Batch,
            reason: "its seller's batch is going anyway".into(),
        };
        let a = claimed.apply(change.clone(), t0).unwrap();
        assert_eq!(a.record.send_mode(), Some(SendMode::Batch));
        assert_eq!(a.record.state, DocumentState::Queued);
        assert_eq!(a.record.step, claimed.step + 1, "the online message is behind");
        assert_eq!(a.record.next_attempt_at, None);
        assert!(a.record.lease.is_some(), "the batch goes on under the same claim");
        assert!(
            a.history.iter().any(|h| matches!(&h.event, HistoryEvent::Note { message }
                if message == "send mode online → batch: its seller's batch is going anyway")),
            "{:?}",
            a.history
        );
        let online = KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-07").unwrap();
        let started = claimed.apply(Change::SendStarted { session: online }, t0).unwrap().record;
        assert!(started.apply(change.clone(), t0).is_err(), "KSeF may hold it online");
        let sent = started
            .apply(
                Change::Sent {
                    session: KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-07").unwrap(),
                    invoice_reference: KsefReference::parse("20250625-EE-2C3E6C8000-B675CF5D68-1B").unwrap(),
                },
                t0,
            )
            .unwrap()
            .record;
        assert!(sent.apply(change, t0).is_err(), "SENT is past changing mode");
    }

    /// Records stored before the mode was kept have no `send_mode`: they still read, and an
    /// unconfirmed send in a batch session (`…-SB-…`) is still reconciled as batch.
    #[test]
    fn a_record_stored_without_a_send_mode_still_reads_and_reconciles_by_its_session() {
        let t0 = Utc::now();
        let stored = |session: Option<&str>| {
            let mut json = serde_json::to_value(DocumentRecord::register(new_doc(), t0).record).unwrap();
            json.as_object_mut().unwrap().remove("send_mode");
            json["ksef"]["unconfirmed_send"] = serde_json::json!(session);
            serde_json::from_value::<DocumentRecord>(json).unwrap()
        };
        let plain = stored(None);
        assert_eq!((plain.send_mode(), plain.unconfirmed_send()), (None, None));
        assert!(
            !serde_json::to_string(&plain).unwrap().contains("send_mode"),
            "written back as it was"
        );
        let batch = stored(Some("20250625-SB-2C3E6C8000-B675CF5D68-87"));
        assert_eq!(batch.send_mode(), None);
        assert_eq!(batch.unconfirmed_send().map(|(_, m)| m), Some(SendMode::Batch));
        let online = stored(Some("20250625-SO-2C3E6C8000-B675CF5D68-07"));
        assert_eq!(online.unconfirmed_send().map(|(_, m)| m), Some(SendMode::Online));
    }

    #[test]
    fn a_failed_document_that_ksef_holds_resumes_polling_and_only_through_resumed() {
        let t0 = Utc::now();
        let inv = KsefReference::parse("20250625-EE-319D7EE000-B67F415CDC-2C").unwrap();
        let f = Failure::new(ErrorClass::Transient, ErrorSource::Relay, "poll limit");
        let failed = DocumentRecord::register(new_doc(), t0)
            .record
            .apply(Change::Failed { failure: f }, t0)
            .unwrap()
            .record;
        let sent = Change::Sent {
            session: session(),
            invoice_reference: inv.clone(),
        };
        assert!(failed.apply(sent, t0).is_err(), "a FAILED document is not 'sent' again");
        let resumed = Change::Resumed {
            session: session(),
            invoice_reference: inv.clone(),
            reason: "dlq-replay".into(),
        };
        let a = failed.apply(resumed.clone(), t0).unwrap();
        assert_eq!(
            (a.record.state, a.record.attempts, a.record.ksef.invoice_reference.clone()),
            (DocumentState::Sent, 0, Some(inv))
        );
        assert!(a.history.iter().any(|h| matches!(&h.event,
            HistoryEvent::StateChanged { from: Some(DocumentState::Failed), to: DocumentState::Sent, reason } if reason.contains("dlq-replay"))));
        assert!(a.record.apply(resumed, t0).is_err(), "only out of FAILED");
    }

    fn conflict(t0: DateTime<Utc>) -> DocumentRecord {
        let original = KsefNumber::parse("5265877635-20250626-010080DD2B5E-26").unwrap();
        let f = Failure::new(
            ErrorClass::Duplicate { original },
            ErrorSource::Ksef {
                operation: "invoice_status".into(),
            },
            "440",
        );
        DocumentRecord::register(new_doc(), t0)
            .record
            .apply(Change::Conflict { failure: f }, t0)
            .unwrap()
            .record
    }

    fn resolved(resolution: Resolution) -> Change {
        Change::Resolved {
            resolution,
            by: "jan.kowalski".into(),
            reason: "ticket 42".into(),
        }
    }

    #[test]
    fn a_person_resolves_a_conflict_and_only_a_person_and_only_a_conflict() {
        let t0 = Utc::now();
        let n = KsefNumber::parse("5265877635-20250626-010080DD2B5E-26").unwrap();
        let acquired = t0 - chrono::Duration::days(3);
        let ours = resolved(Resolution::Ours {
            ksef_number: n.clone(),
            acquisition_date: acquired,
            original_session: Some(session()),
            upo_key: None,
        });
        let a = conflict(t0).apply(ours.clone(), t0).unwrap();
        assert_eq!(a.record.state, DocumentState::Accepted);
        assert_eq!(
            (
                a.record.ksef.ksef_number.clone(),
                a.record.ksef.acquisition_date,
                a.record.ksef.original_session.clone()
            ),
            (Some(n.clone()), Some(acquired), Some(session()))
        );
        assert_eq!(a.record.next_attempt_at, Some(t0), "its UPO is still to be fetched");
        assert!(a.record.last_error.is_none());
        assert!(a.history.iter().any(|h| matches!(&h.event,
            HistoryEvent::StateChanged { from: Some(DocumentState::Conflict), to: DocumentState::Accepted, reason }
                if reason == "resolved by jan.kowalski (ours): ticket 42")));

        let w = conflict(t0).apply(resolved(Resolution::Withdrawn), t0).unwrap().record;
        assert_eq!(w.state, DocumentState::Rejected);
        assert_eq!(w.last_error.as_ref().and_then(|f| f.code.as_deref()), Some(WITHDRAWN));
        assert!(
            !w.may_send_again(),
            "a withdrawn document is not sent again by a replay or the same file"
        );

        let q = conflict(t0).apply(resolved(Resolution::Recheck), t0).unwrap().record;
        assert_eq!(
            (q.state, q.attempts, q.ksef.invoice_reference.clone()),
            (DocumentState::Queued, 0, None)
        );

        // Nothing else leads out of CONFLICT ...
        let c = conflict(t0);
        let accepted = Change::Accepted {
            ksef_number: n,
            acquisition_date: t0,
            upo_key: None,
            qr_code: None,
            invoicing_mode: None,
            upo_mode: None,
            reason: "x".into(),
        };
        assert!(c.apply(accepted, t0).is_err());
        assert!(c.apply(Change::Rejected { failures: vec![] }, t0).is_err());
        assert!(c
            .apply(
                Change::Requeued {
                    reason: "x".into(),
                    reset_budget: true
                },
                t0
            )
            .is_err());
        // ... and a resolution applies to nothing else (a second one finds the state moved on).
        assert!(a.record.apply(ours, t0).is_err());
        assert!(w.apply(resolved(Resolution::Withdrawn), t0).is_err());
        assert!(DocumentRecord::register(new_doc(), t0)
            .record
            .apply(resolved(Resolution::Recheck), t0)
            .is_err());
    }

    #[test]
    fn only_a_rejection_not_about_the_content_may_be_sent_again() {
        let t0 = Utc::now();
        let rejected = |f: Failure| {
            DocumentRecord::register(new_doc(), t0)
                .record
                .apply(Change::Rejected { failures: vec![f] }, t0)
                .unwrap()
                .record
        };
        let ksef = |code: &str, message: &str| {
            Failure::new(
                ErrorClass::Permanent,
                ErrorSource::Ksef {
                    operation: "send_invoice".into(),
                },
                message,
            )
            .with_code(code)
        };
        assert!(rejected(ksef("403", "ip-not-allowed")).may_send_again());
        assert!(!rejected(ksef("21405", "schema")).may_send_again());
        assert!(!rejected(Failure::new(ErrorClass::Permanent, ErrorSource::Validation, "bad sum")).may_send_again());
        assert!(!DocumentRecord::register(new_doc(), t0).record.may_send_again(), "only REJECTED");
    }

    #[test]
    fn leases_block_until_they_expire() {
        let t0 = Utc::now();
        let r = DocumentRecord::register(new_doc(), t0).record;
        let held = r.claim(ClaimPurpose::Send, "a", t0, Duration::from_secs(30)).unwrap();
        assert!(matches!(
            held.claim(ClaimPurpose::Send, "b", t0, Duration::from_secs(30)),
            Err(ClaimRefused::LeaseHeld { .. })
        ));
        let later = t0 + chrono::Duration::seconds(31);
        assert_eq!(
            held.claim(ClaimPurpose::Send, "b", later, Duration::from_secs(30))
                .unwrap()
                .lease
                .unwrap()
                .owner,
            "b"
        );
        assert!(matches!(
            r.claim(ClaimPurpose::Poll, "p", t0, Duration::from_secs(1)),
            Err(ClaimRefused::WrongState { .. })
        ));
    }

    #[test]
    fn registering_an_invalid_document_records_every_finding() {
        let mut d = new_doc();
        let f1 = Failure::new(ErrorClass::Permanent, ErrorSource::Validation, "P_2 missing").at("/Faktura/Fa/P_2");
        let f2 = Failure::new(ErrorClass::Permanent, ErrorSource::Validation, "bad NIP").at("/Faktura/Podmiot2/DaneIdentyfikacyjne/NIP");
        d.initial = InitialState::Rejected {
            findings: vec![f1, f2.clone()],
        };
        let a = DocumentRecord::register(d, Utc::now());
        assert_eq!(a.record.state, DocumentState::Rejected);
        assert_eq!(a.record.last_error, Some(f2));
        assert_eq!(
            a.history.iter().filter(|h| matches!(h.event, HistoryEvent::Error { .. })).count(),
            2
        );
    }

    #[test]
    fn history_serialises_as_flat_json_lines() {
        let a = DocumentRecord::register(new_doc(), Utc::now());
        for h in &a.history {
            let s = serde_json::to_string(h).unwrap();
            assert!(s.contains("\"event\""), "{s}");
            assert_eq!(&serde_json::from_str::<HistoryEntry>(&s).unwrap(), h);
        }
        let s = serde_json::to_string(&a.record).unwrap();
        assert_eq!(serde_json::from_str::<DocumentRecord>(&s).unwrap(), a.record);
    }

    #[test]
    fn the_offline_check_marks_records_the_deadline_and_the_codes_and_keeps_the_claim() {
        let t0 = Utc::now();
        let mut d = new_doc();
        d.issue_date = NaiveDate::from_ymd_opt(2026, 2, 15);
        let r = DocumentRecord::register(d, t0).record;
        // Registered online: the strict deadline (end of Monday 16th) is kept from the start.
        let strict = crate::offline::legal_deadline(None, NaiveDate::from_ymd_opt(2026, 2, 15).unwrap(), &[]);
        assert_eq!(
            (r.offline, r.offline_mode, r.legal_deadline.clone()),
            (false, None, Some(strict.clone()))
        );
        let r = r.claim(ClaimPurpose::Send, "send-1", t0, Duration::from_secs(60)).unwrap();
        let missing =
            Failure::new(ErrorClass::Operator, ErrorSource::Relay, "no Offline certificate").with_code("OFFLINE_CERTIFICATE_MISSING");
        let a = r
            .apply(
                Change::OfflineChecked {
                    mode: Some(OfflineMode::SentAfterIssueDay),
                    deadline: strict.clone(),
                    codes: Some(Err(missing.clone())),
                },
                t0,
            )
            .unwrap();
        assert_eq!(
            (a.record.offline, a.record.offline_mode, a.record.offline_codes),
            (true, Some(OfflineMode::SentAfterIssueDay), OfflineCodes::Missing)
        );
        assert!(a.record.lease.is_some(), "the same attempt sends");
        assert_eq!((a.record.step, a.record.state), (r.step, DocumentState::Queued), "no new message");
        assert!(matches!(&a.history[0].event, HistoryEvent::Error { failure } if *failure == missing));
        assert!(matches!(&a.history[1].event, HistoryEvent::Note { message } if message.contains("sent after its issue day")));
        let b = a
            .record
            .apply(
                Change::OfflineChecked {
                    mode: Some(OfflineMode::SentAfterIssueDay),
                    deadline: strict.clone(),
                    codes: Some(Ok(())),
                },
                t0,
            )
            .unwrap();
        assert_eq!(b.record.offline_codes, OfflineCodes::Written);
        assert!(
            matches!(&b.history[0].event, HistoryEvent::Note { message } if message.contains("KOD II")),
            "{:?}",
            b.history
        );
        // Only a QUEUED document is checked.
        let mut sent = b.record.clone();
        sent.state = DocumentState::Sent;
        let check = Change::OfflineChecked {
            mode: None,
            deadline: strict,
            codes: None,
        };
        assert!(sent.apply(check, t0).is_err());
        // Stored and read back; a record stored before these fields reads as online, no deadline.
        let json = serde_json::to_value(&b.record).unwrap();
        assert_eq!(
            (json["offline_mode"].as_str(), json["offline_codes"].as_str()),
            (Some("sent_after_issue_day"), Some("written"))
        );
        assert_eq!(serde_json::from_value::<DocumentRecord>(json.clone()).unwrap(), b.record);
        let mut old = json;
        for field in ["offline_mode", "legal_deadline", "offline_codes"] {
            old.as_object_mut().unwrap().remove(field);
        }
        let old: DocumentRecord = serde_json::from_value(old).unwrap();
        assert_eq!(
            (old.offline_mode, old.legal_deadline, old.offline_codes),
            (None, None, OfflineCodes::NotMade)
        );
    }
}
