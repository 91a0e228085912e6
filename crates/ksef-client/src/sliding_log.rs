//! The sliding log both limiters keep (the process's [`crate::limiter`] and the fleet's
//! [`crate::governor`]): the requests of one endpoint group, counted where KSeF counts them.
//!
//! KSeF counts a request when it *arrives*; a client only knows when it *reserved* the slot and
//! when the *answer* came back. Between the two lie the client's own scheduling, a connection
//! from the pool (or a new one), the network and KSeF's front end: measured on a loaded machine
//! (docs/performance.md), up to 375 ms between a reservation and its arrival, while the next
//! request, reserved a window later, arrived 1 ms after its reservation. A log of reservation
//! times with a fixed margin lets such pairs into one of KSeF's windows.
//!
//! So a request counts at the latest moment it can have reached KSeF: while it is on its way it
//! counts in every window (it may arrive at any moment), and once answered it counts at the
//! answer's time. If request `j` is reserved at `r_j` and an earlier one was answered at
//! `d_i <= r_j - W`, then `a_j >= r_j >= d_i + W >= a_i + W`: they cannot share a window of
//! length `W`. Of any `n + 1` requests that KSeF saw in one window, the last reserved saw the
//! other `n` in this log (on their way or answered inside the window) and waited. The price is
//! one round trip per window, not a guessed margin. A request whose answer never comes (a
//! dropped future, a crashed instance) stops counting as on its way at `counted_until` (its
//! reservation plus the client's request timeout, past which it cannot still be sent).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::limiter::{ClientLimits, Limit};

/// The windows of a limit in µs, stretched by the margin and shrunk by the time scale.
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

/// A request on its way to KSeF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InFlight {
    #[serde(rename = "i")]
    pub id: u64,
    /// When it stops counting as on its way (its reservation plus the request timeout).
    #[serde(rename = "u")]
    pub counted_until: i64,
}

/// One group's requests: answered ones at their answer time, and those still on their way.
/// Times in µs (since the epoch in the shared cache, since the process's origin in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SlidingLog {
    /// When each answered request's answer came: the latest it can have reached KSeF.
    #[serde(rename = "t")]
    pub answered: VecDeque<i64>,
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub in_flight: Vec<InFlight>,
}

impl SlidingLog {
    /// The times the requests count at, as of `now`, oldest first: one on its way counts now.
    fn counted_times(&self, now: i64) -> VecDeque<i64> {
        let mut times: Vec<i64> = self.answered.iter().copied().collect();
        times.extend(self.in_flight.iter().map(|f| f.counted_until.min(now)));
        times.sort_unstable();
        times.into()
    }

    /// Forgets what no window of length `longest` can see any more at `now`.
    fn prune(&mut self, now: i64, longest: i64) {
        // Instances' clocks differ a little: keep the log ordered.
        self.answered.make_contiguous().sort_unstable();
        while self.answered.front().is_some_and(|t| now - t >= longest) {
            self.answered.pop_front();
        }
        self.in_flight.retain(|f| now - f.counted_until < longest);
    }

    /// Counts request `id` as on its way from `now` until `counted_until` if every window has
    /// room (None); otherwise says how long to wait before asking again.
    pub fn reserve(&mut self, id: u64, now: i64, counted_until: i64, windows: &[(usize, i64)]) -> Option<i64> {
        let longest = windows.iter().map(|w| w.1).max().unwrap_or(0);
        self.prune(now, longest);
        if let Some(wait) = wait_needed(&self.counted_times(now), now, windows) {
            return Some(wait);
        }
        self.in_flight.push(InFlight {
            id,
            counted_until: counted_until.max(now),
        });
        None
    }

    /// Request `id` was answered at `at`: from now on it counts there. False if it is not on
    /// its way any more (already settled, or forgotten after `counted_until`).
    pub fn answered(&mut self, id: u64, at: i64) -> bool {
        let Some(pos) = self.in_flight.iter().position(|f| f.id == id) else {
            return false;
        };
        let f = self.in_flight.swap_remove(pos);
        let at = at.min(f.counted_until);
        let pos = self.answered.partition_point(|t| *t <= at);
        self.answered.insert(pos, at);
        true
    }

    /// The longest time anything in the log still matters: for the shared entry's expiry.
    pub fn last_time(&self) -> i64 {
        let answered = self.answered.back().copied().unwrap_or(i64::MIN);
        self.in_flight.iter().map(|f| f.counted_until).fold(answered, i64::max)
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

    #[test]
    fn a_request_on_its_way_counts_until_answered_then_at_its_answer() {
        let w = [(2, 1000)];
        let mut log = SlidingLog::default();
        assert_eq!(log.reserve(1, 0, 30_000, &w), None);
        assert_eq!(log.reserve(2, 10, 30_000, &w), None);
        // Both on their way: the window is full however long ago they were reserved.
        assert!(log.reserve(3, 5_000, 30_000, &w).is_some());
        // Answered at 5_400 and 5_450: the first frees its slot a window after its answer
        // (6_400), not after its reservation (1_000).
        assert!(log.answered(1, 5_400));
        assert!(log.answered(2, 5_450));
        assert!(!log.answered(2, 5_450), "settled once");
        assert_eq!(log.reserve(3, 6_100, 30_000, &w), Some(300));
        assert_eq!(log.reserve(3, 6_400, 30_000, &w), None);
    }

    #[test]
    fn a_request_never_answered_stops_counting_as_on_its_way_at_its_limit() {
        let w = [(1, 1000)];
        let mut log = SlidingLog::default();
        assert_eq!(log.reserve(1, 0, 3_000, &w), None);
        // On its way until 3_000, then in the window until 4_000.
        assert_eq!(log.reserve(2, 2_000, 5_000, &w), Some(1000));
        assert_eq!(log.reserve(2, 3_500, 6_000, &w), Some(500));
        assert_eq!(log.reserve(2, 4_000, 7_000, &w), None);
        // A late answer finds it forgotten.
        assert!(!log.answered(1, 9_000));
    }

    #[test]
    fn the_stored_form_reads_an_older_log_without_requests_on_their_way() {
        let old: SlidingLog = serde_json::from_str(r#"{"t":[1,2]}"#).unwrap();
        assert_eq!(old.answered, VecDeque::from([1, 2]));
        assert!(old.in_flight.is_empty());
    }
}
