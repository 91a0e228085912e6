//! `ksef-relay ksef ...`: talk to a KSeF environment (TEST, DEMO, PROD, or the simulator) with
//! the relay's own client: check a login, send one invoice file, read statuses, fetch a UPO.
//! It is the first thing to run when a connection to KSeF does not work: every failure is
//! printed with its class (what the relay would do) and KSeF's own code and words.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use ksef_client::failure_map::InvoiceOutcome;
use ksef_client::stored_credentials::Login;
use ksef_client::{
    ClientConfig, Environment, KsefClient, KsefToken, SendOptions, SigningIdentity, StoredCredentials, SubjectIdentifierType,
};
use relay_aws::settings::AwsSettings;
use relay_domain::{ContentHash, Failure, Nip};

/// Where and as whom to connect.
#[derive(clap::Args, Debug)]
pub struct Connection {
    /// KSeF environment: test, demo, prod, or an API URL such as http://127.0.0.1:8080/v2
    /// (what `ksef-relay sim` prints).
    #[arg(long = "env", env = "KSEF_ENV", default_value = "test")]
    pub environment: String,
    /// The context NIP to log into (with --secret: by default the NIP that ends the secret's
    /// name, `{prefix}{nip}`).
    #[arg(long, env = "KSEF_NIP")]
    pub nip: Option<String>,
    /// The KSeF token. Prefer the environment variable: command lines are visible to others.
    #[arg(
        long,
        env = "KSEF_TOKEN",
        hide_env_values = true,
        required_unless_present_any = ["cert", "secret"],
        conflicts_with_all = ["cert", "secret"]
    )]
    pub token: Option<String>,
    /// Log in with a certificate instead (XAdES): its PEM file. In production, a KSeF
    /// certificate of type Authentication; TEST also accepts self-signed ones.
    #[arg(long, env = "KSEF_CERT", requires = "key", conflicts_with = "secret")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key: PEM (PKCS#8, PKCS#1 or SEC1; RSA or EC P-256).
    #[arg(long, env = "KSEF_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Log in with a deployed seller's credentials: the Secrets Manager secret of this name (the
    /// relay's format, docs/runbook.md "KSeF credentials"), read with your AWS credentials.
    /// Nothing of its value is printed.
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// With --secret: the AWS API at this URL instead of AWS (e.g. a local moto server).
    #[arg(long, env = "KSEF_RELAY_AWS_ENDPOINT", value_name = "URL", requires = "secret")]
    pub aws_endpoint: Option<String>,
    /// With --secret: the secret's region.
    #[arg(long, env = "AWS_REGION", default_value = "eu-central-1")]
    pub region: String,
    /// With --cert: identify the subject by the certificate's fingerprint rather than its subject.
    #[arg(long, requires = "cert")]
    pub by_fingerprint: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// The NIP a secret named `{prefix}{nip}` is for.
fn nip_of_secret(name: &str) -> Option<Nip> {
    let digits: String = name.chars().rev().take_while(char::is_ascii_digit).collect();
    Nip::parse(&digits.chars().rev().collect::<String>()).ok()
}

impl Connection {
    /// The credentials from the token, the certificate files or the deployed secret.
    async fn credentials(&self) -> anyhow::Result<(Nip, StoredCredentials)> {
        let nip = match (&self.nip, &self.secret) {
            (Some(n), _) => Nip::parse(n).with_context(|| format!("--nip {n}"))?,
            (None, Some(name)) => {
                nip_of_secret(name).with_context(|| format!("the secret name {name} does not end with a NIP: give --nip"))?
            }
            (None, None) => anyhow::bail!("give --nip (or KSEF_NIP)"),
        };
        let subject = if self.by_fingerprint {
            SubjectIdentifierType::CertificateFingerprint
        } else {
            SubjectIdentifierType::CertificateSubject
        };
        let stored = match (&self.token, &self.cert, &self.key, &self.secret) {
            (Some(token), _, _, _) => StoredCredentials {
                login: Login::Token(KsefToken::new(token.clone())),
                offline: None,
            },
            (None, Some(cert), Some(key), _) => {
                let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
                let identity = SigningIdentity::from_pem(&read(cert)?, &read(key)?).map_err(explain)?;
                StoredCredentials {
                    login: Login::Certificate { identity, subject },
                    offline: None,
                }
            }
            (None, None, _, Some(name)) => {
                let clients = relay_aws::AwsClients::new(&AwsSettings {
                    region: self.region.clone(),
                    endpoint_url: self.aws_endpoint.clone(),
                })
                .await;
                let text = relay_aws::secrets::read_secret(&clients.secrets, name).await?;
                println!("secret: {name}, version {}", text.version.as_deref().unwrap_or("-"));
                StoredCredentials::parse(&text.value).with_context(|| format!("the secret {name} cannot be used"))?
            }
            _ => anyhow::bail!("give --token, --cert with --key, or --secret"),
        };
        Ok((nip, stored))
    }

    fn config(&self) -> anyhow::Result<ClientConfig> {
        let env = Environment::parse(&self.environment).map_err(anyhow::Error::msg)?;
        Ok(ClientConfig {
            timeout: Duration::from_secs(self.timeout_secs),
            ..ClientConfig::new(env)
        })
    }

    async fn client(&self) -> anyhow::Result<KsefClient> {
        let (nip, stored) = self.credentials().await?;
        KsefClient::new(self.config()?, Some(stored.credentials(nip))).map_err(explain)
    }
}

/// What may be said about credentials: never the token, the key or the password.
fn print_facts(nip: &Nip, stored: &StoredCredentials) {
    let facts = stored.facts();
    let now = Utc::now();
    println!("context: NIP {nip}");
    println!("credential: {}", facts.kind);
    if let Some(subject) = &facts.subject {
        println!("subject: {subject}");
    }
    if let Some(key_type) = &facts.key_type {
        println!("key: {key_type}");
    }
    if let Some(fingerprint) = &facts.fingerprint {
        println!("certificate SHA-256: {fingerprint}");
    }
    let ends = match facts.kind {
        ksef_client::CredentialKind::Token => "token logins end",
        ksef_client::CredentialKind::Certificate => "notAfter",
    };
    println!("{ends}: {} ({} days left)", facts.not_after.to_rfc3339(), facts.days_left(now));
    if let Some(offline) = facts.offline_not_after {
        println!(
            "offline certificate notAfter: {} ({} days left)",
            offline.to_rfc3339(),
            (offline - now).num_days()
        );
    }
}

/// The `ksef` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum KsefCommand {
    /// Log in (KSeF token or certificate: challenge, credentials, status, redeem) and report.
    AuthCheck {
        #[command(flatten)]
        conn: Connection,
    },
    /// Send one FA(3) file in a new online session, wait for KSeF's verdict, save the UPO.
    Send {
        #[command(flatten)]
        conn: Connection,
        /// The invoice XML, sent byte for byte.
        file: PathBuf,
        /// Mark the invoice as issued offline (offlineMode).
        #[arg(long)]
        offline: bool,
        /// How long to wait for the final status, in seconds.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
        /// Where to write the UPO (default: {KSeF number}.upo.xml in the current directory).
        #[arg(long)]
        upo_out: Option<PathBuf>,
    },
    /// Show a session's status, or one invoice's when its reference is given.
    Status {
        #[command(flatten)]
        conn: Connection,
        /// Session reference number (e.g. 20250625-SO-...).
        session: String,
        /// Invoice reference number within the session (e.g. 20250625-EE-...).
        invoice: Option<String>,
    },
    /// Fetch the UPO of one invoice, by invoice reference or by KSeF number.
    Upo {
        #[command(flatten)]
        conn: Connection,
        /// Session reference number.
        session: String,
        /// Invoice reference number.
        #[arg(long, conflicts_with = "ksef_number", required_unless_present = "ksef_number")]
        invoice: Option<String>,
        /// KSeF number of the invoice.
        #[arg(long)]
        ksef_number: Option<String>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
}

/// A failure as a person reads it: class (what the relay would do), KSeF's code and words.
fn explain(f: Failure) -> anyhow::Error {
    anyhow::anyhow!("{f}")
}

pub async fn run(cmd: KsefCommand) -> anyhow::Result<()> {
    match cmd {
        KsefCommand::AuthCheck { conn } => {
            let (nip, stored) = conn.credentials().await?;
            print_facts(&nip, &stored);
            let c = KsefClient::new(conn.config()?, Some(stored.credentials(nip))).map_err(explain)?;
            let keys = c.public_keys().await.map_err(explain).context("reading KSeF's public keys")?;
            println!(
                "public keys: {}",
                keys.iter()
                    .map(|k| format!("{} until {}", k.usage.join("+"), k.valid_to.date_naive()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let t = match c.authenticate().await {
                Ok(t) => t,
                Err(f) => {
                    println!("login: FAILED ({})", f.class);
                    return Err(explain(f).context("logging in"));
                }
            };
            println!("login: ok");
            println!("authenticated: operation {}", t.auth_reference);
            println!(
                "access token valid until {}, refresh token until {}",
                t.access.valid_until, t.refresh.valid_until
            );
            Ok(())
        }
        KsefCommand::Send {
            conn,
            file,
            offline,
            wait_secs,
            upo_out,
        } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let hash = ContentHash::of(&bytes);
            println!("{}: {} bytes, invoiceHash {hash}", file.display(), bytes.len());
            let c = conn.client().await?;
            let s = c
                .open_online_session()
                .await
                .map_err(explain)
                .context("opening an online session")?;
            println!("session {}", s.reference);
            let opts = SendOptions {
                offline_mode: offline,
                ..SendOptions::default()
            };
            let sent = c
                .send_invoice(&s, &bytes, &opts)
                .await
                .map_err(explain)
                .context("sending the invoice")?;
            println!("invoice {} queued", sent.reference);
            let waited = c
                .wait_for_invoice(
                    &s.reference,
                    &sent.reference,
                    Duration::from_secs(1),
                    Duration::from_secs(wait_secs),
                )
                .await;
            // Close whatever happened: the session UPO needs it, and an open session lingers 12 h.
            if let Err(f) = c.close_online_session(&s.reference).await {
                eprintln!("closing the session failed: {f}");
            }
            let (status, outcome) = waited.map_err(explain).context("waiting for KSeF's verdict")?;
            match outcome {
                InvoiceOutcome::Accepted {
                    ksef_number,
                    acquisition_date,
                } => {
                    println!(
                        "ACCEPTED: KSeF number {ksef_number}, acquired {}",
                        acquisition_date.map(|d| d.to_rfc3339()).unwrap_or_default()
                    );
                    let upo = match status.upo_download_url.as_deref() {
                        Some(url) => c.download_upo(url).await,
                        None => c.invoice_upo(&s.reference, &sent.reference).await,
                    };
                    match upo {
                        Ok(upo) => {
                            let path = upo_out.unwrap_or_else(|| PathBuf::from(format!("{ksef_number}.upo.xml")));
                            std::fs::write(&path, &upo.xml).with_context(|| format!("writing {}", path.display()))?;
                            println!("UPO saved to {}", path.display());
                        }
                        Err(f) => eprintln!(
                            "UPO not fetched yet ({f}); try: ksef-relay ksef upo {} --invoice {}",
                            s.reference, sent.reference
                        ),
                    }
                    Ok(())
                }
                InvoiceOutcome::Failed(f) => Err(explain(f)).context(format!("KSeF did not accept invoice {}", sent.reference)),
                InvoiceOutcome::Pending => unreachable!("wait_for_invoice returns final statuses only"),
            }
        }
        KsefCommand::Status { conn, session, invoice } => {
            let c = conn.client().await?;
            match invoice {
                None => {
                    let s = c.session_status(&session).await.map_err(explain)?;
                    println!("session {session}: {} {}", s.status.code, s.status.description);
                    for d in s.status.details.unwrap_or_default() {
                        println!("  {d}");
                    }
                    println!(
                        "invoices: {} (accepted {}, failed {})",
                        s.invoice_count.unwrap_or(0),
                        s.successful_invoice_count.unwrap_or(0),
                        s.failed_invoice_count.unwrap_or(0)
                    );
                    for inv in c.session_invoices(&session).await.map_err(explain)? {
                        println!(
                            "  #{} {} {} {} {}",
                            inv.ordinal_number,
                            inv.reference_number,
                            inv.status.code,
                            inv.invoice_number.as_deref().unwrap_or("-"),
                            inv.ksef_number.as_deref().unwrap_or("")
                        );
                    }
                }
                Some(invoice) => {
                    let s = c.invoice_status(&session, &invoice).await.map_err(explain)?;
                    println!("invoice {invoice}: {} {}", s.status.code, s.status.description);
                    for d in s.status.details.iter().flatten() {
                        println!("  {d}");
                    }
                    if let Some(n) = &s.ksef_number {
                        println!("KSeF number {n}");
                    }
                    println!("invoiceHash {}", s.invoice_hash);
                    match ksef_client::failure_map::invoice_outcome("invoice_status", &s) {
                        InvoiceOutcome::Failed(f) => println!("the relay would treat this as {}", f.class),
                        InvoiceOutcome::Pending => println!("still processing"),
                        InvoiceOutcome::Accepted { .. } => {}
                    }
                }
            }
            Ok(())
        }
        KsefCommand::Upo {
            conn,
            session,
            invoice,
            ksef_number,
            out,
        } => {
            let c = conn.client().await?;
            let upo = match (invoice, ksef_number) {
                (Some(i), _) => c.invoice_upo(&session, &i).await,
                (None, Some(n)) => c.invoice_upo_by_ksef_number(&session, &n).await,
                (None, None) => unreachable!("clap requires one of them"),
            }
            .map_err(explain)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &upo.xml).with_context(|| format!("writing {}", path.display()))?;
                    println!("UPO saved to {}", path.display());
                }
                None => {
                    use std::io::Write as _;
                    std::io::stdout().write_all(&upo.xml)?;
                }
            }
            Ok(())
        }
    }
}
