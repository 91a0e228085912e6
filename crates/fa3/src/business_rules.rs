//! Business rules beyond the XSD: what KSeF checks itself (NIP checksums, `P_1` not in the
//! future) and what causes pain later (sums that do not add up, a correction that does not name
//! the invoice it corrects, VAT in PLN missing on a foreign-currency invoice).
//!
//! Rules read only values that parse; a value the XSD already refused is not reported twice.

use chrono::NaiveDate;
use relay_domain::Nip;

use crate::findings::{Category, Finding, Severity};
use crate::xml_tree::Tree;
use crate::xsd_values::Decimal;
use crate::FA3_NAMESPACE;

struct Rules<'a> {
    tree: &'a Tree<'a>,
    findings: &'a mut Vec<Finding>,
    /// `Fa` and, for each of [`FA_FIELDS`], its first FA(3) child of that name, found in one
    /// pass: the rules look these up some fifty times per invoice.
    fa_fields: Option<(usize, [Option<usize>; FA_FIELDS.len()])>,
}

/// The children of `Fa` the rules read, in the order [`fa_field`] numbers them.
const FA_FIELDS: [&str; 26] = [
    "P_1",
    "P_15",
    "RodzajFaktury",
    "KodWaluty",
    "P_13_1",
    "P_13_2",
    "P_13_3",
    "P_13_4",
    "P_13_5",
    "P_13_6_1",
    "P_13_6_2",
    "P_13_6_3",
    "P_13_7",
    "P_13_8",
    "P_13_9",
    "P_13_10",
    "P_13_11",
    "P_14_1",
    "P_14_2",
    "P_14_3",
    "P_14_4",
    "P_14_5",
    "P_14_1W",
    "P_14_2W",
    "P_14_3W",
    "P_14_4W",
];

/// The index of a name in [`FA_FIELDS`], decided on its bytes rather than by comparing it with
/// each of them.
fn fa_field(local: &str) -> Option<usize> {
    let digit = |d: u8, first: u8, at: usize| usize::from(d - first) + at;
    match local.as_bytes() {
        b"P_1" => Some(0),
        b"P_15" => Some(1),
        b"RodzajFaktury" => Some(2),
        b"KodWaluty" => Some(3),
        [b'P', b'_', b'1', b'3', b'_', rest @ ..] => match *rest {
            [d @ b'1'..=b'5'] => Some(digit(d, b'1', 4)),
            [b'6', b'_', d @ b'1'..=b'3'] => Some(digit(d, b'1', 9)),
            [d @ b'7'..=b'9'] => Some(digit(d, b'7', 12)),
            [b'1', d @ b'0'..=b'1'] => Some(digit(d, b'0', 15)),
            _ => None,
        },
        [b'P', b'_', b'1', b'4', b'_', d @ b'1'..=b'5'] => Some(digit(*d, b'1', 17)),
        [b'P', b'_', b'1', b'4', b'_', d @ b'1'..=b'4', b'W'] => Some(digit(*d, b'1', 22)),
        _ => None,
    }
}

/// A P_13_x net sum, its P_14_x VAT (if any), the P_12 rates that belong to it, and those
/// rates in percent.
type Bucket = (&'static str, Option<&'static str>, &'static [&'static str], &'static [u32]);

const BUCKETS: &[Bucket] = &[
    ("P_13_1", Some("P_14_1"), &["23", "22"], &[23, 22]),
    ("P_13_2", Some("P_14_2"), &["8", "7"], &[8, 7]),
    ("P_13_3", Some("P_14_3"), &["5"], &[5]),
    ("P_13_4", Some("P_14_4"), &["4", "3"], &[4, 3]),
    ("P_13_6_1", None, &["0 KR"], &[]),
    ("P_13_6_2", None, &["0 WDT"], &[]),
    ("P_13_6_3", None, &["0 EX"], &[]),
    ("P_13_7", None, &["zw"], &[]),
    ("P_13_8", None, &["np I"], &[]),
    ("P_13_9", None, &["np II"], &[]),
    ("P_13_10", None, &["oo"], &[]),
];

const P13_ALL: &[&str] = &[
    "P_13_1", "P_13_2", "P_13_3", "P_13_4", "P_13_5", "P_13_6_1", "P_13_6_2", "P_13_6_3", "P_13_7", "P_13_8", "P_13_9", "P_13_10",
    "P_13_11",
];
const P14_ALL: &[&str] = &["P_14_1", "P_14_2", "P_14_3", "P_14_4", "P_14_5"];

pub fn check(tree: &Tree, today: NaiveDate, findings: &mut Vec<Finding>) {
    let mut r = Rules {
        tree,
        findings,
        fa_fields: None,
    };
    r.nip_checksums();
    let Some(fa) = r.child(0, "Fa") else { return };
    let mut first = [None; FA_FIELDS.len()];
    for &c in tree.children(fa) {
        let n = &tree.nodes[c];
        if let Some(k) = fa_field(n.local) {
            if &*n.ns == FA3_NAMESPACE {
                first[k].get_or_insert(c);
            }
        }
    }
    r.fa_fields = Some((fa, first));
    r.issue_date(fa, today);
    // Sums, corrections and currency read many fields together: only on a structurally valid
    // Fa, so that a broken value is reported once (by the XSD check) and not again as a sum.
    let fa_path = &tree.path(fa);
    let fa_broken = r.findings.iter().any(|f| {
        matches!(f.category, Category::Schema | Category::Xml) && (f.path == *fa_path || f.path.starts_with(&format!("{fa_path}/")))
    });
    if !fa_broken {
        r.correction_reference(fa);
        r.sums(fa);
        r.currency(fa);
    }
}

fn fmt_cents(c: i128) -> String {
    let sign = if c < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", c.abs() / 100, c.abs() % 100)
}

impl Rules<'_> {
    fn push(&mut self, node: usize, code: &'static str, severity: Severity, pl: String, en: String) {
        self.findings.push(Finding {
            code,
            category: Category::Business,
            severity,
            path: self.tree.path(node),
            line: self.tree.nodes[node].line,
            message_pl: pl,
            message_en: en,
        });
    }

    fn child(&self, parent: usize, local: &str) -> Option<usize> {
        if let (Some((fa, first)), Some(k)) = (&self.fa_fields, fa_field(local)) {
            if *fa == parent {
                return first[k];
            }
        }
        self.children(parent, local).next()
    }

    fn children<'b>(&'b self, parent: usize, local: &'b str) -> impl Iterator<Item = usize> + 'b {
        self.tree
            .children(parent)
            .iter()
            .copied()
            .filter(move |&c| self.tree.nodes[c].local == local && &*self.tree.nodes[c].ns == FA3_NAMESPACE)
    }

    fn text(&self, node: usize) -> &str {
        self.tree.nodes[node].text.trim_matches([' ', '\t', '\n', '\r'])
    }

    fn amount(&self, parent: usize, local: &str) -> Option<(usize, i128)> {
        let n = self.child(parent, local)?;
        let d = Decimal::parse(self.text(n))?;
        if d.fraction_digits() > 2 {
            return None;
        }
        Some((n, d.to_hundredths()?))
    }

    /// KSeF validates the checksum of every party's NIP (Podmiot1/2/3, PodmiotUpowazniony),
    /// and of the NIP inside Podmiot3's internal id (`IDWew`).
    fn nip_checksums(&mut self) {
        for id in 0..self.tree.nodes.len() {
            let node = &self.tree.nodes[id];
            let candidate = match node.local {
                "NIP" => self.text(id),
                "IDWew" => self.text(id).split('-').next().unwrap_or(""),
                _ => continue,
            };
            if candidate.len() != 10 || !candidate.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if Nip::parse(candidate).is_err() {
                let what = if node.local == "IDWew" { "IDWew (NIP)" } else { "NIP" };
                self.push(
                    id,
                    "rule.nip_checksum",
                    Severity::Error,
                    format!("{what} {candidate} ma błędną sumę kontrolną; KSeF odrzuci fakturę."),
                    format!("{what} {candidate} has a wrong check digit; KSeF will reject the invoice."),
                );
            }
        }
    }

    fn issue_date(&mut self, fa: usize, today: NaiveDate) {
        let Some(p1) = self.child(fa, "P_1") else { return };
        let Ok(date) = NaiveDate::parse_from_str(self.text(p1), "%Y-%m-%d") else {
            return;
        };
        if date > today {
            self.push(
                p1,
                "rule.issue_date_future",
                Severity::Error,
                format!("Data wystawienia P_1 ({date}) jest późniejsza niż dzisiejsza ({today}); KSeF odrzuci fakturę."),
                format!("The issue date P_1 ({date}) is later than today ({today}); KSeF will reject the invoice."),
            );
        }
    }

    fn kind(&self, fa: usize) -> Option<String> {
        self.child(fa, "RodzajFaktury").map(|n| self.text(n).to_string())
    }

    fn correction_reference(&mut self, fa: usize) {
        let Some(kind) = self.kind(fa) else { return };
        let is_correction = kind.starts_with("KOR");
        let refs: Vec<usize> = self.children(fa, "DaneFaKorygowanej").collect();
        if is_correction && refs.is_empty() {
            self.push(
                fa,
                "rule.correction_reference",
                Severity::Error,
                format!("Faktura korygująca ({kind}) musi wskazać fakturę korygowaną (DaneFaKorygowanej: data, numer, numer KSeF)."),
                format!("A correction invoice ({kind}) must name the invoice it corrects (DaneFaKorygowanej: date, number, KSeF number)."),
            );
        }
        if is_correction {
            for r in refs {
                let ksef = self.child(r, "NrKSeFFaKorygowanej");
                let flagged_ksef = self.child(r, "NrKSeF").is_some();
                if flagged_ksef && ksef.is_some_and(|n| relay_domain::KsefNumber::parse(self.text(n)).is_err()) {
                    let n = ksef.unwrap_or(r);
                    self.push(
                        n,
                        "rule.correction_ksef_number",
                        // A warning: even the Ministry's own sample 11 carries a made-up number.
                        Severity::Warning,
                        format!(
                            "Numer KSeF faktury korygowanej \"{}\" ma błędną sumę kontrolną (CRC-8); sprawdź go.",
                            self.text(n)
                        ),
                        format!(
                            "The corrected invoice's KSeF number \"{}\" has a wrong checksum (CRC-8); check it.",
                            self.text(n)
                        ),
                    );
                }
            }
        } else if let Some(&r) = refs.first() {
            self.push(
                r,
                "rule.correction_reference_unexpected",
                Severity::Warning,
                format!("Dane faktury korygowanej podano w fakturze rodzaju {kind}, która nie jest korektą."),
                format!("Corrected-invoice data is given on an invoice of kind {kind}, which is not a correction."),
            );
        }
    }

    /// Line nets against P_13_x, VAT against P_14_x, and P_15 against the total.
    fn sums(&mut self, fa: usize) {
        let Some(kind) = self.kind(fa) else { return };
        let lines: Vec<usize> = self.children(fa, "FaWiersz").collect();
        // Line nets per rate, only for plain invoices where each line has a net value and a
        // rate and none is a "before correction" line.
        let plain = matches!(kind.as_str(), "VAT" | "UPR");
        let mut per_bucket = vec![(0i128, 0usize); BUCKETS.len()];
        let mut lines_usable = plain && !lines.is_empty();
        for &l in &lines {
            let rate = self.child(l, "P_12").map(|n| self.text(n).to_string());
            let net = self.amount(l, "P_11");
            let bucket = rate.as_deref().and_then(|r| BUCKETS.iter().position(|b| b.2.contains(&r)));
            match (net, bucket) {
                (Some((_, v)), Some(b)) if self.child(l, "StanPrzed").is_none() && self.child(l, "P_12_XII").is_none() => {
                    per_bucket[b].0 += v;
                    per_bucket[b].1 += 1;
                }
                _ => lines_usable = false,
            }
        }
        for (i, (p13, p14, _, rates)) in BUCKETS.iter().enumerate() {
            let declared = self.amount(fa, p13);
            if lines_usable {
                let (sum, _) = per_bucket[i];
                let shown = declared.map(|d| d.1).unwrap_or(0);
                if sum != shown {
                    let at = declared.map(|d| d.0).unwrap_or(fa);
                    self.push(
                        at,
                        "rule.net_sum",
                        Severity::Error,
                        format!(
                            "{p13} = {} nie zgadza się z sumą wartości netto pozycji (P_11) w tej stawce: {}.",
                            fmt_cents(shown),
                            fmt_cents(sum)
                        ),
                        format!(
                            "{p13} = {} does not match the sum of the line net values (P_11) at this rate: {}.",
                            fmt_cents(shown),
                            fmt_cents(sum)
                        ),
                    );
                }
            }
            let (Some(p14), Some((_, net))) = (p14, declared) else { continue };
            let Some((vat_node, vat)) = self.amount(fa, p14) else { continue };
            // Per-line rounding may drift half a grosz per line.
            let n_lines = per_bucket[i].1.max(1) as i128;
            let tolerance = 1 + n_lines / 2;
            let fits = rates.iter().any(|&r| (net * i128::from(r) - vat * 100).abs() <= tolerance * 100);
            if !fits {
                let expect: Vec<String> = rates
                    .iter()
                    .map(|&r| format!("{}% → {}", r, fmt_cents((net * i128::from(r) + 50 * net.signum()) / 100)))
                    .collect();
                self.push(
                    vat_node,
                    "rule.vat_sum",
                    Severity::Warning,
                    format!(
                        "Podatek {p14} = {} nie odpowiada kwocie netto {p13} = {} ({}).",
                        fmt_cents(vat),
                        fmt_cents(net),
                        expect.join(", ")
                    ),
                    format!(
                        "The VAT {p14} = {} does not match the net amount {p13} = {} ({}).",
                        fmt_cents(vat),
                        fmt_cents(net),
                        expect.join(", ")
                    ),
                );
            }
        }
        if matches!(kind.as_str(), "VAT" | "ZAL" | "KOR" | "KOR_ZAL") {
            let Some((p15_node, p15)) = self.amount(fa, "P_15") else { return };
            let parts: Vec<i128> = P13_ALL
                .iter()
                .chain(P14_ALL)
                .filter_map(|n| self.amount(fa, n).map(|a| a.1))
                .collect();
            // Invoices in the margin scheme or with only P_15 (e.g. simplified) carry no parts.
            if parts.is_empty() {
                return;
            }
            let total: i128 = parts.iter().sum();
            if (total - p15).abs() > 1 {
                self.push(
                    p15_node,
                    "rule.total",
                    Severity::Error,
                    format!(
                        "Kwota należności P_15 = {} nie jest sumą kwot netto i podatku (P_13_x + P_14_x = {}).",
                        fmt_cents(p15),
                        fmt_cents(total)
                    ),
                    format!(
                        "The total P_15 = {} is not the sum of the net and VAT amounts (P_13_x + P_14_x = {}).",
                        fmt_cents(p15),
                        fmt_cents(total)
                    ),
                );
            }
        }
    }

    /// VAT in PLN (P_14_xW) is required on a foreign-currency invoice and meaningless on a PLN one.
    fn currency(&mut self, fa: usize) {
        let Some(code_node) = self.child(fa, "KodWaluty") else { return };
        let code = self.text(code_node).to_string();
        for x in 1..=4 {
            let (p14, p14w) = (FA_FIELDS[16 + x], FA_FIELDS[21 + x]);
            let w = self.child(fa, p14w);
            if code == "PLN" {
                if let Some(w) = w {
                    self.push(
                        w,
                        "rule.currency_pln_w",
                        Severity::Error,
                        format!("{p14w} (podatek przeliczony na złote) podaje się tylko na fakturze w walucie obcej, a ta jest w PLN."),
                        format!("{p14w} (VAT converted to PLN) belongs only on a foreign-currency invoice; this one is in PLN."),
                    );
                }
            } else if w.is_none() && self.amount(fa, p14).is_some_and(|a| a.1 != 0) {
                let at = self.child(fa, p14).unwrap_or(fa);
                self.push(
                    at,
                    "rule.currency_missing_w",
                    Severity::Error,
                    format!("Faktura w walucie {code}: kwota podatku {p14} musi być podana także w złotych ({p14w})."),
                    format!("Invoice in {code}: the VAT amount {p14} must also be given in PLN ({p14w})."),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fa_fields_are_numbered_by_their_bytes() {
        for (k, name) in FA_FIELDS.iter().enumerate() {
            assert_eq!(fa_field(name), Some(k), "{name}");
        }
        // Where `currency` finds its names.
        for x in 1..=4 {
            assert_eq!(
                (FA_FIELDS[16 + x], FA_FIELDS[21 + x]),
                (&*format!("P_14_{x}"), &*format!("P_14_{x}W"))
            );
        }
        for other in [
            "",
            "P",
            "P_",
            "P_12",
            "P_13",
            "P_13_",
            "P_13_0",
            "P_13_6",
            "P_13_6_0",
            "P_13_6_4",
            "P_13_12",
            "P_13_1W",
            "P_14_0",
            "P_14_6",
            "P_14_5W",
            "P_14_1WW",
            "P_15_1",
            "P_1M",
            "Fa",
            "KodWaluty2",
            "p_1",
        ] {
            assert_eq!(fa_field(other), None, "{other}");
        }
    }
}
