//! When to try again. One policy for every retry in the relay: immediately, 30 s, 2 min, then
//! growing by a factor (10 min, 50 min, ...) up to a cap, with jitter so that many documents that
//! failed together do not all come back together. A rate limit parks the document until KSeF's
//! Retry-After and costs no attempt.
//!
//! The budget counts sends. Opening a new session or logging in again after KSeF said so
//! ([`Charge::Recovery`]), and a reconciliation read that failed ([`RetryPolicy::decide_read`]),
//! sent nothing: they spend a separate, larger recovery limit, so an endless recovery loop still
//! ends FAILED but never eats the invoice's send budget. An operator's problem
//! ([`ErrorClass::Operator`]) spends neither: it parks the seller's work with growing waits
//! ([`RetryPolicy::operator_wait`]) until someone fixes it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::failure::ErrorClass;

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after `delay`; the failed attempt counted against the budget.
    RetryAfter { delay: Duration },
    /// Wait until `until` (rate limit); the attempt did not count.
    ParkUntil { until: DateTime<Utc> },
    /// Fix what the class names (new session, new token), then retry at once; counts an attempt.
    FixAndRetry,
    /// The budget is spent: FAILED, and the message goes to the DLQ.
    Exhausted,
    /// Permanent: REJECTED, to the corrections queue. No retry can help.
    Reject,
    /// Duplicate: prove the original is ours (ACCEPTED) or raise a CONFLICT. Never resend.
    ResolveDuplicate,
    /// An operator's problem: park the document and the seller's other work for
    /// [`RetryPolicy::operator_wait`], raise the alarm; costs nothing, never REJECTED.
    ParkForOperator,
}

/// What a failure spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// A send attempt that failed: the invoice's budget ([`RetryPolicy::max_attempts`]).
    Attempt,
    /// A session or login to renew, or a reconciliation read that failed: nothing was sent, so
    /// it spends the separate recovery limit ([`RetryPolicy::max_recoveries`]).
    Recovery,
    /// Nothing: a rate limit, an operator's problem, a final verdict.
    Nothing,
}

/// The first wait of a seller parked for an operator, and the longest.
pub const OPERATOR_FIRST_WAIT: Duration = Duration::from_secs(5 * 60);
pub const OPERATOR_MAX_WAIT: Duration = Duration::from_secs(3600);

/// Why a policy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry policy: {0}")]
pub struct PolicyError(String);

/// The retry policy. Build with [`RetryPolicy::standard`] or [`RetryPolicy::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    max_recoveries: u32,
    schedule: Vec<Duration>,
    growth: f64,
    cap: Duration,
    jitter: f64,
}

/// The longest a message can be hidden in SQS (visibility timeout): 12 hours.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(12 * 3600);

impl RetryPolicy {
    /// The design's policy: immediately, 30 s, 2 min, then ×5 (10 min, 50 min, ...) capped at
    /// 1 h, ±20 % jitter, with `max_attempts` attempts in all.
    pub fn standard(max_attempts: u32) -> Result<Self, PolicyError> {
        RetryPolicy::new(
            max_attempts,
            vec![Duration::ZERO, Duration::from_secs(30), Duration::from_secs(120)],
            5.0,
            Duration::from_secs(3600),
            0.2,
        )
    }

    /// `schedule[i]` is the delay after the (i+1)-th failed attempt; after the schedule the last
    /// delay grows by `growth` each time, up to `cap`. `jitter` is the ± fraction applied.
    pub fn new(max_attempts: u32, schedule: Vec<Duration>, growth: f64, cap: Duration, jitter: f64) -> Result<Self, PolicyError> {
        if max_attempts == 0 {
            return Err(PolicyError("max_attempts must be at least 1".into()));
        }
        if schedule.is_empty() {
            return Err(PolicyError("the schedule needs at least one delay".into()));
        }
        if schedule.windows(2).any(|w| w[1] < w[0]) {
            return Err(PolicyError("the schedule must not decrease".into()));
        }
        if !(growth.is_finite() && growth >= 1.0) {
            return Err(PolicyError("growth must be a finite factor >= 1".into()));
        }
        if cap > MAX_RETRY_DELAY || cap < *schedule.last().expect("checked non-empty") {
            return Err(PolicyError(
                "cap must be at least the last scheduled delay and at most 12 h (the SQS visibility limit)".into(),
            ));
        }
        if !(0.0..1.0).contains(&jitter) {
            return Err(PolicyError("jitter must be in [0, 1)".into()));
        }
        Ok(RetryPolicy {
            max_attempts,
            max_recoveries: max_attempts.saturating_mul(2),
            schedule,
            growth,
            cap,
            jitter,
        })
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How many recoveries (new sessions, logins, failed reconciliation reads) a document may
    /// take before it is FAILED. Twice the send budget unless set.
    pub fn max_recoveries(&self) -> u32 {
        self.max_recoveries
    }

    /// The same policy with another recovery limit (at least 1).
    pub fn with_max_recoveries(mut self, max_recoveries: u32) -> Self {
        self.max_recoveries = max_recoveries.max(1);
        self
    }

    /// How long a seller's work stays parked after its `strikes`-th operator failure in a row:
    /// 5 min, doubling, up to 1 h; `unit` in [0, 1) adds up to +10 % so the parked documents do
    /// not all wake in the same second.
    pub fn operator_wait(strikes: u32, unit: f64) -> Duration {
        let doubled = OPERATOR_FIRST_WAIT.as_secs_f64() * 2f64.powi(strikes.clamp(1, 16) as i32 - 1);
        let base = doubled.min(OPERATOR_MAX_WAIT.as_secs_f64());
        Duration::from_secs_f64(base * (1.0 + 0.1 * unit.clamp(0.0, 1.0)))
    }

    /// The delay before the next try after `failed_attempts` failed attempts (1-based), before jitter.
    pub fn base_delay(&self, failed_attempts: u32) -> Duration {
        let i = failed_attempts.max(1) as usize - 1;
        if let Some(d) = self.schedule.get(i) {
            return (*d).min(self.cap);
        }
        let last = *self.schedule.last().expect("checked non-empty");
        let extra = (i + 1 - self.schedule.len()) as i32;
        let grown = last.as_secs_f64() * self.growth.powi(extra);
        if !grown.is_finite() || grown >= self.cap.as_secs_f64() {
            self.cap
        } else {
            Duration::from_secs_f64(grown)
        }
    }

    /// `base` spread by ±jitter; `unit` is a uniform sample in [0, 1). Never above the cap.
    pub fn jittered(&self, base: Duration, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit;
        Duration::from_secs_f64(base.as_secs_f64() * factor).min(self.cap)
    }

    /// Decides what follows a failure. `spent` counts what [`RetryPolicy::charge`] charges the
    /// class to, including this failure: the failed send attempts for a transient failure, the
    /// recoveries for a new session or login; `unit` is a uniform sample in [0, 1).
    pub fn decide(&self, class: &ErrorClass, spent: u32, now: DateTime<Utc>, unit: f64) -> RetryDecision {
        match class {
            ErrorClass::RateLimited { until } => {
                // A little positive jitter so parked documents do not all wake in the same second.
                let spread = Duration::from_secs_f64((unit.clamp(0.0, 1.0) * 2.0).min(2.0));
                let until = (*until).max(now) + chrono::Duration::from_std(spread).unwrap_or_default();
                RetryDecision::ParkUntil { until }
            }
            ErrorClass::Permanent => RetryDecision::Reject,
            ErrorClass::Duplicate { .. } => RetryDecision::ResolveDuplicate,
            ErrorClass::Operator => RetryDecision::ParkForOperator,
            ErrorClass::NeedsNewSession | ErrorClass::NeedsReauth if spent >= self.max_recoveries => RetryDecision::Exhausted,
            ErrorClass::NeedsNewSession | ErrorClass::NeedsReauth => RetryDecision::FixAndRetry,
            ErrorClass::Transient if spent >= self.max_attempts => RetryDecision::Exhausted,
            ErrorClass::Transient => RetryDecision::RetryAfter {
                delay: self.jittered(self.base_delay(spent), unit),
            },
        }
    }

    /// Decides what follows a failed reconciliation read (is our invoice in that session?).
    /// The read sent nothing and says nothing about the invoice, so it is never a rejection and
    /// never spends the send budget: `recoveries` (including this one) is checked against the
    /// recovery limit; transient failures wait on the usual schedule.
    pub fn decide_read(&self, class: &ErrorClass, recoveries: u32, now: DateTime<Utc>, unit: f64) -> RetryDecision {
        match class {
            ErrorClass::RateLimited { .. } | ErrorClass::Operator => self.decide(class, recoveries, now, unit),
            _ if recoveries >= self.max_recoveries => RetryDecision::Exhausted,
            ErrorClass::NeedsNewSession | ErrorClass::NeedsReauth => RetryDecision::FixAndRetry,
            _ => RetryDecision::RetryAfter {
                delay: self.jittered(self.base_delay(recoveries), unit),
            },
        }
    }

    /// What a failure of this class spends.
    pub fn charge(class: &ErrorClass) -> Charge {
        match class {
            ErrorClass::Transient => Charge::Attempt,
            ErrorClass::NeedsNewSession | ErrorClass::NeedsReauth => Charge::Recovery,
            ErrorClass::RateLimited { .. } | ErrorClass::Operator | ErrorClass::Permanent | ErrorClass::Duplicate { .. } => Charge::Nothing,
        }
    }

    /// Whether this class charges an attempt to the send budget.
    pub fn costs_attempt(class: &ErrorClass) -> bool {
        Self::charge(class) == Charge::Attempt
    }

    /// [`RetryPolicy::decide_read`] with a random jitter sample.
    pub fn decide_read_now(&self, class: &ErrorClass, recoveries: u32, now: DateTime<Utc>) -> RetryDecision {
        self.decide_read(class, recoveries, now, rand::random::<f64>())
    }

    /// [`RetryPolicy::decide`] with a random jitter sample.
    pub fn decide_now(&self, class: &ErrorClass, failed_attempts: u32, now: DateTime<Utc>) -> RetryDecision {
        self.decide(class, failed_attempts, now, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    #[test]
    fn the_design_schedule() {
        let p = RetryPolicy::standard(10).unwrap();
        let got: Vec<u64> = (1..=8).map(|n| secs(p.base_delay(n))).collect();
        assert_eq!(got, vec![0, 30, 120, 600, 3000, 3600, 3600, 3600]);
    }

    #[test]
    fn budget_is_exhausted_at_max_attempts_but_not_by_rate_limits() {
        let p = RetryPolicy::standard(3).unwrap();
        let now = Utc::now();
        assert!(matches!(
            p.decide(&ErrorClass::Transient, 2, now, 0.5),
            RetryDecision::RetryAfter { .. }
        ));
        assert_eq!(p.decide(&ErrorClass::Transient, 3, now, 0.5), RetryDecision::Exhausted);
        assert_eq!(p.decide(&ErrorClass::NeedsReauth, 1, now, 0.5), RetryDecision::FixAndRetry);
        let until = now + chrono::Duration::seconds(2700);
        match p.decide(&ErrorClass::RateLimited { until }, 99, now, 0.0) {
            RetryDecision::ParkUntil { until: u } => assert_eq!(u, until),
            other => panic!("{other:?}"),
        }
        assert!(!RetryPolicy::costs_attempt(&ErrorClass::RateLimited { until }));
        assert!(RetryPolicy::costs_attempt(&ErrorClass::Transient));
        assert_eq!(p.decide(&ErrorClass::Permanent, 0, now, 0.5), RetryDecision::Reject);
    }

    /// Failed on main: NeedsNewSession/NeedsReauth were charged to the send budget and exhausted
    /// it like failed sends (costs_attempt was true for them).
    #[test]
    fn sessions_and_logins_spend_the_recovery_limit_not_the_send_budget() {
        let p = RetryPolicy::standard(3).unwrap();
        let now = Utc::now();
        assert_eq!(p.max_recoveries(), 6);
        for class in [ErrorClass::NeedsNewSession, ErrorClass::NeedsReauth] {
            assert!(!RetryPolicy::costs_attempt(&class), "{class}");
            assert_eq!(RetryPolicy::charge(&class), Charge::Recovery);
            assert_eq!(p.decide(&class, 3, now, 0.5), RetryDecision::FixAndRetry, "{class}");
            assert_eq!(
                p.decide(&class, 6, now, 0.5),
                RetryDecision::Exhausted,
                "{class}: the loop still ends"
            );
        }
        assert_eq!(
            p.clone().with_max_recoveries(2).decide(&ErrorClass::NeedsReauth, 2, now, 0.5),
            RetryDecision::Exhausted
        );
    }

    #[test]
    fn a_failed_reconciliation_read_spends_recoveries_and_is_never_a_rejection() {
        let p = RetryPolicy::standard(3).unwrap();
        let now = Utc::now();
        for class in [ErrorClass::Transient, ErrorClass::Permanent] {
            assert!(
                matches!(p.decide_read(&class, 5, now, 0.5), RetryDecision::RetryAfter { .. }),
                "{class}"
            );
            assert_eq!(p.decide_read(&class, 6, now, 0.5), RetryDecision::Exhausted);
        }
        assert_eq!(p.decide_read(&ErrorClass::NeedsReauth, 1, now, 0.5), RetryDecision::FixAndRetry);
        assert_eq!(p.decide_read(&ErrorClass::Operator, 99, now, 0.5), RetryDecision::ParkForOperator);
    }

    /// Failed on main: there was no operator class; 403s and failed logins were PERMANENT.
    #[test]
    fn an_operators_problem_parks_with_a_growing_wait_and_costs_nothing() {
        let p = RetryPolicy::standard(1).unwrap();
        assert_eq!(p.decide(&ErrorClass::Operator, 99, Utc::now(), 0.5), RetryDecision::ParkForOperator);
        assert_eq!(RetryPolicy::charge(&ErrorClass::Operator), Charge::Nothing);
        let waits: Vec<u64> = (1..=6).map(|n| RetryPolicy::operator_wait(n, 0.0).as_secs()).collect();
        assert_eq!(waits, vec![300, 600, 1200, 2400, 3600, 3600]);
        assert!(RetryPolicy::operator_wait(1, 0.99).as_secs() <= 330);
        assert_eq!(RetryPolicy::operator_wait(0, 0.0).as_secs(), 300);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(RetryPolicy::standard(0).is_err());
        assert!(RetryPolicy::new(3, vec![], 2.0, Duration::from_secs(60), 0.1).is_err());
        assert!(RetryPolicy::new(
            3,
            vec![Duration::from_secs(60), Duration::from_secs(1)],
            2.0,
            Duration::from_secs(60),
            0.1
        )
        .is_err());
        assert!(RetryPolicy::new(3, vec![Duration::from_secs(1)], 0.5, Duration::from_secs(60), 0.1).is_err());
        assert!(RetryPolicy::new(3, vec![Duration::from_secs(1)], 2.0, Duration::from_secs(13 * 3600), 0.1).is_err());
        assert!(RetryPolicy::new(3, vec![Duration::from_secs(1)], 2.0, Duration::from_secs(60), 1.0).is_err());
    }

    proptest! {
        #[test]
        fn base_delays_never_decrease_and_never_pass_the_cap(max in 1u32..50, growth in 1.0f64..20.0, cap_s in 120u64..43_200, n in 1u32..200) {
            let p = RetryPolicy::new(max, vec![Duration::ZERO, Duration::from_secs(30), Duration::from_secs(120)], growth, Duration::from_secs(cap_s), 0.2).unwrap();
            prop_assert!(p.base_delay(n) <= p.base_delay(n + 1));
            prop_assert!(p.base_delay(n) <= Duration::from_secs(cap_s));
        }

        #[test]
        fn jitter_stays_within_its_band_and_the_cap(n in 1u32..30, unit in 0.0f64..1.0) {
            let p = RetryPolicy::standard(30).unwrap();
            let base = p.base_delay(n).as_secs_f64();
            let d = p.jittered(p.base_delay(n), unit).as_secs_f64();
            prop_assert!(d >= base * 0.8 - 1e-6);
            prop_assert!(d <= base * 1.2 + 1e-6);
            prop_assert!(d <= 3600.0 + 1e-6);
        }

        #[test]
        fn transient_failures_retry_exactly_until_the_budget(max in 1u32..30, n in 0u32..60, unit in 0.0f64..1.0) {
            let p = RetryPolicy::standard(max).unwrap();
            let d = p.decide(&ErrorClass::Transient, n, Utc::now(), unit);
            if n >= max {
                prop_assert_eq!(d, RetryDecision::Exhausted);
            } else {
                let is_retry = matches!(d, RetryDecision::RetryAfter { .. });
                prop_assert!(is_retry);
            }
        }

        #[test]
        fn rate_limits_never_exhaust_and_never_wake_early(n in 0u32..1000, wait_s in -100i64..10_000, unit in 0.0f64..1.0) {
            let p = RetryPolicy::standard(3).unwrap();
            let now = Utc::now();
            let until = now + chrono::Duration::seconds(wait_s);
            match p.decide(&ErrorClass::RateLimited { until }, n, now, unit) {
                RetryDecision::ParkUntil { until: u } => {
                    prop_assert!(u >= until.max(now));
                    prop_assert!(u <= until.max(now) + chrono::Duration::seconds(2));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
