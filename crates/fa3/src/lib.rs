//! # relay-fa3: reading FA(3) invoices
//!
//! FA(3) is the structured-invoice schema KSeF accepts (namespace
//! `http://crd.gov.pl/wzor/2025/06/25/13775/`, XSDs in `data/ksef/schemas/`).
//!
//! - [`identity`]: reads what the relay keys on: seller NIP (`Podmiot1`), `RodzajFaktury`,
//!   `P_2`, the issue date `P_1`, refusing DTDs and anything that is not an FA(3) invoice.
//!
//! The full validator (XSD-equal structure and business rules) is built on top of this crate.

pub mod identity;

pub use identity::{read_identity, IdentityError, InvoiceIdentity, FA3_NAMESPACE};
