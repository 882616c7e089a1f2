//! Each sink's link state and backlog, derived in one place for the two views of it:
//! `copilot-edge spool status` (another process than the service: it reads the files the
//! service writes) and `GET /v1/status` (the running service: its live backlog and gauges; the
//! status page renders that JSON).
//!
//! Composition level: the spool knows nothing of sinks (its read-only view and its backlog name
//! consumers only by cursor), and the sinks know nothing of these views. This module joins the
//! spool's view, the sinks' state files (`<spool dir>/sinks/<sink>.json`, written by
//! [`crate::sinks::SinkHealth`]) and the sink list of the config ([`crate::sinks::enabled`],
//! [`crate::sinks::draining_spool`]). It only reads, so `spool status` is safe while the service
//! runs.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::Config;
use crate::metrics::SinkMetrics;
use crate::sinks::{draining_spool, read_states, state_since_ms};
use crate::spool::{Inspection, Spool, SpoolError};

/// One sink as the status views show it.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkView {
    /// The sink's name (its `NAME`, spool cursor and state file).
    pub name: String,
    /// `online`, `offline` or `auth_failed`; `None` while nothing is recorded (no state file,
    /// and for the service no gauge set either).
    pub link: Option<String>,
    /// When the link state began (Unix ms), from the state file.
    pub since_ms: Option<i64>,
    /// The highest sequence number the sink acknowledged (0: none yet); `None` for a sink that
    /// does not drain the spool (the Pushgateway) or one only a state file names.
    pub delivered_seq: Option<u64>,
    /// Records after `delivered_seq` still in the spool.
    pub backlog_records: u64,
    /// Their bytes on disk; `None` where unknown (the file view counts records only).
    pub backlog_bytes: Option<u64>,
    /// Age of the oldest pending record (ms): the file view from the record's stamp, the service
    /// from its spool's timeline (true across a wall-clock step).
    pub oldest_pending_age_ms: Option<i64>,
    /// The last delivery (Unix ms).
    pub last_success_ms: Option<i64>,
    /// The last error text, empty if none (it names hosts and URLs: signed-in viewers only).
    pub last_error: String,
}

/// The sinks as the files show them, for `spool status`: those of `cfg` that drain the spool,
/// then any other with a cursor (a sink configured before), then those with only a state file
/// (the Pushgateway). `now_ms` dates the backlog.
pub fn from_files(cfg: &Config, spool: &Inspection, now_ms: i64) -> Vec<SinkView> {
    let states = read_states(&cfg.spool.dir);
    let mut names: Vec<String> = draining_spool(cfg).iter().map(|s| s.to_string()).collect();
    for (name, _) in &spool.cursors {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut views: Vec<SinkView> = names
        .iter()
        .map(|name| {
            let acked = spool
                .cursors
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |c| c.1);
            let mut pending = spool.records.iter().filter(|r| r.0 > acked).peekable();
            SinkView {
                delivered_seq: Some(acked),
                oldest_pending_age_ms: pending.peek().map(|r| (now_ms - r.1).max(0)),
                backlog_records: pending.count() as u64,
                ..file_view(name, state_file(&states, name))
            }
        })
        .collect();
    for (name, file) in &states {
        if !names.contains(name) {
            views.push(file_view(name, Some(file)));
        }
    }
    views
}

/// The sinks `names` (the enabled ones, in config order) as the running service sees them:
/// link state from its gauges, backlog from its spool, `since` and the last error from the state
/// files.
pub fn from_service(names: &[&str], spool: Option<&Spool>, m: &SinkMetrics) -> Vec<SinkView> {
    let backlog = spool.map(|s| s.backlog()).unwrap_or_default();
    let states = spool.map(|s| read_states(s.dir())).unwrap_or_default();
    names
        .iter()
        .map(|&name| {
            let file = state_file(&states, name);
            let link = if m.auth_failed.with_label_values(&[name]).get() == 1 {
                Some("auth_failed")
            } else if m.up.with_label_values(&[name]).get() == 1 {
                Some("online")
            } else {
                file.map(|_| "offline")
            };
            let last_success = m.last_success.with_label_values(&[name]).get();
            let b = backlog.iter().find(|b| b.sink == name);
            SinkView {
                link: link.map(String::from),
                delivered_seq: b.map(|b| b.acked),
                backlog_records: b.map_or(0, |b| b.pending_records),
                backlog_bytes: Some(b.map_or(0, |b| b.pending_bytes)),
                oldest_pending_age_ms: b.and_then(|b| b.oldest_pending_age_ms),
                last_success_ms: (last_success > 0.0).then_some((last_success * 1000.0) as i64),
                ..file_view(name, file)
            }
        })
        .collect()
}

/// `copilot-edge spool status`: the spool directory and each sink's backlog and link state, read
/// from the files the service writes, without modifying anything.
pub fn spool_status(cfg: &Config) -> Result<String, SpoolError> {
    let dir = &cfg.spool.dir;
    let mut out = format!("spool {}\n", dir.display());
    let Some(spool) = crate::spool::inspect(dir)? else {
        out.push_str("  empty (no segments yet)\n");
        return Ok(out);
    };
    let records = &spool.records;
    out.push_str(&format!(
        "  segments: {}  bytes: {}  (max {})\n",
        spool.segments, spool.bytes, cfg.spool.max_bytes
    ));
    out.push_str(&format!(
        "  records: {}  seq {}..{}\n",
        records.len(),
        records.first().map_or(0, |r| r.0),
        records.last().map_or(0, |r| r.0)
    ));
    let now = crate::clock::now_ms();
    for s in from_files(cfg, &spool, now) {
        out.push_str(&sink_line(&s, now));
    }
    Ok(out)
}

/// The `sinks` array of `/v1/status`; `authed` adds each sink's last error.
pub fn sinks_json(views: &[SinkView], authed: bool) -> Value {
    let rfc =
        |ms: i64| crate::logging::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
    views
        .iter()
        .map(|s| {
            let mut v = json!({
                "name": s.name,
                "link": s.link.as_deref().unwrap_or("unknown"),
                "since": s.since_ms.map(rfc),
                "backlog_records": s.backlog_records,
                "backlog_bytes": s.backlog_bytes.unwrap_or(0),
                "oldest_pending_age_seconds": s
                    .oldest_pending_age_ms
                    .map(|a| (a as f64 / 100.0).round() / 10.0),
                "last_success": s.last_success_ms.map(rfc),
            });
            if authed {
                v["last_error"] = json!(s.last_error);
            }
            v
        })
        .collect()
}

/// One sink's line of `spool status`: `  sink mqtt: delivered up to seq 7, backlog 3 records,
/// oldest 12s, link offline for 10s (last error: …)`, or only the link for a sink without a
/// backlog.
fn sink_line(s: &SinkView, now_ms: i64) -> String {
    let mut link = String::new();
    if let Some(state) = &s.link {
        let since = s.since_ms.map_or(0, |t| (now_ms - t).max(0) / 1000);
        link = format!(", link {state} for {since}s");
        if state != "online" && !s.last_error.is_empty() {
            link.push_str(&format!(" (last error: {})", s.last_error));
        }
    }
    let Some(seq) = s.delivered_seq else {
        return format!("  sink {}:{link}\n", s.name);
    };
    let age = s
        .oldest_pending_age_ms
        .map_or("-".to_string(), |a| format!("{:.0}s", a as f64 / 1000.0));
    format!(
        "  sink {}: delivered up to seq {seq}, backlog {} records, oldest {age}{link}\n",
        s.name, s.backlog_records
    )
}

/// What a sink's state file says (link state, since, last success, last error), no backlog.
fn file_view(name: &str, file: Option<&Value>) -> SinkView {
    SinkView {
        name: name.to_string(),
        link: file.map(|f| f["state"].as_str().unwrap_or("unknown").to_string()),
        since_ms: file.and_then(state_since_ms),
        delivered_seq: None,
        backlog_records: 0,
        backlog_bytes: None,
        oldest_pending_age_ms: None,
        last_success_ms: file.and_then(|f| f["last_success_ms"].as_i64()),
        last_error: file
            .and_then(|f| f["last_error"].as_str())
            .unwrap_or("")
            .to_string(),
    }
}

/// The state file of `sink` among those [`read_states`] found.
fn state_file<'a>(states: &'a [(String, Value)], sink: &str) -> Option<&'a Value> {
    states.iter().find(|(n, _)| n == sink).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str) -> SinkView {
        file_view(name, None)
    }

    #[test]
    fn spool_status_lines() {
        let now = 1_700_000_100_000;
        let cases = [
            (
                SinkView {
                    delivered_seq: Some(7),
                    backlog_records: 3,
                    oldest_pending_age_ms: Some(12_400),
                    link: Some("offline".into()),
                    since_ms: Some(now - 10_900),
                    last_error: "mqtt: timed out".into(),
                    ..view("mqtt")
                },
                "  sink mqtt: delivered up to seq 7, backlog 3 records, oldest 12s, link offline for 10s (last error: mqtt: timed out)\n",
            ),
            (
                SinkView {
                    delivered_seq: Some(0),
                    ..view("remote_write")
                },
                "  sink remote_write: delivered up to seq 0, backlog 0 records, oldest -\n",
            ),
            (
                // An online link hides its last error; a missing `since` reads 0 s.
                SinkView {
                    link: Some("online".into()),
                    last_error: "old".into(),
                    ..view("pushgateway")
                },
                "  sink pushgateway:, link online for 0s\n",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(sink_line(&v, now), want);
        }
    }

    #[test]
    fn sinks_json_hides_errors_without_a_token() {
        let views = [SinkView {
            backlog_bytes: Some(512),
            oldest_pending_age_ms: Some(12_345),
            last_success_ms: Some(1_700_000_000_123),
            last_error: "status 401".into(),
            ..view("remote_write")
        }];
        let want = json!([{
            "name": "remote_write",
            "link": "unknown",
            "since": null,
            "backlog_records": 0,
            "backlog_bytes": 512,
            "oldest_pending_age_seconds": 12.3,
            "last_success": "2023-11-14T22:13:20.123000Z",
        }]);
        assert_eq!(sinks_json(&views, false), want);
        assert_eq!(sinks_json(&views, true)[0]["last_error"], "status 401");
    }
}
