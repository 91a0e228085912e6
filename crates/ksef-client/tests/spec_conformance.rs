//! Every answer the simulator gives, checked against the official spec
//! (data/ksef/openapi/open-api.json): the status must be one the operation declares, the
//! content type one it declares for that status, and a JSON body must validate against the
//! declared schema. OpenAPI 3.0 is translated to JSON Schema 2020-12 on the way: `nullable`
//! becomes a union with null, and `#/components/schemas/...` references resolve in place.
//!
//! The flows below drive every operation the simulator implements, including its error
//! answers (400, 401, 429), and the test fails if any implemented operation went unexercised.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use ksef_client::{BatchArchive, ClientLimits, KsefClient, SendOptions};
use ksef_sim::{Group, Limit, RateLimits, SimConfig};
use serde_json::{json, Map, Value};

fn spec() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef/openapi/open-api.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// OpenAPI 3.0 schema → JSON Schema 2020-12.
fn translate(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(translate).collect()),
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, val) in o {
                // Annotations and vendor extensions do not constrain anything.
                if matches!(
                    k.as_str(),
                    "nullable" | "example" | "description" | "deprecated" | "readOnly" | "writeOnly" | "xml"
                ) || k.starts_with("x-")
                {
                    continue;
                }
                let child = if k == "properties" {
                    // Property names are data here, not keywords.
                    Value::Object(val.as_object().unwrap().iter().map(|(n, s)| (n.clone(), translate(s))).collect())
                } else {
                    translate(val)
                };
                out.insert(k.clone(), child);
            }
            if o.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    e.push(Value::Null);
                }
                match out.get("type").cloned() {
                    Some(Value::String(t)) => {
                        out.insert("type".into(), json!([t, "null"]));
                    }
                    _ => return json!({"anyOf": [Value::Object(out), {"type": "null"}]}),
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

struct Checker {
    spec: Value,
    components: Value,
}

impl Checker {
    fn new() -> Checker {
        let spec = spec();
        let components = json!({"schemas": translate(&spec["components"]["schemas"])});
        Checker { spec, components }
    }

    /// Checks one recorded answer; Err says what is wrong.
    fn check(&self, e: &ksef_sim::Exchange) -> Result<(), String> {
        let op = &self.spec["paths"][&e.route][e.method.to_lowercase()];
        if op.is_null() {
            return Err(format!("{} {} is not in the spec", e.method, e.route));
        }
        let resp = &op["responses"][e.status.to_string()];
        if resp.is_null() {
            return Err(format!(
                "{} {} answered {}, which the spec does not declare",
                e.method, e.route, e.status
            ));
        }
        let content = &resp["content"];
        if content.is_null() {
            return if e.body.is_empty() {
                Ok(())
            } else {
                Err(format!("{} {} {}: the spec declares no body", e.method, e.route, e.status))
            };
        }
        let ct = e
            .content_type
            .as_deref()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let media = &content[&ct];
        if media.is_null() {
            return Err(format!("{} {} {}: content type {ct:?} not declared", e.method, e.route, e.status));
        }
        if !ct.contains("json") {
            return Ok(());
        }
        let mut schema = translate(&media["schema"]);
        schema.as_object_mut().unwrap().insert("components".into(), self.components.clone());
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|err| format!("schema for {} {}: {err}", e.method, e.route))?;
        let body: Value =
            serde_json::from_slice(&e.body).map_err(|err| format!("{} {} {}: not JSON: {err}", e.method, e.route, e.status))?;
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|err| format!("{} at {}", err, err.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} {} {}: {}\nbody: {body}",
                e.method,
                e.route,
                e.status,
                errors.join("; ")
            ))
        }
    }
}

#[test]
fn the_checker_rejects_what_the_spec_forbids() {
    let c = Checker::new();
    let ex = |status: u16, body: Value| ksef_sim::Exchange {
        method: "POST".into(),
        route: "/auth/challenge".into(),
        status,
        content_type: Some("application/json".into()),
        body: serde_json::to_vec(&body).unwrap(),
    };
    let good = json!({"challenge": "20250514-CR-226FB7B000-3ACF9BE4C0-10", "timestamp": "2025-07-11T12:23:56.0154302+00:00", "timestampMs": 1752236636015i64, "clientIp": "127.0.0.1"});
    c.check(&ex(200, good.clone())).unwrap();
    let mut short = good.clone();
    short["challenge"] = json!("too-short");
    assert!(c.check(&ex(200, short)).is_err());
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("timestampMs");
    assert!(c.check(&ex(200, missing)).is_err());
    assert!(c.check(&ex(201, good)).is_err(), "undeclared status");
    // nullable: a null where the spec allows it passes, elsewhere it fails.
    let inv = |ksef: Value| {
        ksef_sim::Exchange {
        method: "GET".into(),
        route: "/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}".into(),
        status: 200,
        content_type: Some("application/json".into()),
        body: serde_json::to_vec(&json!({"ordinalNumber": 1, "referenceNumber": "20250625-EE-319D7EE000-B67F415CDC-2C", "invoiceHash": "mkht+3m5trnfxlTYhq3QFn74LkEO69MFNlsMAkCDSPA=", "invoicingDate": "2026-03-01T12:00:00Z", "ksefNumber": ksef, "status": {"code": 100, "description": "x"}})).unwrap(),
    }
    };
    c.check(&inv(Value::Null)).unwrap();
    assert!(c.check(&inv(json!("not-a-ksef-number"))).is_err());
}

/// An invoice status, waiting out 429s as their Retry-After says.
async fn status_waiting_out_429(c: &KsefClient, session: &str, invoice: &str) -> ksef_client::InvoiceStatus {
    for _ in 0..10 {
        match c.invoice_status(session, invoice).await {
            Ok(st) => return st,
            Err(f) => match f.class {
                relay_domain::ErrorClass::RateLimited { until } => {
                    let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait + Duration::from_millis(50)).await;
                }
                _ => panic!("{f}"),
            },
        }
    }
    panic!("still rate limited after 10 waits");
}

#[tokio::test]
async fn every_simulator_answer_matches_the_official_spec() {
    // A tight invoiceStatus limit so a 429 is part of the record.
    let limits = RateLimits::production().with(Group::InvoiceStatus, Limit::new(2, 1000, 10000));
    let sim = ksef_sim::start(SimConfig {
        record_exchanges: true,
        rate_limits: limits,
        time_scale: 1.0,
        ..sim_config()
    })
    .await;
    let c = KsefClient::new(
        ksef_client::ClientConfig {
            limits: ClientLimits::disabled(),
            ..client_config(&sim)
        },
        Some(credentials()),
    )
    .unwrap();

    // Online: auth, open, send (good and bad), statuses, lists, UPOs, close, errors.
    let s = c.open_online_session().await.unwrap();
    let good = c.send_invoice(&s, &invoice("SPEC/1"), &SendOptions::default()).await.unwrap();
    let bad = c.send_invoice(&s, b"<Faktura/>", &SendOptions::default()).await.unwrap();
    let dup = c.send_invoice(&s, &invoice("SPEC/1"), &SendOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The third request within a second meets the 429 on purpose; then we wait as told.
    let mut statuses_seen = Vec::new();
    for r in [&good, &bad, &dup, &good] {
        statuses_seen.push(status_waiting_out_429(&c, &s.reference, &r.reference).await);
    }
    let st = statuses_seen.pop().unwrap();
    c.session_invoices(&s.reference).await.unwrap();
    c.list_sessions(true, chrono::Utc::now() - chrono::Duration::minutes(5))
        .await
        .unwrap();
    c.failed_session_invoices(&s.reference).await.unwrap();
    c.invoice_upo(&s.reference, &good.reference).await.unwrap();
    c.invoice_upo_by_ksef_number(&s.reference, st.ksef_number.as_deref().unwrap())
        .await
        .unwrap();
    c.download_upo(st.upo_download_url.as_deref().unwrap()).await.unwrap();
    let _ = c.invoice_upo(&s.reference, &bad.reference).await.unwrap_err(); // 400 21178
    c.close_online_session(&s.reference).await.unwrap();
    let _ = c.close_online_session(&s.reference).await.unwrap_err(); // 400 21180
    let ss = c.wait_for_session(&s.reference, Duration::from_millis(100), WAIT).await.unwrap();
    c.session_upo(&s.reference, &ss.upo.unwrap().pages[0].reference_number)
        .await
        .unwrap();
    // 401 then refresh.
    sim.expire_access_tokens();
    c.session_status(&s.reference).await.unwrap();

    // Batch.
    let archive = BatchArchive::zip(&[("a.xml".to_owned(), invoice("SPEC/B1")), ("b.xml".to_owned(), invoice("SPEC/B2"))]).unwrap();
    let b = c.open_batch_session(&archive, 1 << 20, false).await.unwrap();
    c.upload_batch_parts(&b).await.unwrap();
    c.close_batch_session(&b.reference).await.unwrap();
    c.wait_for_session(&b.reference, Duration::from_millis(100), WAIT).await.unwrap();

    // Certificate login (XAdES).
    let key = ksef_client::SigningKey::EcP256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng));
    let identity =
        ksef_client::SigningIdentity::self_signed("CN=Spec,2.5.4.97=VATPL-9999999999,C=PL", key, Duration::from_secs(600)).unwrap();
    let creds = ksef_client::Credentials::Certificate {
        context: relay_domain::Nip::parse("9999999999").unwrap(),
        identity,
        subject: ksef_client::SubjectIdentifierType::CertificateSubject,
    };
    KsefClient::new(
        ksef_client::ClientConfig {
            limits: ClientLimits::disabled(),
            ..client_config(&sim)
        },
        Some(creds),
    )
    .unwrap()
    .authenticate()
    .await
    .unwrap();

    // Errors in the problem+json form: a 400 (21180) and a 429.
    let pd = KsefClient::new(
        ksef_client::ClientConfig {
            limits: ClientLimits::disabled(),
            problem_details: true,
            ..client_config(&sim)
        },
        Some(credentials()),
    )
    .unwrap();
    let f = pd.close_online_session(&s.reference).await.unwrap_err();
    assert_eq!(
        (f.class.clone(), f.code.as_deref()),
        (relay_domain::ErrorClass::NeedsNewSession, Some("21180")),
        "{f}"
    );
    let mut limited = false;
    for _ in 0..20 {
        if let Err(f) = pd.invoice_status(&s.reference, &good.reference).await {
            assert!(matches!(f.class, relay_domain::ErrorClass::RateLimited { .. }), "{f}");
            limited = true;
            break;
        }
    }
    assert!(limited, "the problem+json 429 was exercised");

    let checker = Checker::new();
    let exchanges = sim.exchanges();
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    let mut forms = BTreeSet::new();
    for e in exchanges.iter().filter(|e| !e.route.starts_with("/storage/")) {
        seen.insert(format!("{} {}", e.method, e.route));
        statuses.insert(e.status);
        forms.insert((e.status, e.content_type.clone().unwrap_or_default()));
        if let Err(msg) = checker.check(e) {
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "{} answers break the spec:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for op in [
        "GET /security/public-key-certificates",
        "POST /auth/challenge",
        "POST /auth/ksef-token",
        "POST /auth/xades-signature",
        "GET /auth/{referenceNumber}",
        "POST /auth/token/redeem",
        "POST /auth/token/refresh",
        "POST /sessions/online",
        "POST /sessions/online/{referenceNumber}/invoices",
        "POST /sessions/online/{referenceNumber}/close",
        "POST /sessions/batch",
        "POST /sessions/batch/{referenceNumber}/close",
        "GET /sessions",
        "GET /sessions/{referenceNumber}",
        "GET /sessions/{referenceNumber}/invoices",
        "GET /sessions/{referenceNumber}/invoices/failed",
        "GET /sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}",
        "GET /sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}/upo",
        "GET /sessions/{referenceNumber}/invoices/ksef/{ksefNumber}/upo",
        "GET /sessions/{referenceNumber}/upo/{upoReferenceNumber}",
    ] {
        assert!(seen.contains(op), "{op} was not exercised; seen: {seen:?}");
    }
    for status in [200, 201, 202, 204, 400, 401, 429] {
        assert!(statuses.contains(&status), "no {status} answer was checked; seen {statuses:?}");
    }
    for (status, ct) in [
        (400, "application/json"),
        (400, "application/problem+json"),
        (429, "application/json"),
        (429, "application/problem+json"),
    ] {
        assert!(
            forms.contains(&(status, ct.to_owned())),
            "no {status} {ct} answer was checked; seen {forms:?}"
        );
    }
}
