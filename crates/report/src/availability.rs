//! KSeF's availability on the status page and in the weekly report: the state the sweeper's
//! poll last decided per environment (`relay_domain::availability`), read from the shared cache
//! (by its full key: the Query the report function is granted), never decided here.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use relay_domain::availability::{cache_name, Availability, FailureWindow, ENVIRONMENTS};
use relay_domain::ports::{SharedCache, StoreError};

use crate::status_page::escape;

/// Every environment's live availability (those a poll wrote in the last 30 minutes).
pub async fn read(cache: &dyn SharedCache, now: DateTime<Utc>) -> Result<Vec<Availability>, StoreError> {
    let mut out = Vec::new();
    for env in ENVIRONMENTS {
        if let Some(e) = cache.get(&cache_name(env), now).await? {
            if let Ok(a) = serde_json::from_str::<Availability>(&e.value) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn window(w: &FailureWindow) -> String {
    let end = match (w.end, w.end_declared) {
        (Some(e), true) => time(e),
        (Some(e), false) => format!("{} (announced)", time(e)),
        (None, _) => "not ended".to_owned(),
    };
    let category = match &w.category {
        relay_domain::availability::DeclaredCategory::Other(o) => o.clone(),
        c => serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    };
    format!("{category} {} – {end} ({})", time(w.start), w.declaring_message())
}

/// The windows that touch `[from, to)`.
pub fn windows_in(a: &Availability, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<&FailureWindow> {
    a.declared_failures()
        .iter()
        .filter(|w| w.start < to && w.end.is_none_or(|e| e >= from))
        .collect()
}

/// The status page's section: one row per environment.
pub fn section_html(states: &[Availability]) -> String {
    let mut html = String::from(
        "<h2>KSeF availability</h2><table id=\"availability\"><thead><tr><th>environment</th><th>state</th><th>since</th>\
<th>source</th><th>checked</th><th>declared failures and maintenance</th></tr></thead><tbody>",
    );
    if states.is_empty() {
        html.push_str(
            "<tr><td colspan=\"6\">unknown: no availability poll in the last 30 minutes (the sweeper polls when KSEF_ENV is set)</td></tr>",
        );
    }
    for a in states {
        let windows: Vec<String> = a.declared_failures().iter().rev().take(5).map(window).collect();
        let latarnia = match a.latarnia_answered {
            Some(false) => " · Latarnia did not answer",
            None => " · no Latarnia for this environment",
            Some(true) => "",
        };
        let _ = write!(
            html,
            "<tr class=\"{cls}\" data-availability=\"{state}\"><td>{env}</td><td><b>{state}</b>{held}</td><td>{since}</td><td>{source}</td>\
<td>{checked}{latarnia}</td><td>{windows}</td></tr>",
            cls = if a.holds_sending() { "bad" } else { "ok" },
            state = a.state.as_str(),
            held = if a.holds_sending() { " · sending held" } else { "" },
            env = escape(&a.environment),
            since = time(a.since),
            source = escape(&a.source.to_string()),
            checked = time(a.checked_at),
            windows = if windows.is_empty() { "none".to_owned() } else { escape(&windows.join("; ")) },
        );
    }
    html.push_str("</tbody></table>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_domain::availability::{AvailabilityState, DeclaredCategory, DeclaredKind, DeclaredMessage, LatarniaReading, OwnEvidence};
    use relay_domain::memory::MemorySharedCache;
    use relay_domain::ports::Expect;

    fn declared(now: DateTime<Utc>) -> Availability {
        let m = DeclaredMessage {
            id: "K/2026/AWR/02".into(),
            event_id: Some("E".into()),
            category: DeclaredCategory::Failure,
            kind: DeclaredKind::FailureStart,
            title: "<b>Awaria</b>".into(),
            text: String::new(),
            start: Some(now - chrono::Duration::hours(1)),
            end: None,
            version: 1,
            published: None,
        };
        let reading = LatarniaReading {
            status: Some(Ok(AvailabilityState::Failure)),
            messages: Some(Ok(vec![m])),
        };
        Availability::decide("PROD", None, &reading, &OwnEvidence::default(), now)
    }

    #[tokio::test]
    async fn the_section_shows_the_shared_state_and_its_windows_or_says_it_is_unknown() {
        let now = Utc::now();
        let cache = MemorySharedCache::new();
        assert!(read(&cache, now).await.unwrap().is_empty());
        assert!(section_html(&[]).contains("unknown: no availability poll"));
        let a = declared(now);
        cache
            .put(
                &cache_name("PROD"),
                serde_json::to_string(&a).unwrap(),
                now + chrono::Duration::minutes(30),
                Expect::Absent,
                now,
            )
            .await
            .unwrap();
        let states = read(&cache, now).await.unwrap();
        assert_eq!(states, vec![a.clone()]);
        let html = section_html(&states);
        assert!(html.contains("data-availability=\"FAILURE\""), "{html}");
        assert!(
            html.contains("sending held") && html.contains("Latarnia message K/2026/AWR/02"),
            "{html}"
        );
        assert!(html.contains("FAILURE ") && html.contains("not ended"), "{html}");
        assert_eq!(windows_in(&a, now - chrono::Duration::days(7), now).len(), 1);
        assert!(
            windows_in(&a, now + chrono::Duration::hours(1), now + chrono::Duration::days(7)).len() == 1,
            "still open"
        );
    }

    #[test]
    fn the_weekly_report_names_the_state_and_the_weeks_declared_failures() {
        let now = Utc::now();
        let week = crate::weekly::Week::containing(now);
        let report = crate::weekly::WeeklyReport::build(&[], week, now);
        assert!(report.summary("x").contains("KSeF availability: unknown"));
        let report = report.with_availability(vec![declared(now)]);
        let summary = report.summary("x");
        assert!(
            summary.contains("KSeF PROD: FAILURE since") && summary.contains("declared this week: K/2026/AWR/02"),
            "{summary}"
        );
        assert!(
            report.html().contains("<ul id=\"availability\"><li>KSeF PROD: FAILURE"),
            "{}",
            report.html()
        );
        assert!(report.csv().contains("availability,PROD,FAILURE,"), "{}", report.csv());
    }
}
