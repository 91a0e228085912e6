//! Typed settings, one struct per binary, read from the environment once at cold start.
//! A missing or malformed variable stops the binary at once with a message that names it,
//! instead of failing on the first invoice.

use std::collections::HashMap;
use std::time::Duration;

/// A missing or malformed environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} has an invalid value {value:?}: {problem}")]
    Invalid {
        name: &'static str,
        value: String,
        problem: String,
    },
}

/// Where settings come from: the process environment, or a map in tests.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

fn required(env: &dyn EnvSource, name: &'static str) -> Result<String, SettingsError> {
    env.var(name).ok_or(SettingsError::Missing(name))
}

fn parsed<T: std::str::FromStr>(env: &dyn EnvSource, name: &'static str, default: T) -> Result<T, SettingsError>
where
    T::Err: std::fmt::Display,
{
    match env.var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e: T::Err| SettingsError::Invalid {
            name,
            value: v.clone(),
            problem: e.to_string(),
        }),
    }
}

fn endpoint(env: &dyn EnvSource) -> Result<Option<String>, SettingsError> {
    match env.var(ENDPOINT_VAR) {
        None => Ok(None),
        Some(v) if v.starts_with("http://") || v.starts_with("https://") => Ok(Some(v)),
        Some(v) => Err(SettingsError::Invalid {
            name: ENDPOINT_VAR,
            value: v,
            problem: "must be an http:// or https:// URL".into(),
        }),
    }
}

/// Points every AWS client at another endpoint (the local emulator).
pub const ENDPOINT_VAR: &str = "KSEF_RELAY_AWS_ENDPOINT";

/// What every function needs to reach AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// `AWS_REGION`; Lambda always sets it.
    pub region: String,
    /// `KSEF_RELAY_AWS_ENDPOINT`: the emulator's URL in tests and local runs; unset in AWS.
    pub endpoint_url: Option<String>,
}

impl AwsSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        Ok(AwsSettings {
            region: required(env, "AWS_REGION")?,
            endpoint_url: endpoint(env)?,
        })
    }
}

/// Where the document store, bucket and queues are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub table: String,
    pub bucket: String,
}

impl ResourceNames {
    fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        Ok(ResourceNames {
            table: required(env, "DOCUMENTS_TABLE")?,
            bucket: required(env, "ARCHIVE_BUCKET")?,
        })
    }
}

/// The intake function: validates, registers, archives, routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeSettings {
    pub aws: AwsSettings,
    pub resources: ResourceNames,
    pub send_queue_url: String,
    /// `BATCH_QUEUE_URL`: the queue of Batch-mode sends (the send-batch function's). When set,
    /// intake chooses each invoice's mode from its seller's online backlog and routes Batch-mode
    /// ones there; unset (a deployment without a batch queue), only an attachment makes an
    /// invoice Batch and every send goes to the send queue.
    pub batch_queue_url: Option<String>,
    /// `BATCH_TARGET_DELAY_SECONDS`, default 300: the longest an invoice may wait to go online
    /// before it goes in a batch session instead.
    pub batch_target_delay: Duration,
    pub corrections_queue_url: String,
    /// `MAX_INVOICE_BYTES`, default 1,000,000 (KSeF's limit without attachments).
    pub max_invoice_bytes: u64,
    /// `MAX_INVOICE_WITH_ATTACHMENTS_BYTES`, default 3,000,000.
    pub max_invoice_with_attachments_bytes: u64,
}

impl IntakeSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        Ok(IntakeSettings {
            aws: AwsSettings::from_env(env)?,
            resources: ResourceNames::from_env(env)?,
            send_queue_url: required(env, "SEND_QUEUE_URL")?,
            batch_queue_url: env.var("BATCH_QUEUE_URL"),
            batch_target_delay: Duration::from_secs(parsed(env, "BATCH_TARGET_DELAY_SECONDS", 300)?),
            corrections_queue_url: required(env, "CORRECTIONS_QUEUE_URL")?,
            max_invoice_bytes: parsed(env, "MAX_INVOICE_BYTES", 1_000_000)?,
            max_invoice_with_attachments_bytes: parsed(env, "MAX_INVOICE_WITH_ATTACHMENTS_BYTES", 3_000_000)?,
        })
    }
}

/// Which KSeF, and how the relay authenticates there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KsefSettings {
    /// `KSEF_ENV`: TEST, DEMO, PROD, or a base URL (the simulator).
    pub environment: String,
    /// `KSEF_TOKEN_SECRET_PREFIX`: the Secrets Manager name prefix; one secret per seller NIP,
    /// named `{prefix}{nip}`, holding that context's credentials: a KSeF token or a certificate
    /// with its key (the format: `ksef_client::stored_credentials`, docs/runbook.md).
    pub token_secret_prefix: String,
    /// `KSEF_SELLER_NIPS`: the sellers (KSeF contexts) this deployment sends for, comma-separated.
    pub seller_nips: Vec<relay_domain::Nip>,
    /// `KSEF_CREDENTIALS_TTL_SECONDS` (default 900): a seller's secret, read on first use, is read
    /// again after this long, so a rotation needs no redeploy.
    pub credentials_ttl: std::time::Duration,
    /// `KSEF_CACHE_KEY_ID`: the KMS key (id, ARN or alias) that seals the KSeF tokens and session
    /// keys the functions share through the documents table; only the KSeF-calling functions
    /// may use it, so intake and report, which can read the table, cannot read those secrets.
    pub cache_key_id: String,
}

impl KsefSettings {
    fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        let environment = required(env, "KSEF_ENV")?;
        let ok = matches!(environment.as_str(), "TEST" | "DEMO" | "PROD")
            || environment.starts_with("http://")
            || environment.starts_with("https://");
        if !ok {
            return Err(SettingsError::Invalid {
                name: "KSEF_ENV",
                value: environment,
                problem: "must be TEST, DEMO, PROD or a base URL".into(),
            });
        }
        let seller_nips = seller_nips(env)?;
        Ok(KsefSettings {
            environment,
            token_secret_prefix: required(env, "KSEF_TOKEN_SECRET_PREFIX")?,
            seller_nips,
            credentials_ttl: std::time::Duration::from_secs(parsed(env, "KSEF_CREDENTIALS_TTL_SECONDS", 900u64)?),
            cache_key_id: required(env, "KSEF_CACHE_KEY_ID")?,
        })
    }
}

/// The send function: claims, sends, classifies, backs off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendSettings {
    pub aws: AwsSettings,
    pub resources: ResourceNames,
    pub ksef: KsefSettings,
    /// Its own queue (delays are carried out as delayed copies) and that queue's DLQ.
    pub send_queue_url: String,
    pub send_dlq_url: String,
    /// `BATCH_QUEUE_URL` (optional): where Batch-mode sends go (a retry's copy, a Batch-mode
    /// message that reached the send queue); unset, they stay on the send queue.
    pub batch_queue_url: Option<String>,
    pub status_queue_url: String,
    pub corrections_queue_url: String,
    /// `MAX_ATTEMPTS`, default 10: the retry budget before FAILED and the DLQ.
    pub max_attempts: u32,
    /// `LEASE_SECONDS`, default 120: how long a claim holds a document.
    pub lease: Duration,
}

/// `MAX_ATTEMPTS`, default 10: the retry budget before FAILED and the DLQ; at least 1.
fn max_attempts(env: &dyn EnvSource) -> Result<u32, SettingsError> {
    let max_attempts: u32 = parsed(env, "MAX_ATTEMPTS", 10)?;
    if max_attempts == 0 {
        return Err(SettingsError::Invalid {
            name: "MAX_ATTEMPTS",
            value: "0".into(),
            problem: "must be at least 1".into(),
        });
    }
    Ok(max_attempts)
}

impl SendSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        let max_attempts = max_attempts(env)?;
        Ok(SendSettings {
            aws: AwsSettings::from_env(env)?,
            resources: ResourceNames::from_env(env)?,
            ksef: KsefSettings::from_env(env)?,
            send_queue_url: required(env, "SEND_QUEUE_URL")?,
            send_dlq_url: required(env, "SEND_DLQ_URL")?,
            batch_queue_url: env.var("BATCH_QUEUE_URL"),
            status_queue_url: required(env, "STATUS_QUEUE_URL")?,
            corrections_queue_url: required(env, "CORRECTIONS_QUEUE_URL")?,
            max_attempts,
            lease: Duration::from_secs(parsed(env, "LEASE_SECONDS", 120)?),
        })
    }
}

/// The send-batch function: a seller's Batch-mode documents in one batch session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBatchSettings {
    pub aws: AwsSettings,
    pub resources: ResourceNames,
    pub ksef: KsefSettings,
    /// Its own queue (a delay is a delayed copy there) and that queue's DLQ.
    pub batch_queue_url: String,
    pub batch_dlq_url: String,
    /// Where a member that turns out not to be Batch-mode goes.
    pub send_queue_url: String,
    pub status_queue_url: String,
    pub corrections_queue_url: String,
    /// `MAX_ATTEMPTS`, default 10.
    pub max_attempts: u32,
    /// `LEASE_SECONDS`, default 660: a claim must outlive the invocation that builds the batch
    /// (the function's timeout, 600 s in the template).
    pub lease: Duration,
}

impl SendBatchSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        let max_attempts = max_attempts(env)?;
        Ok(SendBatchSettings {
            aws: AwsSettings::from_env(env)?,
            resources: ResourceNames::from_env(env)?,
            ksef: KsefSettings::from_env(env)?,
            batch_queue_url: required(env, "BATCH_QUEUE_URL")?,
            batch_dlq_url: required(env, "BATCH_DLQ_URL")?,
            send_queue_url: required(env, "SEND_QUEUE_URL")?,
            status_queue_url: required(env, "STATUS_QUEUE_URL")?,
            corrections_queue_url: required(env, "CORRECTIONS_QUEUE_URL")?,
            max_attempts,
            lease: Duration::from_secs(parsed(env, "LEASE_SECONDS", 660)?),
        })
    }
}

/// The status function: polls KSeF, archives UPOs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSettings {
    pub aws: AwsSettings,
    pub resources: ResourceNames,
    pub ksef: KsefSettings,
    pub status_queue_url: String,
    pub status_dlq_url: String,
    /// `MAX_ATTEMPTS`, default 10: the send budget, charged when KSeF cancels an invoice.
    pub max_attempts: u32,
    pub send_queue_url: String,
    /// `BATCH_QUEUE_URL` (optional): a Batch-mode resend goes there.
    pub batch_queue_url: Option<String>,
    pub corrections_queue_url: String,
}

impl StatusSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        Ok(StatusSettings {
            aws: AwsSettings::from_env(env)?,
            resources: ResourceNames::from_env(env)?,
            ksef: KsefSettings::from_env(env)?,
            status_queue_url: required(env, "STATUS_QUEUE_URL")?,
            status_dlq_url: required(env, "STATUS_DLQ_URL")?,
            max_attempts: max_attempts(env)?,
            send_queue_url: required(env, "SEND_QUEUE_URL")?,
            batch_queue_url: env.var("BATCH_QUEUE_URL"),
            corrections_queue_url: required(env, "CORRECTIONS_QUEUE_URL")?,
        })
    }
}

/// dlq-replay: moves checked messages from a DLQ back to their queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySettings {
    pub aws: AwsSettings,
    pub resources: ResourceNames,
    pub ksef: KsefSettings,
    /// `REPLAY_QUEUES`: `name=dlqUrl>targetUrl` pairs, comma-separated (which DLQ feeds which queue).
    pub queues: Vec<ReplayRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRoute {
    pub name: String,
    pub dlq_url: String,
    pub target_url: String,
}

impl ReplaySettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        let raw = required(env, "REPLAY_QUEUES")?;
        let mut queues = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parsed = item
                .split_once('=')
                .and_then(|(name, urls)| urls.split_once('>').map(|(d, t)| (name, d, t)));
            match parsed {
                Some((name, dlq, target)) if !name.is_empty() && !dlq.is_empty() && !target.is_empty() => queues.push(ReplayRoute {
                    name: name.into(),
                    dlq_url: dlq.into(),
                    target_url: target.into(),
                }),
                _ => {
                    return Err(SettingsError::Invalid {
                        name: "REPLAY_QUEUES",
                        value: item.into(),
                        problem: "each entry must be name=dlqUrl>targetUrl".into(),
                    })
                }
            }
        }
        if queues.is_empty() {
            return Err(SettingsError::Missing("REPLAY_QUEUES"));
        }
        Ok(ReplaySettings {
            aws: AwsSettings::from_env(env)?,
            resources: ResourceNames::from_env(env)?,
            ksef: KsefSettings::from_env(env)?,
            queues,
        })
    }
}

/// The report function (EventBridge schedules): the status page and metrics every 15 minutes,
/// the weekly report. Reads the table, writes `reports/*` in the bucket, publishes to the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    pub aws: AwsSettings,
    pub resources: ResourceNames,
    /// `ALARM_TOPIC_ARN`: the weekly summary goes there.
    pub alarm_topic_arn: String,
    /// `OVERDUE_AFTER_HOURS` (default 4): an open document older than this counts as overdue.
    pub overdue_after_hours: u32,
    /// `KSEF_SELLER_NIPS`: the sellers whose KSeF logins the snapshot shows and measures (from
    /// the facts the KSeF-calling functions record; the report reads no secret).
    pub seller_nips: Vec<relay_domain::Nip>,
}

impl ReportSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        let overdue_after_hours = parsed(env, "OVERDUE_AFTER_HOURS", 4u32)?;
        if overdue_after_hours == 0 {
            return Err(SettingsError::Invalid {
                name: "OVERDUE_AFTER_HOURS",
                value: "0".into(),
                problem: "must be at least 1".into(),
            });
        }
        Ok(ReportSettings {
            aws: AwsSettings::from_env(env)?,
            resources: ResourceNames::from_env(env)?,
            alarm_topic_arn: required(env, "ALARM_TOPIC_ARN")?,
            overdue_after_hours,
            seller_nips: seller_nips(env)?,
        })
    }
}

/// `KSEF_SELLER_NIPS`: comma-separated seller NIPs, at least one.
fn seller_nips(env: &dyn EnvSource) -> Result<Vec<relay_domain::Nip>, SettingsError> {
    let raw = required(env, "KSEF_SELLER_NIPS")?;
    let seller_nips = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|n| {
            relay_domain::Nip::parse(n).map_err(|e| SettingsError::Invalid {
                name: "KSEF_SELLER_NIPS",
                value: raw.clone(),
                problem: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if seller_nips.is_empty() {
        return Err(SettingsError::Missing("KSEF_SELLER_NIPS"));
    }
    Ok(seller_nips)
}

/// The sweeper (an EventBridge schedule every 5 minutes): re-drives open documents whose next
/// step is overdue with no attempt holding them, rewrites outbox results that lag a final state.
/// Reads and writes the table, reads and writes `outbox/*`, sends to the send and status queues
/// (the follow-ups) and the corrections queue (a REJECTED or CONFLICT notice rewritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweeperSettings {
    pub aws: AwsSettings,
    pub resources: ResourceNames,
    pub send_queue_url: String,
    /// `BATCH_QUEUE_URL` (optional): a QUEUED Batch-mode document's re-drive goes there.
    pub batch_queue_url: Option<String>,
    pub status_queue_url: String,
    pub corrections_queue_url: String,
    /// `KSEF_ENV` (optional here): the KSeF environment whose availability the sweeper polls
    /// (Latarnia and a light probe, `relay_pipeline::availability`); unset, it polls nothing.
    pub availability_environment: Option<String>,
}

impl SweeperSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        Ok(SweeperSettings {
            aws: AwsSettings::from_env(env)?,
            resources: ResourceNames::from_env(env)?,
            send_queue_url: required(env, "SEND_QUEUE_URL")?,
            batch_queue_url: env.var("BATCH_QUEUE_URL"),
            status_queue_url: required(env, "STATUS_QUEUE_URL")?,
            corrections_queue_url: required(env, "CORRECTIONS_QUEUE_URL")?,
            availability_environment: env.var("KSEF_ENV").filter(|v| !v.trim().is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const BASE: &[(&str, &str)] = &[
        ("AWS_REGION", "eu-central-1"),
        ("DOCUMENTS_TABLE", "docs"),
        ("ARCHIVE_BUCKET", "bucket"),
        ("SEND_QUEUE_URL", "http://q/send"),
        ("STATUS_QUEUE_URL", "http://q/status"),
        ("CORRECTIONS_QUEUE_URL", "http://q/corr"),
        ("KSEF_ENV", "TEST"),
        ("KSEF_TOKEN_SECRET_PREFIX", "ksef-relay/token/"),
        ("KSEF_SELLER_NIPS", "9999999999, 5265877635"),
        ("KSEF_CACHE_KEY_ID", "alias/ksef-relay-cache"),
        ("SEND_DLQ_URL", "http://q/send-dlq"),
        ("STATUS_DLQ_URL", "http://q/status-dlq"),
        (
            "REPLAY_QUEUES",
            "send=http://q/send-dlq>http://q/send,status=http://q/status-dlq>http://q/status",
        ),
        ("ALARM_TOPIC_ARN", "arn:aws:sns:eu-central-1:123456789012:alarms"),
    ];

    #[test]
    fn every_binary_loads_from_a_complete_environment() {
        let e = env(BASE);
        let i = IntakeSettings::from_env(&e).unwrap();
        assert_eq!(i.max_invoice_bytes, 1_000_000);
        assert_eq!(i.aws.endpoint_url, None);
        let s = SendSettings::from_env(&e).unwrap();
        assert_eq!((s.max_attempts, s.lease), (10, Duration::from_secs(120)));
        StatusSettings::from_env(&e).unwrap();
        let r = ReplaySettings::from_env(&e).unwrap();
        assert_eq!(r.queues.len(), 2);
        assert_eq!(r.queues[1].target_url, "http://q/status");
        let rep = ReportSettings::from_env(&e).unwrap();
        assert_eq!(rep.overdue_after_hours, 4);
        assert_eq!(rep.alarm_topic_arn, "arn:aws:sns:eu-central-1:123456789012:alarms");
        assert_eq!(rep.resources.table, "docs");
        assert_eq!(rep.seller_nips.len(), 2);
        let sw = SweeperSettings::from_env(&e).unwrap();
        assert_eq!(
            (
                sw.send_queue_url.as_str(),
                sw.status_queue_url.as_str(),
                sw.corrections_queue_url.as_str()
            ),
            ("http://q/send", "http://q/status", "http://q/corr")
        );
    }

    #[test]
    fn each_missing_variable_is_named() {
        for (name, _) in BASE {
            let e: HashMap<String, String> = env(BASE).into_iter().filter(|(k, _)| k != name).collect();
            let errors = [
                IntakeSettings::from_env(&e).err(),
                SendSettings::from_env(&e).err(),
                StatusSettings::from_env(&e).err(),
                ReplaySettings::from_env(&e).err(),
                ReportSettings::from_env(&e).err(),
                SweeperSettings::from_env(&e).err(),
            ];
            let named = errors.iter().flatten().any(|err| err.to_string().contains(name));
            assert!(named, "no binary named the missing {name}: {errors:?}");
        }
    }

    #[test]
    fn malformed_values_are_named_with_the_problem() {
        let mut e = env(BASE);
        e.insert("MAX_ATTEMPTS".into(), "ten".into());
        let err = SendSettings::from_env(&e).unwrap_err().to_string();
        assert!(err.contains("MAX_ATTEMPTS") && err.contains("ten"), "{err}");
        e.insert("MAX_ATTEMPTS".into(), "0".into());
        assert!(SendSettings::from_env(&e).is_err());
        let mut e = env(BASE);
        e.insert(ENDPOINT_VAR.into(), "localhost:5000".into());
        assert!(IntakeSettings::from_env(&e).unwrap_err().to_string().contains(ENDPOINT_VAR));
        e.insert(ENDPOINT_VAR.into(), "http://127.0.0.1:5000".into());
        assert_eq!(
            IntakeSettings::from_env(&e).unwrap().aws.endpoint_url.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        let mut e = env(BASE);
        e.insert("KSEF_ENV".into(), "PRODUCTION".into());
        assert!(SendSettings::from_env(&e).unwrap_err().to_string().contains("KSEF_ENV"));
        let mut e = env(BASE);
        e.insert("REPLAY_QUEUES".into(), "send=nourl".into());
        assert!(ReplaySettings::from_env(&e)
            .unwrap_err()
            .to_string()
            .contains("name=dlqUrl>targetUrl"));
        let mut e = env(BASE);
        e.insert("OVERDUE_AFTER_HOURS".into(), "four".into());
        assert!(ReportSettings::from_env(&e)
            .unwrap_err()
            .to_string()
            .contains("OVERDUE_AFTER_HOURS"));
        e.insert("OVERDUE_AFTER_HOURS".into(), "0".into());
        assert!(ReportSettings::from_env(&e).unwrap_err().to_string().contains("at least 1"));
        e.insert("OVERDUE_AFTER_HOURS".into(), "12".into());
        assert_eq!(ReportSettings::from_env(&e).unwrap().overdue_after_hours, 12);
    }

    #[test]
    fn the_sweeper_names_each_variable_it_needs() {
        for name in [
            "AWS_REGION",
            "DOCUMENTS_TABLE",
            "ARCHIVE_BUCKET",
            "SEND_QUEUE_URL",
            "STATUS_QUEUE_URL",
            "CORRECTIONS_QUEUE_URL",
        ] {
            let e: HashMap<String, String> = env(BASE).into_iter().filter(|(k, _)| k != name).collect();
            assert_eq!(SweeperSettings::from_env(&e), Err(SettingsError::Missing(name)));
        }
    }
}
