//! `GET /v1/status`: the gateway's state for plant IT and the status page.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use serde_json::json;

use super::{json_response, Resp};
use crate::http::AppState;

/// Knowledge gaps listed by `/v1/status`, newest first.
const KNOWLEDGE_GAPS_SHOWN: usize = 20;

/// `GET /v1/status`: the gateway's state for plant IT and the status page. Without a valid token
/// it shows nothing sensitive (ids, version, counts, link states, backlog sizes); with one it adds
/// the sinks' last error texts (which name hosts and URLs) and the recent warnings.
pub(super) fn get(state: &AppState, authed: bool) -> Resp {
    let engine = state.engine.get();
    let kb = state.kb.view();
    let rfc =
        |ms: i64| crate::logging::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
    let sinks = crate::status::sinks_json(
        &crate::status::from_service(&state.sinks, state.spool.as_deref(), &state.metrics.sink),
        authed,
    );
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
            "version": kb.version,
            "hash": kb.hash,
            "source": kb.source,
            "created": kb.created_ms.map(rfc),
            "last_check": kb.last_check_ms.map(rfc),
            "last_change": rfc(kb.last_change_ms),
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
    if authed {
        // Errors name the source's URL or broker.
        out["knowledge_base"]["last_error"] = json!(kb.last_error);
    }
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
        // The questions no SOP answered and the answers rated badly: for the maintenance
        // engineer who writes the next SOP (question texts: signed in only).
        out["knowledge_gaps"] = json!(state.gaps.newest(KNOWLEDGE_GAPS_SHOWN));
    }
    json_response(StatusCode::OK, &out)
}
