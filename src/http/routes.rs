//! Routing and one thin handler per endpoint.
//!
//! [`handle`] wraps every request: trace id (from `X-Request-Trace-ID`, else a W3C
//! `traceparent`, else generated), the per-request timeout, the `X-Request-Trace-ID` and
//! `X-Response-Time-ms` headers, the `http_*` and `copilot_*` request metrics, and the one
//! `request_completed` log event. Handlers return `Result<Response, ApiError>`; nothing in here
//! panics on input.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::auth::AuthError;
use crate::config::is_valid_id;
use crate::diagnose::{Guidance, Observation, Question, Refusal, VisionAnalysis};
use crate::metrics::{agent, genai, UNKNOWN};
use crate::recent::{AnswerRecord, Lookup};

type Resp = Response<Full<Bytes>>;

/// Longest accepted problem description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Longest accepted feedback comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;
/// Most camera observations per request.
pub const MAX_OBSERVATIONS: usize = 32;

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

/// An embedded page or asset with the security and cache headers (304 when the browser's copy
/// is current).
fn page(asset: &'static crate::console::Asset, headers: &HeaderMap, head: bool) -> Resp {
    use hyper::header::{CACHE_CONTROL, CONTENT_ENCODING, ETAG, IF_NONE_MATCH, VARY};
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let gzip = accepts_gzip(headers);
    let full = if fresh {
        Bytes::new()
    } else if gzip {
        Bytes::from_static(asset.gz)
    } else {
        Bytes::from(asset.body())
    };
    let len = full.len();
    let body = if head { Bytes::new() } else { full };
    let mut r = Response::new(Full::new(body));
    if fresh {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(ETAG, HeaderValue::from_static(asset.etag));
    h.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if gzip && !fresh {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(crate::console::CSP),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if head && !fresh {
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    r
}

/// Whether `Accept-Encoding` accepts gzip (`gzip` or `*`, with a q-value above 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
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
        "/health" if get => Ok(health(state)),
        "/ready" if get => {
            let authed = optional_auth(state, req.headers(), ctx)?;
            Ok(ready(state, authed))
        }
        "/metrics" if get => {
            if state.server.metrics_require_auth {
                authenticate(state, req.headers(), ctx)?;
            }
            Ok(metrics(state))
        }
        "/v1/diagnose" if post => {
            ctx.agent = Some(agent::RAG);
            diagnose(state, req, trace, ctx).await
        }
        "/v1/feedback" if post => {
            ctx.agent = Some(agent::FEEDBACK);
            feedback(state, req, trace, ctx).await
        }
        "/v1/status" if get => {
            let authed = optional_auth(state, req.headers(), ctx)?;
            Ok(status(state, authed))
        }
        "/v1/assets" if get => {
            authenticate(state, req.headers(), ctx)?;
            Ok(assets(state))
        }
        p if get && p.starts_with("/v1/documents/") => {
            authenticate(state, req.headers(), ctx)?;
            document(state, &p["/v1/documents/".len()..])
        }
        "/health" | "/ready" | "/metrics" | "/v1/status" | "/v1/assets" => {
            Err(ApiError::MethodNotAllowed("GET, HEAD"))
        }
        p if p.starts_with("/v1/documents/") => Err(ApiError::MethodNotAllowed("GET, HEAD")),
        "/v1/diagnose" | "/v1/feedback" => Err(ApiError::MethodNotAllowed("POST")),
        other => match crate::console::find(other) {
            Some(asset) if get => Ok(page(asset, req.headers(), req.method() == Method::HEAD)),
            Some(_) => Err(ApiError::MethodNotAllowed("GET, HEAD")),
            None => Err(ApiError::NotFound(other.chars().take(128).collect())),
        },
    }
}

/// `GET /v1/status`: the gateway's state for plant IT and the status page. Without a valid token
/// it shows nothing sensitive (ids, version, counts, link states, backlog sizes); with one it adds
/// the sinks' last error texts (which name hosts and URLs) and the recent warnings.
fn status(state: &AppState, authed: bool) -> Resp {
    let engine = state.engine.get();
    let rfc =
        |ms: i64| crate::logging::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
    let backlog = state
        .spool
        .as_ref()
        .map(|s| s.backlog())
        .unwrap_or_default();
    let files = state
        .spool
        .as_ref()
        .map(|s| crate::sinks::read_states(s.dir()))
        .unwrap_or_default();
    let m = &state.metrics.sink;
    let sinks: Vec<serde_json::Value> = state
        .sinks
        .iter()
        .map(|&name| {
            let file = files.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let link = if m.auth_failed.with_label_values(&[name]).get() == 1 {
                "auth_failed"
            } else if m.up.with_label_values(&[name]).get() == 1 {
                "online"
            } else if file.is_some() {
                "offline"
            } else {
                "unknown"
            };
            let last_success = m.last_success.with_label_values(&[name]).get();
            let b = backlog.iter().find(|b| b.sink == name);
            let mut v = json!({
                "name": name,
                "link": link,
                "since": file.and_then(crate::sinks::state_since_ms).map(rfc),
                "backlog_records": b.map_or(0, |b| b.pending_records),
                "backlog_bytes": b.map_or(0, |b| b.pending_bytes),
                "oldest_pending_age_seconds": b
                    .and_then(|b| b.oldest_pending_age_ms)
                    .map(|a| (a as f64 / 100.0).round() / 10.0),
                "last_success": (last_success > 0.0).then(|| rfc((last_success * 1000.0) as i64)),
            });
            if authed {
                v["last_error"] = json!(file.and_then(|f| f["last_error"].as_str()).unwrap_or(""));
            }
            v
        })
        .collect();
    let spool = state.spool.as_ref().map(|s| {
        let u = s.usage();
        json!({
            "bytes": u.bytes,
            "max_bytes": u.max_bytes,
            "free_disk_bytes": u.free_disk_bytes,
            "min_free_bytes": u.min_free_bytes,
            "write_blocked": u.write_blocked,
        })
    });
    let started = SystemTime::now()
        .checked_sub(state.started.elapsed())
        .unwrap_or(UNIX_EPOCH);
    let mut out = json!({
        "gateway_id": state.gateway_id,
        "site": state.site,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "started_at": crate::logging::rfc3339(started),
        "authenticated": authed,
        "knowledge_base": {
            "documents": engine.len(),
            "loaded_at": crate::logging::rfc3339(engine.built_at()),
            "languages": engine.lexicon().languages.iter().map(|l| l.code.as_str()).collect::<Vec<_>>(),
            "assets": engine.assets().listed().len(),
        },
        "sinks": sinks,
        "spool": spool,
        "tokens_file": {"valid": state.auth.problem().is_none()},
        "clock": {
            "skew_seconds": crate::clock::skew_seconds(),
            "tolerance_seconds": crate::clock::TOLERANCE_SECS,
            "ok": crate::clock::skew_seconds().is_none_or(|s| s.abs() <= crate::clock::TOLERANCE_SECS),
        },
    });
    if let (true, Some(problem)) = (authed, state.auth.problem()) {
        out["tokens_file"]["error"] = json!(problem);
    }
    if authed {
        let warnings: Vec<serde_json::Value> = crate::logging::recent_warnings()
            .iter()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|mut v| {
                let ts = v["timestamp"].take();
                let level = v["level"].take();
                let event = v["event"].take();
                let detail: Vec<String> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        !["timestamp", "level", "event", "target"].contains(&k.as_str())
                    })
                    .map(|(k, x)| match x.as_str() {
                        Some(s) => format!("{k}={s}"),
                        None => format!("{k}={x}"),
                    })
                    .collect();
                json!({"ts": ts, "level": level, "event": event, "detail": detail.join(" ")})
            })
            .collect();
        out["warnings"] = json!(warnings);
    }
    json_response(StatusCode::OK, &out)
}

/// `GET /v1/assets`: the asset register's listed ids, for the console's equipment picker.
fn assets(state: &AppState) -> Resp {
    let engine = state.engine.get();
    json_response(StatusCode::OK, &json!({"assets": engine.assets().listed()}))
}

/// `GET /v1/documents/{id}`: one SOP as the engine knows it (step numbers match citations).
fn document(state: &AppState, id: &str) -> Result<Resp, ApiError> {
    let engine = state.engine.get();
    let d = engine
        .document(id)
        .ok_or_else(|| ApiError::NotFound(id.chars().take(128).collect()))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": d.id,
            "title": d.title,
            "equipment": d.equipment,
            "translations": d.translations.iter().map(|t| t.language.as_str()).collect::<Vec<_>>(),
            "markdown": d.to_markdown(),
        }),
    ))
}

fn health(state: &AppState) -> Resp {
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "uptime_seconds": state.started.elapsed().as_secs()}),
    )
}

/// `GET /ready`: 200 when every check passes, else 503. Without a token the directory checks
/// say ok or not without their detail (paths, OS errors).
fn ready(state: &AppState, authed: bool) -> Resp {
    let mut checks = state.readiness();
    if !authed {
        for (name, ok, msg) in &mut checks {
            // The directory checks name paths and OS errors; the others say nothing private.
            if state.writable_dirs.iter().any(|(d, _)| d == name) {
                *msg = if *ok {
                    "ok"
                } else {
                    "failing (detail with a token)"
                }
                .into();
            }
        }
    }
    let ok = checks.iter().all(|(_, ok, _)| *ok);
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, ok, msg)| (name.to_string(), json!({"ok": ok, "detail": msg})))
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"status": if ok { "ready" } else { "not_ready" }, "checks": detail}),
    )
}

fn metrics(state: &AppState) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
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

#[derive(Deserialize)]
struct DiagnoseBody {
    plant_id: String,
    equipment_id: String,
    problem_description: String,
    #[serde(default)]
    observed_defects: Vec<Observation>,
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

async fn diagnose(
    state: &AppState,
    req: Request<Incoming>,
    trace: &str,
    ctx: &mut Ctx,
) -> Result<Resp, ApiError> {
    let body: DiagnoseBody = json_body(state, req, ctx).await?;
    check_id("plant_id", &body.plant_id)?;
    check_id("equipment_id", &body.equipment_id)?;
    if !state.metrics.labels.plant_allowed(&body.plant_id) {
        ctx.plant_label = Some(UNKNOWN.to_string());
        return Err(ApiError::UnknownPlant(body.plant_id));
    }
    let m = &state.metrics;
    let plant = m.labels.plant(&body.plant_id);
    ctx.plant_label = Some(plant.clone());
    ctx.plant_id = Some(body.plant_id.clone());
    ctx.equipment_id = Some(body.equipment_id.clone());
    let desc = body.problem_description.trim();
    let chars = desc.chars().count();
    if !(3..=MAX_DESCRIPTION_CHARS).contains(&chars) {
        return Err(ApiError::Invalid(format!(
            "problem_description must be 3 to {MAX_DESCRIPTION_CHARS} characters, got {chars}"
        )));
    }
    if body.observed_defects.len() > MAX_OBSERVATIONS
        || body.observed_defects.iter().any(|o| {
            o.label.trim().is_empty() || o.label.len() > 64 || !(0.0..=1.0).contains(&o.confidence)
        })
    {
        return Err(ApiError::Invalid(format!(
            "observed_defects: at most {MAX_OBSERVATIONS} entries, each a label of 1-64 characters and a confidence in 0..1"
        )));
    }
    let equipment = m.labels.equipment(&plant, &body.equipment_id);
    m.equipment_requests.inc(&plant, &equipment);
    debug!(trace_id = %trace, user_id = ctx.user_id.as_deref().unwrap_or(""), plant_id = %body.plant_id, equipment_id = %body.equipment_id, "diagnosis_request_received");

    let active = m.active_agents.with_label_values(&[&plant, agent::RAG]);
    active.inc();
    let q = Question {
        plant_id: &body.plant_id,
        equipment_id: &body.equipment_id,
        problem_description: desc,
        observed_defects: &body.observed_defects,
    };
    // One snapshot of the engine for the whole request: a reload (SIGHUP) swaps in a new one
    // for later requests without disturbing this one.
    let kb = state.engine.get();
    let t_engine = Instant::now();
    let answer = kb.diagnose(&q);
    m.genai_duration
        .with_label_values(&[
            genai::INVOKE_AGENT,
            genai::LOCAL_PROVIDER,
            genai::LOCAL_MODEL,
            "",
        ])
        .observe(t_engine.elapsed().as_secs_f64());
    active.dec();
    m.languages.with_label_values(&[&answer.language]).inc();
    if let Some(r) = &answer.refusal {
        m.refusals.with_label_values(&[r.code()]).inc();
    }

    let mut report = std::borrow::Cow::Borrowed(answer.report.as_str());
    let mut answered_by = agent::RAG;
    let mut engine = std::borrow::Cow::Borrowed("bm25-local");
    let mut fallback_reason: Option<&'static str> = None;
    let (mut input_tokens, mut output_tokens) = (answer.input_tokens, answer.output_tokens);
    if let (Some(llm), true) = (&state.llm, answer.supported) {
        let active = m
            .active_agents
            .with_label_values(&[&plant, agent::LLM_REPORT]);
        active.inc();
        let t_llm = Instant::now();
        let r = llm
            .write_report(
                &body.plant_id,
                &body.equipment_id,
                desc,
                &kb.passages(&answer),
            )
            .await;
        active.dec();
        m.genai_duration
            .with_label_values(&[
                genai::CHAT,
                llm.provider(),
                llm.model(),
                r.as_ref().err().map_or("", |e| e.reason()),
            ])
            .observe(t_llm.elapsed().as_secs_f64());
        match r {
            Ok(r) => {
                report = std::borrow::Cow::Owned(r.text);
                answered_by = agent::LLM_REPORT;
                engine = std::borrow::Cow::Owned(format!("llm:{}", llm.model()));
                if r.input_tokens + r.output_tokens > 0 {
                    (input_tokens, output_tokens) = (r.input_tokens, r.output_tokens);
                    // Only counts the model reported (the conventions forbid estimates here).
                    for (kind, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
                        m.genai_tokens
                            .with_label_values(&[genai::CHAT, llm.provider(), llm.model(), kind])
                            .observe(n as f64);
                    }
                }
                let p = &state.prices;
                let cost = input_tokens as f64 / 1000.0 * p.input_per_1k_usd
                    + output_tokens as f64 / 1000.0 * p.output_per_1k_usd;
                m.cost
                    .with_label_values(&[&plant, agent::LLM_REPORT])
                    .inc_by(cost);
            }
            Err(e) => {
                fallback_reason = Some(e.reason());
                m.llm_fallback
                    .with_label_values(&[&plant, e.reason()])
                    .inc();
                warn!(trace_id = %trace, reason = e.reason(), error = %e, "llm_fallback");
            }
        }
    }
    m.tokens
        .with_label_values(&[&plant, answered_by, "input"])
        .inc_by(input_tokens);
    m.tokens
        .with_label_values(&[&plant, answered_by, "output"])
        .inc_by(output_tokens);
    m.record_answer(&plant, agent::RAG, answer.supported);

    let request_id = crate::ids::uuid();
    state.recent.insert(
        request_id,
        AnswerRecord {
            plant: plant.clone(),
            agent_name: agent::RAG,
        },
        Instant::now(),
    );
    ctx.answer = Some((request_id, answer.supported, answer.confidence));
    if answer.supported {
        debug!(trace_id = %trace, request_id = %request_id, confidence = answer.confidence, cited = %answer.guidance.cited_documents.join(","), "diagnosis_request_success");
    } else {
        warn!(trace_id = %trace, request_id = %request_id, best_relevance = answer.best_relevance, "no_supporting_document");
    }
    let out = DiagnoseResponse {
        request_id,
        trace_id: trace,
        plant_id: &body.plant_id,
        equipment_id: &body.equipment_id,
        vision_analysis: &answer.vision,
        rag_guidance: &answer.guidance,
        generated_report: &report,
        confidence_score: answer.confidence,
        answer_status: match &answer.refusal {
            None => "supported",
            Some(Refusal::NotAFaultReport) => "not_a_fault_report",
            Some(Refusal::LanguageNotSupported(_)) => "language_not_supported",
            Some(_) => "no_supporting_document",
        },
        hallucination_flag: !answer.supported,
        refusal_reason: answer.refusal.as_ref().map(|r| r.code()),
        understood: Understood {
            language: &answer.language,
            asset: answer.asset.as_ref(),
            rewrites: &answer.rewrites,
        },
        agent: AgentInfo {
            name: answered_by,
            engine: &engine,
            fallback: fallback_reason.is_some(),
            fallback_reason,
        },
        usage: Usage {
            input_tokens,
            output_tokens,
        },
    };
    // The body repeats the steps inside the report: about twice the report plus the rest.
    let hint = 2 * report.len()
        + answer
            .guidance
            .safety_notes
            .iter()
            .map(String::len)
            .sum::<usize>()
        + 1024;
    Ok(serialized_response(&out, hint))
}

/// The `/v1/diagnose` answer, serialised straight from borrowed parts (no `Value` tree).
#[derive(Serialize)]
struct DiagnoseResponse<'a> {
    request_id: Uuid,
    trace_id: &'a str,
    plant_id: &'a str,
    equipment_id: &'a str,
    vision_analysis: &'a VisionAnalysis,
    rag_guidance: &'a Guidance,
    generated_report: &'a str,
    confidence_score: f64,
    answer_status: &'static str,
    hallucination_flag: bool,
    /// Why nothing is cited: `no_matching_sop`, `out_of_scope`, `no_sop_for_equipment_class`,
    /// `no_sop_for_machine`, `not_a_fault_report`, `language_not_supported`.
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal_reason: Option<&'static str>,
    understood: Understood<'a>,
    agent: AgentInfo<'a>,
    usage: Usage,
}

/// What the engine understood: the question's language, the asset from the register, and the
/// words it rewrote (lexicon terms, compounds, typo corrections).
#[derive(Serialize)]
struct Understood<'a> {
    language: &'a str,
    asset: Option<&'a crate::diagnose::assets::Asset>,
    rewrites: &'a [String],
}

#[derive(Serialize)]
struct AgentInfo<'a> {
    name: &'static str,
    engine: &'a str,
    fallback: bool,
    fallback_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
}

/// `capacity` is a guess at the body's size: growing the buffer as it fills copies it each time.
fn serialized_response<T: Serialize>(v: &T, capacity: usize) -> Resp {
    let mut body = Vec::with_capacity(capacity);
    // Serialising these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, v);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[derive(Deserialize)]
struct FeedbackBody {
    request_id: String,
    score: i64,
    #[serde(default)]
    comment: Option<String>,
}

async fn feedback(
    state: &AppState,
    req: Request<Incoming>,
    trace: &str,
    ctx: &mut Ctx,
) -> Result<Resp, ApiError> {
    let body: FeedbackBody = json_body(state, req, ctx).await?;
    let id = Uuid::parse_str(&body.request_id).map_err(|_| {
        ApiError::Invalid("request_id must be a UUID returned by /v1/diagnose".into())
    })?;
    if !(1..=5).contains(&body.score) {
        return Err(ApiError::Invalid(format!(
            "score must be an integer from 1 to 5, got {}",
            body.score
        )));
    }
    let comment = body.comment.unwrap_or_default();
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::Invalid(format!(
            "comment must be at most {MAX_COMMENT_CHARS} characters"
        )));
    }
    let rec = match state.recent.take(&id, Instant::now()) {
        Lookup::Found(r) => r,
        Lookup::Unknown => return Err(ApiError::UnknownAnswer(id.to_string())),
        Lookup::AlreadyRated => return Err(ApiError::AlreadyRated(id.to_string())),
    };
    ctx.plant_label = Some(rec.plant.clone());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    state
        .metrics
        .record_feedback(&rec.plant, rec.agent_name, body.score as u8, now);
    info!(trace_id = %trace, request_id = %id, score = body.score, comment = %comment, "feedback_received");
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "recorded", "request_id": id.to_string(), "score": body.score, "trace_id": trace}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn gzip_only_when_accepted() {
        for (v, want) in [
            ("gzip, deflate, br", true),
            ("br;q=1.0, GZIP;q=0.5", true),
            ("*", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("deflate, br", false),
        ] {
            assert_eq!(
                accepts_gzip(&headers(&[("accept-encoding", v)])),
                want,
                "{v}"
            );
        }
        assert!(!accepts_gzip(&headers(&[])));
        let page = crate::console::find("/assets/common.js").unwrap();
        let plain = super::page(page, &headers(&[]), false);
        assert!(plain.headers().get("content-encoding").is_none());
        let gz = super::page(page, &headers(&[("accept-encoding", "gzip")]), false);
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        assert_eq!(gz.headers()["vary"], "accept-encoding");
        let head = super::page(page, &headers(&[("accept-encoding", "gzip")]), true);
        assert_eq!(head.headers()["content-length"], page.gz.len().to_string());
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
