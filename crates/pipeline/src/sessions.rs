//! KSeF contexts: one authenticated client per seller NIP, and the online session it sends in.
//!
//! A session is reused until shortly before its `validUntil` (12 h), then replaced and closed by
//! the instance that replaces it; it is dropped when KSeF says it is closed or broken
//! (NeedsNewSession); and it is closed when the work is done: the send function calls
//! [`KsefContexts::close_when_drained`] after each batch, which closes the session once the send
//! queue is empty and the session is at least a few minutes old (so a trickle of invoices does
//! not open and close a session for each, against KSeF's 120 session operations an hour). Within one process it is shared by every task. With
//! a [`SharedCache`] (the store's, in Lambda), the access tokens and the open session (with its
//! AES key) are shared across instances too, so a cold-start storm of many instances logs in and
//! opens a session once rather than once each: KSeF limits authentication and session opening
//! as well as sending. The cache holds secrets and lives in the documents table, which functions
//! that never call KSeF can read too (intake, report): so with a [`SecretSealer`] (KMS in Lambda,
//! [`KsefContexts::with_sealer`]) the tokens and the session go in sealed with a key only the
//! KSeF-calling functions may use. An entry that does not open (the key was replaced, a value
//! written before sealing) counts as absent: the instance logs in or opens a session again and
//! replaces it; a seal that fails leaves the fresh login or session unshared, never fails the work.
//!
//! A seller's client is made on first use from its credentials ([`CredentialsProvider`]), so one
//! seller's unreadable secret fails only that seller's work (an operator's problem, which parks
//! it) and the others keep sending. The credentials are read again when their time to live ends
//! (a rotated certificate is picked up without a redeploy; an unchanged secret version keeps the
//! client and its tokens) and after an operator's problem ([`KsefContexts::forget_credentials`],
//! called when a seller is parked), so the probe that ends a block reads the secret afresh.
//! Clients given up front with [`KsefContexts::with`] are used as they are.
//!
//! A rotation does not wait for the time to live. The shared tokens and session name the
//! version of the secret (Secrets Manager's `VersionId`) whose credentials obtained them, and an
//! instance uses them only for that same version: an instance that meets another version's
//! entry reads the secret again, then takes the entry if the secret is now at that version (it
//! was behind) or logs in (opens a session) anew and replaces it (the entry was behind); if the
//! secret cannot be read then, it logs in for itself and leaves the entry alone. And a login KSeF
//! refuses (a revoked or expired certificate, a revoked token), wherever the client makes it,
//! reads the secret again first: a new version logs in at once (the client's
//! [renewal](ksef_client::KsefClient::with_renewal)); only an unchanged one parks the seller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ksef_client::{ClientConfig, KsefClient, OnlineSession, TokenSet};
use relay_domain::credential_facts;
use relay_domain::memory::MemorySharedCache;
use relay_domain::ports::{CacheEntry, Expect, Queue, QueueError, SecretSealer, SharedCache, StoreError};
use relay_domain::{ContentHash, ErrorClass, ErrorSource, Failure, KsefReference, Nip};
use tokio::sync::Mutex;

use crate::credentials::{days_left_line, recorded_facts, CredentialsProvider};

/// Code of the failure for a seller whose secret holds no Offline certificate (KOD II).
pub const OFFLINE_CERTIFICATE_MISSING: &str = "OFFLINE_CERTIFICATE_MISSING";

/// Stop using a session this long before KSeF's validUntil.
const SESSION_MARGIN: Duration = Duration::from_secs(15 * 60);
/// A drained session younger than this stays open: a trickle of invoices then shares one
/// session rather than opening and closing one each (at most 12 opens an hour per seller).
pub const DRAINED_SESSION_MIN_AGE: Duration = Duration::from_secs(5 * 60);
/// How long KSeF keeps an online session open.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long one instance's reading of `GET /rate-limits` serves the others (KSeF counts that
/// call in its "other" group, 120 an hour per seller: a fleet must not ask at each cold start).
pub const RATE_LIMITS_TTL: Duration = Duration::from_secs(3600);
/// How long credentials read from a provider are used before they are read again.
pub const DEFAULT_CREDENTIALS_TTL: Duration = Duration::from_secs(15 * 60);

/// A session this instance sends in: the session, the version of its shared-cache entry when it
/// came from or went to one, and the secret version whose tokens opened it.
type Held = (Arc<OnlineSession>, Option<u64>, Option<String>);

struct Context {
    client: Arc<KsefClient>,
    session: Mutex<Option<Held>>,
    /// Where the client's credentials came from; `None` for a client given up front. Shared
    /// with the client's renewal, which reads the secret again after a refused login.
    loaded: Option<Arc<std::sync::Mutex<Loaded>>>,
    /// Set once the client keeps to the limits KSeF reports for this seller (or, failing that,
    /// to the published ones): once per client, i.e. per cold start and credentials.
    limits_seeded: tokio::sync::OnceCell<()>,
    /// Held while this instance looks for or obtains tokens.
    login: Mutex<()>,
}

#[derive(Clone)]
struct Loaded {
    /// The secret's version the client's credentials came from.
    version: Option<String>,
    /// Read again at or after this time.
    fresh_until: DateTime<Utc>,
    /// Successful reads of the secret for this context so far.
    reads: u64,
    /// The seller's Offline certificate from the same secret (signs KOD II); never logs in.
    offline: Option<ksef_client::SigningIdentity>,
}

/// What to do with a shared entry (tokens, session) obtained with another version of the
/// seller's secret than this context's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OtherVersion {
    /// Read the secret again first: the entry may be of a rotation this instance has not seen.
    Reread,
    /// The secret was just read: the entry is of an older version; log in (or open) anew and
    /// replace it.
    Replace,
    /// The secret could not be read again: log in (or open) anew, but keep it to this instance
    /// (the entry may be newer than what this instance knows).
    Keep,
}

/// The shared entry is of another version of the secret (with [`OtherVersion::Reread`]).
struct NeedsReread;

/// The JSON sealed in a shared-cache entry of tokens or a session: the secret value, and the
/// version of the seller's credentials secret they were obtained with.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tagged {
    credentials_version: Option<String>,
    value: String,
}

impl Context {
    /// The version of the secret the client's credentials came from now.
    fn version(&self) -> Option<String> {
        self.loaded.as_ref().and_then(|l| l.lock().expect("loaded lock").version.clone())
    }

    fn reads(&self) -> u64 {
        self.loaded.as_ref().map_or(0, |l| l.lock().expect("loaded lock").reads)
    }

    fn fresh(&self, now: DateTime<Utc>) -> bool {
        self.loaded
            .as_ref()
            .is_none_or(|l| l.lock().expect("loaded lock").fresh_until > now)
    }
}

struct Provided {
    provider: Arc<dyn CredentialsProvider>,
    config: ClientConfig,
    ttl: chrono::Duration,
}

/// The clients and open sessions, per seller NIP.
#[derive(Default)]
pub struct KsefContexts {
    contexts: std::sync::Mutex<HashMap<Nip, Arc<Context>>>,
    /// One credentials read at a time per seller.
    loading: std::sync::Mutex<HashMap<Nip, Arc<Mutex<()>>>>,
    provided: Option<Provided>,
    cache: Option<Arc<dyn SharedCache>>,
    /// Seals the tokens and sessions put in the shared cache.
    sealer: Option<Arc<dyn SecretSealer>>,
    /// With a shared cache: clients made from credentials keep to one rate governor per seller
    /// and this egress, shared by every instance (`ksef_client::governor`).
    governed_egress: Option<String>,
    /// Seller blocks when no shared cache is set (one process: the local driver, tests).
    local_blocks: MemorySharedCache,
    /// Intake's online backlog: a batch of a seller that is going anyway takes the seller's
    /// Online documents whose online send has not happened yet (`crate::send::send_batch`).
    online_backlog: Option<ksef_client::OnlineBacklog>,
    /// The KSeF environment whose shared availability holds sending (`crate::availability`).
    availability_env: Option<&'static str>,
    /// How often the availability poll runs (None: the sweeper's schedule,
    /// `crate::availability::POLL_EVERY`); a held document looks again after the next poll.
    availability_every: Option<std::time::Duration>,
}

fn cache_failure(e: StoreError) -> Failure {
    Failure::new(
        e.class(),
        ErrorSource::Storage {
            operation: "shared_cache".into(),
        },
        e.to_string(),
    )
}

fn usable(s: &OnlineSession, now: DateTime<Utc>) -> bool {
    s.valid_until - chrono::Duration::from_std(SESSION_MARGIN).expect("small") > now
}

impl KsefContexts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the client that authenticates in `seller`'s context, used as it is.
    pub fn with(self, seller: Nip, client: KsefClient) -> Self {
        self.contexts.lock().expect("contexts lock").insert(
            seller,
            Arc::new(Context {
                client: Arc::new(client),
                session: Mutex::new(None),
                loaded: None,
                limits_seeded: tokio::sync::OnceCell::new(),
                login: Mutex::new(()),
            }),
        );
        self
    }

    /// Makes a seller's client on first use from the credentials `provider` reads, with
    /// `config`; they are read again after `ttl`.
    pub fn with_credentials(mut self, provider: Arc<dyn CredentialsProvider>, config: ClientConfig, ttl: Duration) -> Self {
        self.provided = Some(Provided {
            provider,
            config,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15)),
        });
        self
    }

    /// Reads `seller`'s credentials again on its next use (after a refused login or another
    /// operator's problem: the secret may have been rotated since).
    pub fn forget_credentials(&self, seller: &Nip) {
        let ctx = self.contexts.lock().expect("contexts lock").get(seller).cloned();
        if let Some(loaded) = ctx.as_ref().and_then(|c| c.loaded.as_ref()) {
            loaded.lock().expect("loaded lock").fresh_until = DateTime::<Utc>::MIN_UTC;
        }
    }

    /// The contexts made so far.
    fn loaded_contexts(&self) -> Vec<(Nip, Arc<Context>)> {
        let map = self.contexts.lock().expect("contexts lock");
        map.iter().map(|(n, c)| (n.clone(), c.clone())).collect()
    }

    /// Shares tokens and sessions with other instances through `cache`.
    pub fn with_shared_cache(mut self, cache: Arc<dyn SharedCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Clients made from credentials (with [`KsefContexts::with_credentials`]) share one rate
    /// governor per seller through the shared cache: KSeF counts per seller context and client
    /// IP, so `egress` names the IP the calls leave from (one NAT address per deployment).
    pub fn with_fleet_governor(mut self, egress: impl Into<String>) -> Self {
        self.governed_egress = Some(egress.into());
        self
    }

    /// The online backlog intake logs its Online choices in (the same shared cache): with it, a
    /// batch of a seller that is going anyway also takes that seller's still-queued Online
    /// documents ([`crate::send::send_batch`]); without it, batches take only Batch documents.
    pub fn with_online_backlog(mut self, backlog: ksef_client::OnlineBacklog) -> Self {
        self.online_backlog = Some(backlog);
        self
    }

    pub fn online_backlog(&self) -> Option<&ksef_client::OnlineBacklog> {
        self.online_backlog.as_ref()
    }

    /// Seals the tokens and session keys put in the shared cache with `sealer`; entries that do
    /// not open with it count as absent.
    pub fn with_sealer(mut self, sealer: Arc<dyn SecretSealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The secret in a shared-cache entry, opened; None when it does not open (then it counts
    /// as absent and is replaced).
    async fn open_entry(&self, name: &str, entry: &CacheEntry) -> Option<String> {
        let Some(sealer) = &self.sealer else {
            return Some(entry.value.clone());
        };
        match sealer.open(name, &entry.value).await {
            Ok(plain) => Some(plain),
            Err(e) => {
                tracing::warn!(cache_entry = name, error = %e, "a shared KSeF secret does not open; treating it as absent");
                None
            }
        }
    }

    /// `plain` as it goes into the shared cache; None when it cannot be sealed (then it is not
    /// shared: this instance keeps it to itself).
    async fn seal_value(&self, name: &str, plain: String) -> Option<String> {
        let Some(sealer) = &self.sealer else { return Some(plain) };
        match sealer.seal(name, &plain).await {
            Ok(sealed) => Some(sealed),
            Err(e) => {
                tracing::error!(cache_entry = name, error = %e, error_class = %e.class(), "could not seal a KSeF secret for the shared cache; not sharing it");
                seal_failed_line(name, &e, Utc::now()).emit();
                None
            }
        }
    }

    /// A shared-cache entry of tokens or a session, opened: the secret version they were
    /// obtained with, and the value. None when it does not open or is not tagged (an entry
    /// written before entries named their version): then it counts as absent and is replaced.
    async fn open_tagged(&self, name: &str, entry: &CacheEntry) -> Option<(Option<String>, String)> {
        let plain = self.open_entry(name, entry).await?;
        let tagged: Tagged = serde_json::from_str(&plain).ok()?;
        Some((tagged.credentials_version, tagged.value))
    }

    /// `plain`, obtained with the secret's `version`, as it goes into the shared cache.
    async fn seal_tagged(&self, name: &str, version: Option<String>, plain: String) -> Option<String> {
        let tagged = Tagged {
            credentials_version: version,
            value: plain,
        };
        self.seal_value(name, serde_json::to_string(&tagged).expect("plain strings serialize"))
            .await
    }

    /// The session a shared-cache entry holds, if it opens and reads, with the secret version
    /// whose tokens opened it.
    async fn shared_session(&self, name: &str, entry: &CacheEntry) -> Option<(Option<String>, OnlineSession)> {
        let (version, plain) = self.open_tagged(name, entry).await?;
        Some((version, OnlineSession::import_secret_json(&plain).ok()?))
    }

    pub(crate) fn shared_cache(&self) -> Option<&dyn SharedCache> {
        self.cache.as_deref()
    }

    pub(crate) fn local_blocks(&self) -> &dyn SharedCache {
        &self.local_blocks
    }

    pub(crate) fn set_availability_env(&mut self, env: &'static str) {
        self.availability_env = Some(env);
    }

    pub(crate) fn availability_env(&self) -> Option<&'static str> {
        self.availability_env
    }

    pub(crate) fn set_availability_every(&mut self, every: std::time::Duration) {
        self.availability_every = Some(every);
    }

    pub(crate) fn availability_every(&self) -> Option<std::time::Duration> {
        self.availability_every
    }

    /// `seller`'s context: made now from its credentials if there is none yet or they are due
    /// to be read again.
    async fn context(&self, seller: &Nip, now: DateTime<Utc>) -> Result<Arc<Context>, Failure> {
        let current = self.contexts.lock().expect("contexts lock").get(seller).cloned();
        let Some(provided) = &self.provided else {
            return current.ok_or_else(|| no_credentials(seller));
        };
        if let Some(ctx) = current.as_ref().filter(|c| c.fresh(now)) {
            return Ok(ctx.clone());
        }
        let gate = self
            .loading
            .lock()
            .expect("loading lock")
            .entry(seller.clone())
            .or_default()
            .clone();
        let _reading = gate.lock().await;
        // Another task may have read them while this one waited.
        let current = self.contexts.lock().expect("contexts lock").get(seller).cloned();
        if let Some(ctx) = current.as_ref().filter(|c| c.fresh(now)) {
            return Ok(ctx.clone());
        }
        let fresh_until = now + provided.ttl;
        let read = match provided.provider.read(seller).await {
            Ok(read) => read,
            Err(f) => {
                let Some(ctx) = current else { return Err(f) };
                // The credentials in use may still work: keep them, and try reading again later.
                tracing::warn!(seller_nip = %seller, error = %f, "could not read the KSeF credentials again; using the ones read before");
                if let Some(l) = &ctx.loaded {
                    l.lock().expect("loaded lock").fresh_until = fresh_until;
                }
                return Ok(ctx);
            }
        };
        let facts = read.stored.facts();
        days_left_line(seller, &facts, now).emit();
        self.record_facts(seller, &facts, now).await;
        if let Some(ctx) = current.filter(|c| {
            read.version.is_some()
                && c.loaded
                    .as_ref()
                    .is_some_and(|l| l.lock().expect("loaded lock").version == read.version)
        }) {
            // The same secret version: keep the client and its tokens.
            if let Some(l) = &ctx.loaded {
                let mut l = l.lock().expect("loaded lock");
                l.fresh_until = fresh_until;
                l.reads += 1;
            }
            return Ok(ctx);
        }
        let mut config = provided.config.clone();
        if let (Some(egress), Some(cache)) = (&self.governed_egress, &self.cache) {
            // KSeF's limits hold per seller and client IP across every instance: one governor.
            config.governor = Some(ksef_client::governor::FleetGovernor::new(
                cache.clone(),
                format!("{seller}@{egress}"),
                config.limits.clone(),
            ));
        }
        let loaded = Arc::new(std::sync::Mutex::new(Loaded {
            version: read.version.clone(),
            fresh_until,
            reads: 1,
            offline: read.stored.offline.clone(),
        }));
        let client =
            KsefClient::new(config, Some(read.stored.credentials(seller.clone())))?.with_renewal(self.renewal(seller, &loaded, provided));
        tracing::info!(
            seller_nip = %seller,
            credential_kind = %facts.kind,
            subject = facts.subject.as_deref().unwrap_or("-"),
            not_after = %facts.not_after.to_rfc3339(),
            days_left = facts.days_left(now),
            "KSeF credentials read"
        );
        let ctx = Arc::new(Context {
            client: Arc::new(client),
            session: Mutex::new(None),
            loaded: Some(loaded),
            limits_seeded: tokio::sync::OnceCell::new(),
            login: Mutex::new(()),
        });
        self.contexts.lock().expect("contexts lock").insert(seller.clone(), ctx.clone());
        Ok(ctx)
    }

    /// `seller`'s Offline certificate and its key, from the seller's secret (read as for its
    /// client, and again after the same time to live), with the KSeF environment its codes link
    /// to: what signs KOD II. A secret without one is the operator's problem: the failure names
    /// the members to add.
    pub async fn offline_identity(
        &self,
        seller: &Nip,
        now: DateTime<Utc>,
    ) -> Result<(ksef_client::SigningIdentity, ksef_client::Environment), Failure> {
        let ctx = self.context(seller, now).await?;
        let offline = ctx.loaded.as_ref().and_then(|l| l.lock().expect("loaded lock").offline.clone());
        match offline {
            Some(identity) => Ok((identity, ctx.client.config().environment.clone())),
            None => Err(Failure::new(
                ErrorClass::Operator,
                ErrorSource::Relay,
                format!(
                    "seller {seller} has no KSeF Offline certificate: add offline_certificate_pem and offline_private_key_pem to its credentials secret (KOD II needs it; an Authentication certificate cannot sign it)"
                ),
            )
            .with_code(OFFLINE_CERTIFICATE_MISSING)),
        }
    }

    /// Records what was just read about `seller`'s login (never the secret) in the shared cache,
    /// for the report function, which may not read secrets: its scheduled snapshot shows and
    /// measures every seller's expiry from these. Best effort: a failure is logged, the work
    /// goes on; the next read writes them again. Plain, not sealed: nothing in them is secret.
    async fn record_facts(&self, seller: &Nip, facts: &ksef_client::CredentialFacts, now: DateTime<Utc>) {
        record_facts(self.cache.as_deref(), seller, facts, now).await;
    }

    /// What `seller`'s client asks when KSeF refuses its login: the secret read again now, and
    /// its credentials if it is another version than the client's (then the context takes that
    /// version: its tokens and sessions are of it from now on). The same version: the refusal
    /// stands (the seller is parked).
    fn renewal(&self, seller: &Nip, loaded: &Arc<std::sync::Mutex<Loaded>>, provided: &Provided) -> ksef_client::CredentialsRenewal {
        let (provider, ttl, cache, loaded, seller) = (
            provided.provider.clone(),
            provided.ttl,
            self.cache.clone(),
            loaded.clone(),
            seller.clone(),
        );
        Arc::new(move || {
            let (provider, cache, loaded, seller) = (provider.clone(), cache.clone(), loaded.clone(), seller.clone());
            Box::pin(async move {
                let now = Utc::now();
                let read = match provider.read(&seller).await {
                    Ok(read) => read,
                    Err(f) => {
                        tracing::warn!(seller_nip = %seller, error = %f, "KSeF refused the login and the credentials could not be read again");
                        return None;
                    }
                };
                {
                    let mut l = loaded.lock().expect("loaded lock");
                    l.fresh_until = now + ttl;
                    l.reads += 1;
                    if read.version.is_some() && read.version == l.version {
                        tracing::info!(seller_nip = %seller, "KSeF refused the login and the secret has not changed");
                        return None;
                    }
                    l.version = read.version.clone();
                    l.offline = read.stored.offline.clone();
                }
                let facts = read.stored.facts();
                days_left_line(&seller, &facts, now).emit();
                record_facts(cache.as_deref(), &seller, &facts, now).await;
                tracing::info!(
                    seller_nip = %seller,
                    credential_kind = %facts.kind,
                    subject = facts.subject.as_deref().unwrap_or("-"),
                    not_after = %facts.not_after.to_rfc3339(),
                    "KSeF refused the login: the secret has a new version, logging in with it"
                );
                Some(read.stored.credentials(seller))
            })
        })
    }
}

/// Records what was just read about `seller`'s login in `cache` (see
/// [`KsefContexts::record_facts`]).
async fn record_facts(cache: Option<&dyn SharedCache>, seller: &Nip, facts: &ksef_client::CredentialFacts, now: DateTime<Utc>) {
    let Some(cache) = cache else { return };
    let name = credential_facts::cache_name(seller);
    let value = recorded_facts(facts, now).to_json();
    let expect = match cache.get(&name, now).await {
        Ok(Some(entry)) => Expect::Version(entry.version),
        Ok(None) => Expect::Absent,
        Err(e) => {
            tracing::warn!(seller_nip = %seller, error = %e, "could not read the recorded credential facts; not recording them this time");
            return;
        }
    };
    match cache.put(&name, value, now + credential_facts::retention(), expect, now).await {
        // Another instance recorded a read of the same secret at the same moment.
        Ok(_) | Err(StoreError::VersionConflict { .. }) => {}
        Err(e) => tracing::warn!(seller_nip = %seller, error = %e, "could not record the credential facts"),
    }
}

impl KsefContexts {
    /// The client, without touching the shared cache (it logs in by itself when it must).
    pub async fn client(&self, seller: &Nip) -> Result<Arc<KsefClient>, Failure> {
        Ok(self.context(seller, Utc::now()).await?.client.clone())
    }

    /// The client with tokens: its own, or another instance's from the shared cache (obtained
    /// with the same version of the seller's secret), or a fresh login that it then shares.
    pub async fn client_ready(&self, seller: &Nip, now: DateTime<Utc>) -> Result<Arc<KsefClient>, Failure> {
        let mut ctx = self.context(seller, now).await?;
        if self.ensure_tokens(&ctx, seller, now, OtherVersion::Reread).await?.is_err() {
            let (again, other) = self.reread(seller, &ctx, now).await?;
            ctx = again;
            let _ = self.ensure_tokens(&ctx, seller, now, other).await?;
        }
        self.ensure_limits(&ctx, seller, now).await;
        Ok(ctx.client.clone())
    }

    /// The shared tokens or session came from another version of the seller's secret: reads
    /// the secret again now. The context to go on with, and what to do with the other
    /// version's entry: replace it when the secret was read (ours is now the current version),
    /// keep it when it could not be read.
    async fn reread(&self, seller: &Nip, ctx: &Arc<Context>, now: DateTime<Utc>) -> Result<(Arc<Context>, OtherVersion), Failure> {
        let reads = ctx.reads();
        self.forget_credentials(seller);
        let again = self.context(seller, now).await?;
        let read = !Arc::ptr_eq(&again, ctx) || again.reads() > reads;
        tracing::info!(seller_nip = %seller, read, "the shared KSeF login or session came from another version of the seller's secret: read it again");
        Ok((again, if read { OtherVersion::Replace } else { OtherVersion::Keep }))
    }

    /// Once per client made from credentials: the limits KSeF applies to this seller, from the
    /// shared cache while another instance's reading is fresh ([`RATE_LIMITS_TTL`]), else from
    /// `GET /rate-limits` (then shared). A failed read keeps the published defaults, with a
    /// warning; the next cold start asks again. Clients given up front keep their limits.
    async fn ensure_limits(&self, ctx: &Context, seller: &Nip, now: DateTime<Utc>) {
        if ctx.loaded.is_none() {
            return;
        }
        ctx.limits_seeded
            .get_or_init(|| async {
                let name = ksef_client::limiter::rate_limits_cache_name(seller);
                if let Some(cache) = &self.cache {
                    match cache.get(&name, now).await {
                        Ok(Some(entry)) => {
                            if let Ok(effective) = serde_json::from_str::<ksef_client::EffectiveRateLimits>(&entry.value) {
                                ctx.client.seed_rate_limits(&effective);
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(seller_nip = %seller, error = %e, "could not read the shared KSeF rate limits; asking KSeF"),
                    }
                }
                let effective = match ctx.client.effective_rate_limits().await {
                    Ok(e) => e,
                    Err(f) => {
                        tracing::warn!(seller_nip = %seller, error = %f, "could not read KSeF's rate limits for this seller; keeping the published defaults");
                        return;
                    }
                };
                let seeded = ctx.client.seed_rate_limits(&effective);
                tracing::info!(seller_nip = %seller, invoice_send = ?seeded.groups.get(&ksef_client::EndpointGroup::InvoiceSend), "KSeF rate limits read");
                if let Some(cache) = &self.cache {
                    let until = now + chrono::Duration::from_std(RATE_LIMITS_TTL).expect("an hour");
                    let current = cache.get(&name, now).await.ok().flatten();
                    let expect = current.map_or(Expect::Absent, |e| Expect::Version(e.version));
                    match cache.put(&name, effective.to_json(), until, expect, now).await {
                        // Another instance shared its reading meanwhile: the same facts.
                        Ok(_) | Err(StoreError::VersionConflict { .. }) => {}
                        Err(e) => tracing::warn!(seller_nip = %seller, error = %e, "could not share KSeF's rate limits"),
                    }
                }
            })
            .await;
    }

    /// Gives the context's client tokens if it has none: the shared ones if they were obtained
    /// with the context's version of the secret, else a login (shared, unless `other` says
    /// keep). With [`OtherVersion::Reread`], shared tokens of another version are
    /// `Err(NeedsReread)`: the caller reads the secret again and comes back.
    async fn ensure_tokens(
        &self,
        ctx: &Context,
        seller: &Nip,
        now: DateTime<Utc>,
        other: OtherVersion,
    ) -> Result<Result<(), NeedsReread>, Failure> {
        let Some(cache) = &self.cache else { return Ok(Ok(())) };
        if ctx.client.tokens().await.is_some() {
            // This instance has tokens and refreshes them itself (and, when KSeF refuses its
            // login, reads the secret again: the client's renewal).
            return Ok(Ok(()));
        }
        // One login per instance: the concurrent tasks of a batch wait for the first.
        let _one_login = ctx.login.lock().await;
        if ctx.client.tokens().await.is_some() {
            return Ok(Ok(()));
        }
        let name = format!("ksef/tokens/{seller}");
        let existing = cache.get(&name, now).await.map_err(cache_failure)?;
        let mut share = true;
        if let Some(entry) = &existing {
            if let Some((version, plain)) = self.open_tagged(&name, entry).await {
                if version == ctx.version() {
                    if let Ok(tokens) = TokenSet::import_secret_json(&plain) {
                        ctx.client.set_tokens(tokens).await;
                        return Ok(Ok(()));
                    }
                } else {
                    // Tokens of another version of the secret are never used: a rotation
                    // takes effect at once, not when the old tokens end.
                    match other {
                        OtherVersion::Reread => return Ok(Err(NeedsReread)),
                        OtherVersion::Replace => {}
                        OtherVersion::Keep => share = false,
                    }
                }
            }
        }
        let fresh = match ctx.client.authenticate().await {
            Ok(t) => t,
            Err(f) => {
                if f.class == ErrorClass::Operator {
                    // A refused login: the secret may have been rotated since it was read.
                    self.forget_credentials(seller);
                }
                return Err(f);
            }
        };
        ctx.client.set_tokens(fresh.clone()).await;
        // The version after the login: a refused login may have moved the client to a new one.
        if !share {
            return Ok(Ok(()));
        }
        let Some(value) = self.seal_tagged(&name, ctx.version(), fresh.export_secret_json()).await else {
            return Ok(Ok(()));
        };
        // An entry there did not open, read, or was of an older version: ours replaces it (if it
        // is still that version). If another instance logged in meanwhile, its tokens stay
        // shared; ours are valid too.
        let expect = existing.map_or(Expect::Absent, |e| Expect::Version(e.version));
        match cache.put(&name, value, fresh.refresh.valid_until, expect, now).await {
            Ok(_) | Err(StoreError::VersionConflict { .. }) => Ok(Ok(())),
            Err(e) => Err(cache_failure(e)),
        }
    }

    /// The open session for `seller`: this instance's, another instance's from the shared cache
    /// (opened with tokens of the same version of the seller's secret), or a new one (then
    /// shared). A session about to expire is replaced.
    pub async fn session(&self, seller: &Nip, now: DateTime<Utc>) -> Result<Arc<OnlineSession>, Failure> {
        let ctx = self.context(seller, now).await?;
        if let Ok(s) = self.session_of(&ctx, seller, now, OtherVersion::Reread).await? {
            return Ok(s);
        }
        let (ctx, other) = self.reread(seller, &ctx, now).await?;
        match self.session_of(&ctx, seller, now, other).await? {
            Ok(s) => Ok(s),
            Err(NeedsReread) => unreachable!("only OtherVersion::Reread asks to read again"),
        }
    }

    async fn session_of(
        &self,
        ctx: &Context,
        seller: &Nip,
        now: DateTime<Utc>,
        other: OtherVersion,
    ) -> Result<Result<Arc<OnlineSession>, NeedsReread>, Failure> {
        let mut slot = ctx.session.lock().await;
        if let Some((s, _, version)) = slot.as_ref() {
            if usable(s, now) && *version == ctx.version() {
                return Ok(Ok(s.clone()));
            }
        }
        if let Err(reread) = self.ensure_tokens(ctx, seller, now, other).await? {
            return Ok(Err(reread));
        }
        self.ensure_limits(ctx, seller, now).await;
        let Some(cache) = &self.cache else {
            let opened = Arc::new(ctx.client.open_online_session().await?);
            if let Some((old, _, _)) = slot.replace((opened.clone(), None, ctx.version())) {
                close_replaced(&ctx.client, seller, &old, now).await;
            }
            return Ok(Ok(opened));
        };
        let name = format!("ksef/session/{seller}");
        let current = cache.get(&name, now).await.map_err(cache_failure)?;
        let mut replaced = None;
        let mut share = true;
        if let Some(entry) = &current {
            if let Some((version, s)) = self.shared_session(&name, entry).await {
                if version == ctx.version() {
                    if usable(&s, now) {
                        let s = Arc::new(s);
                        *slot = Some((s.clone(), Some(entry.version), version));
                        return Ok(Ok(s));
                    }
                    replaced = Some(s);
                } else {
                    // A session opened with tokens of another version of the secret.
                    match other {
                        OtherVersion::Reread => return Ok(Err(NeedsReread)),
                        OtherVersion::Replace => replaced = Some(s),
                        OtherVersion::Keep => share = false,
                    }
                }
            }
        }
        let opened = Arc::new(ctx.client.open_online_session().await?);
        let version = ctx.version();
        let expect = current.map_or(Expect::Absent, |e| Expect::Version(e.version));
        let sealed = match share {
            true => self.seal_tagged(&name, version.clone(), opened.export_secret_json()).await,
            false => None,
        };
        let Some(value) = sealed else {
            if let Some((old, _, _)) = slot.replace((opened.clone(), None, version)) {
                close_replaced(&ctx.client, seller, &old, now).await;
            }
            return Ok(Ok(opened));
        };
        match cache.put(&name, value, opened.valid_until, expect, now).await {
            Ok(entry) => {
                *slot = Some((opened.clone(), Some(entry.version), version));
                // This instance replaced the shared session: it closes the old one (only one
                // instance wins the version check, so it is closed once).
                if let Some(old) = replaced {
                    close_replaced(&ctx.client, seller, &old, now).await;
                }
            }
            Err(StoreError::VersionConflict { .. }) => {
                // Another instance opened one first: send in that one, so all share one session
                // (if it was opened with tokens of the same version of the secret).
                if let Some(entry) = cache.get(&name, now).await.map_err(cache_failure)? {
                    if let Some((theirs_version, theirs)) = self.shared_session(&name, &entry).await {
                        if theirs_version == version {
                            let theirs = Arc::new(theirs);
                            *slot = Some((theirs.clone(), Some(entry.version), version));
                            return Ok(Ok(theirs));
                        }
                    }
                }
                *slot = Some((opened.clone(), None, version));
            }
            Err(e) => return Err(cache_failure(e)),
        }
        Ok(Ok(opened))
    }

    /// Forgets `reference` if it is the current session (KSeF said it is closed or broken), here
    /// and in the shared cache.
    pub async fn drop_session(&self, seller: &Nip, reference: &str) {
        let ctx = self.contexts.lock().expect("contexts lock").get(seller).cloned();
        if let Some(ctx) = ctx {
            let mut slot = ctx.session.lock().await;
            if slot.as_ref().is_some_and(|(s, _, _)| s.reference == reference) {
                if let Err(e) = self.unshare(seller, reference, Utc::now()).await {
                    tracing::warn!(seller_nip = %seller, error = %e, "could not drop the shared session");
                }
                *slot = None;
            }
        }
    }

    /// Takes `reference` out of the shared cache if the cache still names that very session (not
    /// a newer one that another instance put there meanwhile). True if it was there.
    async fn unshare(&self, seller: &Nip, reference: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(cache) = &self.cache else { return Ok(true) };
        let name = format!("ksef/session/{seller}");
        let Some(entry) = cache.get(&name, now).await? else {
            return Ok(false);
        };
        if self.shared_session(&name, &entry).await.map(|(_, s)| s.reference).as_deref() != Some(reference) {
            return Ok(false);
        }
        cache.remove(&name, entry.version).await?;
        Ok(true)
    }

    /// Our invoice among `session`'s live ones (KSeF processing or accepted it), by content hash.
    /// A copy KSeF cancelled (550, 405) does not count: it was not kept.
    pub async fn find_live_invoice(
        &self,
        seller: &Nip,
        session: &KsefReference,
        hash: &ContentHash,
    ) -> Result<Option<KsefReference>, Failure> {
        let client = self.client_ready(seller, Utc::now()).await?;
        let want = hash.to_base64();
        let list = client.session_invoices(session.as_str()).await?;
        let Some(found) = list
            .into_iter()
            .find(|i| i.invoice_hash == want && matches!(i.status.code, 100 | 150 | 200))
        else {
            return Ok(None);
        };
        KsefReference::parse(&found.reference_number).map(Some).map_err(|e| {
            Failure::new(
                ErrorClass::Transient,
                ErrorSource::Relay,
                format!("KSeF listed our invoice under an unreadable reference: {e}"),
            )
            .with_code("BAD_REFERENCE")
        })
    }

    /// Like [`KsefContexts::find_live_invoice`], across the seller's online sessions created
    /// since `since` (newest first): where a send we lost track of went (KSeF's 21166 for a
    /// technical correction already accepted).
    pub async fn find_live_invoice_since(
        &self,
        seller: &Nip,
        since: DateTime<Utc>,
        hash: &ContentHash,
    ) -> Result<Option<(KsefReference, KsefReference)>, Failure> {
        let client = self.client_ready(seller, Utc::now()).await?;
        // A margin for clocks: KSeF's creation time against ours.
        let from = since - chrono::Duration::minutes(10);
        for summary in client.list_sessions(true, from).await? {
            let Ok(session) = KsefReference::parse(&summary.reference_number) else {
                continue;
            };
            if let Some(found) = self.find_live_invoice(seller, &session, hash).await? {
                return Ok(Some((session, found)));
            }
        }
        Ok(None)
    }

    /// Closes the sessions this instance sends in once the work is done: `send_queue` holds no
    /// message (visible, delayed or being handled by another instance) and the session is at
    /// least `min_age` old. A shared session is taken out of the cache first (version-checked),
    /// so no instance picks it up again; one that already holds it gets 21180 on its next send
    /// and opens a new one. Returns how many sessions were closed.
    pub async fn close_when_drained(&self, send_queue: &dyn Queue, now: DateTime<Utc>, min_age: Duration) -> Result<usize, QueueError> {
        let old_enough = |s: &OnlineSession| {
            let opened = s.valid_until - chrono::Duration::from_std(SESSION_LIFETIME).expect("small");
            now - opened >= chrono::Duration::from_std(min_age).unwrap_or_default()
        };
        let contexts = self.loaded_contexts();
        let mut candidates = false;
        for (_, ctx) in &contexts {
            candidates |= ctx.session.lock().await.as_ref().is_some_and(|(s, _, _)| old_enough(s));
        }
        if !candidates || send_queue.stats().await?.total() > 0 {
            return Ok(0);
        }
        let mut closed = 0;
        for (seller, ctx) in &contexts {
            let mut slot = ctx.session.lock().await;
            let Some((s, version, _)) = slot.as_ref().filter(|(s, _, _)| old_enough(s)).cloned() else {
                continue;
            };
            *slot = None;
            if version.is_some() {
                match self.unshare(seller, &s.reference, now).await {
                    Ok(true) => {}
                    Ok(false) => continue, // replaced meanwhile: not ours to close
                    Err(e) => {
                        tracing::warn!(seller_nip = %seller, error = %e, "could not take the session out of the shared cache; leaving it open");
                        continue;
                    }
                }
            }
            match ctx.client.close_online_session(&s.reference).await {
                Ok(()) => {
                    tracing::info!(seller_nip = %seller, session = %s.reference, "send queue drained: session closed");
                    closed += 1;
                }
                Err(f) => {
                    tracing::warn!(seller_nip = %seller, session = %s.reference, error = %f, "closing the drained session failed; KSeF closes it at validUntil")
                }
            }
        }
        Ok(closed)
    }

    /// Closes every open session (KSeF then prepares the session UPO); failures are logged.
    pub async fn close_all(&self) {
        for (seller, ctx) in &self.loaded_contexts() {
            if let Some((s, _, _)) = ctx.session.lock().await.take() {
                if let Err(f) = ctx.client.close_online_session(&s.reference).await {
                    tracing::warn!(seller_nip = %seller, session = %s.reference, error = %f, "closing the session failed");
                }
            }
        }
    }
}

fn no_credentials(seller: &Nip) -> Failure {
    // Our own configuration: an operator adds the credentials; the invoice is not at fault.
    Failure::new(
        ErrorClass::Operator,
        ErrorSource::Relay,
        format!("no KSeF credentials are configured for seller NIP {seller}"),
    )
    .with_code("NO_CREDENTIALS")
}

/// Closes a session replaced near the end of its life, if KSeF has not closed it already.
async fn close_replaced(client: &KsefClient, seller: &Nip, old: &OnlineSession, now: DateTime<Utc>) {
    if old.valid_until <= now {
        return;
    }
    match client.close_online_session(&old.reference).await {
        Ok(()) => tracing::info!(seller_nip = %seller, session = %old.reference, "replaced session closed"),
        Err(f) => {
            tracing::warn!(seller_nip = %seller, session = %old.reference, error = %f, "closing the replaced session failed; KSeF closes it at validUntil")
        }
    }
}

/// The metric line for a KSeF secret that could not be sealed for the shared cache:
/// `KsefCacheSealFailed` (the `KsefCacheSealAlarm` fires on any), properties `CacheEntry` (the
/// entry's name, never its value) and `ErrorClass` (OPERATOR: the key refused, e.g. disabled or
/// no grant; TRANSIENT: KMS unavailable). The work goes on unshared: more logins, no failures.
pub fn seal_failed_line(entry: &str, e: &relay_domain::ports::SealError, now: DateTime<Utc>) -> relay_observe::emf::MetricLine {
    relay_observe::emf::MetricLine::new(relay_observe::NAMESPACE, now)
        .group(&[], &[("KsefCacheSealFailed", relay_observe::emf::Unit::Count, 1.0)])
        .property("CacheEntry", entry)
        .property("ErrorClass", e.class().to_string())
}
