//! The sweeper: on a schedule, finds documents whose next step is overdue with no attempt holding
//! them, and re-drives them; rewrites an outbox result that lags its document's final state.
//!
//! It is the safety net under [`crate::follow_up`]: a redelivered message re-issues a lost
//! follow-up when it finds one overdue, but a message can be lost outright, or redelivered
//! before its step was due. Nothing the sweeper does can send an invoice twice: it only issues
//! the message a stage would have issued, and the stages reconcile with KSeF before any resend.
//!
//! Backlogs are not losses. At month end a queue may hold thousands of messages that are simply
//! waiting their turn, and their documents look overdue; re-driving them would double the
//! queue. So a stage's documents are re-driven only while that stage's queue has no visible
//! backlog: then an overdue document has no message waiting in line (a delayed message is
//! for a step not due yet, an in-flight one is being handled, and the step check drops it if
//! a re-drive overtook it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::{DocumentQueries, DocumentUpdates};
use relay_domain::storage_keys::outbox_key;
use relay_domain::{DocumentRecord, DocumentState};
use relay_observe::emf::{MetricLine, Unit};
use serde::Serialize;

use crate::follow_up::{due_at, is_overdue, redrive, republish_final, FollowUpPorts, NextMessage};
use crate::queue_action::StageError;

#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// How long past its due time a step may wait before it counts as lost.
    pub grace: Duration,
    /// How far back final states are checked against the outbox (a little more than two sweep
    /// intervals, so each final document is checked about twice).
    pub lookback: Duration,
    /// At most this many documents read per state per sweep.
    pub limit: usize,
}

impl SweepConfig {
    /// For a sweep every 5 minutes.
    pub fn standard() -> Self {
        SweepConfig {
            grace: crate::follow_up::REDRIVE_GRACE,
            lookback: Duration::from_secs(15 * 60),
            limit: 1000,
        }
    }
}

/// One document the sweeper moved on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Swept {
    pub document: String,
    pub state: DocumentState,
    /// `send` or `status` (a re-drive), `outbox` (a lagging result rewritten).
    pub stage: &'static str,
}

/// What one sweep did: the answer of the scheduled function and its log line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub examined: usize,
    pub redriven: Vec<Swept>,
    pub outbox_rewritten: Vec<Swept>,
    /// Stages whose overdue documents were left alone because their queue has a backlog.
    pub held_back: Vec<&'static str>,
}

impl SweepReport {
    /// `DocumentsRedriven` per stage and `OutboxResultsRewritten`: an alarm fires when re-drives
    /// keep happening (something loses follow-ups).
    pub fn metric_lines(&self, at: DateTime<Utc>) -> Vec<MetricLine> {
        let mut lines: Vec<MetricLine> = ["send", "status"]
            .into_iter()
            .map(|stage| {
                let n = self.redriven.iter().filter(|s| s.stage == stage).count();
                MetricLine::new(relay_observe::NAMESPACE, at).group(&[("Stage", stage)], &[("DocumentsRedriven", Unit::Count, n as f64)])
            })
            .collect();
        lines.push(MetricLine::new(relay_observe::NAMESPACE, at).group(
            &[],
            &[
                ("DocumentsRedriven", Unit::Count, self.redriven.len() as f64),
                ("OutboxResultsRewritten", Unit::Count, self.outbox_rewritten.len() as f64),
            ],
        ));
        lines
    }
}

/// One sweep over the store.
/// Orders re-drives by legal deadline, the oldest first (documents with none last, in their
/// order). The messages are written in this order; a standard SQS queue does not promise to
/// deliver them so, but a backlog re-driven by one sweep leans that way.
fn oldest_deadline_first(open: &mut [DocumentRecord]) {
    open.sort_by_key(|r| match r.legal_deadline.as_ref().and_then(|d| d.at()) {
        Some(at) => (0, Some(at)),
        None => (1, None),
    });
}

pub async fn sweep<S: DocumentQueries + DocumentUpdates + ?Sized>(
    ports: &FollowUpPorts<'_, S>,
    cfg: &SweepConfig,
    now: DateTime<Utc>,
) -> Result<SweepReport, StageError> {
    let mut report = SweepReport::default();
    let grace = chrono::Duration::from_std(cfg.grace).unwrap_or_default();
    let send_backlog = ports.send_queue.stats().await?.visible > 0;
    let status_backlog = ports.status_queue.stats().await?.visible > 0;
    if send_backlog {
        report.held_back.push("send");
    }
    if status_backlog {
        report.held_back.push("status");
    }

    let mut open: Vec<DocumentRecord> = Vec::new();
    for state in [DocumentState::Queued, DocumentState::Sent, DocumentState::Processing] {
        open.extend(ports.store.list_by_state(state, now - grace, cfg.limit).await?);
    }
    let since = now - chrono::Duration::from_std(cfg.lookback).unwrap_or_default();
    let mut finals: Vec<DocumentRecord> = Vec::new();
    for state in [
        DocumentState::Accepted,
        DocumentState::Rejected,
        DocumentState::Conflict,
        DocumentState::Failed,
    ] {
        finals.extend(ports.store.list_by_state_between(state, since, now - grace, cfg.limit).await?);
    }
    // ACCEPTED without its UPO still has a step to come (fetching the UPO).
    open.extend(finals.iter().filter(|r| crate::follow_up::is_open(r)).cloned());
    report.examined = open.len() + finals.len();
    oldest_deadline_first(&mut open);

    for r in open {
        let Some(next) = NextMessage::for_record(&r) else { continue };
        let held = match next {
            NextMessage::Send(_) => send_backlog,
            NextMessage::Status(_) => status_backlog,
        };
        if held || !is_overdue(&r, cfg.grace, now) {
            continue;
        }
        let why = format!(
            "the sweeper found it {} since {}, its next step due at {} and no attempt holding it",
            r.state,
            r.state_since.to_rfc3339(),
            due_at(&r).to_rfc3339()
        );
        // A document another writer moved meanwhile is no longer ours to re-drive.
        match redrive(ports, &r, why, now).await {
            Ok(Some(_)) => report.redriven.push(Swept {
                document: r.key.to_string(),
                state: r.state,
                stage: next.stage(),
            }),
            Ok(None) => {}
            Err(StageError::Store(relay_domain::ports::StoreError::VersionConflict { .. })) => {}
            Err(e) => return Err(e),
        }
    }

    for r in finals {
        if outbox_lags(ports, &r).await? {
            republish_final(ports, &r).await?;
            tracing::warn!(document = %r.key, trace_id = %r.trace_id, state = %r.state, "outbox result lagged the document's state: rewritten");
            report.outbox_rewritten.push(Swept {
                document: r.key.to_string(),
                state: r.state,
                stage: "outbox",
            });
        }
    }
    for line in report.metric_lines(now) {
        line.emit();
    }
    tracing::info!(
        examined = report.examined,
        redriven = report.redriven.len(),
        outbox_rewritten = report.outbox_rewritten.len(),
        held_back = ?report.held_back,
        "sweep done"
    );
    Ok(report)
}

/// Whether the ERP's outbox result says something other than the record's final state (or is
/// missing, or lacks the KSeF number or the UPO the record has).
async fn outbox_lags<S: DocumentUpdates + ?Sized>(ports: &FollowUpPorts<'_, S>, r: &DocumentRecord) -> Result<bool, StageError> {
    let Some(found) = ports.archive.get(&outbox_key(&r.key.seller_nip, &r.erp_document_id)).await? else {
        return Ok(true);
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&found.bytes) else {
        return Ok(true);
    };
    let text = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(text("state").as_deref() != Some(r.state.code())
        || text("ksefNumber") != r.ksef.ksef_number.as_ref().map(|k| k.to_string())
        || text("upoKey") != r.storage.upo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone, Utc};
    use relay_domain::{
        ContentHash, DocumentKey, ErpDocumentId, InitialState, InvoiceKind, InvoiceNumber, NewDocument, Nip, OfflineMode, SendMode,
        StorageKeys, TraceId,
    };

    fn record(n: u32, issued: Option<NaiveDate>, mode: Option<OfflineMode>) -> DocumentRecord {
        let new = NewDocument {
            key: DocumentKey::new(
                Nip::parse("9999999999").unwrap(),
                InvoiceKind::Vat,
                InvoiceNumber::parse(&format!("FV/{n}")).unwrap(),
            ),
            content_hash: ContentHash::of(&n.to_be_bytes()),
            content_size: 4,
            trace_id: TraceId::generate(),
            erp_document_id: ErpDocumentId::parse(&format!("erp-{n}")).unwrap(),
            storage: StorageKeys::default(),
            offline_mode: mode,
            issue_date: issued,
            send_mode: SendMode::Online,
            send_mode_reason: None,
            initial: InitialState::Queued,
        };
        DocumentRecord::register(new, Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap()).record
    }

    #[test]
    fn re_drives_go_oldest_legal_deadline_first() {
        let d = |day| NaiveDate::from_ymd_opt(2026, 11, day);
        let mut open = vec![
            record(1, None, None),
            record(2, d(5), None),
            record(3, d(2), Some(OfflineMode::Offline24)),
            record(4, d(3), None),
        ];
        oldest_deadline_first(&mut open);
        let order: Vec<String> = open.iter().map(|r| r.key.invoice_number.to_string()).collect();
        assert_eq!(order, ["FV/3", "FV/4", "FV/2", "FV/1"]);
    }
}
