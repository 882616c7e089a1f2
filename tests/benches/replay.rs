//! Replay benchmark: how long the real agent takes to deliver a 24-hour outage backlog
//! (5,760 snapshots at 15 s plus their log events) to a local Mosquitto and to a local
//! Prometheus remote-write receiver, while it keeps answering diagnose requests.
//!
//! The backlog is written with the library's own `Spool` (snapshots are real renderings of a
//! populated metric set, log events real `request_completed` lines), then the release binary is
//! started on it with the receiver up, and the bench polls the agent's own metrics until every
//! record is acknowledged. Meanwhile a client sends diagnose requests and records their latency.
//!
//! Knobs: `REPLAY_HOURS` (24), `REPLAY_LOGS_PER_SNAPSHOT` (10), `REPLAY_MD=path` (also write the
//! table there). Needs `mosquitto` and `prometheus` (tests/run installs them) and
//! `target/release/copilot-edge` (tests/bench builds it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use copilot_edge::config::{self, Environment};
use copilot_edge::metrics::Metrics;
use copilot_edge::spool::segment::Kind;
use copilot_edge::spool::Spool;

const TOKEN: &str = "replay-bench-token";

#[path = "../it/common/net.rs"]
#[allow(dead_code)]
mod net;
use net::free_port;

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes the backlog into `dir/spool`; returns (records, samples per snapshot).
fn build_backlog(dir: &Path, hours: u64, logs_per_snapshot: usize) -> (u64, usize) {
    let raw = config::parse(&format!("[spool]\ndir = {:?}\nmax_bytes = 4294967296\nsegment_bytes = 16777216\nmin_free_bytes = 0\n", dir.join("spool").display().to_string()), "bench").unwrap();
    let cfg = raw.validate("bench", &Environment::default()).unwrap();
    let m = Arc::new(Metrics::new("gw-bench", cfg.labels.clone(), &cfg.metrics, 0.0).unwrap());
    // A realistic snapshot: a few plants, agents, status codes, equipment, latencies.
    for p in 0..3 {
        let plant = format!("plant-{p}");
        for e in 0..20 {
            m.equipment_requests.inc(&plant, &format!("eq-{e}"));
        }
        for (agent, code) in [
            ("rag_agent", "200"),
            ("rag_agent", "422"),
            ("feedback", "200"),
        ] {
            m.requests.with_label_values(&[&plant, agent, code]).inc();
            m.latency.with_label_values(&[&plant, agent]).observe(0.004);
        }
        m.record_answer(&plant, "rag_agent", true);
        m.record_feedback(&plant, "rag_agent", 4, 1.0);
    }
    let spool = Spool::open(&cfg.spool, &["mqtt", "remote_write"], m.clone()).unwrap();
    let snapshots = hours * 3600 / 15;
    let now = copilot_edge::clock::now_ms();
    let start = now - (hours * 3600 * 1000) as i64;
    let log = br#"{"timestamp":"2026-11-26T10:00:00.000000Z","level":"info","event":"request_completed","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","method":"POST","path":"/v1/diagnose","status_code":200,"duration_ms":0.41,"user_id":"technician-42","plant_id":"plant-1","equipment_id":"eq-3","target":"copilot_edge::http::routes"}"#;
    let logs: Vec<&[u8]> = vec![log.as_slice(); logs_per_snapshot];
    let mut size = 0;
    let mut records = 0;
    for i in 0..snapshots {
        let ts = start + (i * 15_000) as i64;
        m.requests
            .with_label_values(&["plant-1", "rag_agent", "200"])
            .inc_by(logs_per_snapshot as u64);
        let text = m.render();
        size = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty() && l[0] != b'#')
            .count();
        records += spool.append(Kind::Metrics, ts, &[&text]).len() as u64;
        records += spool.append(Kind::Log, ts + 1, &logs).len() as u64;
    }
    spool.flush().unwrap();
    (records, size)
}

struct Run {
    sink: &'static str,
    records: u64,
    samples_per_snapshot: usize,
    seconds: f64,
    diag_ok: u64,
    diag_p50_ms: f64,
    diag_max_ms: f64,
}

fn replay(sink: &'static str, hours: u64, logs_per: usize) -> Run {
    let dir = std::env::temp_dir().join(format!("ce-replay-{sink}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (records, samples_per_snapshot) = build_backlog(&dir, hours, logs_per);
    let port = free_port();
    let _receiver = match sink {
        "mqtt" => {
            std::fs::write(
                dir.join("m.conf"),
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nlog_dest stderr\n"
                ),
            )
            .unwrap();
            Proc(
                Command::new("mosquitto")
                    .arg("-c")
                    .arg(dir.join("m.conf"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("mosquitto (tests/run installs it)"),
            )
        }
        _ => {
            std::fs::write(dir.join("p.yml"), format!("global:\n  scrape_interval: 1m\nstorage:\n  tsdb:\n    out_of_order_time_window: {}h\n", hours + 2)).unwrap();
            Proc(
                Command::new("prometheus")
                    .arg(format!("--config.file={}", dir.join("p.yml").display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.join("prom").display()
                    ))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg("--web.enable-remote-write-receiver")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("prometheus (tests/run installs it)"),
            )
        }
    };
    wait("receiver", 30, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let sink_cfg = match sink {
        // The default replay rates: the bench measures what a gateway gets out of the box.
        "mqtt" => format!("[sinks.mqtt]\nenabled = true\nport = {port}\n"),
        _ => format!("[sinks.remote_write]\nenabled = true\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\n"),
    };
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let cfg = format!(
        "[paths]\nstate_dir = {:?}\nlog_dir = {:?}\n[[auth.tokens]]\nuser_id = \"bench\"\nsha256 = \"{digest}\"\n[logging]\nfile = false\n[spool]\ndir = {:?}\nmax_bytes = 4294967296\nsegment_bytes = 16777216\nmin_free_bytes = 0\nship_logs = false\n{sink_cfg}",
        dir.join("state").display().to_string(),
        dir.join("logs").display().to_string(),
        dir.join("spool").display().to_string()
    );
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/copilot-edge");
    assert!(
        bin.exists(),
        "build the release binary first (cargo build --release)"
    );
    let agent_port = free_port();
    let started = Instant::now();
    let _agent = Proc(
        Command::new(&bin)
            .args(["serve", "--config"])
            .arg(dir.join("c.toml"))
            .args(["--listen", &format!("127.0.0.1:{agent_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{agent_port}").parse().unwrap();
    wait("agent", 30, || TcpStream::connect(addr).is_ok());
    // Technicians keep asking while the backlog replays.
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let (s2, l2) = (stop.clone(), lat.clone());
    let client = std::thread::spawn(move || {
        let body = r#"{"plant_id":"plant-7","equipment_id":"press-12","problem_description":"hydraulic press shows vibration above 5mm/s and coolant leak near the primary line"}"#;
        while !s2.load(Ordering::Relaxed) {
            let t = Instant::now();
            let (st, _) = http(addr, "POST", "/v1/diagnose", body);
            assert_eq!(st, 200, "diagnose failed during replay");
            l2.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let sent_metric = "copilot_edge_sink_sent_records_total";
    let want = if sink == "mqtt" {
        records
    } else {
        records / (logs_per as u64 + 1)
    };
    wait("backlog delivered", 600, || {
        let (_, text) = http(addr, "GET", "/metrics", "");
        metric(&text, sent_metric, &format!("sink=\"{sink}\"")) >= want as f64
    });
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let mut l = lat.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        sink,
        records: want,
        samples_per_snapshot,
        seconds,
        diag_ok: l.len() as u64,
        diag_p50_ms: l.get(l.len() / 2).copied().unwrap_or(0.0),
        diag_max_ms: l.last().copied().unwrap_or(0.0),
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let hours: u64 = std::env::var("REPLAY_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let logs_per: usize = std::env::var("REPLAY_LOGS_PER_SNAPSHOT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut table = format!(
        "| sink | backlog | records delivered | replay time (exec → all acknowledged) | rate | diagnose during replay (ok / p50 / max) | target |\n|---|---|---:|---:|---:|---|---|\n"
    );
    for sink in ["mqtt", "remote_write"] {
        let r = replay(sink, hours, logs_per);
        let what = if sink == "mqtt" {
            "records (snapshots + logs)".to_string()
        } else {
            let samples = r.records * r.samples_per_snapshot as u64;
            format!(
                "snapshots = {samples} samples, {:.0} samples/s encoded and sent",
                samples as f64 / r.seconds
            )
        };
        table.push_str(&format!(
            "| {} | {hours} h of 15 s snapshots + {logs_per} log events each | {} {what} | {:.1} s | {:.0}/s | {} / {:.2} ms / {:.1} ms | < 30 s for 24 h — {} |\n",
            r.sink,
            r.records,
            r.seconds,
            r.records as f64 / r.seconds,
            r.diag_ok,
            r.diag_p50_ms,
            r.diag_max_ms,
            match (hours, r.seconds < 30.0) {
                (24, true) => "met",
                (24, false) => "MISSED",
                _ => "not a 24 h run",
            }
        ));
    }
    println!("{table}");
    if let Ok(p) = std::env::var("REPLAY_MD") {
        std::fs::write(PathBuf::from(p), &table).unwrap();
    }
}
