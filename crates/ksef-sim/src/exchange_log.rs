//! Every response the simulator sent, when asked to keep them: the spec conformance test checks
//! each body against the schema the spec gives for that operation and status.

use std::sync::{Arc, Mutex};

/// One request and the answer to it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// The route template as the spec writes paths, e.g. `/sessions/{referenceNumber}`.
    pub route: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct ExchangeLog {
    enabled: bool,
    items: Arc<Mutex<Vec<Exchange>>>,
}

impl ExchangeLog {
    pub fn new(enabled: bool) -> Self {
        ExchangeLog {
            enabled,
            items: Arc::default(),
        }
    }
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn push(&self, e: Exchange) {
        if self.enabled {
            self.items.lock().expect("exchange log lock").push(e);
        }
    }
    pub fn all(&self) -> Vec<Exchange> {
        self.items.lock().expect("exchange log lock").clone()
    }
}
