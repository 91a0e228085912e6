//! The HTTP layer: the route table (the spec's paths under `/v2`), the middleware that plays
//! faults, enforces rate limits, counts operations and records exchanges, and an accept loop of
//! our own so a "connection reset" fault can really reset the TCP connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt as _;

use crate::api_error::too_many_requests;
use crate::exchange_log::Exchange;
use crate::faults::RequestFault;
use crate::rate_limit::Group;
use crate::state::Sim;
use crate::{http_admin as admin, http_auth as auth, http_batch as batch, http_sessions as sessions};

/// Per-connection facts handed to every request on it.
#[derive(Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    kill: Arc<Notify>,
}

pub fn router(sim: Arc<Sim>) -> Router {
    let api = Router::new()
        .route("/v2/security/public-key-certificates", get(auth::public_keys))
        .route("/v2/auth/challenge", post(auth::challenge))
        .route("/v2/auth/ksef-token", post(auth::ksef_token))
        .route("/v2/auth/xades-signature", post(auth::xades_signature))
        .route("/v2/auth/{referenceNumber}", get(auth::auth_status))
        .route("/v2/auth/token/redeem", post(auth::redeem))
        .route("/v2/auth/token/refresh", post(auth::refresh))
        .route("/v2/sessions/online", post(sessions::open_online))
        .route("/v2/sessions/online/{referenceNumber}/invoices", post(sessions::send_invoice))
        .route("/v2/sessions/online/{referenceNumber}/close", post(sessions::close_online))
        .route("/v2/sessions/batch", post(batch::open_batch))
        .route("/v2/sessions/batch/{referenceNumber}/close", post(batch::close_batch))
        .route("/v2/sessions", get(sessions::list_sessions))
        .route("/v2/rate-limits", get(sessions::rate_limits))
        .route("/v2/sessions/{referenceNumber}", get(sessions::session_status))
        .route("/v2/sessions/{referenceNumber}/invoices", get(sessions::session_invoices))
        .route(
            "/v2/sessions/{referenceNumber}/invoices/failed",
            get(sessions::session_failed_invoices),
        )
        .route(
            "/v2/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}",
            get(sessions::invoice_status),
        )
        .route(
            "/v2/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}/upo",
            get(sessions::invoice_upo_by_reference),
        )
        .route(
            "/v2/sessions/{referenceNumber}/invoices/ksef/{ksefNumber}/upo",
            get(sessions::invoice_upo_by_ksef_number),
        )
        .route(
            "/v2/sessions/{referenceNumber}/upo/{upoReferenceNumber}",
            get(sessions::session_upo),
        )
        .route("/storage/upo/{token}", get(sessions::upo_download))
        .route(
            "/storage/session-upo/{referenceNumber}/{upoReferenceNumber}",
            get(sessions::session_upo_download),
        )
        // A part is up to 100 MB before encryption (KSeF's limit, checked at open): axum's
        // default 2 MB body limit refused the parts of a batch of about 1,800 invoices with 413.
        .route(
            "/storage/batch/{referenceNumber}/{ordinal}",
            put(batch::upload_part).layer(axum::extract::DefaultBodyLimit::max(batch::MAX_PART as usize + 16)),
        )
        .route_layer(middleware::from_fn_with_state(sim.clone(), gate));
    let admin = Router::new()
        .route("/_sim/ledger", get(admin::ledger))
        .route("/_sim/faults", get(admin::get_faults).put(admin::set_faults))
        .route("/_sim/keys/rotate", post(admin::rotate_keys))
        .route("/_sim/tokens/expire-access", post(admin::expire_access_tokens))
        .route("/_sim/tokens/revoke-refresh", post(admin::revoke_refresh_tokens));
    let latarnia = crate::latarnia::router(sim.latarnia.clone());
    api.merge(admin).with_state(sim).merge(latarnia)
}

/// Faults, then rate limits, then the handler; every answer recorded when asked.
async fn gate(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let is_storage = route.starts_with("/storage/");
    let problem_details = req.headers().get("x-error-format").is_some_and(|v| v == "problem-details");

    let mut early: Option<Response> = None;
    // A slow answer is the ambiguous case that matters: the request is processed, the answer
    // comes too late for the client. So the delay runs after the handler.
    let mut delay = Duration::ZERO;
    let mut delay_if_taken = Duration::ZERO;
    for fault in sim.faults.for_request(&path, route.ends_with("/close")) {
        match fault {
            RequestFault::Delay(d) => delay += d,
            RequestFault::DelayIfTaken(d) => delay_if_taken += d,
            RequestFault::Lag(d) => tokio::time::sleep(d).await,
            RequestFault::Reset => {
                if let Some(c) = &conn {
                    c.kill.notify_one();
                }
                // The connection task drops this request with the socket.
                std::future::pending::<()>().await;
            }
            RequestFault::Unavailable => {
                early.get_or_insert_with(|| (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response());
            }
            RequestFault::Forbidden { reason_code } => {
                early.get_or_insert_with(|| {
                    let body = serde_json::json!({
                        "title": "Forbidden",
                        "status": 403,
                        "detail": format!("Brak dostępu ({reason_code})."),
                        "instance": path.as_str(),
                        "reasonCode": reason_code,
                    });
                    (
                        StatusCode::FORBIDDEN,
                        [(header::CONTENT_TYPE, "application/problem+json")],
                        body.to_string(),
                    )
                        .into_response()
                });
            }
            RequestFault::TooManyRequests { retry_after_s } => {
                early.get_or_insert_with(|| {
                    let msg = format!("Przekroczono limit żądań. Spróbuj ponownie po {retry_after_s} sekundach.");
                    too_many_requests(retry_after_s, &msg, problem_details, &path)
                });
            }
        }
    }
    if early.is_none() && !is_storage {
        let group = Group::of(&method, &route);
        let context = sim.context_of(req.headers()).unwrap_or_else(|| "-".to_owned());
        let ip = conn.as_ref().map(|c| c.remote.ip().to_string()).unwrap_or_default();
        if let Err(r) = sim.limiter.check(&context, &ip, group, Instant::now()) {
            let secs = r.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let window = match r.window {
                "second" => "sekundę",
                "minute" => "minutę",
                _ => "godzinę",
            };
            let msg = format!(
                "Przekroczono limit {} żądań na {window}. Spróbuj ponownie po {secs} sekundach.",
                r.limit
            );
            tracing::info!(group = group.name(), context, ip, window = r.window, "rate limit hit");
            early = Some(too_many_requests(secs, &msg, problem_details, &path));
        }
    }
    sim.advance();
    let mut response = match early {
        Some(r) => r,
        None => next.run(req).await,
    };
    if problem_details && response.status() == StatusCode::BAD_REQUEST && !is_storage {
        response = as_problem_details(response, &path).await;
    }
    if let Some(w) = sim.cfg.system_warning.as_deref().filter(|_| !is_storage) {
        // KSeF's warnings are Polish: UTF-8 bytes in the header (obs-text), not ASCII.
        if let Ok(v) = axum::http::HeaderValue::from_bytes(w.as_bytes()) {
            response.headers_mut().insert("x-system-warning", v);
        }
    }
    if response.status().is_success() {
        delay += delay_if_taken;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    sim.operations.record(&method, &route, response.status().as_u16());
    if !sim.exchanges.enabled() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    sim.exchanges.push(Exchange {
        method,
        route: route.strip_prefix("/v2").unwrap_or(&route).to_owned(),
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: bytes.to_vec(),
    });
    Response::from_parts(parts, Body::from(bytes))
}

/// A 400 in the problem+json form (`X-Error-Format: problem-details`): the same codes and
/// details as the default `ExceptionResponse`, as the spec's `BadRequestProblemDetails`.
async fn as_problem_details(response: Response, instance: &str) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let list = v["exception"]["exceptionDetailList"].as_array().cloned().unwrap_or_default();
    let errors: Vec<serde_json::Value> = list
        .iter()
        .map(|d| serde_json::json!({"code": d["exceptionCode"], "description": d["exceptionDescription"], "details": d["details"]}))
        .collect();
    let detail = list
        .first()
        .and_then(|d| d["exceptionDescription"].as_str())
        .unwrap_or("Bad Request")
        .to_owned();
    let body = serde_json::json!({
        "title": "Bad Request",
        "status": 400,
        "instance": instance,
        "detail": detail,
        "errors": errors,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "traceId": format!("{:032x}", rand::random::<u128>()),
    });
    let mut r = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// Serves `router` on `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, router: Router, sim: Arc<Sim>) -> tokio::task::JoinHandle<()> {
    // Status changes should happen even when nobody asks (the ledger is read directly).
    let ticker = {
        let sim = sim.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                sim.advance();
            }
        })
    };
    tokio::spawn(async move {
        let _ticker = AbortOnDrop(ticker);
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, remote)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let kill = Arc::new(Notify::new());
            let info = ConnInfo {
                remote,
                kill: kill.clone(),
            };
            let router = router.clone();
            connections.spawn(async move {
                // A second handle on the socket, to make the reset a real RST (linger 0).
                let std_stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(_) => return,
                };
                let control = std_stream.try_clone().ok();
                let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
                    return;
                };
                let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    router.clone().oneshot(req.map(Body::new))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = kill.notified() => {
                        if let Some(c) = control {
                            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
                        }
                    }
                }
            });
            // Reap finished connection tasks so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
        }
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
