//! Every seller's KSeF login, seen from the facts the KSeF-calling functions record when they
//! read its secret (`relay/credential-facts/{nip}` in the shared cache: kind, subject, key type,
//! notAfter, when read; never the secret, which the report function may not read). The
//! scheduled snapshot turns them into `CredentialDaysLeft` lines, so the 30- and 7-day alarms
//! see a seller that sends nothing, and into a line per seller on the status page.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use relay_domain::credential_facts::{cache_name, CredentialFacts, LoginKind};
use relay_domain::ports::{SharedCache, StoreError};
use relay_domain::Nip;
use relay_observe::emf::MetricLine;

use crate::status_page::escape;

/// At or under this many days left the page warns ...
pub const WARN_DAYS: i64 = 30;
/// ... and at or under this many it says to rotate now (the two alarms' thresholds).
pub const CRITICAL_DAYS: i64 = 7;

/// One seller's login as last recorded; `facts` is None when no read has recorded any (within
/// their retention) or the entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SellerCredential {
    pub seller: Nip,
    pub facts: Option<CredentialFacts>,
}

/// How urgent a seller's line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    Fine,
    /// A token with more than 30 days left: still flagged, since token logins end.
    Notice,
    /// No facts recorded: the expiry is not known.
    Unknown,
    Warn,
    Critical,
    Expired,
}

impl Urgency {
    fn class(self) -> &'static str {
        match self {
            Urgency::Fine => "cred-ok",
            Urgency::Notice | Urgency::Unknown | Urgency::Warn => "cred-warn",
            Urgency::Critical | Urgency::Expired => "cred-bad",
        }
    }
}

/// Reads the recorded facts of `sellers` (one read each).
pub async fn read(cache: &dyn SharedCache, sellers: &[Nip], now: DateTime<Utc>) -> Result<Vec<SellerCredential>, StoreError> {
    let mut out = Vec::with_capacity(sellers.len());
    for seller in sellers {
        let facts = match cache.get(&cache_name(seller), now).await? {
            Some(entry) => match CredentialFacts::from_json(&entry.value) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(seller_nip = %seller, error = %e, "the recorded credential facts do not parse; shown as unknown");
                    None
                }
            },
            None => None,
        };
        out.push(SellerCredential {
            seller: seller.clone(),
            facts,
        });
    }
    Ok(out)
}

impl SellerCredential {
    pub fn urgency(&self, now: DateTime<Utc>) -> Urgency {
        let Some(f) = &self.facts else { return Urgency::Unknown };
        let days = f.days_left(now);
        if f.not_after <= now {
            Urgency::Expired
        } else if days <= CRITICAL_DAYS {
            Urgency::Critical
        } else if days <= WARN_DAYS {
            Urgency::Warn
        } else if f.kind == LoginKind::Token {
            Urgency::Notice
        } else {
            Urgency::Fine
        }
    }

    /// What the page says about this seller's login, in words.
    pub fn message(&self, now: DateTime<Utc>) -> String {
        let Some(f) = &self.facts else {
            return "expiry unknown: no secret read has recorded this seller's login (it has not sent since the facts were \
                    introduced or for over a year); no CredentialDaysLeft for it until it sends"
                .into();
        };
        let days = f.days_left(now);
        let token = f.kind == LoginKind::Token;
        let what = if token {
            "KSeF token logins end on 31.12.2026"
        } else {
            "the certificate expires"
        };
        let fix = if token {
            "move this seller to a KSeF certificate (runbook: \"Moving a seller from a token to a certificate\")"
        } else {
            "enrol a new certificate and rotate the secret (runbook: \"Rotating a certificate or a token\")"
        };
        match self.urgency(now) {
            Urgency::Expired => format!(
                "EXPIRED: {what} passed {} day(s) ago; logins fail and the seller is parked: {fix} now",
                -days
            ),
            Urgency::Critical => format!("CRITICAL: {days} day(s) left ({what}): {fix} now"),
            Urgency::Warn => format!("WARNING: {days} day(s) left ({what}): {fix}"),
            Urgency::Notice => format!("{days} day(s) until {what}: {fix}"),
            Urgency::Fine | Urgency::Unknown => format!("{days} day(s) left"),
        }
    }

    /// The `CredentialDaysLeft` line, when the facts are known.
    pub fn metric_line(&self, now: DateTime<Utc>) -> Option<MetricLine> {
        let f = self.facts.as_ref()?;
        Some(relay_observe::credential_metrics::days_left_line(
            self.seller.as_str(),
            f.kind.as_str(),
            f.not_after,
            f.days_left(now),
            now,
        ))
    }
}

/// Emits `CredentialDaysLeft` for every seller whose facts are known.
pub fn emit(credentials: &[SellerCredential], now: DateTime<Utc>) {
    for c in credentials {
        if let Some(line) = c.metric_line(now) {
            line.emit();
        }
    }
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The page's "KSeF logins" section: a line per seller, the most urgent first.
pub fn section_html(credentials: &[SellerCredential], now: DateTime<Utc>) -> String {
    let mut sorted: Vec<&SellerCredential> = credentials.iter().collect();
    sorted.sort_by(|a, b| b.urgency(now).cmp(&a.urgency(now)).then(a.seller.cmp(&b.seller)));
    let mut html = String::from(
        "<h2>KSeF logins</h2><table id=\"credentials\"><thead><tr><th>seller</th><th>kind</th><th>subject · key</th>\
<th>not after</th><th>days left</th><th>read</th><th>what to do</th></tr></thead><tbody>",
    );
    if sorted.is_empty() {
        html.push_str("<tr><td colspan=\"7\">no sellers configured</td></tr>");
    }
    for c in sorted {
        let urgency = c.urgency(now);
        let _ = match &c.facts {
            Some(f) => write!(
                html,
                "<tr class=\"{cls}\" data-seller=\"{nip}\"><td>{nip}</td><td>{kind}</td><td>{subject}{key}</td><td>{not_after}</td>\
<td>{days}</td><td>{read}</td><td>{msg}</td></tr>",
                cls = urgency.class(),
                nip = escape(c.seller.as_str()),
                kind = f.kind.as_str(),
                subject = escape(f.subject.as_deref().unwrap_or("-")),
                key = f.key_type.as_deref().map(|k| format!(" · {}", escape(k))).unwrap_or_default(),
                not_after = day(f.not_after),
                days = f.days_left(now),
                read = day(f.read_at),
                msg = escape(&c.message(now)),
            ),
            None => write!(
                html,
                "<tr class=\"{cls}\" data-seller=\"{nip}\"><td>{nip}</td><td>?</td><td>-</td><td>-</td><td>-</td><td>never</td><td>{msg}</td></tr>",
                cls = urgency.class(),
                nip = escape(c.seller.as_str()),
                msg = escape(&c.message(now)),
            ),
        };
    }
    html.push_str("</tbody></table>");
    html
}
