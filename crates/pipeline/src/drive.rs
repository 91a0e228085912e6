//! Driving the send and status stages from their queues, the way the Lambda SQS event source
//! does (batches of up to 10, a visibility timeout while a message is worked on, the action the
//! use case decided carried out afterwards). The local runner and the end-to-end tests use it,
//! so they run the very use cases the Lambda functions run.

use std::collections::BTreeMap;
use std::time::Duration;

use relay_domain::clock::Clock;
use relay_domain::ports::{Archive, DocumentStore, Queue, QueueError, ReceivedMessage};
use relay_domain::{DocumentState, SendMode};

use crate::follow_up::FollowUpPorts;
use crate::messages::{SendRequest, StatusRequest};
use crate::queue_action::{apply, QueueAction};
use crate::send::{send, send_batch, BatchConfig, SendConfig, SendPorts};
use crate::sessions::KsefContexts;
use crate::status::{poll, StatusConfig, StatusPorts};
use crate::sweeper::{sweep, SweepConfig};

/// Each seller's gathered Batch-mode messages, by seller NIP.
type Gathered = BTreeMap<String, Vec<(ReceivedMessage, SendRequest)>>;

/// The most send messages one pump gathers (the Batch-mode ones over all sellers and the
/// others received meanwhile): five sellers' full batch sessions (the batch builder holds at most about two parts per session at a time, see
/// docs/performance.md "Batch builder memory").
pub const MAX_GATHERED: usize = 50_000;

/// Everything the two stages need.
pub struct Stages<'a, S: DocumentStore + ?Sized> {
    pub store: &'a S,
    pub archive: &'a dyn Archive,
    pub send_queue: &'a dyn Queue,
    pub send_dlq: &'a dyn Queue,
    pub status_queue: &'a dyn Queue,
    pub status_dlq: &'a dyn Queue,
    pub corrections_queue: &'a dyn Queue,
    pub ksef: &'a KsefContexts,
    pub send_cfg: &'a SendConfig,
    pub status_cfg: &'a StatusConfig,
    /// How long a received message stays hidden while it is worked on.
    pub visibility: Duration,
    /// The stages' `now` (a manual clock in tests that live through hours of backoff).
    pub clock: &'a dyn Clock,
    /// The sweeper's settings: `run_until_quiet` sweeps whenever the queues run dry while
    /// documents are still open, as the scheduled sweeper function does in AWS.
    pub sweep: SweepConfig,
    /// How big a batch session may grow (KSeF's limits by default).
    pub batch_cfg: BatchConfig,
}

/// One handled message, for progress displays and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub stage: &'static str,
    pub outcome: &'static str,
    pub document: Option<String>,
}

impl<S: DocumentStore + ?Sized> Stages<'_, S> {
    /// Receives one batch from each stage's queue and handles its messages concurrently, as the
    /// Lambda handlers do. Returns what was handled.
    ///
    /// Batch-mode send messages are gathered per seller ([`Stages::gather`]): each seller's go
    /// to `send_batch` together, one batch session per seller (up to
    /// [`BatchConfig::max_members`] each), the sellers' sessions side by side (they are
    /// different rate-limit contexts). The other send messages are handled ten at a time.
    pub async fn pump_once(&self) -> Result<Vec<Step>, QueueError> {
        let received = self.send_queue.receive(10, self.visibility, Duration::ZERO).await?;
        let (by_seller, sends) = self.gather(received).await?;
        let statuses = self.status_queue.receive(10, self.visibility, Duration::ZERO).await?;
        let lone = async {
            let mut out = Vec::new();
            for chunk in sends.chunks(10) {
                out.extend(futures::future::join_all(chunk.iter().map(|m| self.handle_send(m))).await);
            }
            out
        };
        let (sent, batched, polled) = futures::future::join3(
            lone,
            futures::future::join_all(by_seller.values().map(|group| self.handle_send_batch(group))),
            futures::future::join_all(statuses.iter().map(|m| self.handle_status(m))),
        )
        .await;
        sent.into_iter().chain(batched.into_iter().flatten()).chain(polled).collect()
    }

    /// Sorts `received` into each seller's Batch-mode messages and the rest, and while the
    /// messages received hold any Batch-mode one, receives more: up to
    /// [`BatchConfig::max_members`] for each seller and [`MAX_GATHERED`] messages in all. A
    /// message of a seller whose batch is full is handed back at once (visible again for the
    /// next pump); gathering stops when the queue runs dry, at the total, or once a full batch's
    /// worth has been handed back (the rest of the queue is the full sellers' next batch), or
    /// once half the visibility timeout has passed since the first receive (a slow queue, e.g.
    /// the emulator's: a message held longer would become visible again and be received a
    /// second time into the same batch). A receive without a Batch-mode message ends it only
    /// while none has been gathered (a pump without batch work takes ten messages): stopping
    /// there later cut each seller's month end into several sessions (5 sellers x 2,000: 20
    /// batch sessions, runs of ten Online messages between the Batch-mode ones).
    async fn gather(&self, mut received: Vec<ReceivedMessage>) -> Result<(Gathered, Vec<ReceivedMessage>), QueueError> {
        let per_seller = self.batch_cfg.max_members.max(1);
        let mut by_seller: Gathered = BTreeMap::new();
        let mut sends = Vec::new();
        let (mut held, mut handed_back) = (0usize, Vec::new());
        let started = tokio::time::Instant::now();
        loop {
            let mut got_batch = false;
            for m in received {
                match SendRequest::from_json(&m.body) {
                    Ok(req) if req.mode == Some(SendMode::Batch) => {
                        got_batch = true;
                        let group = by_seller.entry(req.document.seller_nip.to_string()).or_default();
                        if group.len() >= per_seller {
                            handed_back.push(m);
                        } else {
                            group.push((m, req));
                            held += 1;
                        }
                    }
                    _ => sends.push(m),
                }
            }
            // Only a pump that has found no Batch-mode message stops at a receive without one:
            // once gathering, a run of other messages on the queue (Online ones parked by the
            // governor come back between the Batch-mode ones) must not cut a seller's batch in
            // two. The other messages received meanwhile are handled in this pump.
            let stop = if !got_batch && held == 0 {
                Some("a receive without a Batch-mode message")
            } else if held + sends.len() >= MAX_GATHERED {
                Some("the total")
            } else if handed_back.len() >= per_seller {
                Some("a full batch handed back")
            } else if started.elapsed() >= self.visibility / 2 {
                Some("half the visibility timeout")
            } else {
                None
            };
            if let Some(why) = stop {
                tracing::debug!(
                    held,
                    sellers = by_seller.len(),
                    others = sends.len(),
                    handed_back = handed_back.len(),
                    why,
                    "gathered"
                );
                break;
            }
            received = self.send_queue.receive(10, self.visibility, Duration::ZERO).await?;
            if received.is_empty() {
                tracing::debug!(
                    held,
                    sellers = by_seller.len(),
                    others = sends.len(),
                    handed_back = handed_back.len(),
                    why = "the queue ran dry",
                    "gathered"
                );
                break;
            }
        }
        // Received but not taken: visible again (kept hidden while gathering, so that the loop
        // above did not receive them twice).
        for m in handed_back {
            self.send_queue.change_visibility(&m.receipt, Duration::ZERO).await?;
        }
        Ok((by_seller, sends))
    }

    /// One seller's Batch-mode messages, sent together ([`send_batch`]).
    async fn handle_send_batch(&self, group: &[(ReceivedMessage, SendRequest)]) -> Vec<Result<Step, QueueError>> {
        let ports = SendPorts {
            store: self.store,
            archive: self.archive,
            send_queue: self.send_queue,
            status_queue: self.status_queue,
            corrections_queue: self.corrections_queue,
        };
        let reqs: Vec<SendRequest> = group.iter().map(|(_, r)| r.clone()).collect();
        let results = send_batch(&ports, self.ksef, self.send_cfg, &self.batch_cfg, &reqs, self.clock.now()).await;
        let mut out = Vec::new();
        for ((m, req), res) in group.iter().zip(results) {
            let (action, outcome) = match res {
                Ok(res) => (res.action, res.outcome),
                Err(e) => {
                    tracing::warn!(document = %req.document, error = %e, "send stage failed; the message comes back after its visibility timeout");
                    (QueueAction::Release, "INFRASTRUCTURE_ERROR")
                }
            };
            out.push(apply(&action, m, self.send_queue, self.send_dlq).await.map(|_| Step {
                stage: "send",
                outcome,
                document: Some(req.document.to_string()),
            }));
        }
        out
    }

    async fn handle_send(&self, m: &ReceivedMessage) -> Result<Step, QueueError> {
        let Ok(req) = SendRequest::from_json(&m.body) else {
            apply(&QueueAction::DeadLetter, m, self.send_queue, self.send_dlq).await?;
            return Ok(Step {
                stage: "send",
                outcome: "UNREADABLE_MESSAGE",
                document: None,
            });
        };
        let ports = SendPorts {
            store: self.store,
            archive: self.archive,
            send_queue: self.send_queue,
            status_queue: self.status_queue,
            corrections_queue: self.corrections_queue,
        };
        let (action, outcome) = match send(&ports, self.ksef, self.send_cfg, &req, self.clock.now()).await {
            Ok(res) => (res.action, res.outcome),
            Err(e) => {
                tracing::warn!(document = %req.document, error = %e, "send stage failed; the message comes back after its visibility timeout");
                (QueueAction::Release, "INFRASTRUCTURE_ERROR")
            }
        };
        apply(&action, m, self.send_queue, self.send_dlq).await?;
        Ok(Step {
            stage: "send",
            outcome,
            document: Some(req.document.to_string()),
        })
    }

    async fn handle_status(&self, m: &ReceivedMessage) -> Result<Step, QueueError> {
        let Ok(req) = StatusRequest::from_json(&m.body) else {
            apply(&QueueAction::DeadLetter, m, self.status_queue, self.status_dlq).await?;
            return Ok(Step {
                stage: "status",
                outcome: "UNREADABLE_MESSAGE",
                document: None,
            });
        };
        let ports = StatusPorts {
            store: self.store,
            archive: self.archive,
            send_queue: self.send_queue,
            status_queue: self.status_queue,
            corrections_queue: self.corrections_queue,
        };
        let (action, outcome) = match poll(&ports, self.ksef, self.status_cfg, &req, self.clock.now()).await {
            Ok(res) => (res.action, res.outcome),
            Err(e) => {
                tracing::warn!(document = %req.document, error = %e, "status stage failed; the message comes back after its visibility timeout");
                (QueueAction::Release, "INFRASTRUCTURE_ERROR")
            }
        };
        apply(&action, m, self.status_queue, self.status_dlq).await?;
        Ok(Step {
            stage: "status",
            outcome,
            document: Some(req.document.to_string()),
        })
    }

    /// Messages still to be handled on both stages' queues (visible, delayed or in flight).
    pub async fn pending(&self) -> Result<u64, QueueError> {
        Ok(self.send_queue.stats().await?.total() + self.status_queue.stats().await?.total())
    }

    /// No message on either stage's queue is visible or being worked on (delayed ones may be).
    async fn only_delayed(&self) -> Result<bool, SweepFailed> {
        let (send, status) = (self.send_queue.stats().await?, self.status_queue.stats().await?);
        if send.visible + send.in_flight + status.visible + status.in_flight > 0 {
            return Ok(false);
        }
        // The cheap counts first: the full check reads every ACCEPTED document.
        for state in [DocumentState::Queued, DocumentState::Sent, DocumentState::Processing] {
            if self.store.count_by_state(state).await? > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Documents a stage still has work on ([`crate::follow_up::count_open`]).
    pub async fn open_documents(&self) -> Result<u64, relay_domain::ports::StoreError> {
        crate::follow_up::count_open(self.store, self.clock.now()).await
    }

    /// One sweep (see [`crate::sweeper`]); each re-driven document is reported as a step.
    pub async fn sweep_once(&self) -> Result<Vec<Step>, SweepFailed> {
        let ports = FollowUpPorts {
            store: self.store,
            archive: self.archive,
            send_queue: self.send_queue,
            status_queue: self.status_queue,
            corrections_queue: self.corrections_queue,
        };
        let report = sweep(&ports, &self.sweep, self.clock.now()).await?;
        Ok(report
            .redriven
            .into_iter()
            .chain(report.outbox_rewritten)
            .map(|s| Step {
                stage: "sweeper",
                outcome: if s.stage == "outbox" { "OUTBOX_REWRITTEN" } else { "REDRIVEN" },
                document: Some(s.document),
            })
            .collect())
    }

    /// Pumps until both queues are empty and no document is open, or `limit` passes; `on_step`
    /// sees every handled message. When the queues run dry with documents still open, it sweeps
    /// (at most once per `sweep_every`), as the scheduled sweeper does in AWS: a document whose
    /// follow-up was lost is re-driven rather than left behind. Returns false if it stopped at
    /// the limit with work left.
    pub async fn run_until_quiet(
        &self,
        limit: Duration,
        idle_sleep: Duration,
        mut on_step: impl FnMut(&Step),
    ) -> Result<bool, SweepFailed> {
        let deadline = tokio::time::Instant::now() + limit;
        let sweep_every = Duration::from_secs(1);
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            let steps = self.pump_once().await?;
            steps.iter().for_each(&mut on_step);
            if steps.is_empty() {
                if self.only_delayed().await? && self.open_documents().await? == 0 {
                    // Every document is finished; what is left are delayed leftovers (e.g. the
                    // online message of a document that went in a batch instead), which would
                    // find their documents a step ahead and do nothing.
                    return Ok(true);
                }
                if self.pending().await? == 0 {
                    if self.open_documents().await? == 0 {
                        return Ok(true);
                    }
                    if last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
                        last_sweep = Some(tokio::time::Instant::now());
                        let swept = self.sweep_once().await?;
                        swept.iter().for_each(&mut on_step);
                        if !swept.is_empty() {
                            continue;
                        }
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                tokio::time::sleep(idle_sleep).await;
            }
        }
    }
}

/// Why driving the stages stopped: a queue, the store or the archive failed.
#[derive(Debug, thiserror::Error)]
pub enum SweepFailed {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] relay_domain::ports::StoreError),
    #[error(transparent)]
    Stage(#[from] crate::queue_action::StageError),
}
