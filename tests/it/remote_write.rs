//! Remote write: an outage backfilled into a real Prometheus (remote-write receiver with an
//! out-of-order window), also across a SIGKILL; and a receiver that refuses a batch does not
//! block the ones after it (a scripted receiver: a real Prometheus cannot be made to answer 400
//! and 503 on cue).

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use copilot_edge::spool::segment::{self, Kind};

use crate::common::services::{prom_query, prometheus_on, urlencode};
use crate::common::*;

const PRESS: &str = "hydraulic press vibrates above 5 mm/s and leaks coolant near the primary line";

fn rw_config(dir: &std::path::Path, port: u16) -> String {
    config_with(
        dir,
        &format!("[metrics]\nsnapshot_interval_secs = 1\n\n[sinks.remote_write]\nenabled = true\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ntimeout_ms = 2000\n"),
    )
}

/// Timestamps of every metrics snapshot in the spool directory.
pub(crate) fn snapshot_times(dir: &std::path::Path) -> Vec<i64> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("state/spool/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut last = 0;
    let mut out = Vec::new();
    for f in files {
        let s = segment::scan(&std::fs::read(f).unwrap(), last);
        for (r, _) in s.records {
            last = r.seq;
            if r.kind == Kind::Metrics {
                out.push(r.ts_ms);
            }
        }
    }
    out
}

/// Raw samples `(ts_ms, value)` of a selector over a window ending at `end_ms`.
pub(crate) fn raw_samples(
    prom: &crate::common::services::Service,
    selector: &str,
    start_ms: i64,
    end_ms: i64,
) -> Vec<(i64, f64)> {
    let secs = ((end_ms - start_ms) / 1000 + 2).max(1);
    let q = format!("{selector}[{secs}s]");
    let path = format!(
        "/api/v1/query?query={}&time={:.3}",
        urlencode(&q),
        end_ms as f64 / 1000.0 + 0.5
    );
    let v = request(prom.addr(), "GET", &path, &[], b"").json();
    assert_eq!(v["status"], "success", "{v}");
    let mut out = Vec::new();
    for series in v["data"]["result"].as_array().unwrap() {
        for p in series["values"].as_array().unwrap() {
            out.push((
                (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                p[1].as_str().unwrap().parse().unwrap(),
            ));
        }
    }
    out.sort_by_key(|x| x.0);
    out
}

/// Waits until the receiver holds a sample for every spooled snapshot, then checks that the
/// backfilled timestamps are exactly the snapshots' (no gaps, nothing invented).
pub(crate) fn assert_backfilled(prom: &crate::common::services::Service, times: &[i64]) {
    let (first, last) = (times[0], *times.last().unwrap());
    let sel = "copilot_edge_build_info{gateway_id=\"gw-test\"}";
    let got = wait_for("backfill", Duration::from_secs(30), || {
        let got: Vec<i64> = raw_samples(prom, sel, first, last)
            .iter()
            .map(|s| s.0)
            .filter(|t| *t <= last)
            .collect();
        (got.len() >= times.len()).then_some(got)
    });
    assert_eq!(
        got, times,
        "backfilled timestamps differ from the spooled snapshots"
    );
}

fn send_requests(a: &Agent, n: usize) {
    for _ in 0..n {
        assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
    }
}

#[test]
fn outage_is_backfilled_with_original_timestamps() {
    let port = free_port();
    let dir = TempDir::new("rw");
    let a = Agent::start(dir.path(), &rw_config(dir.path(), port));
    // Outage: the receiver is down while traffic flows over several snapshot intervals.
    let mut sent = 0;
    for _ in 0..5 {
        send_requests(&a, 7);
        sent += 7;
        std::thread::sleep(Duration::from_millis(1000));
    }
    std::thread::sleep(Duration::from_millis(1500)); // a snapshot after the last request
    a.wait_event("sink_offline", Duration::from_secs(5), |e| {
        e["sink"] == "remote_write"
    });
    let times = snapshot_times(dir.path());
    assert!(times.len() >= 6, "{} snapshots", times.len());
    let (first, last) = (times[0], *times.last().unwrap());

    let prom = prometheus_on(port, &[], &[], None, &[]);
    assert_backfilled(&prom, &times);
    // Counters: the last value is every request sent; increase() over the outage agrees.
    let sel = "copilot_requests_total{gateway_id=\"gw-test\",agent_name=\"rag_agent\",status_code=\"200\",site=\"plant-7\"}";
    let samples = raw_samples(&prom, sel, first, last);
    assert_eq!(samples.last().unwrap().1, sent as f64, "{samples:?}");
    let (s0, s1) = (samples[0], *samples.last().unwrap());
    let range_ms = s1.0 - s0.0 + 1;
    let inc = prom_query(&prom, &format!("increase({sel}[{range_ms}ms])"));
    let q = format!(
        "/api/v1/query?query={}&time={:.3}",
        urlencode(&format!("increase({sel}[{range_ms}ms])")),
        s1.0 as f64 / 1000.0
    );
    let v = request(prom.addr(), "GET", &q, &[], b"").json();
    let increase: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("{v} {inc}"))
        .parse()
        .unwrap();
    assert!(
        (increase - (s1.1 - s0.1)).abs() < 0.05,
        "increase {increase} vs {}",
        s1.1 - s0.1
    );
    // Histograms arrive as a scrape would produce them, so the SLA query works on backfill.
    let h = raw_samples(
        &prom,
        "copilot_latency_seconds_bucket{le=\"+Inf\",plant_id=\"plant-7\"}",
        first,
        last,
    );
    assert_eq!(h.last().unwrap().1, sent as f64);
    wait_for("sink online", Duration::from_secs(5), || {
        (a.metric("copilot_edge_sink_up", &["sink=\"remote_write\""]) == Some(1.0)).then_some(())
    });
}

#[test]
fn sigkill_during_outage_then_backfill() {
    let port = free_port();
    let dir = TempDir::new("rw-kill");
    let cfg = rw_config(dir.path(), port);
    let a = Agent::start(dir.path(), &cfg);
    send_requests(&a, 9);
    std::thread::sleep(Duration::from_millis(2200));
    a.kill();
    let b = Agent::start(dir.path(), &cfg);
    send_requests(&b, 4);
    std::thread::sleep(Duration::from_millis(2200));
    let times = snapshot_times(dir.path());
    let (first, last) = (times[0], *times.last().unwrap());
    let prom = prometheus_on(port, &[], &[], None, &[]);
    assert_backfilled(&prom, &times);
    // The counter reset at the restart: 9 before the kill, 4 after.
    let samples = raw_samples(
        &prom,
        "copilot_requests_total{gateway_id=\"gw-test\",status_code=\"200\"}",
        first,
        last,
    );
    let before = samples
        .iter()
        .take_while(|s| s.1 >= samples[0].1)
        .map(|s| s.1)
        .fold(0.0, f64::max);
    assert_eq!(before, 9.0, "{samples:?}");
    assert_eq!(samples.last().unwrap().1, 4.0);
    drop(b);
}

/// A scripted remote-write receiver: answers from a script of statuses (then 204), records the
/// decompressed bodies.
struct ScriptedReceiver {
    port: u16,
    bodies: Arc<Mutex<Vec<(u16, Vec<u8>)>>>,
}

impl ScriptedReceiver {
    fn start(script: Vec<u16>) -> ScriptedReceiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b2 = bodies.clone();
        let script = Arc::new(Mutex::new(script.into_iter()));
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let Some(req) = crate::common::http::read_request(&c) else {
                    continue;
                };
                assert_eq!(
                    req.header("content-encoding"),
                    Some("snappy"),
                    "remote write must be snappy-encoded"
                );
                let body = req.body;
                let raw = snap::raw::Decoder::new()
                    .decompress_vec(&body)
                    .expect("valid snappy block");
                let status = script.lock().unwrap().next().unwrap_or(204);
                b2.lock().unwrap().push((status, raw));
                let reason = match status {
                    400 => "Bad Request",
                    503 => "Service Unavailable",
                    _ => "No Content",
                };
                let msg = if status == 400 { "out of bounds" } else { "" };
                let _ = write!(c, "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}", msg.len());
            }
        });
        ScriptedReceiver { port, bodies }
    }
}

#[test]
fn rejected_batch_does_not_block_later_ones_and_5xx_is_retried() {
    let rx = ScriptedReceiver::start(vec![503, 503, 400]);
    let dir = TempDir::new("rw-400");
    let a = Agent::start(dir.path(), &rw_config(dir.path(), rx.port));
    send_requests(&a, 3);
    wait_for(
        "batches after the rejected one",
        Duration::from_secs(20),
        || {
            (rx.bodies
                .lock()
                .unwrap()
                .iter()
                .filter(|b| b.0 == 204)
                .count()
                >= 2)
                .then_some(())
        },
    );
    let got = rx.bodies.lock().unwrap().clone();
    assert_eq!(got[0].0, 503);
    // 5xx is retried with the same batch; the 400 is not retried.
    assert_eq!(got[0].1, got[1].1, "a 503'd batch is sent again unchanged");
    assert_eq!(got[1].1, got[2].1);
    assert_ne!(
        got[2].1, got[3].1,
        "the rejected batch is dropped, the next one follows"
    );
    for (_, raw) in &got {
        assert!(raw
            .windows(b"copilot_edge_build_info".len())
            .any(|w| w == b"copilot_edge_build_info"));
    }
    wait_for("rejection counted", Duration::from_secs(5), || {
        (a.sink_rejected("remote_write") >= 1.0).then_some(())
    });
    assert!(
        a.metric(
            "copilot_edge_sink_errors_total",
            &["sink=\"remote_write\"", "kind=\"status\""]
        )
        .unwrap()
            >= 2.0
    );
    a.wait_event("sink_batch_rejected", Duration::from_secs(5), |e| {
        e["status"] == 400
    });
}

#[test]
fn refused_batches_are_logged_once_a_minute_not_once_each() {
    let rx = ScriptedReceiver::start(vec![400; 12]);
    let dir = TempDir::new("rw-400s");
    let a = Agent::start(dir.path(), &rw_config(dir.path(), rx.port));
    send_requests(&a, 3);
    wait_for("twelve refused batches", Duration::from_secs(30), || {
        (rx.bodies.lock().unwrap().len() >= 12).then_some(())
    });
    wait_for("the refusals counted", Duration::from_secs(5), || {
        (a.metric(
            "copilot_edge_sink_errors_total",
            &["sink=\"remote_write\"", "kind=\"rejected\""],
        )
        .unwrap_or(0.0)
            >= 12.0)
            .then_some(())
    });
    let lines = a
        .events()
        .iter()
        .filter(|e| e["event"] == "sink_batch_rejected")
        .count();
    assert_eq!(lines, 1, "one line for a burst of refusals");
}

/// A receiver that accepts everything and dates its answers `offset_secs` from the true time.
fn dated_receiver(offset_secs: i64) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            if crate::common::http::read_request(&c).is_none() {
                continue;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
                + offset_secs;
            let out = std::process::Command::new("date")
                .args(["-u", "-d", &format!("@{now}"), "+%a, %d %b %Y %H:%M:%S GMT"])
                .output()
                .unwrap();
            let date = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let _ = write!(
                c,
                "HTTP/1.1 204 No Content\r\nDate: {date}\r\nConnection: close\r\n\r\n"
            );
        }
    });
    port
}

#[test]
fn a_clock_off_from_the_receivers_is_measured_and_said() {
    // The receiver is a day behind this gateway: the gateway's clock is a day ahead.
    let port = dated_receiver(-86_400);
    let dir = TempDir::new("rw-clock");
    let a = Agent::start(dir.path(), &rw_config(dir.path(), port));
    send_requests(&a, 1);
    let e = a.wait_event("clock_skew_detected", Duration::from_secs(20), |_| true);
    let skew = e["skew_seconds"].as_i64().unwrap();
    assert!((86_390..=86_410).contains(&skew), "{e}");
    let m = a.metric("copilot_edge_clock_skew_seconds", &[]).unwrap();
    assert!((86_390.0..=86_410.0).contains(&m), "{m}");
    let status = a.get("/v1/status").json();
    assert_eq!(status["clock"]["ok"], false, "{status}");
}

#[test]
fn a_right_clock_reads_near_zero() {
    let port = dated_receiver(0);
    let dir = TempDir::new("rw-clock0");
    let a = Agent::start(dir.path(), &rw_config(dir.path(), port));
    send_requests(&a, 1);
    let m = wait_for("a measured skew", Duration::from_secs(20), || {
        a.metric("copilot_edge_clock_skew_seconds", &[])
    });
    assert!(m.abs() <= 2.0, "{m}");
    assert!(!a
        .events()
        .iter()
        .any(|e| e["event"] == "clock_skew_detected"));
    assert_eq!(a.get("/v1/status").json()["clock"]["ok"], true);
}
