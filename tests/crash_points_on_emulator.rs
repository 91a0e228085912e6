//! Crash points on the AWS emulator: a representative subset of `crates/pipeline/tests/
//! crash_points.rs`'s positions, run over the real AWS adapters (DynamoDB, S3, SQS on the moto
//! server, over the wire) and the KSeF simulator over HTTP, with the same crash injection
//! (`relay-crash-injection`: each successful write or KSeF answer is a numbered position; at the
//! chosen one the stage's future is dropped right after the write).
//!
//! Each scenario first runs without a crash to number its positions, then once per chosen
//! position (found by name, so the subset follows the code), 23 in all: intake after the
//! registration and after its send message; an online send after KSeF took the invoice and
//! after SENT (before the status message); a batch send after the batch is recorded (its item
//! under `batches/`, then JoinedBatch), after the session is opened, after the part upload,
//! after the close (KSeF holds the batch, nothing recorded yet), after AwaitingBatch and after
//! SENT (the harvest); three invoices in one batch session through `send_batch` (the deployed
//! send-batch function's path, the archive in parts) after the batch item, the open, the second
//! part's upload, the close, AwaitingBatch, and in the harvest after a member's SENT and its
//! ACCEPTED; status after KSeF's 200, after
//! the UPO is archived and after ACCEPTED (before the outbox); dlq-replay after the requeue
//! (before the send message); the sweeper after a re-drive (before its message). Every run must end ACCEPTED with
//! its UPO (each member of a batch), once in KSeF's ledger, with an outbox that agrees with the store.
//!
//! Time: the use cases see a manual clock. A message a stage delays is sent at once and the clock
//! jumps by its delay instead ([`Compressed`]), so a 15-minute wait costs nothing; a message a
//! dead stage held comes back when its visibility would have ended (the clock jumps past it and
//! the message is made visible, as SQS does then). Every wait for SQS is a poll with a deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use ksef_sim::{Fault, SimConfig};
use relay_aws::{provision, DynamoDocumentStore, S3Archive, SqsQueue};
use relay_crash_injection::{check_delivered_once, invoice, off_frame, until_crash, CrashArchive, CrashKsef, CrashQueue, CrashStore, Plan};
use relay_domain::clock::{Clock, ManualClock};
use relay_domain::ports::{DocumentRegistry, OutgoingMessage, Queue, QueueError, QueueStats, ReceivedMessage};
use relay_domain::{ContentHash, DocumentKey, DocumentRecord, DocumentState, ErpDocumentId, Nip, RetryPolicy};
use relay_pipeline::follow_up::FollowUpPorts;
use relay_pipeline::intake::{intake, IntakePorts, Upload};
use relay_pipeline::messages::{SendRequest, StatusRequest};
use relay_pipeline::queue_action::{apply, QueueAction};
use relay_pipeline::replay::{replay, ReplayPorts, ReplayRequest};
use relay_pipeline::send::{send, send_batch, BatchConfig, SendConfig, SendPorts};
use relay_pipeline::sessions::KsefContexts;
use relay_pipeline::status::{poll, StatusConfig, StatusPorts};
use relay_pipeline::sweeper::{sweep, SweepConfig};
use relay_tests::emulator;

const SCALE: f64 = 1000.0;
const VISIBILITY: Duration = Duration::from_secs(300);

/// An SQS queue whose delays are compressed: a delayed message is sent at once and the longest
/// delay asked for is noted, for the driver to move the manual clock by it.
struct Compressed {
    inner: SqsQueue,
    skipped: Arc<Mutex<Duration>>,
}

#[async_trait]
impl Queue for Compressed {
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        {
            let mut s = self.skipped.lock().unwrap();
            *s = (*s).max(message.delay);
        }
        self.inner.send(message.delayed(Duration::ZERO)).await
    }
    async fn receive(&self, max: u32, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(max, visibility, wait).await
    }
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.change_visibility(receipt, timeout).await
    }
    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt).await
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.stats().await
    }
}

type Q = CrashQueue<Compressed>;

fn seller() -> Nip {
    Nip::parse("9999999999").unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Intake,
    SendOnline,
    SendBatch,
    /// Three invoices in one batch session through `send_batch` (what the deployed send-batch
    /// function runs), the archive in several parts.
    SendBatchGroup,
    Status,
    Replay,
    Sweeper,
}

struct Run<'k> {
    ksef: &'k CrashKsef,
    plan: Arc<Plan>,
    clock: ManualClock,
    skipped: Arc<Mutex<Duration>>,
    store: CrashStore<DynamoDocumentStore>,
    archive: CrashArchive<S3Archive>,
    send_q: Q,
    send_dlq: Q,
    status_q: Q,
    status_dlq: Q,
    corrections_q: Q,
    contexts: KsefContexts,
    send_cfg: SendConfig,
    status_cfg: StatusConfig,
    /// The run's invoices (one, or a batch's members), their hashes and, once taken in, keys.
    bytes: Vec<Vec<u8>>,
    hashes: Vec<ContentHash>,
    keys: Vec<DocumentKey>,
    /// Send Batch-mode messages together, in batch sessions of this shape.
    group: Option<BatchConfig>,
    log: Vec<String>,
    crashed: bool,
}

impl<'k> Run<'k> {
    /// A run in its own table, bucket and queues on the emulator.
    async fn new(ksef: &'k CrashKsef, plan: Arc<Plan>, bytes: Vec<Vec<u8>>, max_attempts: u32) -> Run<'k> {
        ksef.follow(plan.clone());
        let c = emulator::clients().await;
        let name = relay_tests::unique_name("crash");
        provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
        provision::create_bucket(&c.s3, &name, emulator::REGION).await.unwrap();
        let skipped = Arc::new(Mutex::new(Duration::ZERO));
        let mut queues = Vec::new();
        for stage in ["send", "status", "corrections"] {
            let pair = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-{stage}"), 5, Duration::from_secs(60))
                .await
                .unwrap();
            for (label, url) in [(stage.to_owned(), pair.url), (format!("{stage}-dlq"), pair.dlq_url)] {
                queues.push(CrashQueue {
                    name: label,
                    inner: Compressed {
                        inner: SqsQueue::new(c.sqs.clone(), &url),
                        skipped: skipped.clone(),
                    },
                    plan: plan.clone(),
                });
            }
        }
        let mut q = queues.into_iter();
        let (send_q, send_dlq, status_q, status_dlq, corrections_q) = (
            q.next().unwrap(),
            q.next().unwrap(),
            q.next().unwrap(),
            q.next().unwrap(),
            q.next().unwrap(),
        );
        let policy = RetryPolicy::standard(max_attempts).unwrap();
        Run {
            ksef,
            clock: ManualClock::starting_at(Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap()),
            skipped,
            store: CrashStore {
                inner: DynamoDocumentStore::new(c.dynamodb.clone(), &name),
                plan: plan.clone(),
            },
            archive: CrashArchive {
                inner: S3Archive::new(c.s3.clone(), &name),
                plan: plan.clone(),
            },
            send_q,
            send_dlq,
            status_q,
            status_dlq,
            corrections_q,
            contexts: KsefContexts::new().with(seller(), relay_crash_injection::client(&ksef.proxy_url, seller(), SCALE)),
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
            hashes: bytes.iter().map(|b| ContentHash::of(b)).collect(),
            bytes,
            keys: Vec::new(),
            group: None,
            plan,
            log: Vec::new(),
            crashed: false,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Time passes as long as the delays just asked for.
    fn pass_skipped_time(&self) {
        let d = std::mem::take(&mut *self.skipped.lock().unwrap());
        self.clock.advance(d);
    }

    fn settle(&mut self, out: Option<&'static str>, stage: &str) {
        match out {
            Some(outcome) => self.log.push(format!("{stage} {outcome}")),
            None => {
                self.crashed = true;
                self.log.push(format!("CRASH in {stage} at {:?}", self.plan.positions().last()));
                // A new instance: no KSeF session or token in memory.
                self.contexts = KsefContexts::new().with(seller(), relay_crash_injection::client(&self.ksef.proxy_url, seller(), SCALE));
            }
        }
    }

    async fn intake_once(&mut self, i: usize, armed: bool) -> bool {
        let now = self.now();
        let bytes = self.bytes[i].clone();
        let ports = IntakePorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            corrections_queue: &self.corrections_q,
            backlog: None,
        };
        let upload = Upload {
            bytes: &bytes,
            source_key: format!("inbox/9999999999/erp-{}.xml", i + 1),
            erp_document_id: ErpDocumentId::parse(&format!("erp-{}", i + 1)).unwrap(),
            expected_seller: Some(seller()),
            trace_id: None,
            offline_mode: None,
            corrects: None,
        };
        let out = until_crash(
            &self.plan,
            armed,
            off_frame(move || async move { intake(&ports, upload, now).await }),
        )
        .await;
        let done = out.is_some();
        self.settle(out.map(|o| o.expect("intake on the emulator").name()), "intake");
        done
    }

    /// Each file's S3 event until its intake finishes: a crashed intake's event comes back after
    /// the intake queue's visibility timeout.
    async fn intake(&mut self, armed: bool) {
        for i in 0..self.bytes.len() {
            while !self.intake_once(i, armed).await {
                self.clock.advance(Duration::from_secs(360));
            }
            self.keys.push(relay_fa3::read_identity(&self.bytes[i]).unwrap().key);
        }
    }

    /// A message the dead stage held comes back when its visibility timeout ends.
    async fn visibility_ends(&self, queue: &Q, receipt: &str) {
        self.clock.advance(VISIBILITY + Duration::from_secs(60));
        // It may be gone already (the stage died after deleting or replacing it).
        let _ = queue.inner.inner.change_visibility(receipt, Duration::ZERO).await;
    }

    /// Up to ten send messages at once through `send_batch`, as the send-batch function gets them.
    async fn handle_send_group(&mut self, armed: bool, batch_cfg: BatchConfig) -> bool {
        let msgs = self.send_q.receive(10, VISIBILITY, Duration::ZERO).await.unwrap();
        if msgs.is_empty() {
            return false;
        }
        let receipts: Vec<String> = msgs.iter().map(|m| m.receipt.clone()).collect();
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
            None => {
                // Every message the dead instance held comes back (the handled ones are gone).
                for receipt in &receipts {
                    self.visibility_ends(&self.send_q, receipt).await;
                }
                self.settle(None, "send group");
            }
        }
        self.pass_skipped_time();
        true
    }

    async fn handle_send(&mut self, armed: bool) -> bool {
        if let Some(batch_cfg) = self.group.clone() {
            return self.handle_send_group(armed, batch_cfg).await;
        }
        let Some(m) = self.send_q.receive(1, VISIBILITY, Duration::ZERO).await.unwrap().pop() else {
            return false;
        };
        let receipt = m.receipt.clone();
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
        if out.is_none() {
            self.visibility_ends(&self.send_q, &receipt).await;
        }
        self.settle(out, "send");
        self.pass_skipped_time();
        true
    }

    async fn handle_status(&mut self, armed: bool) -> bool {
        let Some(m) = self.status_q.receive(1, VISIBILITY, Duration::ZERO).await.unwrap().pop() else {
            return false;
        };
        let receipt = m.receipt.clone();
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
        if out.is_none() {
            self.visibility_ends(&self.status_q, &receipt).await;
        }
        self.settle(out, "status");
        self.pass_skipped_time();
        true
    }

    async fn sweep(&mut self, armed: bool) {
        let now = self.now();
        let cfg = SweepConfig::standard();
        let ports = FollowUpPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
            corrections_queue: &self.corrections_q,
        };
        let work = off_frame(move || async move { sweep(&ports, &cfg, now).await.expect("sweep on the emulator") });
        let plan = self.plan.clone();
        match until_crash(&plan, armed, work).await {
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
        match until_crash(&plan, armed, work).await {
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

    /// The first document's record (the only one, except in a batch of several).
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
        self.send_q.stats().await.unwrap().total() + self.status_q.stats().await.unwrap().total() == 0
    }

    /// Delivers messages (the stage `armed` may die) until the document is done and the queues
    /// are empty; when nothing is visible, time passes and, every five minutes, the sweeper runs.
    async fn drive(&mut self, armed: Option<Stage>) {
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut idle = 0u32;
        while Instant::now() < deadline {
            let send_armed = matches!(armed, Some(Stage::SendOnline | Stage::SendBatch | Stage::SendBatchGroup));
            let status_armed = armed == Some(Stage::Status);
            let worked = self.handle_send(send_armed).await | self.handle_status(status_armed).await;
            if worked {
                continue;
            }
            if self.quiet().await {
                return;
            }
            self.clock.advance(Duration::from_secs(30));
            idle += 1;
            if idle.is_multiple_of(10) {
                self.sweep(armed == Some(Stage::Sweeper)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the document never settled: {:#?}\n{:?}", self.log, self.record().await);
    }

    /// What every run must end with, for each of its documents.
    async fn check(&self, what: &str) {
        for i in 0..self.keys.len() {
            let r = self.record_of(i).await;
            let outbox = format!("outbox/9999999999/erp-{}.json", i + 1);
            check_delivered_once(what, &r, &self.archive, self.ksef, &self.hashes[i], &outbox, &self.log).await;
        }
    }
}

/// One scenario for `stage`, dying at `crash_at` (None: count the positions). Returns the
/// positions the stage passed and whether it died.
async fn scenario(ksef: &CrashKsef, stage: Stage, crash_at: Option<usize>, n: usize) -> (Vec<String>, bool) {
    let plan = Plan::new(crash_at);
    let number = format!("CPE/{stage:?}/{n}");
    let bytes = match stage {
        // Three members with attachments (Batch mode at intake) in parts of 6,000 bytes: the
        // archive spans several parts.
        Stage::SendBatchGroup => (1..=3).map(|m| invoice(&format!("{number}/{m}"), true)).collect(),
        _ => vec![invoice(&number, stage == Stage::SendBatch)],
    };
    let max_attempts = if stage == Stage::Replay { 1 } else { 10 };
    let mut run = Run::new(ksef, plan.clone(), bytes, max_attempts).await;
    if stage == Stage::SendBatchGroup {
        run.group = Some(BatchConfig {
            part_size: 6_000,
            max_members: 10_000,
        });
    }
    // The script is built and boxed by `off_frame`, off this function's poll frame (see there).
    {
        let run = &mut run;
        off_frame(move || async move {
            match stage {
                Stage::Intake => {
                    run.intake(true).await;
                    run.drive(None).await;
                }
                Stage::SendOnline | Stage::SendBatch | Stage::SendBatchGroup | Stage::Status => {
                    run.intake(false).await;
                    run.drive(Some(stage)).await;
                }
                Stage::Replay => {
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
                    // Ops replays the DLQ. A replay that dies holds its DLQ message for the receive's
                    // visibility (real seconds here); the document it moved is re-driven by the sweeper.
                    run.send_cfg.policy = RetryPolicy::standard(10).unwrap();
                    run.replay(true).await;
                    run.drive(None).await;
                }
                Stage::Sweeper => {
                    run.intake(false).await;
                    while run.handle_send(false).await {}
                    assert_eq!(run.record().await.state, DocumentState::Sent, "{:#?}", run.log);
                    // The status message is lost.
                    let lost = run.status_q.receive(10, VISIBILITY, Duration::from_secs(5)).await.unwrap();
                    assert_eq!(lost.len(), 1);
                    run.status_q.inner.delete(&lost[0].receipt).await.unwrap();
                    run.clock.advance(Duration::from_secs(300));
                    run.sweep(true).await;
                    run.drive(None).await;
                }
            }
        })
        .await;
    }
    run.check(&format!("{stage:?} crashing at {crash_at:?}")).await;
    (plan.positions(), run.crashed)
}

/// Numbers `stage`'s positions, then dies at each one named in `wanted` (the first position so
/// named); returns the positions covered.
async fn crash_at_named(stage: Stage, wanted: &[&str]) -> Vec<String> {
    let ksef = relay_crash_injection::start_ksef(SimConfig {
        time_scale: SCALE,
        auth_delay: Duration::ZERO,
        accept_delay: Duration::ZERO,
        processing_delay: Duration::ZERO,
        attachments_allowed: true,
        ..SimConfig::default()
    })
    .await;
    let (positions, crashed) = scenario(&ksef, stage, None, 0).await;
    assert!(!crashed);
    let mut covered = Vec::new();
    for name in wanted {
        let k = positions
            .iter()
            .position(|p| p == name)
            .unwrap_or_else(|| panic!("{stage:?} passed no position {name:?}: {positions:#?}"))
            + 1;
        let (seen, crashed) = scenario(&ksef, stage, Some(k), k).await;
        assert!(crashed, "{stage:?}: position {k} ({name}) was not reached: {seen:?}");
        assert_eq!(&seen[k - 1], name, "the same position in the crashed run");
        covered.push(format!("{k}: {name}"));
    }
    println!(
        "{stage:?} on the emulator: {} of {} crash points covered:\n  {}",
        covered.len(),
        positions.len(),
        covered.join("\n  ")
    );
    covered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_crash_points_on_the_emulator() {
    crash_at_named(Stage::Intake, &["store.register", "queue.send send"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_send_crash_points_on_the_emulator() {
    crash_at_named(
        Stage::SendOnline,
        &["ksef POST /v2/sessions/online/{ref}/invoices", "store.transition Sent"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_send_crash_points_on_the_emulator() {
    crash_at_named(
        Stage::SendBatch,
        &[
            "archive.put_if_absent batches",
            "store.transition JoinedBatch",
            "ksef POST /v2/sessions/batch",
            "ksef PUT /storage/batch/{ref}/1",
            "ksef POST /v2/sessions/batch/{ref}/close",
            "store.transition AwaitingBatch",
            "store.transition Sent",
        ],
    )
    .await;
}

/// Many invoices in one session through `send_batch`: a death after the batch is recorded, after
/// the open, after the second part's upload, after the close, after AwaitingBatch, and in the
/// harvest after a member's SENT (before its decision) and after its ACCEPTED (before its
/// outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_many_crash_points_on_the_emulator() {
    crash_at_named(
        Stage::SendBatchGroup,
        &[
            "archive.put_if_absent batches",
            "ksef POST /v2/sessions/batch",
            "ksef PUT /storage/batch/{ref}/2",
            "ksef POST /v2/sessions/batch/{ref}/close",
            "store.transition AwaitingBatch",
            "store.transition Sent",
            "store.transition Accepted",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_crash_points_on_the_emulator() {
    crash_at_named(
        Stage::Status,
        &[
            "ksef GET /v2/sessions/{ref}/invoices/{ref}",
            "archive.put_if_absent upo",
            "store.transition Accepted",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_crash_point_on_the_emulator() {
    crash_at_named(Stage::Replay, &["store.transition Requeued"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_crash_point_on_the_emulator() {
    crash_at_named(Stage::Sweeper, &["store.transition Redriven"]).await;
}
