//! Routing; the handlers are one module per endpoint below (`probes`: /health, /ready,
//! /metrics; `status`: /v1/status; `diagnose`, with the LLM report and its cost in `compose`;
//! `feedback`; `console`: pages, /v1/assets, /v1/documents).
//!
//! [`handle`] wraps every request: trace id (from `X-Request-Trace-ID`, else a W3C
//! `traceparent`, else generated), the per-request timeout, the `X-Request-Trace-ID` and
//! `X-Response-Time-ms` headers, the `http_*` and `copilot_*` request metrics, and the one
//! `request_completed` log event. Handlers return `Result<Response, ApiError>`; nothing in here
//! panics on input.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{info, warn};
use uuid::Uuid;

mod compose;
mod console;
mod diagnose;
mod feedback;
mod probes;
mod status;

use super::error::ApiError;
use super::AppState;
use crate::auth::AuthError;
use crate::ids::is_valid_id;
use crate::metrics::{agent, UNKNOWN};

type Resp = Response<Full<Bytes>>;

/// What the wrapper learns from a handler for logs and metrics.
struct Ctx {
    /// The client's address (the TCP peer), for the per-address authentication slow-down.
    peer: IpAddr,
    user_id: Option<String>,
    plant_label: Option<String>,
    plant_id: Option<String>,
    equipment_id: Option<String>,
    /// `agent_name` for copilot_* request metrics (diagnose/feedback routes only).
    agent: Option<&'static str>,
    /// For diagnose: the answer's request id, whether a document supported it, its confidence.
    answer: Option<(Uuid, bool, f64)>,
    /// True while the request body is being read: a timeout then is the client's (408).
    reading_body: bool,
}

fn valid_trace_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The request's trace id: a well-formed `X-Request-Trace-ID`, else the trace id of a valid
/// W3C `traceparent`, else a new random one.
pub fn trace_id(headers: &HeaderMap) -> String {
    if let Some(t) = headers
        .get("x-request-trace-id")
        .and_then(|v| v.to_str().ok())
    {
        if valid_trace_id(t) {
            return t.to_string();
        }
    }
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        if parts.len() >= 4
            && hex(parts[0], 2)
            && parts[0] != "ff"
            && hex(parts[1], 32)
            && parts[1].bytes().any(|b| b != b'0')
            && hex(parts[2], 16)
            && hex(parts[3], 2)
        {
            return parts[1].to_string();
        }
    }
    crate::ids::trace_id()
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Entry point for every request.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>, peer: IpAddr) -> Resp {
    let start = Instant::now();
    let trace = trace_id(req.headers());
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(256).collect();
    let handler = route_name(&path);
    let mut ctx = Ctx {
        peer,
        user_id: None,
        plant_label: None,
        plant_id: None,
        equipment_id: None,
        agent: None,
        answer: None,
        reading_body: false,
    };
    let timeout = state.server.request_timeout;
    let result = match check_host(&state, &path, req.headers()) {
        Err(e) => Err(e),
        Ok(()) => {
            match tokio::time::timeout(timeout, dispatch(&state, req, &trace, &mut ctx)).await {
                Ok(r) => r,
                // A body that never (fully) arrived is the client's fault; anything else is ours.
                Err(_) if ctx.reading_body => Err(ApiError::BodyTimeout),
                Err(_) => Err(ApiError::Timeout),
            }
        }
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                warn!(trace_id = %trace, error = %e, "request_failed");
            }
            e.into_response(&trace)
        }
    };
    let elapsed = start.elapsed();
    let ms = elapsed.as_secs_f64() * 1000.0;
    let status = resp.status().as_u16();
    {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&trace) {
            h.insert("x-request-trace-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{ms:.2}")) {
            h.insert("x-response-time-ms", v);
        }
        // No response is ever to be read as another type than it says (pages, JSON, errors).
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
    }
    let m = &state.metrics;
    let method_label = match method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    };
    let group = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    m.http_requests
        .with_label_values(&[handler, method_label, group])
        .inc();
    m.http_duration
        .with_label_values(&[handler, method_label])
        .observe(elapsed.as_secs_f64());
    if let Some(agent_name) = ctx.agent {
        let plant = ctx.plant_label.as_deref().unwrap_or(UNKNOWN);
        let code = resp.status();
        m.requests
            .with_label_values(&[plant, agent_name, code.as_str()])
            .inc();
        if code.is_success() {
            m.latency
                .with_label_values(&[plant, agent_name])
                .observe(elapsed.as_secs_f64());
        }
    }
    let ms = (ms * 100.0).round() / 100.0;
    let (user, plant, equipment) = (
        ctx.user_id.as_deref().unwrap_or(""),
        ctx.plant_id.as_deref().unwrap_or(""),
        ctx.equipment_id.as_deref().unwrap_or(""),
    );
    match ctx.answer {
        Some((request_id, supported, confidence)) => info!(
            trace_id = %trace, method = method_label, path = %path, status_code = status, duration_ms = ms,
            user_id = user, plant_id = plant, equipment_id = equipment,
            request_id = %request_id, supported, confidence,
            "request_completed"
        ),
        None => info!(
            trace_id = %trace, method = method_label, path = %path, status_code = status, duration_ms = ms,
            user_id = user, plant_id = plant, equipment_id = equipment,
            "request_completed"
        ),
    }
    if elapsed > state.server.sla {
        warn!(trace_id = %trace, path = %path, duration_ms = ms, sla_ms = state.server.sla.as_millis() as u64, "high_latency_detected");
    }
    resp
}

/// The `handler` label: the route, or `none` for unknown paths (bounded cardinality).
fn route_name(path: &str) -> &'static str {
    match path {
        "/v1/diagnose" => "/v1/diagnose",
        "/v1/feedback" => "/v1/feedback",
        "/health" => "/health",
        "/ready" => "/ready",
        "/metrics" => "/metrics",
        "/v1/status" => "/v1/status",
        "/v1/assets" => "/v1/assets",
        p if p.starts_with("/v1/documents/") => "/v1/documents",
        p if crate::console::find(p).is_some() => {
            if p.starts_with("/assets/") {
                "/assets"
            } else if p.starts_with("/status") {
                "/status"
            } else {
                "/"
            }
        }
        _ => "none",
    }
}

async fn dispatch(
    state: &AppState,
    req: Request<Incoming>,
    trace: &str,
    ctx: &mut Ctx,
) -> Result<Resp, ApiError> {
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let post = req.method() == Method::POST;
    match path {
        "/health" if get => Ok(probes::health(state)),
        "/ready" if get => {
            let authed = optional_auth(state, req.headers(), ctx)?;
            Ok(probes::ready(state, authed))
        }
        "/metrics" if get => {
            if state.server.metrics_require_auth {
                authenticate(state, req.headers(), ctx)?;
            }
            Ok(probes::metrics(state))
        }
        "/v1/diagnose" if post => {
            ctx.agent = Some(agent::RAG);
            diagnose::post(state, req, trace, ctx).await
        }
        "/v1/feedback" if post => {
            ctx.agent = Some(agent::FEEDBACK);
            feedback::post(state, req, trace, ctx).await
        }
        "/v1/status" if get => {
            let authed = optional_auth(state, req.headers(), ctx)?;
            Ok(status::get(state, authed))
        }
        "/v1/assets" if get => {
            authenticate(state, req.headers(), ctx)?;
            Ok(console::assets(state))
        }
        p if get && p.starts_with("/v1/documents/") => {
            authenticate(state, req.headers(), ctx)?;
            console::document(state, &p["/v1/documents/".len()..])
        }
        "/health" | "/ready" | "/metrics" | "/v1/status" | "/v1/assets" => {
            Err(ApiError::MethodNotAllowed("GET, HEAD"))
        }
        p if p.starts_with("/v1/documents/") => Err(ApiError::MethodNotAllowed("GET, HEAD")),
        "/v1/diagnose" | "/v1/feedback" => Err(ApiError::MethodNotAllowed("POST")),
        other => match crate::console::find(other) {
            Some(asset) if get => Ok(console::page(
                asset,
                req.headers(),
                req.method() == Method::HEAD,
            )),
            Some(_) => Err(ApiError::MethodNotAllowed("GET, HEAD")),
            None => Err(ApiError::NotFound(other.chars().take(128).collect())),
        },
    }
}

/// Refuses a request whose `Host` names neither this gateway nor a configured name: a page on
/// another site whose name was re-pointed at the gateway (DNS rebinding) sends its own name.
/// `/health` and `/metrics` are machine endpoints (probes, scrapers by any DNS name) and exempt.
fn check_host(state: &AppState, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    if path == "/health" || path == "/metrics" {
        return Ok(());
    }
    let host = headers
        .get(hyper::header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match host {
        Some(h) if !super::host_allowed(&h, &state.host_names) => Err(ApiError::MisdirectedHost(
            h.chars().take(128).collect::<String>(),
        )),
        _ => Ok(()),
    }
}

/// Counts and notes a failed authentication from `peer` (only a wrong token counts towards the
/// slow-down: a missing one guesses nothing). `header` is the `Authorization` value.
fn auth_failed(state: &AppState, peer: IpAddr, e: AuthError, header: &[u8]) {
    state
        .metrics
        .auth_failures
        .with_label_values(&[e.reason()])
        .inc();
    if e != AuthError::Invalid {
        return;
    }
    let d = crate::auth::digest(&String::from_utf8_lossy(header));
    let prefix = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    let note = state.auth_failures.failed(peer, prefix);
    if let Some(failures) = note.log {
        warn!(peer = %peer, reason = e.reason(), failures, "auth_failed");
    }
    if note.now_throttled {
        warn!(peer = %peer, failures = crate::auth::AuthFailures::LIMIT, window_secs = crate::auth::AuthFailures::WINDOW.as_secs(), "auth_throttled");
    }
}

/// The user for the request's bearer token: 401 when missing or wrong, 429 while the address
/// is slowed down after repeated failures (its token is then not even checked).
fn authenticate(state: &AppState, headers: &HeaderMap, ctx: &mut Ctx) -> Result<(), ApiError> {
    match optional_auth(state, headers, ctx)? {
        true => Ok(()),
        false => {
            auth_failed(state, ctx.peer, AuthError::Missing, b"");
            Err(ApiError::Unauthorized(AuthError::Missing.to_string()))
        }
    }
}

/// For endpoints with a public view (`/v1/status`, `/ready`): no `Authorization` header is
/// the public view (false); a valid token is true; a wrong one is 401 like everywhere else.
fn optional_auth(state: &AppState, headers: &HeaderMap, ctx: &mut Ctx) -> Result<bool, ApiError> {
    let Some(h) = headers.get(AUTHORIZATION) else {
        return Ok(false);
    };
    if let Some(secs) = state.auth_failures.throttled(ctx.peer) {
        state
            .metrics
            .auth_failures
            .with_label_values(&["throttled"])
            .inc();
        return Err(ApiError::AuthThrottled(secs));
    }
    match state.auth.verify(Some(h.as_bytes())) {
        Ok(user) => {
            ctx.user_id = Some(user);
            Ok(true)
        }
        Err(e) => {
            auth_failed(state, ctx.peer, e, h.as_bytes());
            Err(ApiError::Unauthorized(e.to_string()))
        }
    }
}

/// Checks auth, content type and size, then reads and parses a JSON body.
async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<T, ApiError> {
    authenticate(state, req.headers(), ctx)?;
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        // curl's `-d` sends application/x-www-form-urlencoded unless told otherwise; a JSON body
        // under that label is accepted so the documented one-liner works.
        if !matches!(
            essence,
            "application/json" | "application/x-www-form-urlencoded"
        ) && !essence.ends_with("+json")
        {
            return Err(ApiError::UnsupportedMediaType(
                essence.chars().take(64).collect(),
            ));
        }
    }
    let max = state.server.max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(ApiError::PayloadTooLarge(max));
        }
    }
    ctx.reading_body = true;
    let collected = Limited::new(req.into_body(), max).collect().await;
    ctx.reading_body = false;
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(ApiError::PayloadTooLarge(max))
        }
        Err(_) => return Err(ApiError::BodyRead),
    };
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(e.to_string()),
        _ => ApiError::MalformedJson(e.to_string()),
    })
}

fn check_id(field: &str, v: &str) -> Result<(), ApiError> {
    if is_valid_id(v) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{field} must be 1-64 characters of letters, digits, '-', '_', '.', ':'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header map from name/value pairs (also for the handler modules' tests).
    pub(super) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn trace_id_sources() {
        assert_eq!(
            trace_id(&headers(&[("x-request-trace-id", "abc-123")])),
            "abc-123"
        );
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(&headers(&[("traceparent", tp)])),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // Malformed header falls through to traceparent, then to a generated id.
        assert_eq!(
            trace_id(&headers(&[
                ("x-request-trace-id", "bad id!"),
                ("traceparent", tp)
            ])),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let t = trace_id(&headers(&[("traceparent", bad)]));
            assert_eq!(t.len(), 32);
            assert_ne!(t, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }

    #[test]
    fn route_names_are_bounded() {
        assert_eq!(route_name("/v1/diagnose"), "/v1/diagnose");
        assert_eq!(route_name("/v1/diagnose/extra"), "none");
        assert_eq!(route_name("/random-123"), "none");
    }
}
