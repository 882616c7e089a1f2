//! VictoriaMetrics as the fleet's central store (Debian's `victoria-metrics`: the single-node
//! server and `vmalert`), with no change to the agent: its remote-write sink delivers to
//! `/api/v1/write`, a backlog spooled while the store was down arrives with its original
//! timestamps, `vmalert` evaluates the shipped alert and recording rules (recording results
//! written back into the store), and every query of the shipped dashboard evaluates against it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::services::{alertmanager, urlencode, victoria_metrics_on, vmalert};
use crate::common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Instant query against the store: the result vector.
fn query(url: &str, q: &str) -> Vec<serde_json::Value> {
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let r = request(
        addr,
        "GET",
        &format!("/api/v1/query?query={}", urlencode(q)),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    r.json()["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Raw samples of a series selector (VictoriaMetrics' export API): timestamps in ms.
fn exported_timestamps(url: &str, selector: &str) -> Vec<i64> {
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let path = format!("/api/v1/export?match[]={}&start=0", urlencode(selector));
    let r = request(addr, "GET", &path, &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ts: Vec<i64> = r
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| {
            v["timestamps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| t.as_i64())
        })
        .collect();
    ts.sort_unstable();
    ts
}

#[test]
fn victoria_metrics_takes_remote_write_backfill_rules_and_dashboard_queries() {
    let port = free_port();
    let data = TempDir::new("vm-data");
    let dir = TempDir::new("vm-agent");
    // The store is down when the gateway starts: snapshots are spooled.
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!("[metrics]\nsnapshot_interval_secs = 1\n\n[sinks.remote_write]\nenabled = true\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ntimeout_ms = 2000\n"),
        ),
    );
    let traffic = Traffic::start(a.addr, "vm");
    std::thread::sleep(Duration::from_secs(5));
    let vm_started = now_ms();
    let vm = victoria_metrics_on(port, data.path());
    let url = vm.url();
    a.wait_event("sink_online", Duration::from_secs(30), |e| {
        e["sink"] == "remote_write"
    });
    wait_for("backlog delivered", Duration::from_secs(30), || {
        (a.metric(
            "copilot_edge_spool_oldest_record_age_seconds",
            &["sink=\"remote_write\""],
        )
        .unwrap_or(1e9)
            < 3.0)
            .then_some(())
    });
    // The outage's snapshots are there with their own timestamps (before the store started).
    let ts = wait_for(
        "samples in VictoriaMetrics",
        Duration::from_secs(20),
        || {
            let ts = exported_timestamps(&url, "copilot_edge_build_info{gateway_id=\"gw-test\"}");
            (ts.len() >= 5 && ts[0] < vm_started - 2_000).then_some(ts)
        },
    );
    assert!(
        ts.windows(2).all(|w| w[1] - w[0] <= 2_500),
        "gap in the backfilled series: {ts:?}"
    );

    // vmalert runs the shipped rule files against the store.
    let am =
        alertmanager(&std::fs::read_to_string(repo().join("alerts/alertmanager.yml")).unwrap());
    let rules = [
        repo().join("alerts/copilot-edge.rules.yml"),
        repo().join("alerts/copilot-edge.recording.yml"),
    ];
    let vma = vmalert(&url, &am.url(), &rules);
    std::thread::sleep(Duration::from_secs(8));
    let r = request(vma.addr(), "GET", "/api/v1/rules", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let groups = r.json()["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shipped: usize = rules
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| l.trim_start().starts_with("- name:"))
                .count()
        })
        .sum();
    assert_eq!(
        groups.len(),
        shipped,
        "vmalert loaded {} of {shipped} groups",
        groups.len()
    );
    let mut evaluated = 0;
    for g in &groups {
        for rule in g["rules"].as_array().into_iter().flatten() {
            let err = rule["lastError"].as_str().unwrap_or("");
            assert!(
                err.is_empty(),
                "rule {} failed on VictoriaMetrics: {err}",
                rule["name"]
            );
            evaluated += 1;
        }
    }
    assert!(evaluated >= 20, "{evaluated} rules");
    let early = ts.iter().filter(|&&t| t < vm_started).count();
    eprintln!(
        "VictoriaMetrics: {early} snapshots from before it started backfilled; vmalert: {} groups, {evaluated} rules, no errors",
        groups.len()
    );
    // Recording-rule results are written back into the store (the P95 one needs two rounds of
    // the bucket rate it is computed from).
    for recorded in [
        "plant_id:copilot_requests:rate5m",
        "plant_id:copilot_latency_seconds:p95_5m",
    ] {
        wait_for(recorded, Duration::from_secs(40), || {
            (!query(&url, &format!("{recorded}{{plant_id=\"plant-7\"}}")).is_empty()).then_some(())
        });
    }
    let sent = traffic.stop();
    assert!(sent > 20, "only {sent} requests");

    // Every dashboard query evaluates; the panels the remote-write data and the recording rules
    // feed have data.
    let require = r"^(P95 latency|Requests / s|Latency P50 / P95 / P99|Requests per second by status code|Top equipment|Sink status|Spool backlog \(records\)|Memory \(RSS\)|Agent versions|P95 latency by plant \(recorded\)|GenAI operation duration P95 by operation and model)$";
    assert_dashboard_queries(&url, require);
}

/// A replay held to its rate while new snapshots keep coming: the newest goes out live first,
/// and its place in the replay is skipped, so the store holds each snapshot's samples once.
/// VictoriaMetrics without `-dedup.minScrapeInterval` keeps every copy it is sent, which makes
/// it the receiver that shows a double send.
#[test]
fn a_throttled_replay_never_sends_a_sample_twice() {
    let port = free_port();
    let data = TempDir::new("vm-dup-data");
    let dir = TempDir::new("vm-dup-agent");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!("[metrics]\nsnapshot_interval_secs = 1\n\n[sinks.remote_write]\nenabled = true\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ntimeout_ms = 2000\nbacklog_records_per_sec = 2\n"),
        ),
    );
    std::thread::sleep(Duration::from_secs(10));
    // The outage's snapshots, read before delivery deletes their segments.
    let spooled = crate::remote_write::snapshot_times(dir.path());
    assert!(spooled.len() >= 8, "{} snapshots spooled", spooled.len());
    let vm = victoria_metrics_on(port, data.path());
    let url = vm.url();
    a.wait_event("sink_online", Duration::from_secs(30), |e| {
        e["sink"] == "remote_write"
    });
    wait_for("backlog delivered", Duration::from_secs(60), || {
        (a.metric(
            "copilot_edge_spool_oldest_record_age_seconds",
            &["sink=\"remote_write\""],
        )
        .unwrap_or(1e9)
            < 2.5)
            .then_some(())
    });
    // A few more live snapshots after the catch-up.
    std::thread::sleep(Duration::from_secs(3));
    let sel = "copilot_edge_build_info{gateway_id=\"gw-test\"}";
    let got = wait_for("every snapshot stored", Duration::from_secs(20), || {
        let ts = exported_timestamps(&url, sel);
        spooled
            .iter()
            .all(|t| ts.binary_search(t).is_ok())
            .then_some(ts)
    });
    let mut dups: Vec<i64> = got
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    dups.dedup();
    assert!(
        dups.is_empty(),
        "{} snapshots stored twice of {}: {dups:?}",
        dups.len(),
        spooled.len()
    );
    // Nothing taken while the replay ran is missing: from the first snapshot on, one every
    // second (a gap of two intervals would be a lost snapshot), and some were taken live.
    let first = spooled[0];
    let stored: Vec<i64> = got.iter().copied().filter(|t| *t >= first).collect();
    let gap = stored.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    eprintln!(
        "{} spooled, {} stored from the first on, largest gap {gap} ms",
        spooled.len(),
        stored.len()
    );
    assert!(
        gap < 1900,
        "a snapshot is missing: {gap} ms between two stored snapshots in {stored:?}"
    );
    assert!(
        stored.len() > spooled.len() + 3,
        "live snapshots during the replay are missing: {} stored, {} spooled",
        stored.len(),
        spooled.len()
    );
}

/// Write requests VictoriaMetrics has answered on `/api/v1/write` (its own counter).
fn write_requests(url: &str) -> f64 {
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    request(addr, "GET", "/metrics", &[], b"")
        .text()
        .lines()
        .filter(|l| l.starts_with("vm_http_requests_total{path=\"/api/v1/write\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn batched_live_snapshots_arrive_complete_in_fewer_requests() {
    // A metered uplink: `batch_snapshots = 3` sends live snapshots three to a request, none
    // missing, none held longer than the batch.
    let port = free_port();
    let data = TempDir::new("vm-batch-data");
    let vm = victoria_metrics_on(port, data.path());
    let url = vm.url();
    let dir = TempDir::new("vm-batch-agent");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!("[metrics]\nsnapshot_interval_secs = 1\n\n[sinks.remote_write]\nenabled = true\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ntimeout_ms = 2000\nbatch_snapshots = 3\n"),
        ),
    );
    a.wait_event("sink_online", Duration::from_secs(30), |e| {
        e["sink"] == "remote_write"
    });
    let sel = "copilot_edge_build_info{gateway_id=\"gw-test\"}";
    let (req0, n0) = (write_requests(&url), exported_timestamps(&url, sel).len());
    std::thread::sleep(Duration::from_secs(12));
    let (req1, ts) = (write_requests(&url), exported_timestamps(&url, sel));
    let (requests, snapshots) = (req1 - req0, ts.len() - n0);
    eprintln!("{snapshots} snapshots in {requests} write requests");
    assert!(snapshots >= 8, "{snapshots} snapshots stored in 12 s");
    assert!(
        requests * 2.5 <= snapshots as f64 + 2.5,
        "{snapshots} snapshots took {requests} requests (three to a request expected)"
    );
    // None missing (one every second), and the newest at most a batch behind.
    let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(gap < 1900, "a snapshot is missing: {gap} ms gap in {ts:?}");
    let behind = now_ms() - ts.last().copied().unwrap_or(0);
    assert!(
        behind < 4_500,
        "the newest stored snapshot is {behind} ms old"
    );
}
