//! The machine endpoints: `GET /health` (liveness), `GET /ready` (readiness with its checks) and
//! `GET /metrics` (Prometheus).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::{json_response, Resp};
use crate::http::AppState;

/// `GET /health`: the process answers (liveness).
pub(super) fn health(state: &AppState) -> Resp {
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "uptime_seconds": state.started.elapsed().as_secs()}),
    )
}

/// `GET /ready`: 200 when every check passes, else 503. Without a token the directory checks
/// say ok or not without their detail (paths, OS errors).
pub(super) fn ready(state: &AppState, authed: bool) -> Resp {
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

/// `GET /metrics`: the Prometheus text exposition.
pub(super) fn metrics(state: &AppState) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
