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

/// The governor of one scope: a seller's context as seen from one egress IP.
#[derive(Clone)]
pub struct FleetGovernor {
    cache: Arc<dyn SharedCache>,
    scope: String,
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

    async fn read(&self, name: &str, now: DateTime<Utc>) -> Result<(Log, Expect), StoreError> {
        Ok(match self.cache.get(name, now).await? {
            Some(e) => (serde_json::from_str(&e.value).unwrap_or_default(), Expect::Version(e.version)),
            None => (Log::default(), Expect::Absent),
        })
    }

    async fn write(
        &self,
        name: &str,
        log: &Log,
        keep_until: DateTime<Utc>,
        expect: Expect,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let value = serde_json::to_string(log).expect("a rate log always serialises");
        match self.cache.put(name, value, keep_until, expect, now).await {
            Ok(_) => Ok(true),
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
        for _ in 0..RACES {
            let now_us = micros(now);
            let (mut log, expect) = self.read(&name, now).await?;
            if let Some(b) = log.blocked_until.filter(|b| *b > now_us) {
                return Ok(Reservation::WaitUntil(from_micros(b)));
            }
            log.blocked_until = None;
            if let Some(wait) = log.slots.reserve(ticket.id, now_us, now_us + flight_us, &windows) {
                return Ok(Reservation::WaitUntil(from_micros(now_us + wait)));
            }
            let keep_until = from_micros(log.slots.last_time().max(now_us) + longest) + chrono::Duration::minutes(1);
            if self.write(&name, &log, keep_until, expect, now).await? {
                return Ok(Reservation::Go(ticket));
            }
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
        for _ in 0..RACES {
            let (mut log, expect) = self.read(&name, at).await?;
            if !log.slots.answered(ticket.id, micros(at)) {
                return Ok(());
            }
            let windows = limits.groups.get(&group).map(|l| windows_us(*l, &limits)).unwrap_or_default();
            let longest = windows.iter().map(|w| w.1).max().unwrap_or(0);
            let keep_until = from_micros(log.slots.last_time().max(micros(at)) + longest) + chrono::Duration::minutes(1);
            let keep_until = log.blocked_until.map(from_micros).map_or(keep_until, |b| keep_until.max(b));
            if self.write(&name, &log, keep_until, expect, at).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "could not settle a request in {name}: too many concurrent writers"
        )))
    }

    /// KSeF answered 429 until `until`: every instance leaves `group` alone until then.
    pub async fn block(&self, group: EndpointGroup, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), StoreError> {
        let name = self.entry_name(group);
        for _ in 0..RACES {
            let (mut log, expect) = self.read(&name, now).await?;
            let until_us = micros(until);
            if log.blocked_until.is_some_and(|b| b >= until_us) {
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
            if self.write(&name, &log, keep_until, expect, now).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "could not record a KSeF block for {name}: too many concurrent writers"
        )))
    }
}
