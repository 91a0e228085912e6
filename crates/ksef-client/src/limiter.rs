//! Client-side rate limits per endpoint group, with the official defaults (API-NOTES §7), so a
//! well-behaved caller never meets KSeF's 429 (whose block time grows with each violation).
//!
//! KSeF counts in sliding windows; a token bucket (governor's GCRA) that allows a burst of `n`
//! could pass up to `2n - 1` requests in one sliding window. So each window gets a bucket with
//! burst 1 and one request per `window / n`: never more than `n` in any window, at the full
//! sustained rate. All three windows of a group apply at once. The limits hold per process:
//! several processes sending for one context must share the budget (the relay caps send
//! concurrency per NIP for that reason).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// The endpoint groups of the official limits table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointGroup {
    /// Public keys and the challenge: 60/s per IP.
    Public,
    /// Auth steps after the challenge: 60/s.
    Auth,
    OnlineSession,
    InvoiceSend,
    BatchSession,
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
}

impl ClientLimits {
    /// The published PRD/DEMO/TEST defaults.
    pub fn official() -> ClientLimits {
        use EndpointGroup::*;
        let groups = HashMap::from([
            (Public, Limit::per_second_only(60)),
            (Auth, Limit::per_second_only(60)),
            (OnlineSession, Limit::new(10, 30, 120)),
            (InvoiceSend, Limit::new(10, 30, 180)),
            (BatchSession, Limit::new(10, 20, 60)),
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
        }
    }

    pub fn disabled() -> ClientLimits {
        ClientLimits {
            enabled: false,
            groups: HashMap::new(),
            time_scale: 1.0,
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
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

pub(crate) struct Limiter {
    buckets: HashMap<EndpointGroup, Vec<Bucket>>,
}

impl Limiter {
    pub fn new(limits: &ClientLimits) -> Limiter {
        let mut buckets = HashMap::new();
        if limits.enabled {
            let scale = limits.time_scale.max(1e-6);
            for (group, l) in &limits.groups {
                let mut v = Vec::new();
                for (n, window) in [(l.per_second, 1.0), (l.per_minute, 60.0), (l.per_hour, 3600.0)] {
                    let Some(n) = n.filter(|n| *n > 0) else { continue };
                    let period = Duration::from_secs_f64(window / f64::from(n) / scale).max(Duration::from_nanos(1));
                    let quota = Quota::with_period(period).expect("non-zero period").allow_burst(NonZeroU32::MIN);
                    v.push(RateLimiter::direct(quota));
                }
                buckets.insert(*group, v);
            }
        }
        Limiter { buckets }
    }

    /// Waits until a request of this group may go.
    pub async fn acquire(&self, group: EndpointGroup) {
        if let Some(v) = self.buckets.get(&group) {
            for b in v {
                b.until_ready().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_window_ever_sees_more_than_its_limit() {
        // invoiceSend at 3600x: 180 per simulated hour (1 s real), 30 per simulated minute.
        let limits = ClientLimits::official().scaled(3600.0);
        let l = Limiter::new(&limits);
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..40 {
            l.acquire(EndpointGroup::InvoiceSend).await;
            times.push(start.elapsed().as_secs_f64() * 3600.0); // in simulated seconds
        }
        for (i, t) in times.iter().enumerate() {
            let in_minute = times[i..].iter().take_while(|u| **u - t < 60.0).count();
            assert!(in_minute <= 30, "{in_minute} requests within one simulated minute from {t}");
            let in_second = times[i..].iter().take_while(|u| **u - t < 1.0).count();
            assert!(in_second <= 10);
        }
    }
}
