//! The send mode chosen at intake from the seller's online backlog (issue 12 item 1), through
//! the intake use case on the in-memory stores: a burst of one seller goes online while it can
//! go out within the target delay and in batch after that; another seller is unaffected; a
//! quiet hour later a single invoice goes online again; a broken cache never fails intake.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use ksef_client::{ClientLimits, OnlineBacklog};
use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue, MemorySharedCache};
use relay_domain::ports::{CacheEntry, DocumentRegistry, Expect, Queue, SharedCache, StoreError};
use relay_domain::{DocumentRecord, ErpDocumentId, HistoryEvent, SendMode};
use relay_pipeline::intake::{intake, IntakeOutcome, IntakePorts, Upload};
use relay_pipeline::messages::SendRequest;

const SELLER_A: &str = "9999999999";
/// A valid NIP (check digit 1) for a second seller.
const SELLER_B: &str = "5260000011";

fn invoice(seller: &str, number: &str) -> Vec<u8> {
    let text = String::from_utf8(include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml").to_vec()).unwrap();
    text.replacen("<NIP>9999999999</NIP>", &format!("<NIP>{seller}</NIP>"), 1)
        .replacen("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{number}</P_2>"), 1)
        .into_bytes()
}

struct World {
    store: MemoryDocumentStore,
    archive: MemoryArchive,
    send_q: MemoryQueue,
    corrections_q: MemoryQueue,
    backlog: OnlineBacklog,
}

impl World {
    fn new(cache: Arc<dyn SharedCache>) -> World {
        World {
            store: MemoryDocumentStore::new(),
            archive: MemoryArchive::new(),
            send_q: MemoryQueue::new("send"),
            corrections_q: MemoryQueue::new("corrections"),
            // KSeF's published limits in real time (10/s, 30/min, 180/h, with the 2% margin).
            backlog: OnlineBacklog::new(cache, ClientLimits::official(), Duration::from_secs(300)),
        }
    }

    async fn take_in(&self, seller: &str, number: &str, now: DateTime<Utc>) -> DocumentRecord {
        let ports = IntakePorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            corrections_queue: &self.corrections_q,
            backlog: Some(&self.backlog),
        };
        let bytes = invoice(seller, number);
        let upload = Upload {
            bytes: &bytes,
            source_key: format!("inbox/{seller}/{number}.xml"),
            erp_document_id: ErpDocumentId::parse(&number.replace('/', "-")).unwrap(),
            expected_seller: None,
            trace_id: None,
            offline_mode: None,
            corrects: None,
        };
        match intake(&ports, upload, now).await.unwrap() {
            IntakeOutcome::Queued(r) => r,
            other => panic!("{number}: {other:?}"),
        }
    }

    /// The registration's history line (the state change into QUEUED).
    async fn registration_reason(&self, r: &DocumentRecord) -> String {
        let doc = self.store.get(&r.key).await.unwrap().unwrap();
        doc.history
            .iter()
            .find_map(|h| match &h.event {
                HistoryEvent::StateChanged { from: None, reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .unwrap()
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap()
}

#[tokio::test]
async fn a_burst_goes_online_within_the_target_delay_and_in_batch_after_it() {
    let w = World::new(Arc::new(MemorySharedCache::new()));
    let mut modes = Vec::new();
    for i in 0..300 {
        // 300 invoices within three seconds.
        let now = t0() + chrono::Duration::milliseconds(i * 10);
        let r = w.take_in(SELLER_A, &format!("BURST/{i:04}"), now).await;
        modes.push(r.send_mode().unwrap());
    }
    // 30 a minute (the minute window, stretched 2% to 61.2 s) for five minutes: slots at 0,
    // 61.2, 122.4, 183.6 and 244.8 s; the sixth minute's would be 306 s after the burst, past
    // the 300 s target. The first 150 go online, every later one in batch.
    let online = modes.iter().take_while(|m| **m == SendMode::Online).count();
    assert_eq!(online, 150);
    assert!(modes[online..].iter().all(|m| *m == SendMode::Batch));

    // The send messages carry the mode, for the driver to group batches by.
    let messages = w.send_q.receive(10, Duration::from_secs(60), Duration::ZERO).await.unwrap();
    assert!(messages.iter().all(|m| SendRequest::from_json(&m.body).unwrap().mode.is_some()));

    // The choice and its reason are in each document's history line at registration.
    let first = w.take_in(SELLER_B, "B/0001", t0()).await;
    assert_eq!(first.send_mode(), Some(SendMode::Online), "another seller is unaffected");
    let why = w.registration_reason(&first).await;
    assert!(
        why.starts_with("registered at intake; online:") && why.contains("in 0.0 s"),
        "{why}"
    );
    let last = w.take_in(SELLER_A, "BURST/LAST", t0() + chrono::Duration::seconds(3)).await;
    assert_eq!(last.send_mode(), Some(SendMode::Batch));
    let why = w.registration_reason(&last).await;
    assert!(
        why.starts_with("registered at intake; batch:") && why.contains("beyond the target 300 s"),
        "{why}"
    );

    // 70 s later the same backlog holds the next invoice less long (its slot is still about
    // 306 s after the burst, now 236 s away): within the target, online again.
    let later = w.take_in(SELLER_A, "LATER/0001", t0() + chrono::Duration::seconds(70)).await;
    assert_eq!(later.send_mode(), Some(SendMode::Online));
    // And in a quiet hour a single invoice goes at once.
    let quiet = w.take_in(SELLER_A, "QUIET/0001", t0() + chrono::Duration::hours(3)).await;
    assert_eq!(quiet.send_mode(), Some(SendMode::Online));
    let why = w.registration_reason(&quiet).await;
    assert!(why.contains("in 0.0 s"), "{why}");
}

/// A shared cache that is down.
struct BrokenCache;

#[async_trait]
impl SharedCache for BrokenCache {
    async fn get(&self, _: &str, _: DateTime<Utc>) -> Result<Option<CacheEntry>, StoreError> {
        Err(StoreError::Unavailable("the table is down".into()))
    }
    async fn put(&self, _: &str, _: String, _: DateTime<Utc>, _: Expect, _: DateTime<Utc>) -> Result<CacheEntry, StoreError> {
        Err(StoreError::Unavailable("the table is down".into()))
    }
    async fn remove(&self, _: &str, _: u64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("the table is down".into()))
    }
}

#[tokio::test]
async fn a_broken_cache_sends_online_and_never_fails_intake() {
    let w = World::new(Arc::new(BrokenCache));
    for i in 0..200 {
        let r = w.take_in(SELLER_A, &format!("DOWN/{i:04}"), t0()).await;
        assert_eq!(r.send_mode(), Some(SendMode::Online));
        if i == 0 {
            let why = w.registration_reason(&r).await;
            assert!(why.contains("could not be checked") && why.contains("the table is down"), "{why}");
        }
    }
}
