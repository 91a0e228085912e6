//! Client-side rate limits per endpoint group, with the official defaults (API-NOTES §7), so a
//! well-behaved caller never meets KSeF's 429 (whose block time grows with each violation).
//!
//! KSeF counts in sliding windows of 1 s, 60 s and 60 min that all apply at once. A token
//! bucket (governor's GCRA) cannot express that: with a burst of `n` it lets up to `2n - 1`
//! requests into one sliding window, and with a burst of 1 it makes a session close wait
//! 30 s behind its open (120/h). So this is the same sliding log KSeF keeps: the times of the
//! last requests per group, and a request waits until every window has room. The limits hold
//! per process: several processes sending for one context must share the budget (the relay
//! caps send concurrency per NIP for that reason).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The endpoint groups of the official limits table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointGroup {
    /// Public keys and the challenge: 60/s per IP.
    Public,
    /// Auth steps after the challenge: 60/s.
    Auth,
    /// Opening online sessions.
    OnlineSession,
    /// Closing online sessions: its own group since 14.09.2026 (ksef-api#863).
    OnlineSessionClose,
    InvoiceSend,
    /// Opening batch sessions.
    BatchSession,
    /// Closing batch sessions: its own group since 14.09.2026.
    BatchSessionClose,
    InvoiceStatus,
    SessionList,
    SessionInvoiceList,
    SessionMisc,
    Other,
}

/// Requests per second, minute and hour; None means no limit in that window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
}

impl Limit {
    pub const fn new(s: u32, m: u32, h: u32) -> Limit {
        Limit {
            per_second: Some(s),
            per_minute: Some(m),
            per_hour: Some(h),
        }
    }
    pub const fn per_second_only(s: u32) -> Limit {
        Limit {
            per_second: Some(s),
            per_minute: None,
            per_hour: None,
        }
    }
}

/// The limits the client keeps to. Override any group with [`ClientLimits::with`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    pub enabled: bool,
    pub groups: HashMap<EndpointGroup, Limit>,
    /// Windows are divided by this: tests against a time-scaled simulator use the same factor.
    pub time_scale: f64,
    /// KSeF counts a request when it arrives, we when it leaves: our windows are this much
    /// longer (0.02 = 2%: 20 ms on the 1 s window, 72 s on the hour) so network jitter cannot
    /// squeeze two of our requests into one of KSeF's windows.
    pub margin: f64,
}

impl ClientLimits {
    /// The published PRD/DEMO/TEST defaults (API-NOTES §7, with the close groups of §15).
    pub fn official() -> ClientLimits {
        use EndpointGroup::*;
        let groups = HashMap::from([
            (Public, Limit::per_second_only(60)),
            (Auth, Limit::per_second_only(60)),
            (OnlineSession, Limit::new(10, 30, 120)),
            (OnlineSessionClose, Limit::new(20, 60, 240)),
            (InvoiceSend, Limit::new(10, 30, 180)),
            (BatchSession, Limit::new(10, 20, 60)),
            (BatchSessionClose, Limit::new(20, 40, 120)),
            (InvoiceStatus, Limit::new(30, 120, 1200)),
            (SessionList, Limit::new(5, 10, 60)),
            (SessionInvoiceList, Limit::new(10, 20, 200)),
            (SessionMisc, Limit::new(10, 120, 1200)),
            (Other, Limit::new(10, 30, 120)),
        ]);
        ClientLimits {
            enabled: true,
            groups,
            time_scale: 1.0,
            margin: 0.02,
        }
    }

    pub fn disabled() -> ClientLimits {
        ClientLimits {
            enabled: false,
            groups: HashMap::new(),
            time_scale: 1.0,
            margin: 0.02,
        }
    }

    pub fn with(mut self, group: EndpointGroup, limit: Limit) -> ClientLimits {
        self.groups.insert(group, limit);
        self
    }

    pub fn scaled(mut self, time_scale: f64) -> ClientLimits {
        self.time_scale = time_scale;
        self
    }

    pub fn with_margin(mut self, margin: f64) -> ClientLimits {
        self.margin = margin;
        self
    }
}

/// `GET /rate-limits` (`EffectiveApiRateLimits`): the limits KSeF applies to this context, by
/// group name. Groups the client does not know (exports, downloads) are kept by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(from = "HashMap<String, EffectiveValues>")]
pub struct EffectiveRateLimits {
    pub groups: HashMap<String, Limit>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EffectiveValues {
    per_second: u32,
    per_minute: u32,
    per_hour: u32,
}

impl From<HashMap<String, EffectiveValues>> for EffectiveRateLimits {
    fn from(raw: HashMap<String, EffectiveValues>) -> Self {
        EffectiveRateLimits {
            groups: raw
                .into_iter()
                .map(|(name, v)| (name, Limit::new(v.per_second, v.per_minute, v.per_hour)))
                .collect(),
        }
    }
}

impl EffectiveRateLimits {
    /// The limit KSeF reports for one of the client's groups, if it reports that group. Before
    /// September 2026 closing shared the opening groups: a report without the close groups
    /// means that.
    pub fn limit(&self, group: EndpointGroup) -> Option<Limit> {
        let name = match group {
            EndpointGroup::Public | EndpointGroup::Auth => return None,
            EndpointGroup::OnlineSession => "onlineSession",
            EndpointGroup::OnlineSessionClose => {
                return self.groups.get("onlineSessionClose").or(self.groups.get("onlineSession")).copied()
            }
            EndpointGroup::InvoiceSend => "invoiceSend",
            EndpointGroup::BatchSession => "batchSession",
            EndpointGroup::BatchSessionClose => return self.groups.get("batchSessionClose").or(self.groups.get("batchSession")).copied(),
            EndpointGroup::InvoiceStatus => "invoiceStatus",
            EndpointGroup::SessionList => "sessionList",
            EndpointGroup::SessionInvoiceList => "sessionInvoiceList",
            EndpointGroup::SessionMisc => "sessionMisc",
            EndpointGroup::Other => "other",
        };
        self.groups.get(name).copied()
    }
}

impl ClientLimits {
    /// These limits with every group KSeF reported replaced by its reported value (API-NOTES
    /// §15: trust `GET /rate-limits` over any table). Groups it did not report keep theirs.
    pub fn seeded_from(mut self, effective: &EffectiveRateLimits) -> ClientLimits {
        let groups: Vec<EndpointGroup> = self.groups.keys().copied().collect();
        for g in groups {
            if let Some(l) = effective.limit(g) {
                self.groups.insert(g, l);
            }
        }
        self
    }
}

pub(crate) struct Limiter {
    limits: Option<ClientLimits>,
    log: tokio::sync::Mutex<HashMap<EndpointGroup, VecDeque<Instant>>>,
}

impl Limiter {
    pub fn new(limits: &ClientLimits) -> Limiter {
        Limiter {
            limits: limits.enabled.then(|| limits.clone()),
            log: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a request of this group may go, and counts it.
    pub async fn acquire(&self, group: EndpointGroup) {
        let Some(limits) = &self.limits else { return };
        let Some(l) = limits.groups.get(&group).copied() else { return };
        let scale = limits.time_scale.max(1e-6);
        let margin = limits.margin.max(0.0);
        let windows: Vec<(usize, Duration)> = [(l.per_second, 1.0), (l.per_minute, 60.0), (l.per_hour, 3600.0)]
            .into_iter()
            .filter_map(|(n, secs)| {
                n.filter(|n| *n > 0)
                    .map(|n| (n as usize, Duration::from_secs_f64(secs * (1.0 + margin) / scale)))
            })
            .collect();
        let longest = windows.iter().map(|w| w.1).max().unwrap_or_default();
        loop {
            let wait = {
                // Held only to compute; never across the sleep.
                let mut log = self.log.lock().await;
                let q = log.entry(group).or_default();
                let now = Instant::now();
                while q.front().is_some_and(|t| now.duration_since(*t) >= longest) {
                    q.pop_front();
                }
                let wait = windows
                    .iter()
                    .filter_map(|(n, len)| {
                        let in_window: Vec<&Instant> = q.iter().filter(|t| now.duration_since(**t) < *len).collect();
                        // Full: wait until the oldest request that counts leaves the window.
                        (in_window.len() >= *n).then(|| len.saturating_sub(now.duration_since(*in_window[in_window.len() - n])))
                    })
                    .max();
                if wait.is_none() {
                    q.push_back(now);
                }
                wait
            };
            match wait {
                None => return,
                Some(w) => tokio::time::sleep(w.max(Duration::from_micros(50))).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request times in simulated seconds, for `n` requests of a group at 3600x.
    async fn times(group: EndpointGroup, n: usize) -> Vec<f64> {
        let l = Limiter::new(&ClientLimits::official().scaled(3600.0));
        let start = Instant::now();
        let mut out = Vec::new();
        for _ in 0..n {
            l.acquire(group).await;
            // The instant the limiter counted, not a later reading of the clock.
            let counted = *l.log.lock().await[&group].back().unwrap();
            out.push(counted.duration_since(start).as_secs_f64() * 3600.0);
        }
        out
    }

    fn max_in_window(times: &[f64], window: f64) -> usize {
        (0..times.len())
            .map(|i| times[i..].iter().take_while(|u| **u - times[i] < window).count())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn no_window_ever_sees_more_than_its_limit_and_bursts_are_allowed() {
        // invoiceSend: 10/s, 30/min, 180/h. 200 requests span more than a simulated hour.
        let t = times(EndpointGroup::InvoiceSend, 200).await;
        assert!(max_in_window(&t, 1.0) <= 10);
        assert!(max_in_window(&t, 60.0) <= 30);
        assert!(max_in_window(&t, 3600.0) <= 180);
        assert!(t[199] >= 3600.0, "the 181st request waited for the hour window: {}", t[199]);
        // The first ten go at once: a session open and close need not wait for each other.
        assert!(t[9] < 1.0, "burst of 10 took {} simulated seconds", t[9]);
    }

    #[tokio::test]
    async fn disabled_limits_never_wait() {
        let l = Limiter::new(&ClientLimits::disabled());
        let start = Instant::now();
        for _ in 0..1000 {
            l.acquire(EndpointGroup::InvoiceSend).await;
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
