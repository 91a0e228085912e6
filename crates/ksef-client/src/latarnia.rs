//! Latarnia (Lighthouse), the Ministry's status service for KSeF: `GET /status` and
//! `GET /messages`, read into the domain's types ([`relay_domain::availability`]), plus a light
//! probe of a public KSeF endpoint (the relay's own evidence beside Latarnia's word).
//!
//! Latarnia has no OpenAPI and no docs page (API-NOTES §1, §15): field names are assumed
//! camelCase, every field is optional here and unknown fields are ignored, an unknown status is
//! an error that names it, and a message without an id is skipped. Latarnia itself has
//! answered 502 and 504 and stayed empty during real trouble, so every way it can fail is a
//! typed [`LatarniaError`], never a panic and never "available".
//!
//! Hosts: PROD `https://api-latarnia.ksef.mf.gov.pl`, TEST `https://api-latarnia-test.ksef.mf.gov.pl`
//! (static: always TOTAL_FAILURE), none for DEMO. For a custom API root (the simulator,
//! `http://HOST/v2`) the simulator's convention `http://HOST/latarnia` is used.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use relay_domain::availability::{AvailabilityState, DeclaredCategory, DeclaredKind, DeclaredMessage, LatarniaReading};
use serde::Deserialize;

use crate::Environment;

/// Latarnia's root for `env`, or None (DEMO has no Latarnia).
pub fn latarnia_url(env: &Environment) -> Option<String> {
    match env {
        Environment::Prod => Some("https://api-latarnia.ksef.mf.gov.pl".into()),
        Environment::Test => Some("https://api-latarnia-test.ksef.mf.gov.pl".into()),
        Environment::Demo => None,
        Environment::Custom(u) => Some(format!("{}/latarnia", u.trim_end_matches('/').trim_end_matches("/v2"))),
    }
}

/// The environment's short name for keys and metrics: `PROD`, `TEST`, `DEMO`, `CUSTOM`.
pub fn environment_key(env: &Environment) -> &'static str {
    match env {
        Environment::Prod => "PROD",
        Environment::Test => "TEST",
        Environment::Demo => "DEMO",
        Environment::Custom(_) => "CUSTOM",
    }
}

/// How a Latarnia read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LatarniaError {
    /// An HTTP error status (502 and 504 seen in life).
    #[error("Latarnia answered HTTP {status}")]
    Http { status: u16 },
    /// 200 with nothing in it.
    #[error("Latarnia answered with an empty body")]
    Empty,
    /// No answer: connection, DNS, timeout.
    #[error("Latarnia did not answer: {0}")]
    Transport(String),
    /// An answer that is not the JSON expected.
    #[error("Latarnia's answer is not readable: {0}")]
    Malformed(String),
    /// A status this client does not know, verbatim.
    #[error("Latarnia declared an unknown status {0:?}")]
    UnknownStatus(String),
}

/// `GET /status`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatarniaStatus {
    pub state: AvailabilityState,
    /// Present only when the state is not AVAILABLE.
    pub messages: Vec<DeclaredMessage>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireStatus {
    status: Option<String>,
    messages: Option<Vec<WireMessage>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireMessage {
    id: Option<serde_json::Value>,
    event_id: Option<serde_json::Value>,
    category: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
    text: Option<String>,
    start: Option<String>,
    end: Option<String>,
    version: Option<serde_json::Value>,
    published: Option<String>,
}

/// An RFC 3339 instant; one without an offset is taken as UTC (UNCONFIRMED: Latarnia's date
/// format is not documented).
fn instant(s: Option<&str>) -> Option<DateTime<Utc>> {
    let s = s?.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc()))
}

fn text_of(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl WireMessage {
    fn into_domain(self) -> Option<DeclaredMessage> {
        Some(DeclaredMessage {
            id: text_of(self.id.as_ref())?,
            event_id: text_of(self.event_id.as_ref()),
            category: DeclaredCategory::parse(self.category.as_deref().unwrap_or("")),
            kind: DeclaredKind::parse(self.kind.as_deref().unwrap_or("")),
            title: self.title.unwrap_or_default(),
            text: self.text.unwrap_or_default(),
            start: instant(self.start.as_deref()),
            end: instant(self.end.as_deref()),
            version: text_of(self.version.as_ref()).and_then(|v| v.parse().ok()).unwrap_or(0),
            published: instant(self.published.as_deref()),
        })
    }
}

fn messages_of(list: Vec<WireMessage>) -> Vec<DeclaredMessage> {
    list.into_iter().filter_map(WireMessage::into_domain).collect()
}

/// Reads Latarnia. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LatarniaClient {
    base: String,
    http: reqwest::Client,
}

impl LatarniaClient {
    /// A client for Latarnia at `base` (no trailing slash needed), with `timeout` per request.
    pub fn new(base: impl Into<String>, timeout: Duration) -> LatarniaClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("ksef-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS client builds");
        LatarniaClient {
            base: base.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The environment's Latarnia, or None where there is none (DEMO).
    pub fn for_environment(env: &Environment, timeout: Duration) -> Option<LatarniaClient> {
        latarnia_url(env).map(|u| LatarniaClient::new(u, timeout))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, LatarniaError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| LatarniaError::Transport(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(LatarniaError::Http { status: status.as_u16() });
        }
        let bytes = resp.bytes().await.map_err(|e| LatarniaError::Transport(e.to_string()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(LatarniaError::Empty);
        }
        serde_json::from_slice(&bytes).map_err(|e| LatarniaError::Malformed(e.to_string()))
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<LatarniaStatus, LatarniaError> {
        let w: WireStatus = self.get_json("/status").await?;
        let raw = w.status.ok_or_else(|| LatarniaError::Malformed("no status field".into()))?;
        let state = AvailabilityState::from_latarnia(&raw).ok_or(LatarniaError::UnknownStatus(raw))?;
        Ok(LatarniaStatus {
            state,
            messages: messages_of(w.messages.unwrap_or_default()),
        })
    }

    /// `GET /messages`: every message Latarnia lists, each in its current version.
    pub async fn messages(&self) -> Result<Vec<DeclaredMessage>, LatarniaError> {
        // A bare list, or (tolerated) an object with a `messages` list.
        let v: serde_json::Value = self.get_json("/messages").await?;
        let list = match v {
            serde_json::Value::Array(_) => v,
            serde_json::Value::Object(mut o) => o.remove("messages").unwrap_or(serde_json::Value::Array(Vec::new())),
            _ => return Err(LatarniaError::Malformed("neither a list nor an object".into())),
        };
        let list: Vec<WireMessage> = serde_json::from_value(list).map_err(|e| LatarniaError::Malformed(e.to_string()))?;
        Ok(messages_of(list))
    }

    /// Both endpoints, as the domain's [`LatarniaReading`]. Messages from `/status` join those
    /// of `/messages` (the same message in both is one message).
    pub async fn read(&self) -> LatarniaReading {
        let (status, messages) = tokio::join!(self.status(), self.messages());
        let extra = status.as_ref().map(|s| s.messages.clone()).unwrap_or_default();
        let messages = messages.map(|mut ms| {
            for m in extra {
                if !ms.iter().any(|x| x.id == m.id && x.version >= m.version) {
                    ms.push(m);
                }
            }
            ms
        });
        LatarniaReading {
            status: Some(status.map(|s| s.state).map_err(|e| e.to_string())),
            messages: Some(messages.map_err(|e| e.to_string())),
        }
    }
}

/// The relay's own light probe: `GET {api_root}/security/public-key-certificates`, public (no
/// token, 60 req/s per IP), answered by KSeF itself. Ok when KSeF answers 2xx.
pub async fn probe_ksef(env: &Environment, timeout: Duration) -> Result<(), String> {
    let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
    let url = format!("{}/security/public-key-certificates", env.base_url());
    match http.get(url).send().await {
        // A 429 is KSeF answering (its limits, perhaps a fault's burst): up, not down.
        Ok(r) if r.status().is_success() || r.status().as_u16() == 429 => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err("timeout".into()),
        Err(e) if e.is_connect() => Err(format!("no connection: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_per_environment_and_none_for_demo() {
        assert_eq!(latarnia_url(&Environment::Prod).unwrap(), "https://api-latarnia.ksef.mf.gov.pl");
        assert_eq!(
            latarnia_url(&Environment::Test).unwrap(),
            "https://api-latarnia-test.ksef.mf.gov.pl"
        );
        assert_eq!(latarnia_url(&Environment::Demo), None);
        assert_eq!(
            latarnia_url(&Environment::Custom("http://127.0.0.1:9/v2".into())).unwrap(),
            "http://127.0.0.1:9/latarnia"
        );
    }

    #[test]
    fn messages_are_read_tolerantly() {
        let list: Vec<WireMessage> = serde_json::from_str(
            r#"[{"id":"K/2026/AWR/02","eventId":7,"category":"FAILURE","type":"FAILURE_START","title":"Awaria",
                 "start":"2026-04-10T08:00:00+02:00","version":"2","published":"2026-04-10T08:05:00","newField":{"x":1}},
                {"title":"no id: skipped"}]"#,
        )
        .unwrap();
        let ms = messages_of(list);
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].event_id.as_deref(), Some("7"));
        assert_eq!(ms[0].version, 2);
        assert_eq!(ms[0].start.unwrap().to_rfc3339(), "2026-04-10T06:00:00+00:00");
        assert!(ms[0].published.is_some() && ms[0].end.is_none());
    }
}
