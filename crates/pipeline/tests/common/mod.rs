//! Shared setup: the KSeF simulator on loopback (real RSA/AES), a client pointed at it, and the
//! relay's in-memory stores and queues.

#![allow(dead_code)]

use std::time::Duration;

use chrono::Utc;
use ksef_client::{ClientConfig, ClientLimits, Credentials, Environment, KsefClient, KsefToken};
use ksef_sim::{SimConfig, SimHandle};
use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue};
use relay_domain::ports::Queue;
use relay_domain::{ErpDocumentId, KsefReference, Nip, RetryPolicy};
use relay_pipeline::intake::{intake, IntakeOutcome, IntakePorts, Upload};
use relay_pipeline::messages::SendRequest;
use relay_pipeline::send::{send, SendConfig, SendPorts};
use relay_pipeline::sessions::KsefContexts;
use relay_pipeline::status::{StatusConfig, StatusPorts};

pub const SCALE: f64 = 1000.0;

pub struct World {
    pub sim: SimHandle,
    pub store: MemoryDocumentStore,
    pub archive: MemoryArchive,
    pub send_q: MemoryQueue,
    pub status_q: MemoryQueue,
    pub corrections_q: MemoryQueue,
    pub ksef: KsefContexts,
    pub cfg: SendConfig,
}

pub fn client(sim: &SimHandle) -> KsefClient {
    let creds = Credentials::Token {
        context: Nip::parse("9999999999").unwrap(),
        token: KsefToken::new(ksef_sim::DEFAULT_TOKEN),
    };
    KsefClient::new(client_config(sim), Some(creds)).unwrap()
}

/// The client settings the tests use against `sim`.
pub fn client_config(sim: &SimHandle) -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(2),
        limits: ClientLimits::official().scaled(SCALE),
        auth_poll_interval: Duration::from_millis(10),
        auth_poll_timeout: Duration::from_secs(5),
        ..ClientConfig::new(Environment::Custom(sim.api_url()))
    }
}

pub async fn world(max_attempts: u32) -> World {
    world_with(max_attempts, false).await
}

/// A world whose simulator keeps every exchange (`sim.exchanges()`) when `record` is set.
pub async fn world_with(max_attempts: u32, record: bool) -> World {
    let sim = ksef_sim::start(SimConfig {
        time_scale: SCALE,
        auth_delay: Duration::from_millis(10),
        accept_delay: Duration::from_millis(10),
        processing_delay: Duration::from_millis(10),
        record_exchanges: record,
        ..SimConfig::default()
    })
    .await;
    let ksef = KsefContexts::new().with(Nip::parse("9999999999").unwrap(), client(&sim));
    World {
        sim,
        store: MemoryDocumentStore::new(),
        archive: MemoryArchive::new(),
        send_q: MemoryQueue::new("send"),
        status_q: MemoryQueue::new("status"),
        corrections_q: MemoryQueue::new("corrections"),
        ksef,
        cfg: SendConfig {
            policy: RetryPolicy::standard(max_attempts).unwrap(),
            owner: "test-sender".into(),
            lease: Duration::from_secs(60),
            first_poll_delay: Duration::ZERO,
        },
    }
}

pub fn invoice(number: &str) -> Vec<u8> {
    let text = String::from_utf8(include_bytes!("../../../../data/ksef/samples/FA_3_Przykład_1.xml").to_vec()).unwrap();
    text.replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{number}</P_2>"))
        .into_bytes()
}

impl World {
    pub async fn register(&self, bytes: &[u8]) -> SendRequest {
        let ports = IntakePorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            corrections_queue: &self.corrections_q,
            backlog: None,
        };
        let upload = Upload {
            bytes,
            source_key: "local/test.xml".into(),
            erp_document_id: ErpDocumentId::parse("erp").unwrap(),
            expected_seller: None,
            trace_id: None,
            offline_mode: None,
            corrects: None,
        };
        assert!(matches!(
            intake(&ports, upload, Utc::now()).await.unwrap(),
            IntakeOutcome::Queued(_)
        ));
        let m = self
            .send_q
            .receive(1, Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap()
            .remove(0);
        self.send_q.delete(&m.receipt).await.unwrap();
        SendRequest::from_json(&m.body).unwrap()
    }

    /// `req` for the step its document is at now: the copy a stage that wrote a new step
    /// (a retry, a batch check) put back on the queue.
    pub async fn current_request(&self, req: &SendRequest) -> SendRequest {
        let r = relay_domain::ports::DocumentRegistry::get(&self.store, &req.document)
            .await
            .unwrap()
            .unwrap()
            .record;
        SendRequest::for_record(&r)
    }

    pub async fn send(&self, req: &SendRequest) -> relay_pipeline::queue_action::StageResult {
        let ports = SendPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
            corrections_queue: &self.corrections_q,
        };
        send(&ports, &self.ksef, &self.cfg, req, Utc::now()).await.unwrap()
    }

    /// How many invoices KSeF holds in `session` with our hash.
    pub async fn copies_in_session(&self, session: &KsefReference, req: &SendRequest) -> usize {
        let client = self.ksef.client(&Nip::parse("9999999999").unwrap()).await.unwrap();
        client
            .session_invoices(session.as_str())
            .await
            .unwrap()
            .iter()
            .filter(|i| i.invoice_hash == req.content_hash.to_base64())
            .count()
    }
}

impl World {
    pub fn status_cfg(&self) -> StatusConfig {
        StatusConfig {
            schedule: vec![Duration::from_millis(0)],
            ..StatusConfig::standard(self.cfg.policy.clone())
        }
    }

    pub fn status_ports(&self) -> StatusPorts<'_, MemoryDocumentStore> {
        StatusPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
            corrections_queue: &self.corrections_q,
        }
    }

    pub fn send_ports(&self) -> SendPorts<'_, MemoryDocumentStore> {
        SendPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_q,
            status_queue: &self.status_q,
            corrections_queue: &self.corrections_q,
        }
    }

    pub fn nip() -> Nip {
        Nip::parse("9999999999").unwrap()
    }
}

impl World {
    /// The action the status stage takes on `req` now.
    pub async fn status_action_after(
        &self,
        req: &relay_pipeline::messages::StatusRequest,
        cfg: &StatusConfig,
    ) -> relay_pipeline::queue_action::QueueAction {
        relay_pipeline::status::poll(&self.status_ports(), &self.ksef, cfg, req, Utc::now())
            .await
            .unwrap()
            .action
    }

    /// Polls the status queue's messages until `outcome` (or a decision).
    pub async fn poll_until_decided_or(&self, cfg: &StatusConfig, outcome: &str) -> relay_pipeline::queue_action::StageResult {
        use relay_pipeline::queue_action::{apply, QueueAction};
        let dlq = MemoryQueue::new("status-dlq");
        for _ in 0..400 {
            let Some(m) = self
                .status_q
                .receive(1, Duration::from_secs(30), Duration::ZERO)
                .await
                .unwrap()
                .pop()
            else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let req = relay_pipeline::messages::StatusRequest::from_json(&m.body).unwrap();
            let res = relay_pipeline::status::poll(&self.status_ports(), &self.ksef, cfg, &req, Utc::now())
                .await
                .unwrap();
            apply(&res.action, &m, &self.status_q, &dlq).await.unwrap();
            if res.outcome == outcome || !matches!(res.action, QueueAction::Replace { .. } | QueueAction::Requeue { .. }) {
                return res;
            }
        }
        panic!("no {outcome} after 400 polls");
    }

    /// Polls the status queue's messages until the use case stops asking to poll again.
    pub async fn poll_until_decided(&self) -> relay_pipeline::queue_action::StageResult {
        use relay_pipeline::queue_action::{apply, QueueAction};
        let cfg = self.status_cfg();
        let dlq = MemoryQueue::new("status-dlq");
        for _ in 0..400 {
            let msgs = self.status_q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap();
            let Some(m) = msgs.into_iter().next() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                // Delayed messages (the first poll waits) become visible on their own.
                continue;
            };
            let req = relay_pipeline::messages::StatusRequest::from_json(&m.body).unwrap();
            let res = relay_pipeline::status::poll(&self.status_ports(), &self.ksef, &cfg, &req, Utc::now())
                .await
                .unwrap();
            apply(&res.action, &m, &self.status_q, &dlq).await.unwrap();
            if !matches!(res.action, QueueAction::Replace { .. } | QueueAction::Requeue { .. }) {
                return res;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no decision after 400 polls");
    }
}
