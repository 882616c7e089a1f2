//! A gateway clock that steps: the wall clock moved under the real binary with Debian's
//! libfaketime (on the agent only; the monotonic clock untouched, as NTP leaves it) while the
//! receivers run on the true time.

use std::path::Path;
use std::time::Duration;

use crate::common::services::prometheus_with_config;
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

/// One hour back in the middle of a run, against a Prometheus without an out-of-order window
/// (which refuses any sample older than the newest of its series): every snapshot is stored,
/// in order, one interval apart, none refused.
#[test]
fn a_backward_step_never_moves_record_times_back() {
    let dir = TempDir::new("clock-back");
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let port = free_port();
    let prom = prometheus_with_config(
        port,
        TempDir::new("clock-back-prom"),
        "global:\n  scrape_interval: 15s\n",
        &[],
    );
    let env = faketime(&offset);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Agent::start_env(
        dir.path(),
        &config_with(
            dir.path(),
            &format!("[metrics]\nsnapshot_interval_secs = 1\n\n[sinks.remote_write]\nenabled = true\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ntimeout_ms = 2000\n"),
        ),
        &env,
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
        let ts: Vec<i64> =
            crate::remote_write::raw_samples(&prom, "copilot_edge_build_info", end - 600_000, end)
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
        a.metric(
            "copilot_edge_sink_rejected_records_total",
            &["sink=\"remote_write\""]
        )
        .unwrap_or(0.0),
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
                end - 600_000,
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
