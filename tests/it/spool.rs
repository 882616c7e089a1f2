//! Store and forward with real Mosquitto and Pushgateway processes: outages, crashes (SIGKILL),
//! on-disk corruption, the disk bound and a flapping broker.

use std::time::{Duration, Instant};

use copilot_edge::spool::segment;

use crate::common::mqtt::{assert_complete_in_order, Collector};
use crate::common::services::{mosquitto_on, pushgateway_on};
use crate::common::*;

fn mqtt_config(dir: &std::path::Path, port: u16, extra: &str) -> String {
    config_with(
        dir,
        &format!("[metrics]\nsnapshot_interval_secs = 1\n\n[sinks.mqtt]\nenabled = true\nport = {port}\nbacklog_records_per_sec = 100000\n\n{extra}"),
    )
}

#[test]
fn mqtt_outage_delivers_everything_in_order() {
    let port = free_port();
    let data = TempDir::new("mq-data");
    let mut broker = mosquitto_on(port, data.path());
    Collector::register(port, "it-outage");
    broker.stop();

    let dir = TempDir::new("outage");
    let a = Agent::start(dir.path(), &mqtt_config(dir.path(), port, ""));
    let traffic = Traffic::start(a.addr, "outage");
    std::thread::sleep(Duration::from_millis(3500));
    let sent = traffic.stop();
    assert!(sent >= 20, "only {sent} requests");
    let during_outage = appended(&a);
    assert_eq!(
        a.metric("copilot_edge_sink_up", &["sink=\"mqtt\""]),
        Some(0.0)
    );
    assert!(a.metric("copilot_edge_spool_records", &[]).unwrap() >= during_outage as f64 - 1.0);

    let _broker = mosquitto_on(port, data.path());
    let sub = Collector::start(port, "it-outage");
    sub.wait_all(during_outage, Duration::from_secs(30));
    a.wait_event("sink_online", Duration::from_secs(10), |e| {
        e["sink"] == "mqtt"
    });
    let seqs = sub.seqs();
    assert_complete_in_order(&seqs);
    // Content: snapshots are Prometheus text with sample timestamps; logs carry the outage's
    // request_completed events with their trace ids.
    let msgs = sub.snapshot();
    let metrics: Vec<_> = msgs
        .iter()
        .filter(|m| m.topic == "copilot/plant-7/gw-test/metrics")
        .collect();
    assert!(metrics.len() >= 3, "{} snapshots", metrics.len());
    let text = String::from_utf8_lossy(&metrics[1].payload).into_owned();
    let ts: i64 = text
        .lines()
        .next()
        .unwrap()
        .split("ts_ms=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            l.ends_with(&format!(" {ts}")),
            "sample without its timestamp: {l}"
        );
    }
    let logs: Vec<serde_json::Value> = msgs
        .iter()
        .filter(|m| m.topic.ends_with("/logs"))
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let traced: std::collections::BTreeSet<String> = logs
        .iter()
        .filter(|l| l["event"]["event"] == "request_completed")
        .filter_map(|l| l["event"]["trace_id"].as_str().map(String::from))
        .filter(|t| t.starts_with("outage-"))
        .collect();
    assert_eq!(
        traced.len() as u64,
        sent,
        "every outage request's log event arrived"
    );
    let status: Vec<_> = msgs
        .iter()
        .filter(|m| m.topic.ends_with("/status"))
        .collect();
    assert!(status
        .iter()
        .any(|m| String::from_utf8_lossy(&m.payload).contains("\"online\"")));
    // Nothing old left behind once delivered (every /metrics poll itself logs an event that
    // enters the spool, so "zero records" is never stable; the oldest pending age is).
    wait_for("backlog drained", Duration::from_secs(20), || {
        let age = a.metric(
            "copilot_edge_spool_oldest_record_age_seconds",
            &["sink=\"mqtt\""],
        )?;
        (age < 3.0).then_some(())
    });
    assert_eq!(a.stop().code(), Some(0));
    sub.stop();
}

#[test]
fn mqtt_gzip_payloads_after_an_outage() {
    let port = free_port();
    let data = TempDir::new("mq-gz-data");
    let mut broker = mosquitto_on(port, data.path());
    Collector::register(port, "it-gzip");
    broker.stop();

    let dir = TempDir::new("mq-gz");
    let a = Agent::start(
        dir.path(),
        &mqtt_config(dir.path(), port, "")
            .replace("[sinks.mqtt]\n", "[sinks.mqtt]\ncompression = \"gzip\"\n"),
    );
    let traffic = Traffic::start(a.addr, "gz");
    std::thread::sleep(Duration::from_millis(2500));
    let sent = traffic.stop();
    let during_outage = appended(&a);
    let _broker = mosquitto_on(port, data.path());
    let sub = Collector::start(port, "it-gzip");
    sub.wait_all(during_outage, Duration::from_secs(30));
    assert_complete_in_order(&sub.seqs());
    let msgs = sub.snapshot();
    let mut plain_bytes = 0;
    let mut gz_bytes = 0;
    let mut traced = std::collections::BTreeSet::new();
    let mut snapshots_with_requests = 0;
    for m in &msgs {
        if m.topic.ends_with("/status") {
            // The birth and will stay plain text for any subscriber.
            assert!(!m.payload.starts_with(&[0x1f, 0x8b]), "{m:?}");
            assert!(
                String::from_utf8_lossy(&m.payload).contains("line"),
                "{m:?}"
            );
            continue;
        }
        assert!(m.payload.starts_with(&[0x1f, 0x8b]), "{} not gzip", m.topic);
        // An independent decoder: gzip(1).
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip(1)");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &m.payload).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "gzip -d failed on {}", m.topic);
        assert_eq!(out.stdout, m.plain());
        if m.topic.ends_with("/metrics") {
            plain_bytes += out.stdout.len();
            gz_bytes += m.payload.len();
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.starts_with("# copilot_edge_record seq="), "{text}");
            snapshots_with_requests += usize::from(text.contains("copilot_requests_total{"));
        } else {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["event"]["event"] == "request_completed" {
                if let Some(t) = v["event"]["trace_id"].as_str() {
                    traced.insert(t.to_string());
                }
            }
        }
    }
    assert_eq!(
        traced.iter().filter(|t| t.starts_with("gz-")).count() as u64,
        sent,
        "every request's log event arrived"
    );
    assert!(
        snapshots_with_requests > 0,
        "no snapshot with request metrics"
    );
    // Snapshots are repetitive Prometheus text: gzip takes them well below a quarter.
    assert!(
        gz_bytes * 4 < plain_bytes,
        "gzip {gz_bytes} B of {plain_bytes} B"
    );
    eprintln!("mqtt gzip: {gz_bytes} B on the wire for {plain_bytes} B of snapshots");
    assert_eq!(a.stop().code(), Some(0));
    sub.stop();
}

#[test]
fn pushgateway_gets_the_newest_values_after_an_outage() {
    let port = free_port();
    let dir = TempDir::new("pgw");
    let a = Agent::start(
        dir.path(),
        &config_with(dir.path(), &format!("[metrics]\nsnapshot_interval_secs = 1\n[sinks.pushgateway]\nenabled = true\nurl = \"http://127.0.0.1:{port}\"\ntimeout_ms = 500\n")),
    );
    let traffic = Traffic::start(a.addr, "pgw");
    std::thread::sleep(Duration::from_millis(1500));
    let sent = traffic.stop();
    a.wait_event("sink_offline", Duration::from_secs(5), |e| {
        e["sink"] == "pushgateway"
    });
    let pg = pushgateway_on(port);
    let body = wait_for("push arrives", Duration::from_secs(30), || {
        let t = request(pg.addr(), "GET", "/metrics", &[], b"").text();
        let v = metric_in(
            &t,
            "copilot_requests_total",
            &[
                "gateway_id=\"gw-test\"",
                "job=\"copilot-edge\"",
                "site=\"plant-7\"",
                "status_code=\"200\"",
            ],
        )?;
        (v == sent as f64).then_some(t)
    });
    // The per-request plant label survives the grouping key, and the push is timestamped.
    assert!(body.contains("plant_id=\"plant-7\""));
    let pushed = metric_in(
        &body,
        "push_time_seconds",
        &["gateway_id=\"gw-test\"", "job=\"copilot-edge\""],
    )
    .expect("push_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - pushed).abs() < 30.0);
    a.wait_event("sink_online", Duration::from_secs(5), |e| {
        e["sink"] == "pushgateway"
    });
    assert_eq!(
        a.metric("copilot_edge_sink_up", &["sink=\"pushgateway\""]),
        Some(1.0)
    );
}

#[test]
fn sigkill_while_offline_loses_nothing() {
    let port = free_port();
    let data = TempDir::new("mq-crash");
    let mut broker = mosquitto_on(port, data.path());
    Collector::register(port, "it-crash");
    broker.stop();
    let dir = TempDir::new("crash");
    let cfg = mqtt_config(dir.path(), port, "");
    let mut max_written = 0;
    for (round, ms) in [700u64, 1300, 2100].into_iter().enumerate() {
        let a = Agent::start(dir.path(), &cfg);
        let traffic = Traffic::start(a.addr, "crash");
        std::thread::sleep(Duration::from_millis(ms));
        a.kill();
        traffic.stop();
        // What is on disk now is what was appended before the kill.
        let on_disk = last_seq_on_disk(&dir.path().join("state/spool/segments"));
        assert!(
            on_disk > max_written,
            "round {round}: spool did not grow ({on_disk})"
        );
        max_written = on_disk;
    }
    let a = Agent::start(dir.path(), &cfg);
    let _broker = mosquitto_on(port, data.path());
    let sub = Collector::start(port, "it-crash");
    sub.wait_all(max_written, Duration::from_secs(30));
    let seqs = sub.seqs();
    assert_complete_in_order(&seqs);
    assert_eq!(
        a.metric("copilot_edge_spool_corrupt_records_total", &[]),
        Some(0.0)
    );
    sub.stop();
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn last_seq_on_disk(dir: &std::path::Path) -> u64 {
    segment_files(dir)
        .iter()
        .filter_map(|f| {
            segment::scan(&std::fs::read(f).unwrap(), 0)
                .records
                .last()
                .map(|r| r.0.seq)
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn corrupt_segments_are_repaired_and_intact_records_delivered() {
    let port = free_port();
    let data = TempDir::new("mq-corrupt");
    let mut broker = mosquitto_on(port, data.path());
    Collector::register(port, "it-corrupt");
    broker.stop();
    let dir = TempDir::new("corrupt");
    let cfg = mqtt_config(dir.path(), port, "[spool]\nsegment_bytes = 32768\n");
    let a = Agent::start(dir.path(), &cfg);
    let traffic = Traffic::start(a.addr, "corrupt");
    std::thread::sleep(Duration::from_millis(2500));
    traffic.stop();
    assert_eq!(a.stop().code(), Some(0));
    let segdir = dir.path().join("state/spool/segments");
    let files = segment_files(&segdir);
    assert!(files.len() >= 2, "want several segments, got {files:?}");
    // Flip bytes in the middle of the first segment and cut the last one mid-record.
    let mut first = std::fs::read(&files[0]).unwrap();
    let mid = first.len() / 2;
    for b in &mut first[mid..mid + 3] {
        *b ^= 0xA5;
    }
    std::fs::write(&files[0], &first).unwrap();
    let last = files.last().unwrap();
    let mut tail = std::fs::read(last).unwrap();
    tail.truncate(tail.len() - 5);
    std::fs::write(last, &tail).unwrap();
    let mut intact: Vec<u64> = Vec::new();
    for f in &files {
        intact.extend(
            segment::scan(
                &std::fs::read(f).unwrap(),
                intact.last().copied().unwrap_or(0),
            )
            .records
            .iter()
            .map(|r| r.0.seq),
        );
    }
    let written_before = last_seq_on_disk(&segdir);
    assert!(
        (intact.len() as u64) < written_before,
        "the damage must cost records"
    );

    let a = Agent::start(dir.path(), &cfg);
    assert!(
        a.metric("copilot_edge_spool_corrupt_records_total", &[])
            .unwrap()
            >= 2.0
    );
    a.wait_event("spool_corruption_repaired", Duration::from_secs(5), |_| {
        true
    });
    assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
    let _broker = mosquitto_on(port, data.path());
    let sub = Collector::start(port, "it-corrupt");
    wait_for("intact records delivered", Duration::from_secs(30), || {
        let got: std::collections::BTreeSet<u64> = sub.seqs().into_iter().collect();
        intact.iter().all(|s| got.contains(s)).then_some(())
    });
    sub.stop();
}

#[test]
fn disk_use_stays_bounded_and_drops_are_counted() {
    let port = free_port(); // no broker: a long outage
    let dir = TempDir::new("bound");
    let max = 96 * 1024;
    let a = Agent::start(
        dir.path(),
        &mqtt_config(
            dir.path(),
            port,
            &format!("[spool]\nmax_bytes = {max}\nsegment_bytes = 16384\n"),
        ),
    );
    let traffic = Traffic::start(a.addr, "bound");
    let segdir = dir.path().join("state/spool/segments");
    let end = Instant::now() + Duration::from_secs(5);
    let mut peak = 0u64;
    while Instant::now() < end {
        let used: u64 = std::fs::read_dir(&segdir)
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        peak = peak.max(used);
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = traffic.stop();
    assert!(sent > 50);
    assert!(peak <= max, "spool used {peak} bytes, bound {max}");
    let dropped = a
        .metric(
            "copilot_edge_spool_dropped_records_total",
            &["reason=\"max_bytes\""],
        )
        .unwrap();
    assert!(
        dropped > 0.0,
        "a long outage on a small spool must drop the oldest records"
    );
    assert!(a.metric("copilot_edge_spool_bytes", &[]).unwrap() <= max as f64);
    assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
    // Kept records + dropped records = appended records.
    let kept = segment_files(&segdir)
        .iter()
        .map(|f| segment::scan(&std::fs::read(f).unwrap(), 0).records.len() as u64)
        .sum::<u64>();
    let appended_now = appended(&a);
    let dropped = a
        .metric(
            "copilot_edge_spool_dropped_records_total",
            &["reason=\"max_bytes\""],
        )
        .unwrap() as u64;
    assert!(
        kept + dropped >= appended_now.saturating_sub(2) && kept + dropped <= appended_now + 2,
        "kept {kept} + dropped {dropped} vs appended {appended_now}"
    );
    let (code, out, _) = run_cli(
        &["spool", "status", "--config", a.config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("sink mqtt") && out.contains("backlog"),
        "{out}"
    );
}

#[test]
fn flapping_broker_loses_nothing() {
    let port = free_port();
    let data = TempDir::new("mq-flap");
    let mut broker = mosquitto_on(port, data.path());
    Collector::register(port, "it-flap");
    let dir = TempDir::new("flap");
    let a = Agent::start(dir.path(), &mqtt_config(dir.path(), port, ""));
    let traffic = Traffic::start(a.addr, "flap");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        broker.stop();
        std::thread::sleep(Duration::from_millis(900));
        broker = mosquitto_on(port, data.path());
    }
    std::thread::sleep(Duration::from_millis(500));
    traffic.stop();
    let total = appended(&a);
    let sub = Collector::start(port, "it-flap");
    sub.wait_all(total, Duration::from_secs(40));
    // Records whose PUBACK was lost are sent again; first arrivals are complete and ordered.
    assert_complete_in_order(&sub.seqs());
    sub.stop();
    drop(broker);
}

#[test]
fn live_snapshots_overtake_a_throttled_backlog() {
    let port = free_port();
    let data = TempDir::new("mq-live");
    let mut broker = mosquitto_on(port, data.path());
    Collector::register(port, "it-live");
    broker.stop();
    // A slow replay: 20 backlog records a second, so the backlog takes many seconds.
    let dir = TempDir::new("live");
    let a = Agent::start(
        dir.path(),
        &mqtt_config(dir.path(), port, "").replace(
            "backlog_records_per_sec = 100000",
            "backlog_records_per_sec = 20",
        ),
    );
    let traffic = Traffic::start(a.addr, "live");
    std::thread::sleep(Duration::from_millis(3000));
    traffic.stop();
    // Let the backlog age past "live" (two snapshot intervals, at least 2 s).
    std::thread::sleep(Duration::from_millis(2500));
    let backlog = appended(&a);
    assert!(
        backlog > 100,
        "want a backlog that takes > 5 s at 20/s, got {backlog}"
    );
    let _broker = mosquitto_on(port, data.path());
    let sub = Collector::start(port, "it-live");
    let up = Instant::now();
    // A snapshot newer than the whole backlog arrives within a few seconds ...
    let live = wait_for(
        "a live snapshot ahead of the backlog",
        Duration::from_secs(10),
        || {
            sub.snapshot()
                .iter()
                .filter(|m| m.topic.ends_with("/metrics"))
                .filter_map(|m| m.seq())
                .find(|s| *s > backlog)
        },
    );
    let got: std::collections::BTreeSet<u64> =
        sub.seqs().into_iter().filter(|s| *s <= backlog).collect();
    assert!(
        (got.len() as u64) < backlog,
        "the backlog was already complete: live-first not exercised"
    );
    assert!(
        up.elapsed() < Duration::from_secs(8),
        "live snapshot {live} took {:?}",
        up.elapsed()
    );
    // ... and the backlog still arrives complete, in order, at the limited rate.
    sub.wait_all(backlog, Duration::from_secs(60));
    // The live lane sends only metrics snapshots (the newest may also be part of the backlog),
    // so order is checked on the log records, which only travel in sequence.
    let logs: Vec<u64> = sub
        .snapshot()
        .iter()
        .filter(|m| m.topic.ends_with("/logs"))
        .filter_map(|m| m.seq())
        .filter(|s| *s <= backlog)
        .collect();
    assert!(logs.len() > 50, "{} log records", logs.len());
    assert!(
        logs.windows(2).all(|w| w[0] < w[1]),
        "backlog out of order: {logs:?}"
    );
    assert!(
        up.elapsed() >= Duration::from_secs(backlog / 20 - 2),
        "the backlog was not rate-limited"
    );
    sub.stop();
}
