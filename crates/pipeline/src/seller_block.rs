//! Parking a seller's work while an operator's problem stands.
//!
//! A wrong or revoked token, a missing permission, an IP block, a status KSeF does not explain,
//! or our own configuration ([`ErrorClass::Operator`]) would meet every invoice of that seller
//! alike. So the first such failure parks the *seller*, not just the document: a block with its
//! until-time, reason and strike count goes into the shared cache (the store's table in Lambda,
//! so every function instance sees it), and the send stage checks it before claiming a document
//! and parks the document without calling KSeF. Waits grow with the strikes (5 min doubling to
//! 1 h, [`RetryPolicy::operator_wait`]). When a wait ends, one document takes the probe (a
//! version-checked write that extends the block for everyone else); if its send gets through,
//! the block is cleared and the backlog flows again, and if it meets the problem again, the
//! block is renewed with a longer wait. Nothing here is charged to any invoice's budget, and each
//! block written emits the `SellerParked` metric the `OperatorProblemAlarm` watches.

use chrono::{DateTime, Utc};
use relay_domain::ports::{Expect, SharedCache, StoreError};
use relay_domain::{ErrorClass, Failure, Nip, RetryPolicy};
use relay_observe::emf::{MetricLine, Unit};
use serde::{Deserialize, Serialize};

use crate::sessions::KsefContexts;

/// How long a block is remembered after its wait ended, so the next strike waits longer.
const STRIKE_MEMORY: chrono::Duration = chrono::Duration::hours(24);

/// A seller's work, parked for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerBlock {
    /// Nothing of this seller goes to KSeF before this time.
    pub until: DateTime<Utc>,
    /// When the problem was first met (kept across strikes).
    pub since: DateTime<Utc>,
    /// Operator failures in a row; the wait grows with them.
    pub strikes: u32,
    /// What KSeF (or the relay) said, verbatim.
    pub failure: Failure,
    /// The wait ended and one attempt is probing; the rest wait for it.
    #[serde(default)]
    pub probing: bool,
}

/// What the send stage may do for a seller now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SellerGate {
    /// No block: send.
    Open,
    /// Blocked: park the document until the block ends, without calling KSeF.
    Parked(SellerBlock),
    /// The block's wait is over and this attempt probes: send, and clear the block on success.
    Probe(SellerBlock),
}

/// A sample in [0, 1) for the wait's spread, from the clock (no RNG needed for this).
fn spread(now: DateTime<Utc>) -> f64 {
    f64::from(now.timestamp_subsec_micros() % 1000) / 1000.0
}

fn cache_name(seller: &Nip) -> String {
    format!("relay/seller-block/{seller}")
}

fn read(value: &str) -> Option<SellerBlock> {
    serde_json::from_str(value).ok()
}

fn write(block: &SellerBlock) -> String {
    serde_json::to_string(block).expect("plain values serialize")
}

/// The metric line for a block written (the alarm fires on any).
pub fn parked_line(seller: &Nip, block: &SellerBlock, now: DateTime<Utc>) -> MetricLine {
    MetricLine::new(relay_observe::NAMESPACE, now)
        .group(&[], &[("SellerParked", Unit::Count, 1.0)])
        .group(
            &[("ErrorCode", block.failure.code.as_deref().unwrap_or("none"))],
            &[("SellerParkedByCode", Unit::Count, 1.0)],
        )
        .property("SellerNip", seller.as_str())
        .property("Strikes", block.strikes)
        .property("Until", block.until.to_rfc3339())
        .property("Reason", block.failure.to_string())
}

impl KsefContexts {
    fn blocks(&self) -> &dyn SharedCache {
        self.shared_cache().unwrap_or(self.local_blocks())
    }

    /// Whether `seller`'s work may go to KSeF now. A failing cache read does not stop sending:
    /// the send would meet the problem again and park the seller anew.
    pub async fn seller_gate(&self, seller: &Nip, now: DateTime<Utc>) -> SellerGate {
        let cache = self.blocks();
        let name = cache_name(seller);
        let entry = match cache.get(&name, now).await {
            Ok(Some(e)) => e,
            Ok(None) => return SellerGate::Open,
            Err(e) => {
                tracing::warn!(seller_nip = %seller, error = %e, "could not read the seller block; sending");
                return SellerGate::Open;
            }
        };
        let Some(block) = read(&entry.value) else {
            return SellerGate::Open;
        };
        if block.until > now {
            return SellerGate::Parked(block);
        }
        // The wait is over: take the probe, holding everyone else back for another wait.
        let wait = RetryPolicy::operator_wait(block.strikes, spread(now));
        let held = SellerBlock {
            until: now + chrono::Duration::from_std(wait).unwrap_or_default(),
            probing: true,
            ..block.clone()
        };
        match cache
            .put(&name, write(&held), held.until + STRIKE_MEMORY, Expect::Version(entry.version), now)
            .await
        {
            Ok(_) => {
                tracing::info!(seller_nip = %seller, strikes = block.strikes, reason = %block.failure, "seller block expired: this attempt probes");
                SellerGate::Probe(block)
            }
            Err(StoreError::VersionConflict { .. }) => match cache.get(&name, now).await {
                Ok(Some(e)) => read(&e.value).map_or(SellerGate::Open, SellerGate::Parked),
                _ => SellerGate::Open,
            },
            Err(e) => {
                tracing::warn!(seller_nip = %seller, error = %e, "could not take the probe; parking");
                SellerGate::Parked(held)
            }
        }
    }

    /// Parks `seller`'s work after an operator failure: a new block, or the next strike of the
    /// current one with a longer wait. Returns the block in force.
    pub async fn park_seller(&self, seller: &Nip, failure: &Failure, now: DateTime<Utc>) -> SellerBlock {
        // The fix may be a rotated secret: the probe that ends the block reads it afresh.
        self.forget_credentials(seller);
        let cache = self.blocks();
        let name = cache_name(seller);
        let mut tries = 0;
        loop {
            tries += 1;
            let current = cache.get(&name, now).await.ok().flatten();
            let previous = current.as_ref().and_then(|e| read(&e.value));
            // Another document of the seller, already in flight, parked it a moment ago: that
            // block stands and is not a new strike. Only a failed probe makes the wait grow.
            if let Some(p) = previous.as_ref().filter(|p| p.until > now && !p.probing) {
                return p.clone();
            }
            let strikes = previous.as_ref().map_or(0, |p| p.strikes) + 1;
            let wait = RetryPolicy::operator_wait(strikes, spread(now));
            let block = SellerBlock {
                until: now + chrono::Duration::from_std(wait).unwrap_or_default(),
                since: previous.as_ref().map_or(now, |p| p.since),
                strikes,
                failure: failure.clone(),
                probing: false,
            };
            let expect = current.map_or(Expect::Absent, |e| Expect::Version(e.version));
            match cache.put(&name, write(&block), block.until + STRIKE_MEMORY, expect, now).await {
                Ok(_) => {
                    tracing::error!(seller_nip = %seller, strikes, until = %block.until, reason = %failure, "an operator's problem: the seller's work is parked");
                    parked_line(seller, &block, now).emit();
                    return block;
                }
                Err(StoreError::VersionConflict { .. }) if tries < 3 => continue,
                Err(e) => {
                    tracing::warn!(seller_nip = %seller, error = %e, "could not share the seller block; parking this document only");
                    parked_line(seller, &block, now).emit();
                    return block;
                }
            }
        }
    }

    /// A probe got through: the seller's work flows again.
    pub async fn clear_seller_block(&self, seller: &Nip, now: DateTime<Utc>) {
        let cache = self.blocks();
        let name = cache_name(seller);
        if let Ok(Some(entry)) = cache.get(&name, now).await {
            match cache.remove(&name, entry.version).await {
                Ok(()) => tracing::info!(seller_nip = %seller, "the probe got through: seller block cleared"),
                Err(e) => tracing::warn!(seller_nip = %seller, error = %e, "could not clear the seller block; it ends at its time"),
            }
        }
    }
}

/// The failure a parked document records: the block's, saying it waits for the seller.
pub fn parked_failure(block: &SellerBlock) -> Failure {
    Failure {
        class: ErrorClass::Operator,
        message: format!(
            "the seller's work is parked until {} (an operator must act; since {}): {}",
            block.until.to_rfc3339(),
            block.since.to_rfc3339(),
            block.failure.message
        ),
        ..block.failure.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_domain::memory::MemorySharedCache;
    use relay_domain::ErrorSource;
    use std::sync::Arc;

    fn forbidden() -> Failure {
        Failure::new(
            ErrorClass::Operator,
            ErrorSource::Ksef {
                operation: "send_invoice".into(),
            },
            "ip not allowed",
        )
        .with_code("403 ip-not-allowed")
    }

    #[test]
    fn the_parked_line_is_valid_emf_with_the_alarmed_metric() {
        let now = Utc::now();
        let block = SellerBlock {
            until: now,
            since: now,
            strikes: 2,
            failure: forbidden(),
            probing: false,
        };
        let line = parked_line(&Nip::parse("9999999999").unwrap(), &block, now).to_line().unwrap();
        let metrics = relay_observe::emf::check_line(&line).unwrap();
        assert!(metrics.iter().any(|(name, _)| name == "SellerParked"), "{line}");
        assert!(line.contains("403 ip-not-allowed") && line.contains("9999999999"), "{line}");
    }

    #[tokio::test]
    async fn a_block_parks_every_instance_then_one_probe_and_success_clears_it() {
        let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
        let a = KsefContexts::new().with_shared_cache(cache.clone());
        let b = KsefContexts::new().with_shared_cache(cache.clone());
        let nip = Nip::parse("9999999999").unwrap();
        let t0 = Utc::now();
        assert_eq!(a.seller_gate(&nip, t0).await, SellerGate::Open);
        let first = a.park_seller(&nip, &forbidden(), t0).await;
        assert_eq!(first.strikes, 1);
        assert!(first.until >= t0 + chrono::Duration::minutes(5));
        assert!(
            matches!(b.seller_gate(&nip, t0).await, SellerGate::Parked(_)),
            "shared with other instances"
        );
        let later = first.until + chrono::Duration::seconds(1);
        assert!(matches!(b.seller_gate(&nip, later).await, SellerGate::Probe(_)));
        assert!(matches!(a.seller_gate(&nip, later).await, SellerGate::Parked(_)), "only one probe");
        // The probe met the problem again: a longer wait.
        let second = b.park_seller(&nip, &forbidden(), later).await;
        assert_eq!((second.strikes, second.since), (2, first.since));
        assert!(second.until >= later + chrono::Duration::minutes(10));
        let later = second.until + chrono::Duration::seconds(1);
        assert!(matches!(a.seller_gate(&nip, later).await, SellerGate::Probe(_)));
        a.clear_seller_block(&nip, later).await;
        assert_eq!(b.seller_gate(&nip, later).await, SellerGate::Open);
    }
}
