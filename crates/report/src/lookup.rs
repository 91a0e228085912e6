//! `ksef-relay status ID`: find a document by ERP document id, trace id, KSeF number or invoice
//! identity, and print its whole story.

use std::fmt::Write as _;

use relay_domain::{DocumentRecord, HistoryEvent};

use crate::snapshot::StoredDocument;

/// Whether `id` names this document: its ERP id, trace id, KSeF number, invoice number, or the
/// identity as printed (`NIP KIND NUMBER`). Case-insensitive, exact.
pub fn names(r: &DocumentRecord, id: &str) -> bool {
    let id = id.trim();
    let eq = |s: &str| s.eq_ignore_ascii_case(id);
    eq(r.erp_document_id.as_str())
        || eq(r.trace_id.as_str())
        || r.ksef.ksef_number.as_ref().is_some_and(|n| eq(n.as_str()))
        || eq(r.key.invoice_number.as_str())
        || eq(&r.key.to_string())
}

/// The story as text: the record, then every history line, oldest first.
pub fn story(d: &StoredDocument) -> String {
    let r = &d.record;
    let mut s = String::new();
    let _ = writeln!(s, "document     {}", r.key);
    let _ = writeln!(
        s,
        "state        {} ({}) since {}",
        r.state,
        r.state.label_pl(),
        r.state_since.to_rfc3339()
    );
    let _ = writeln!(s, "ERP id       {}", r.erp_document_id);
    let _ = writeln!(s, "trace id     {}", r.trace_id);
    let _ = writeln!(s, "content      sha256 {} ({} bytes)", r.content_hash, r.content_size);
    if let Some(d) = r.issue_date {
        let _ = writeln!(s, "issued (P_1) {d}");
    }
    if let Some(n) = &r.ksef.ksef_number {
        let _ = writeln!(s, "KSeF number  {n}");
    }
    if let Some(t) = r.ksef.acquisition_date {
        let _ = writeln!(s, "acquired     {}", t.to_rfc3339());
    }
    let _ = writeln!(s, "source       {}", r.storage.source);
    if let Some(a) = &r.storage.archive {
        let _ = writeln!(s, "archived     {a}");
    }
    if let Some(u) = &r.storage.upo {
        let _ = writeln!(s, "UPO          {u}");
    }
    let _ = writeln!(s, "attempts     {} (version {})", r.attempts, r.version);
    if let Some(f) = &r.last_error {
        let _ = writeln!(s, "last error   [{}] {}", f.class.name(), f.message);
    }
    let _ = writeln!(s, "history ({} entries):", d.history.len());
    for e in &d.history {
        let what = match &e.event {
            HistoryEvent::Registered { source, content_hash, .. } => format!("registered from {source} (sha256 {content_hash})"),
            HistoryEvent::StateChanged { from, to, reason } => {
                format!("{} -> {}: {reason}", from.map(|f| f.code()).unwrap_or("-"), to.code())
            }
            HistoryEvent::SendStarted { session, attempt, .. } => format!("send started in session {session} (attempt {attempt})"),
            HistoryEvent::Error { failure: f } => {
                let mut line = format!("error [{}] {}", f.class.name(), f.source);
                if let Some(c) = &f.code {
                    let _ = write!(line, " {c}");
                }
                let _ = write!(line, ": {}", f.message);
                if let Some(p) = &f.location {
                    let _ = write!(line, " (at {p})");
                }
                for detail in &f.details {
                    let _ = write!(line, "\n{:>29}{detail}", "");
                }
                line
            }
            HistoryEvent::JoinedBatch { batch, part } => format!("joined batch {batch} (part {part})"),
            HistoryEvent::Note { message } => format!("note: {message}"),
        };
        let _ = writeln!(s, "  {}  {what}", e.at.format("%Y-%m-%d %H:%M:%S%.3f"));
    }
    s
}

/// Finds the documents `id` names in the store: every state through the `by-state` index (one
/// paged Query per state, records only), then the whole history of each match. Reads the whole
/// index: fine for an ops command at the relay's scale, not for a hot path.
pub async fn find<S>(store: &S, id: &str) -> Result<Vec<StoredDocument>, relay_domain::ports::StoreError>
where
    S: relay_domain::ports::DocumentRegistry + relay_domain::ports::DocumentQueries + ?Sized,
{
    let from = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let to = chrono::Utc::now() + chrono::Duration::days(1);
    let mut found = Vec::new();
    for state in relay_domain::DocumentState::ALL {
        for r in store.list_by_state_between(state, from, to, usize::MAX).await? {
            if names(&r, id) {
                if let Some(d) = store.get(&r.key).await? {
                    found.push(d.into());
                }
            }
        }
    }
    Ok(found)
}

/// Finds the documents `id` names among documents already loaded (the local runner's
/// `store.json`).
pub fn find_in<'a>(docs: &'a [StoredDocument], id: &str) -> Vec<&'a StoredDocument> {
    docs.iter().filter(|d| names(&d.record, id)).collect()
}
