//! `ksef-relay sim`: starts the KSeF simulator (crate `ksef-sim`) in the foreground, for local
//! runs and for trying the `ksef` subcommands without a real KSeF token.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use ksef_sim::{Fault, RateLimits, SimConfig, SimToken};
use relay_domain::Nip;

/// Options of `ksef-relay sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The KSeF token the simulator accepts (default: the built-in test token, printed at start).
    #[arg(long, env = "KSEF_SIM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The context (NIP) that token logs into; the official samples' seller is 9999999999.
    #[arg(long, default_value = "9999999999")]
    pub nip: String,
    /// A fault scenario, repeatable: NAME[:RATE][:MS][@PATH]. Names: unavailable, slow, lag, reset,
    /// burst429, close-timeout, status550, stuck150, decrypt435, upo-late, forbidden,
    /// session21184 (an online send answered 21184: open a new session), reject-offline (offline
    /// invoices that are not technical corrections end 450, for a technical correction to repair).
    /// Scripted outages, in simulated seconds since the start: outage:START..END (Latarnia
    /// publishes FAILURE_START and FAILURE_END, KSeF answers 503 between) and
    /// silent-outage:START..END (Latarnia says nothing).
    /// Example: --fault unavailable:0.2@/invoices --fault upo-late::5000 --fault outage:60..660
    #[arg(long = "fault", value_name = "SCENARIO")]
    pub faults: Vec<String>,
    /// Seed for the fault dice (the same seed replays the same failures).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Simulated seconds per real second for rate-limit windows (3600: an hour in a second).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// How long invoices stay in status 100 and then in 150, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub delay_ms: u64,
    /// Switch KSeF's rate limits off.
    #[arg(long)]
    pub no_rate_limits: bool,
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let nip = Nip::parse(&args.nip).with_context(|| format!("--nip {}", args.nip))?;
    let token = args.token.clone().unwrap_or_else(|| ksef_sim::DEFAULT_TOKEN.to_owned());
    let faults = args
        .faults
        .iter()
        .map(|f| {
            f.parse::<Fault>()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--fault {f}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let delay = Duration::from_millis(args.delay_ms);
    let cfg = SimConfig {
        addr: args.addr,
        tokens: vec![SimToken {
            token: token.clone(),
            context: nip.clone(),
        }],
        accept_delay: delay,
        processing_delay: delay,
        time_scale: args.time_scale,
        rate_limits: if args.no_rate_limits {
            RateLimits::disabled()
        } else {
            RateLimits::production()
        },
        faults,
        seed: args.seed,
        ..SimConfig::default()
    };
    let sim = ksef_sim::try_start(cfg)
        .await
        .with_context(|| format!("starting the simulator on {}", args.addr))?;
    println!("KSeF simulator listening on {}", sim.api_url());
    println!("  context NIP: {nip}");
    if args.token.is_none() {
        // Only the built-in, public test token is ever printed.
        println!("  KSeF token:  {token}");
    }
    let active = sim.faults().active();
    if !active.is_empty() {
        println!("  faults:      {}", active.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "));
    }
    println!(
        "  ledger:      {}/_sim/ledger   faults: PUT {}/_sim/faults",
        sim.base_url(),
        sim.base_url()
    );
    println!();
    println!(
        "Try:  KSEF_TOKEN='{}' ksef-relay ksef auth-check --env {} --nip {nip}",
        if args.token.is_none() { token.as_str() } else { "<your token>" },
        sim.api_url()
    );
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("KSeF simulator stopped ({} invoices accepted).", sim.ledger().len());
    Ok(())
}
