//! KSeF's rate limits: per (context, client IP) and endpoint group, in sliding 1 s, 60 s and
//! 60 min windows that all apply at once (API-NOTES §7). A time scale shrinks the windows so a
//! test can live through an hour of limits in a second.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests allowed per second, per minute and per hour; None means unlimited.
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

/// The endpoint groups of the official limits table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `/auth/challenge` and `/security/public-key-certificates`: 60/s per IP.
    Public,
    /// The auth steps after the challenge: 60/s (spec `x-rate-limits`).
    Auth,
    /// Opening an online session (closing had this group too until September 2026).
    OnlineSession,
    /// `POST /sessions/online/{ref}/close`: its own group since 14.09.2026 (ksef-api#863).
    OnlineSessionClose,
    InvoiceSend,
    /// Opening a batch session.
    BatchSession,
    /// `POST /sessions/batch/{ref}/close`: its own group since 14.09.2026.
    BatchSessionClose,
    InvoiceStatus,
    SessionList,
    SessionInvoiceList,
    SessionMisc,
    Other,
}

impl Group {
    /// The group of a request, from its method and the route template it matched.
    pub fn of(method: &str, route: &str) -> Group {
        let r = route.strip_prefix("/v2").unwrap_or(route);
        match (method, r) {
            (_, "/auth/challenge" | "/security/public-key-certificates") => Group::Public,
            (
                _,
                "/auth/ksef-token" | "/auth/xades-signature" | "/auth/{referenceNumber}" | "/auth/token/redeem" | "/auth/token/refresh",
            ) => Group::Auth,
            ("POST", "/sessions/online") => Group::OnlineSession,
            ("POST", "/sessions/online/{referenceNumber}/close") => Group::OnlineSessionClose,
            ("POST", "/sessions/online/{referenceNumber}/invoices") => Group::InvoiceSend,
            ("POST", "/sessions/batch") => Group::BatchSession,
            ("POST", "/sessions/batch/{referenceNumber}/close") => Group::BatchSessionClose,
            ("GET", "/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}") => Group::InvoiceStatus,
            ("GET", "/sessions") => Group::SessionList,
            ("GET", "/sessions/{referenceNumber}/invoices" | "/sessions/{referenceNumber}/invoices/failed") => Group::SessionInvoiceList,
            ("GET", r) if r.starts_with("/sessions/") => Group::SessionMisc,
            _ => Group::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Group::Public => "public",
            Group::Auth => "auth",
            Group::OnlineSession => "onlineSession",
            Group::OnlineSessionClose => "onlineSessionClose",
            Group::InvoiceSend => "invoiceSend",
            Group::BatchSession => "batchSession",
            Group::BatchSessionClose => "batchSessionClose",
            Group::InvoiceStatus => "invoiceStatus",
            Group::SessionList => "sessionList",
            Group::SessionInvoiceList => "sessionInvoiceList",
            Group::SessionMisc => "sessionMisc",
            Group::Other => "other",
        }
    }
}

/// The limit of every group. [`RateLimits::production`] is the published PRD/DEMO/TEST table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub enabled: bool,
    pub limits: HashMap<Group, Limit>,
    /// Repeated violations block longer: 1 s, 2 s, 4 s, ... (simulated; capped at an hour;
    /// forgotten after a quiet hour). KSeF documents the growth, not the formula.
    pub penalty_growth: bool,
}

impl RateLimits {
    pub fn production() -> RateLimits {
        let limits = HashMap::from([
            (Group::Public, Limit::per_second_only(60)),
            (Group::Auth, Limit::per_second_only(60)),
            (Group::OnlineSession, Limit::new(10, 30, 120)),
            (Group::OnlineSessionClose, Limit::new(20, 60, 240)),
            (Group::InvoiceSend, Limit::new(10, 30, 180)),
            (Group::BatchSession, Limit::new(10, 20, 60)),
            (Group::BatchSessionClose, Limit::new(20, 40, 120)),
            (Group::InvoiceStatus, Limit::new(30, 120, 1200)),
            (Group::SessionList, Limit::new(5, 10, 60)),
            (Group::SessionInvoiceList, Limit::new(10, 20, 200)),
            (Group::SessionMisc, Limit::new(10, 120, 1200)),
            (Group::Other, Limit::new(10, 30, 120)),
        ]);
        RateLimits {
            enabled: true,
            limits,
            penalty_growth: true,
        }
    }

    pub fn disabled() -> RateLimits {
        RateLimits {
            enabled: false,
            limits: HashMap::new(),
            penalty_growth: false,
        }
    }

    pub fn with(mut self, group: Group, limit: Limit) -> RateLimits {
        self.limits.insert(group, limit);
        self
    }

    /// `GET /rate-limits`: the effective limits of every group that has all three windows, by
    /// the spec's names (`EffectiveApiRateLimits`, with the close groups of September 2026).
    /// Groups KSeF has and the simulator does not serve (metadata, exports, downloads) are
    /// reported with their published values.
    pub fn effective_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (group, l) in &self.limits {
            if let (Some(s), Some(m), Some(h)) = (l.per_second, l.per_minute, l.per_hour) {
                out.insert(
                    group.name().to_owned(),
                    serde_json::json!({"perSecond": s, "perMinute": m, "perHour": h}),
                );
            }
        }
        for (name, s, m, h) in [
            ("invoiceMetadata", 8, 16, 20),
            ("invoiceExport", 8, 16, 20),
            ("invoiceExportStatus", 10, 60, 600),
            ("invoiceDownload", 8, 16, 64),
        ] {
            out.entry(name)
                .or_insert(serde_json::json!({"perSecond": s, "perMinute": m, "perHour": h}));
        }
        serde_json::Value::Object(out)
    }
}

/// Why a request was refused, and when to come back (real time, after time scaling).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub retry_after: Duration,
    pub window: &'static str,
    pub limit: u32,
}

/// The counters: one deque of request times per (context or "-", IP, group).
type Key = (String, String, Group);

/// A key that broke a limit: KSeF's block time grows with repeated violations.
struct Penalty {
    violations: u32,
    last: Instant,
    blocked_until: Instant,
    window: &'static str,
    limit: u32,
}

pub struct RateLimiter {
    limits: RateLimits,
    scale: f64,
    hits: Mutex<HashMap<Key, VecDeque<Instant>>>,
    penalties: Mutex<HashMap<Key, Penalty>>,
    arrivals: Mutex<Vec<Arrival>>,
    /// The wall clock at `origin`, so arrival instants read as times a client can compare with.
    origin: (Instant, std::time::SystemTime),
}

/// One request as the rate limiter counted it: when it arrived (wall clock), for which
/// (context, IP, group), and whether it was let through. A test or a load run compares these
/// with the client's own reservation times to see where a 429 came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub context: String,
    pub ip: String,
    pub group: Group,
    pub at: std::time::SystemTime,
    pub admitted: bool,
}

impl RateLimiter {
    /// What `GET /rate-limits` answers: the limits in force or, when the simulator enforces
    /// none, KSeF's published ones (a client reading them must still see real values).
    pub fn effective_json(&self) -> serde_json::Value {
        if self.limits.enabled {
            self.limits.effective_json()
        } else {
            RateLimits::production().effective_json()
        }
    }

    pub fn new(limits: RateLimits, time_scale: f64) -> RateLimiter {
        RateLimiter {
            limits,
            scale: time_scale.max(1e-6),
            hits: Mutex::new(HashMap::new()),
            penalties: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(Vec::new()),
            origin: (Instant::now(), std::time::SystemTime::now()),
        }
    }

    /// Every request counted so far (rate-limited groups only, while limits are enforced), in
    /// the order they arrived.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().expect("arrivals lock").clone()
    }

    /// Counts the request if allowed (see [`RateLimiter::decide`]) and logs its arrival.
    pub fn check(&self, context: &str, ip: &str, group: Group, now: Instant) -> Result<(), Refusal> {
        let verdict = self.decide(context, ip, group, now);
        if self.limits.enabled && self.limits.limits.contains_key(&group) {
            let at = if now >= self.origin.0 {
                self.origin.1 + now.duration_since(self.origin.0)
            } else {
                self.origin.1 - self.origin.0.duration_since(now)
            };
            self.arrivals.lock().expect("arrivals lock").push(Arrival {
                context: context.to_owned(),
                ip: ip.to_owned(),
                group,
                at,
                admitted: verdict.is_ok(),
            });
        }
        verdict
    }

    /// Counts the request if allowed; refused requests are not counted.
    fn decide(&self, context: &str, ip: &str, group: Group, now: Instant) -> Result<(), Refusal> {
        if !self.limits.enabled {
            return Ok(());
        }
        let Some(limit) = self.limits.limits.get(&group).copied() else {
            return Ok(());
        };
        let scaled = |secs: f64| Duration::from_secs_f64(secs / self.scale);
        let windows = [
            (limit.per_second, scaled(1.0), "second"),
            (limit.per_minute, scaled(60.0), "minute"),
            (limit.per_hour, scaled(3600.0), "hour"),
        ];
        let longest = windows.iter().filter(|w| w.0.is_some()).map(|w| w.1).max().unwrap_or_default();
        let key: Key = (context.to_owned(), ip.to_owned(), group);
        let mut penalties = self.penalties.lock().expect("rate limiter lock");
        if let Some(p) = penalties.get(&key).filter(|p| now < p.blocked_until) {
            // Blocked: refused, without counting and without growing the block.
            return Err(Refusal {
                retry_after: p.blocked_until - now,
                window: p.window,
                limit: p.limit,
            });
        }
        let mut hits = self.hits.lock().expect("rate limiter lock");
        let q = hits.entry(key.clone()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= longest) {
            q.pop_front();
        }
        let mut refusal: Option<Refusal> = None;
        for (max, len, name) in windows {
            let Some(max) = max else { continue };
            let in_window: Vec<&Instant> = q.iter().filter(|t| now.duration_since(**t) < len).collect();
            if in_window.len() >= max as usize {
                // The request can pass once the oldest counted one leaves the window.
                let oldest = *in_window[in_window.len() - max as usize];
                let wait = len.saturating_sub(now.duration_since(oldest));
                if refusal.as_ref().is_none_or(|r| wait > r.retry_after) {
                    refusal = Some(Refusal {
                        retry_after: wait,
                        window: name,
                        limit: max,
                    });
                }
            }
        }
        match refusal {
            Some(mut r) => {
                if self.limits.penalty_growth {
                    let p = penalties.entry(key).or_insert(Penalty {
                        violations: 0,
                        last: now,
                        blocked_until: now,
                        window: r.window,
                        limit: r.limit,
                    });
                    if now.duration_since(p.last) >= scaled(3600.0) {
                        p.violations = 0;
                    }
                    p.violations += 1;
                    p.last = now;
                    let penalty = scaled(2f64.powi(p.violations.min(13) as i32 - 1).min(3600.0));
                    r.retry_after = r.retry_after.max(penalty);
                    (p.blocked_until, p.window, p.limit) = (now + r.retry_after, r.window, r.limit);
                }
                Err(r)
            }
            None => {
                q.push_back(now);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_official_table() {
        assert_eq!(
            Group::of("POST", "/v2/sessions/online/{referenceNumber}/invoices"),
            Group::InvoiceSend
        );
        // Closing has its own groups since 14.09.2026 (API-NOTES §15).
        assert_eq!(
            Group::of("POST", "/v2/sessions/online/{referenceNumber}/close"),
            Group::OnlineSessionClose
        );
        assert_eq!(Group::of("POST", "/v2/sessions/online"), Group::OnlineSession);
        assert_eq!(
            Group::of("POST", "/v2/sessions/batch/{referenceNumber}/close"),
            Group::BatchSessionClose
        );
        assert_eq!(Group::of("POST", "/v2/sessions/batch"), Group::BatchSession);
        assert_eq!(
            Group::of("GET", "/v2/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}"),
            Group::InvoiceStatus
        );
        assert_eq!(
            Group::of("GET", "/v2/sessions/{referenceNumber}/invoices"),
            Group::SessionInvoiceList
        );
        assert_eq!(
            Group::of("GET", "/v2/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}/upo"),
            Group::SessionMisc
        );
        assert_eq!(Group::of("POST", "/v2/auth/challenge"), Group::Public);
    }

    #[test]
    fn all_three_windows_apply_and_slide() {
        // invoiceSend: 10/s, 30/min, 180/h. Scale 3600: one simulated hour is one real second.
        let l = RateLimiter::new(RateLimits::production(), 3600.0);
        let t0 = Instant::now();
        let ms = |m: f64| t0 + Duration::from_secs_f64(m / 1000.0);
        // A simulated second is 0.278 ms real: 10 fit, the 11th in the same instant does not.
        for _ in 0..10 {
            l.check("9999999999", "127.0.0.1", Group::InvoiceSend, t0).unwrap();
        }
        let r = l.check("9999999999", "127.0.0.1", Group::InvoiceSend, t0).unwrap_err();
        assert_eq!(r.window, "second");
        // Other IPs and contexts have their own counters.
        l.check("9999999999", "10.0.0.1", Group::InvoiceSend, t0).unwrap();
        l.check("1111111111", "127.0.0.1", Group::InvoiceSend, t0).unwrap();
        // 30 per simulated minute (16.7 ms real): after 20 more spread over seconds, the minute is full.
        for i in 1..=20 {
            l.check("9999999999", "127.0.0.1", Group::InvoiceSend, ms(f64::from(i) * 0.3))
                .unwrap();
        }
        let r = l.check("9999999999", "127.0.0.1", Group::InvoiceSend, ms(6.5)).unwrap_err();
        assert_eq!(r.window, "minute");
        assert!(r.retry_after <= Duration::from_secs_f64(60.0 / 3600.0));
        // After the simulated minute passes, sending resumes.
        l.check("9999999999", "127.0.0.1", Group::InvoiceSend, ms(17.0)).unwrap();
    }

    #[test]
    fn the_hour_window_caps_at_180() {
        let l = RateLimiter::new(RateLimits::production(), 3600.0);
        let t0 = Instant::now();
        // One request every simulated 2.5 minutes... too slow to fill; fill at 25 per simulated minute.
        let mut sent = 0;
        let mut t = 0.0;
        while sent < 180 {
            let at = t0 + Duration::from_secs_f64(t / 3600.0);
            if l.check("c", "ip", Group::InvoiceSend, at).is_ok() {
                sent += 1;
            }
            t += 2.5; // simulated seconds
        }
        let at = t0 + Duration::from_secs_f64(t / 3600.0);
        let r = l.check("c", "ip", Group::InvoiceSend, at).unwrap_err();
        assert_eq!(r.window, "hour");
        assert_eq!(r.limit, 180);
    }

    #[test]
    fn repeated_violations_block_longer() {
        let limits = RateLimits::production().with(Group::InvoiceSend, Limit::new(1, 1000, 10000));
        let l = RateLimiter::new(limits, 1.0);
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut t = 0.0;
        let mut blocks = Vec::new();
        for _ in 0..4 {
            l.check("c", "ip", Group::InvoiceSend, at(t)).unwrap();
            let r = l.check("c", "ip", Group::InvoiceSend, at(t + 0.01)).unwrap_err();
            blocks.push(r.retry_after.as_secs_f64().round() as u64);
            // Asking again during the block is refused but does not grow it.
            let again = l.check("c", "ip", Group::InvoiceSend, at(t + 0.5)).unwrap_err();
            assert!(again.retry_after < r.retry_after);
            t += r.retry_after.as_secs_f64() + 0.02;
        }
        assert_eq!(blocks, vec![1, 2, 4, 8]);
        // A quiet hour later the slate is clean.
        t += 3600.0;
        l.check("c", "ip", Group::InvoiceSend, at(t)).unwrap();
        let r = l.check("c", "ip", Group::InvoiceSend, at(t + 0.01)).unwrap_err();
        assert_eq!(r.retry_after.as_secs_f64().round() as u64, 1);
    }
}
