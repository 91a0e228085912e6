//! `ksef-relay run`: the whole relay on one machine, over the bundled samples or your files.
//!
//! Intake (identity, validation of the identity, exact bytes archived, idempotent registration),
//! then the send and status stages pumped from their queues exactly as the Lambda event source
//! would, against the embedded KSeF simulator (or a real KSeF environment with `--ksef-env`),
//! with in-memory stores (or the AWS API of a local emulator with `--aws-endpoint`). With the
//! emulator the files take the deployed path: uploaded to `inbox/{sellerNip}/{erpDocId}.xml`,
//! announced by the bucket's notification on an intake queue, and taken in from there by the
//! intake function's code. It ends with
//! a table per document and writes the archive, UPOs, outbox results and a report under `--out`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use indicatif::{ProgressBar, ProgressStyle};
use ksef_client::{ClientConfig, ClientLimits, Environment};
use relay_aws::settings::AwsSettings;
use relay_aws::{provision, AwsClients, DynamoDocumentStore, DynamoSharedCache, S3Archive, SqsQueue};
use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue, MemorySharedCache};
use relay_domain::ports::{Archive, ArchiveError, DocumentStore, ObjectBody, PutOutcome, Queue, SharedCache};
use relay_domain::{DocumentKey, DocumentState, ErpDocumentId, Nip, RetryPolicy, SystemClock};
use relay_pipeline::credentials::MemoryCredentials;
use relay_pipeline::drive::Stages;
use relay_pipeline::intake::{intake, intake_created_object, IntakeOutcome, IntakePorts, ObjectIntake, Upload};
use relay_pipeline::send::SendConfig;
use relay_pipeline::sessions::{KsefContexts, DEFAULT_CREDENTIALS_TTL};
use relay_pipeline::status::StatusConfig;

use ksef_relay::bundled_samples;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Invoice files or directories of *.xml to run instead of the bundled samples.
    #[arg(long = "input", value_name = "PATH")]
    pub(crate) inputs: Vec<PathBuf>,
    /// Use the AWS API at this URL (e.g. a local moto server) instead of in-memory stores;
    /// a fresh table, queues and bucket are created for the run.
    #[arg(long, env = "KSEF_RELAY_AWS_ENDPOINT", value_name = "URL")]
    pub(crate) aws_endpoint: Option<String>,
    /// The AWS region for --aws-endpoint.
    #[arg(long, env = "AWS_REGION", default_value = "eu-central-1")]
    pub(crate) region: String,
    /// Send to a real KSeF environment (test, demo, prod or an API URL) instead of the embedded
    /// simulator; needs --nip and the KSEF_TOKEN environment variable.
    #[arg(long, value_name = "ENV")]
    pub(crate) ksef_env: Option<String>,
    /// The context NIP for --ksef-env.
    #[arg(long, env = "KSEF_NIP")]
    pub(crate) nip: Option<String>,
    /// A simulator fault scenario, repeatable (see `ksef-relay sim --help`), e.g.
    /// `--fault unavailable:0.3@/invoices --fault burst429:0.2:2000`; a scripted outage in
    /// simulated seconds since the run's start: `--fault outage:0..600` (announced by Latarnia)
    /// or `--fault silent-outage:0..600`. The run polls KSeF's availability as the sweeper does.
    #[arg(long = "fault", value_name = "SCENARIO")]
    pub(crate) faults: Vec<String>,
    /// Simulated seconds per real second in the simulator's rate-limit windows (and the client's
    /// limiter): 60 lets a run live through a minute of KSeF's limits in a second.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) sim_time_scale: f64,
    /// Give up waiting for KSeF's decisions after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub(crate) timeout_secs: u64,
    /// An attachment-free invoice goes online while its seller's online backlog lets it go out
    /// within this many seconds (of KSeF's time: divided by --sim-time-scale), else in a batch
    /// session.
    #[arg(long, env = "BATCH_TARGET_DELAY_SECONDS", default_value_t = 300)]
    pub(crate) batch_target_delay_secs: u64,
    /// Where to write the archive, UPOs, outbox results and report.json.
    #[arg(long, default_value = "local-run")]
    pub(crate) out: PathBuf,
}

/// Lets a shared in-memory archive be both a port and readable afterwards.
struct SharedArchive(Arc<MemoryArchive>);

#[async_trait::async_trait]
impl Archive for SharedArchive {
    async fn put_if_absent(&self, key: &str, body: ObjectBody) -> Result<PutOutcome, ArchiveError> {
        self.0.put_if_absent(key, body).await
    }
    async fn put(&self, key: &str, body: ObjectBody) -> Result<(), ArchiveError> {
        self.0.put(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        self.0.get(key).await
    }
    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        self.0.get_version(key, version_id).await
    }
    async fn current_version(&self, key: &str) -> Result<Option<String>, ArchiveError> {
        self.0.current_version(key).await
    }
}

pub(crate) struct Ports {
    pub(crate) store: Box<dyn DocumentStore>,
    pub(crate) archive: Box<dyn Archive>,
    pub(crate) queues: HashMap<&'static str, Box<dyn Queue>>,
    /// With the emulator: the queue the bucket's `inbox/` notifications arrive on.
    pub(crate) intake_queue: Option<Box<dyn Queue>>,
    pub(crate) memory_archive: Option<Arc<MemoryArchive>>,
    /// What the deployed functions share through the documents table (KSeF tokens, sessions,
    /// the rate governor's logs): in memory, or the run's table on the emulator.
    pub(crate) shared_cache: Arc<dyn SharedCache>,
    pub(crate) description: String,
}

pub(crate) async fn build_ports(args: &RunArgs) -> Result<Ports> {
    match &args.aws_endpoint {
        None => {
            let archive = Arc::new(MemoryArchive::new());
            let clock = Arc::new(SystemClock);
            let (send, send_dlq) = MemoryQueue::with_dlq("send", 5, clock.clone());
            let (status, status_dlq) = MemoryQueue::with_dlq("status", 5, clock.clone());
            let (corrections, _) = MemoryQueue::with_dlq("corrections", 5, clock);
            let queues: HashMap<&'static str, Box<dyn Queue>> = HashMap::from([
                ("send", Box::new(send) as Box<dyn Queue>),
                ("send-dlq", Box::new(send_dlq)),
                ("status", Box::new(status)),
                ("status-dlq", Box::new(status_dlq)),
                ("corrections", Box::new(corrections)),
            ]);
            Ok(Ports {
                store: Box::new(MemoryDocumentStore::new()),
                archive: Box::new(SharedArchive(archive.clone())),
                queues,
                intake_queue: None,
                memory_archive: Some(archive),
                shared_cache: Arc::new(MemorySharedCache::new()),
                description: "in-memory stores".into(),
            })
        }
        Some(endpoint) => {
            let clients = AwsClients::new(&AwsSettings {
                region: args.region.clone(),
                endpoint_url: Some(endpoint.clone()),
            })
            .await;
            let run = format!(
                "ksef-relay-local-{:06x}",
                (Utc::now().timestamp_subsec_nanos() ^ std::process::id()) & 0xFF_FFFF
            );
            provision::create_documents_table(&clients.dynamodb, &run).await?;
            provision::create_bucket(&clients.s3, &run, &args.region).await?;
            let mut queues: HashMap<&'static str, Box<dyn Queue>> = HashMap::new();
            for stage in ["send", "status", "corrections"] {
                let pair = provision::create_queue_with_dlq(&clients.sqs, &format!("{run}-{stage}"), 5, Duration::from_secs(180)).await?;
                queues.insert(stage, Box::new(SqsQueue::new(clients.sqs.clone(), pair.url)));
                let dlq_name: &'static str = match stage {
                    "send" => "send-dlq",
                    "status" => "status-dlq",
                    _ => "corrections-dlq",
                };
                queues.insert(dlq_name, Box::new(SqsQueue::new(clients.sqs.clone(), pair.dlq_url)));
            }
            let intake = provision::create_queue_with_dlq(&clients.sqs, &format!("{run}-intake"), 5, Duration::from_secs(180)).await?;
            provision::notify_queue_on_create(&clients.s3, &clients.sqs, &run, &intake.url, "inbox/").await?;
            Ok(Ports {
                store: Box::new(DynamoDocumentStore::new(clients.dynamodb.clone(), &run)),
                archive: Box::new(S3Archive::new(clients.s3.clone(), &run)),
                queues,
                intake_queue: Some(Box::new(SqsQueue::new(clients.sqs.clone(), intake.url))),
                memory_archive: None,
                shared_cache: Arc::new(DynamoSharedCache::new(clients.dynamodb.clone(), &run)),
                description: format!("AWS API at {endpoint} (table, bucket and queues {run}*)"),
            })
        }
    }
}

/// The KSeF side: the embedded simulator (fast timings) or a real environment (standard ones).
pub(crate) struct Ksef {
    pub(crate) contexts: KsefContexts,
    pub(crate) sim: Option<ksef_sim::SimHandle>,
    pub(crate) send_cfg: SendConfig,
    pub(crate) status_cfg: StatusConfig,
    /// The KSeF limits the client keeps to (scaled with the simulator's time).
    pub(crate) limits: ClientLimits,
    pub(crate) description: String,
    /// The sellers it sends for (their logins go on the status page).
    pub(crate) sellers: Vec<Nip>,
    /// KSeF's availability, polled as the deployed sweeper polls it.
    pub(crate) availability: AvailabilityPoll,
}

/// The availability poll of a run: the sweeper's use case ([`relay_pipeline::availability::poll`])
/// on the run's clock, every `every` (the sweeper's 5 minutes, divided by the simulator's time
/// scale), beside the stages, as the sweeper's schedule runs beside the queues in AWS.
pub(crate) struct AvailabilityPoll {
    pub(crate) environment: Environment,
    pub(crate) latarnia: Option<ksef_client::LatarniaClient>,
    pub(crate) every: Duration,
    pub(crate) timeout: Duration,
    /// Every poll's report, for `availability-polls.json`.
    pub(crate) reports: std::sync::Mutex<Vec<relay_pipeline::availability::PollReport>>,
}

impl AvailabilityPoll {
    fn new(environment: Environment, every: Duration, timeout: Duration) -> AvailabilityPoll {
        AvailabilityPoll {
            latarnia: ksef_client::LatarniaClient::for_environment(&environment, timeout),
            environment,
            every,
            timeout,
            reports: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// One poll at `now` (a failure is logged: the next poll tries again, as the sweeper's does).
    pub(crate) async fn once(&self, ports: &Ports) -> Option<relay_pipeline::availability::PollReport> {
        let poll_ports = relay_pipeline::availability::PollPorts {
            cache: ports.shared_cache.as_ref(),
            archive: ports.archive.as_ref(),
        };
        let targets = relay_pipeline::availability::PollTargets {
            environment: &self.environment,
            latarnia: self.latarnia.as_ref(),
            probe_timeout: self.timeout,
        };
        match relay_pipeline::availability::poll(&poll_ports, &targets, Utc::now()).await {
            Ok(report) => {
                self.reports.lock().expect("poll reports lock").push(report.clone());
                Some(report)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the availability poll failed; the next one tries again");
                None
            }
        }
    }

    /// Polls every `every` from one period after now, for ever (the caller stops it with the
    /// stages; the first poll is the caller's, before the stages start).
    async fn schedule(&self, ports: &Ports) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.once(ports).await;
        }
    }
}

impl Ksef {
    /// Intake's send-mode rule over the run's shared cache and these limits.
    pub(crate) fn backlog(&self, ports: &Ports, target_delay_secs: u64) -> ksef_client::OnlineBacklog {
        ksef_client::OnlineBacklog::new(
            ports.shared_cache.clone(),
            self.limits.clone(),
            Duration::from_secs(target_delay_secs),
        )
    }
}

/// The embedded simulator's sellers: a NIP and the KSeF token it accepts for that context.
pub(crate) type SimSeller = (Nip, String);

/// The one seller of the bundled samples (NIP 9999999999, the simulator's default token).
pub(crate) fn sample_seller() -> Result<SimSeller> {
    Ok((Nip::parse("9999999999")?, ksef_sim::DEFAULT_TOKEN.to_owned()))
}

/// The route the availability probe calls (`ksef_client::latarnia::probe_ksef`), as the
/// simulator counts it.
pub(crate) const PROBE_ROUTE: &str = "/security/public-key-certificates";

/// The egress the local run's KSeF calls leave from, as its rate governor counts them.
const LOCAL_EGRESS: &str = "local";

/// The KSeF contexts as a deployed function has them: credentials read on demand, tokens and
/// sessions shared through `cache`, and one rate governor per seller over it. A wait for KSeF's
/// limits longer than the governor's `max_inline_wait` is not slept in the client: the send
/// becomes a delayed message in the local queues, as in Lambda, so `--timeout-secs` holds.
/// A seller's batch that is going anyway takes its still-queued Online documents (from intake's
/// online backlog in the same cache, see [`Ksef::backlog`]).
/// Sending holds while the availability the run's poll keeps (every `poll_every`) says KSeF is down.
fn contexts(
    secrets: Arc<MemoryCredentials>,
    cfg: ClientConfig,
    cache: Arc<dyn SharedCache>,
    target_delay_secs: u64,
    poll_every: Duration,
) -> KsefContexts {
    let backlog = ksef_client::OnlineBacklog::new(cache.clone(), cfg.limits.clone(), Duration::from_secs(target_delay_secs));
    let environment = cfg.environment.clone();
    KsefContexts::new()
        .with_availability(&environment)
        .with_availability_poll_every(poll_every)
        .with_credentials(secrets, cfg, DEFAULT_CREDENTIALS_TTL)
        .with_shared_cache(cache)
        .with_fleet_governor(LOCAL_EGRESS)
        .with_online_backlog(backlog)
}

/// The KSeF side. With the embedded simulator, `sim_sellers` are the contexts it accepts (and
/// the relay's credentials for them).
pub(crate) async fn build_ksef(args: &RunArgs, sim_sellers: &[SimSeller], cache: Arc<dyn SharedCache>) -> Result<Ksef> {
    let owner = format!("local-runner-{}", std::process::id());
    match &args.ksef_env {
        Some(env) => {
            if !args.faults.is_empty() {
                bail!("--fault only applies to the embedded simulator, not to --ksef-env");
            }
            let nip = Nip::parse(args.nip.as_deref().context("--ksef-env needs --nip (or KSEF_NIP)")?)?;
            let token = std::env::var("KSEF_TOKEN").context("--ksef-env needs the KSEF_TOKEN environment variable")?;
            let environment = Environment::parse(env).map_err(anyhow::Error::msg)?;
            // The token read like a deployed seller's secret (the same on-demand path).
            let secrets = Arc::new(MemoryCredentials::new().with(nip.clone(), token));
            let policy = RetryPolicy::standard(10)?;
            let cfg = ClientConfig::new(environment.clone());
            let every = relay_pipeline::availability::POLL_EVERY;
            Ok(Ksef {
                limits: cfg.limits.clone(),
                availability: AvailabilityPoll::new(environment, every, Duration::from_secs(10)),
                contexts: contexts(secrets, cfg, cache, args.batch_target_delay_secs, every),
                sim: None,
                send_cfg: SendConfig {
                    policy: policy.clone(),
                    owner,
                    lease: Duration::from_secs(120),
                    first_poll_delay: Duration::from_secs(2),
                },
                status_cfg: StatusConfig::standard(policy),
                description: format!("KSeF {env} as NIP {nip}"),
                sellers: vec![nip.clone()],
            })
        }
        None => {
            let faults = args
                .faults
                .iter()
                .map(|f| f.parse::<ksef_sim::Fault>().map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            let sim = ksef_sim::start(ksef_sim::SimConfig {
                accept_delay: Duration::from_millis(100),
                processing_delay: Duration::from_millis(100),
                auth_delay: Duration::from_millis(50),
                time_scale: args.sim_time_scale,
                batch_processing_after_close: true,
                faults,
                tokens: sim_sellers
                    .iter()
                    .map(|(nip, token)| ksef_sim::SimToken {
                        token: token.clone(),
                        context: nip.clone(),
                    })
                    .collect(),
                ..ksef_sim::SimConfig::default()
            })
            .await;
            let cfg = ClientConfig {
                timeout: Duration::from_secs(3),
                auth_poll_interval: Duration::from_millis(25),
                limits: ClientLimits::official().scaled(args.sim_time_scale),
                ..ClientConfig::new(Environment::Custom(sim.api_url()))
            };
            // Each seller's secret as a deployed seller's: its token, and an Offline certificate
            // (made for this run) that signs KOD II of its offline invoices.
            let secrets = MemoryCredentials::new();
            for (nip, token) in sim_sellers {
                let secret = ksef_client::stored_credentials::local_secret_with_offline_certificate(nip.as_str(), token)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                secrets.set(nip.clone(), secret);
            }
            let secrets = Arc::new(secrets);
            // The same policies with a simulator's sense of time: milliseconds where KSeF takes
            // seconds, so a run with faults still finishes in seconds.
            let ms = Duration::from_millis;
            let policy = RetryPolicy::new(10, vec![ms(0), ms(200), ms(500)], 2.0, ms(3000), 0.2)?;
            // The sweeper's five minutes, on the simulator's time.
            let every = relay_pipeline::availability::POLL_EVERY.div_f64(args.sim_time_scale.max(1e-6));
            Ok(Ksef {
                limits: cfg.limits.clone(),
                availability: AvailabilityPoll::new(cfg.environment.clone(), every, cfg.timeout),
                contexts: contexts(secrets, cfg, cache, args.batch_target_delay_secs, every),
                description: format!("the embedded KSeF simulator at {}", sim.api_url()),
                sellers: sim_sellers.iter().map(|(nip, _)| nip.clone()).collect(),
                sim: Some(sim),
                send_cfg: SendConfig {
                    policy: policy.clone(),
                    owner,
                    lease: Duration::from_secs(30),
                    first_poll_delay: ms(150),
                },
                status_cfg: StatusConfig {
                    policy,
                    schedule: vec![ms(150), ms(250), ms(500), ms(1000)],
                    max_polls: 300,
                },
            })
        }
    }
}

fn load_inputs(inputs: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>> {
    if inputs.is_empty() {
        return Ok(bundled_samples::run_set());
    }
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading directory {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok((
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string()),
                bytes,
            ))
        })
        .collect()
}

pub(crate) fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:32}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_owned());
    pb
}

pub(crate) struct Row {
    pub(crate) file: String,
    pub(crate) key: Option<DocumentKey>,
    /// Whether the stored record describes this file (not a repeat or a conflict).
    pub(crate) owns_record: bool,
    pub(crate) intake: String,
}

fn row_for(file: &str, outcome: &IntakeOutcome) -> Row {
    let (key, owns_record, text) = match outcome {
        IntakeOutcome::Queued(r) | IntakeOutcome::Resubmitted(r) => (Some(r.key.clone()), true, "queued".to_owned()),
        IntakeOutcome::Rejected(r) => (Some(r.key.clone()), true, "rejected at intake".to_owned()),
        IntakeOutcome::Repeat(r) => (Some(r.key.clone()), false, "repeat of a registered file: nothing to do".to_owned()),
        IntakeOutcome::Conflict { existing, .. } => (
            Some(existing.key.clone()),
            false,
            format!("CONFLICT with {}: not sent", existing.erp_document_id),
        ),
        IntakeOutcome::NotRegistered(f) => {
            let why: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
            (None, false, format!("not registered: {}", why.join("; ")))
        }
    };
    Row {
        file: file.to_owned(),
        key,
        owns_record,
        intake: text,
    }
}

fn erp_id(name: &str) -> Result<ErpDocumentId> {
    let stem = name.strip_suffix(".xml").unwrap_or(name);
    ErpDocumentId::parse(stem).with_context(|| format!("{name} cannot serve as an ERP document id"))
}

/// In-memory: each file straight into the intake use case.
async fn intake_directly(ports: &IntakePorts<'_, dyn DocumentStore>, inputs: &[(String, Vec<u8>)], pb: &ProgressBar) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (name, bytes) in inputs {
        pb.set_message(name.clone());
        let upload = Upload {
            bytes,
            source_key: format!("local/{name}"),
            erp_document_id: erp_id(name)?,
            expected_seller: None,
            trace_id: None,
            offline_mode: None,
            corrects: None,
        };
        let outcome = intake(ports, upload, Utc::now())
            .await
            .with_context(|| format!("intake of {name}"))?;
        rows.push(row_for(name, &outcome));
        pb.inc(1);
    }
    Ok(rows)
}

/// With the emulator, as deployed: upload to `inbox/{sellerNip}/{erpDocId}.xml` (the seller
/// read from the file; an unreadable file goes under the simulator's NIP and intake answers it),
/// then take in what the bucket's notifications announce on the intake queue.
async fn intake_through_the_inbox(
    ports: &IntakePorts<'_, dyn DocumentStore>,
    queue: &dyn Queue,
    inputs: &[(String, Vec<u8>)],
    pb: &ProgressBar,
) -> Result<Vec<Row>> {
    let fallback = Nip::parse("9999999999")?;
    let mut files: HashMap<String, &str> = HashMap::new();
    for (name, bytes) in inputs {
        let seller = relay_fa3::read_identity(bytes)
            .map(|i| i.key.seller_nip)
            .unwrap_or_else(|_| fallback.clone());
        let key = relay_domain::storage_keys::inbox_key(&seller, &erp_id(name)?);
        ports
            .archive
            .put(&key, ObjectBody::new(bytes.clone(), "application/xml"))
            .await
            .with_context(|| format!("uploading {name} to {key}"))?;
        files.insert(key, name);
    }
    let mut rows = Vec::new();
    // S3 sends each notification when the upload completes, so they are all on the queue
    // already; taking them in is what takes time (hundreds of files on a loaded emulator take
    // longer than a minute). The run gives up only when a whole minute passes with none of
    // the awaited notifications arriving.
    let quiet_limit = Duration::from_secs(60);
    let mut last_progress = tokio::time::Instant::now();
    while !files.is_empty() {
        if last_progress.elapsed() > quiet_limit {
            bail!(
                "no S3 notification arrived on the intake queue for {} s for: {:?}",
                quiet_limit.as_secs(),
                files.values().collect::<Vec<_>>()
            );
        }
        for m in queue.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await? {
            let objects = relay_pipeline::s3_event::created_objects(&m.body).context("reading an intake-queue message")?;
            let mut done = true;
            for object in objects {
                let Some(name) = files.get(&object.key).copied() else { continue };
                pb.set_message(name.to_owned());
                match intake_created_object(ports, &object, Utc::now()).await {
                    ObjectIntake::Done(outcome) => {
                        rows.push(row_for(name, &outcome));
                        files.remove(&object.key);
                        last_progress = tokio::time::Instant::now();
                        pb.inc(1);
                    }
                    ObjectIntake::Skipped(why) => bail!("{name}: not taken in: {why}"),
                    ObjectIntake::Retry(why) => {
                        tracing::warn!(file = name, why, "intake failed; the notification comes back");
                        done = false;
                    }
                }
            }
            if done {
                queue.delete(&m.receipt).await?;
            }
        }
    }
    rows.sort_by_key(|r| inputs.iter().position(|(n, _)| *n == r.file));
    Ok(rows)
}

/// Takes every input in, as the deployment would (straight into intake in memory, through the
/// bucket's inbox and its notifications on the emulator), with a progress bar.
pub(crate) async fn intake_all(ports: &Ports, backlog: &ksef_client::OnlineBacklog, inputs: &[(String, Vec<u8>)]) -> Result<Vec<Row>> {
    let q = |name: &str| ports.queues[name].as_ref();
    let intake_ports = IntakePorts {
        store: ports.store.as_ref(),
        archive: ports.archive.as_ref(),
        send_queue: q("send"),
        corrections_queue: q("corrections"),
        backlog: Some(backlog),
    };
    let pb = bar(inputs.len(), "intake");
    let rows = match &ports.intake_queue {
        None => intake_directly(&intake_ports, inputs, &pb).await?,
        Some(queue) => intake_through_the_inbox(&intake_ports, queue.as_ref(), inputs, &pb).await?,
    };
    pb.finish_with_message("done");
    Ok(rows)
}

/// Pumps the send and status stages (and the sweeper) until nothing is left to do or `limit`
/// passes, as the Lambda event sources would, moving `pb` as documents reach a final state;
/// then closes the open sessions. Returns false if it stopped at the limit with work left.
pub(crate) async fn drive(ports: &Ports, ksef: &Ksef, limit: Duration, pb: &ProgressBar) -> Result<bool> {
    let q = |name: &str| ports.queues[name].as_ref();
    let stages = Stages {
        store: ports.store.as_ref(),
        archive: ports.archive.as_ref(),
        send_queue: q("send"),
        send_dlq: q("send-dlq"),
        status_queue: q("status"),
        status_dlq: q("status-dlq"),
        corrections_queue: q("corrections"),
        ksef: &ksef.contexts,
        send_cfg: &ksef.send_cfg,
        status_cfg: &ksef.status_cfg,
        visibility: Duration::from_secs(30),
        clock: &relay_domain::clock::SystemClock,
        // The run ends when nothing is left to do: with every queue empty, an open document has
        // no message at all, so it is re-driven after a short grace rather than the deployed
        // sweeper's minute.
        sweep: relay_pipeline::sweeper::SweepConfig {
            grace: Duration::from_secs(2),
            ..relay_pipeline::sweeper::SweepConfig::standard()
        },
        batch_cfg: relay_pipeline::send::BatchConfig::default(),
    };
    let mut finished: HashMap<String, &'static str> = HashMap::new();
    let stages_run = stages.run_until_quiet(limit, Duration::from_millis(25), |step| {
        if let Some(doc) = &step.document {
            pb.set_message(format!("{} {} {}", step.stage, step.outcome, doc));
            if matches!(
                step.outcome,
                "ACCEPTED" | "ACCEPTED_DUPLICATE_OURS" | "REJECTED" | "CONFLICT" | "FAILED"
            ) {
                finished.insert(doc.clone(), step.outcome);
                pb.set_position(finished.len() as u64);
            }
        }
    });
    // The availability poll runs beside the stages, as the sweeper's schedule does in AWS, and
    // stops with them. Its first poll comes before any send: in AWS the state is always there.
    ksef.availability.once(ports).await;
    let quiet = tokio::select! {
        quiet = stages_run => quiet?,
        () = ksef.availability.schedule(ports) => unreachable!("the poll's schedule never ends"),
    };
    pb.finish_with_message(if quiet {
        "done"
    } else {
        "stopped at --timeout-secs with work left"
    });
    ksef.contexts.close_all().await;
    Ok(quiet)
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let inputs = load_inputs(&args.inputs)?;
    let metrics_path = crate::run_reports::metrics_to_file(&args.out)?;
    let ports = build_ports(&args).await?;
    let ksef = build_ksef(&args, &[sample_seller()?], ports.shared_cache.clone()).await?;
    println!(
        "ksef-relay run: {} invoice(s); {}; {}",
        inputs.len(),
        ports.description,
        ksef.description
    );
    let q = |name: &str| ports.queues[name].as_ref();
    let rows = intake_all(&ports, &ksef.backlog(&ports, args.batch_target_delay_secs), &inputs).await?;
    let tracked = rows.iter().filter(|r| r.owns_record && r.key.is_some()).count();
    drive(&ports, &ksef, Duration::from_secs(args.timeout_secs), &bar(tracked, "KSeF")).await?;

    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "file",
        "kind",
        "P_2",
        "state",
        "KSeF number",
        "UPO",
        "intake / error",
        "trace id",
    ]);
    let mut report = Vec::new();
    let mut unsettled = 0;
    for row in &rows {
        let doc = match &row.key {
            Some(k) if row.owns_record => ports.store.get(k).await?,
            _ => None,
        };
        let (kind, number) = row
            .key
            .as_ref()
            .map(|k| (k.kind.to_string(), k.invoice_number.to_string()))
            .unwrap_or_default();
        let mut cells = vec![row.file.clone(), kind, number];
        match &doc {
            Some(d) => {
                let r = &d.record;
                if !matches!(r.state, DocumentState::Accepted | DocumentState::Rejected | DocumentState::Conflict) {
                    unsettled += 1;
                }
                let note = match (&r.last_error, r.state) {
                    (_, DocumentState::Accepted) => String::new(),
                    (Some(f), _) => format!("[{}] {}", f.class.name(), f.message),
                    (None, _) => row.intake.clone(),
                };
                cells.extend([
                    format!("{} {}", r.state, r.state.label_pl()),
                    r.ksef.ksef_number.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    r.storage.upo.clone().unwrap_or_default(),
                    note.chars().take(90).collect(),
                    r.trace_id.to_string(),
                ]);
            }
            None => cells.extend([
                "-".into(),
                String::new(),
                String::new(),
                row.intake.chars().take(90).collect(),
                String::new(),
            ]),
        }
        table.add_row(cells);
        report.push(serde_json::json!({
            "file": row.file, "intake": row.intake,
            "document": doc.as_ref().map(|d| serde_json::json!({"record": d.record, "history": d.history})),
        }));
    }
    println!("{table}");
    if let Some(sim) = &ksef.sim {
        let ledger = sim.ledger().entries();
        let mut hashes: Vec<String> = ledger.iter().map(|e| e.invoice_hash.to_base64()).collect();
        hashes.sort();
        hashes.dedup();
        println!(
            "KSeF simulator ledger: {} invoice(s) accepted, {} distinct (each exactly once: {}).",
            ledger.len(),
            hashes.len(),
            hashes.len() == ledger.len()
        );
    }
    // KSeF's availability as the run's poll last decided it, with the declared windows.
    let env = ksef_client::latarnia::environment_key(&ksef.availability.environment);
    if let Some(a) = relay_pipeline::availability::current(ports.shared_cache.as_ref(), env, Utc::now()).await? {
        println!("KSeF availability: {}.", a.describe());
        for w in a.declared_failures() {
            println!(
                "  declared {:?} {} – {} ({}, {})",
                w.category,
                w.start.to_rfc3339(),
                w.end.map(|e| e.to_rfc3339()).unwrap_or_else(|| "not ended".into()),
                w.declaring_message(),
                if w.end_declared { "end declared" } else { "end not declared" }
            );
        }
    }
    // The states the run's polls saw, in order: a silent outage shows here (DEGRADED on the
    // relay's own evidence), as no declared window names it.
    {
        let polls = ksef.availability.reports.lock().expect("poll reports lock").clone();
        let mut changes: Vec<String> = Vec::new();
        let mut last = None;
        for p in &polls {
            let a = &p.availability;
            if last != Some(a.state) {
                changes.push(format!("{} at {} ({})", a.state, a.checked_at.format("%H:%M:%S%.3f"), a.source));
                last = Some(a.state);
            }
        }
        if !changes.is_empty() {
            println!("KSeF availability over the run ({} polls): {}.", polls.len(), changes.join(" → "));
        }
    }
    if let Some(sim) = &ksef.sim {
        let calls = sim.operation_counts().snapshot();
        let unavailable: Vec<&ksef_sim::OperationCount> = calls.iter().filter(|c| c.status == 503).collect();
        if !unavailable.is_empty() {
            let probes: u64 = unavailable.iter().filter(|c| c.route == PROBE_ROUTE).map(|c| c.count).sum();
            let all: u64 = unavailable.iter().map(|c| c.count).sum();
            println!("KSeF answered 503 to {all} call(s), {probes} of them the availability probe's.");
        }
        std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let path = args.out.join("ksef-calls.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&calls)?).with_context(|| format!("writing {}", path.display()))?;
    }
    {
        let polls = ksef.availability.reports.lock().expect("poll reports lock").clone();
        std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let path = args.out.join("availability-polls.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&polls)?).with_context(|| format!("writing {}", path.display()))?;
    }
    for (name, label) in [
        ("send-dlq", "send DLQ"),
        ("status-dlq", "status DLQ"),
        ("corrections", "corrections queue"),
    ] {
        let n = q(name).stats().await?.total();
        if n > 0 {
            println!("{label}: {n} message(s) waiting for a person.");
        }
    }

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let report_path = args.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", report_path.display()))?;
    if let Some(archive) = &ports.memory_archive {
        for (key, body) in archive.snapshot() {
            let path = args.out.join(&key);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, &body.bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        println!(
            "Archive, UPOs and outbox results: {}/ (archive/, upo/, outbox/); every document's history: {}",
            args.out.display(),
            report_path.display()
        );
    } else {
        println!("Every document's history: {}", report_path.display());
    }
    let local_files = |key: &str| ports.memory_archive.is_some() && ["archive/", "upo/", "outbox/"].iter().any(|p| key.starts_with(p));
    let written = crate::run_reports::write(
        ports.store.as_ref(),
        (ports.shared_cache.as_ref(), &ksef.sellers),
        &args.out,
        &ports.description,
        &local_files,
        Utc::now(),
    )
    .await?;
    println!(
        "Status page: {}; weekly report: {} and {}; store snapshot for `ksef-relay status ID`: {}; EMF metrics: {}",
        written.status_page.display(),
        written.weekly_html.display(),
        written.weekly_csv.display(),
        written.store.display(),
        metrics_path.display()
    );
    print!("{}", written.summary);
    if unsettled > 0 {
        println!("{unsettled} document(s) did not reach a final state (ACCEPTED, REJECTED or CONFLICT).");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
