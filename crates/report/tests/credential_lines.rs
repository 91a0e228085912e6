//! Each seller's KSeF login on the status page and in `CredentialDaysLeft`, from the facts the
//! KSeF-calling functions recorded in the shared cache (the report function reads no secret):
//! the words for every urgency (fine, a token before its end, 30 and 7 days, expired, unknown),
//! the EMF lines the alarms read, and the page's section.

use chrono::{DateTime, TimeZone, Utc};
use relay_domain::credential_facts::{cache_name, CredentialFacts, LoginKind};
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::{Expect, SharedCache};
use relay_domain::Nip;
use relay_report::credentials::{self, SellerCredential, Urgency};

fn nip(s: &str) -> Nip {
    Nip::parse(s).unwrap()
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn certificate(not_after: DateTime<Utc>, read_at: DateTime<Utc>) -> CredentialFacts {
    CredentialFacts {
        kind: LoginKind::Certificate,
        subject: Some("CN=Firma <Sp. z o.o.>,2.5.4.97=VATPL-5265877635".into()),
        key_type: Some("EC P-256".into()),
        not_after,
        offline_not_after: None,
        read_at,
    }
}

fn token(read_at: DateTime<Utc>) -> CredentialFacts {
    CredentialFacts {
        kind: LoginKind::Token,
        subject: None,
        key_type: None,
        not_after: ksef_token_end(),
        offline_not_after: None,
        read_at,
    }
}

/// The end of token logins as the client records it (31.12.2026, midnight in Poland).
fn ksef_token_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap()
}

async fn record(cache: &MemorySharedCache, seller: &Nip, facts: &CredentialFacts) {
    let expires = facts.read_at + relay_domain::credential_facts::retention();
    cache
        .put(&cache_name(seller), facts.to_json(), expires, Expect::Absent, facts.read_at)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_seller_gets_a_line_and_a_metric_from_its_recorded_facts() {
    let now = at(2026, 11, 28);
    let read = at(2026, 11, 2); // nearly four weeks ago: a quiet seller
    let cache = MemorySharedCache::new();
    let (fine, warn, critical, expired, on_token, unknown, corrupt) = (
        nip("5265877635"),
        nip("9999999999"),
        nip("1111111111"),
        nip("7251801126"),
        nip("5213003700"),
        nip("1234563218"),
        nip("7010000005"),
    );
    record(&cache, &fine, &certificate(at(2027, 6, 1), read)).await;
    record(&cache, &warn, &certificate(at(2026, 12, 28), read)).await;
    record(&cache, &critical, &certificate(at(2026, 12, 3), read)).await;
    record(&cache, &expired, &certificate(at(2026, 11, 25), read)).await;
    record(&cache, &on_token, &token(read)).await;
    cache
        .put(
            &cache_name(&corrupt),
            "{not facts".into(),
            now + chrono::Duration::days(1),
            Expect::Absent,
            now,
        )
        .await
        .unwrap();
    let sellers = vec![
        fine.clone(),
        warn.clone(),
        critical.clone(),
        expired.clone(),
        on_token.clone(),
        unknown.clone(),
        corrupt.clone(),
    ];
    let creds = credentials::read(&cache, &sellers, now).await.unwrap();
    assert_eq!(creds.len(), 7, "a line for every configured seller");

    let by = |n: &Nip| creds.iter().find(|c| &c.seller == n).unwrap();
    let said: Vec<(Urgency, String)> = sellers.iter().map(|n| (by(n).urgency(now), by(n).message(now))).collect();
    let expected: Vec<(Urgency, &str)> = vec![
        (Urgency::Fine, "185 day(s) left"),
        (
            Urgency::Warn,
            "WARNING: 30 day(s) left (the certificate expires): enrol a new certificate and rotate the secret (runbook: \"Rotating a certificate or a token\")",
        ),
        (
            Urgency::Critical,
            "CRITICAL: 5 day(s) left (the certificate expires): enrol a new certificate and rotate the secret (runbook: \"Rotating a certificate or a token\") now",
        ),
        (
            Urgency::Expired,
            "EXPIRED: the certificate expires passed 3 day(s) ago; logins fail and the seller is parked: enrol a new certificate and rotate the secret (runbook: \"Rotating a certificate or a token\") now",
        ),
        (
            Urgency::Notice,
            "33 day(s) until KSeF token logins end on 31.12.2026: move this seller to a KSeF certificate (runbook: \"Moving a seller from a token to a certificate\")",
        ),
        (
            Urgency::Unknown,
            "expiry unknown: no secret read has recorded this seller's login (it has not sent since the facts were introduced or for over a year); no CredentialDaysLeft for it until it sends",
        ),
        (
            Urgency::Unknown,
            "expiry unknown: no secret read has recorded this seller's login (it has not sent since the facts were introduced or for over a year); no CredentialDaysLeft for it until it sends",
        ),
    ];
    let expected: Vec<(Urgency, String)> = expected.into_iter().map(|(u, m)| (u, m.to_owned())).collect();
    assert_eq!(said, expected);

    // The token seller once December is well under way: inside the 30 and then the 7 days.
    let token_line = by(&on_token);
    assert_eq!(token_line.urgency(at(2026, 12, 10)), Urgency::Warn);
    assert!(token_line
        .message(at(2026, 12, 10))
        .starts_with("WARNING: 21 day(s) left (KSeF token logins end on 31.12.2026)"));
    assert_eq!(token_line.urgency(at(2026, 12, 26)), Urgency::Critical);
    assert_eq!(token_line.urgency(at(2027, 1, 1)), Urgency::Expired);

    // The metric the 30- and 7-day alarms read: one line per seller with facts, none for the
    // unknown ones; valid EMF, the minimum over sellers without dimensions, and by SellerNip.
    let lines: Vec<serde_json::Value> = creds
        .iter()
        .filter_map(|c| c.metric_line(now))
        .map(|l| {
            let text = l.to_line().unwrap();
            relay_observe::emf::check_line(&text).unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    let got: Vec<(String, f64, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["SellerNip"].as_str().unwrap().to_owned(),
                l["CredentialDaysLeft"].as_f64().unwrap(),
                l["CredentialKind"].as_str().unwrap().to_owned(),
                l["NotAfter"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (fine.to_string(), 185.0, "certificate".into(), "2027-06-01T12:00:00+00:00".into()),
            (warn.to_string(), 30.0, "certificate".into(), "2026-12-28T12:00:00+00:00".into()),
            (critical.to_string(), 5.0, "certificate".into(), "2026-12-03T12:00:00+00:00".into()),
            (expired.to_string(), -3.0, "certificate".into(), "2026-11-25T12:00:00+00:00".into()),
            (on_token.to_string(), 33.0, "token".into(), "2026-12-31T23:00:00+00:00".into()),
        ]
    );
    let dimensions: Vec<&serde_json::Value> = lines[0]["_aws"]["CloudWatchMetrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["Dimensions"])
        .collect();
    assert_eq!(dimensions, vec![&serde_json::json!([[]]), &serde_json::json!([["SellerNip"]])]);

    // The page's section: most urgent first, every value escaped, a row per seller.
    let html = credentials::section_html(&creds, now);
    let order: Vec<&str> = html.match_indices("data-seller=\"").map(|(i, _)| &html[i + 13..i + 23]).collect();
    assert_eq!(
        order,
        vec![
            expired.as_str(),
            critical.as_str(),
            warn.as_str(),
            unknown.as_str(),
            corrupt.as_str(),
            on_token.as_str(),
            fine.as_str()
        ]
    );
    assert!(html.contains(&format!(
        "<tr class=\"cred-bad\" data-seller=\"{expired}\"><td>{expired}</td><td>certificate</td>\
<td>CN=Firma &lt;Sp. z o.o.&gt;,2.5.4.97=VATPL-5265877635 · EC P-256</td><td>2026-11-25 12:00 UTC</td><td>-3</td>\
<td>2026-11-02 12:00 UTC</td><td>EXPIRED: "
    )));
    assert!(html.contains(&format!(
        "<tr class=\"cred-warn\" data-seller=\"{on_token}\"><td>{on_token}</td><td>token</td><td>-</td>\
<td>2026-12-31 23:00 UTC</td><td>33</td><td>2026-11-02 12:00 UTC</td><td>33 day(s) until KSeF token logins end"
    )));
    assert!(html.contains(&format!(
        "<tr class=\"cred-warn\" data-seller=\"{unknown}\"><td>{unknown}</td><td>?</td><td>-</td><td>-</td><td>-</td><td>never</td>"
    )));
    assert!(html.contains(&format!("<tr class=\"cred-ok\" data-seller=\"{fine}\">")));
}

#[test]
fn no_sellers_still_shows_the_section() {
    let html = credentials::section_html(&[], at(2026, 11, 28));
    assert!(html.contains("no sellers configured"));
    let none: &[SellerCredential] = &[];
    assert!(none.is_empty());
}
