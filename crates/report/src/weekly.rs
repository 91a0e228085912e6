//! The weekly report: what happened to the documents in one ISO week (Monday 00:00 to Monday
//! 00:00, UTC): counts by the state they reached, errors by cause, processing-time percentiles
//! (registration at intake to ACCEPTED) and the slowest documents. Written as HTML and CSV; a
//! short text summary goes to the alarm topic.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use relay_domain::{DocumentState, HistoryEvent};

use crate::snapshot::StoredDocument;
use crate::status_page::escape;

/// One ISO week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Week {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Week {
    /// The week that contains `t`.
    pub fn containing(t: DateTime<Utc>) -> Week {
        let d = t.date_naive();
        let monday = d - Duration::days(d.weekday().num_days_from_monday() as i64);
        let from = Utc.from_utc_datetime(&monday.and_hms_opt(0, 0, 0).expect("valid"));
        Week {
            from,
            to: from + Duration::days(7),
        }
    }

    /// The last complete week before `t` (what the Monday-morning schedule reports on).
    pub fn previous(t: DateTime<Utc>) -> Week {
        let this = Week::containing(t);
        Week {
            from: this.from - Duration::days(7),
            to: this.from,
        }
    }

    /// `2026-W07`.
    pub fn label(&self) -> String {
        let w = self.from.date_naive().iso_week();
        format!("{}-W{:02}", w.year(), w.week())
    }

    pub fn first_day(&self) -> NaiveDate {
        NaiveDate::from_isoywd_opt(
            self.from.date_naive().iso_week().year(),
            self.from.date_naive().iso_week().week(),
            Weekday::Mon,
        )
        .expect("valid")
    }
}

/// A cause of errors: the class and code of the failures, with one example message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub class: String,
    pub code: String,
    pub source: String,
    pub count: u64,
    pub documents: u64,
    pub example: String,
}

/// A slow document.
#[derive(Debug, Clone, PartialEq)]
pub struct Slow {
    pub document: String,
    pub erp_doc_id: String,
    pub trace_id: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WeeklyReport {
    pub week: Week,
    pub generated_at: DateTime<Utc>,
    /// Documents whose current state was reached this week, by that state.
    pub by_state: BTreeMap<DocumentState, u64>,
    pub causes: Vec<Cause>,
    /// Seconds from registration to ACCEPTED for the documents accepted this week.
    pub accepted_count: u64,
    pub percentiles: Vec<(&'static str, f64)>,
    pub slowest: Vec<Slow>,
    /// KSeF's availability per environment when the report was made, with the declared
    /// failures and maintenance that touch the week ([`WeeklyReport::with_availability`]).
    pub availability: Vec<relay_domain::Availability>,
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

impl WeeklyReport {
    /// Builds the report from the documents whose state changed in the week (any others are
    /// ignored).
    pub fn build(docs: &[StoredDocument], week: Week, generated_at: DateTime<Utc>) -> WeeklyReport {
        let in_week = |t: DateTime<Utc>| t >= week.from && t < week.to;
        let mut by_state: BTreeMap<DocumentState, u64> = DocumentState::ALL.iter().map(|s| (*s, 0)).collect();
        let mut causes: BTreeMap<(String, String), Cause> = BTreeMap::new();
        let mut times = Vec::new();
        let mut slowest = Vec::new();
        for d in docs {
            let r = &d.record;
            if in_week(r.state_since) {
                *by_state.entry(r.state).or_default() += 1;
            }
            let mut seen: Vec<(String, String)> = Vec::new();
            for e in d.history.iter().filter(|e| in_week(e.at)) {
                if let HistoryEvent::Error { failure: f } = &e.event {
                    let key = (f.class.name().to_owned(), f.code.clone().unwrap_or_else(|| "-".into()));
                    let c = causes.entry(key.clone()).or_insert_with(|| Cause {
                        class: key.0.clone(),
                        code: key.1.clone(),
                        source: f.source.to_string(),
                        count: 0,
                        documents: 0,
                        example: f.message.clone(),
                    });
                    c.count += 1;
                    if !seen.contains(&key) {
                        c.documents += 1;
                        seen.push(key);
                    }
                }
            }
            if r.state == DocumentState::Accepted && in_week(r.state_since) {
                let secs = (r.state_since - r.created_at).num_milliseconds() as f64 / 1000.0;
                times.push(secs);
                slowest.push(Slow {
                    document: r.key.to_string(),
                    erp_doc_id: r.erp_document_id.to_string(),
                    trace_id: r.trace_id.to_string(),
                    seconds: secs,
                });
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let percentiles = vec![
            ("p50", percentile(&times, 50.0)),
            ("p90", percentile(&times, 90.0)),
            ("p95", percentile(&times, 95.0)),
            ("p99", percentile(&times, 99.0)),
            ("max", times.last().copied().unwrap_or(0.0)),
        ];
        slowest.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then_with(|| a.document.cmp(&b.document)));
        slowest.truncate(10);
        let mut causes: Vec<Cause> = causes.into_values().collect();
        causes.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.class.cmp(&b.class))
                .then_with(|| a.code.cmp(&b.code))
        });
        WeeklyReport {
            week,
            generated_at,
            by_state,
            causes,
            accepted_count: times.len() as u64,
            percentiles,
            slowest,
            availability: Vec::new(),
        }
    }

    /// Adds KSeF's availability (the states the poll last decided).
    pub fn with_availability(mut self, availability: Vec<relay_domain::Availability>) -> WeeklyReport {
        self.availability = availability;
        self
    }

    /// One line per environment: its state now and the declared windows of the week.
    fn availability_lines(&self) -> Vec<String> {
        self.availability
            .iter()
            .map(|a| {
                let windows = crate::availability::windows_in(a, self.week.from, self.week.to);
                let listed: Vec<String> = windows
                    .iter()
                    .map(|w| {
                        let end = w.end.map_or("not ended".to_owned(), |e| e.format("%Y-%m-%d %H:%M").to_string());
                        format!("{} {} to {}", w.declaring_message(), w.start.format("%Y-%m-%d %H:%M"), end)
                    })
                    .collect();
                format!(
                    "KSeF {}: {} since {} ({}); declared this week: {}",
                    a.environment,
                    a.state,
                    a.since.format("%Y-%m-%d %H:%M UTC"),
                    a.source,
                    if listed.is_empty() { "none".to_owned() } else { listed.join("; ") }
                )
            })
            .collect()
    }

    /// A few lines for the alarm topic (SNS e-mail bodies are plain text).
    pub fn summary(&self, html_location: &str) -> String {
        let mut s = format!("ksef-relay weekly report {}\n", self.week.label());
        let counts: Vec<String> = self
            .by_state
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(st, n)| format!("{} {n}", st.code()))
            .collect();
        let _ = writeln!(
            s,
            "Documents that reached a state this week: {}",
            if counts.is_empty() { "none".to_owned() } else { counts.join(", ") }
        );
        let p = |name: &str| self.percentiles.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or(0.0);
        let _ = writeln!(
            s,
            "Intake to ACCEPTED ({} documents): p50 {:.1} s, p95 {:.1} s, max {:.1} s",
            self.accepted_count,
            p("p50"),
            p("p95"),
            p("max")
        );
        let top: Vec<String> = self
            .causes
            .iter()
            .take(3)
            .map(|c| format!("{} {} x{}", c.class, c.code, c.count))
            .collect();
        let _ = writeln!(
            s,
            "Top error causes: {}",
            if top.is_empty() { "none".to_owned() } else { top.join("; ") }
        );
        let availability = self.availability_lines();
        if availability.is_empty() {
            let _ = writeln!(s, "KSeF availability: unknown (no poll in the last 30 minutes)");
        }
        for line in availability {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "Full report: {html_location}");
        s
    }

    pub fn csv(&self) -> String {
        let mut s = String::from("section,name,value,detail\n");
        let mut row = |section: &str, name: &str, value: String, detail: &str| {
            let _ = writeln!(
                s,
                "{},{},{},{}",
                csv_cell(section),
                csv_cell(name),
                csv_cell(&value),
                csv_cell(detail)
            );
        };
        row("week", &self.week.label(), self.week.from.to_rfc3339(), &self.week.to.to_rfc3339());
        for (st, n) in &self.by_state {
            row("state", st.code(), n.to_string(), st.label_pl());
        }
        for c in &self.causes {
            row(
                "error",
                &format!("{} {}", c.class, c.code),
                c.count.to_string(),
                &format!("{} document(s); {}: {}", c.documents, c.source, c.example),
            );
        }
        for (name, v) in &self.percentiles {
            row(
                "processing_seconds",
                name,
                format!("{v:.3}"),
                &format!("{} accepted", self.accepted_count),
            );
        }
        for a in &self.availability {
            row("availability", &a.environment, a.state.as_str().to_owned(), &a.source.to_string());
            for w in crate::availability::windows_in(a, self.week.from, self.week.to) {
                let end = w.end.map(|e| e.to_rfc3339()).unwrap_or_default();
                row("declared_window", w.declaring_message(), w.start.to_rfc3339(), &end);
            }
        }
        for sl in &self.slowest {
            row(
                "slowest",
                &sl.document,
                format!("{:.3}", sl.seconds),
                &format!("erp {} trace {}", sl.erp_doc_id, sl.trace_id),
            );
        }
        s
    }

    pub fn html(&self) -> String {
        let mut h = format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ksef-relay weekly report {label}</title>\
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d232a}}table{{border-collapse:collapse;margin:.5rem 0 1.2rem}}\
th,td{{border:1px solid #d8dee4;padding:.3rem .6rem;text-align:left;vertical-align:top}}th{{background:#f0f3f6}}td.n{{text-align:right}}</style>\
</head><body><h1>ksef-relay weekly report {label}</h1><p>{from} to {to} (UTC) · generated {gen}</p>",
            label = escape(&self.week.label()),
            from = self.week.from.format("%Y-%m-%d %H:%M"),
            to = self.week.to.format("%Y-%m-%d %H:%M"),
            gen = self.generated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        );
        h.push_str("<h2>Documents by the state they reached this week</h2><table><tr><th>state</th><th>label</th><th>documents</th></tr>");
        for (st, n) in &self.by_state {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{n}</td></tr>",
                st.code(),
                escape(st.label_pl())
            );
        }
        h.push_str("</table><h2>Errors by cause</h2>");
        if self.causes.is_empty() {
            h.push_str("<p>No errors this week.</p>");
        } else {
            h.push_str(
                "<table><tr><th>class</th><th>code</th><th>source</th><th>errors</th><th>documents</th><th>example message</th></tr>",
            );
            for c in &self.causes {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    escape(&c.class),
                    escape(&c.code),
                    escape(&c.source),
                    c.count,
                    c.documents,
                    escape(&c.example)
                );
            }
            h.push_str("</table>");
        }
        let _ = write!(
            h,
            "<h2>Processing time, intake to ACCEPTED ({} documents)</h2><table><tr>",
            self.accepted_count
        );
        for (name, _) in &self.percentiles {
            let _ = write!(h, "<th>{name}</th>");
        }
        h.push_str("</tr><tr>");
        for (_, v) in &self.percentiles {
            let _ = write!(h, "<td class=\"n\">{v:.1} s</td>");
        }
        h.push_str("</tr></table><h2>Slowest documents</h2>");
        if self.slowest.is_empty() {
            h.push_str("<p>None accepted this week.</p>");
        } else {
            h.push_str("<table><tr><th>document</th><th>ERP id</th><th>trace id</th><th>seconds</th></tr>");
            for sl in &self.slowest {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"n\">{:.1}</td></tr>",
                    escape(&sl.document),
                    escape(&sl.erp_doc_id),
                    escape(&sl.trace_id),
                    sl.seconds
                );
            }
            h.push_str("</table>");
        }
        h.push_str("<h2>KSeF availability</h2><ul id=\"availability\">");
        let lines = self.availability_lines();
        if lines.is_empty() {
            h.push_str("<li>unknown: no availability poll in the last 30 minutes</li>");
        }
        for line in lines {
            let _ = write!(h, "<li>{}</li>", escape(&line));
        }
        h.push_str("</ul>");
        h.push_str("</body></html>\n");
        h
    }
}

/// One CSV cell (RFC 4180 quoting). A cell a spreadsheet would run as a formula (`=`, `+`, `-`,
/// `@`, tab, CR) is prefixed with `'`: the messages come from documents and KSeF, not from us.
pub fn csv_cell(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_are_iso_weeks() {
        let t = Utc.with_ymd_and_hms(2026, 2, 12, 10, 0, 0).unwrap(); // Thursday
        let w = Week::containing(t);
        assert_eq!(w.from.to_rfc3339(), "2026-02-09T00:00:00+00:00");
        assert_eq!(w.label(), "2026-W07");
        assert_eq!(Week::previous(t).label(), "2026-W06");
        assert_eq!(
            Week::containing(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()).label(),
            "2026-W53"
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("-1"), "'-1");
    }
}
