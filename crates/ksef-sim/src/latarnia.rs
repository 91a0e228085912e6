//! Latarnia, the Ministry's status service, under `/latarnia` on the simulator's port:
//! `GET /latarnia/status` and `GET /latarnia/messages`, in the shapes API-NOTES §1 and §15
//! describe (camelCase; `/status` carries messages only when the status is not AVAILABLE; no
//! "since" filter). Outside the KSeF middleware: KSeF's faults and limits do not touch it, and
//! its own faults (a 502 or 504, an empty answer) do not touch KSeF, as in life, where Latarnia
//! has failed on its own and stayed silent while KSeF was in trouble.
//!
//! Tests drive it through [`Latarnia`] (`SimHandle::latarnia`); the CLI and other languages
//! through `PUT /_sim/latarnia` (status, fault) and `POST /_sim/latarnia/messages` (publish).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How Latarnia itself misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatarniaFault {
    /// 502 Bad Gateway on both endpoints (as for 3–4 hours on 2026-04-10).
    BadGateway,
    /// 504 Gateway Timeout (as on 2026-03-03).
    GatewayTimeout,
    /// 200 with an empty body: Latarnia says nothing.
    Empty,
}

/// One message as Latarnia publishes it (camelCase). `start`/`end`/`published` are RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatarniaMessage {
    pub id: String,
    pub event_id: String,
    pub category: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub text: String,
    pub start: Option<String>,
    pub end: Option<String>,
    pub version: u32,
    pub published: String,
}

#[derive(Debug)]
struct Board {
    status: String,
    messages: Vec<LatarniaMessage>,
    fault: Option<LatarniaFault>,
    requests: u64,
    /// Announced outages scripted at the simulator's start (`--fault outage:START..END`),
    /// published when their time comes (read lazily at each request, against the clock).
    script: Vec<ScriptedFailure>,
}

/// One announced outage: FAILURE_START at `start`, FAILURE_END at `end` (real UTC times).
#[derive(Debug, Clone)]
struct ScriptedFailure {
    n: usize,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    started: bool,
    ended: bool,
}

/// The simulator's Latarnia: settable status, messages and faults (clones share one board).
#[derive(Debug, Clone)]
pub struct Latarnia(Arc<Mutex<Board>>);

impl Default for Latarnia {
    fn default() -> Self {
        Latarnia(Arc::new(Mutex::new(Board {
            status: "AVAILABLE".into(),
            messages: Vec::new(),
            fault: None,
            requests: 0,
            script: Vec::new(),
        })))
    }
}

impl Latarnia {
    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.0.lock().expect("latarnia lock")
    }

    /// `AVAILABLE`, `MAINTENANCE`, `FAILURE`, `TOTAL_FAILURE` (or anything, to test tolerance).
    pub fn set_status(&self, status: &str) {
        self.board().status = status.to_owned();
    }

    /// Publishes a message; a message with the id of one already published replaces it (a
    /// republication: give it a higher `version`).
    pub fn publish(&self, message: LatarniaMessage) {
        let mut b = self.board();
        b.messages.retain(|m| m.id != message.id);
        b.messages.push(message);
    }

    pub fn set_fault(&self, fault: Option<LatarniaFault>) {
        self.board().fault = fault;
    }

    /// Scripts an announced failure: from `start` Latarnia's status is FAILURE with a
    /// FAILURE_START message (`K/SIM/AWR/{2n+1}`, event `SIM-OUTAGE-{n}`), from `end` AVAILABLE
    /// with its FAILURE_END (`K/SIM/AWR/{2n+2}`), each published at its time.
    pub fn script_failure(&self, start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>) {
        let mut b = self.board();
        let n = b.script.len();
        b.script.push(ScriptedFailure {
            n,
            start,
            end,
            started: false,
            ended: false,
        });
    }

    /// Publishes what the script says has happened by `now`.
    fn play_script(b: &mut Board, now: chrono::DateTime<chrono::Utc>) {
        let mut due = Vec::new();
        for f in b.script.iter_mut() {
            let event = format!("SIM-OUTAGE-{}", f.n);
            if !f.started && f.start <= now {
                f.started = true;
                let mut m = message(
                    &format!("K/SIM/AWR/{}", 2 * f.n + 1),
                    &event,
                    "FAILURE",
                    "FAILURE_START",
                    f.start,
                    None,
                    1,
                );
                m.published = f.start.to_rfc3339();
                due.push((m, "FAILURE"));
            }
            if f.started && !f.ended && f.end <= now {
                f.ended = true;
                let mut m = message(
                    &format!("K/SIM/AWR/{}", 2 * f.n + 2),
                    &event,
                    "FAILURE",
                    "FAILURE_END",
                    f.start,
                    Some(f.end),
                    1,
                );
                m.published = f.end.to_rfc3339();
                due.push((m, "AVAILABLE"));
            }
        }
        for (m, status) in due {
            b.messages.retain(|x| x.id != m.id);
            b.messages.push(m);
            b.status = status.to_owned();
        }
    }

    /// Requests answered so far (both endpoints).
    pub fn requests(&self) -> u64 {
        self.board().requests
    }

    /// A declared failure with its FAILURE_START message (`id`, event `event`), from `start`.
    pub fn declare_failure(&self, id: &str, event: &str, start: chrono::DateTime<chrono::Utc>) {
        self.publish(message(id, event, "FAILURE", "FAILURE_START", start, None, 1));
        self.set_status("FAILURE");
    }

    /// Its FAILURE_END message: the failure ended at `end`.
    pub fn end_failure(&self, id: &str, event: &str, start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>) {
        self.publish(message(id, event, "FAILURE", "FAILURE_END", start, Some(end), 1));
        self.set_status("AVAILABLE");
    }

    fn answer(&self, body: impl FnOnce(&Board) -> serde_json::Value) -> Response {
        let mut b = self.board();
        b.requests += 1;
        Self::play_script(&mut b, chrono::Utc::now());
        match b.fault {
            Some(LatarniaFault::BadGateway) => (StatusCode::BAD_GATEWAY, "<html><body>502 Bad Gateway</body></html>").into_response(),
            Some(LatarniaFault::GatewayTimeout) => {
                (StatusCode::GATEWAY_TIMEOUT, "<html><body>504 Gateway Time-out</body></html>").into_response()
            }
            Some(LatarniaFault::Empty) => StatusCode::OK.into_response(),
            None => Json(body(&b)).into_response(),
        }
    }
}

/// A message with the fields Latarnia sends, published now.
pub fn message(
    id: &str,
    event: &str,
    category: &str,
    kind: &str,
    start: chrono::DateTime<chrono::Utc>,
    end: Option<chrono::DateTime<chrono::Utc>>,
    version: u32,
) -> LatarniaMessage {
    LatarniaMessage {
        id: id.into(),
        event_id: event.into(),
        category: category.into(),
        kind: kind.into(),
        title: format!("{kind} {id}"),
        text: "Komunikat symulatora.".into(),
        start: Some(start.to_rfc3339()),
        end: end.map(|e| e.to_rfc3339()),
        version,
        published: chrono::Utc::now().to_rfc3339(),
    }
}

pub async fn status(State(l): State<Latarnia>) -> Response {
    l.answer(|b| {
        // Messages only when not AVAILABLE; an extra field, as the Ministry may add any.
        let messages: Vec<&LatarniaMessage> = if b.status == "AVAILABLE" {
            Vec::new()
        } else {
            b.messages.iter().collect()
        };
        json!({"status": b.status, "messages": messages, "serverTime": chrono::Utc::now().to_rfc3339()})
    })
}

pub async fn messages(State(l): State<Latarnia>) -> Response {
    l.answer(|b| json!(b.messages))
}

#[derive(Deserialize)]
pub struct SetLatarnia {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    fault: Option<LatarniaFault>,
}

/// `PUT /_sim/latarnia` `{"status": "FAILURE", "fault": "bad_gateway"|null}`.
pub async fn admin_set(State(l): State<Latarnia>, Json(req): Json<SetLatarnia>) -> Response {
    if let Some(s) = req.status {
        l.set_status(&s);
    }
    l.set_fault(req.fault);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/latarnia/messages` with one message: published (or republished).
pub async fn admin_publish(State(l): State<Latarnia>, Json(m): Json<LatarniaMessage>) -> Response {
    l.publish(m);
    StatusCode::NO_CONTENT.into_response()
}

pub fn router(l: Latarnia) -> axum::Router {
    use axum::routing::{get, post, put};
    axum::Router::new()
        .route("/latarnia/status", get(status))
        .route("/latarnia/messages", get(messages))
        .route("/_sim/latarnia", put(admin_set))
        .route("/_sim/latarnia/messages", post(admin_publish))
        .with_state(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scripted_failure_is_published_when_its_start_and_end_come() {
        let l = Latarnia::default();
        let t0 = chrono::Utc::now();
        l.script_failure(t0 + chrono::Duration::seconds(10), t0 + chrono::Duration::seconds(20));
        let mut b = l.board();
        Latarnia::play_script(&mut b, t0);
        assert_eq!((b.status.as_str(), b.messages.len()), ("AVAILABLE", 0), "nothing before the start");
        Latarnia::play_script(&mut b, t0 + chrono::Duration::seconds(10));
        assert_eq!((b.status.as_str(), b.messages.len()), ("FAILURE", 1));
        assert_eq!(
            (b.messages[0].kind.as_str(), b.messages[0].id.as_str()),
            ("FAILURE_START", "K/SIM/AWR/1")
        );
        Latarnia::play_script(&mut b, t0 + chrono::Duration::seconds(15));
        assert_eq!(b.messages.len(), 1, "published once");
        Latarnia::play_script(&mut b, t0 + chrono::Duration::seconds(25));
        assert_eq!((b.status.as_str(), b.messages.len()), ("AVAILABLE", 2));
        let end = &b.messages[1];
        assert_eq!((end.kind.as_str(), end.event_id.as_str()), ("FAILURE_END", "SIM-OUTAGE-0"));
        assert_eq!(end.end.as_deref(), Some((t0 + chrono::Duration::seconds(20)).to_rfc3339().as_str()));
    }
}
