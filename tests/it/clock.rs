//! A gateway clock that steps: the wall clock moved under the real binary with Debian's
//! libfaketime (on the agent only; the monotonic clock untouched, as NTP leaves it) while the
//! receivers run on the true time.

use std::path::Path;
use std::time::Duration;

use crate::common::services::{prom_value, prometheus_at, prometheus_with_config};
use crate::common::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The agent's environment for a wall clock offset read from `file` at every call.
fn faketime(file: &Path) -> Vec<(&'static str, String)> {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: tests/run installs Debian's faketime"
    );
    vec![
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

/// A wall-clock offset file in `dir` starting at `start` (libfaketime syntax: `+0`, `-1h`,
/// `+1d`), and the agent started with `config` under it: (agent, offset file).
fn agent_on_fake_clock(dir: &Path, start: &str, config: &str) -> (Agent, std::path::PathBuf) {
    let offset = dir.join("faketime");
    std::fs::write(&offset, format!("{start}\n")).unwrap();
    let env = faketime(&offset);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (Agent::start_env(dir, config, &env), offset)
}

fn remote_write_config(dir: &Path, gateway: &str, port: u16) -> String {
    config_with(
        dir,
        &format!("[metrics]\nsnapshot_interval_secs = 1\n\n[sinks.remote_write]\nenabled = true\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ntimeout_ms = 2000\n"),
    )
    .replace("gw-test", gateway)
}

/// One hour back in the middle of a run, against a Prometheus without an out-of-order window
/// (which refuses any sample older than the newest of its series): every snapshot is stored,
/// in order, one interval apart, none refused.
#[test]
fn a_backward_step_never_moves_record_times_back() {
    backward_step("global:\n  scrape_interval: 15s\n");
}

/// The same with the shipped 2 h out-of-order window, which would take the early-dated samples
/// and show a false counter reset.
#[test]
fn a_backward_step_stores_nothing_early_with_an_out_of_order_window() {
    backward_step(PROM_WITH_WINDOW);
}

fn backward_step(prom_cfg: &str) {
    let dir = TempDir::new("clock-back");
    let port = free_port();
    let prom = prometheus_with_config(port, TempDir::new("clock-back-prom"), prom_cfg, &[]);
    let (a, offset) = agent_on_fake_clock(
        dir.path(),
        "+0",
        &remote_write_config(dir.path(), "gw-test", port),
    );
    for _ in 0..4 {
        assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
        std::thread::sleep(Duration::from_millis(1000));
    }
    std::fs::write(&offset, "-1h\n").unwrap();
    a.wait_event("clock_stepped", Duration::from_secs(10), |e| {
        e["step_ms"].as_i64().is_some_and(|s| s < -3_000_000)
    });
    for _ in 0..6 {
        assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
        std::thread::sleep(Duration::from_millis(1000));
    }
    let end = now_ms() + 60_000;
    let got = wait_for("snapshots after the step", Duration::from_secs(20), || {
        let ts: Vec<i64> = crate::remote_write::raw_samples(
            &prom,
            "copilot_edge_build_info",
            end - 7_200_000,
            end,
        )
        .iter()
        .map(|s| s.0)
        .collect();
        (ts.len() >= 10).then_some(ts)
    });
    assert!(
        got.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] < 2_500),
        "stored snapshot times jump or go back: {got:?}"
    );
    assert_eq!(
        a.sink_rejected("remote_write"),
        0.0,
        "the receiver refused snapshots after the step"
    );
    // The request counter in the store never goes down across the step (no false reset) and
    // ends at the agent's own count.
    let counted = a
        .metric("copilot_requests_total", &["status_code=\"200\""])
        .unwrap();
    assert_eq!(counted, 10.0);
    let stored = wait_for(
        "the last request count stored",
        Duration::from_secs(20),
        || {
            let v = crate::remote_write::raw_samples(
                &prom,
                "copilot_requests_total{status_code=\"200\"}",
                end - 7_200_000,
                end,
            );
            (v.last().is_some_and(|s| s.1 == counted)).then_some(v)
        },
    );
    assert!(
        stored
            .windows(2)
            .all(|w| w[1].1 >= w[0].1 && w[1].0 > w[0].0),
        "{stored:?}"
    );
}

/// The central Prometheus as `config/central` ships it: a 2 h out-of-order window.
const PROM_WITH_WINDOW: &str =
    "global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 2h\n";

/// Booted at "2020" with the uplink down, then NTP steps the clock to the true time: the
/// backlog's age, the last rating and the link's `since` read what the boot clock says (seconds),
/// not seven years; once the receiver (a Prometheus that already holds today's data, so it
/// refuses anything dated 2020) is back, every snapshot is stored at its true time, including
/// those recorded under the wrong clock.
#[test]
fn booted_in_the_past_then_stepped_forward() {
    let dir = TempDir::new("clock-boot");
    let port = free_port();
    // The central store has data of today (it scrapes itself), then the uplink goes down.
    let prom_data = TempDir::new("clock-boot-prom-data");
    let self_scrape = format!("{PROM_WITH_WINDOW}scrape_configs:\n  - job_name: self\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n");
    let mut before = prometheus_at(
        port,
        TempDir::new("clock-boot-prom-1"),
        &self_scrape,
        prom_data.path(),
        &[],
    );
    wait_for("the store's own samples", Duration::from_secs(20), || {
        prom_value(&before, "up{job=\"self\"}").filter(|v| *v == 1.0)
    });
    before.stop();
    let started = now_ms();
    let (a, offset) = agent_on_fake_clock(
        dir.path(),
        "-2500d",
        &remote_write_config(dir.path(), "gw-test", port),
    );
    let r = a.diagnose("plant-7", "press-12", PRESS);
    assert_eq!(r.status, 200);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let rated = a.post(
        "/v1/feedback",
        &serde_json::json!({"request_id": id, "score": 4}),
    );
    assert_eq!(rated.status, 200, "{}", rated.text());
    std::thread::sleep(Duration::from_secs(5));
    std::fs::write(&offset, "+0\n").unwrap();
    a.wait_event("clock_stepped", Duration::from_secs(10), |e| {
        e["step_ms"].as_i64().is_some_and(|s| s > 86_400_000)
    });
    // A snapshot or two after the step, so the gauges have been recomputed.
    std::thread::sleep(Duration::from_secs(2));
    let age = a
        .metric(
            "copilot_edge_spool_oldest_record_age_seconds",
            &["sink=\"remote_write\""],
        )
        .unwrap();
    assert!(
        (3.0..120.0).contains(&age),
        "the backlog is {age} s old by the metric"
    );
    let status = a.get("/v1/status").json();
    let rw = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "remote_write")
        .unwrap()
        .clone();
    let age = rw["oldest_pending_age_seconds"].as_f64().unwrap();
    assert!((3.0..120.0).contains(&age), "status: {rw}");
    let year = this_year();
    assert!(
        rw["since"].as_str().is_some_and(|s| s.starts_with(&year)),
        "the link's since is not this year: {rw}"
    );
    let last = a
        .metric("copilot_user_feedback_last_timestamp_seconds", &[])
        .unwrap();
    let now = now_ms() as f64 / 1000.0;
    assert!(
        (now - 120.0..=now).contains(&last),
        "the last rating is {} s old by the metric",
        now - last
    );
    // The receiver comes up. The snapshots recorded at "2020" before the step go out at their
    // true time (the boot clock says when they were taken; the receiver's Date says what time
    // it is), so every one is stored, nothing is dated 2020, nothing is refused.
    let spooled = crate::remote_write::snapshot_times(dir.path());
    assert!(spooled.len() >= 5, "{} snapshots spooled", spooled.len());
    let up_at = now_ms();
    let prom = prometheus_at(
        port,
        TempDir::new("clock-boot-prom-2"),
        &self_scrape,
        prom_data.path(),
        &[],
    );
    a.wait_event("sink_online", Duration::from_secs(40), |e| {
        e["sink"] == "remote_write"
    });
    let sel = "copilot_edge_build_info{gateway_id=\"gw-test\"}";
    let stored = wait_for("every snapshot stored", Duration::from_secs(30), || {
        let ts: Vec<i64> =
            crate::remote_write::raw_samples(&prom, sel, started - 60_000, now_ms() + 60_000)
                .iter()
                .map(|s| s.0)
                .collect();
        (ts.iter().filter(|t| **t < up_at).count() >= spooled.len()).then_some(ts)
    });
    assert!(
        stored.iter().all(|t| *t >= started - 2_000),
        "stored before the agent started: {stored:?}"
    );
    assert!(
        stored
            .windows(2)
            .all(|w| w[1] > w[0] && w[1] - w[0] < 2_500),
        "snapshot times jump or go back: {stored:?}"
    );
    let fake = started - 2500 * 86_400_000;
    assert!(
        crate::remote_write::raw_samples(&prom, sel, fake - 3_600_000, fake + 3_600_000).is_empty(),
        "samples stored at the 2020 time"
    );
    assert_eq!(a.sink_rejected("remote_write"), 0.0, "snapshots refused");
}

/// One gateway's clock steps a day ahead next to a healthy gateway writing to the same
/// Prometheus (2 h out-of-order window, as shipped): nothing dated tomorrow is stored, and the
/// healthy gateway's snapshots and the stepped one's keep arriving.
#[test]
fn a_day_ahead_never_blocks_a_healthy_gateway() {
    let port = free_port();
    let prom = prometheus_with_config(
        port,
        TempDir::new("clock-ahead-prom"),
        PROM_WITH_WINDOW,
        &[],
    );
    let sick = TempDir::new("clock-ahead");
    let (a, offset) = agent_on_fake_clock(
        sick.path(),
        "+0",
        &remote_write_config(sick.path(), "gw-stepped", port),
    );
    let healthy = TempDir::new("clock-healthy");
    let b = Agent::start(
        healthy.path(),
        &remote_write_config(healthy.path(), "gw-healthy", port),
    );
    std::thread::sleep(Duration::from_secs(3));
    let step_at = now_ms();
    std::fs::write(&offset, "+1d\n").unwrap();
    a.wait_event("clock_stepped", Duration::from_secs(10), |e| {
        e["step_ms"].as_i64().is_some_and(|s| s > 80_000_000)
    });
    std::thread::sleep(Duration::from_secs(12));
    let end = now_ms() + 2 * 86_400_000;
    let samples = |gw: &str| -> Vec<i64> {
        crate::remote_write::raw_samples(
            &prom,
            &format!("copilot_edge_build_info{{gateway_id=\"{gw}\"}}"),
            step_at - 60_000,
            end,
        )
        .iter()
        .map(|s| s.0)
        .collect()
    };
    let now = now_ms();
    let stepped = samples("gw-stepped");
    assert!(
        stepped.iter().all(|t| *t <= now + 120_000),
        "the stepped gateway's samples reached the future: {stepped:?}"
    );
    let after = |ts: &[i64]| ts.iter().filter(|t| **t > step_at + 2_000).count();
    assert!(
        after(&stepped) >= 5,
        "the stepped gateway stopped sending: {stepped:?}"
    );
    let well = samples("gw-healthy");
    assert!(
        after(&well) >= 8,
        "the healthy gateway's snapshots were refused after the step: {well:?}"
    );
    assert_eq!(b.sink_rejected("remote_write"), 0.0);
    a.wait_event("clock_skew_detected", Duration::from_secs(5), |_| true);
}

/// Small rotating log files, then the wall clock steps back an hour: the lines written after
/// the step are the ones kept (files are numbered by a counter, so the newest never sorts first
/// and is never the one pruned).
#[test]
fn logs_written_after_a_backward_step_survive_rotation() {
    let dir = TempDir::new("clock-logs");
    let (a, offset) = agent_on_fake_clock(
        dir.path(),
        "+0",
        &config_with(
            dir.path(),
            "[logging]\nfile = true\nmax_file_bytes = 4096\nmax_files = 4\n",
        ),
    );
    for _ in 0..30 {
        assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
    }
    std::fs::write(&offset, "-1h\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let traces: Vec<String> = (0..6)
        .map(|_| {
            let r = a.diagnose("plant-7", "press-12", PRESS);
            assert_eq!(r.status, 200);
            r.header("x-request-trace-id").unwrap().to_string()
        })
        .collect();
    let on_disk = || {
        let mut text = String::new();
        for e in std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .flatten()
        {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        text
    };
    let text = wait_for("the last request on disk", Duration::from_secs(10), || {
        let t = on_disk();
        t.contains(traces.last().unwrap().as_str()).then_some(t)
    });
    let lost: Vec<&String> = traces
        .iter()
        .filter(|t| !text.contains(t.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "requests after the step missing from the log files: {lost:?}"
    );
    let files = std::fs::read_dir(dir.path().join("logs")).unwrap().count();
    assert!(files <= 5, "{files} log files kept with max_files = 4");
}

/// The true UTC year, from date(1) (the test process runs on the true clock).
fn this_year() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
