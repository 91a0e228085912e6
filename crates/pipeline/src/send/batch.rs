//! The batch channel: invoices go to KSeF in batch sessions, many at once ([`submit_group`],
//! used by [`super::send_batch`]; a lone document, e.g. one with an attachment sent by
//! [`super::send`], is a group of one). Nothing about an invoice is known until KSeF has
//! processed the session, so each member's send stays unconfirmed (`AwaitingBatch`) and later
//! attempts reconcile against the session ([`ksef_client::BatchInvoice`]): while it is processing
//! they wait, a session left open by a crash is closed, and only a final session that does not
//! list our hash counts as "not received" (charged, then sent in a new batch).
//!
//! The order of writes in a group, and what a death right after each leaves:
//!
//! 1. each member claimed (lease): nothing recorded, the lease runs out, the member is sent again;
//! 2. the archive declared (a streaming pass over the members' archived bytes: sizes and hashes
//!    only), then the batch recorded BEFORE it is opened: the batch item
//!    `batches/{nip}/{batch}.json` (members' keys, content hashes, file names, parts), then
//!    `JoinedBatch` on each member (its record names the batch; history: batch and part).
//!    Nothing can have reached KSeF: a member that joined is simply sent again;
//! 3. the session opened (KSeF), its reference written on the batch item, then `SendStarted` on
//!    each member. Before a member's `SendStarted` no part has been uploaded (uploads start after
//!    the last one), so a member without it cannot be in KSeF; a member with it reconciles;
//! 4. each part built again (same bytes, checked against the declaration) and uploaded: a death
//!    after some parts leaves an open session; reconciling closes it, KSeF refuses the close
//!    (a declared part is missing) and every member is sent again;
//! 5. closed: KSeF processes the archive; each member reconciles against the session's invoice
//!    list by hash before anything is sent again (a failed or ambiguous close is reconciled the
//!    same way: never a blind resend);
//! 6. `AwaitingBatch` on each member, with its next check.
//!
//! Members carry `SendStarted` each (not one write on the batch they reference) so that every
//! member is reconciled by the one path the lone batch send already proves, with no second
//! reading of the batch item at reconciliation.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ksef_client::batch::MAX_PART_SIZE;
use ksef_client::batch_builder::MAX_INVOICES;
use ksef_client::{BatchInvoice, BatchPlan, BatchPlanner, EncryptedPart, OpenedBatch, SessionKey};
use ksef_client::{Duplicate, InvoiceOutcome};
use relay_domain::ports::{ObjectBody, StoreError};
use relay_domain::{Change, ContentHash, DocumentRecord, ErrorClass, Failure, KsefReference};
use serde_json::json;

use super::attempt::{again, on_failure, relay_failure, until, Attempt, Channel, Reconciled, SendConfig, SendPorts, SendStore};
use crate::messages::StatusRequest;
use crate::queue_action::{done, QueueAction, StageError, StageResult};
use crate::sessions::KsefContexts;
use crate::status::{act_on_status, StatusConfig};

pub(super) struct Batch;

impl Channel for Batch {
    async fn reconcile<S: SendStore + ?Sized>(
        &self,
        a: &Attempt<'_, S>,
        r: DocumentRecord,
        session: KsefReference,
    ) -> Result<Reconciled, StageError> {
        let wait = batch_wait(a);
        let found = match a.client.find_in_batch(session.as_str(), &r.content_hash).await {
            Ok(found) => found,
            Err(f) => return a.read_failed(r, f).await.map(Reconciled::Decided),
        };
        let decided = match found {
            BatchInvoice::SessionOpen => return close_left_open(a, r, session, wait).await,
            // Any copy with our hash is ours, whatever its status: the status stage accepts,
            // rejects (with KSeF's words) or resends it.
            BatchInvoice::Listed(invoice_reference) => a.sent(&r, session, invoice_reference, "RECONCILED_SENT").await,
            BatchInvoice::ListedUnreadable(f) => a.fail(r, f, true).await,
            // Absence means something only once the session is final: KSeF may not have listed
            // it yet.
            BatchInvoice::NotYet { status } => {
                let detail = format!("batch session {session}: {status}, our invoice not listed yet; checking again later");
                await_batch(a, &r, detail, wait, "BATCH_PROCESSING").await
            }
            // Charged, so a batch that keeps failing ends in FAILED rather than a loop.
            BatchInvoice::Missing(f) => a.fail(r, f, false).await,
        };
        decided.map(Reconciled::Decided)
    }

    async fn submit<S: SendStore + ?Sized>(&self, a: &Attempt<'_, S>, r: DocumentRecord, _bytes: &[u8]) -> Result<StageResult, StageError> {
        tracing::info!(document = %r.key, trace_id = %r.trace_id, seller_nip = %r.key.seller_nip, "sending alone in a batch session");
        let member = Member { index: 0, record: r };
        let mut out = Vec::new();
        // Boxed: the group's future is large, and it is awaited deep inside the stage's.
        Box::pin(group(a, &BatchConfig::default(), vec![member], &mut out)).await;
        out.pop()
            .map(|(_, res)| res)
            .unwrap_or_else(|| Err(StoreError::Unavailable("the batch member was left without an answer".into()).into()))
    }
}

/// How big a batch may grow: KSeF's per-session limits by default.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Bytes of the archive per part before encryption (at most 100 MB).
    pub part_size: usize,
    /// Invoices per batch session (at most 10,000).
    pub max_members: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            part_size: MAX_PART_SIZE,
            max_members: MAX_INVOICES,
        }
    }
}

/// A claimed document going in a batch; `index`: its request's place in the caller's list.
pub(super) struct Member {
    pub index: usize,
    pub record: DocumentRecord,
}

type Answers = Vec<(usize, Result<StageResult, StageError>)>;

/// A claimed document whose batch send has no known result yet.
pub(super) struct Unconfirmed {
    pub index: usize,
    pub record: DocumentRecord,
    pub sent_at: Option<DateTime<Utc>>,
    pub session: KsefReference,
}

/// The harvest: the members of each batch session are reconciled together, with ONE read of
/// the session (status, then its invoice list, every page) for all of them, not one per member.
/// A listed member is SENT; one KSeF has decided on is finished here from the list's own status
/// (ACCEPTED with its UPO through the pre-signed link, or REJECTED with KSeF's words), so no
/// per-invoice status poll is needed. A session left open is closed once. Members KSeF did not
/// take (a session that cannot be closed) are returned, to be sent in the new batch.
async fn reconcile_group<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &SendConfig,
    client: Arc<ksef_client::KsefClient>,
    unconfirmed: Vec<Unconfirmed>,
    now: DateTime<Utc>,
    out: &mut Answers,
) -> Vec<Member> {
    let mut by_session: BTreeMap<KsefReference, Vec<Unconfirmed>> = BTreeMap::new();
    for u in unconfirmed {
        by_session.entry(u.session.clone()).or_default().push(u);
    }
    let mut resend = Vec::new();
    for (session, group) in by_session {
        let a = Attempt {
            ports,
            ksef,
            cfg,
            client: client.clone(),
            sent_at: group.iter().filter_map(|u| u.sent_at).max(),
            now,
        };
        let wait = batch_wait(&a);
        let results = match a.client.final_batch_results(session.as_str()).await {
            Ok(results) => {
                tracing::info!(session = %session, members = group.len(), status = %results.describe(), listed = results.listed(), "batch session read for its members");
                results
            }
            Err(f) => {
                tracing::warn!(session = %session, members = group.len(), error = %f, "reading the batch session failed; its members try again");
                for u in group {
                    out.push((u.index, a.read_failed(u.record, f.clone()).await));
                }
                continue;
            }
        };
        if results.is_open() {
            match a.client.close_batch_session(session.as_str()).await {
                Ok(()) => {
                    for u in group {
                        let detail = format!("batch session {session} was left open by an earlier attempt; closed it");
                        out.push((u.index, await_batch(&a, &u.record, detail, wait, "BATCH_PROCESSING").await));
                    }
                }
                Err(f)
                    if matches!(
                        f.class,
                        ErrorClass::Transient | ErrorClass::RateLimited { .. } | ErrorClass::NeedsReauth
                    ) =>
                {
                    if f.class == ErrorClass::NeedsReauth {
                        a.client.forget_access_token().await;
                    }
                    for u in group {
                        out.push((u.index, a.fail(u.record, f.clone(), true).await));
                    }
                }
                Err(f) => {
                    let detail = format!(
                        "batch session {session} could not be closed ({}): KSeF did not take the earlier attempt; sending again",
                        f.message
                    );
                    for u in group {
                        match a
                            .ports
                            .store
                            .transition(&u.record, Change::Reconciled { detail: detail.clone() }, now)
                            .await
                        {
                            Ok(r) => resend.push(Member { index: u.index, record: r }),
                            Err(e) => out.push((u.index, Err(e.into()))),
                        }
                    }
                }
            }
            continue;
        }
        if !results.is_final() {
            // One check per batch: while KSeF is processing, the whole session waits (a partial
            // list would send its members to per-invoice polling).
            for u in group {
                let_others_run().await;
                let detail = format!("batch session {session}: {}; checking again later", results.describe());
                out.push((u.index, await_batch(&a, &u.record, detail, wait, "BATCH_PROCESSING").await));
            }
            continue;
        }
        for u in group {
            let_others_run().await;
            let (verdict, listed) = results.find(&u.record.content_hash);
            let res = match verdict {
                BatchInvoice::Listed(invoice_reference) => harvest(&a, u.record, session.clone(), invoice_reference, listed.cloned()).await,
                BatchInvoice::ListedUnreadable(f) => a.fail(u.record, f, true).await,
                BatchInvoice::NotYet { status } => {
                    let detail = format!("batch session {session}: {status}, our invoice not listed yet; checking again later");
                    await_batch(&a, &u.record, detail, wait, "BATCH_PROCESSING").await
                }
                // An open session was closed above; should KSeF still call it open, look again.
                BatchInvoice::SessionOpen => {
                    let detail = format!("batch session {session} is still open; checking again later");
                    await_batch(&a, &u.record, detail, wait, "BATCH_PROCESSING").await
                }
                // Charged, so a batch that keeps failing ends in FAILED rather than a loop.
                BatchInvoice::Missing(f) => a.fail(u.record, f, false).await,
            };
            out.push((u.index, res));
        }
    }
    resend
}

/// A member KSeF lists: SENT, and, when the list already carries KSeF's decision, finished at
/// once from it; otherwise its status check is queued.
///
/// A decided member queues no status check of its own (that check would only find the work
/// done and write the outbox again: a message, a read and a PUT per batch invoice). A death
/// between SENT and the decision's writes leaves the member's send message undeleted: it comes
/// back, finds the record a step ahead and re-drives its status check when due
/// ([`crate::follow_up::catch_up`]); the sweeper does the same for a lost message.
async fn harvest<S: SendStore + ?Sized>(
    a: &Attempt<'_, S>,
    r: DocumentRecord,
    session: KsefReference,
    invoice_reference: KsefReference,
    listed: Option<ksef_client::InvoiceStatus>,
) -> Result<StageResult, StageError> {
    // Only a decision that ends the document here: accepted, or rejected for its content. The
    // rest (pending, a duplicate to prove, a cancelled copy to resend) is the status check's.
    let decided = listed.filter(
        |status| match ksef_client::failure_map::invoice_outcome("session_invoices", status) {
            InvoiceOutcome::Accepted { .. } => true,
            InvoiceOutcome::Failed(f) => f.class == ErrorClass::Permanent && Duplicate::of(&f).is_none(),
            _ => false,
        },
    );
    let Some(status) = decided else {
        return a.sent(&r, session, invoice_reference, "RECONCILED_SENT").await;
    };
    let r = a.record_sent(&r, session.clone(), invoice_reference.clone()).await?;
    let req = StatusRequest::first(&r, session, invoice_reference);
    let status_cfg = StatusConfig::standard(a.cfg.policy.clone());
    let res = act_on_status(a.ports, a.ksef, &a.client, &status_cfg, &req, r.clone(), status, a.now).await?;
    // What is left (a UPO not ready yet) is the status stage's: its next poll goes there. The
    // send message is done either way.
    let now_r = res.record.as_ref().unwrap_or(&r);
    match &res.action {
        QueueAction::Delete => {}
        QueueAction::Replace { body, delay } => a.queue_status(now_r, body.clone(), *delay).await?,
        // Not an answer a listed decision gives; should one come, the first check follows.
        _ => a.queue_status(now_r, req.to_json(), a.cfg.first_poll_delay).await?,
    }
    Ok(StageResult {
        action: QueueAction::Delete,
        ..res
    })
}

/// Sends claimed Batch-mode documents of one seller in one batch session (the module's steps 2
/// to 6); an answer per member, by its index.
pub(super) async fn submit_group<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &SendConfig,
    batch_cfg: &BatchConfig,
    unconfirmed: Vec<Unconfirmed>,
    mut members: Vec<Member>,
    now: DateTime<Utc>,
) -> Answers {
    let mut out = Vec::new();
    let seller = match (members.first(), unconfirmed.first()) {
        (Some(m), _) => m.record.key.seller_nip.clone(),
        (None, Some(u)) => u.record.key.seller_nip.clone(),
        (None, None) => return out,
    };
    let client = match ksef.client_ready(&seller, now).await {
        Ok(c) => c,
        Err(f) => {
            let all = members.into_iter().map(|m| (m.index, m.record, false));
            for (i, r, maybe) in all.chain(unconfirmed.into_iter().map(|u| (u.index, u.record, true))) {
                out.push((i, on_failure(ports, cfg, r, f.clone(), maybe, now).await));
            }
            return out;
        }
    };
    // Harvest first: members KSeF did not take join the new batch.
    let resend = Box::pin(reconcile_group(ports, ksef, cfg, client.clone(), unconfirmed, now, &mut out)).await;
    members.extend(resend);
    if members.is_empty() {
        return out;
    }
    let a = Attempt {
        ports,
        ksef,
        cfg,
        client,
        sent_at: None,
        now,
    };
    // `offlineMode` is declared per batch session: offline and online invoices never share one.
    let (offline, online): (Vec<Member>, Vec<Member>) = members.into_iter().partition(|m| m.record.offline);
    for members in [online, offline].into_iter().filter(|m| !m.is_empty()) {
        Box::pin(group(&a, batch_cfg, members, &mut out)).await;
    }
    out
}

/// Lets the futures polled beside this one run: the local driver sends several sellers'
/// batches side by side in one task, where a loop over thousands of members that never waits
/// (the in-memory stores answer at once) would hold another seller's KSeF call unpolled past
/// its timeout. Called once per member in the batch's loops.
pub(super) async fn let_others_run() {
    tokio::task::yield_now().await;
}

fn file_name(r: &DocumentRecord) -> String {
    format!("{}.xml", r.content_hash.to_hex())
}

/// The member's archived bytes, or the failure that keeps it out of the batch.
async fn archived_bytes<S: SendStore + ?Sized>(a: &Attempt<'_, S>, r: &DocumentRecord) -> Result<Result<Vec<u8>, Failure>, StageError> {
    let Some(key) = r.storage.archive.as_deref() else {
        return Ok(Err(relay_failure("the record names no archived bytes", "NO_ARCHIVE")));
    };
    Ok(match a.ports.archive.get(key).await? {
        Some(object) => Ok(object.bytes),
        None => Err(relay_failure(format!("archived bytes {key} are missing"), "NO_ARCHIVE")),
    })
}

/// Gives up on the batch before anything could reach KSeF (or with the members' sends started,
/// to be reconciled): each member waits for its lease to run out and is taken again.
fn abandon(cfg: &SendConfig, members: impl IntoIterator<Item = usize>, out: &mut Answers) {
    for i in members {
        out.push((i, done(QueueAction::Requeue { delay: cfg.lease }, "BUSY", None)));
    }
}

async fn fail_all<S: SendStore + ?Sized>(
    a: &Attempt<'_, S>,
    members: Vec<(usize, DocumentRecord)>,
    f: &Failure,
    maybe_received: bool,
    out: &mut Answers,
) {
    for (i, r) in members {
        out.push((i, a.fail(r, f.clone(), maybe_received).await));
    }
}

async fn group<S: SendStore + ?Sized>(a: &Attempt<'_, S>, batch_cfg: &BatchConfig, members: Vec<Member>, out: &mut Answers) {
    let seller = members[0].record.key.seller_nip.clone();
    // 2. Declare the archive: one streaming pass, one member's bytes at a time.
    let key = Arc::new(SessionKey::generate());
    let mut planner = BatchPlanner::new(key, batch_cfg.part_size);
    let mut joining: Vec<(usize, DocumentRecord, u32)> = Vec::new();
    for m in members {
        let_others_run().await;
        match archived_bytes(a, &m.record).await {
            Err(e) => out.push((m.index, Err(e))),
            Ok(Err(f)) => out.push((m.index, a.fail(m.record, f, false).await)),
            Ok(Ok(bytes)) => match planner.add(&file_name(&m.record), &bytes) {
                Ok(part) => joining.push((m.index, m.record, part)),
                Err(f) => {
                    // The archive outgrew KSeF's limits: this member waits for the next batch.
                    // Its entry may be half written, so nobody else joins either.
                    let f = relay_failure(f.message, "BATCH_LIMIT");
                    out.push((m.index, a.fail(m.record, f, false).await));
                    break;
                }
            },
        }
    }
    let plan = match planner.finish() {
        Ok(plan) => plan,
        Err(f) => {
            let f = relay_failure(f.message, "BATCH_LIMIT");
            let all = joining.into_iter().map(|(i, r, _)| (i, r)).collect();
            return fail_all(a, all, &f, false, out).await;
        }
    };
    if joining.is_empty() {
        return;
    }
    let batch = batch_id(a, &joining);
    let item_key = format!("batches/{seller}/{batch}.json");
    let mut item = json!({
        "batch": batch,
        "seller": seller.as_str(),
        "recordedAt": a.now,
        "parts": plan.parts.len(),
        "archiveSize": plan.file_size,
        "members": joining.iter().map(|(_, r, part)| json!({
            "document": r.key.to_string(), "contentHash": r.content_hash.to_base64(), "file": file_name(r), "part": part,
        })).collect::<Vec<_>>(),
        "session": null,
    });
    if let Err(e) = a.ports.archive.put_if_absent(&item_key, batch_body(&item)).await {
        let (first, rest) = (joining[0].0, joining[1..].iter().map(|j| j.0).collect::<Vec<_>>());
        out.push((first, Err(e.into())));
        return abandon(a.cfg, rest, out);
    }
    let mut joined = Vec::new();
    let mut left = joining.into_iter();
    for (i, r, part) in left.by_ref() {
        let_others_run().await;
        match a
            .ports
            .store
            .transition(
                &r,
                Change::JoinedBatch {
                    batch: batch.clone(),
                    part,
                },
                a.now,
            )
            .await
        {
            Ok(r) => joined.push((i, r)),
            Err(e) => {
                // The member moved under us (its lease ran out): the batch must not carry it.
                out.push((i, Err(e.into())));
                let rest = joined.iter().map(|j| j.0).chain(left.map(|l| l.0)).collect::<Vec<_>>();
                return abandon(a.cfg, rest, out);
            }
        }
    }
    tracing::info!(seller_nip = %seller, batch = %batch, members = joined.len(), parts = plan.parts.len(), archive_bytes = plan.file_size, peak_buffered = plan.peak_buffered, "batch recorded; opening its session");

    // 3. Open; the session on the batch item; SendStarted on each member.
    let offline = joined.iter().any(|(_, r)| r.offline);
    let opened = match a.client.open_planned_batch(&plan, offline).await {
        Ok(o) => o,
        // Opening sends no invoice: a failure here cannot hide a receipt.
        Err(f) => return fail_all(a, joined, &f, false, out).await,
    };
    item["session"] = json!(opened.reference);
    if let Err(e) = a.ports.archive.put(&item_key, batch_body(&item)).await {
        // Nothing uploaded: the session is left to KSeF's 12-hour cancellation.
        let (first, rest) = (joined[0].0, joined[1..].iter().map(|j| j.0).collect::<Vec<_>>());
        out.push((first, Err(e.into())));
        return abandon(a.cfg, rest, out);
    }
    let mut started = Vec::new();
    let mut left = joined.into_iter();
    for (i, r) in left.by_ref() {
        let_others_run().await;
        match a.send_started(r, &opened.reference).await {
            Ok(Ok((r, session))) => started.push((i, r, session)),
            not_started => {
                let answer = match not_started {
                    Ok(Err(answer)) => Ok(answer),
                    Err(e) => Err(e),
                    Ok(Ok(_)) => unreachable!("matched above"),
                };
                out.push((i, answer));
                let rest = started.iter().map(|s| s.0).chain(left.map(|l| l.0)).collect::<Vec<_>>();
                return abandon(a.cfg, rest, out);
            }
        }
    }
    let members: Vec<(usize, DocumentRecord)> = started.iter().map(|(i, r, _)| (*i, r.clone())).collect();

    // 4. Build again and upload part by part, each checked against its declaration.
    let mut builder = plan.builder();
    for (_, r, _) in &started {
        let_others_run().await;
        let f = match archived_bytes(a, r).await {
            Ok(Ok(bytes)) => builder.add(&file_name(r), &bytes).err(),
            Ok(Err(f)) => Some(f),
            Err(e) => Some(relay_failure(format!("reading a member's bytes again: {e}"), "NO_ARCHIVE")),
        };
        if let Some(f) = f {
            // Parts may be stored: the session stays unconfirmed and is reconciled (closed).
            return fail_all(a, members, &f, true, out).await;
        }
        for part in builder.take_ready() {
            if let Err(f) = upload(a, &plan, &opened, &part).await {
                let maybe_stored = f.class == ErrorClass::Transient;
                return fail_all(a, members, &f, maybe_stored, out).await;
            }
        }
    }
    let last = match builder.finish() {
        Ok((parts, ..)) => parts,
        Err(f) => return fail_all(a, members, &f, true, out).await,
    };
    for part in last {
        if let Err(f) = upload(a, &plan, &opened, &part).await {
            let maybe_stored = f.class == ErrorClass::Transient;
            return fail_all(a, members, &f, maybe_stored, out).await;
        }
    }

    // 5. Close: KSeF processes the archive. A failed or ambiguous close is reconciled.
    if let Err(f) = a.client.close_batch_session(&opened.reference).await {
        tracing::warn!(seller_nip = %seller, batch = %batch, session = %opened.reference, error = %f, "closing the batch session failed; its members reconcile");
        return fail_all(a, members, &f, true, out).await;
    }
    tracing::info!(seller_nip = %seller, batch = %batch, session = %opened.reference, members = started.len(), "batch session closed; KSeF is processing it");
    // 6. Each member awaits its batch.
    for (i, r, session) in started {
        let_others_run().await;
        let detail = format!("batch {batch} in session {session} closed; KSeF is processing it");
        out.push((i, await_batch(a, &r, detail, a.cfg.first_poll_delay, "BATCH_CLOSED").await));
    }
}

/// A part of the upload pass: the same as declared, then PUT (not rate-limited).
async fn upload<S: SendStore + ?Sized>(
    a: &Attempt<'_, S>,
    plan: &BatchPlan,
    opened: &OpenedBatch,
    part: &EncryptedPart,
) -> Result<(), Failure> {
    plan.check(part)?;
    a.client.upload_batch_part(opened, part).await
}

fn batch_body(item: &serde_json::Value) -> ObjectBody {
    ObjectBody::new(serde_json::to_vec_pretty(item).unwrap_or_default(), "application/json")
}

/// A batch's id: when, by whom, and which members at which versions (a retry of the same
/// members has moved their versions on, so it gets a new id).
fn batch_id<S: SendStore + ?Sized>(a: &Attempt<'_, S>, members: &[(usize, DocumentRecord, u32)]) -> String {
    let mut seed = format!("{}|{}", a.now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true), a.cfg.owner);
    for (_, r, _) in members {
        seed.push_str(&format!("|{}@{}", r.key, r.version));
    }
    format!(
        "{}-{}",
        a.now.format("%Y%m%dT%H%M%S"),
        &ContentHash::of(seed.as_bytes()).to_hex()[..16]
    )
}

/// A batch session opened but never closed (a crash, or a failed upload or close): close it
/// now. With the part uploaded KSeF processes it; without, it refuses and nothing was received.
async fn close_left_open<S: SendStore + ?Sized>(
    a: &Attempt<'_, S>,
    r: DocumentRecord,
    session: KsefReference,
    wait: Duration,
) -> Result<Reconciled, StageError> {
    let decided = match a.client.close_batch_session(session.as_str()).await {
        Ok(()) => {
            let detail = format!("batch session {session} was left open by an earlier attempt; closed it");
            await_batch(a, &r, detail, wait, "BATCH_CLOSED").await
        }
        Err(f)
            if matches!(
                f.class,
                ErrorClass::Transient | ErrorClass::RateLimited { .. } | ErrorClass::NeedsReauth
            ) =>
        {
            if f.class == ErrorClass::NeedsReauth {
                a.client.forget_access_token().await;
            }
            a.fail(r, f, true).await
        }
        Err(f) => {
            let detail = format!(
                "batch session {session} could not be closed ({}): KSeF did not take the earlier attempt; sending again",
                f.message
            );
            let r = a.ports.store.transition(&r, Change::Reconciled { detail }, a.now).await?;
            return Ok(Reconciled::NotReceived(r));
        }
    };
    decided.map(Reconciled::Decided)
}

/// How long to wait before looking at a batch session again: a quarter of the time since the
/// send, between the first poll delay and 15 minutes (seconds at first, minutes for a slow one).
fn batch_wait<S: SendStore + ?Sized>(a: &Attempt<'_, S>) -> Duration {
    let first = a.cfg.first_poll_delay;
    let elapsed = a.sent_at.map(|t| until(t, a.now)).unwrap_or_default();
    (elapsed / 4).clamp(first, Duration::from_secs(15 * 60).max(first))
}

/// KSeF has the batch (or may have it): the send stays unconfirmed, checked again after `wait`.
async fn await_batch<S: SendStore + ?Sized>(
    a: &Attempt<'_, S>,
    r: &DocumentRecord,
    detail: String,
    wait: Duration,
    outcome: &'static str,
) -> Result<StageResult, StageError> {
    let check_at = a.now + chrono::Duration::from_std(wait).unwrap_or_default();
    let r = a
        .ports
        .store
        .transition(r, Change::AwaitingBatch { detail, check_at }, a.now)
        .await?;
    done(again(&r, wait), outcome, Some(r))
}
