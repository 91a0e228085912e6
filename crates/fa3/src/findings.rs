//! What the validator reports: findings with a rule id, a category, the XML path and line, and
//! a plain message in Polish and English; and their conversion to the domain's [`Failure`].

use relay_domain::{ErrorClass, ErrorSource, Failure};
use serde::Serialize;

/// Which layer a finding comes from. Only [`Category::Xml`] and [`Category::Schema`] are what
/// an XSD validator (xmllint) would report; the others are KSeF's input rules and business rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Not well-formed XML.
    Xml,
    /// KSeF's rules for the file itself: size, BOM, encoding, DTDs, processing instructions,
    /// discouraged characters, a foreign schema.
    Input,
    /// The FA(3) XSD.
    Schema,
    /// Business rules beyond the XSD (checksums, dates, sums, corrections, currency).
    Business,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The invoice must not be sent.
    Error,
    /// Probably wrong; sending is allowed.
    Warning,
}

/// One problem in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `schema.missing`, `value.pattern`, `rule.nip_checksum`.
    pub code: &'static str,
    pub category: Category,
    pub severity: Severity,
    /// Where: `/Faktura/Fa/FaWiersz[2]/P_12` (empty when the document has no usable root).
    pub path: String,
    /// 1-based line of the element (or of the problem when there is no element).
    pub line: u32,
    pub message_pl: String,
    pub message_en: String,
}

impl Finding {
    /// Whether an XSD validator would report this too (well-formedness or schema).
    pub fn is_schema_level(&self) -> bool {
        matches!(self.category, Category::Xml | Category::Schema)
    }

    /// The domain failure recorded in the document's history: permanent, from validation,
    /// with the rule id as code, the Polish message first and the English one in the details.
    pub fn to_failure(&self) -> Failure {
        let mut f = Failure::new(ErrorClass::Permanent, ErrorSource::Validation, self.message_pl.clone()).with_code(self.code);
        f.details = vec![self.message_en.clone(), format!("line {}", self.line)];
        if !self.path.is_empty() {
            f.location = Some(self.path.clone());
        }
        f
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "line {}: {sev} [{}] {}: {}", self.line, self.code, self.path, self.message_en)
    }
}

impl From<&Finding> for Failure {
    fn from(f: &Finding) -> Failure {
        f.to_failure()
    }
}

/// Everything found in one document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// No errors (warnings allowed): the invoice may be sent.
    pub fn is_valid(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Valid as far as well-formedness and the XSD go (what xmllint would say).
    pub fn is_schema_valid(&self) -> bool {
        !self.findings.iter().any(Finding::is_schema_level)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }

    /// The errors as domain failures, for the document's history.
    pub fn failures(&self) -> Vec<Failure> {
        self.errors().map(Finding::to_failure).collect()
    }
}
