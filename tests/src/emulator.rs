//! The AWS emulator for tests: moto in server mode, reached over HTTP on loopback.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use relay_aws::settings::AwsSettings;
use relay_aws::AwsClients;

/// Set by `make test` to the URL of the moto server it started.
pub const ENDPOINT_ENV: &str = "KSEF_RELAY_TEST_AWS_ENDPOINT";
pub const REGION: &str = "eu-central-1";

static ENDPOINT: OnceLock<String> = OnceLock::new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("moto_server did not start listening on 127.0.0.1:{port} within 30 s");
}

/// Starts moto's server (`scripts/moto_server.py`: moto with its SQS delete race fixed) from a
/// thread that lives as long as the test process; the server gets SIGTERM when that thread (and
/// so the process) ends.
fn start_moto() -> String {
    let bin = repo_root().join(".venv/bin/python");
    let script = repo_root().join("scripts/moto_server.py");
    assert!(
        bin.exists(),
        "the AWS emulator is not installed: run `make test` (it installs moto into .venv), or set {ENDPOINT_ENV} to a running moto server"
    );
    let port = free_port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("moto-server".into())
        .spawn(move || {
            let mut cmd = Command::new(&bin);
            cmd.arg(&script)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; this only asks the kernel to signal the child
            // when this (never-ending) thread's process goes away.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("start moto_server");
            tx.send(()).expect("report start");
            let _ = child.wait();
        })
        .expect("spawn the moto thread");
    rx.recv().expect("moto thread started");
    wait_until_listening(port);
    format!("http://127.0.0.1:{port}")
}

/// The emulator's URL, starting it on first use if `make test` did not.
pub fn endpoint() -> &'static str {
    ENDPOINT.get_or_init(|| {
        std::env::var(ENDPOINT_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(start_moto)
    })
}

/// SDK clients pointed at the emulator.
pub async fn clients() -> AwsClients {
    AwsClients::new(&AwsSettings {
        region: REGION.into(),
        endpoint_url: Some(endpoint().to_owned()),
    })
    .await
}
