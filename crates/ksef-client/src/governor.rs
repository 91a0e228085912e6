//! One rate governor per seller context, shared by every instance that calls KSeF for it.
//!
//! KSeF counts requests per (context, client IP) and endpoint group in sliding windows of 1 s,
//! 60 s and 60 min (API-NOTES §7). A limiter inside one process cannot keep a fleet inside
//! them: two Lambda instances each keeping to 180 sends an hour send 360. This governor keeps
//! the same sliding log as [`crate::limiter`], but in the shared cache (DynamoDB in the deployed
//! relay), one entry per (scope, group), written with a version check so two instances reserving
//! at once cannot both take the last slot. A 429's Retry-After is written there too, so every
//! instance stops for that seller, not just the one that met it.
//!
//! Nothing waits long in place: [`FleetGovernor::reserve`] answers when the next slot is free,
//! and the client waits in place only up to `max_inline_wait`. Past that the call fails as
//! `RateLimited { until }`, which the pipeline turns into a delayed message (never a sleep past
//! a Lambda's remaining time).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::{Expect, SharedCache, StoreError};
use serde::{Deserialize, Serialize};

use crate::limiter::{ClientLimits, EndpointGroup};
use crate::sliding_log::{windows_us, SlidingLog};

/// What a reservation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The request is counted as on its way: go now, and report its answer with
    /// [`FleetGovernor::answered`].
    Go(Ticket),
    /// No room before this time (a full window, or a 429 block).
    WaitUntil(DateTime<Utc>),
}

/// One reserved request, to settle once its answer comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub(crate) id: u64,
}

/// The sliding log of one (scope, group), as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Log {
    /// Requests answered and on their way, µs since the epoch (see [`crate::sliding_log`]).
    #[serde(flatten)]
    slots: SlidingLog,
    /// A 429's Retry-After: nobody calls this group before it (µs since the epoch).
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    blocked_until: Option<i64>,
}

/// How many times a reservation retries after losing a race to another instance before it
/// answers "a moment later".
const RACES: usize = 8;

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_else(Utc::now)
}

/// What this process last read or wrote of one entry, while that entry is live.
#[derive(Default)]
struct Known {
    entry: Option<(Log, u64, DateTime<Utc>)>,
}

impl Known {
    /// The log as this process last saw it, with the version to write it back over, unless the
    /// stored entry may have expired since (then it may have been deleted and started again
    /// at version 1: a version is only a fence while the entry lives).
    fn take(&mut self, now: DateTime<Utc>) -> Option<(Log, u64, DateTime<Utc>)> {
        self.entry.take().filter(|(_, _, expires)| *expires > now)
    }
}

/// One look at an entry.
struct View {
    log: Log,
    /// What a write over this view must find.
    expect: Expect,
    /// Read from the store just now (with the stored version and expiry, None if absent), or
    /// None if remembered from this process's last look.
    read_now: Option<Option<(u64, DateTime<Utc>)>>,
}

/// The governor of one scope: a seller's context as seen from one egress IP.
///
/// **Round trips.** Each entry's reads and writes from one process go one at a time (an async
/// lock per entry), and the process keeps what it last wrote. A reservation or settlement then
/// writes over that version without reading first; only when another instance wrote in
/// between does the conditional write fail, and the entry is read again. A "wait" is answered
/// only from a fresh read. The write's version check is what keeps the fleet inside the
/// limits, as before; the lock only keeps one process's tasks from racing each other.
#[derive(Clone)]
pub struct FleetGovernor {
    cache: Arc<dyn SharedCache>,
    scope: String,
    /// Per entry name: this process's lock and last known state.
    known: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<Known>>>>>,
    /// Replaced once KSeF says what it applies to this context (`GET /rate-limits`).
    limits: Arc<std::sync::RwLock<ClientLimits>>,
    /// The longest a call waits in place for its slot; past it the call fails `RateLimited`.
    pub max_inline_wait: Duration,
}

impl std::fmt::Debug for FleetGovernor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetGovernor({})", self.scope)
    }
}

impl FleetGovernor {
    /// `scope` names the counted pair: the seller's NIP and the egress the calls leave from
    /// (KSeF counts per context and client IP), e.g. `9999999999@nat-eip`.
    pub fn new(cache: Arc<dyn SharedCache>, scope: impl Into<String>, limits: ClientLimits) -> FleetGovernor {
        FleetGovernor {
            cache,
            scope: scope.into(),
            known: Arc::default(),
            limits: Arc::new(std::sync::RwLock::new(limits)),
            max_inline_wait: Duration::from_secs(2),
        }
    }

    pub fn with_max_inline_wait(mut self, wait: Duration) -> FleetGovernor {
        self.max_inline_wait = wait;
        self
    }

    pub fn limits(&self) -> ClientLimits {
        self.limits.read().expect("limits lock").clone()
    }

    /// Keeps to `limits` from now on (every clone of this governor).
    pub fn set_limits(&self, limits: ClientLimits) {
        *self.limits.write().expect("limits lock") = limits;
    }

    fn entry_name(&self, group: EndpointGroup) -> String {
        format!("ratelog/{}/{group:?}", self.scope)
    }

    /// This process's lock and memory of one entry.
    fn slot(&self, name: &str) -> Arc<tokio::sync::Mutex<Known>> {
        self.known.lock().expect("known lock").entry(name.to_owned()).or_default().clone()
    }

    /// The entry as this process last saw it (no round trip), or as stored now.
    async fn current(&self, known: &mut Known, name: &str, now: DateTime<Utc>) -> Result<View, StoreError> {
        if let Some((log, version, _)) = known.take(now) {
            return Ok(View {
                log,
                expect: Expect::Version(version),
                read_now: None,
            });
        }
        Ok(match self.cache.get(name, now).await? {
            Some(e) => View {
                log: serde_json::from_str(&e.value).unwrap_or_default(),
                expect: Expect::Version(e.version),
                read_now: Some(Some((e.version, e.expires_at))),
            },
            None => View {
                log: Log::default(),
                expect: Expect::Absent,
                read_now: Some(None),
            },
        })
    }

    /// Remembers a freshly read entry that this process leaves as it is.
    fn keep_read(known: &mut Known, view: View) {
        if let Some(Some((version, expires_at))) = view.read_now {
            known.entry = Some((view.log, version, expires_at));
        }
    }

    /// Writes `log` over `expect`; on success remembers it as this process's view. False when
    /// another writer got there first (the view is then forgotten: the next look reads).
    async fn write(
        &self,
        known: &mut Known,
        name: &str,
        log: Log,
        keep_until: DateTime<Utc>,
        expect: Expect,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let value = serde_json::to_string(&log).expect("a rate log always serialises");
        match self.cache.put(name, value, keep_until, expect, now).await {
            Ok(entry) => {
                known.entry = Some((log, entry.version, entry.expires_at));
                Ok(true)
            }
            Err(StoreError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Counts a request of `group` at `now` as on its way (for at most `in_flight_for`, the
    /// client's request timeout) if every window has room and no block stands; otherwise says
    /// when to come back. Groups without a limit always go.
    pub async fn reserve(&self, group: EndpointGroup, now: DateTime<Utc>, in_flight_for: Duration) -> Result<Reservation, StoreError> {
        let ticket = Ticket {
            id: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
        };
        let limits = self.limits();
        if !limits.enabled {
            return Ok(Reservation::Go(ticket));
        }
        let Some(limit) = limits.groups.get(&group).copied() else {
            return Ok(Reservation::Go(ticket));
        };
        let windows = windows_us(limit, &limits);
        let longest = windows.iter().map(|w| w.1).max().unwrap_or(0);
        let flight_us = i64::try_from(in_flight_for.as_micros()).unwrap_or(i64::MAX / 4);
        let name = self.entry_name(group);
        let slot = self.slot(&name);
        let mut known = slot.lock().await;
        let now_us = micros(now);
        let mut races = 0;
        while races < RACES {
            let mut view = self.current(&mut known, &name, now).await?;
            let log = &mut view.log;
            let wait = match log.blocked_until.filter(|b| *b > now_us) {
                Some(b) => Some(from_micros(b)),
                None => {
                    log.blocked_until = None;
                    log.slots
                        .reserve(ticket.id, now_us, now_us + flight_us, &windows)
                        .map(|wait| from_micros(now_us + wait))
                }
            };
            if let Some(until) = wait {
                if view.read_now.is_none() {
                    // Another instance may have settled its requests since: look before waiting.
                    continue;
                }
                Self::keep_read(&mut known, view);
                return Ok(Reservation::WaitUntil(until));
            }
            let keep_until = from_micros(log.slots.last_time().max(now_us) + longest) + chrono::Duration::minutes(1);
            if self.write(&mut known, &name, view.log, keep_until, view.expect, now).await? {
                return Ok(Reservation::Go(ticket));
            }
            races += 1;
        }
        // Lost every race: others are taking the slots; look again in a moment.
        Ok(Reservation::WaitUntil(now + chrono::Duration::milliseconds(20)))
    }

    /// The request of `ticket` was answered (or failed) at `at`: it counts there from now on,
    /// no longer as on its way. Unsettled (a store failure here), it keeps counting as on its
    /// way until its `in_flight_for` ends: later, never earlier, than it counts settled.
    pub async fn answered(&self, group: EndpointGroup, ticket: Ticket, at: DateTime<Utc>) -> Result<(), StoreError> {
        let limits = self.limits();
        if !limits.enabled || !limits.groups.contains_key(&group) {
            return Ok(());
        }
        let name = self.entry_name(group);
        let slot = self.slot(&name);
        let mut known = slot.lock().await;
        let mut races = 0;
        while races < RACES {
            let mut view = self.current(&mut known, &name, at).await?;
            let log = &mut view.log;
            if !log.slots.answered(ticket.id, micros(at)) {
                if view.read_now.is_none() {
                    continue;
                }
                Self::keep_read(&mut known, view);
                return Ok(());
            }
            let windows = limits.groups.get(&group).map(|l| windows_us(*l, &limits)).unwrap_or_default();
            let longest = windows.iter().map(|w| w.1).max().unwrap_or(0);
            let keep_until = from_micros(log.slots.last_time().max(micros(at)) + longest) + chrono::Duration::minutes(1);
            let keep_until = log.blocked_until.map(from_micros).map_or(keep_until, |b| keep_until.max(b));
            if self.write(&mut known, &name, view.log, keep_until, view.expect, at).await? {
                return Ok(());
            }
            races += 1;
        }
        Err(StoreError::Unavailable(format!(
            "could not settle a request in {name}: too many concurrent writers"
        )))
    }

    /// KSeF answered 429 until `until`: every instance leaves `group` alone until then.
    pub async fn block(&self, group: EndpointGroup, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), StoreError> {
        let name = self.entry_name(group);
        let slot = self.slot(&name);
        let mut known = slot.lock().await;
        let mut races = 0;
        while races < RACES {
            let mut view = self.current(&mut known, &name, now).await?;
            let log = &mut view.log;
            let until_us = micros(until);
            if log.blocked_until.is_some_and(|b| b >= until_us) {
                if view.read_now.is_none() {
                    continue;
                }
                Self::keep_read(&mut known, view);
                return Ok(());
            }
            log.blocked_until = Some(until_us);
            let limits = self.limits();
            let longest = limits
                .groups
                .get(&group)
                .and_then(|l| windows_us(*l, &limits).iter().map(|w| w.1).max())
                .unwrap_or(0);
            let keep_until = until.max(now).max(from_micros(log.slots.last_time().max(micros(now)) + longest)) + chrono::Duration::hours(1);
            if self.write(&mut known, &name, view.log, keep_until, view.expect, now).await? {
                return Ok(());
            }
            races += 1;
        }
        Err(StoreError::Unavailable(format!(
            "could not record a KSeF block for {name}: too many concurrent writers"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use relay_domain::memory::MemorySharedCache;
    use relay_domain::ports::CacheEntry;

    use super::*;
    use crate::limiter::Limit;

    /// The shared cache, counting round trips and failed conditional writes.
    #[derive(Default)]
    struct Counting {
        inner: MemorySharedCache,
        gets: AtomicUsize,
        puts: AtomicUsize,
        conflicts: AtomicUsize,
    }

    #[async_trait]
    impl SharedCache for Counting {
        async fn get(&self, name: &str, now: DateTime<Utc>) -> Result<Option<CacheEntry>, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let read = self.inner.get(name, now).await;
            // The answer's way back: other tasks run meanwhile.
            tokio::time::sleep(Duration::from_millis(1)).await;
            read
        }
        async fn put(
            &self,
            name: &str,
            value: String,
            expires_at: DateTime<Utc>,
            expect: Expect,
            now: DateTime<Utc>,
        ) -> Result<CacheEntry, StoreError> {
            self.puts.fetch_add(1, Ordering::SeqCst);
            let out = self.inner.put(name, value, expires_at, expect, now).await;
            if matches!(out, Err(StoreError::VersionConflict { .. })) {
                self.conflicts.fetch_add(1, Ordering::SeqCst);
            }
            out
        }
        async fn remove(&self, name: &str, version: u64) -> Result<(), StoreError> {
            self.inner.remove(name, version).await
        }
    }

    const G: EndpointGroup = EndpointGroup::InvoiceSend;
    const FLIGHT: Duration = Duration::from_secs(30);

    fn limits(limit: Limit) -> ClientLimits {
        ClientLimits::official().with_margin(0.0).with(G, limit)
    }

    fn per_hour(n: u32) -> Limit {
        Limit {
            per_second: None,
            per_minute: None,
            per_hour: Some(n),
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    fn go(r: Reservation) -> Ticket {
        match r {
            Reservation::Go(t) => t,
            other => panic!("expected to go, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_instance_alone_writes_once_to_reserve_and_once_to_settle_without_reading() {
        let cache = Arc::new(Counting::default());
        let gov = FleetGovernor::new(cache.clone(), "1111111111@test", limits(per_hour(100)));
        for i in 0..20 {
            let at = t0() + secs(i);
            let ticket = go(gov.reserve(G, at, FLIGHT).await.unwrap());
            gov.answered(G, ticket, at).await.unwrap();
        }
        // The first reservation reads (nothing stored yet); every later step writes over what
        // this instance wrote last.
        assert_eq!(cache.gets.load(Ordering::SeqCst), 1);
        assert_eq!(cache.puts.load(Ordering::SeqCst), 40);
        assert_eq!(cache.conflicts.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn instances_that_remember_their_last_write_never_pass_the_limit_together() {
        // Three instances take turns: each one's remembered entry is stale after the others
        // wrote, so its write fails, it reads, and it counts what the others reserved.
        let cache = Arc::new(Counting::default());
        let govs: Vec<FleetGovernor> = (0..3)
            .map(|_| FleetGovernor::new(cache.clone(), "1111111111@test", limits(per_hour(7))))
            .collect();
        let mut went = 0;
        for round in 0..6 {
            for (i, gov) in govs.iter().enumerate() {
                let at = t0() + secs(round * 3 + i as i64);
                match gov.reserve(G, at, FLIGHT).await.unwrap() {
                    Reservation::Go(ticket) => {
                        went += 1;
                        gov.answered(G, ticket, at).await.unwrap();
                    }
                    Reservation::WaitUntil(until) => assert!(until > at),
                }
            }
        }
        assert_eq!(went, 7, "an hour's limit of 7 across three instances");
        assert!(
            cache.conflicts.load(Ordering::SeqCst) > 0,
            "the stale views were written over and refused"
        );
    }

    #[tokio::test]
    async fn a_wait_is_answered_from_a_fresh_read_not_from_a_remembered_entry() {
        // One a minute. B's request is on its way when A looks (A must wait, and remembers the
        // entry); B's answer then counts at 2 s. At 70 s A's memory still has B's request on
        // its way until 30 s (counting at 30 s, inside the minute), but the stored entry has it
        // at 2 s: the window is free, and A must go.
        let cache = Arc::new(Counting::default());
        let minute = Limit {
            per_second: None,
            per_minute: Some(1),
            per_hour: None,
        };
        let a = FleetGovernor::new(cache.clone(), "1111111111@test", limits(minute));
        let b = FleetGovernor::new(cache.clone(), "1111111111@test", limits(minute));
        let ticket = go(b.reserve(G, t0(), FLIGHT).await.unwrap());
        assert!(matches!(
            a.reserve(G, t0() + secs(1), FLIGHT).await.unwrap(),
            Reservation::WaitUntil(_)
        ));
        b.answered(G, ticket, t0() + secs(2)).await.unwrap();
        go(a.reserve(G, t0() + secs(70), FLIGHT).await.unwrap());
    }

    #[tokio::test]
    async fn one_processes_tasks_reserving_at_once_do_not_race_each_other() {
        let cache = Arc::new(Counting::default());
        let gov = FleetGovernor::new(cache.clone(), "1111111111@test", limits(per_hour(1000)));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let gov = gov.clone();
                tokio::spawn(async move {
                    let ticket = go(gov.reserve(G, t0(), FLIGHT).await.unwrap());
                    tokio::task::yield_now().await;
                    gov.answered(G, ticket, t0() + secs(1)).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(cache.conflicts.load(Ordering::SeqCst), 0);
        assert_eq!(cache.puts.load(Ordering::SeqCst), 100);
        let stored: Log = serde_json::from_str(&cache.inner.get(&gov.entry_name(G), t0()).await.unwrap().unwrap().value).unwrap();
        assert_eq!(stored.slots.answered.len(), 50);
        assert!(stored.slots.in_flight.is_empty());
    }
}
