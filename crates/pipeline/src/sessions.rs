//! KSeF contexts: one authenticated client per seller NIP, and the online session it sends in.
//!
//! A session is reused until shortly before its `validUntil` (12 h), and dropped when KSeF says
//! it is closed or broken (NeedsNewSession). Within one process this is shared by every task;
//! sharing across Lambda instances through the store's shared cache is the next step (the
//! session's AES key must travel with it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ksef_client::{KsefClient, OnlineSession};
use relay_domain::{ContentHash, ErrorClass, ErrorSource, Failure, KsefReference, Nip};
use tokio::sync::Mutex;

/// Stop using a session this long before KSeF's validUntil.
const SESSION_MARGIN: Duration = Duration::from_secs(15 * 60);

struct Context {
    client: Arc<KsefClient>,
    session: Mutex<Option<Arc<OnlineSession>>>,
}

/// The clients and open sessions, per seller NIP.
#[derive(Default)]
pub struct KsefContexts {
    contexts: HashMap<Nip, Context>,
}

impl KsefContexts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the client that authenticates in `seller`'s context.
    pub fn with(mut self, seller: Nip, client: KsefClient) -> Self {
        self.contexts.insert(
            seller,
            Context {
                client: Arc::new(client),
                session: Mutex::new(None),
            },
        );
        self
    }

    fn context(&self, seller: &Nip) -> Result<&Context, Failure> {
        self.contexts.get(seller).ok_or_else(|| {
            Failure::new(
                ErrorClass::Permanent,
                ErrorSource::Relay,
                format!("no KSeF credentials are configured for seller NIP {seller}"),
            )
            .with_code("NO_CREDENTIALS")
        })
    }

    pub fn client(&self, seller: &Nip) -> Result<Arc<KsefClient>, Failure> {
        Ok(self.context(seller)?.client.clone())
    }

    /// The open session for `seller`, opening one if there is none or it is about to expire.
    pub async fn session(&self, seller: &Nip, now: DateTime<Utc>) -> Result<Arc<OnlineSession>, Failure> {
        let ctx = self.context(seller)?;
        let mut slot = ctx.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if s.valid_until - chrono::Duration::from_std(SESSION_MARGIN).expect("small") > now {
                return Ok(s.clone());
            }
        }
        let opened = Arc::new(ctx.client.open_online_session().await?);
        *slot = Some(opened.clone());
        Ok(opened)
    }

    /// Forgets `reference` if it is the current session (KSeF said it is closed or broken).
    pub async fn drop_session(&self, seller: &Nip, reference: &str) {
        if let Ok(ctx) = self.context(seller) {
            let mut slot = ctx.session.lock().await;
            if slot.as_ref().is_some_and(|s| s.reference == reference) {
                *slot = None;
            }
        }
    }

    /// Our invoice among `session`'s live ones (KSeF processing or accepted it), by content hash.
    /// A copy KSeF cancelled (550, 405) does not count: it was not kept.
    pub async fn find_live_invoice(
        &self,
        seller: &Nip,
        session: &KsefReference,
        hash: &ContentHash,
    ) -> Result<Option<KsefReference>, Failure> {
        let client = self.client(seller)?;
        let want = hash.to_base64();
        let list = client.session_invoices(session.as_str()).await?;
        let Some(found) = list
            .into_iter()
            .find(|i| i.invoice_hash == want && matches!(i.status.code, 100 | 150 | 200))
        else {
            return Ok(None);
        };
        KsefReference::parse(&found.reference_number).map(Some).map_err(|e| {
            Failure::new(
                ErrorClass::Transient,
                ErrorSource::Relay,
                format!("KSeF listed our invoice under an unreadable reference: {e}"),
            )
            .with_code("BAD_REFERENCE")
        })
    }

    /// Closes every open session (KSeF then prepares the session UPO); failures are logged.
    pub async fn close_all(&self) {
        for (seller, ctx) in &self.contexts {
            if let Some(s) = ctx.session.lock().await.take() {
                if let Err(f) = ctx.client.close_online_session(&s.reference).await {
                    tracing::warn!(seller_nip = %seller, session = %s.reference, error = %f, "closing the session failed");
                }
            }
        }
    }
}
