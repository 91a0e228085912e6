//! The send mode chosen from a seller's online backlog (issue 12 item 1).
//!
//! KSeF takes at most 10 online sends a second, 30 a minute and 180 an hour per seller (the
//! `InvoiceSend` group, API-NOTES §7); a batch session takes up to 10,000 invoices at once. The
//! rule: an attachment-free invoice goes **online while its seller's online backlog lets it go
//! out within the target delay**, otherwise in a batch session. Invoices with attachments always
//! go in batch (KSeF takes attachments only there).
//!
//! The backlog is a per-seller log in the shared cache (one entry, `sendmode/{nip}`, written
//! with a version check like the governor's): the *projected send time* of every invoice
//! registered Online, each placed at the first moment the sliding windows leave room for it
//! after the one before it (first come, first sent). A new invoice's projected time minus now is
//! how long it would wait to go online: within the target it goes Online and joins the log,
//! beyond it goes Batch and the log is left alone. A single invoice in a quiet hour waits 0 s.
//!
//! The projection is an estimate, not a reservation: the send path still keeps to the fleet
//! governor ([`crate::governor`]), and online resends (a retry, a new session) take slots the log
//! does not know of. A cache failure chooses Online with a warning: intake never fails on it
//! (the send path's governor still keeps KSeF's limits). Losing the entry to other intakes of
//! the same seller [`RACES`] times in a row is a burst, and chooses Batch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::{Expect, SharedCache, StoreError};
use relay_domain::{Nip, SendMode};
use serde::{Deserialize, Serialize};

use crate::limiter::{ClientLimits, EndpointGroup};
use crate::sliding_log::{wait_needed, windows_us};

/// The mode chosen for one invoice and why, in words for its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChoice {
    pub mode: SendMode,
    pub reason: String,
}

/// When the next online send could go, given the projected send times already in the log
/// (µs, oldest first): the first moment at or after both `now` and the last projected send at
/// which every window has room. Pure; `windows` as [`windows_us`] gives them.
pub(crate) fn next_online_slot(projected: &VecDeque<i64>, now: i64, windows: &[(usize, i64)]) -> i64 {
    let mut at = projected.back().copied().unwrap_or(now).max(now);
    // Each wait moves past the oldest send a full window counts, so this ends.
    while let Some(wait) = wait_needed(projected, at, windows) {
        at += wait;
    }
    at
}

/// The rule, pure: Online when the invoice has no attachment and its projected online send time
/// (`slot`, from [`next_online_slot`]) is at most `target` after `now` (all in µs).
pub(crate) fn choose_mode(has_attachment: bool, now: i64, slot: i64, target: i64, queued: usize) -> ModeChoice {
    if has_attachment {
        return ModeChoice {
            mode: SendMode::Batch,
            reason: "it carries an attachment, which KSeF takes only in batch sessions".into(),
        };
    }
    let wait = slot - now;
    let secs = |us: i64| us as f64 / 1e6;
    if wait <= target {
        ModeChoice {
            mode: SendMode::Online,
            reason: format!(
                "the seller's online backlog ({queued} projected online sends in KSeF's windows) lets it go out in {:.1} s, within the target {:.0} s",
                secs(wait),
                secs(target)
            ),
        }
    } else {
        ModeChoice {
            mode: SendMode::Batch,
            reason: format!(
                "the seller's online backlog ({queued} projected online sends in KSeF's windows) would hold it {:.1} s, beyond the target {:.0} s",
                secs(wait),
                secs(target)
            ),
        }
    }
}

/// The stored log: projected online send times, µs since the epoch, oldest first, and the
/// document each was projected for (its storage id; empty when the intake did not name it, or
/// for an entry written before the log kept them), so a batch that is going anyway can take the
/// seller's Online documents whose send has not happened yet ([`OnlineBacklog::queued_online`]).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Backlog {
    #[serde(rename = "t")]
    projected: VecDeque<i64>,
    #[serde(rename = "d", default, skip_serializing_if = "VecDeque::is_empty")]
    documents: VecDeque<String>,
}

impl Backlog {
    fn read(value: &str) -> Backlog {
        let mut log = serde_json::from_str::<Backlog>(value).unwrap_or_default();
        // Keep the two in step: a log from before the documents were named names none.
        if log.documents.len() != log.projected.len() {
            log.documents = log.projected.iter().map(|_| String::new()).collect();
        }
        log
    }

    fn pop_front(&mut self) {
        self.projected.pop_front();
        self.documents.pop_front();
    }
}

/// How many times a choice retries after losing a race to another intake.
const RACES: usize = 8;

/// Per seller: the limits its choices keep to, and until when.
type LiveLimits = std::collections::HashMap<Nip, (ClientLimits, DateTime<Utc>)>;

/// How long a backlog keeps to the published limits of a seller whose live ones nobody has
/// shared yet before it looks again.
pub const LIMITS_RECHECK: Duration = Duration::from_secs(5 * 60);

/// Chooses each invoice's send mode from its seller's online backlog, shared by every intake.
#[derive(Clone)]
pub struct OnlineBacklog {
    cache: Arc<dyn SharedCache>,
    /// KSeF's published limits: what a seller's choices keep to until KSeF's own reading for
    /// that seller is shared ([`OnlineBacklog::limits_for`]).
    limits: ClientLimits,
    /// Per seller, the limits last taken from the shared cache and until when they serve.
    live: Arc<std::sync::Mutex<LiveLimits>>,
    /// The longest an invoice may wait to go online (in KSeF's time: divided by the limits'
    /// time scale, like their windows).
    target_delay: Duration,
}

impl std::fmt::Debug for OnlineBacklog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnlineBacklog(target {:?})", self.target_delay)
    }
}

impl OnlineBacklog {
    /// The default target delay (`BATCH_TARGET_DELAY_SECONDS`): five minutes, the Ministry's
    /// "a package every few minutes".
    pub const DEFAULT_TARGET_DELAY: Duration = Duration::from_secs(300);

    pub fn new(cache: Arc<dyn SharedCache>, limits: ClientLimits, target_delay: Duration) -> OnlineBacklog {
        OnlineBacklog {
            cache,
            limits,
            live: Arc::default(),
            target_delay,
        }
    }

    /// The limits `seller`'s choices keep to: KSeF's own reading of `GET /rate-limits` for that
    /// seller when the send path has shared one ([`crate::limiter::rate_limits_cache_name`];
    /// intake never calls KSeF itself), else the published ones. Remembered until the shared
    /// entry expires, or for [`LIMITS_RECHECK`] while there is none, so intake reads it about
    /// once an hour, not per invoice.
    pub async fn limits_for(&self, seller: &Nip, now: DateTime<Utc>) -> ClientLimits {
        if !self.limits.enabled {
            return self.limits.clone();
        }
        if let Some((limits, _)) = self.live.lock().expect("live lock").get(seller).filter(|(_, until)| *until > now) {
            return limits.clone();
        }
        let recheck = now + chrono::Duration::from_std(LIMITS_RECHECK).expect("minutes");
        let (limits, until) = match self.cache.get(&crate::limiter::rate_limits_cache_name(seller), now).await {
            Ok(Some(e)) => match serde_json::from_str::<crate::limiter::EffectiveRateLimits>(&e.value) {
                Ok(effective) => (
                    self.limits.clone().seeded_from(&effective),
                    e.expires_at.min(now + chrono::Duration::hours(2)),
                ),
                Err(_) => (self.limits.clone(), recheck),
            },
            Ok(None) => (self.limits.clone(), recheck),
            Err(e) => {
                tracing::warn!(seller_nip = %seller, error = %e, "could not read the shared KSeF rate limits; choosing by the published ones");
                (self.limits.clone(), recheck)
            }
        };
        self.live.lock().expect("live lock").insert(seller.clone(), (limits.clone(), until));
        limits
    }

    fn entry_name(seller: &Nip) -> String {
        format!("sendmode/{seller}")
    }

    /// The mode for an invoice of `seller` registered at `now`; an Online choice is counted in
    /// the seller's backlog. Never fails: without the cache it chooses Online and warns.
    pub async fn choose(&self, seller: &Nip, has_attachment: bool, now: DateTime<Utc>) -> ModeChoice {
        self.choose_for(seller, "", has_attachment, now).await
    }

    /// [`OnlineBacklog::choose`] for the document `document` (its storage id): an Online choice
    /// is logged under its name, so a batch of its seller that is going anyway can take it
    /// before its online send happens ([`OnlineBacklog::queued_online`]).
    pub async fn choose_for(&self, seller: &Nip, document: &str, has_attachment: bool, now: DateTime<Utc>) -> ModeChoice {
        if has_attachment {
            return choose_mode(true, 0, 0, 0, 0);
        }
        let limits = self.limits_for(seller, now).await;
        let Some(limit) = limits.groups.get(&EndpointGroup::InvoiceSend).copied().filter(|_| limits.enabled) else {
            return choose_mode(false, 0, 0, 0, 0);
        };
        let windows = windows_us(limit, &limits);
        let longest = windows.iter().map(|w| w.1).max().unwrap_or(0);
        let target = (self.target_delay.as_secs_f64() * 1e6 / limits.time_scale.max(1e-6)) as i64;
        match self.try_choose(seller, document, now, &windows, longest, target).await {
            Ok(Some(choice)) => choice,
            // Only many intakes of this seller at once keep winning the entry: a burst.
            Ok(None) => ModeChoice {
                mode: SendMode::Batch,
                reason: "many invoices of this seller arrived at once (its online backlog kept changing under this intake)".into(),
            },
            Err(e) => fallback(seller, &e.to_string()),
        }
    }

    async fn try_choose(
        &self,
        seller: &Nip,
        document: &str,
        now: DateTime<Utc>,
        windows: &[(usize, i64)],
        longest: i64,
        target: i64,
    ) -> Result<Option<ModeChoice>, StoreError> {
        let name = Self::entry_name(seller);
        let now_us = now.timestamp_micros();
        for _ in 0..RACES {
            let (mut log, expect) = match self.cache.get(&name, now).await? {
                Some(e) => (Backlog::read(&e.value), Expect::Version(e.version)),
                None => (Backlog::default(), Expect::Absent),
            };
            while log.projected.front().is_some_and(|t| now_us - t >= longest) {
                log.pop_front();
            }
            let slot = next_online_slot(&log.projected, now_us, windows);
            let choice = choose_mode(false, now_us, slot, target, log.projected.len());
            if choice.mode == SendMode::Batch {
                return Ok(Some(choice));
            }
            log.projected.push_back(slot);
            log.documents.push_back(document.to_owned());
            let keep_until = DateTime::from_timestamp_micros(slot + longest).unwrap_or(now) + chrono::Duration::minutes(1);
            let value = serde_json::to_string(&log).expect("a backlog always serialises");
            match self.cache.put(&name, value, keep_until, expect, now).await {
                Ok(_) => return Ok(Some(choice)),
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The documents of `seller` logged Online whose projected send is at or after `since`
    /// (storage ids, first projected first): the candidates a batch of that seller going
    /// anyway may take. The log is an estimate: each one's record says whether its online send
    /// has really not happened (QUEUED, no unconfirmed send, no live lease).
    pub async fn queued_online(&self, seller: &Nip, since: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let Some(e) = self.cache.get(&Self::entry_name(seller), now).await? else {
            return Ok(Vec::new());
        };
        let log = Backlog::read(&e.value);
        let since = since.timestamp_micros();
        Ok(log
            .projected
            .iter()
            .zip(&log.documents)
            .filter(|(t, d)| **t >= since && !d.is_empty())
            .map(|(_, d)| d.clone())
            .collect())
    }

    /// Takes `documents` (storage ids) out of `seller`'s log: they went in a batch, so the
    /// online slots projected for them are free for later invoices. Written after their records
    /// changed mode: a death before it leaves the log counting sends that will not happen (a
    /// later intake goes to batch sooner than it needs to, until the entries age out of the
    /// hour), never the reverse.
    pub async fn forget(&self, seller: &Nip, documents: &[String], now: DateTime<Utc>) -> Result<(), StoreError> {
        if documents.is_empty() {
            return Ok(());
        }
        let name = Self::entry_name(seller);
        let gone: std::collections::HashSet<&str> = documents.iter().map(String::as_str).collect();
        for _ in 0..RACES {
            let Some(e) = self.cache.get(&name, now).await? else {
                return Ok(());
            };
            let log = Backlog::read(&e.value);
            let kept: Vec<(i64, String)> = log
                .projected
                .into_iter()
                .zip(log.documents)
                .filter(|(_, d)| !gone.contains(d.as_str()))
                .collect();
            let log = Backlog {
                projected: kept.iter().map(|k| k.0).collect(),
                documents: kept.into_iter().map(|k| k.1).collect(),
            };
            let value = serde_json::to_string(&log).expect("a backlog always serialises");
            match self.cache.put(&name, value, e.expires_at, Expect::Version(e.version), now).await {
                Ok(_) => return Ok(()),
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the online backlog of {seller} kept changing ({RACES} tries)"
        )))
    }
}

fn fallback(seller: &Nip, why: &str) -> ModeChoice {
    tracing::warn!(seller_nip = %seller, error = why, "the online backlog could not be read or written; sending online");
    ModeChoice {
        mode: SendMode::Online,
        reason: format!("the seller's online backlog could not be checked ({why}); online by default"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn official_windows() -> Vec<(usize, i64)> {
        let limits = ClientLimits::official().with_margin(0.0);
        windows_us(limits.groups[&EndpointGroup::InvoiceSend], &limits)
    }

    /// Places `n` invoices arriving at `now` as the rule would (every one Online).
    fn fill(n: usize, now: i64, w: &[(usize, i64)]) -> VecDeque<i64> {
        let mut log = VecDeque::new();
        for _ in 0..n {
            let slot = next_online_slot(&log, now, w);
            log.push_back(slot);
        }
        log
    }

    #[test]
    fn a_single_invoice_in_a_quiet_hour_goes_online_at_once() {
        let w = official_windows();
        let now = 1_000 * S;
        assert_eq!(next_online_slot(&VecDeque::new(), now, &w), now);
        let c = choose_mode(false, now, now, 300 * S, 0);
        assert_eq!(c.mode, SendMode::Online);
        assert!(c.reason.contains("0.0 s"), "{}", c.reason);
    }

    #[test]
    fn the_slots_follow_every_window() {
        let w = official_windows();
        let log = fill(181, 0, &w);
        // Ten in the first second, the eleventh a second later; the 31st a minute after the first.
        assert_eq!(log[9], 0);
        assert_eq!(log[10], S);
        assert_eq!(log[29], 2 * S);
        assert_eq!(log[30], 60 * S);
        // The hour: the 181st waits until the first leaves its window.
        assert_eq!(log[180], 3600 * S);
    }

    #[test]
    fn the_target_is_the_edge() {
        let w = official_windows();
        let target = 300 * S;
        // Within five minutes of a burst: 30 a minute for minutes 0 to 4, then the ten that go
        // in the first second of minute 5 (300 s exactly); the 161st would wait 301 s.
        let log = fill(180, 0, &w);
        let online = log.iter().take_while(|t| **t <= target).count();
        assert_eq!(online, 160);
        assert_eq!(log[160], 301 * S);
        let log = fill(150, 0, &w);
        assert_eq!(*log.back().unwrap(), 242 * S);
        let next = next_online_slot(&log, 0, &w);
        assert_eq!(next, 300 * S);
        assert_eq!(choose_mode(false, 0, next, target, log.len()).mode, SendMode::Online);
        assert_eq!(choose_mode(false, 0, next, target - 1, log.len()).mode, SendMode::Batch);
        // Arriving later makes the same backlog shorter.
        assert_eq!(choose_mode(false, 10 * S, next, target - 1, log.len()).mode, SendMode::Online);
    }

    #[test]
    fn an_attachment_goes_in_batch_whatever_the_backlog() {
        assert_eq!(choose_mode(true, 0, 0, 300 * S, 0).mode, SendMode::Batch);
    }

    /// Online choices are logged under their documents; a batch going anyway reads the ones
    /// still to come and frees their slots, so the next invoice's projected wait shrinks.
    #[tokio::test]
    async fn a_batch_takes_the_logged_online_documents_and_frees_their_slots() {
        use relay_domain::memory::MemorySharedCache;
        let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
        let limits = ClientLimits::official().with_margin(0.0);
        let b = OnlineBacklog::new(cache.clone(), limits, Duration::from_secs(300));
        let seller = Nip::parse("9999999999").unwrap();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        // An unnamed choice (an older caller) is counted but never offered to a batch.
        b.choose(&seller, false, now).await;
        for i in 0..40 {
            let c = b.choose_for(&seller, &format!("doc-{i}"), false, now).await;
            assert_eq!(c.mode, SendMode::Online);
        }
        let queued = b.queued_online(&seller, now, now).await.unwrap();
        assert_eq!(queued.len(), 40);
        assert_eq!(queued[0], "doc-0");
        // Only those projected at or after `since`: the 31st of the log (doc-29) waits a minute.
        let later = b.queued_online(&seller, now + chrono::Duration::seconds(30), now).await.unwrap();
        assert_eq!(later.first().map(String::as_str), Some("doc-29"));
        assert_eq!(later.len(), 11);
        b.forget(&seller, &queued[10..], now).await.unwrap();
        assert_eq!(b.queued_online(&seller, now, now).await.unwrap(), queued[..10].to_vec());
        // 11 left (the unnamed one and doc-0 to doc-9: ten in the first second, one in the
        // next): the next invoice waits a second, not the minute it would have with all 41.
        let next = b.choose_for(&seller, "doc-next", false, now).await;
        assert!(next.reason.contains("in 1.0 s"), "{}", next.reason);
        assert!(b
            .queued_online(&Nip::parse("5260000011").unwrap(), now, now)
            .await
            .unwrap()
            .is_empty());
    }

    /// Once the send path has shared KSeF's reading of `GET /rate-limits` for a seller, that
    /// seller's choices keep to it (here a context allowed only 2 online sends an hour); other
    /// sellers keep the published limits, and the entry is read once, not per invoice.
    #[tokio::test]
    async fn choices_keep_to_the_limits_ksef_reported_for_the_seller() {
        use relay_domain::memory::MemorySharedCache;
        use std::sync::atomic::{AtomicUsize, Ordering};

        struct Counting(MemorySharedCache, AtomicUsize);
        #[async_trait::async_trait]
        impl SharedCache for Counting {
            async fn get(&self, name: &str, now: DateTime<Utc>) -> Result<Option<relay_domain::ports::CacheEntry>, StoreError> {
                if name.starts_with("ksef/rate-limits/") {
                    self.1.fetch_add(1, Ordering::SeqCst);
                }
                self.0.get(name, now).await
            }
            async fn put(
                &self,
                name: &str,
                value: String,
                expires_at: DateTime<Utc>,
                expect: Expect,
                now: DateTime<Utc>,
            ) -> Result<relay_domain::ports::CacheEntry, StoreError> {
                self.0.put(name, value, expires_at, expect, now).await
            }
            async fn remove(&self, name: &str, version: u64) -> Result<(), StoreError> {
                self.0.remove(name, version).await
            }
        }

        let cache = Arc::new(Counting(MemorySharedCache::new(), AtomicUsize::new(0)));
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let slow = Nip::parse("9999999999").unwrap();
        let other = Nip::parse("5260000011").unwrap();
        let reported =
            r#"{"onlineSession":{"perSecond":10,"perMinute":30,"perHour":120},"invoiceSend":{"perSecond":1,"perMinute":2,"perHour":2}}"#;
        let effective: crate::limiter::EffectiveRateLimits = serde_json::from_str(reported).unwrap();
        cache
            .put(
                &crate::limiter::rate_limits_cache_name(&slow),
                effective.to_json(),
                now + chrono::Duration::hours(1),
                Expect::Absent,
                now,
            )
            .await
            .unwrap();
        let b = OnlineBacklog::new(cache.clone(), ClientLimits::official().with_margin(0.0), Duration::from_secs(300));
        let modes = |seller: Nip| {
            let b = b.clone();
            async move {
                let mut modes = Vec::new();
                for i in 0..3 {
                    modes.push(b.choose_for(&seller, &format!("doc-{i}"), false, now).await.mode);
                }
                modes
            }
        };
        // The third would wait an hour for the seller's second hourly slot to pass: batch.
        assert_eq!(modes(slow.clone()).await, vec![SendMode::Online, SendMode::Online, SendMode::Batch]);
        assert_eq!(modes(other).await, vec![SendMode::Online; 3]);
        assert_eq!(cache.1.load(Ordering::SeqCst), 2, "one read per seller");
        assert_eq!(b.limits_for(&slow, now).await.groups[&EndpointGroup::InvoiceSend].per_hour, Some(2));
    }

    #[test]
    fn old_sends_leave_the_windows() {
        let w = official_windows();
        let log = fill(180, 0, &w);
        // Two hours later the hour window is empty again.
        let now = 7200 * S;
        assert_eq!(next_online_slot(&log, now, &w), now);
    }
}
