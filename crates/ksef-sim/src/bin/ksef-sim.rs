//! `ksef-sim`: the KSeF simulator as a standalone server (the CLI's `ksef-relay sim` does the same).

use std::time::Duration;

use ksef_sim::{Fault, SimConfig, SimToken};

fn usage() -> ! {
    eprintln!(
        "usage: ksef-sim [--addr 127.0.0.1:8080] [--token TOKEN --nip NIP] [--fault NAME[:RATE][:MS][@PATH]]... [--seed N] [--time-scale X] [--delay-ms N] [--no-rate-limits]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut cfg = SimConfig {
        addr: "127.0.0.1:8080".parse()?,
        ..SimConfig::default()
    };
    let mut args = std::env::args().skip(1);
    let mut token: Option<String> = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--addr" => cfg.addr = val().parse()?,
            "--token" => token = Some(val()),
            "--nip" => {
                let nip = relay_domain::Nip::parse(&val())?;
                cfg.tokens = vec![SimToken {
                    token: token.clone().unwrap_or_else(|| ksef_sim::DEFAULT_TOKEN.into()),
                    context: nip,
                }];
            }
            "--fault" => cfg.faults.push(val().parse::<Fault>().map_err(anyhow::Error::msg)?),
            "--seed" => cfg.seed = val().parse()?,
            "--time-scale" => cfg.time_scale = val().parse()?,
            "--delay-ms" => {
                let d = Duration::from_millis(val().parse()?);
                (cfg.accept_delay, cfg.processing_delay) = (d, d);
            }
            "--no-rate-limits" => cfg.rate_limits = ksef_sim::RateLimits::disabled(),
            _ => usage(),
        }
    }
    if let (Some(t), Some(first)) = (token, cfg.tokens.first_mut()) {
        first.token = t;
    }
    let sim = ksef_sim::try_start(cfg).await?;
    println!("KSeF simulator listening: {}", sim.api_url());
    sim.wait().await;
    Ok(())
}
