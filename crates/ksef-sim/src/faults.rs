//! Named, seeded fault scenarios: the things the real TEST environment cannot do on demand.
//!
//! Request faults act in the HTTP layer before the handler runs (503, slow answers, dropped
//! connections, 429 bursts, a close that hangs); invoice faults decide how an accepted invoice
//! ends (550, stuck in 150, intermittent 435, UPO late). Each request fault may be narrowed to
//! paths containing `on`, so a test can break sending while auth keeps working. The dice are a
//! seeded RNG, so a scenario replays identically.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One fault. `rate` is the probability (0..=1) that a request or invoice is hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 503 Service Unavailable.
    Unavailable {
        rate: f64,
        #[serde(default)]
        on: Option<String>,
    },
    /// The request is processed, but the answer comes `delay_ms` later: past a client's timeout.
    Slow {
        rate: f64,
        delay_ms: u64,
        #[serde(default)]
        on: Option<String>,
    },
    /// The request reaches KSeF `delay_ms` late: the network or KSeF's front end holds it
    /// before the rate limiter counts it (a client that reserved its slot earlier meets it in a
    /// later window than it planned).
    Lag {
        rate: f64,
        delay_ms: u64,
        #[serde(default)]
        on: Option<String>,
    },
    /// The connection is reset before any answer.
    ConnectionReset {
        rate: f64,
        #[serde(default)]
        on: Option<String>,
    },
    /// HTTP 429 regardless of the real counters, with this Retry-After.
    TooManyRequests {
        rate: f64,
        retry_after_s: u64,
        #[serde(default)]
        on: Option<String>,
    },
    /// Closing a session closes it, but the answer comes `delay_ms` later. A close KSeF refuses
    /// answers at once: only a taken close is slow.
    CloseTimeout { delay_ms: u64 },
    /// Invoices end in status 550 (cancelled by the system; resend).
    Status550 { rate: f64 },
    /// Invoices stay in status 150: forever, or for `for_ms` and then end normally (as KSeF's
    /// incidents do: hours in 150, then a decision).
    StuckProcessing {
        rate: f64,
        #[serde(default)]
        for_ms: Option<u64>,
    },
    /// Invoices fail decryption with status 435 although they were encrypted right.
    Decryption435 { rate: f64 },
    /// Offline invoices (sent with `offlineMode: true`) that are not technical corrections end
    /// in status 450, a technical rejection: what a technical correction repairs (API-NOTES §10).
    RejectOffline { rate: f64 },
    /// The UPO is not available for `delay_ms` after acceptance (21178, storage 404).
    UpoNotReady { delay_ms: u64 },
    /// An online send answers 400 with exception 21184, "session temporarily unavailable"
    /// (since 2026, ksef-api#864): the invoice is not taken; open a new session and go on.
    SessionUnavailable { rate: f64 },
    /// HTTP 403 problem+json with this `reasonCode` (`ip-not-allowed`, `missing-permissions`,
    /// `security-service-blocked`...): an IP block or a permission taken away.
    Forbidden {
        rate: f64,
        reason_code: String,
        #[serde(default)]
        on: Option<String>,
    },
    /// A scripted KSeF outage from `start_s` to `end_s`, in simulated seconds since the
    /// simulator started (real seconds times its `time_scale`): every KSeF request answers 503
    /// between them. Announced: Latarnia publishes a FAILURE_START message (and its status says
    /// FAILURE) at the start and a FAILURE_END at the end; silent: Latarnia says nothing, as it
    /// has in real trouble.
    Outage { start_s: f64, end_s: f64, announced: bool },
}

impl Fault {
    /// The scenario's name, as the CLI and the admin endpoint spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Unavailable { .. } => "unavailable",
            Fault::Slow { .. } => "slow",
            Fault::Lag { .. } => "lag",
            Fault::ConnectionReset { .. } => "reset",
            Fault::TooManyRequests { .. } => "burst429",
            Fault::CloseTimeout { .. } => "close-timeout",
            Fault::Status550 { .. } => "status550",
            Fault::StuckProcessing { .. } => "stuck150",
            Fault::Decryption435 { .. } => "decrypt435",
            Fault::RejectOffline { .. } => "reject-offline",
            Fault::UpoNotReady { .. } => "upo-late",
            Fault::Forbidden { .. } => "forbidden",
            Fault::SessionUnavailable { .. } => "session21184",
            Fault::Outage { announced: true, .. } => "outage",
            Fault::Outage { announced: false, .. } => "silent-outage",
        }
    }
}

/// `name[:rate][:ms][@path]`, e.g. `unavailable:0.3`, `slow:1:5000@/invoices`, `stuck150:1`,
/// `upo-late::2000`. Missing numbers take a sensible default (rate 1, 5 s), except that
/// `stuck150` without a time is stuck forever (`stuck150:0.2:3000` is stuck for 3 s).
/// Outages: `outage:START..END` and `silent-outage:START..END`, in simulated seconds since the
/// simulator started (`outage:0..600`: the first ten simulated minutes).
impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((name, window)) = s.split_once(':').filter(|(n, _)| matches!(*n, "outage" | "silent-outage")) {
            let (start, end) = window
                .split_once("..")
                .ok_or_else(|| format!("fault {s:?}: write the window as START..END (simulated seconds since the start)"))?;
            let secs = |x: &str| -> Result<f64, String> {
                x.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("{x:?} is not a number of seconds in fault {s:?}"))
            };
            let (start_s, end_s) = (secs(start)?, secs(end)?);
            if end_s <= start_s {
                return Err(format!("fault {s:?}: the outage must end after it starts"));
            }
            return Ok(Fault::Outage {
                start_s,
                end_s,
                announced: name == "outage",
            });
        }
        let (spec, on) = match s.split_once('@') {
            Some((a, b)) => (a, Some(b.to_owned())),
            None => (s, None),
        };
        let mut it = spec.split(':');
        let name = it.next().unwrap_or_default();
        let num = |v: Option<&str>, default: f64| -> Result<f64, String> {
            match v {
                None | Some("") => Ok(default),
                Some(x) => x.parse::<f64>().map_err(|_| format!("{x:?} is not a number in fault {s:?}")),
            }
        };
        let rate = num(it.next(), 1.0)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("rate {rate} in fault {s:?} must be between 0 and 1"));
        }
        let third = it.next();
        let ms = num(third, 5000.0)? as u64;
        Ok(match name {
            "unavailable" => Fault::Unavailable { rate, on },
            "slow" => Fault::Slow { rate, delay_ms: ms, on },
            "lag" => Fault::Lag { rate, delay_ms: ms, on },
            "reset" => Fault::ConnectionReset { rate, on },
            "burst429" => Fault::TooManyRequests { rate, retry_after_s: (ms / 1000).max(1), on },
            "close-timeout" => Fault::CloseTimeout { delay_ms: ms },
            "status550" => Fault::Status550 { rate },
            "stuck150" => Fault::StuckProcessing {
                rate,
                for_ms: third.filter(|t| !t.is_empty()).map(|_| ms),
            },
            "decrypt435" => Fault::Decryption435 { rate },
            "reject-offline" => Fault::RejectOffline { rate },
            "session21184" => Fault::SessionUnavailable { rate },
            "upo-late" => Fault::UpoNotReady { delay_ms: ms },
            "forbidden" => Fault::Forbidden {
                rate,
                reason_code: "ip-not-allowed".into(),
                on,
            },
            other => {
                return Err(format!(
                    "unknown fault {other:?}; known: unavailable, slow, lag, reset, burst429, close-timeout, status550, stuck150, decrypt435, reject-offline, upo-late, forbidden, session21184, outage:START..END, silent-outage:START..END"
                ))
            }
        })
    }
}

/// What the HTTP layer must do with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestFault {
    Unavailable,
    Delay(Duration),
    /// Answer this much later, only when the request is taken (2xx): a close KSeF refuses
    /// (a declared part missing) answers at once.
    DelayIfTaken(Duration),
    /// Held this long before it is counted and handled.
    Lag(Duration),
    Reset,
    TooManyRequests {
        retry_after_s: u64,
    },
    Forbidden {
        reason_code: String,
    },
}

/// How an invoice that passed every check ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceFault {
    Status550,
    /// In 150 forever (None) or for this long.
    Stuck(Option<Duration>),
    Decryption435,
    /// A technical rejection (450) of an offline invoice.
    RejectOffline,
}

/// The switch tests and the admin endpoint flip. Cheap to clone; all clones share the state.
#[derive(Clone)]
pub struct FaultSwitch {
    inner: Arc<Mutex<(Vec<Fault>, StdRng)>>,
    /// When the simulator started: scripted outages count from here.
    started: std::time::Instant,
    /// Simulated seconds per real second (the simulator's `time_scale`).
    time_scale: f64,
}

impl FaultSwitch {
    pub fn new(faults: Vec<Fault>, seed: u64) -> Self {
        FaultSwitch {
            inner: Arc::new(Mutex::new((faults, StdRng::seed_from_u64(seed)))),
            started: std::time::Instant::now(),
            time_scale: 1.0,
        }
    }

    /// Scripted outages count simulated seconds: `scale` per real second since `started`.
    pub fn with_clock(mut self, started: std::time::Instant, scale: f64) -> Self {
        self.started = started;
        self.time_scale = scale.max(1e-6);
        self
    }

    /// Simulated seconds since the simulator started.
    pub fn sim_elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.time_scale
    }

    /// The real instant `sim_s` simulated seconds after the start.
    pub fn real_at(&self, sim_s: f64) -> std::time::Instant {
        self.started + Duration::from_secs_f64(sim_s / self.time_scale)
    }

    /// Whether a scripted outage covers now (every KSeF request answers 503).
    pub fn in_outage(&self) -> bool {
        let t = self.sim_elapsed_s();
        self.inner
            .lock()
            .expect("fault lock")
            .0
            .iter()
            .any(|f| matches!(f, Fault::Outage { start_s, end_s, .. } if *start_s <= t && t < *end_s))
    }

    /// Replaces the active faults and reseeds the dice.
    pub fn set(&self, faults: Vec<Fault>, seed: u64) {
        *self.inner.lock().expect("fault lock") = (faults, StdRng::seed_from_u64(seed));
    }

    pub fn clear(&self) {
        self.inner.lock().expect("fault lock").0.clear();
    }

    pub fn active(&self) -> Vec<Fault> {
        self.inner.lock().expect("fault lock").0.clone()
    }

    /// Rolls the dice for one request to `path`.
    pub fn for_request(&self, path: &str, is_close: bool) -> Vec<RequestFault> {
        let outage = self.in_outage();
        let mut g = self.inner.lock().expect("fault lock");
        let (faults, rng) = &mut *g;
        let mut out = Vec::new();
        let applies = |on: &Option<String>| on.as_deref().is_none_or(|p| path.contains(p));
        for f in faults.iter() {
            match f {
                Fault::Unavailable { rate, on } if applies(on) && rng.random_bool(*rate) => out.push(RequestFault::Unavailable),
                Fault::Slow { rate, delay_ms, on } if applies(on) && rng.random_bool(*rate) => {
                    out.push(RequestFault::Delay(Duration::from_millis(*delay_ms)))
                }
                Fault::Lag { rate, delay_ms, on } if applies(on) && rng.random_bool(*rate) => {
                    out.push(RequestFault::Lag(Duration::from_millis(*delay_ms)))
                }
                Fault::ConnectionReset { rate, on } if applies(on) && rng.random_bool(*rate) => out.push(RequestFault::Reset),
                Fault::TooManyRequests { rate, retry_after_s, on } if applies(on) && rng.random_bool(*rate) => {
                    out.push(RequestFault::TooManyRequests {
                        retry_after_s: *retry_after_s,
                    })
                }
                Fault::Forbidden { rate, reason_code, on } if applies(on) && rng.random_bool(*rate) => out.push(RequestFault::Forbidden {
                    reason_code: reason_code.clone(),
                }),
                Fault::CloseTimeout { delay_ms } if is_close => out.push(RequestFault::DelayIfTaken(Duration::from_millis(*delay_ms))),
                _ => {}
            }
        }
        if outage {
            out.insert(0, RequestFault::Unavailable);
        }
        out
    }

    /// Rolls the dice for one online send: whether its session is "temporarily unavailable".
    pub fn session_unavailable(&self) -> bool {
        let mut g = self.inner.lock().expect("fault lock");
        let (faults, rng) = &mut *g;
        let rates: Vec<f64> = faults
            .iter()
            .filter_map(|f| match f {
                Fault::SessionUnavailable { rate } => Some(*rate),
                _ => None,
            })
            .collect();
        rates.into_iter().any(|rate| rng.random_bool(rate))
    }

    /// Rolls the dice for one invoice that passed every check. `offline_original`: sent with
    /// `offlineMode: true` and not a technical correction (only those can be rejected by
    /// [`Fault::RejectOffline`]).
    pub fn for_invoice(&self, offline_original: bool) -> Option<InvoiceFault> {
        let mut g = self.inner.lock().expect("fault lock");
        let (faults, rng) = &mut *g;
        for f in faults.iter() {
            let hit = match f {
                Fault::RejectOffline { rate } if offline_original => rng.random_bool(*rate).then_some(InvoiceFault::RejectOffline),
                Fault::Status550 { rate } => rng.random_bool(*rate).then_some(InvoiceFault::Status550),
                Fault::StuckProcessing { rate, for_ms } => rng
                    .random_bool(*rate)
                    .then_some(InvoiceFault::Stuck(for_ms.map(Duration::from_millis))),
                Fault::Decryption435 { rate } => rng.random_bool(*rate).then_some(InvoiceFault::Decryption435),
                _ => None,
            };
            if hit.is_some() {
                return hit;
            }
        }
        None
    }

    /// How long after acceptance the UPO stays unavailable.
    pub fn upo_delay(&self) -> Duration {
        let g = self.inner.lock().expect("fault lock");
        g.0.iter()
            .filter_map(|f| match f {
                Fault::UpoNotReady { delay_ms } => Some(Duration::from_millis(*delay_ms)),
                _ => None,
            })
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_parse_with_defaults_and_paths() {
        assert_eq!(
            "unavailable:0.3".parse::<Fault>().unwrap(),
            Fault::Unavailable { rate: 0.3, on: None }
        );
        assert_eq!(
            "slow:1:2500@/invoices".parse::<Fault>().unwrap(),
            Fault::Slow {
                rate: 1.0,
                delay_ms: 2500,
                on: Some("/invoices".into())
            }
        );
        assert_eq!(
            "stuck150".parse::<Fault>().unwrap(),
            Fault::StuckProcessing { rate: 1.0, for_ms: None }
        );
        assert_eq!(
            "stuck150:0.2:3000".parse::<Fault>().unwrap(),
            Fault::StuckProcessing {
                rate: 0.2,
                for_ms: Some(3000)
            }
        );
        assert!("unavailable:1.5".parse::<Fault>().is_err());
        assert!("meteor".parse::<Fault>().unwrap_err().contains("known"));
        // Every name round-trips through FromStr.
        for f in [
            "unavailable",
            "slow",
            "lag",
            "reset",
            "burst429",
            "close-timeout",
            "status550",
            "stuck150",
            "decrypt435",
            "reject-offline",
            "upo-late",
        ] {
            assert_eq!(f.parse::<Fault>().unwrap().name(), f);
        }
    }

    #[test]
    fn outages_parse_as_windows_of_simulated_seconds_and_answer_503_inside_them() {
        assert_eq!(
            "outage:0..600".parse::<Fault>().unwrap(),
            Fault::Outage {
                start_s: 0.0,
                end_s: 600.0,
                announced: true
            }
        );
        let silent = "silent-outage:60..120.5".parse::<Fault>().unwrap();
        assert_eq!(
            silent,
            Fault::Outage {
                start_s: 60.0,
                end_s: 120.5,
                announced: false
            }
        );
        assert_eq!(silent.name(), "silent-outage");
        assert!("outage:10..5".parse::<Fault>().is_err());
        assert!("outage:10".parse::<Fault>().is_err());
        assert!("silent-outage:x..5".parse::<Fault>().is_err());

        // Started an hour ago at 1x: 3,600 simulated seconds have passed.
        let hour_ago = std::time::Instant::now() - Duration::from_secs(3600);
        let inside = FaultSwitch::new(vec!["outage:3000..4000".parse().unwrap()], 1).with_clock(hour_ago, 1.0);
        assert!(inside.in_outage());
        assert_eq!(
            inside.for_request("/v2/security/public-key-certificates", false),
            vec![RequestFault::Unavailable]
        );
        let over = FaultSwitch::new(vec!["outage:0..3000".parse().unwrap()], 1).with_clock(hour_ago, 1.0);
        assert!(!over.in_outage());
        assert!(over.for_request("/v2/auth/challenge", false).is_empty());
        // At 2x the same hour is 7,200 simulated seconds.
        let scaled = FaultSwitch::new(vec!["silent-outage:7000..8000".parse().unwrap()], 1).with_clock(hour_ago, 2.0);
        assert!(scaled.in_outage());
    }

    #[test]
    fn the_same_seed_replays_the_same_dice() {
        let roll = |seed| {
            let s = FaultSwitch::new(vec![Fault::Unavailable { rate: 0.5, on: None }], seed);
            (0..64).map(|_| !s.for_request("/v2/x", false).is_empty()).collect::<Vec<_>>()
        };
        assert_eq!(roll(7), roll(7));
        assert_ne!(roll(7), roll(8));
        let hits = roll(7).into_iter().filter(|h| *h).count();
        assert!((16..=48).contains(&hits), "rate 0.5 hit {hits} of 64");
    }

    #[test]
    fn path_filters_narrow_request_faults() {
        let s = FaultSwitch::new(
            vec![Fault::ConnectionReset {
                rate: 1.0,
                on: Some("/invoices".into()),
            }],
            1,
        );
        assert!(s.for_request("/v2/auth/challenge", false).is_empty());
        assert_eq!(s.for_request("/v2/sessions/online/X/invoices", false), vec![RequestFault::Reset]);
    }
}
