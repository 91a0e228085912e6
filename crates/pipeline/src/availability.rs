//! KSeF's availability, shared by every instance: the scheduled poll that decides it, and the
//! send stage's hold while KSeF is declared (or seen) down.
//!
//! [`poll`] runs on a schedule (the sweeper function, every 5 minutes; `ksef-relay run` beside
//! its stages, every 5 minutes of its simulator's time): it reads Latarnia (`GET /status`, `GET /messages`), archives every message version
//! once (`latarnia/{env}/{id}/v{version}.json`, put-if-absent, so a repeated poll writes
//! nothing), probes a public KSeF endpoint, decides the state with
//! [`Availability::decide`] and writes it to the shared cache (`relay/availability/{env}`, a
//! version-checked write, live for [`STATE_TTL`] so a poll that stops running cannot hold
//! sending for ever), and emits the `KsefAvailability` metric.
//!
//! The send stage reads it before claiming a document ([`KsefContexts::availability_hold`]).
//! While it holds, the document waits as a delayed message, with a history line naming the
//! state and its source (the Latarnia message id), without calling KSeF and without spending
//! its budget; when the poll sees KSeF back, the next delivery sends. The same shape as the
//! seller block ([`crate::seller_block`]), environment-wide and decided by the poll rather than
//! by a failed send.
//!
//! Between two polls the sends' own calls are evidence too ([`KsefContexts::record_call`]): a
//! call that failed as KSeF being down adds to one shared count per environment
//! (`relay/availability/{env}/failed-calls`), one that got through resets it, and
//! `FAILED_CALLS_DOWN` in a row since the last poll hold sending (DEGRADED) until the poll's
//! probe finds KSeF back (and resets the count). So a silent outage costs a bounded number of
//! calls, not one per document.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ksef_client::latarnia::{environment_key, probe_ksef};
use ksef_client::{Environment, LatarniaClient};
use relay_domain::availability::{failed_calls_cache_name, Availability, DeclaredMessage, FailedCalls, LatarniaReading};
use relay_domain::ports::{Archive, ArchiveError, Expect, ObjectBody, PutOutcome, SharedCache, StoreError};
use relay_observe::emf::{MetricLine, Unit};
use serde::Serialize;

use crate::sessions::KsefContexts;

/// How long a decided state is trusted without a newer poll.
pub const STATE_TTL: chrono::Duration = chrono::Duration::minutes(30);
/// How often the poll runs (the sweeper's schedule); a held document looks again after this.
pub const POLL_EVERY: Duration = Duration::from_secs(300);

pub use relay_domain::availability::cache_name;

/// The archive key of one message version: the id with every byte but letters, digits, `-` and
/// `.` written `_XX` (hex), so two ids never share a key (`K/2026/AWR/02` → `K_2F2026_2FAWR_2F02`).
pub fn message_key(env: &str, m: &DeclaredMessage) -> String {
    let mut id = String::with_capacity(m.id.len() * 2);
    for b in m.id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.') {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("_{b:02X}"));
        }
    }
    format!("latarnia/{env}/{id}/v{}.json", m.version)
}

/// The availability last decided for `env`, if a poll wrote one that is still live.
pub async fn current(cache: &dyn SharedCache, env: &str, now: DateTime<Utc>) -> Result<Option<Availability>, StoreError> {
    Ok(cache
        .get(&cache_name(env), now)
        .await?
        .and_then(|e| serde_json::from_str(&e.value).ok()))
}

/// The failed calls counted for `env` now (none when the entry is absent, expired or unreadable;
/// None when the cache cannot be read: then nothing holds on them).
async fn failed_calls(cache: &dyn SharedCache, env: &str, now: DateTime<Utc>) -> Option<FailedCalls> {
    match cache.get(&failed_calls_cache_name(env), now).await {
        Ok(e) => Some(e.and_then(|e| serde_json::from_str(&e.value).ok()).unwrap_or_default()),
        Err(e) => {
            tracing::warn!(environment = env, error = %e, "could not read the failed KSeF calls; sending");
            None
        }
    }
}

/// KSeF's availability as a send sees it: what holds sending, if anything, and the state the
/// poll last wrote (None without one, or when it could not be read).
#[derive(Debug, Clone, Default)]
pub struct AvailabilityLook {
    pub hold: Option<Availability>,
    pub polled: Option<Availability>,
}

impl AvailabilityLook {
    /// The declared failure windows offline deadlines count from (none without a polled state:
    /// the deadline is then the strict one).
    pub fn declared_failures(&self) -> Vec<relay_domain::FailureWindow> {
        self.polled.as_ref().map(|a| a.declared_failures().to_vec()).unwrap_or_default()
    }
}

/// What the poll needs.
pub struct PollPorts<'a> {
    pub cache: &'a dyn SharedCache,
    pub archive: &'a dyn Archive,
}

/// What the poll talks to.
pub struct PollTargets<'a> {
    pub environment: &'a Environment,
    /// None where the environment has no Latarnia (DEMO).
    pub latarnia: Option<&'a LatarniaClient>,
    pub probe_timeout: Duration,
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PollReport {
    pub availability: Availability,
    /// Message versions archived by this poll (0 when nothing new was published).
    pub archived: Vec<String>,
    /// Whether the state was shared (false: another poll wrote first, or the cache failed).
    pub shared: bool,
    /// How many of this poll's probes failed (up to [`PROBE_ATTEMPTS`]; some may have failed
    /// before one got through).
    pub failed_probes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many probes one poll makes before its evidence says KSeF is down. A single failed or
/// timed-out probe is as often our own side (a loaded host, a network blip) as KSeF, and the
/// state it sets holds every seller's sending until the next poll (5 minutes in AWS); a silent
/// outage fails every probe.
pub const PROBE_ATTEMPTS: u32 = 3;

/// The pause between two probes of one poll.
pub const PROBE_PAUSE: Duration = Duration::from_secs(1);

/// The first probe that gets through, or the last failure after `attempts` probes, `pause`
/// apart; with how many probes failed.
pub async fn confirmed<F, Fut>(attempts: u32, pause: Duration, mut probe: F) -> (Result<(), String>, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut failed = 0;
    let mut last = Err("no probe made".to_owned());
    for attempt in 1..=attempts.max(1) {
        if attempt > 1 {
            tokio::time::sleep(pause).await;
        }
        last = probe().await;
        match &last {
            Ok(()) => return (Ok(()), failed),
            Err(why) => {
                failed += 1;
                tracing::info!(attempt, attempts, why = %why, "a probe of KSeF failed");
            }
        }
    }
    let last = last.map_err(|why| format!("{why} ({} probes, {} ms apart)", attempts.max(1), pause.as_millis()));
    (last, failed)
}

/// One poll at `now`: read, archive, probe, decide, share, measure.
pub async fn poll(ports: &PollPorts<'_>, targets: &PollTargets<'_>, now: DateTime<Utc>) -> Result<PollReport, PollError> {
    let env = environment_key(targets.environment);
    let reading = match targets.latarnia {
        Some(l) => l.read().await,
        None => LatarniaReading::none(),
    };
    let mut archived = Vec::new();
    if let Some(Ok(messages)) = &reading.messages {
        for m in messages {
            let key = message_key(env, m);
            let body = ObjectBody::new(serde_json::to_vec_pretty(m).expect("plain values serialize"), "application/json");
            if ports.archive.put_if_absent(&key, body).await? == PutOutcome::Created {
                archived.push(key);
            }
        }
    }
    // Our own evidence: the probe, and the sends' failed calls since the last that got through.
    let (probe, failed_probes) = confirmed(PROBE_ATTEMPTS, PROBE_PAUSE, || {
        probe_ksef(targets.environment, targets.probe_timeout)
    })
    .await;
    let probe_ok = probe.is_ok();
    let (calls, calls_version) = match ports.cache.get(&failed_calls_cache_name(env), now).await? {
        Some(e) => (serde_json::from_str::<FailedCalls>(&e.value).unwrap_or_default(), Some(e.version)),
        None => (FailedCalls::default(), None),
    };
    let evidence = calls.evidence(Some(probe));
    let reading = decisive(targets.environment, reading);
    let name = cache_name(env);
    let entry = ports.cache.get(&name, now).await?;
    let previous: Option<Availability> = entry.as_ref().and_then(|e| serde_json::from_str(&e.value).ok());
    let availability = Availability::decide(env, previous.as_ref(), &reading, &evidence, now);
    let expect = entry.map_or(Expect::Absent, |e| Expect::Version(e.version));
    let value = serde_json::to_string(&availability).expect("plain values serialize");
    let shared = match ports.cache.put(&name, value, now + STATE_TTL, expect, now).await {
        Ok(_) => true,
        Err(StoreError::VersionConflict { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if previous.as_ref().map(|p| p.state) != Some(availability.state) {
        tracing::warn!(environment = env, state = %availability.state, source = %availability.source, "KSeF availability changed");
    }
    // The probe got through: the failed calls before it are over (a send that failed since
    // wrote a newer version, and counts on).
    if let (true, Some(version)) = (probe_ok, calls_version.filter(|_| calls.failed > 0)) {
        let reset = serde_json::to_string(&FailedCalls::default()).expect("plain values serialize");
        match ports
            .cache
            .put(&failed_calls_cache_name(env), reset, now + STATE_TTL, Expect::Version(version), now)
            .await
        {
            Ok(_) | Err(StoreError::VersionConflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    availability_line(&availability, archived.len(), now).emit();
    Ok(PollReport {
        availability,
        archived,
        shared,
        failed_probes,
    })
}

/// What of Latarnia's answer may decide `env`'s state: all of it, except on TEST, whose
/// Latarnia is static (always TOTAL_FAILURE, API-NOTES §15): its messages are archived, but
/// only our own evidence decides there, or nothing would ever be sent.
pub fn decisive(env: &Environment, reading: LatarniaReading) -> LatarniaReading {
    if *env == Environment::Test {
        LatarniaReading::none()
    } else {
        reading
    }
}

/// The `KsefAvailability` metric (0 AVAILABLE .. 4 TOTAL_FAILURE) per environment, with
/// `KsefHeld` (1 while sending is held), `LatarniaUnreachable` and `LatarniaMessagesArchived`.
pub fn availability_line(a: &Availability, archived: usize, now: DateTime<Utc>) -> MetricLine {
    let unreachable = if a.latarnia_answered == Some(false) { 1.0 } else { 0.0 };
    MetricLine::new(relay_observe::NAMESPACE, now)
        .group(
            &[("Environment", a.environment.as_str())],
            &[
                ("KsefAvailability", Unit::None, f64::from(a.state.level())),
                ("KsefHeld", Unit::Count, if a.holds_sending() { 1.0 } else { 0.0 }),
                ("LatarniaUnreachable", Unit::Count, unreachable),
                ("LatarniaMessagesArchived", Unit::Count, archived as f64),
            ],
        )
        .property("AvailabilityState", a.state.as_str())
        .property("Source", a.source.to_string())
        .property("Since", a.since.to_rfc3339())
}

impl KsefContexts {
    /// Holds sending while the shared availability of `env` says KSeF is down (see
    /// [`crate::availability`]). `env` is [`environment_key`] of the KSeF environment.
    pub fn with_availability(mut self, env: &Environment) -> Self {
        self.set_availability_env(environment_key(env));
        self
    }

    /// The poll runs every `every` rather than on the sweeper's schedule ([`POLL_EVERY`]): the
    /// local runner polls on its simulator's time scale, and held documents look again after
    /// its next poll.
    pub fn with_availability_poll_every(mut self, every: Duration) -> Self {
        self.set_availability_every(every);
        self
    }

    /// How often the poll runs for these contexts.
    pub fn availability_poll_every(&self) -> Duration {
        self.availability_every().unwrap_or(POLL_EVERY)
    }

    /// The availability that holds sending now, if any. A failing cache read does not hold:
    /// the send meets KSeF's answer and the retry policy handles it.
    ///
    /// Besides the poll's state, the sends' own failed calls ([`FailedCalls`]) hold once
    /// [`relay_domain::availability::FAILED_CALLS_DOWN`] failed in a row since the poll last
    /// looked: a silent outage stops costing calls before the next poll, and the poll's probe,
    /// not a flood of sends, finds KSeF back.
    pub async fn availability_hold(&self, now: DateTime<Utc>) -> Option<Availability> {
        self.availability_look(now).await.hold
    }

    /// [`KsefContexts::availability_hold`], with the polled state it read (whose declared
    /// failure windows a send's offline check needs: one read serves both).
    pub async fn availability_look(&self, now: DateTime<Utc>) -> AvailabilityLook {
        let Some(env) = self.availability_env() else {
            return AvailabilityLook::default();
        };
        let cache = self.shared_cache().unwrap_or(self.local_blocks());
        let polled = match current(cache, env, now).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(environment = env, error = %e, "could not read KSeF's availability; sending");
                return AvailabilityLook::default();
            }
        };
        if polled.as_ref().is_some_and(Availability::holds_sending) {
            return AvailabilityLook {
                hold: polled.clone(),
                polled,
            };
        }
        let Some(calls) = failed_calls(cache, env, now).await else {
            return AvailabilityLook { hold: None, polled };
        };
        // Failures the poll has already weighed (its probe got through after them) do not count.
        if calls.since.zip(polled.as_ref()).is_some_and(|(since, a)| since < a.checked_at) {
            return AvailabilityLook { hold: None, polled };
        }
        let held = Availability::decide(env, polled.as_ref(), &LatarniaReading::none(), &calls.evidence(None), now);
        AvailabilityLook {
            hold: held.holds_sending().then_some(held),
            polled,
        }
    }

    /// Counts a send's KSeF call: one that failed as KSeF being down
    /// ([`ksef_client::failure_map::means_ksef_down`]) adds to the environment's shared
    /// [`FailedCalls`]; one that got through (`failure` None) resets them. A conditional write,
    /// tried again on a conflict with another instance's; a cache that fails is logged and
    /// skipped (the evidence is then one call short, and the poll's probe still decides).
    pub async fn record_call(&self, seller: &relay_domain::Nip, failure: Option<&relay_domain::Failure>, now: DateTime<Utc>) {
        let Some(env) = self.availability_env() else { return };
        if failure.is_some_and(|f| !ksef_client::failure_map::means_ksef_down(f)) {
            return;
        }
        let cache = self.shared_cache().unwrap_or(self.local_blocks());
        let name = failed_calls_cache_name(env);
        for _ in 0..5 {
            let entry = match cache.get(&name, now).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(environment = env, error = %e, "could not read the failed KSeF calls");
                    return;
                }
            };
            let calls: FailedCalls = entry.as_ref().and_then(|e| serde_json::from_str(&e.value).ok()).unwrap_or_default();
            let next = match failure {
                Some(_) => calls.with_failure(seller.as_str(), now),
                None if calls.failed == 0 => return,
                None => FailedCalls::default(),
            };
            let expect = entry.map_or(Expect::Absent, |e| Expect::Version(e.version));
            let value = serde_json::to_string(&next).expect("plain values serialize");
            match cache.put(&name, value, now + STATE_TTL, expect, now).await {
                Ok(_) => {
                    if next.failed == relay_domain::availability::FAILED_CALLS_DOWN {
                        tracing::warn!(
                            environment = env,
                            failed = next.failed,
                            sellers = next.sellers.len(),
                            "KSeF calls keep failing: sending holds until the probe finds KSeF back"
                        );
                    }
                    return;
                }
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(e) => {
                    tracing::warn!(environment = env, error = %e, "could not count a failed KSeF call");
                    return;
                }
            }
        }
    }

    /// The availability kept for this environment now, whatever it says (for the declared
    /// failure windows offline deadlines count from); None without one, or when it cannot be read.
    pub async fn availability_now(&self, now: DateTime<Utc>) -> Option<Availability> {
        let env = self.availability_env()?;
        let cache = self.shared_cache().unwrap_or(self.local_blocks());
        current(cache, env, now).await.ok().flatten()
    }

    /// The cache the availability lives in (for the local driver's poll).
    pub fn availability_cache(&self) -> &dyn SharedCache {
        self.shared_cache().unwrap_or(self.local_blocks())
    }
}

/// When a held document looks again: shortly after the next poll (`every` after the last: 5 %
/// of a period later, 15 s on the sweeper's schedule), and not sooner than a fifth of a period
/// from now (a minute on the sweeper's schedule).
pub fn hold_until(a: &Availability, every: Duration, now: DateTime<Utc>) -> DateTime<Utc> {
    let period = chrono::Duration::from_std(every).expect("a poll period fits");
    let next_poll = a.checked_at + period + period / 20;
    next_poll.max(now + period / 5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_domain::availability::{AvailabilityState, OwnEvidence};

    const PAUSE: Duration = Duration::from_millis(5);

    /// Probes answering in turn from `answers` (the last one repeated), counting the calls.
    fn scripted(
        answers: Vec<Result<(), String>>,
    ) -> (
        std::sync::Arc<std::sync::atomic::AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<(), String>>,
    ) {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = calls.clone();
        let probe = move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as usize;
            std::future::ready(answers[n.min(answers.len() - 1)].clone())
        };
        (calls, probe)
    }

    #[tokio::test]
    async fn one_failed_probe_is_not_enough_to_call_ksef_down() {
        let (calls, probe) = scripted(vec![Err("timeout".into()), Ok(())]);
        assert_eq!(confirmed(PROBE_ATTEMPTS, PAUSE, probe).await, (Ok(()), 1));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A good first probe is the only one.
        let (calls, probe) = scripted(vec![Ok(())]);
        assert_eq!(confirmed(PROBE_ATTEMPTS, PAUSE, probe).await, (Ok(()), 0));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_silent_outage_fails_every_probe_and_says_how_many() {
        let started = tokio::time::Instant::now();
        let (calls, probe) = scripted(vec![Err("timeout".into()), Err("HTTP 503".into())]);
        let (answer, failed) = confirmed(PROBE_ATTEMPTS, PAUSE, probe).await;
        assert_eq!(failed, PROBE_ATTEMPTS);
        let why = answer.unwrap_err();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), PROBE_ATTEMPTS);
        assert_eq!(why, "HTTP 503 (3 probes, 5 ms apart)");
        assert!(started.elapsed() >= PAUSE * (PROBE_ATTEMPTS - 1), "paused between probes");
        // The evidence it gives holds sending.
        let evidence = OwnEvidence {
            probe: Some(Err(why)),
            ..OwnEvidence::default()
        };
        assert!(evidence.down().unwrap().contains("3 probes"));
    }

    #[test]
    fn the_availability_line_is_valid_emf_with_the_level_and_the_source() {
        let now = Utc::now();
        let reading = LatarniaReading {
            status: Some(Ok(AvailabilityState::TotalFailure)),
            messages: Some(Err("HTTP 502".into())),
        };
        let a = Availability::decide("PROD", None, &reading, &OwnEvidence::default(), now);
        let line = availability_line(&a, 2, now).to_line().unwrap();
        let metrics = relay_observe::emf::check_line(&line).unwrap();
        let names: Vec<&str> = metrics.iter().map(|(n, _)| n.as_str()).collect();
        for m in ["KsefAvailability", "KsefHeld", "LatarniaUnreachable", "LatarniaMessagesArchived"] {
            assert!(names.contains(&m), "{m} in {line}");
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!((v["KsefAvailability"].as_f64(), v["KsefHeld"].as_f64()), (Some(4.0), Some(1.0)));
        assert_eq!(
            (v["Environment"].as_str(), v["AvailabilityState"].as_str()),
            (Some("PROD"), Some("TOTAL_FAILURE"))
        );
        assert_eq!(v["LatarniaMessagesArchived"].as_f64(), Some(2.0));
    }

    #[test]
    fn tests_static_latarnia_does_not_hold_sending_there() {
        let now = Utc::now();
        let reading = LatarniaReading {
            status: Some(Ok(AvailabilityState::TotalFailure)),
            messages: Some(Ok(Vec::new())),
        };
        let probe_ok = OwnEvidence {
            probe: Some(Ok(())),
            ..OwnEvidence::default()
        };
        let test = Availability::decide("TEST", None, &decisive(&Environment::Test, reading.clone()), &probe_ok, now);
        assert_eq!(test.state, AvailabilityState::Available);
        let prod = Availability::decide("PROD", None, &decisive(&Environment::Prod, reading), &probe_ok, now);
        assert_eq!(prod.state, AvailabilityState::TotalFailure);
    }

    #[test]
    fn message_keys_are_safe_object_keys_per_version() {
        let m: DeclaredMessage = serde_json::from_value(serde_json::json!({
            "id": "K/2026/AWR 02", "category": "FAILURE", "type": "FAILURE_START", "version": 3
        }))
        .unwrap();
        assert_eq!(message_key("PROD", &m), "latarnia/PROD/K_2F2026_2FAWR_2002/v3.json");
        let n = DeclaredMessage {
            id: "K_2F2026".into(),
            ..m.clone()
        };
        let o = DeclaredMessage { id: "K/2026".into(), ..m };
        assert_ne!(message_key("PROD", &n), message_key("PROD", &o), "no two ids share a key");
    }
}
