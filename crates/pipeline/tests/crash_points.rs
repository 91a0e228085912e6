//! Crash-point enumeration: for each stage (intake, send online, send in a batch, status,
//! dlq-replay, sweeper), the stage dies after each successful external write and after each
//! KSeF call, at every numbered position in turn; then redelivery and the sweeper run, and
//! every time the document must end ACCEPTED, KSeF's ledger must hold the invoice exactly once
//! and the ERP's outbox must say what the store says.
//!
//! How a death is made (`relay-crash-injection`, shared with `tests/crash_points_on_emulator.rs`):
//! every port the stages write through (store, archive, queues) is wrapped, and KSeF is reached
//! through a loopback proxy in front of the simulator (the simulator's links for UPOs and batch
//! parts point at the proxy too). Each successful write or KSeF answer is a numbered position;
//! at the chosen one the wrapper lets the write happen, then never returns, and the driver drops
//! the stage's future: nothing after that point runs, the message is neither deleted nor
//! re-queued, the instance's memory (its KSeF session) is gone. Time is a
//! manual clock shared by the use cases and the in-memory queues, so visibility timeouts, leases
//! and backoffs pass in an instant; the simulator runs at a 1000× clock with no processing delay.
//!
//! First each scenario runs without a crash to count its positions; then once per position.
//! The closing line of each test names the positions it covered.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ksef_sim::{Fault, SimConfig};
use relay_crash_injection::{check_delivered_once, invoice, off_frame, until_crash, CrashArchive, CrashKsef, CrashQueue, CrashStore, Plan};
use relay_domain::clock::{Clock, ManualClock};
use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue, MemorySharedCache};
use relay_domain::ports::{Archive, DocumentRegistry, DocumentUpdates, Queue, SharedCache};
use relay_domain::{
    Change, ContentHash, DocumentKey, DocumentRecord, DocumentState, ErpDocumentId, ErrorClass, ErrorSource, Failure, HistoryEvent, Nip,
    RetryPolicy, SendMode,
};
use relay_pipeline::follow_up::FollowUpPorts;
use relay_pipeline::intake::{intake, IntakePorts, Upload};
use relay_pipeline::messages::{SendRequest, StatusRequest};
use relay_pipeline::queue_action::{apply, QueueAction};
use relay_pipeline::replay::{replay, ReplayPorts, ReplayRequest};
use relay_pipeline::send::{send, send_batch, BatchConfig, SendConfig, SendPorts};
use relay_pipeline::sessions::KsefContexts;
use relay_pipeline::status::{poll, StatusConfig, StatusPorts};
use relay_pipeline::sweeper::{sweep, SweepConfig};

const SCALE: f64 = 1000.0;
const VISIBILITY: Duration = Duration::from_secs(300);

fn seller() -> Nip {
    Nip::parse("9999999999").unwrap()
}

fn client(proxy_url: &str) -> ksef_client::KsefClient {
    relay_crash_injection::client(proxy_url, seller(), SCALE)
}

async fn start_ksef() -> CrashKsef {
    relay_crash_injection::start_ksef(SimConfig {
        time_scale: SCALE,
        auth_delay: Duration::ZERO,
        accept_delay: Duration::ZERO,
        processing_delay: Duration::ZERO,
        attachments_allowed: true,
        ..SimConfig::default()
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// One run: the relay's stores and queues, a manual clock, and a driver that lets a stage die.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Intake,
    SendOnline,
    SendBatch,
    /// Several Batch-mode invoices of one seller in one batch session (`send_batch`), its
    /// archive cut into several parts.
    SendBatchGroup,
    /// A batch going anyway takes two Online documents whose online send has not happened yet
    /// (their messages parked, as the governor parks them): claim, `ModeChanged`, then the batch.
    SendBatchMoving,
    Status,
    Replay,
    Sweeper,
    /// KSeF declared down (a FAILURE in the shared availability): the send stage holds the
    /// document (a history line, a delayed message), then sends once the failure has ended.
    SendHeld,
    /// A technical correction: an offline invoice KSeF rejected (the simulator's
    /// `reject-offline`), then its fixed file naming it (`ksef-corrects`): the correction's
    /// intake, send (with `hashOfCorrectedInvoice`) and status may each die.
    Correction,
    /// KSeF down and nothing declared (a silent outage): the sends meet 503s until their own
    /// failed calls hold sending (DEGRADED), then send once the probe has found KSeF back.
    SendHeldSilent,
}

struct Run<'k> {
    ksef: &'k CrashKsef,
    plan: Arc<Plan>,
    clock: ManualClock,
    store: CrashStore<MemoryDocumentStore>,
    archive: CrashArchive<MemoryArchive>,
    send_q: CrashQueue<MemoryQueue>,
    send_dlq: CrashQueue<MemoryQueue>,
    status_q: CrashQueue<MemoryQueue>,
    status_dlq: CrashQueue<MemoryQueue>,
    corrections_q: CrashQueue<MemoryQueue>,
    contexts: KsefContexts,
    send_cfg: SendConfig,
    status_cfg: StatusConfig,
    /// The invoices (one for every stage but the batch group), their hashes and keys.
    docs: Vec<Vec<u8>>,
    hashes: Vec<ContentHash>,
    keys: Vec<DocumentKey>,
    /// Send messages are handled in groups (`send_batch`), as the batch consumer does.
    group: Option<BatchConfig>,
    /// Intake's online backlog (the batch that goes anyway reads it too), when the scenario has one.
    backlog: Option<ksef_client::OnlineBacklog>,
    /// What happened, for the failure message.
    log: Vec<String>,
    crashed: bool,
    /// The shared cache KSeF's availability lives in (survives an instance's death).
    availability: Arc<dyn relay_domain::ports::SharedCache>,
    /// The technical-correction scenario: upload 1 is marked offline24, upload 2 corrects it.
    correction: bool,
}

impl<'k> Run<'k> {
    fn new(ksef: &'k CrashKsef, plan: Arc<Plan>, docs: Vec<Vec<u8>>, max_attempts: u32) -> Self {
        ksef.follow(plan.clone());
        let clock = ManualClock::starting_at(Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap());
        let c: Arc<dyn Clock> = Arc::new(clock.clone());
        let queue = |name: &str| CrashQueue {
            name: name.to_owned(),
            inner: MemoryQueue::with_clock(name, c.clone()),
            plan: plan.clone(),
        };
        let policy = RetryPolicy::standard(max_attempts).unwrap();
        Run {
            ksef,
            clock,
            store: CrashStore {
                inner: MemoryDocumentStore::new(),
                plan: plan.clone(),
            },
            archive: CrashArchive {
                inner: MemoryArchive::new(),
                plan: plan.clone(),
            },
            send_q: queue("send"),
            send_dlq: queue("send-dlq"),
            status_q: queue("status"),
            status_dlq: queue("status-dlq"),
            corrections_q: queue("corrections"),
            contexts: KsefContexts::new().with(seller(), client(&ksef.proxy_url)),
            send_cfg: SendConfig {
                policy: policy.clone(),
                owner: "crash-test".into(),
                lease: Duration::from_secs(120),
                first_poll_delay: Duration::from_secs(2),
            },
            status_cfg: StatusConfig {
                schedule: vec![Duration::from_secs(2)],
                ..StatusConfig::standard(policy)
            },
            hashes: docs.iter().map(|b| ContentHash::of(b)).collect(),
            docs,
            keys: Vec::new(),
            group: None,
            backlog: None,
            plan,
            log: Vec::new(),
            crashed: false,
            availability: Arc::new(relay_domain::memory::MemorySharedCache::new()),
            correction: false,
        }
    }

    /// A new instance's KSeF contexts: nothing in memory; KSeF's availability read from the
    /// shared cache.
    fn fresh_contexts(&self) -> KsefContexts {
        KsefContexts::new()
            .with(seller(), client(&self.ksef.proxy_url))
            .with_shared_cache(self.availability.clone())
            .with_availability(&ksef_client::Environment::Custom(self.ksef.proxy_url.clone()))
    }

    /// Writes the availability the poll would have decided: `failure` declared or not.
    async fn declare(&self, failure: bool) {
        use relay_domain::availability::{Availability, AvailabilityState, LatarniaReading, OwnEvidence};
        let reading = LatarniaReading {
            status: Some(Ok(if failure {
                AvailabilityState::Failure
            } else {
                AvailabilityState::Available
            })),
            messages: Some(Ok(Vec::new())),
        };
        let now = self.now();
        let a = Availability::decide("CUSTOM", None, &reading, &OwnEvidence::default(), now);
        let name = relay_domain::availability::cache_name("CUSTOM");
        let cache = self.availability.as_ref();
        let expect = match cache.get(&name, now).await.unwrap() {
            Some(e) => relay_domain::ports::Expect::Version(e.version),
            None => relay_domain::ports::Expect::Absent,
        };
        cache
            .put(
                &name,
                serde_json::to_string(&a).unwrap(),
                now + chrono::Duration::days(1),
                expect,
                now,
            )
            .await
            .unwrap();
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn follow_up_ports(&self) -> FollowUpPorts<'_, CrashStore<MemoryDocumentStore>> {
        FollowUpPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
            corrections_queue: &self.corrections_q,
        }
    }

    fn after_crash(&mut self) {
        // A new instance: no KSeF session or token in memory.
        self.contexts = self.new_contexts();
    }

    fn new_contexts(&self) -> KsefContexts {
        let contexts = self.fresh_contexts();
        match &self.backlog {
            Some(b) => contexts.with_online_backlog(b.clone()),
            None => contexts,
        }
    }

    /// Intake and the batches keep to `backlog` (in a cache that outlives the instances).
    fn with_backlog(&mut self, backlog: ksef_client::OnlineBacklog) {
        self.backlog = Some(backlog);
        self.contexts = self.new_contexts();
    }

    async fn intake_once(&mut self, armed: bool, i: usize) -> bool {
        let now = self.now();
        let bytes = self.docs[i].clone();
        let ports = IntakePorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            corrections_queue: &self.corrections_q,
            backlog: self.backlog.as_ref(),
        };
        let upload = Upload {
            bytes: &bytes,
            source_key: format!("inbox/9999999999/erp-{}.xml", i + 1),
            erp_document_id: ErpDocumentId::parse(&format!("erp-{}", i + 1)).unwrap(),
            expected_seller: Some(seller()),
            trace_id: None,
            offline_mode: (self.correction && i == 0).then_some(relay_domain::OfflineMode::Offline24),
            corrects: (self.correction && i == 1).then(|| ErpDocumentId::parse("erp-1").unwrap()),
        };
        let work = off_frame(move || async move { intake(&ports, upload, now).await });
        let out = until_crash(&self.plan, armed, work).await;
        let done = out.is_some();
        self.settle(out.map(|o| o.expect("intake on in-memory ports").name()), "intake");
        done
    }

    /// The S3 event until the intake finishes: a crashed intake's event comes back after the
    /// intake queue's visibility timeout.
    async fn intake(&mut self, armed: bool) {
        for i in 0..self.docs.len() {
            while !self.intake_once(armed, i).await {
                self.clock.advance(Duration::from_secs(360));
            }
            let doc = relay_fa3::read_identity(&self.docs[i]).unwrap();
            self.keys.push(doc.key);
        }
    }

    /// Every visible send message at once, handed to `send_batch` (the batch consumer).
    async fn handle_send_group(&mut self, armed: bool, batch_cfg: BatchConfig) -> bool {
        let msgs = self.send_q.receive(10, VISIBILITY, Duration::ZERO).await.unwrap();
        if msgs.is_empty() {
            return false;
        }
        let reqs: Vec<SendRequest> = msgs.iter().map(|m| SendRequest::from_json(&m.body).unwrap()).collect();
        let now = self.now();
        let ports = SendPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
            corrections_queue: &self.corrections_q,
        };
        let (contexts, cfg) = (&self.contexts, &self.send_cfg);
        let (send_q, send_dlq) = (&self.send_q, &self.send_dlq);
        let work = off_frame(move || async move {
            let results = send_batch(&ports, contexts, cfg, &batch_cfg, &reqs, now).await;
            let mut outcomes = Vec::new();
            for (res, m) in results.iter().zip(&msgs) {
                let action = res.as_ref().map(|r| r.action.clone()).unwrap_or(QueueAction::Release);
                apply(&action, m, send_q, send_dlq).await.unwrap();
                outcomes.push(res.as_ref().map(|r| r.outcome).unwrap_or("INFRASTRUCTURE_ERROR"));
            }
            outcomes.join(",")
        });
        let plan = self.plan.clone();
        let out = until_crash(&plan, armed, work).await;
        match out {
            Some(outcomes) => self.log.push(format!("send group {outcomes}")),
            None => self.settle(None, "send group"),
        }
        true
    }

    async fn handle_send(&mut self, armed: bool) -> bool {
        if let Some(batch_cfg) = self.group.clone() {
            return self.handle_send_group(armed, batch_cfg).await;
        }
        let Some(m) = self.send_q.receive(1, VISIBILITY, Duration::ZERO).await.unwrap().pop() else {
            return false;
        };
        let req = SendRequest::from_json(&m.body).unwrap();
        let now = self.now();
        let ports = SendPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
            corrections_queue: &self.corrections_q,
        };
        let (contexts, cfg) = (&self.contexts, &self.send_cfg);
        let (send_q, send_dlq) = (&self.send_q, &self.send_dlq);
        let work = off_frame(move || async move {
            let res = send(&ports, contexts, cfg, &req, now).await;
            let action = res.as_ref().map(|r| r.action.clone()).unwrap_or(QueueAction::Release);
            apply(&action, &m, send_q, send_dlq).await.unwrap();
            res.map(|r| r.outcome).unwrap_or("INFRASTRUCTURE_ERROR")
        });
        let plan = self.plan.clone();
        let out = until_crash(&plan, armed, work).await;
        self.settle(out, "send");
        true
    }

    async fn handle_status(&mut self, armed: bool) -> bool {
        let Some(m) = self.status_q.receive(1, VISIBILITY, Duration::ZERO).await.unwrap().pop() else {
            return false;
        };
        let req = StatusRequest::from_json(&m.body).unwrap();
        let now = self.now();
        let ports = StatusPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
            corrections_queue: &self.corrections_q,
        };
        let (contexts, cfg) = (&self.contexts, &self.status_cfg);
        let (status_q, status_dlq) = (&self.status_q, &self.status_dlq);
        let work = off_frame(move || async move {
            let res = poll(&ports, contexts, cfg, &req, now).await;
            let action = res.as_ref().map(|r| r.action.clone()).unwrap_or(QueueAction::Release);
            apply(&action, &m, status_q, status_dlq).await.unwrap();
            res.map(|r| r.outcome).unwrap_or("INFRASTRUCTURE_ERROR")
        });
        let plan = self.plan.clone();
        let out = until_crash(&plan, armed, work).await;
        self.settle(out, "status");
        true
    }

    fn settle(&mut self, out: Option<&'static str>, stage: &str) {
        match out {
            Some(outcome) => self.log.push(format!("{stage} {outcome}")),
            None => {
                self.crashed = true;
                self.log.push(format!("CRASH in {stage} at {:?}", self.plan.positions().last()));
                self.after_crash();
            }
        }
    }

    async fn sweep(&mut self, armed: bool) {
        let now = self.now();
        let cfg = SweepConfig::standard();
        let ports = self.follow_up_ports();
        let work = off_frame(move || async move { sweep(&ports, &cfg, now).await.expect("sweep on in-memory ports") });
        let plan = self.plan.clone();
        let out = until_crash(&plan, armed, work).await;
        match out {
            Some(report) if !report.redriven.is_empty() || !report.outbox_rewritten.is_empty() => self
                .log
                .push(format!("sweeper {:?} {:?}", report.redriven, report.outbox_rewritten)),
            Some(_) => {}
            None => self.settle(None, "sweeper"),
        }
    }

    async fn replay(&mut self, armed: bool) -> bool {
        let now = self.now();
        let ports = ReplayPorts {
            store: &self.store,
            send_dlq: &self.send_dlq,
            status_dlq: &self.status_dlq,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
        };
        let req: ReplayRequest = serde_json::from_value(serde_json::json!({"queue": "send"})).unwrap();
        let contexts = &self.contexts;
        let work = off_frame(move || async move { replay(&ports, contexts, &req, now).await });
        let plan = self.plan.clone();
        let out = until_crash(&plan, armed, work).await;
        match out {
            Some(summary) => {
                self.log
                    .push(format!("replay {:?}", summary.map(|s| (s.requeued, s.dropped, s.skipped))));
                true
            }
            None => {
                self.settle(None, "dlq-replay");
                false
            }
        }
    }

    async fn record(&self) -> DocumentRecord {
        self.record_of(0).await
    }

    async fn record_of(&self, i: usize) -> DocumentRecord {
        self.store.get(&self.keys[i]).await.unwrap().unwrap().record
    }

    async fn quiet(&self) -> bool {
        for i in 0..self.keys.len() {
            if relay_pipeline::follow_up::is_open(&self.record_of(i).await) {
                return false;
            }
        }
        let queues = self.send_q.stats().await.unwrap().total() + self.status_q.stats().await.unwrap().total();
        queues == 0
    }

    /// Delivers messages (the stage `armed` may die) until the document is done and the queues
    /// are empty; when nothing is visible, time passes and, every five minutes, the sweeper runs.
    async fn drive(&mut self, armed: Option<Stage>) {
        for round in 0..3000 {
            let send_armed = matches!(
                armed,
                Some(
                    Stage::SendOnline
                        | Stage::SendBatch
                        | Stage::SendBatchGroup
                        | Stage::SendBatchMoving
                        | Stage::SendHeld
                        | Stage::Correction
                        | Stage::SendHeldSilent
                )
            );
            let status_armed = matches!(armed, Some(Stage::Status | Stage::Correction));
            let worked = self.handle_send(send_armed).await | self.handle_status(status_armed).await;
            if worked {
                continue;
            }
            if self.quiet().await {
                return;
            }
            self.clock.advance(Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(2)).await;
            if round % 10 == 9 {
                self.sweep(armed == Some(Stage::Sweeper)).await;
            }
        }
        panic!("the document never settled: {:#?}\n{:?}", self.log, self.record().await);
    }

    /// What every run must end with.
    async fn check(&self, what: &str) {
        if self.correction {
            return Box::pin(self.check_correction(what)).await;
        }
        for i in 0..self.keys.len() {
            let r = self.record_of(i).await;
            let outbox = format!("outbox/9999999999/erp-{}.json", i + 1);
            check_delivered_once(what, &r, &self.archive, self.ksef, &self.hashes[i], &outbox, &self.log).await;
        }
    }
}

impl Run<'_> {
    /// The technical correction's end, wherever it died: the correction ACCEPTED once in KSeF
    /// with the rejected file's hash as `hashOfCorrectedInvoice`, the rejected original never in
    /// KSeF, and each upload's outbox result naming the other (the rejected one still REJECTED).
    async fn check_correction(&self, what: &str) {
        let r = self.record_of(1).await;
        check_delivered_once(
            what,
            &r,
            &self.archive,
            self.ksef,
            &self.hashes[1],
            "outbox/9999999999/erp-2.json",
            &self.log,
        )
        .await;
        assert_eq!(r.corrects.as_ref().map(|c| c.content_hash), Some(self.hashes[0]), "{what}");
        let ledger = self.ksef.sim.ledger();
        assert_eq!(
            ledger.count_hash(&self.hashes[0]),
            0,
            "{what}: the rejected original is not in KSeF"
        );
        let entry = ledger.entries().into_iter().find(|e| e.invoice_hash == self.hashes[1]).unwrap();
        assert_eq!(entry.hash_of_corrected_invoice, Some(self.hashes[0]), "{what}");
        assert!(entry.offline_requested, "{what}");
        let outbox = |erp: &'static str| async move {
            let o = self.archive.get(&format!("outbox/9999999999/{erp}.json")).await.unwrap().unwrap();
            serde_json::from_slice::<serde_json::Value>(&o.bytes).unwrap()
        };
        let (fix, old) = (outbox("erp-2").await, outbox("erp-1").await);
        assert_eq!(fix["corrects"].as_str(), Some("erp-1"), "{what}: {fix}");
        assert_eq!(
            (old["state"].as_str(), old["correctedBy"].as_str()),
            (Some("REJECTED"), Some("erp-2")),
            "{what}: {old}"
        );
    }
}

/// The technical correction's scenario: the offline original rejected by KSeF (nothing armed),
/// then the correction's intake (armed), send and status (armed).
async fn correction(run: &mut Run<'_>) {
    run.correction = true;
    run.ksef.sim.faults().set(vec!["reject-offline".parse::<Fault>().unwrap()], 1);
    // Each await boxed, as the scenario's arms are: a debug poll frame holds every future it awaits.
    while !Box::pin(run.intake_once(false, 0)).await {
        run.clock.advance(Duration::from_secs(360));
    }
    let key = relay_fa3::read_identity(&run.docs[0]).unwrap().key;
    run.keys.push(key.clone());
    Box::pin(run.drive(None)).await;
    let r = run.record().await;
    assert_eq!(r.state, DocumentState::Rejected, "{:#?}", run.log);
    while !Box::pin(run.intake_once(true, 1)).await {
        run.clock.advance(Duration::from_secs(360));
    }
    // The same identity: a technical correction keeps the business content.
    run.keys.push(key);
    Box::pin(run.drive(Some(Stage::Correction))).await;
}

/// One scenario for `stage`, dying at `crash_at` (None: count the positions). Returns the
/// positions the stage passed and whether it died.
async fn scenario(ksef: &CrashKsef, stage: Stage, crash_at: Option<usize>, n: usize) -> (Vec<String>, bool) {
    let plan = Plan::new(crash_at);
    let number = format!("CP/{stage:?}/{n}");
    let docs = match stage {
        // Three members with attachments (Batch mode at intake), in parts of 6,000 bytes: the
        // archive spans several parts, so each part's upload is a position of its own.
        Stage::SendBatchGroup => (1..=3).map(|m| invoice(&format!("{number}/{m}"), true)).collect(),
        // Two attachment-free (Online at intake), then two with attachments (Batch).
        Stage::SendBatchMoving => (1..=4).map(|m| invoice(&format!("{number}/{m}"), m > 2)).collect(),
        // The original, then its fixed file (other bytes, the same business content).
        Stage::Correction => {
            let original = invoice(&number, false);
            let mut fixed = original.clone();
            fixed.extend_from_slice(b"\n");
            vec![original, fixed]
        }
        _ => vec![invoice(&number, stage == Stage::SendBatch)],
    };
    let max_attempts = if stage == Stage::Replay { 1 } else { 10 };
    let mut run = Run::new(ksef, plan.clone(), docs, max_attempts);
    if matches!(stage, Stage::SendBatchGroup | Stage::SendBatchMoving) {
        run.group = Some(BatchConfig {
            part_size: 6_000,
            max_members: 10_000,
        });
    }
    if stage == Stage::SendBatchMoving {
        let cache: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new());
        let limits = ksef_client::ClientLimits::official().scaled(SCALE);
        run.with_backlog(ksef_client::OnlineBacklog::new(cache, limits, Duration::from_secs(300)));
    }
    // The stage's script is built by a plain function and boxed there: a debug build gives an
    // async fn's poll a stack slot of its own for each future it holds, never shared between
    // `match` arms, and an unstarted async block is as big as its largest state. With the arms
    // built here (each boxed, but built on this frame first), `scenario`'s poll frame was 1.1 MB
    // at first and 398 KB with eleven arms (measured with gdb on the overflow), which with the
    // pipeline's own frames beneath it overflowed the test thread's 2 MB stack; built in
    // `stage_script`, whose frame is gone before the script is polled, only a box is held here.
    stage_script(stage, &mut run, ksef, crash_at).await;
    run.check(&format!("{stage:?} crashing at {crash_at:?}")).await;
    (plan.positions(), run.crashed)
}

/// `stage`'s script on `run`, boxed (see the comment in [`scenario`]).
fn stage_script<'a>(
    stage: Stage,
    run: &'a mut Run<'_>,
    ksef: &'a CrashKsef,
    crash_at: Option<usize>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    match stage {
        Stage::Intake => Box::pin(async move {
            run.intake(true).await;
            run.drive(None).await;
        }),
        Stage::SendOnline | Stage::SendBatch | Stage::SendBatchGroup | Stage::Status => Box::pin(async move {
            run.intake(false).await;
            run.drive(Some(stage)).await;
        }),
        Stage::SendBatchMoving => Box::pin(moving(run, crash_at)),
        Stage::Correction => Box::pin(correction(run)),
        Stage::Replay => {
            Box::pin(async move {
                // One transient failure spends a budget of one: FAILED, in the send DLQ.
                ksef.sim.faults().set(
                    vec![Fault::Unavailable {
                        rate: 1.0,
                        on: Some("/invoices".into()),
                    }],
                    1,
                );
                run.intake(false).await;
                while run.handle_send(false).await {}
                ksef.sim.faults().clear();
                assert_eq!(run.record().await.state, DocumentState::Failed, "{:#?}", run.log);
                // Ops replays the DLQ; if the replay dies, ops runs it again.
                run.send_cfg.policy = RetryPolicy::standard(10).unwrap();
                while !run.replay(true).await {
                    run.clock.advance(Duration::from_secs(180));
                }
                run.drive(None).await;
            })
        }
        Stage::SendHeld => {
            Box::pin(async move {
                run.contexts = run.new_contexts();
                run.declare(true).await;
                run.intake(false).await;
                // Deliveries while KSeF is down: each holds (or dies right after its write).
                for _ in 0..3 {
                    let mut waited = 0;
                    while !run.handle_send(true).await {
                        run.clock.advance(Duration::from_secs(60));
                        waited += 1;
                        // A hold that died before its delayed message was sent: the old message is
                        // a leftover, and the sweeper re-drives the document once it is overdue.
                        if waited % 5 == 0 {
                            run.sweep(false).await;
                        }
                        assert!(waited < 30, "no send message for 30 minutes: {:#?}", run.log);
                    }
                    assert_eq!(run.record().await.attempts, 0, "a hold spends no attempt: {:#?}", run.log);
                    assert!(ksef.sim.ledger().count_hash(&run.hashes[0]) == 0, "nothing sent while held");
                }
                run.declare(false).await;
                run.drive(Some(stage)).await;
            })
        }
        Stage::SendHeldSilent => {
            Box::pin(async move {
                use relay_domain::availability::FAILED_CALLS_DOWN;
                run.contexts = run.new_contexts();
                run.declare(false).await;
                // The fleet's failures come close together (many documents); one document's
                // retries stand in for them, a minute apart, inside the count's 30 minutes.
                let s = Duration::from_secs;
                run.send_cfg.policy = RetryPolicy::new(10, vec![s(0), s(60)], 1.0, s(60), 0.0).unwrap();
                run.intake(false).await;
                ksef.sim.faults().set(vec![Fault::Unavailable { rate: 1.0, on: None }], 1);
                // Deliveries while KSeF is down: each attempt meets the 503 (or dies right after
                // its answer or its write) until the failed calls hold sending.
                let mut waited = 0;
                while run.record().await.last_error.and_then(|f| f.code).as_deref() != Some("DEGRADED") {
                    if !run.handle_send(true).await {
                        run.clock.advance(Duration::from_secs(60));
                        if waited % 5 == 4 {
                            run.sweep(false).await;
                        }
                    }
                    waited += 1;
                    assert!(waited < 200, "never held: {:#?}", run.log);
                }
                // A death after a 503 and before its count costs one more call at most.
                let attempts = run.record().await.attempts;
                assert!(
                    attempts <= FAILED_CALLS_DOWN + 1,
                    "{attempts} attempts before the hold: {:#?}",
                    run.log
                );
                assert!(ksef.sim.ledger().count_hash(&run.hashes[0]) == 0, "nothing taken while down");
                // Held: no more calls, no more attempts, while it stays down.
                for _ in 0..3 {
                    run.clock.advance(Duration::from_secs(400));
                    while run.handle_send(true).await {}
                }
                assert_eq!(run.record().await.attempts, attempts, "a hold spends no attempt: {:#?}", run.log);
                // KSeF back: the poll's probe gets through, and its state says so.
                ksef.sim.faults().clear();
                run.declare(false).await;
                run.drive(Some(stage)).await;
            })
        }
        Stage::Sweeper => {
            Box::pin(async move {
                run.intake(false).await;
                while run.handle_send(false).await {}
                assert_eq!(run.record().await.state, DocumentState::Sent, "{:#?}", run.log);
                // The status message (due in two seconds) is lost.
                run.clock.advance(Duration::from_secs(5));
                let lost = run.status_q.receive(10, VISIBILITY, Duration::ZERO).await.unwrap();
                assert_eq!(lost.len(), 1);
                run.status_q.inner.delete(&lost[0].receipt).await.unwrap();
                run.clock.advance(Duration::from_secs(300));
                run.sweep(true).await;
                run.drive(None).await;
            })
        }
    }
}

/// The moving scenario after intake: the online messages parked, the batch driven, and each
/// Online document's history checked (moved ones never sent online).
async fn moving(run: &mut Run<'_>, crash_at: Option<usize>) {
    run.intake(false).await;
    for i in 0..2 {
        assert_eq!(run.record_of(i).await.send_mode(), Some(SendMode::Online), "{:#?}", run.log);
    }
    // The two online documents wait for their turn in KSeF's online windows, parked as the
    // governor parks them (RetryScheduled, not charged; the message delayed ten minutes). The
    // batch goes before that.
    let parked_until = run.now() + chrono::Duration::minutes(10);
    for i in 0..2 {
        let r = run.record_of(i).await;
        let change = Change::RetryScheduled {
            failure: Failure::new(
                ErrorClass::RateLimited { until: parked_until },
                ErrorSource::Relay,
                "waiting for a slot in KSeF's invoiceSend windows",
            ),
            retry_at: parked_until,
            charged: false,
            maybe_received: false,
        };
        run.store.inner.transition(&r, change, run.now()).await.unwrap();
    }
    let msgs = run.send_q.inner.receive(10, VISIBILITY, Duration::ZERO).await.unwrap();
    assert_eq!(msgs.len(), 4);
    for m in &msgs {
        let req = SendRequest::from_json(&m.body).unwrap();
        let delay = match req.mode {
            Some(SendMode::Online) => Duration::from_secs(600),
            _ => Duration::ZERO,
        };
        apply(&QueueAction::Requeue { delay }, m, &run.send_q.inner, &run.send_dlq.inner)
            .await
            .unwrap();
    }
    run.drive(Some(Stage::SendBatchMoving)).await;
    for i in 0..2 {
        let doc = run.store.get(&run.keys[i]).await.unwrap().unwrap();
        let online_sends = doc
            .history
            .iter()
            .filter(|h| matches!(&h.event, HistoryEvent::SendStarted { session, .. } if session.kind() == "SO"))
            .count();
        let moved = doc
            .history
            .iter()
            .position(|h| matches!(&h.event, HistoryEvent::Note { message } if message.starts_with("send mode online → batch")));
        match (doc.record.send_mode(), moved) {
            // Moved: never sent online, before or after.
            (Some(SendMode::Batch), Some(_)) => assert_eq!(online_sends, 0, "{:#?}\n{:#?}", run.log, doc.history),
            // A death before the move was written: it stayed online.
            (Some(SendMode::Online), None) => assert!(crash_at.is_some(), "without a crash both move: {:#?}", doc.history),
            other => panic!("mode and history disagree: {other:?} {:#?}", doc.history),
        }
    }
}

/// Counts `stage`'s positions, then dies at each in turn; returns how many were covered.
async fn enumerate(stage: Stage) -> usize {
    let ksef = start_ksef().await;
    let (positions, crashed) = scenario(&ksef, stage, None, 0).await;
    assert!(!crashed);
    assert!(!positions.is_empty(), "{stage:?} passed no position");
    let mut covered = Vec::new();
    for k in 1..=positions.len() {
        let (seen, crashed) = scenario(&ksef, stage, Some(k), k).await;
        assert!(crashed, "{stage:?}: position {k} ({}) was not reached: {seen:?}", positions[k - 1]);
        covered.push(format!("{k}: {}", seen[k - 1]));
    }
    println!("{stage:?}: {} crash points covered:\n  {}", covered.len(), covered.join("\n  "));
    covered.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_the_intake() {
    assert!(enumerate(Stage::Intake).await >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_an_online_send() {
    // The sample is dated February 2026: sent later than its issue day, it is marked offline
    // (one OfflineChecked write after the claim, before SendStarted), and every position around
    // that write is covered below.
    let ksef = start_ksef().await;
    let (positions, _) = scenario(&ksef, Stage::SendOnline, None, 0).await;
    let at = |name: &str| positions.iter().position(|p| p == name);
    assert!(
        at("store.transition OfflineChecked").is_some() && at("store.transition OfflineChecked") < at("store.transition SendStarted"),
        "{positions:#?}"
    );
    assert!(enumerate(Stage::SendOnline).await >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_batch_send() {
    assert!(enumerate(Stage::SendBatch).await >= 8);
}

/// The batch path with many members: claim, record (batch item, JoinedBatch), open, the session
/// on the batch, SendStarted, each part's upload, close, AwaitingBatch, then the harvest (the
/// members' reconciliation against the session's list, SENT, the status checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_batch_of_many_invoices() {
    batch_of_many().await;
}

async fn batch_of_many() {
    let ksef = start_ksef().await;
    let (positions, crashed) = scenario(&ksef, Stage::SendBatchGroup, None, 0).await;
    assert!(!crashed);
    for want in [
        "archive.put_if_absent batches",
        "store.transition JoinedBatch",
        "ksef POST /v2/sessions/batch",
        "archive.put batches",
        "ksef PUT /storage/batch",
        "ksef POST /v2/sessions/batch/{ref}/close",
        "store.transition AwaitingBatch",
        // The harvest: each member SENT and finished from the session's list, no status check
        // queued in between.
        "store.transition Sent",
        "store.transition Accepted",
    ] {
        assert!(
            positions.iter().any(|p| p.starts_with(want)),
            "the batch path passes {want}: {positions:#?}"
        );
    }
    let uploads = positions.iter().filter(|p| p.starts_with("ksef PUT /storage/batch")).count();
    assert!(uploads >= 2, "the archive spans several parts, each a position: {positions:#?}");
    drop(ksef);
    assert!(enumerate(Stage::SendBatchGroup).await >= 20);
}

/// Online documents moved into a batch going anyway: a death after the claim leaves them
/// online; after `ModeChanged` (or any later write) each goes in a batch and is never sent
/// online, its parked online message finding it a step ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_online_documents_moved_into_a_batch() {
    moved_into_a_batch().await;
}

async fn moved_into_a_batch() {
    let ksef = start_ksef().await;
    let (positions, crashed) = scenario(&ksef, Stage::SendBatchMoving, None, 0).await;
    assert!(!crashed);
    let mode_changes = positions.iter().filter(|p| p.starts_with("store.transition ModeChanged")).count();
    assert_eq!(mode_changes, 2, "both online documents moved: {positions:#?}");
    drop(ksef);
    assert!(enumerate(Stage::SendBatchMoving).await >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_the_status_stage() {
    // KOD I's two images are written after the UPO and before the ACCEPTED write: a death between
    // them runs the poll again (the same bytes rewritten), one after it rewrites the outbox.
    let ksef = start_ksef().await;
    let (positions, _) = scenario(&ksef, Stage::Status, None, 0).await;
    let at = |name: &str| positions.iter().position(|p| p == name);
    assert_eq!(positions.iter().filter(|p| *p == "archive.put qr").count(), 2, "{positions:#?}");
    assert!(at("archive.put_if_absent upo") < at("archive.put qr"), "{positions:#?}");
    assert!(
        at("archive.put qr").is_some() && at("archive.put qr") < at("store.transition Accepted"),
        "{positions:#?}"
    );
    assert!(enumerate(Stage::Status).await >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_dlq_replay() {
    assert!(enumerate(Stage::Replay).await >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_send_held_while_ksef_is_down() {
    assert!(enumerate(Stage::SendHeld).await >= 8);
}

/// A technical correction of a rejected offline invoice: its intake (registration, both outbox
/// results, the send message), the send with `hashOfCorrectedInvoice` and the status stage, each
/// dying at every position; the correction ends ACCEPTED once, the original REJECTED and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_technical_correction() {
    let ksef = start_ksef().await;
    let (positions, crashed) = scenario(&ksef, Stage::Correction, None, 0).await;
    assert!(!crashed);
    for want in [
        "store.transition Resubmitted",
        "archive.put outbox",
        "ksef POST /v2/sessions/online/{ref}/invoices",
        "store.transition Accepted",
    ] {
        assert!(
            positions.iter().any(|p| p.starts_with(want)),
            "the correction passes {want}: {positions:#?}"
        );
    }
    drop(ksef);
    assert!(enumerate(Stage::Correction).await >= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_send_held_on_its_own_failed_calls_in_a_silent_outage() {
    assert!(enumerate(Stage::SendHeldSilent).await >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_the_sweeper() {
    assert!(enumerate(Stage::Sweeper).await >= 2);
}
