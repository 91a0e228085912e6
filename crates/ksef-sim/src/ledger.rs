//! The ledger: every invoice the simulator accepted, in order. Tests read it to prove that
//! nothing was accepted twice and that every KSeF number matches the bytes that were sent.

use std::collections::HashMap;
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

/// KSeF's duplicate key: seller, kind and invoice number.
type BusinessKey = (Nip, InvoiceKind, InvoiceNumber);

#[derive(Default)]
struct Entries {
    in_order: Vec<LedgerEntry>,
    /// Each business key's position in `in_order`: the duplicate check runs for every invoice
    /// that comes due, under the simulator's store lock, so a scan of the whole ledger made a
    /// month end's acceptance quadratic (50,000 checks over up to 50,000 entries while every
    /// other request waited on that lock).
    by_key: HashMap<BusinessKey, usize>,
}

/// Shared, append-only. Clone it freely.
#[derive(Clone, Default)]
pub struct Ledger {
    entries: Arc<Mutex<Entries>>,
}

impl Ledger {
    pub fn entries(&self) -> Vec<LedgerEntry> {
        self.entries.lock().expect("ledger lock").in_order.clone()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("ledger lock").in_order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The accepted invoice with this business identity (KSeF's duplicate key), if any.
    pub fn find(&self, seller: &Nip, kind: InvoiceKind, number: &InvoiceNumber) -> Option<LedgerEntry> {
        let entries = self.entries.lock().expect("ledger lock");
        let at = *entries.by_key.get(&(seller.clone(), kind, number.clone()))?;
        Some(entries.in_order[at].clone())
    }

    /// How many times invoices with these exact bytes were accepted.
    pub fn count_hash(&self, hash: &ContentHash) -> usize {
        self.entries
            .lock()
            .expect("ledger lock")
            .in_order
            .iter()
            .filter(|e| &e.invoice_hash == hash)
            .count()
    }

    pub(crate) fn push(&self, e: LedgerEntry) {
        let mut entries = self.entries.lock().expect("ledger lock");
        let at = entries.in_order.len();
        // The first acceptance of a key is the one a duplicate is told about.
        entries
            .by_key
            .entry((e.seller_nip.clone(), e.kind, e.invoice_number.clone()))
            .or_insert(at);
        entries.in_order.push(e);
    }
}
