//! The ledger: every invoice the simulator accepted, in order. Tests read it to prove that
//! nothing was accepted twice and that every KSeF number matches the bytes that were sent.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use relay_domain::{ContentHash, InvoiceKind, InvoiceNumber, KsefNumber, KsefReference, Nip};
use serde::Serialize;

/// One accepted invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub ksef_number: KsefNumber,
    pub invoice_hash: ContentHash,
    pub seller_nip: Nip,
    pub kind: InvoiceKind,
    pub invoice_number: InvoiceNumber,
    pub session_reference: KsefReference,
    pub invoice_reference: KsefReference,
    pub acquisition_date: DateTime<Utc>,
    /// The `offlineMode` it was sent with (its session's, in a batch).
    pub offline_requested: bool,
    /// A technical correction's `hashOfCorrectedInvoice`: the rejected offline invoice it corrects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_of_corrected_invoice: Option<ContentHash>,
    /// How it was filed: Offline when sent with `offlineMode: true` or after its issue day.
    pub invoicing_mode: relay_domain::InvoicingMode,
}

/// Shared, append-only. Clone it freely.
#[derive(Clone, Default)]
pub struct Ledger {
    entries: Arc<Mutex<Vec<LedgerEntry>>>,
}

impl Ledger {
    pub fn entries(&self) -> Vec<LedgerEntry> {
        self.entries.lock().expect("ledger lock").clone()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("ledger lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The accepted invoice with this business identity (KSeF's duplicate key), if any.
    pub fn find(&self, seller: &Nip, kind: InvoiceKind, number: &InvoiceNumber) -> Option<LedgerEntry> {
        self.entries
            .lock()
            .expect("ledger lock")
            .iter()
            .find(|e| &e.seller_nip == seller && e.kind == kind && &e.invoice_number == number)
            .cloned()
    }

    /// How many times invoices with these exact bytes were accepted.
    pub fn count_hash(&self, hash: &ContentHash) -> usize {
        self.entries
            .lock()
            .expect("ledger lock")
            .iter()
            .filter(|e| &e.invoice_hash == hash)
            .count()
    }

    pub(crate) fn push(&self, e: LedgerEntry) {
        self.entries.lock().expect("ledger lock").push(e);
    }
}
