//! What `ksef-relay run` leaves for people besides its table: the store's documents as
//! `store.json` (so `ksef-relay status ID` can tell a document's story after the run), the status
//! page `status.html`, this week's report under `weekly/`, and the EMF metric lines the run
//! emitted in `metrics.jsonl` (what CloudWatch would receive from the functions).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use relay_domain::ports::{DocumentStore, SharedCache};
use relay_domain::Nip;
use relay_report::metrics::Levels;
use relay_report::snapshot::{self, Snapshot};
use relay_report::status_page::{self, PageContext};
use relay_report::weekly::{Week, WeeklyReport};

/// The store snapshot's file name under `--out`.
pub const STORE_FILE: &str = "store.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const STATUS_PAGE_FILE: &str = "status.html";

/// Sends EMF lines to `out/metrics.jsonl` for the rest of the process (a fresh file per run).
pub fn metrics_to_file(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(METRICS_FILE);
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    relay_observe::emf::set_sink(Box::new(file));
    Ok(path)
}

pub struct Written {
    pub store: PathBuf,
    pub status_page: PathBuf,
    pub weekly_html: PathBuf,
    pub weekly_csv: PathBuf,
    pub summary: String,
}

/// Writes the store snapshot, the status page (with the sellers' KSeF logins from the facts
/// recorded in `credential_facts`) and the week's report under `out`. `local_file`
/// tells which object keys the run wrote as files beside the page (for links).
pub async fn write(
    store: &dyn DocumentStore,
    (credential_facts, sellers): (&dyn SharedCache, &[Nip]),
    out: &Path,
    source: &str,
    local_file: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<Written> {
    let all = snapshot::take_window(store, DateTime::<Utc>::UNIX_EPOCH, now + chrono::Duration::seconds(1), usize::MAX).await?;
    let store_path = out.join(STORE_FILE);
    std::fs::write(&store_path, serde_json::to_vec_pretty(&all)?).with_context(|| format!("writing {}", store_path.display()))?;

    let snap = Snapshot::of(all.clone(), now);
    let levels = Levels::compute(&snap, chrono::Duration::hours(4));
    levels.emit(now);
    let credentials = relay_report::credentials::read(credential_facts, sellers, now).await?;
    relay_report::credentials::emit(&credentials, now);
    let availability = relay_report::availability::read(credential_facts, now).await?;
    let links = status_page::relative_links(local_file);
    let page = status_page::render(
        &snap,
        &PageContext {
            title: "ksef-relay status (local run)",
            source,
            levels: &levels,
            links: &links,
            credentials: &credentials,
            availability: &availability,
        },
    );
    let page_path = out.join(STATUS_PAGE_FILE);
    std::fs::write(&page_path, page).with_context(|| format!("writing {}", page_path.display()))?;

    let week = Week::containing(now);
    let report = WeeklyReport::build(&all, week, now).with_availability(availability);
    let dir = out.join("weekly");
    std::fs::create_dir_all(&dir)?;
    let weekly_html = dir.join(format!("{}.html", week.label()));
    let weekly_csv = dir.join(format!("{}.csv", week.label()));
    std::fs::write(&weekly_html, report.html()).with_context(|| format!("writing {}", weekly_html.display()))?;
    std::fs::write(&weekly_csv, report.csv()).with_context(|| format!("writing {}", weekly_csv.display()))?;
    Ok(Written {
        store: store_path,
        status_page: page_path,
        summary: report.summary(&weekly_html.display().to_string()),
        weekly_html,
        weekly_csv,
    })
}
