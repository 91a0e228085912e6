//! The status page in a real headless browser (Debian's chromium, driven over WebDriver by
//! chromedriver): it loads from a file with the network closed, lists the documents, and the
//! search finds one; markup inside a document's messages stays text. A screenshot is kept in
//! `target/test-artifacts/status-page.png`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`scripts/setup.sh` installs the Debian
//! packages `chromium` and `chromium-driver` when run as root). Without them the test fails and
//! says so: it never passes without having looked at the page.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: this test drives a real headless browser. Install it with \
                 `sudo scripts/setup.sh` (or `sudo apt-get install chromium chromium-driver` on Debian/Ubuntu); \
                 the Debian package {package} provides it."
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer on {base}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver {
            child,
            base,
            http,
            session: None,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = match &self.session {
            Some(s) => format!("{}/session/{s}{path}", self.base),
            None => format!("{}{path}", self.base),
        };
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{url}: {status} {v}");
        v["value"].clone()
    }

    async fn open_session(&mut self, profile: &Path) {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let v = self.call(reqwest::Method::POST, "/session", Some(caps)).await;
        self.session = Some(v["sessionId"].as_str().expect("a session id").to_owned());
    }

    async fn script(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []})))
            .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned()
    }
}

const VISIBLE_ERP_IDS: &str = "return Array.from(document.querySelectorAll('tr.doc'))\
    .filter(function(r){return r.offsetParent!==null;})\
    .map(function(r){return r.querySelector('.erp').textContent;});";

fn artifacts_dir() -> PathBuf {
    // target/<profile>/deps/<test binary> -> target/test-artifacts
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("test-artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_loads_lists_and_searches_in_a_real_browser() {
    let mut driver = Driver::start().await;

    let dir = scratch("browser");
    let input = dir.join("in");
    let out = dir.join("out");
    std::fs::create_dir_all(&input).unwrap();
    for (name, tag) in [
        ("FA_3_Przykład_1.xml", "1"),
        ("FA_3_Przykład_2.xml", "2"),
        ("FA_3_Przykład_10.xml", "10"),
    ] {
        std::fs::write(input.join(format!("ERP-{tag}.xml")), sample_with_number(name, tag)).unwrap();
    }
    std::fs::write(input.join("ERP-BAD.xml"), invalid_invoice()).unwrap();
    let ran = ksef_relay(&["run", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.text());
    let docs = stored(&out);
    let accepted = by_erp(&docs, "ERP-2");
    assert_eq!(accepted["record"]["state"], "ACCEPTED");
    let ksef_number = accepted["record"]["ksef"]["ksef_number"].as_str().unwrap().to_owned();
    let trace_id = by_erp(&docs, "ERP-10")["record"]["trace_id"].as_str().unwrap().to_owned();

    let page = out.join("status.html").canonicalize().unwrap();
    let started = Instant::now();
    driver.open_session(&dir.join("profile")).await;
    driver
        .call(
            reqwest::Method::POST,
            "/url",
            Some(json!({"url": format!("file://{}", page.display())})),
        )
        .await;
    let title = driver.call(reqwest::Method::GET, "/title", None).await;
    assert_eq!(title, "ksef-relay status (local run)");

    // Every document is listed, and the rejected one comes first.
    let mut listed: Vec<String> = serde_json::from_value(driver.script(VISIBLE_ERP_IDS).await).unwrap();
    assert_eq!(listed[0], "ERP-BAD", "rejected documents lead: {listed:?}");
    listed.sort();
    assert_eq!(listed, ["ERP-1", "ERP-10", "ERP-2", "ERP-BAD"]);
    // The markup inside the rejected invoice's value is text, not an element.
    assert_eq!(driver.script("return document.getElementById('pwn') === null;").await, true);

    // Typing in the search narrows the list: by KSeF number, by trace id, by ERP id.
    let search = driver.element("#search").await;
    for (query, expected) in [
        (ksef_number.as_str(), "ERP-2"),
        (trace_id.as_str(), "ERP-10"),
        ("erp-bad", "ERP-BAD"),
    ] {
        driver
            .call(reqwest::Method::POST, &format!("/element/{search}/clear"), Some(json!({})))
            .await;
        driver
            .call(
                reqwest::Method::POST,
                &format!("/element/{search}/value"),
                Some(json!({"text": query})),
            )
            .await;
        let shown: Vec<String> = serde_json::from_value(driver.script(VISIBLE_ERP_IDS).await).unwrap();
        assert_eq!(shown, [expected], "search {query:?}");
    }
    let shown = driver.script("return document.getElementById('shown').textContent;").await;
    assert_eq!(shown, "1");

    // Keep a picture of the page with the rejected document found.
    let png = driver.call(reqwest::Method::GET, "/screenshot", None).await;
    let png = base64_decode(png.as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("status-page.png"), &png).unwrap();
    eprintln!(
        "status page: {} bytes, browser checks took {:?}; screenshot {}",
        std::fs::metadata(&page).unwrap().len(),
        started.elapsed(),
        artifacts.join("status-page.png").display()
    );

    driver.call(reqwest::Method::DELETE, "", None).await;
    std::fs::remove_dir_all(&dir).ok();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
