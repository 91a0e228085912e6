//! Client-side rate limits per endpoint group, with the official defaults (API-NOTES §7), so a
//! well-behaved caller never meets KSeF's 429 (whose block time grows with each violation).
//!
//! KSeF counts in sliding windows of 1 s, 60 s and 60 min that all apply at once. A token
//! bucket (governor's GCRA) cannot express that: with a burst of `n` it lets up to `2n - 1`
//! requests into one sliding window, and with a burst of 1 it makes a session close wait
//! 30 s behind its open (120/h). So this is the same sliding log KSeF keeps: the times of the
//! last requests per group (each counted until its answer, see `sliding_log`), and a request
//! waits until every window has room. These limits hold per process; several processes sending
//! for one context share one [`crate::governor::FleetGovernor`].

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::sliding_log::SlidingLog;

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
    /// Our windows are this much longer than KSeF's (0.02 = 2%: 20 ms on the 1 s window, 72 s
    /// on the hour). The gap between a request leaving and KSeF counting it is covered by
    /// counting each request until its answer (`sliding_log`), not by this margin; the margin
    /// covers what that cannot see: instances' clocks differing a little in the shared log.
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

#[derive(serde::Deserialize, serde::Serialize)]
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

/// The shared-cache entry where one instance's reading of `GET /rate-limits` for `seller` serves
/// the others (the send path writes it; intake's backlog reads it).
pub fn rate_limits_cache_name(seller: &impl std::fmt::Display) -> String {
    format!("ksef/rate-limits/{seller}")
}

impl EffectiveRateLimits {
    /// The report in KSeF's own form (`EffectiveApiRateLimits`), e.g. to share it with other
    /// instances; groups without all three windows are left out, as KSeF never sends those.
    pub fn to_json(&self) -> String {
        let raw: std::collections::BTreeMap<&str, EffectiveValues> = self
            .groups
            .iter()
            .filter_map(|(name, l)| {
                Some((
                    name.as_str(),
                    EffectiveValues {
                        per_second: l.per_second?,
                        per_minute: l.per_minute?,
                        per_hour: l.per_hour?,
                    },
                ))
            })
            .collect();
        serde_json::to_string(&raw).expect("numbers serialise")
    }

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
    /// None when disabled. Replaced once KSeF says what it applies (`GET /rate-limits`).
    limits: std::sync::RwLock<Option<ClientLimits>>,
    log: std::sync::Mutex<HashMap<EndpointGroup, SlidingLog>>,
    fleet: Option<crate::governor::FleetGovernor>,
    /// Where the process log's instants count from (the sliding-log arithmetic is in µs).
    origin: Instant,
    /// The longest a request can be on its way (the client's request timeout): past it, a
    /// request whose answer was never reported stops counting as on its way.
    in_flight_for: Duration,
    next_id: std::sync::atomic::AtomicU64,
}

/// A request counted by a limiter: report its answer with [`Limiter::answered`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    /// Counted in the fleet's shared log.
    Fleet(crate::governor::Ticket),
    /// Counted in this process's log.
    Process(u64),
    /// Not counted (no limit for the group, or limits disabled).
    Free,
}

impl Limiter {
    pub fn new(limits: &ClientLimits, fleet: Option<crate::governor::FleetGovernor>, in_flight_for: Duration) -> Limiter {
        Limiter {
            limits: std::sync::RwLock::new(limits.enabled.then(|| limits.clone())),
            log: std::sync::Mutex::new(HashMap::new()),
            fleet,
            origin: Instant::now(),
            in_flight_for,
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits until a request of this group may go, and counts it as on its way. With a fleet
    /// governor, a wait longer than its `max_inline_wait` is not waited: the call fails
    /// `RateLimited`. Call it right before the request is written, and [`Limiter::answered`]
    /// as soon as its answer (or failure) comes.
    pub async fn acquire(&self, group: EndpointGroup, operation: &str) -> Result<Slot, relay_domain::Failure> {
        if let Some(fleet) = &self.fleet {
            loop {
                let now = chrono::Utc::now();
                match fleet.reserve(group, now, self.in_flight_for).await {
                    Ok(crate::governor::Reservation::Go(ticket)) => return Ok(Slot::Fleet(ticket)),
                    Ok(crate::governor::Reservation::WaitUntil(until)) => {
                        let wait = (until - now).to_std().unwrap_or_default();
                        if wait > fleet.max_inline_wait {
                            return Err(relay_domain::Failure::new(
                                relay_domain::ErrorClass::RateLimited { until },
                                relay_domain::ErrorSource::Ksef {
                                    operation: operation.to_owned(),
                                },
                                format!(
                                    "KSeF's {group:?} limit for this context is used up across the relay's instances until {}; not called",
                                    until.to_rfc3339()
                                ),
                            )
                            .with_code("GOVERNOR"));
                        }
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        // The shared log cannot be read: keep to this process's own limits
                        // rather than stop delivering.
                        tracing::warn!(error = %e, "the shared rate governor is unavailable; using the process limiter");
                        break;
                    }
                }
            }
        }
        Ok(self.acquire_in_process(group).await)
    }

    /// The request of `slot` was answered (or failed) now: it counts at this moment, the
    /// latest it can have reached KSeF, no longer as on its way.
    pub async fn answered(&self, group: EndpointGroup, slot: Slot) {
        match slot {
            Slot::Free => {}
            Slot::Process(id) => {
                let now = self.us(Instant::now());
                if let Some(log) = self.log.lock().expect("limiter lock").get_mut(&group) {
                    log.answered(id, now);
                }
            }
            Slot::Fleet(ticket) => {
                if let Some(fleet) = &self.fleet {
                    if let Err(e) = fleet.answered(group, ticket, chrono::Utc::now()).await {
                        // It keeps counting as on its way until its time is up: later, not earlier.
                        tracing::warn!(error = %e, "could not settle a request in the shared rate governor");
                    }
                }
            }
        }
    }

    /// KSeF answered 429 until `until`: with a fleet governor, every instance learns it.
    pub async fn blocked(&self, group: EndpointGroup, until: chrono::DateTime<chrono::Utc>) {
        if let Some(fleet) = &self.fleet {
            if let Err(e) = fleet.block(group, until, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "could not share a KSeF rate-limit block");
            }
        }
    }

    fn us(&self, t: Instant) -> i64 {
        t.duration_since(self.origin).as_micros() as i64
    }

    /// Keeps to `limits` from now on, here and in the fleet governor.
    pub fn set_limits(&self, limits: &ClientLimits) {
        *self.limits.write().expect("limits lock") = limits.enabled.then(|| limits.clone());
        if let Some(fleet) = &self.fleet {
            fleet.set_limits(limits.clone());
        }
    }

    /// The limits kept to now.
    pub fn limits(&self) -> Option<ClientLimits> {
        self.limits.read().expect("limits lock").clone()
    }

    async fn acquire_in_process(&self, group: EndpointGroup) -> Slot {
        let Some(limits) = self.limits() else { return Slot::Free };
        let Some(l) = limits.groups.get(&group).copied() else {
            return Slot::Free;
        };
        let windows = crate::sliding_log::windows_us(l, &limits);
        let flight = i64::try_from(self.in_flight_for.as_micros()).unwrap_or(i64::MAX / 4);
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        loop {
            let wait = {
                // Held only to compute; never across the sleep.
                let mut log = self.log.lock().expect("limiter lock");
                let now = self.us(Instant::now());
                log.entry(group).or_default().reserve(id, now, now + flight, &windows)
            };
            match wait {
                None => return Slot::Process(id),
                Some(w) => tokio::time::sleep(Duration::from_micros(w.max(50) as u64)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request times in simulated seconds, for `n` requests of a group at 3600x, each answered
    /// as soon as it is counted.
    async fn times(group: EndpointGroup, n: usize) -> Vec<f64> {
        let l = Limiter::new(&ClientLimits::official().scaled(3600.0), None, Duration::from_secs(30));
        let mut out = Vec::new();
        for _ in 0..n {
            let slot = l.acquire(group, "test").await.unwrap();
            l.answered(group, slot).await;
            // The time the limiter counts the request at, not a later reading of the clock.
            let counted = *l.log.lock().unwrap()[&group].answered.back().unwrap();
            out.push(counted as f64 / 1e6 * 3600.0);
        }
        out
    }

    #[tokio::test]
    async fn a_request_on_its_way_holds_its_slot_until_answered() {
        // 10 per simulated second at 3600x: a window of 0.28 ms. Ten requests never answered
        // keep the window full for as long as they may be on their way, not for 0.28 ms.
        let l = Limiter::new(&ClientLimits::official().scaled(3600.0), None, Duration::from_millis(300));
        let before = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..10 {
            slots.push(l.acquire(EndpointGroup::InvoiceSend, "test").await.unwrap());
        }
        let eleventh = l.acquire(EndpointGroup::InvoiceSend, "test").await.unwrap();
        assert!(
            before.elapsed() >= Duration::from_millis(300),
            "the 11th went {:?} after the first of ten still on their way",
            before.elapsed()
        );
        slots.push(eleventh);
        for s in slots {
            l.answered(EndpointGroup::InvoiceSend, s).await;
        }
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
        let l = Limiter::new(&ClientLimits::disabled(), None, Duration::from_secs(30));
        let start = Instant::now();
        for _ in 0..1000 {
            l.acquire(EndpointGroup::InvoiceSend, "test").await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
