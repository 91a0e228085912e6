//! Shared by the observability tests: running the real binary over a batch of files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `ksef-relay ARGS` with the environment additions `env`.
pub fn ksef_relay(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ksef-relay"));
    cmd.args(args)
        .env_remove("KSEF_RELAY_AWS_ENDPOINT")
        .env_remove("DOCUMENTS_TABLE")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksef-relay-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef/samples")
}

/// The official sample `name` with its invoice number made unique (`-{tag}` appended to P_2),
/// so samples that share sample 1's number each travel on their own.
pub fn sample_with_number(name: &str, tag: &str) -> String {
    let text = std::fs::read_to_string(samples_dir().join(name)).unwrap();
    let start = text.find("<P_2>").unwrap() + "<P_2>".len();
    let end = start + text[start..].find("</P_2>").unwrap();
    format!("{}{}-{tag}{}", &text[..start], &text[start..end], &text[end..])
}

/// A batch directory: every official sample with a unique number, plus `extra` files.
pub fn batch(dir: &Path, extra: &[(&str, String)]) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(samples_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".xml") {
            continue;
        }
        let tag = name.trim_end_matches(".xml").rsplit('_').next().unwrap().to_owned();
        let erp = format!("ERP-{tag}.xml");
        std::fs::write(dir.join(&erp), sample_with_number(&name, &tag)).unwrap();
        names.push(erp);
    }
    for (name, body) in extra {
        std::fs::write(dir.join(name), body).unwrap();
        names.push((*name).to_owned());
    }
    names.sort();
    names
}

/// An invoice the relay's validation rejects: sample 1 under its own number with a total that is
/// not a number; the bad value carries markup, to show the page escapes what documents say.
pub fn invalid_invoice() -> String {
    let text = sample_with_number("FA_3_Przykład_1.xml", "BAD");
    text.replacen("<P_15>2051</P_15>", "<P_15>&lt;b id=\"pwn\"&gt;12&lt;/b&gt;</P_15>", 1)
}

/// The documents `ksef-relay run` stored (its `store.json`).
pub fn stored(out: &Path) -> Vec<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(out.join("store.json")).unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub fn by_erp<'a>(docs: &'a [serde_json::Value], erp: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["record"]["erp_document_id"] == erp)
        .unwrap_or_else(|| panic!("{erp} not stored"))
}
