//! The status page: one self-contained HTML file (inline CSS and JS, no fetches) for IT and
//! accounting. Documents by state; the rejected ones with every validation or KSeF message,
//! the XML path and links to the source and archived objects; the failed ones with their
//! attempt history; a search box over ERP id, trace id, KSeF number and invoice number.
//!
//! Everything taken from a document (invoice numbers, ERP ids, KSeF's messages) is untrusted and
//! HTML-escaped; the search reads `data-search` attributes, never builds HTML from data.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use relay_domain::{DocumentState, Failure, HistoryEvent};

use crate::metrics::{deadline_of, Levels};
use crate::snapshot::{Snapshot, StoredDocument};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Where an object key (`inbox/...`, `archive/...`, `upo/...`) can be opened, if anywhere.
pub type Links<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Links into the S3 console for objects of `bucket`.
pub fn s3_console_links(bucket: String, region: String) -> impl Fn(&str) -> Option<String> {
    move |key: &str| {
        Some(format!(
            "https://{region}.console.aws.amazon.com/s3/object/{bucket}?region={region}&prefix={}",
            percent(key)
        ))
    }
}

/// Links relative to the page, for the files the local runner writes beside it.
pub fn relative_links(written: impl Fn(&str) -> bool) -> impl Fn(&str) -> Option<String> {
    move |key: &str| written(key).then(|| key.split('/').map(percent).collect::<Vec<_>>().join("/"))
}

fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn link(links: Links<'_>, label: &str, key: &str) -> String {
    match links(key) {
        Some(url) => format!("{label}: <a href=\"{}\">{}</a>", escape(&url), escape(key)),
        None => format!("{label}: <code>{}</code>", escape(key)),
    }
}

fn failure_html(f: &Failure) -> String {
    let mut s = format!(
        "<li><span class=\"cls\">{}</span> <span class=\"src\">{}</span>",
        escape(f.class.name()),
        escape(&f.source.to_string())
    );
    if let Some(code) = &f.code {
        let _ = write!(s, " <code>{}</code>", escape(code));
    }
    let _ = write!(s, "<div class=\"msg\">{}</div>", escape(&f.message));
    if let Some(path) = &f.location {
        let _ = write!(s, "<div>XML path: <code class=\"path\">{}</code></div>", escape(path));
    }
    if !f.details.is_empty() {
        s.push_str("<ul class=\"details\">");
        for d in &f.details {
            let _ = write!(s, "<li>{}</li>", escape(d));
        }
        s.push_str("</ul>");
    }
    s.push_str("</li>");
    s
}

fn history_html(d: &StoredDocument) -> String {
    let mut s = String::from("<ol class=\"history\">");
    for e in &d.history {
        let what = match &e.event {
            HistoryEvent::Registered { source, .. } => format!("registered from <code>{}</code>", escape(source)),
            HistoryEvent::StateChanged { from, to, reason } => format!(
                "{} → <b>{}</b>: {}",
                from.map(|f| f.code()).unwrap_or("-"),
                to.code(),
                escape(reason)
            ),
            HistoryEvent::SendStarted { session, attempt, .. } => {
                format!(
                    "send started in session <code>{}</code> (attempt {attempt})",
                    escape(session.as_str())
                )
            }
            HistoryEvent::Error { failure } => format!("<ul class=\"failures\">{}</ul>", failure_html(failure)),
            HistoryEvent::JoinedBatch { batch, part } => {
                format!("joined batch <code>{}</code> (part {part})", escape(batch))
            }
            HistoryEvent::Note { message } => escape(message),
        };
        let _ = write!(s, "<li><time>{}</time> {what}</li>", time(e.at));
    }
    s.push_str("</ol>");
    s
}

/// The failures that made a rejected document rejected: every finding recorded since it was
/// last registered (a corrected file starts a new story).
fn rejection_failures(d: &StoredDocument) -> Vec<&Failure> {
    let start = d
        .history
        .iter()
        .rposition(|e| matches!(e.event, HistoryEvent::Registered { .. }))
        .unwrap_or(0);
    let found: Vec<&Failure> = d.history[start..]
        .iter()
        .filter_map(|e| match &e.event {
            HistoryEvent::Error { failure } => Some(failure),
            _ => None,
        })
        .collect();
    if found.is_empty() {
        d.record.last_error.iter().collect()
    } else {
        found
    }
}

fn row(d: &StoredDocument, links: Links<'_>, declared: &[relay_domain::FailureWindow], now: DateTime<Utc>) -> String {
    let r = &d.record;
    let ksef = r.ksef.ksef_number.as_ref().map(|n| n.to_string()).unwrap_or_default();
    let search = format!(
        "{} {} {} {} {}",
        r.erp_document_id, r.trace_id, ksef, r.key.invoice_number, r.key.seller_nip
    )
    .to_lowercase();
    let deadline = match deadline_of(r, declared) {
        Some(t) if t <= now => format!("<span class=\"late\">past {}</span>", time(t)),
        Some(t) => time(t),
        None => String::new(),
    };
    let mut s = format!(
        "<tr class=\"doc st-{state}\" data-state=\"{state}\" data-search=\"{search}\">\
<td><span class=\"badge st-{state}\">{state}</span><br><small>{label}</small></td>\
<td class=\"erp\">{erp}</td><td>{nip}<br><small>{kind} {number}</small></td>\
<td><code class=\"trace\">{trace}</code></td><td class=\"ksef\">{ksef}</td><td>{since}</td><td>{attempts}</td><td>{deadline}</td></tr>",
        state = r.state.code(),
        label = escape(r.state.label_pl()),
        erp = escape(r.erp_document_id.as_str()),
        nip = escape(r.key.seller_nip.as_ref()),
        kind = escape(&r.key.kind.to_string()),
        number = escape(r.key.invoice_number.as_str()),
        trace = escape(r.trace_id.as_str()),
        ksef = escape(&ksef),
        since = time(r.state_since),
        attempts = r.attempts,
        search = escape(&search),
    );
    // The story underneath, open for the documents a person must look at.
    let attention = matches!(r.state, DocumentState::Rejected | DocumentState::Failed | DocumentState::Conflict);
    let mut detail = String::new();
    detail.push_str("<div class=\"objects\">");
    detail.push_str(&link(links, "source", &r.storage.source));
    if let Some(a) = &r.storage.archive {
        let _ = write!(detail, " · {}", link(links, "archived bytes", a));
    }
    if let Some(u) = &r.storage.upo {
        let _ = write!(detail, " · {}", link(links, "UPO", u));
    }
    detail.push_str("</div>");
    match r.state {
        DocumentState::Rejected | DocumentState::Conflict => {
            detail.push_str("<h4>Why</h4><ul class=\"failures\">");
            for f in rejection_failures(d) {
                detail.push_str(&failure_html(f));
            }
            detail.push_str("</ul>");
        }
        _ => {}
    }
    if d.history.is_empty() && r.state == DocumentState::Accepted {
        let _ = write!(
            detail,
            "<div class=\"meta\">history not loaded for accepted documents: <code>ksef-relay status {}</code></div>",
            escape(r.erp_document_id.as_str())
        );
    } else {
        let _ = write!(
            detail,
            "<details{}><summary>history ({} entries{})</summary>{}</details>",
            if r.state == DocumentState::Failed { " open" } else { "" },
            d.history.len(),
            if r.state == DocumentState::Failed { ": every attempt" } else { "" },
            history_html(d)
        );
    }
    let _ = write!(
        s,
        "<tr class=\"more st-{state}{open}\" data-state=\"{state}\" data-search=\"{search}\"><td colspan=\"8\">{detail}</td></tr>",
        state = r.state.code(),
        open = if attention { " attention" } else { "" },
        search = escape(&search),
    );
    s
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1d232a;background:#fafbfc}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin-top:1.6rem}h4{margin:.4rem 0 .2rem}
.meta{color:#5a6570;font-size:.9rem}.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin:1rem 0}
.card{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:.5rem .8rem;min-width:8rem;cursor:pointer}
.card b{display:block;font-size:1.4rem}.card.active{outline:2px solid #0969da}
.alerts .card{cursor:default}.alerts .bad b{color:#b42318}
tr.cred-warn td{background:#fff8e1}tr.cred-bad td{background:#fdecea;font-weight:600}
input#search{width:min(40rem,100%);padding:.5rem;font-size:1rem;border:1px solid #aab4be;border-radius:4px}
table{border-collapse:collapse;width:100%;background:#fff;margin-top:.8rem;font-size:.9rem}
th,td{border-bottom:1px solid #e4e8ec;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f3f6;position:sticky;top:0}tr.more td{background:#fcfcfd;padding-left:2rem}
tr.more:not(.attention) .objects{color:#5a6570}
.badge{border-radius:3px;padding:0 .35rem;font-weight:600;font-size:.8rem;color:#fff;background:#57606a}
.st-ACCEPTED .badge,.badge.st-ACCEPTED{background:#1a7f37}.badge.st-REJECTED{background:#b42318}
.badge.st-FAILED{background:#bc4c00}.badge.st-CONFLICT{background:#8250df}.badge.st-QUEUED,.badge.st-SENT,.badge.st-PROCESSING{background:#0969da}
.msg{white-space:pre-wrap;margin:.15rem 0}.cls{font-weight:600}.src{color:#5a6570}
.late{color:#b42318;font-weight:600}code{font-size:.85em}ol.history{margin:.3rem 0;padding-left:1.4rem}
ol.history time{color:#5a6570;font-size:.85em}.hidden{display:none}#nothing{margin:1rem 0;color:#5a6570}
"#;

const SCRIPT: &str = r#"
(function(){
  var input=document.getElementById('search');
  var rows=Array.prototype.slice.call(document.querySelectorAll('tr[data-search]'));
  var cards=Array.prototype.slice.call(document.querySelectorAll('.card[data-filter]'));
  var state='';
  function apply(){
    var q=input.value.trim().toLowerCase();var shown=0;
    rows.forEach(function(r){
      var ok=(!q||r.getAttribute('data-search').indexOf(q)>=0)&&(!state||r.getAttribute('data-state')===state);
      r.classList.toggle('hidden',!ok);if(ok&&r.classList.contains('doc'))shown++;
    });
    document.getElementById('shown').textContent=shown;
    document.getElementById('nothing').classList.toggle('hidden',shown>0);
  }
  input.addEventListener('input',apply);
  cards.forEach(function(c){c.addEventListener('click',function(){
    state=(state===c.getAttribute('data-filter'))?'':c.getAttribute('data-filter');
    cards.forEach(function(o){o.classList.toggle('active',o.getAttribute('data-filter')===state&&state!=='');});
    apply();
  });});
  var fromHash=decodeURIComponent((location.hash||'').slice(1));
  if(fromHash){input.value=fromHash;}
  apply();
})();
"#;

/// What the page says about where it comes from.
pub struct PageContext<'a> {
    pub title: &'a str,
    /// Where the documents come from (`table docs-prod`, `local run ...`).
    pub source: &'a str,
    pub levels: &'a Levels,
    pub links: Links<'a>,
    /// Each configured seller's KSeF login, from the recorded facts: a line each.
    pub credentials: &'a [crate::credentials::SellerCredential],
    /// KSeF's availability per environment, as the last poll decided it.
    pub availability: &'a [relay_domain::Availability],
}

/// The page: the KSeF login of each seller after the alert cards, then the documents, ordered
/// for attention: rejected, failed and conflicts first, then the ones under
/// way, then the accepted (newest first within each group).
pub fn render(snapshot: &Snapshot, ctx: &PageContext<'_>) -> String {
    let now = snapshot.taken_at;
    let order = |s: DocumentState| match s {
        DocumentState::Rejected => 0,
        DocumentState::Failed => 1,
        DocumentState::Conflict => 2,
        DocumentState::Queued => 3,
        DocumentState::Sent => 4,
        DocumentState::Processing => 5,
        DocumentState::Accepted => 6,
    };
    let mut docs: Vec<&StoredDocument> = snapshot.documents.iter().collect();
    docs.sort_by(|a, b| {
        order(a.record.state)
            .cmp(&order(b.record.state))
            .then(b.record.state_since.cmp(&a.record.state_since))
            .then(a.record.key.cmp(&b.record.key))
    });
    let mut html = String::with_capacity(4096 + docs.len() * 1500);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
<title>{title}</title><style>{STYLE}</style></head><body>\
<h1>{title}</h1><div class=\"meta\">{source} · generated {generated}{trunc}</div>",
        title = escape(ctx.title),
        source = escape(ctx.source),
        generated = time(now),
        trunc = if snapshot.truncated {
            " · <b>some lists were cut at their limit</b>"
        } else {
            ""
        },
    );
    html.push_str("<div class=\"cards\" id=\"states\">");
    for state in crate::snapshot::OPEN_STATES.iter().chain(crate::snapshot::DECIDED_STATES.iter()) {
        let n = snapshot.counts.get(state).copied().unwrap_or(0);
        let _ = write!(
            html,
            "<div class=\"card\" data-filter=\"{code}\" title=\"{label}\"><span class=\"badge st-{code}\">{code}</span><b>{n}</b><small>{label}</small></div>",
            code = state.code(),
            label = escape(state.label_pl()),
        );
    }
    html.push_str("</div>");
    let l = ctx.levels;
    let bad = |n: u64| if n > 0 { "card bad" } else { "card" };
    let _ = write!(
        html,
        "<div class=\"cards alerts\">\
<div class=\"{}\"><b>{}</b>past the legal deadline (no KSeF number)</div>\
<div class=\"{}\"><b>{}</b>offline, deadline within 12 h</div>\
<div class=\"{}\"><b>{}</b>open for more than 1 h</div>\
<div class=\"card\"><b>{:.0} s</b>oldest open document</div></div>",
        bad(l.past_legal_deadline),
        l.past_legal_deadline,
        bad(l.offline_nearing_deadline),
        l.offline_nearing_deadline,
        bad(l.waiting_over_one_hour),
        l.waiting_over_one_hour,
        l.oldest_open_age_seconds,
    );
    html.push_str(&crate::availability::section_html(ctx.availability));
    html.push_str(&crate::credentials::section_html(ctx.credentials, now));
    let _ = write!(
        html,
        "<label for=\"search\">Search by ERP id, trace id, KSeF number or invoice number</label><br>\
<input id=\"search\" type=\"search\" autocomplete=\"off\" placeholder=\"e.g. FV-2026-001, 4f3c…, 5265877635-20260212-…\">\
<div class=\"meta\"><span id=\"shown\">{}</span> of {} document(s) listed; counts above are for the whole store \
(open documents all, decisions of the last days).</div><div id=\"nothing\" class=\"hidden\">No document matches.</div>",
        docs.len(),
        docs.len()
    );
    html.push_str(
        "<table id=\"documents\"><thead><tr><th>state</th><th>ERP id</th><th>seller · invoice</th><th>trace id</th>\
<th>KSeF number</th><th>since</th><th>attempts</th><th>legal deadline</th></tr></thead><tbody>",
    );
    let declared: Vec<relay_domain::FailureWindow> = ctx.availability.iter().flat_map(|a| a.declared_failures().to_vec()).collect();
    for d in docs {
        html.push_str(&row(d, ctx.links, &declared, now));
    }
    let _ = writeln!(html, "</tbody></table><script>{SCRIPT}</script></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn links_are_percent_encoded() {
        let l = s3_console_links("bkt".into(), "eu-central-1".into());
        assert_eq!(
            l("inbox/5265877635/FV 1.xml").unwrap(),
            "https://eu-central-1.console.aws.amazon.com/s3/object/bkt?region=eu-central-1&prefix=inbox%2F5265877635%2FFV%201.xml"
        );
        let r = relative_links(|k: &str| k.starts_with("archive/"));
        assert_eq!(r("archive/1/a b.xml").unwrap(), "archive/1/a%20b.xml");
        assert_eq!(r("local/x.xml"), None);
    }
}
