//! When to try again. One policy for every retry in the relay: immediately, 30 s, 2 min, then
//! growing by a factor (10 min, 50 min, ...) up to a cap, with jitter so that many documents that
//! failed together do not all come back together. A rate limit parks the document until KSeF's
//! Retry-After and costs no attempt.

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
}

/// Why a policy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry policy: {0}")]
pub struct PolicyError(String);

/// The retry policy. Build with [`RetryPolicy::standard`] or [`RetryPolicy::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
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
            schedule,
            growth,
            cap,
            jitter,
        })
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
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

    /// Decides what follows a failure. `failed_attempts` counts the attempts already charged,
    /// including this one unless it was rate limited; `unit` is a uniform sample in [0, 1).
    pub fn decide(&self, class: &ErrorClass, failed_attempts: u32, now: DateTime<Utc>, unit: f64) -> RetryDecision {
        match class {
            ErrorClass::RateLimited { until } => {
                // A little positive jitter so parked documents do not all wake in the same second.
                let spread = Duration::from_secs_f64((unit.clamp(0.0, 1.0) * 2.0).min(2.0));
                let until = (*until).max(now) + chrono::Duration::from_std(spread).unwrap_or_default();
                RetryDecision::ParkUntil { until }
            }
            ErrorClass::Permanent => RetryDecision::Reject,
            ErrorClass::Duplicate { .. } => RetryDecision::ResolveDuplicate,
            _ if failed_attempts >= self.max_attempts => RetryDecision::Exhausted,
            ErrorClass::NeedsNewSession | ErrorClass::NeedsReauth => RetryDecision::FixAndRetry,
            ErrorClass::Transient => RetryDecision::RetryAfter {
                delay: self.jittered(self.base_delay(failed_attempts), unit),
            },
        }
    }

    /// Whether this class charges an attempt to the budget.
    pub fn costs_attempt(class: &ErrorClass) -> bool {
        !matches!(class, ErrorClass::RateLimited { .. })
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
        assert_eq!(p.decide(&ErrorClass::NeedsNewSession, 3, now, 0.5), RetryDecision::Exhausted);
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
