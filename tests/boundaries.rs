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
