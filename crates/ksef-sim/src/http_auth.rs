//! Authentication endpoints: public keys, challenge, KSeF-token auth, auth status, redeem,
//! refresh, and the bearer checks the protected endpoints use.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use chrono::Utc;
use relay_domain::Nip;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api_error::{ApiError, Code};
use crate::server::ConnInfo;
use crate::state::{rfc3339, secret, AuthMethod, AuthOp, ChallengeRec, Grant, Sim, StatusInfo};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

fn unauthorized(instance: &str) -> ApiError {
    ApiError::Unauthorized {
        detail: "Wymagane jest uwierzytelnienie.".into(),
        instance: instance.to_owned(),
    }
}

impl Sim {
    /// The context of a valid access token, or 401.
    pub fn authorize(&self, headers: &HeaderMap, instance: &str) -> Result<Nip, ApiError> {
        let token = bearer(headers).ok_or_else(|| unauthorized(instance))?;
        let store = self.store.lock().expect("store lock");
        match store.access.get(token) {
            Some(g) if g.valid_until > Utc::now() => Ok(g.context.clone()),
            _ => Err(unauthorized(instance)),
        }
    }

    /// The context an access token belongs to, for rate limiting (no validity check).
    pub fn context_of(&self, headers: &HeaderMap) -> Option<String> {
        let token = bearer(headers)?;
        let store = self.store.lock().expect("store lock");
        store.access.get(token).map(|g| g.context.to_string())
    }
}

pub async fn public_keys(State(sim): State<Arc<Sim>>) -> Response {
    let keys = sim.keys.read().expect("keys lock");
    let list: Vec<_> = keys
        .all()
        .iter()
        .map(|k| {
            json!({
                "certificate": B64.encode(&k.certificate_der),
                "certificateId": k.certificate_id,
                "publicKeyId": k.public_key_id,
                "validFrom": rfc3339(k.valid_from),
                "validTo": rfc3339(k.valid_to),
                "usage": [k.usage.as_str()],
            })
        })
        .collect();
    Json(list).into_response()
}

pub async fn challenge(State(sim): State<Arc<Sim>>, Extension(conn): Extension<ConnInfo>) -> Response {
    let now = Utc::now();
    let mut store = sim.store.lock().expect("store lock");
    let challenge = store.reference("CR");
    store.challenges.insert(
        challenge.clone(),
        ChallengeRec {
            timestamp_ms: now.timestamp_millis(),
            expires: now + chrono::Duration::minutes(10),
        },
    );
    Json(json!({
        "challenge": challenge,
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
        "timestampMs": now.timestamp_millis(),
        "clientIp": conn.remote.ip().to_string(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContextIdentifier {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAuthRequest {
    challenge: String,
    context_identifier: ContextIdentifier,
    encrypted_token: String,
    #[serde(default)]
    public_key_id: Option<String>,
}

pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::validation(format!("Nieprawidłowe dane wejściowe: {e}")))
}

pub async fn ksef_token(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Response, ApiError> {
    let req: TokenAuthRequest = parse_json(&body)?;
    if req.context_identifier.kind != "Nip" {
        return Err(ApiError::validation(format!(
            "Symulator obsługuje kontekst typu Nip, otrzymano {}.",
            req.context_identifier.kind
        )));
    }
    let context = Nip::parse(&req.context_identifier.value).map_err(|e| ApiError::validation(e.to_string()))?;
    // Decrypt with the token key; a publicKeyId naming another key is 21470.
    let plaintext = {
        let keys = sim.keys.read().expect("keys lock");
        if let Some(id) = &req.public_key_id {
            if id != &keys.token.public_key_id {
                return Err(ApiError::bad(
                    Code::UnknownKey,
                    format!("Klucz o identyfikatorze {id} nie jest wspierany."),
                ));
            }
        }
        B64.decode(&req.encrypted_token).ok().and_then(|ct| keys.token.decrypt(&ct))
    };
    let now = Utc::now();
    let mut store = sim.store.lock().expect("store lock");
    let challenge = match store.challenges.remove(&req.challenge) {
        Some(c) if c.expires > now => c,
        _ => {
            return Err(ApiError::bad(
                Code::BadChallenge,
                format!("Wyzwanie {} jest nieznane, wygasło lub zostało już użyte.", req.challenge),
            ))
        }
    };
    let outcome = match plaintext.as_deref().map(std::str::from_utf8) {
        Some(Ok(text)) => match text.rsplit_once('|') {
            Some((token, ts)) if ts.parse::<i64>().ok() == Some(challenge.timestamp_ms) => {
                match sim.cfg.tokens.iter().find(|t| t.token == token) {
                    Some(t) if t.context == context => StatusInfo::new(200, "Uwierzytelnianie zakończone sukcesem"),
                    Some(_) => StatusInfo::new(
                        415,
                        "Uwierzytelnianie zakończone niepowodzeniem z powodu braku nadania jakichkolwiek uprawnień",
                    ),
                    None => StatusInfo::new(450, "Uwierzytelnianie zakończone niepowodzeniem z powodu błędnego tokenu")
                        .with_details(vec!["Nieprawidłowy token.".into()]),
                }
            }
            _ => StatusInfo::new(450, "Uwierzytelnianie zakończone niepowodzeniem z powodu błędnego tokenu")
                .with_details(vec!["Nieprawidłowy czas tokena.".into()]),
        },
        _ => StatusInfo::new(450, "Uwierzytelnianie zakończone niepowodzeniem z powodu błędnego tokenu")
            .with_details(vec!["Nie udało się odszyfrować tokenu.".into()]),
    };
    Ok(start_auth_op(&sim, &mut store, context, outcome, &body, AuthMethod::Token, now))
}

/// `POST /auth/xades-signature`: a XAdES-signed `AuthTokenRequest`, verified for real.
pub async fn xades_signature(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Response, ApiError> {
    use crate::xades_verify::{verify, XadesError};
    let xml = std::str::from_utf8(&body).map_err(|_| ApiError::bad(Code::BadDocument, "Dokument nie jest poprawnym UTF-8."))?;
    let req = verify(xml).map_err(|e| match e {
        XadesError::BadDocument(d) => ApiError::bad(Code::BadDocument, d),
        XadesError::NoSignature => ApiError::bad(Code::NoSignature, "Dokument nie zawiera podpisu."),
        XadesError::TooManySignatures => ApiError::bad(Code::TooManySignatures, "Dokument zawiera więcej niż jeden podpis."),
        XadesError::BadSignature(d) => ApiError::bad(Code::BadSignature, d),
        XadesError::BadCertificate(d) => ApiError::bad(Code::BadCertificate, d),
    })?;
    let context = Nip::parse(&req.context_nip).map_err(|e| ApiError::bad(Code::SchemaViolation, e.to_string()))?;
    let fingerprint: String = Sha256::digest(&req.certificate_der).iter().map(|b| format!("{b:02X}")).collect();
    let authorised = match req.subject_identifier_type.as_str() {
        "certificateSubject" => req
            .subject_values
            .iter()
            .any(|v| v == &format!("VATPL-{context}") || v == &format!("TINPL-{context}")),
        "certificateFingerprint" => sim
            .cfg
            .certificate_fingerprints
            .iter()
            .any(|(f, n)| f.eq_ignore_ascii_case(&fingerprint) && n == &context),
        other => {
            return Err(ApiError::bad(
                Code::SchemaViolation,
                format!("SubjectIdentifierType {other} nie jest dozwolony."),
            ))
        }
    };
    let now = Utc::now();
    let mut store = sim.store.lock().expect("store lock");
    match store.challenges.remove(&req.challenge) {
        Some(c) if c.expires > now => {}
        _ => {
            return Err(ApiError::bad(
                Code::BadChallenge,
                format!("Wyzwanie {} jest nieznane, wygasło lub zostało już użyte.", req.challenge),
            ))
        }
    }
    let outcome = if store.revoked_certificates.contains(&fingerprint) {
        // KSeF checks its own certificates' status at once; a revoked one ends the login as a
        // certificate error (auth status 460).
        StatusInfo::new(460, "Uwierzytelnianie zakończone niepowodzeniem z powodu błędu certyfikatu")
            .with_details(vec![format!("Certyfikat {fingerprint} został unieważniony.")])
    } else if authorised {
        StatusInfo::new(200, "Uwierzytelnianie zakończone sukcesem")
    } else {
        StatusInfo::new(
            415,
            "Uwierzytelnianie zakończone niepowodzeniem z powodu braku nadania jakichkolwiek uprawnień",
        )
        .with_details(vec![format!("Certyfikat {} nie ma uprawnień w kontekście {context}.", req.subject)])
    };
    store.certificate_logins.push(crate::state::CertificateLogin {
        context: context.to_string(),
        fingerprint,
        subject: req.subject.clone(),
        status: outcome.code,
    });
    Ok(start_auth_op(
        &sim,
        &mut store,
        context,
        outcome,
        &body,
        AuthMethod::Certificate,
        now,
    ))
}

/// Records a started authentication (its outcome decided now, revealed after `auth_delay`) and
/// answers 202 with its reference and authentication token.
fn start_auth_op(
    sim: &Sim,
    store: &mut crate::state::Store,
    context: Nip,
    outcome: StatusInfo,
    body: &[u8],
    method: AuthMethod,
    now: chrono::DateTime<Utc>,
) -> Response {
    let reference = store.reference("AU");
    let auth_token = secret("sim-authentication");
    let valid_until = now + chrono::Duration::minutes(45);
    store.auth_ops.insert(
        reference.clone(),
        AuthOp {
            reference: reference.clone(),
            context,
            auth_token: auth_token.clone(),
            auth_token_valid_until: valid_until,
            started: now,
            ready_at: Instant::now() + sim.cfg.auth_delay,
            outcome,
            redeemed: false,
            document_hash: B64.encode(Sha256::digest(body)),
            last_refresh: None,
            refresh_valid_until: None,
            method,
        },
    );
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "referenceNumber": reference,
            "authenticationToken": {"token": auth_token, "validUntil": rfc3339(valid_until)},
        })),
    )
        .into_response()
}

/// The auth operation whose authentication token is the bearer.
fn op_by_bearer<'a>(store: &'a mut crate::state::Store, headers: &HeaderMap, instance: &str) -> Result<&'a mut AuthOp, ApiError> {
    let token = bearer(headers).ok_or_else(|| unauthorized(instance))?;
    let now = Utc::now();
    store
        .auth_ops
        .values_mut()
        .find(|op| op.auth_token == token && op.auth_token_valid_until > now)
        .ok_or_else(|| unauthorized(instance))
}

fn current_status(op: &AuthOp) -> StatusInfo {
    if Instant::now() < op.ready_at {
        StatusInfo::new(100, "Uwierzytelnianie w toku")
    } else {
        op.outcome.clone()
    }
}

pub async fn auth_status(State(sim): State<Arc<Sim>>, Path(reference): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let instance = format!("/v2/auth/{reference}");
    let mut store = sim.store.lock().expect("store lock");
    let op = op_by_bearer(&mut store, &headers, &instance)?;
    if op.reference != reference {
        return Err(ApiError::bad(
            Code::UnknownAuthOperation,
            format!("Operacja uwierzytelniania o numerze referencyjnym {reference} nie została znaleziona."),
        ));
    }
    let status = current_status(op);
    let mut body = json!({
        "startDate": rfc3339(op.started),
        "authenticationMethod": match op.method { AuthMethod::Token => "Token", AuthMethod::Certificate => "InternalCertificate" },
        "authenticationMethodInfo": match op.method {
            AuthMethod::Token => json!({"category": "Token", "code": "token.ksef", "displayName": "Token KSeF"}),
            AuthMethod::Certificate => json!({"category": "XadesSignature", "code": "certificate.ksef", "displayName": "Certyfikat KSeF"}),
        },
        "status": status.to_json(),
        "isTokenRedeemed": op.redeemed,
    });
    if let Some(t) = op.last_refresh {
        body["lastTokenRefreshDate"] = json!(rfc3339(t));
    }
    if let Some(t) = op.refresh_valid_until {
        body["refreshTokenValidUntil"] = json!(rfc3339(t));
    }
    Ok(Json(body).into_response())
}

pub async fn redeem(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let mut store = sim.store.lock().expect("store lock");
    let op = op_by_bearer(&mut store, &headers, "/v2/auth/token/redeem")?;
    let status = current_status(op);
    if status.code != 200 {
        return Err(ApiError::bad(
            Code::NotAuthorised,
            format!("Status uwierzytelniania ({}) nie pozwala na pobranie tokenów.", status.code),
        ));
    }
    if op.redeemed {
        return Err(ApiError::bad(
            Code::NotAuthorised,
            format!("Tokeny dla operacji uwierzytelniania {} zostały już pobrane.", op.reference),
        ));
    }
    op.redeemed = true;
    let now = Utc::now();
    let access_until = now + chrono::Duration::from_std(sim.cfg.access_token_ttl).expect("ttl fits");
    let refresh_until = now + chrono::Duration::from_std(sim.cfg.refresh_token_ttl).expect("ttl fits");
    op.refresh_valid_until = Some(refresh_until);
    let grant = |until| Grant {
        context: op.context.clone(),
        auth_reference: op.reference.clone(),
        valid_until: until,
    };
    let (access_grant, refresh_grant) = (grant(access_until), grant(refresh_until));
    let (access, refresh) = (secret("sim-access"), secret("sim-refresh"));
    store.access.insert(access.clone(), access_grant);
    store.refresh.insert(refresh.clone(), refresh_grant);
    Ok(Json(json!({
        "accessToken": {"token": access, "validUntil": rfc3339(access_until)},
        "refreshToken": {"token": refresh, "validUntil": rfc3339(refresh_until)},
    }))
    .into_response())
}

pub async fn refresh(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let instance = "/v2/auth/token/refresh";
    let token = bearer(&headers).ok_or_else(|| unauthorized(instance))?.to_owned();
    let mut store = sim.store.lock().expect("store lock");
    if store.revoked_refresh.contains(&token) {
        return Err(ApiError::bad(Code::NotAuthorised, "Token KSeF został unieważniony."));
    }
    let grant = match store.refresh.get(&token) {
        Some(g) if g.valid_until > Utc::now() => g.clone(),
        _ => return Err(unauthorized(instance)),
    };
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(sim.cfg.access_token_ttl).expect("ttl fits");
    let access = secret("sim-access");
    store.access.insert(
        access.clone(),
        Grant {
            valid_until: until,
            ..grant.clone()
        },
    );
    if let Some(op) = store.auth_ops.get_mut(&grant.auth_reference) {
        op.last_refresh = Some(now);
    }
    Ok(Json(json!({"accessToken": {"token": access, "validUntil": rfc3339(until)}})).into_response())
}
