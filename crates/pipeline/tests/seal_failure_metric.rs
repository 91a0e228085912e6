//! A KSeF secret that cannot be sealed for the shared cache (the KMS key disabled, its grant
//! gone) is kept by the instance to itself, and says so as a metric: `KsefCacheSealFailed`, which
//! the `KsefCacheSealAlarm` watches. The work goes on (a login and a session for this instance),
//! and nothing unsealed reaches the cache. Its own test binary: the EMF sink is process-wide.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::{client, SCALE};
use ksef_sim::SimConfig;
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::{SealError, SecretSealer, SharedCache};
use relay_domain::Nip;
use relay_pipeline::sessions::KsefContexts;

/// A sealer whose key refuses (as KMS does for a disabled key).
struct RefusingKey;

#[async_trait::async_trait]
impl SecretSealer for RefusingKey {
    async fn seal(&self, _name: &str, _plain: &str) -> Result<String, SealError> {
        Err(SealError::Refused("DisabledException: the key is disabled".into()))
    }
    async fn open(&self, _name: &str, _sealed: &str) -> Result<String, SealError> {
        Err(SealError::Refused("DisabledException: the key is disabled".into()))
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_secret_that_cannot_be_sealed_is_not_shared_and_counted() {
    let lines = Captured::default();
    relay_observe::emf::set_sink(Box::new(lines.clone()));
    let sim = ksef_sim::start(SimConfig {
        time_scale: SCALE,
        auth_delay: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    let nip = Nip::parse("9999999999").unwrap();
    let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
    let ctx = KsefContexts::new()
        .with(nip.clone(), client(&sim))
        .with_shared_cache(cache.clone())
        .with_sealer(Arc::new(RefusingKey));
    ctx.session(&nip, Utc::now()).await.expect("the work goes on, unshared");
    for name in ["ksef/tokens/9999999999", "ksef/session/9999999999"] {
        assert!(
            cache.get(name, Utc::now()).await.unwrap().is_none(),
            "{name} was not shared unsealed"
        );
    }
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let failed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("KsefCacheSealFailed").is_some())
        .collect();
    let entries: Vec<(&str, &str, f64)> = failed
        .iter()
        .map(|l| {
            (
                l["CacheEntry"].as_str().unwrap(),
                l["ErrorClass"].as_str().unwrap(),
                l["KsefCacheSealFailed"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("ksef/tokens/9999999999", "OPERATOR", 1.0),
            ("ksef/session/9999999999", "OPERATOR", 1.0)
        ]
    );
    for l in text.lines().filter(|l| l.contains("KsefCacheSealFailed")) {
        relay_observe::emf::check_line(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}
