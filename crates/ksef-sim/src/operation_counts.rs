//! How many requests the simulator answered, per operation (method + the spec's route template)
//! and status. Always on and cheap (one map entry per kind, no bodies, unlike the exchange log),
//! so a load run or a rate-limit test can say what it cost in KSeF calls and how many 429s it met.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One kind of answer and how often it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationCount {
    pub method: String,
    /// The route as the spec writes it, without `/v2`: `/sessions/online/{referenceNumber}/invoices`.
    pub route: String,
    pub status: u16,
    pub count: u64,
}

type Key = (String, String, u16);

/// Shared counters. Clone it freely.
#[derive(Clone, Default)]
pub struct OperationCounts {
    counts: Arc<Mutex<BTreeMap<Key, u64>>>,
}

impl OperationCounts {
    pub(crate) fn record(&self, method: &str, route: &str, status: u16) {
        let route = route.strip_prefix("/v2").unwrap_or(route);
        let mut counts = self.counts.lock().expect("operation counts lock");
        *counts.entry((method.to_owned(), route.to_owned(), status)).or_default() += 1;
    }

    /// Every (method, route, status) answered so far, in route order.
    pub fn snapshot(&self) -> Vec<OperationCount> {
        self.counts
            .lock()
            .expect("operation counts lock")
            .iter()
            .map(|((method, route, status), count)| OperationCount {
                method: method.clone(),
                route: route.clone(),
                status: *status,
                count: *count,
            })
            .collect()
    }

    /// Answers to `method route` (any status) with a status `accept` likes.
    pub fn count(&self, method: &str, route: &str, accept: impl Fn(u16) -> bool) -> u64 {
        self.snapshot()
            .iter()
            .filter(|c| c.method == method && c.route == route && accept(c.status))
            .map(|c| c.count)
            .sum()
    }

    /// How many answers were 429 Too Many Requests, on any route.
    pub fn too_many_requests(&self) -> u64 {
        self.snapshot().iter().filter(|c| c.status == 429).map(|c| c.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_route_and_status_without_the_version_prefix() {
        let c = OperationCounts::default();
        c.record("POST", "/v2/sessions/online", 201);
        c.record("POST", "/v2/sessions/online", 201);
        c.record("POST", "/v2/sessions/online", 429);
        c.record("GET", "/storage/upo/{token}", 200);
        assert_eq!(c.count("POST", "/sessions/online", |s| s == 201), 2);
        assert_eq!(c.count("POST", "/sessions/online", |_| true), 3);
        assert_eq!(c.too_many_requests(), 1);
        assert_eq!(c.snapshot().len(), 3);
    }
}
