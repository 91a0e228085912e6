//! The simulator's own endpoints under `/_sim` (not part of KSeF): read the ledger, switch
//! faults, rotate keys, revoke tokens. Tests use the Rust handle; these are for the CLI and
//! for tests in other languages.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::faults::Fault;
use crate::state::Sim;

pub async fn ledger(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.ledger.entries()).into_response()
}

pub async fn get_faults(State(sim): State<Arc<Sim>>) -> Response {
    Json(json!({"faults": sim.faults.active()})).into_response()
}

/// Faults as JSON objects (`{"kind":"unavailable","rate":0.5}`) or by name (`"unavailable:0.5"`).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum FaultSpec {
    Named(String),
    Full(Fault),
}

#[derive(Deserialize)]
pub struct SetFaults {
    #[serde(default)]
    seed: u64,
    faults: Vec<FaultSpec>,
}

pub async fn set_faults(State(sim): State<Arc<Sim>>, Json(req): Json<SetFaults>) -> Response {
    let mut faults = Vec::new();
    for f in req.faults {
        match f {
            FaultSpec::Full(f) => faults.push(f),
            FaultSpec::Named(s) => match s.parse::<Fault>() {
                Ok(f) => faults.push(f),
                Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
            },
        }
    }
    sim.faults.set(faults, req.seed);
    Json(json!({"faults": sim.faults.active()})).into_response()
}

pub async fn rotate_keys(State(sim): State<Arc<Sim>>) -> Response {
    match sim.keys.write().expect("keys lock").rotate() {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub async fn expire_access_tokens(State(sim): State<Arc<Sim>>) -> Response {
    sim.expire_access_tokens();
    StatusCode::NO_CONTENT.into_response()
}

pub async fn revoke_refresh_tokens(State(sim): State<Arc<Sim>>) -> Response {
    sim.revoke_refresh_tokens();
    StatusCode::NO_CONTENT.into_response()
}

impl Sim {
    pub fn expire_access_tokens(&self) {
        self.store.lock().expect("store lock").access.clear();
    }

    pub fn revoke_refresh_tokens(&self) {
        let mut store = self.store.lock().expect("store lock");
        let tokens: Vec<String> = store.refresh.keys().cloned().collect();
        store.revoked_refresh.extend(tokens);
        store.access.clear();
    }
}
