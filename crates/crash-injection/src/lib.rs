//! # relay-crash-injection: a stage that dies right after a successful write
//!
//! Test support for the crash-point suites (`crates/pipeline/tests/crash_points.rs` on the
//! in-memory stores, `tests/crash_points_on_emulator.rs` on the AWS adapters against moto).
//!
//! Every port a stage writes through is wrapped ([`CrashStore`], [`CrashArchive`],
//! [`CrashQueue`], around any implementation), and KSeF is reached through a loopback proxy in
//! front of the simulator ([`CrashKsef`]; the simulator's links for UPOs and batch parts point at
//! the proxy too). Each successful write or KSeF answer, while the [`Plan`] is armed, is a
//! numbered position; at the chosen one the wrapper lets the write happen, then never returns,
//! and [`until_crash`] drops the stage's future: nothing after that point runs, exactly as when
//! a Lambda instance dies. The key decision: the crash is made *after* the write succeeded, so
//! every position is a state some other process can observe, and the test only asks whether
//! redelivery and the sweeper bring the document home from it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use ksef_sim::{SimConfig, SimHandle};
use relay_domain::ports::{
    Archive, ArchiveError, DocumentClaims, DocumentQueries, DocumentRegistry, DocumentUpdates, ObjectBody, OutgoingMessage, PutOutcome,
    Queue, QueueError, QueueStats, ReceivedMessage, Registration, StoreError,
};
use relay_domain::{Change, ClaimPurpose, Document, DocumentKey, DocumentRecord, DocumentState, HistoryEntry, NewDocument};
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------------
// The crash plan: numbered positions, and the one to die at.

#[derive(Default)]
struct PlanState {
    armed: bool,
    count: usize,
    crash_at: Option<usize>,
    positions: Vec<String>,
}

/// Which position to die at (None: only count them), and the positions passed so far.
pub struct Plan {
    state: Mutex<PlanState>,
    crashed: watch::Sender<bool>,
}

impl Plan {
    pub fn new(crash_at: Option<usize>) -> Arc<Plan> {
        Arc::new(Plan {
            state: Mutex::new(PlanState {
                crash_at,
                ..Default::default()
            }),
            crashed: watch::channel(false).0,
        })
    }

    /// Positions count (and the crash may happen) only while armed: while the stage under test runs.
    pub fn arm(&self, on: bool) {
        self.state.lock().unwrap().armed = on;
    }

    /// A write or KSeF call just succeeded: a numbered position while the target stage runs.
    /// At the chosen position the caller never gets its answer.
    pub async fn passed(&self, what: String) {
        let die = {
            let mut s = self.state.lock().unwrap();
            if !s.armed {
                return;
            }
            s.count += 1;
            s.positions.push(what);
            let die = s.crash_at == Some(s.count);
            if die {
                s.crash_at = None;
                s.armed = false;
            }
            die
        };
        if die {
            self.crashed.send_replace(true);
            std::future::pending::<()>().await;
        }
    }

    async fn wait_crash(&self) {
        let mut rx = self.crashed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    fn take_crash(&self) -> bool {
        self.crashed.send_replace(false)
    }

    /// Every position passed while armed, in order (position k is `positions()[k - 1]`).
    pub fn positions(&self) -> Vec<String> {
        self.state.lock().unwrap().positions.clone()
    }
}

/// `make`'s future, built on this plain function's frame (gone before the future is polled) and
/// boxed. A debug build gives an async fn's poll a slot for every future it holds, as big as that
/// future's largest state, and an unstarted async block is already that big: a stage's future
/// built in a test's `handle_send` (then moved into a box or into [`until_crash`]) took 250 KB of
/// every poll's stack, and the crash tests overflowed the 2 MB test thread (measured with gdb).
/// Build each stage's future, and each scenario's script, through this.
pub fn off_frame<'a, T, F: Future<Output = T> + 'a>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<dyn Future<Output = T> + 'a>> {
    Box::pin(make())
}

/// Runs `work` with the plan armed (if `armed`): Some(its output), or None if the stage died at
/// the plan's position (its future is dropped there; nothing after the write runs).
pub async fn until_crash<T>(plan: &Plan, armed: bool, work: impl Future<Output = T>) -> Option<T> {
    plan.arm(armed);
    let out = tokio::select! {
        biased;
        _ = plan.wait_crash() => None,
        out = work => Some(out),
    };
    plan.arm(false);
    if out.is_none() {
        plan.take_crash();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Ports that can die right after a successful write.

/// Any document store, dying after a register, claim, transition or history append.
pub struct CrashStore<S> {
    pub inner: S,
    pub plan: Arc<Plan>,
}

fn change_name(c: &Change) -> String {
    format!("{c:?}").split([' ', '{']).next().unwrap_or_default().to_owned()
}

#[async_trait]
impl<S: DocumentRegistry> DocumentRegistry for CrashStore<S> {
    async fn register(&self, new: NewDocument, now: DateTime<Utc>) -> Result<Registration, StoreError> {
        let r = self.inner.register(new, now).await?;
        self.plan.passed("store.register".into()).await;
        Ok(r)
    }
    async fn get(&self, key: &DocumentKey) -> Result<Option<Document>, StoreError> {
        self.inner.get(key).await
    }
}

#[async_trait]
impl<S: DocumentClaims> DocumentClaims for CrashStore<S> {
    async fn claim(
        &self,
        key: &DocumentKey,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError> {
        let r = self.inner.claim(key, purpose, owner, now, lease_for).await?;
        self.plan.passed(format!("store.claim {purpose:?}")).await;
        Ok(r)
    }
    async fn claim_as_read(
        &self,
        current: &DocumentRecord,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError> {
        let r = self.inner.claim_as_read(current, purpose, owner, now, lease_for).await?;
        self.plan.passed(format!("store.claim {purpose:?}")).await;
        Ok(r)
    }
}

#[async_trait]
impl<S: DocumentUpdates> DocumentUpdates for CrashStore<S> {
    async fn transition(&self, current: &DocumentRecord, change: Change, now: DateTime<Utc>) -> Result<DocumentRecord, StoreError> {
        let name = change_name(&change);
        let r = self.inner.transition(current, change, now).await?;
        self.plan.passed(format!("store.transition {name}")).await;
        Ok(r)
    }
    async fn append_history(&self, key: &DocumentKey, entries: Vec<HistoryEntry>) -> Result<(), StoreError> {
        self.inner.append_history(key, entries).await?;
        self.plan.passed("store.append_history".into()).await;
        Ok(())
    }
}

#[async_trait]
impl<S: DocumentQueries> DocumentQueries for CrashStore<S> {
    async fn list_by_state(
        &self,
        state: DocumentState,
        older_than: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        self.inner.list_by_state(state, older_than, limit).await
    }
    async fn list_by_state_between(
        &self,
        state: DocumentState,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        self.inner.list_by_state_between(state, since, until, limit).await
    }
    async fn count_by_state(&self, state: DocumentState) -> Result<u64, StoreError> {
        self.inner.count_by_state(state).await
    }
}

/// Any archive, dying after a put.
pub struct CrashArchive<A> {
    pub inner: A,
    pub plan: Arc<Plan>,
}

fn prefix(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

#[async_trait]
impl<A: Archive> Archive for CrashArchive<A> {
    async fn put_if_absent(&self, key: &str, body: ObjectBody) -> Result<PutOutcome, ArchiveError> {
        let r = self.inner.put_if_absent(key, body).await?;
        self.plan.passed(format!("archive.put_if_absent {}", prefix(key))).await;
        Ok(r)
    }
    async fn put(&self, key: &str, body: ObjectBody) -> Result<(), ArchiveError> {
        self.inner.put(key, body).await?;
        self.plan.passed(format!("archive.put {}", prefix(key))).await;
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        self.inner.get(key).await
    }
    async fn get_version(&self, key: &str, version: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        self.inner.get_version(key, version).await
    }
    async fn current_version(&self, key: &str) -> Result<Option<String>, ArchiveError> {
        self.inner.current_version(key).await
    }
}

/// Any queue, dying after a send, a visibility change or a delete. `name` names it in positions.
pub struct CrashQueue<Q> {
    pub name: String,
    pub inner: Q,
    pub plan: Arc<Plan>,
}

#[async_trait]
impl<Q: Queue> Queue for CrashQueue<Q> {
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        let id = self.inner.send(message).await?;
        self.plan.passed(format!("queue.send {}", self.name)).await;
        Ok(id)
    }
    async fn receive(&self, max: u32, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(max, visibility, wait).await
    }
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.change_visibility(receipt, timeout).await?;
        self.plan.passed(format!("queue.change_visibility {}", self.name)).await;
        Ok(())
    }
    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt).await?;
        self.plan.passed(format!("queue.delete {}", self.name)).await;
        Ok(())
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.stats().await
    }
}

// ---------------------------------------------------------------------------------------------
// KSeF behind a proxy that can die right after KSeF answered.

/// The simulator behind a loopback proxy: each KSeF answer is a position of the current plan.
pub struct CrashKsef {
    pub sim: SimHandle,
    pub proxy_url: String,
    plan: Arc<Mutex<Arc<Plan>>>,
}

impl CrashKsef {
    /// KSeF's answers count for `plan` from now on.
    pub fn follow(&self, plan: Arc<Plan>) {
        *self.plan.lock().unwrap() = plan;
    }
}

/// `/v2/sessions/20251010-SO-.../invoices` → `/v2/sessions/{ref}/invoices`.
fn route(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.len() > 16 { "{ref}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Starts the simulator (`config`, with its public links pointed at the proxy) and the proxy.
pub async fn start_ksef(config: SimConfig) -> CrashKsef {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let sim = ksef_sim::start(SimConfig {
        public_base_url: Some(proxy_url.clone()),
        ..config
    })
    .await;
    let plan: Arc<Mutex<Arc<Plan>>> = Arc::new(Mutex::new(Plan::new(None)));
    let upstream = sim.local_url();
    let http = reqwest::Client::new();
    let slot = plan.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (http, upstream, slot) = (http.clone(), upstream.clone(), slot.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let mut out = http.request(parts.method.clone(), format!("{upstream}{path}")).body(body);
            for (name, value) in parts.headers.iter() {
                if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
                    out = out.header(name, value);
                }
            }
            let answer = match out.send().await {
                Ok(a) => a,
                Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            };
            let status = answer.status();
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.unwrap_or_default();
            // KSeF has answered (and done whatever the call does): a numbered position.
            let plan = slot.lock().unwrap().clone();
            plan.passed(format!("ksef {} {}", parts.method, route(parts.uri.path()))).await;
            let mut response = axum::http::Response::builder().status(status);
            for (name, value) in headers.iter() {
                if name != axum::http::header::CONTENT_LENGTH && name != axum::http::header::TRANSFER_ENCODING {
                    response = response.header(name, value);
                }
            }
            response.body(axum::body::Body::from(bytes)).unwrap()
        }
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    CrashKsef { sim, proxy_url, plan }
}

/// A KSeF client for `seller` through the proxy, its limits scaled to the simulator's clock.
pub fn client(proxy_url: &str, seller: relay_domain::Nip, scale: f64) -> ksef_client::KsefClient {
    use ksef_client::{ClientConfig, ClientLimits, Credentials, Environment, KsefClient, KsefToken};
    let cfg = ClientConfig {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        limits: ClientLimits::official().scaled(scale),
        auth_poll_interval: Duration::from_millis(5),
        auth_poll_timeout: Duration::from_secs(10),
        ..ClientConfig::new(Environment::Custom(format!("{proxy_url}/v2")))
    };
    let creds = Credentials::Token {
        context: seller,
        token: KsefToken::new(ksef_sim::DEFAULT_TOKEN),
    };
    KsefClient::new(cfg, Some(creds)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// What every crash-point run uses and must end with.

/// The invoice a crash-point run sends: official sample 1 (or 24, with an attachment: KSeF takes
/// it only in a batch session) under invoice number `number`.
pub fn invoice(number: &str, with_attachment: bool) -> Vec<u8> {
    let sample: &[u8] = if with_attachment {
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_24.xml")
    } else {
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml")
    };
    String::from_utf8(sample.to_vec())
        .expect("the official samples are UTF-8")
        .replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{number}</P_2>"))
        .into_bytes()
}

/// What every crash-point run must end with, wherever it died: the document ACCEPTED with its
/// UPO archived (and readable), KSeF holding the invoice exactly once, and the ERP's outbox
/// result (`outbox_key`) agreeing with the store. `log` (what the run did) is printed on failure.
pub async fn check_delivered_once(
    what: &str,
    r: &DocumentRecord,
    archive: &dyn Archive,
    ksef: &CrashKsef,
    hash: &relay_domain::ContentHash,
    outbox_key: &str,
    log: &dyn std::fmt::Debug,
) {
    assert_eq!(r.state, DocumentState::Accepted, "{what}: {log:#?}\n{r:?}");
    let upo = r
        .storage
        .upo
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: the UPO is archived: {log:#?}"));
    assert!(archive.get(upo).await.unwrap().is_some(), "{what}: the UPO is in the archive");
    assert_eq!(ksef.sim.ledger().count_hash(hash), 1, "{what}: KSeF has it exactly once: {log:#?}");
    let outbox = archive.get(outbox_key).await.unwrap().expect("an outbox result");
    let v: serde_json::Value = serde_json::from_slice(&outbox.bytes).unwrap();
    assert_eq!(v["state"], "ACCEPTED", "{what}: the outbox agrees with the store: {v}");
    assert_eq!(
        v["ksefNumber"].as_str(),
        r.ksef.ksef_number.as_ref().map(|k| k.as_str()),
        "{what}: the outbox has the KSeF number"
    );
    assert_eq!(v["upoKey"].as_str(), Some(upo), "{what}: the outbox names the UPO");
    // KOD I: written before the ACCEPTED write, named by the record and the outbox, and there.
    if r.issue_date.is_some() {
        let qr = r
            .storage
            .qr_code
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: the record names its QR code: {log:#?}\n{r:?}"));
        assert_eq!(v["qrCodes"][0]["code"], "KOD_I", "{what}: the outbox names the QR code: {v}");
        assert_eq!(v["qrCodes"][0]["pngKey"].as_str(), Some(qr.png.as_str()), "{what}: {v}");
        assert_eq!(v["qrCodes"][0]["svgKey"].as_str(), Some(qr.svg.as_str()), "{what}: {v}");
        assert_eq!(
            v["qrCodes"][0]["label"], v["ksefNumber"],
            "{what}: labelled with the KSeF number: {v}"
        );
        for key in [&qr.png, &qr.svg] {
            assert!(archive.get(key).await.unwrap().is_some(), "{what}: {key} is in the archive");
        }
    }
}
