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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::{Expect, SharedCache, StoreError};
use serde::{Deserialize, Serialize};

use crate::limiter::{ClientLimits, EndpointGroup, Limit};

/// What a reservation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The request is counted: go now.
    Go,
    /// No room before this time (a full window, or a 429 block).
    WaitUntil(DateTime<Utc>),
}

/// The sliding log of one (scope, group), as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Log {
    /// Request times, microseconds since the epoch, oldest first.
    #[serde(rename = "t")]
    times: VecDeque<i64>,
    /// A 429's Retry-After: nobody calls this group before it (µs since the epoch).
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    blocked_until: Option<i64>,
}

/// How many times a reservation retries after losing a race to another instance before it
/// answers "a moment later".
const RACES: usize = 8;

/// The windows of a limit in µs, stretched by the margin and shrunk by the time scale (as the
/// process limiter does).
pub(crate) fn windows_us(l: Limit, limits: &ClientLimits) -> Vec<(usize, i64)> {
    let scale = limits.time_scale.max(1e-6);
    let margin = limits.margin.max(0.0);
    [(l.per_second, 1.0), (l.per_minute, 60.0), (l.per_hour, 3600.0)]
        .into_iter()
        .filter_map(|(n, secs)| {
            n.filter(|n| *n > 0)
                .map(|n| (n as usize, (secs * 1e6 * (1.0 + margin) / scale).ceil() as i64))
        })
        .collect()
}

/// How long a request at `now` must wait for every window to have room, or None if it may go.
/// `log` holds earlier request times in one unit (any), oldest first; `windows` are (count,
/// length) in that unit.
pub(crate) fn wait_needed(log: &VecDeque<i64>, now: i64, windows: &[(usize, i64)]) -> Option<i64> {
    windows
        .iter()
        .filter_map(|(n, len)| {
            let in_window: Vec<i64> = log.iter().copied().filter(|t| now - t < *len).collect();
            // Full: wait until the oldest request that counts leaves the window.
            (in_window.len() >= *n).then(|| len - (now - in_window[in_window.len() - n]))
        })
        .max()
        .map(|w| w.max(1))
}

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
    limits: ClientLimits,
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
            limits,
            max_inline_wait: Duration::from_secs(2),
        }
    }

    pub fn with_max_inline_wait(mut self, wait: Duration) -> FleetGovernor {
        self.max_inline_wait = wait;
        self
    }

    pub fn limits(&self) -> &ClientLimits {
        &self.limits
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

    /// Counts a request of `group` at `now` if every window has room and no block stands;
    /// otherwise says when to come back. Groups without a limit always go.
    pub async fn reserve(&self, group: EndpointGroup, now: DateTime<Utc>) -> Result<Reservation, StoreError> {
        if !self.limits.enabled {
            return Ok(Reservation::Go);
        }
        let Some(limit) = self.limits.groups.get(&group).copied() else {
            return Ok(Reservation::Go);
        };
        let windows = windows_us(limit, &self.limits);
        let longest = windows.iter().map(|w| w.1).max().unwrap_or(0);
        let name = self.entry_name(group);
        for _ in 0..RACES {
            let now_us = micros(now);
            let (mut log, expect) = self.read(&name, now).await?;
            if let Some(b) = log.blocked_until.filter(|b| *b > now_us) {
                return Ok(Reservation::WaitUntil(from_micros(b)));
            }
            log.blocked_until = None;
            // Instances' clocks differ a little: keep the log ordered.
            log.times.make_contiguous().sort_unstable();
            while log.times.front().is_some_and(|t| now_us - t >= longest) {
                log.times.pop_front();
            }
            if let Some(wait) = wait_needed(&log.times, now_us, &windows) {
                return Ok(Reservation::WaitUntil(from_micros(now_us + wait)));
            }
            log.times.push_back(now_us);
            let keep_until = from_micros(now_us + longest) + chrono::Duration::minutes(1);
            if self.write(&name, &log, keep_until, expect, now).await? {
                return Ok(Reservation::Go);
            }
        }
        // Lost every race: others are taking the slots; look again in a moment.
        Ok(Reservation::WaitUntil(now + chrono::Duration::milliseconds(20)))
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
            let keep_until = until.max(now) + chrono::Duration::hours(1);
            if self.write(&name, &log, keep_until, expect, now).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "could not record a KSeF block for {name}: too many concurrent writers"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_waits_until_its_oldest_request_leaves() {
        let log: VecDeque<i64> = [0, 100, 200].into_iter().collect();
        // Three a 1000-long window: the fourth at 500 waits until 1000 (0 + 1000).
        assert_eq!(wait_needed(&log, 500, &[(3, 1000)]), Some(500));
        assert_eq!(wait_needed(&log, 1000, &[(3, 1000)]), None);
        // The longest of several windows decides.
        assert_eq!(wait_needed(&log, 500, &[(3, 1000), (2, 2000)]), Some(1600));
        assert_eq!(wait_needed(&VecDeque::new(), 0, &[(1, 10)]), None);
    }

    #[test]
    fn windows_follow_the_scale_and_the_margin() {
        let limits = ClientLimits::official().scaled(10.0).with_margin(0.0);
        let w = windows_us(Limit::new(10, 30, 180), &limits);
        assert_eq!(w, vec![(10, 100_000), (30, 6_000_000), (180, 360_000_000)]);
    }
}
