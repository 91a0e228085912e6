//! `ksef-relay ksef ...`: talk to a KSeF environment (TEST, DEMO, PROD, or the simulator) with
//! the relay's own client: check a login, send one invoice file, read statuses, fetch a UPO.
//! It is the first thing to run when a connection to KSeF does not work: every failure is
//! printed with its class (what the relay would do) and KSeF's own code and words.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ksef_client::failure_map::InvoiceOutcome;
use ksef_client::{ClientConfig, Credentials, Environment, KsefClient, KsefToken, SendOptions, SigningIdentity, SubjectIdentifierType};
use relay_domain::{ContentHash, Failure, Nip};

/// Where and as whom to connect.
#[derive(clap::Args, Debug)]
pub struct Connection {
    /// KSeF environment: test, demo, prod, or an API URL such as http://127.0.0.1:8080/v2
    /// (what `ksef-relay sim` prints).
    #[arg(long = "env", env = "KSEF_ENV", default_value = "test")]
    pub environment: String,
    /// The context NIP to log into.
    #[arg(long, env = "KSEF_NIP")]
    pub nip: String,
    /// The KSeF token. Prefer the environment variable: command lines are visible to others.
    #[arg(
        long,
        env = "KSEF_TOKEN",
        hide_env_values = true,
        required_unless_present = "cert",
        conflicts_with = "cert"
    )]
    pub token: Option<String>,
    /// Log in with a certificate instead (XAdES): its PEM file. In production, a KSeF
    /// certificate of type Authentication; TEST also accepts self-signed ones.
    #[arg(long, env = "KSEF_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key: a PKCS#8 PEM file (RSA-2048 or EC P-256).
    #[arg(long, env = "KSEF_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// With --cert: identify the subject by the certificate's fingerprint rather than its subject.
    #[arg(long, requires = "cert")]
    pub by_fingerprint: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

impl Connection {
    fn client(&self) -> anyhow::Result<KsefClient> {
        let env = Environment::parse(&self.environment).map_err(anyhow::Error::msg)?;
        let nip = Nip::parse(&self.nip).with_context(|| format!("--nip {}", self.nip))?;
        let cfg = ClientConfig {
            timeout: Duration::from_secs(self.timeout_secs),
            ..ClientConfig::new(env)
        };
        let creds = match (&self.token, &self.cert, &self.key) {
            (Some(token), _, _) => Credentials::Token {
                context: nip,
                token: KsefToken::new(token.clone()),
            },
            (None, Some(cert), Some(key)) => {
                let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
                let identity = SigningIdentity::from_pem(&read(cert)?, &read(key)?).map_err(explain)?;
                let subject = if self.by_fingerprint {
                    SubjectIdentifierType::CertificateFingerprint
                } else {
                    SubjectIdentifierType::CertificateSubject
                };
                Credentials::Certificate {
                    context: nip,
                    identity,
                    subject,
                }
            }
            _ => anyhow::bail!("give --token, or --cert with --key"),
        };
        KsefClient::new(cfg, Some(creds)).map_err(explain)
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
            let c = conn.client()?;
            let keys = c.public_keys().await.map_err(explain).context("reading KSeF's public keys")?;
            println!(
                "public keys: {}",
                keys.iter()
                    .map(|k| format!("{} until {}", k.usage.join("+"), k.valid_to.date_naive()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let t = c
                .authenticate()
                .await
                .map_err(explain)
                .context("authenticating with the KSeF token")?;
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
            let c = conn.client()?;
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
            let c = conn.client()?;
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
            let c = conn.client()?;
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
