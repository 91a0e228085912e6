//! # relay-fa3: reading and validating FA(3) invoices
//!
//! FA(3) is the structured-invoice schema KSeF accepts (namespace
//! `http://crd.gov.pl/wzor/2025/06/25/13775/`, XSDs in `data/ksef/schemas/`). This crate is
//! the relay's first line of defence: an invoice that fails here never costs one of KSeF's
//! 180 online sends an hour.
//!
//! - [`identity`]: reads what the relay keys on (seller NIP, `RodzajFaktury`, `P_2`, `P_1`).
//! - [`validate`] / [`validate_with`] ([`validator`]): the exact bytes in, a [`Report`] with
//!   every [`Finding`] out (rule id, category, XML path, line, Polish and English message);
//!   each converts to a [`relay_domain::Failure`] for the document's history.
//!
//! Layout of the validator, in the order it runs:
//! - [`xml_tree`]: a hostile-input-safe parse (DTDs refused, depth bounded, XML's character
//!   rules) into an element tree with byte spans and lines;
//! - [`xsd_schema`]: the official XSDs, embedded, compiled at first use into a content model
//!   ([`xsd_regex`] translates patterns, [`xsd_values`] holds the built-in types and facets);
//! - [`content_model`] and [`schema_check`]: structure and values against the schema;
//! - [`business_rules`]: NIP checksums, `P_1` not in the future, sums, corrections, currency.
//!
//! The key decision: the schema is interpreted from the official XSD files, not hand-written,
//! so "equal to the XSD" is checked by running both against xmllint on thousands of mutated
//! invoices (`tests/xmllint_agreement.rs`), and a new schema version is a file swap.

pub mod business_rules;
pub mod content_model;
pub mod findings;
pub mod identity;
pub mod schema_check;
pub mod validator;
pub mod xml_tree;
pub mod xsd_regex;
pub mod xsd_schema;
pub mod xsd_values;

pub use chrono::NaiveDate;
pub use findings::{Category, Finding, Report, Severity};
pub use identity::{read_identity, IdentityError, InvoiceIdentity, FA3_NAMESPACE};
pub use validator::{date_in_poland, today_in_poland, validate, validate_with, ValidateOptions, MAX_SIZE, MAX_SIZE_WITH_ATTACHMENTS};
