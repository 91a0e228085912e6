//! The client: configuration, the one request path every call takes (limiter, bearer,
//! warnings, failure mapping, one retry after a 401), public keys and authentication.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use relay_domain::{ErrorClass, ErrorSource, Failure, Nip};
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER};
use reqwest::Method;
use rsa::RsaPublicKey;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::crypto;
use crate::environment::Environment;
use crate::failure_map::{auth_outcome, from_response, from_transport, unreadable};
use crate::limiter::{ClientLimits, EndpointGroup, Limiter};
use crate::model::{AuthInit, AuthRefresh, AuthStatus, AuthTokens, Challenge, PublicKeyCertificate};
use crate::secret::{BearerToken, KsefToken};

pub type Result<T> = std::result::Result<T, Failure>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Settings, read once. `ClientConfig::new(env)` gives production-sensible values.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub environment: Environment,
    /// Per-request timeout; past it the request counts as a transient failure.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub limits: ClientLimits,
    /// Refresh the access token this long before it expires.
    pub refresh_margin: Duration,
    pub auth_poll_interval: Duration,
    pub auth_poll_timeout: Duration,
    /// Public keys are fetched again after this long (and at once on 21470).
    pub key_refresh_interval: Duration,
    /// Ask for errors as problem+json (`X-Error-Format: problem-details`); KSeF marks its
    /// default `ExceptionResponse` deprecated. Both forms map to the same failures.
    pub problem_details: bool,
    /// The limits shared by every instance calling KSeF for this context (issue 12). With one,
    /// the process limiter steps aside, a wait longer than the governor's `max_inline_wait`
    /// fails the call as `RateLimited` (the caller's message waits, not the process), and a
    /// 429 stops the whole fleet for that group. None: the process limiter, which waits in
    /// place (fine for the CLI, not for a Lambda).
    pub governor: Option<crate::governor::FleetGovernor>,
}

impl ClientConfig {
    pub fn new(environment: Environment) -> ClientConfig {
        ClientConfig {
            environment,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            limits: ClientLimits::official(),
            refresh_margin: Duration::from_secs(60),
            auth_poll_interval: Duration::from_secs(1),
            auth_poll_timeout: Duration::from_secs(30),
            key_refresh_interval: Duration::from_secs(6 * 3600),
            problem_details: false,
            governor: None,
        }
    }
}

/// How the client logs in.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A KSeF token for a NIP context.
    Token { context: Nip, token: KsefToken },
    /// A certificate (a KSeF certificate of type Authentication in production) signing a XAdES
    /// `AuthTokenRequest` for a NIP context.
    Certificate {
        context: Nip,
        identity: crate::xades::SigningIdentity,
        subject: crate::xades::SubjectIdentifierType,
    },
}

/// Access and refresh tokens from one authentication.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access: BearerToken,
    pub refresh: BearerToken,
    pub auth_reference: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SharedTokens {
    access: String,
    access_valid_until: DateTime<Utc>,
    refresh: String,
    refresh_valid_until: DateTime<Utc>,
    auth_reference: String,
}

impl TokenSet {
    /// The tokens as JSON for a shared cache (one login for many function instances). The
    /// result is a secret: keep it only in a store meant for secrets, never in logs.
    pub fn export_secret_json(&self) -> String {
        serde_json::to_string(&SharedTokens {
            access: self.access.expose_secret().to_owned(),
            access_valid_until: self.access.valid_until,
            refresh: self.refresh.expose_secret().to_owned(),
            refresh_valid_until: self.refresh.valid_until,
            auth_reference: self.auth_reference.clone(),
        })
        .expect("plain strings serialize")
    }

    /// The inverse of [`TokenSet::export_secret_json`].
    pub fn import_secret_json(json: &str) -> Result<TokenSet> {
        let t: SharedTokens = serde_json::from_str(json)
            .map_err(|e| Failure::new(ErrorClass::Permanent, ErrorSource::Relay, format!("unreadable shared tokens: {e}")))?;
        Ok(TokenSet {
            access: BearerToken::new(t.access, t.access_valid_until),
            refresh: BearerToken::new(t.refresh, t.refresh_valid_until),
            auth_reference: t.auth_reference,
        })
    }
}

/// A public key KSeF publishes, parsed.
#[derive(Clone)]
pub struct PublicKey {
    pub public_key_id: String,
    pub usage: Vec<String>,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    pub key: RsaPublicKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("public_key_id", &self.public_key_id)
            .field("usage", &self.usage)
            .field("valid_to", &self.valid_to)
            .finish()
    }
}

/// Which of KSeF's two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    KsefTokenEncryption,
    SymmetricKeyEncryption,
}

impl KeyUsage {
    fn as_str(self) -> &'static str {
        match self {
            KeyUsage::KsefTokenEncryption => "KsefTokenEncryption",
            KeyUsage::SymmetricKeyEncryption => "SymmetricKeyEncryption",
        }
    }
}

/// Picks the certificate for a usage that is valid now; of several, the latest `validFrom`.
pub fn pick_key(keys: &[PublicKey], usage: KeyUsage, now: DateTime<Utc>) -> Option<&PublicKey> {
    keys.iter()
        .filter(|k| k.usage.iter().any(|u| u == usage.as_str()) && k.valid_from <= now && now < k.valid_to)
        .max_by_key(|k| k.valid_from)
}

pub(crate) struct Inner {
    pub http: reqwest::Client,
    pub base: String,
    pub cfg: ClientConfig,
    limiter: Limiter,
    keys: tokio::sync::Mutex<Option<(Vec<PublicKey>, tokio::time::Instant)>>,
    /// Replaced when a refused login finds renewed ones ([`KsefClient::with_renewal`]).
    credentials: std::sync::Mutex<Option<Credentials>>,
    renewal: Option<CredentialsRenewal>,
    tokens: tokio::sync::Mutex<Option<TokenSet>>,
}

/// Asked, when KSeF refuses a login, for credentials to try instead: the owner's secret may
/// have been rotated since the client was made (a new certificate, the old one revoked or
/// expired). `None`: nothing newer, the refusal stands.
pub type CredentialsRenewal =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Credentials>> + Send>> + Send + Sync>;

/// A KSeF API 2.0 client. Cheap to clone; clones share the token cache, keys and limiter.
#[derive(Clone)]
pub struct KsefClient {
    pub(crate) inner: Arc<Inner>,
}

/// One HTTP request as the client describes it.
pub(crate) struct Call<'a> {
    pub operation: &'a str,
    pub group: EndpointGroup,
    pub method: Method,
    pub path: String,
    pub body: Option<Body>,
    pub auth: Auth,
    pub headers: Vec<(&'static str, String)>,
}

pub(crate) enum Body {
    Json(serde_json::Value),
    Xml(String),
}

#[derive(Clone)]
pub(crate) enum Auth {
    None,
    /// The access token from the cache (refreshed or re-obtained as needed).
    Access,
    /// A specific bearer (authentication or refresh token).
    Bearer(BearerToken),
}

/// A successful answer.
pub(crate) struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self, operation: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| unreadable(operation, "JSON answer", e))
    }
}

/// One EMF line per call: latency and outcome per endpoint (relay-observe's technical level).
pub(crate) fn record_call(operation: &str, started: std::time::Instant, status: Option<u16>, timed_out: bool, failure: Option<&Failure>) {
    relay_observe::ksef_metrics::record_call(
        operation,
        started.elapsed(),
        relay_observe::ksef_metrics::CallOutcome {
            status,
            timed_out,
            error_class: failure.map(|f| f.class.name()),
        },
    );
}

impl KsefClient {
    pub fn new(cfg: ClientConfig, credentials: Option<Credentials>) -> Result<KsefClient> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .user_agent(concat!("ksef-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Failure::new(
                    ErrorClass::Permanent,
                    ErrorSource::Ksef {
                        operation: "client".into(),
                    },
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        let base = cfg.environment.base_url().to_owned();
        Ok(KsefClient {
            inner: Arc::new(Inner {
                http,
                base,
                limiter: Limiter::new(&cfg.limits, cfg.governor.clone(), cfg.timeout + cfg.connect_timeout),
                cfg,
                keys: tokio::sync::Mutex::new(None),
                credentials: std::sync::Mutex::new(credentials),
                renewal: None,
                tokens: tokio::sync::Mutex::new(None),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// With `renewal`, a login KSeF refuses asks it for renewed credentials and, given some,
    /// logs in once more with them (and keeps them): a rotated certificate takes over at the
    /// first refused login, wherever that login happens (an expired refresh token inside any
    /// call included). Call it before the client is shared.
    pub fn with_renewal(mut self, renewal: CredentialsRenewal) -> KsefClient {
        Arc::get_mut(&mut self.inner)
            .expect("with_renewal before the client is shared")
            .renewal = Some(renewal);
        self
    }

    /// The limits this client keeps to now: the configured ones, or as seeded from KSeF.
    pub fn rate_limits(&self) -> ClientLimits {
        self.inner.limiter.limits().unwrap_or_else(|| self.inner.cfg.limits.clone())
    }

    /// Keeps to what KSeF reports for this context (`GET /rate-limits`,
    /// [`KsefClient::effective_rate_limits`]) from now on, in this client and its fleet
    /// governor: the configured limits with every group KSeF reported replaced (time scale and
    /// margin kept). Disabled limits stay disabled.
    pub fn seed_rate_limits(&self, effective: &crate::limiter::EffectiveRateLimits) -> ClientLimits {
        if !self.inner.cfg.limits.enabled {
            return self.inner.cfg.limits.clone();
        }
        let seeded = self.inner.cfg.limits.clone().seeded_from(effective);
        self.inner.limiter.set_limits(&seeded);
        seeded
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Sends one call. A 401 on a call with the cached access token drops the token and
    /// retries once with a fresh one: KSeF rejected the request before doing anything.
    pub(crate) async fn call(&self, c: Call<'_>) -> Result<Answer> {
        match self.call_once(&c).await {
            Err(f) if f.class == ErrorClass::NeedsReauth && matches!(c.auth, Auth::Access) && f.code.as_deref() == Some("401") => {
                self.forget_access_token().await;
                self.call_once(&c).await
            }
            other => other,
        }
    }

    async fn call_once(&self, c: &Call<'_>) -> Result<Answer> {
        let bearer = match &c.auth {
            Auth::None => None,
            // Boxed: logging in makes calls of its own.
            Auth::Access => Some(Box::pin(self.access_token()).await?),
            Auth::Bearer(b) => Some(b.clone()),
        };
        let url = format!("{}{}", self.inner.base, c.path);
        let mut req = self.inner.http.request(c.method.clone(), &url);
        if let Some(b) = &bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {}", b.expose_secret()));
        }
        for (k, v) in &c.headers {
            req = req.header(*k, v);
        }
        if self.inner.cfg.problem_details {
            req = req.header("x-error-format", "problem-details");
        }
        match &c.body {
            Some(Body::Json(v)) => req = req.json(v),
            Some(Body::Xml(x)) => req = req.header(reqwest::header::CONTENT_TYPE, "application/xml").body(x.clone()),
            None => {}
        }
        let req = req.build().map_err(|e| from_transport(c.operation, &e))?;
        // The slot is taken once the request is ready to write, and held as "on its way" until
        // the answer comes: KSeF counts it on arrival, somewhere in between (`sliding_log`).
        let slot = self.inner.limiter.acquire(c.group, c.operation).await?;
        let started = std::time::Instant::now();
        let transport_failure = |e: reqwest::Error, status: Option<u16>| {
            let f = from_transport(c.operation, &e);
            record_call(c.operation, started, status, e.is_timeout(), Some(&f));
            f
        };
        let sent = self.inner.http.execute(req).await;
        self.inner.limiter.answered(c.group, slot).await;
        let resp = sent.map_err(|e| transport_failure(e, None))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // Polish text arrives as UTF-8 bytes, which `to_str` (visible ASCII only) would drop.
        for w in headers.get_all("x-system-warning") {
            tracing::warn!(operation = c.operation, warning = %String::from_utf8_lossy(w.as_bytes()), "KSeF X-System-Warning");
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_failure(e, Some(status.as_u16())))?
            .to_vec();
        if status.is_success() {
            record_call(c.operation, started, Some(status.as_u16()), false, None);
            return Ok(Answer { headers, body });
        }
        let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
        let f = from_response(c.operation, status.as_u16(), retry_after, &body, Utc::now());
        if let ErrorClass::RateLimited { until } = &f.class {
            self.inner.limiter.blocked(c.group, *until).await;
        }
        record_call(c.operation, started, Some(status.as_u16()), false, Some(&f));
        tracing::info!(
            operation = c.operation,
            class = f.class.name(),
            code = f.code.as_deref().unwrap_or(""),
            "KSeF call failed"
        );
        Err(f)
    }

    // ----- public keys -----

    /// The published public keys: cached, fetched again after `key_refresh_interval` (a failed
    /// refresh keeps the cached keys: a rotation is announced with both keys listed).
    pub async fn public_keys(&self) -> Result<Vec<PublicKey>> {
        let mut cached = self.inner.keys.lock().await;
        if let Some((keys, at)) = cached.as_ref() {
            if at.elapsed() < self.inner.cfg.key_refresh_interval {
                return Ok(keys.clone());
            }
            match self.fetch_keys().await {
                Ok(fresh) => {
                    *cached = Some((fresh.clone(), tokio::time::Instant::now()));
                    return Ok(fresh);
                }
                Err(f) => {
                    tracing::warn!(failure = %f, "refreshing KSeF public keys failed; using the cached ones");
                    return Ok(keys.clone());
                }
            }
        }
        let keys = self.fetch_keys().await?;
        *cached = Some((keys.clone(), tokio::time::Instant::now()));
        Ok(keys)
    }

    /// Forgets the cached keys (after 21470) and fetches them again.
    pub async fn refresh_keys(&self) -> Result<Vec<PublicKey>> {
        let mut cached = self.inner.keys.lock().await;
        let keys = self.fetch_keys().await?;
        *cached = Some((keys.clone(), tokio::time::Instant::now()));
        Ok(keys)
    }

    async fn fetch_keys(&self) -> Result<Vec<PublicKey>> {
        let op = "public_key_certificates";
        let a = self
            .call(Call {
                operation: op,
                group: EndpointGroup::Public,
                method: Method::GET,
                path: "/security/public-key-certificates".into(),
                body: None,
                auth: Auth::None,
                headers: Vec::new(),
            })
            .await?;
        let list: Vec<PublicKeyCertificate> = a.json(op)?;
        let mut out = Vec::new();
        for c in list {
            let der = B64.decode(&c.certificate).map_err(|e| unreadable(op, "certificate", e))?;
            let (key, spki) = crypto::rsa_key_from_certificate(&der).map_err(|e| unreadable(op, "certificate", e))?;
            // The id is SHA-256 of the SubjectPublicKeyInfo: check it, a mismatch means a bad key list.
            let id = B64.encode(Sha256::digest(&spki));
            if id != c.public_key_id {
                return Err(unreadable(
                    op,
                    "certificate",
                    format!("publicKeyId {} does not match the certificate's key {id}", c.public_key_id),
                ));
            }
            out.push(PublicKey {
                public_key_id: c.public_key_id,
                usage: c.usage,
                valid_from: c.valid_from,
                valid_to: c.valid_to,
                key,
            });
        }
        Ok(out)
    }

    /// The key for a usage; a missing one is a transient failure (KSeF is mid-rotation).
    pub(crate) async fn key_for(&self, usage: KeyUsage) -> Result<PublicKey> {
        let keys = self.public_keys().await?;
        pick_key(&keys, usage, Utc::now()).cloned().ok_or_else(|| {
            Failure::new(
                ErrorClass::Transient,
                ErrorSource::Ksef {
                    operation: "public_key_certificates".into(),
                },
                format!("no valid {} certificate published", usage.as_str()),
            )
        })
    }

    /// Runs `f` with the key for `usage`; on 21470 (unknown key) refreshes the keys and runs it once more.
    pub(crate) async fn with_key<T, F, Fut>(&self, usage: KeyUsage, f: F) -> Result<T>
    where
        F: Fn(PublicKey) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match f(self.key_for(usage).await?).await {
            Err(e) if e.code.as_deref() == Some("21470") => {
                tracing::info!("KSeF rejected our public key id (21470): refreshing keys");
                self.refresh_keys().await?;
                f(self.key_for(usage).await?).await
            }
            other => other,
        }
    }

    // ----- authentication -----

    pub async fn challenge(&self) -> Result<Challenge> {
        let a = self
            .call(Call {
                operation: "auth_challenge",
                group: EndpointGroup::Public,
                method: Method::POST,
                path: "/auth/challenge".into(),
                body: None,
                auth: Auth::None,
                headers: Vec::new(),
            })
            .await?;
        a.json("auth_challenge")
    }

    /// The whole login: challenge, then the encrypted KSeF token or the XAdES-signed request,
    /// status polling, redeem.
    ///
    /// A login that KSeF refuses (bad or revoked token, no permission, a blocked context, a
    /// refused certificate, missing credentials) is an operator's problem, never an invoice's:
    /// logging in again cannot help, so it is [`ErrorClass::Operator`]. Only transient failures
    /// and rate limits keep their class.
    ///
    /// A refused login asks the [renewal](KsefClient::with_renewal), if there is one, for
    /// renewed credentials and tries those once before giving up.
    pub async fn authenticate(&self) -> Result<TokenSet> {
        let refused = match self.login_classified().await {
            Err(f) if f.class == ErrorClass::Operator => f,
            other => return other,
        };
        let Some(renewal) = &self.inner.renewal else { return Err(refused) };
        let Some(renewed) = renewal().await else { return Err(refused) };
        tracing::info!(
            code = refused.code.as_deref().unwrap_or(""),
            "KSeF refused the login; logging in with the renewed credentials"
        );
        *self.inner.credentials.lock().expect("credentials lock") = Some(renewed);
        self.login_classified().await
    }

    async fn login_classified(&self) -> Result<TokenSet> {
        self.login().await.map_err(|f| match f.class {
            ErrorClass::Transient | ErrorClass::RateLimited { .. } => f,
            _ => Failure {
                class: ErrorClass::Operator,
                ..f
            },
        })
    }

    async fn login(&self) -> Result<TokenSet> {
        let credentials = self.inner.credentials.lock().expect("credentials lock").clone();
        let init: AuthInit = match credentials {
            None => {
                return Err(Failure::new(
                    ErrorClass::Permanent,
                    ErrorSource::Ksef { operation: "auth".into() },
                    "no KSeF credentials configured",
                ))
            }
            Some(Credentials::Token { context, token }) => self.init_token_auth(context, token).await?,
            Some(Credentials::Certificate {
                context,
                identity,
                subject,
            }) => {
                let ch = self.challenge().await?;
                let request = crate::xades::auth_token_request(&ch.challenge, &context, subject);
                let signed = crate::xades::sign_enveloped(&request, &identity, Utc::now())?;
                let a = self
                    .call(Call {
                        operation: "auth_xades_signature",
                        group: EndpointGroup::Auth,
                        method: Method::POST,
                        path: "/auth/xades-signature".into(),
                        body: Some(Body::Xml(signed)),
                        auth: Auth::None,
                        headers: Vec::new(),
                    })
                    .await?;
                a.json("auth_xades_signature")?
            }
        };
        let auth_token = BearerToken::new(init.authentication_token.token, init.authentication_token.valid_until);
        self.wait_for_auth(&init.reference_number, &auth_token).await?;
        let a = self
            .call(Call {
                operation: "auth_redeem",
                group: EndpointGroup::Auth,
                method: Method::POST,
                path: "/auth/token/redeem".into(),
                body: None,
                auth: Auth::Bearer(auth_token),
                headers: Vec::new(),
            })
            .await?;
        let t: AuthTokens = a.json("auth_redeem")?;
        Ok(TokenSet {
            access: BearerToken::new(t.access_token.token, t.access_token.valid_until),
            refresh: BearerToken::new(t.refresh_token.token, t.refresh_token.valid_until),
            auth_reference: init.reference_number,
        })
    }

    async fn init_token_auth(&self, context: Nip, token: KsefToken) -> Result<AuthInit> {
        self.with_key(KeyUsage::KsefTokenEncryption, |key| {
            let (context, token) = (context.clone(), token.clone());
            async move {
                let ch = self.challenge().await?;
                let plaintext = format!("{}|{}", token.expose_secret(), ch.timestamp_ms);
                let encrypted = crypto::rsa_oaep_encrypt(&key.key, plaintext.as_bytes()).map_err(|e| {
                    Failure::new(
                        ErrorClass::Permanent,
                        ErrorSource::Ksef {
                            operation: "auth_ksef_token".into(),
                        },
                        format!("RSA-OAEP failed: {e}"),
                    )
                })?;
                let body = serde_json::json!({
                    "challenge": ch.challenge,
                    "contextIdentifier": {"type": "Nip", "value": context.as_str()},
                    "encryptedToken": B64.encode(encrypted),
                    "publicKeyId": key.public_key_id,
                });
                let a = self
                    .call(Call {
                        operation: "auth_ksef_token",
                        group: EndpointGroup::Auth,
                        method: Method::POST,
                        path: "/auth/ksef-token".into(),
                        body: Some(Body::Json(body)),
                        auth: Auth::None,
                        headers: Vec::new(),
                    })
                    .await?;
                a.json::<AuthInit>("auth_ksef_token")
            }
        })
        .await
    }

    /// Polls an auth operation until it leaves status 100.
    pub async fn auth_status(&self, reference: &str, auth_token: &BearerToken) -> Result<AuthStatus> {
        let a = self
            .call(Call {
                operation: "auth_status",
                group: EndpointGroup::Auth,
                method: Method::GET,
                path: format!("/auth/{reference}"),
                body: None,
                auth: Auth::Bearer(auth_token.clone()),
                headers: Vec::new(),
            })
            .await?;
        a.json("auth_status")
    }

    async fn wait_for_auth(&self, reference: &str, auth_token: &BearerToken) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.inner.cfg.auth_poll_timeout;
        loop {
            let s = self.auth_status(reference, auth_token).await?;
            if auth_outcome("auth_status", &s.status)? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::new(
                    ErrorClass::Transient,
                    ErrorSource::Ksef {
                        operation: "auth_status".into(),
                    },
                    format!(
                        "authentication {reference} still in progress after {:?}",
                        self.inner.cfg.auth_poll_timeout
                    ),
                )
                .with_code("100"));
            }
            tokio::time::sleep(self.inner.cfg.auth_poll_interval).await;
        }
    }

    /// A new access token from the refresh token.
    pub async fn refresh_access_token(&self, refresh: &BearerToken) -> Result<BearerToken> {
        let a = self
            .call(Call {
                operation: "auth_refresh",
                group: EndpointGroup::Auth,
                method: Method::POST,
                path: "/auth/token/refresh".into(),
                body: None,
                auth: Auth::Bearer(refresh.clone()),
                headers: Vec::new(),
            })
            .await?;
        let r: AuthRefresh = a.json("auth_refresh")?;
        Ok(BearerToken::new(r.access_token.token, r.access_token.valid_until))
    }

    /// A valid access token: cached, refreshed `refresh_margin` before expiry, re-obtained by a
    /// full login when the refresh token no longer works. One caller at a time does the work.
    pub async fn access_token(&self) -> Result<BearerToken> {
        let mut cache = self.inner.tokens.lock().await;
        let margin = chrono::Duration::from_std(self.inner.cfg.refresh_margin).unwrap_or_default();
        let now = Utc::now();
        if let Some(t) = cache.as_ref() {
            if t.access.valid_until.checked_sub_signed(margin).is_some_and(|u| u > now) {
                return Ok(t.access.clone());
            }
            if t.refresh.valid_until.checked_sub_signed(margin).is_some_and(|u| u > now) {
                match self.refresh_access_token(&t.refresh).await {
                    Ok(access) => {
                        let t = cache.as_mut().expect("checked");
                        t.access = access.clone();
                        return Ok(access);
                    }
                    Err(f) if f.class == ErrorClass::NeedsReauth => {
                        tracing::info!("refresh token no longer accepted: full authentication");
                    }
                    Err(f) => return Err(f),
                }
            }
        }
        let fresh = self.authenticate().await?;
        let access = fresh.access.clone();
        *cache = Some(fresh);
        Ok(access)
    }

    /// The cached tokens, to keep them in a secret store between processes.
    pub async fn tokens(&self) -> Option<TokenSet> {
        self.inner.tokens.lock().await.clone()
    }

    /// Restores tokens kept from an earlier process.
    pub async fn set_tokens(&self, tokens: TokenSet) {
        *self.inner.tokens.lock().await = Some(tokens);
    }

    /// Makes the next call refresh the access token (after KSeF said 401).
    pub async fn forget_access_token(&self) {
        if let Some(t) = self.inner.tokens.lock().await.as_mut() {
            t.access = BearerToken::new(String::new(), DateTime::<Utc>::UNIX_EPOCH);
        }
    }

    /// Forgets all tokens: the next call logs in again.
    pub async fn forget_tokens(&self) {
        *self.inner.tokens.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(usage: &str, from_days: i64, to_days: i64) -> PublicKey {
        use rsa::pkcs8::DecodePrivateKey;
        let pem = include_str!("../tests/fixtures/xades-test-rsa-key.pem");
        let now = Utc::now();
        PublicKey {
            public_key_id: format!("{usage}{from_days}{to_days}"),
            usage: vec![usage.to_owned()],
            valid_from: now + chrono::Duration::days(from_days),
            valid_to: now + chrono::Duration::days(to_days),
            key: rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap().to_public_key(),
        }
    }

    #[test]
    fn keys_are_picked_by_usage_then_validity_then_the_latest_valid_from() {
        let keys = vec![
            key("KsefTokenEncryption", -30, 30),
            key("SymmetricKeyEncryption", -60, 60),
            key("SymmetricKeyEncryption", -10, 60),
            key("SymmetricKeyEncryption", -5, -1),
            key("SymmetricKeyEncryption", 1, 90),
        ];
        let now = Utc::now();
        assert_eq!(
            pick_key(&keys, KeyUsage::KsefTokenEncryption, now).unwrap().public_key_id,
            "KsefTokenEncryption-3030"
        );
        // Expired and not-yet-valid keys are skipped; of the two valid ones, the newer wins.
        assert_eq!(
            pick_key(&keys, KeyUsage::SymmetricKeyEncryption, now).unwrap().public_key_id,
            "SymmetricKeyEncryption-1060"
        );
        assert!(pick_key(&keys[1..], KeyUsage::KsefTokenEncryption, now).is_none());
    }
}
