//! The domain crate's hard boundary: no AWS, no HTTP, no Lambda, no async runtime in its
//! normal dependency tree (`cargo tree -p relay-domain -e normal`).

use std::process::Command;

#[test]
fn the_domain_crate_depends_on_no_infrastructure() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "relay-domain", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        crates.contains(&"relay-domain") && crates.contains(&"serde"),
        "unexpected cargo tree output: {tree}"
    );
    let forbidden = ["aws-", "aws_", "reqwest", "hyper", "lambda", "tokio", "axum", "http"];
    let leaks: Vec<&&str> = crates.iter().filter(|c| forbidden.iter().any(|f| c.starts_with(f))).collect();
    assert!(leaks.is_empty(), "relay-domain must not depend on {leaks:?}");
}

/// Every Lambda function logs through the one shared set-up (`relay_lambda::init_logging` or
/// `relay_observe::logging::init_lambda`: JSON with the document's span, `RUST_LOG`, the EMF
/// sink), which the log-hygiene tests exercise; none builds a subscriber of its own.
#[test]
fn every_function_logs_through_the_shared_set_up() {
    let functions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&functions).unwrap().flatten() {
        let main = entry.path().join("src/main.rs");
        let Ok(code) = std::fs::read_to_string(&main) else { continue };
        seen += 1;
        assert!(
            code.contains("relay_lambda::init_logging()") || code.contains("relay_observe::logging::init_lambda()"),
            "{} does not use the shared logging set-up",
            main.display()
        );
        assert!(!code.contains("tracing_subscriber"), "{} builds its own subscriber", main.display());
    }
    assert_eq!(seen, 7, "intake, send, send-batch, status, dlq-replay, report, sweeper");
}
