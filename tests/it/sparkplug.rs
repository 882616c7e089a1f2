//! Sparkplug B on a real Mosquitto, read by an independent primary host application
//! (`tests/it/sparkplug_host.py`: pysparkplug from PyPI, in the virtual environment `tests/run`
//! makes): births, report by exception, `seq` and `bdSeq`, rebirth over NCMD, NDEATH as the will,
//! store and forward through a broker outage with SIGKILLs and through the primary host going
//! offline, every value checked against the spool and `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use copilot_edge::spool::segment::{self, Kind};
use serde_json::Value;

use crate::common::services::{mosquitto_on, Service};
use crate::common::*;

const NODE: &str = "gw-test";

/// Spooled metrics snapshots: seq → (ts_ms, samples).
type Spooled = BTreeMap<u64, (i64, Vec<(String, f64)>)>;
const GROUP: &str = "plant-7";

/// The primary host application, its decoded messages in arrival order.
struct Host {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Host {
    fn start(port: u16) -> Host {
        let python = std::env::var("SPARKPLUG_PYTHON").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/sparkplug-venv/bin/python"
            )
            .to_string()
        });
        assert!(
            Path::new(&python).exists(),
            "{python} is missing: tests/run makes the virtual environment with pysparkplug"
        );
        let mut child = Command::new(&python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/sparkplug_host.py"
            ))
            .args([
                "--port",
                &port.to_string(),
                "--group",
                GROUP,
                "--node",
                NODE,
            ])
            .args(["--host-id", "scada-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    l.lock().unwrap().push(v);
                }
            }
        });
        let h = Host {
            child,
            stdin,
            lines,
        };
        h.wait_for("the host's connect", 0, |m| m["type"] == "HOST_CONNECTED");
        h
    }

    fn all(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The first message at or after index `from` that `f` accepts: (index, message).
    fn wait_for(&self, what: &str, from: usize, f: impl Fn(&Value) -> bool) -> (usize, Value) {
        wait_for(what, Duration::from_secs(30), || {
            self.all()
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| f(m))
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn of_type<'a>(msgs: &'a [Value], t: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == t).collect()
}

fn metric<'a>(m: &'a Value, name: &str) -> Option<&'a Value> {
    m["metrics"].as_array()?.iter().find(|x| x["name"] == name)
}

/// The first metric whose name starts with `prefix`.
fn metric_starting<'a>(m: &'a Value, prefix: &str) -> Option<&'a Value> {
    m["metrics"]
        .as_array()?
        .iter()
        .find(|x| x["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
}

fn record_seq(m: &Value) -> u64 {
    metric(m, "copilot_edge_record_seq").unwrap()["value"]
        .as_u64()
        .unwrap()
}

fn bd_seq(birth: &Value) -> u64 {
    metric(birth, "bdSeq").unwrap()["value"].as_u64().unwrap()
}

/// No decoder complaints; `seq` 0 on every NBIRTH and +1 (mod 256) on each later message of the
/// node; every NDEATH's `bdSeq` is the one of the birth before it.
fn assert_sequence_rules(msgs: &[Value]) {
    let complaints = ["DECODE_ERROR", "NDATA_BEFORE_BIRTH", "DDATA_BEFORE_BIRTH"];
    assert!(
        msgs.iter()
            .all(|m| !complaints.contains(&m["type"].as_str().unwrap_or(""))),
        "{:?}",
        msgs.iter()
            .filter(|m| complaints.contains(&m["type"].as_str().unwrap_or("")))
            .collect::<Vec<_>>()
    );
    let mut prev: Option<u64> = None;
    let mut birth_bd: Option<u64> = None;
    for m in msgs {
        match m["type"].as_str().unwrap() {
            "NBIRTH" => {
                assert_eq!(m["seq"], 0, "NBIRTH seq");
                assert_eq!(m["metrics"][0]["name"], "bdSeq");
                assert_eq!(m["metrics"][0]["datatype"], 4, "bdSeq is Int64");
                assert_eq!(metric(m, "Node Control/Rebirth").unwrap()["value"], false);
                birth_bd = Some(bd_seq(m));
                prev = Some(0);
            }
            // Device messages share the node's seq, and only exist within a node's birth.
            "NDATA" | "DBIRTH" | "DDATA" | "DDEATH" => {
                let seq = m["seq"].as_u64().unwrap();
                let p = prev.unwrap_or_else(|| panic!("{} before any NBIRTH: {m}", m["type"]));
                assert_eq!(seq, (p + 1) % 256, "seq continuity at {m}");
                prev = Some(seq);
            }
            "NDEATH" => {
                assert_eq!(m["bdSeq_name"], "bdSeq");
                assert_eq!(
                    m["bdSeq"].as_u64(),
                    birth_bd,
                    "the NDEATH's bdSeq matches the birth it ends"
                );
                prev = None;
            }
            _ => {}
        }
    }
}

/// Replays births and NDATA in order and checks that the values a host holds after each
/// in-order NDATA are exactly those of the spooled snapshot it names (report by exception loses
/// nothing). Returns, per record seq, whether it arrived as historical and its metric timestamp.
fn assert_values_match_spool(msgs: &[Value], spooled: &Spooled) -> BTreeMap<u64, (bool, i64)> {
    let mut state: HashMap<String, f64> = HashMap::new();
    let mut seen = BTreeMap::new();
    let mut checked = 0;
    for m in msgs {
        match m["type"].as_str().unwrap() {
            "NBIRTH" => state.clear(),
            // A record's device values arrive just before its NDATA.
            "DBIRTH" | "DDATA" => {
                for x in m["metrics"].as_array().unwrap() {
                    if let Some(v) = x["value"].as_f64() {
                        state.insert(x["name"].as_str().unwrap().to_string(), v);
                    }
                }
            }
            "NDATA" => {
                let metrics = m["metrics"].as_array().unwrap();
                let seq = record_seq(m);
                for x in metrics {
                    if let Some(v) = x["value"].as_f64() {
                        state.insert(x["name"].as_str().unwrap().to_string(), v);
                    }
                }
                let hist = metrics.iter().all(|x| x["historical"] == true);
                assert!(
                    hist || metrics.iter().all(|x| x["historical"] == false),
                    "one record, one historical flag: {m}"
                );
                let ts = metrics[0]["timestamp"].as_i64().unwrap();
                assert!(metrics.iter().all(|x| x["timestamp"] == ts));
                seen.entry(seq).or_insert((hist, ts));
                if let Some((rts, samples)) = spooled.get(&seq) {
                    assert_eq!(ts, *rts, "record {seq}: the snapshot's own timestamp");
                    for (name, v) in samples {
                        let got = state.get(name).copied();
                        assert!(
                            got.is_some_and(|g| same(g, *v)),
                            "record {seq}: {name} = {got:?}, spooled {v}"
                        );
                    }
                    checked += 1;
                }
            }
            _ => {}
        }
    }
    assert!(checked > 0, "no NDATA matched a spooled snapshot");
    seen
}

/// Every metrics snapshot in the spool directory (the unacknowledged ones survive until acked):
/// seq → (ts, samples by Sparkplug name).
fn spooled(dir: &Path) -> Spooled {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("state/spool/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    let mut last = 0;
    for f in files {
        for (r, _) in segment::scan(&std::fs::read(f).unwrap_or_default(), last).records {
            last = r.seq;
            if r.kind == Kind::Metrics {
                let text = String::from_utf8_lossy(&r.payload).into_owned();
                let samples = text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .filter_map(|l| {
                        let (s, v) = l.rsplit_once(' ')?;
                        let v = match v {
                            "+Inf" => f64::INFINITY,
                            v => v.parse().ok()?,
                        };
                        Some((s.to_string(), v))
                    })
                    .collect();
                out.insert(r.seq, (r.ts_ms, samples));
            }
        }
    }
    out
}

fn config(dir: &Path, port: u16) -> String {
    config_with(
        dir,
        &format!(
            "[metrics]\nsnapshot_interval_secs = 1\n\n[spool]\nship_logs = false\n\n[sinks.mqtt]\nenabled = true\nport = {port}\nformat = \"sparkplug_b\"\nbacklog_records_per_sec = 50\nkeep_alive_secs = 5\n\n[sinks.mqtt.sparkplug]\nprimary_host_id = \"scada-1\"\n"
        ),
    )
}

/// A broker on a free port, the primary host on it and an agent publishing Sparkplug B to it:
/// (port, broker data dir, broker, host, agent dir, agent).
fn rig(tag: &str) -> (u16, TempDir, Service, Host, TempDir, Agent) {
    let port = free_port();
    let data = TempDir::new(&format!("{tag}-broker"));
    let broker = mosquitto_on(port, data.path());
    let host = Host::start(port);
    let dir = TempDir::new(tag);
    let a = Agent::start(dir.path(), &config(dir.path(), port));
    (port, data, broker, host, dir, a)
}

#[test]
fn sparkplug_primary_host_sees_births_data_deaths_and_the_backlog() {
    let (port, data, mut broker, mut host, dir, a) = rig("sparkplug");

    // Birth, then data; a labelled series carries its labels, type and unit as properties.
    let (_, birth) = host.wait_for("NBIRTH", 0, |m| m["type"] == "NBIRTH");
    let bd0 = bd_seq(&birth);
    for _ in 0..3 {
        assert_eq!(a.diagnose("plant-7", "press-01", PRESS).status, 200);
    }
    let (_, b) = host.wait_for("a birth with the request metrics", 0, |m| {
        m["type"] == "NBIRTH"
            && m["metrics"].as_array().unwrap().iter().any(|x| {
                x["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("http_request_duration_seconds_bucket{handler=\"/v1/diagnose\"")
            })
    });
    let bucket = metric_starting(
        &b,
        "http_request_duration_seconds_bucket{handler=\"/v1/diagnose\"",
    )
    .unwrap();
    assert_eq!(bucket["datatype"], 8, "histogram buckets are UInt64");
    assert_eq!(bucket["properties"]["prometheus_type"], "histogram");
    assert_eq!(bucket["properties"]["engUnit"], "s");
    assert!(bucket["properties"]["le"].is_string(), "{bucket}");

    // Quiet, then every application series in /metrics has the host's value.
    std::thread::sleep(Duration::from_millis(1500));
    let text = a.get("/metrics").text();
    let from = host.len();
    std::thread::sleep(Duration::from_millis(2500));
    host.wait_for("an NDATA after /metrics was read", from, |m| {
        m["type"] == "NDATA"
    });
    let msgs = host.all();
    let mut state: HashMap<String, f64> = HashMap::new();
    for m in &msgs {
        if ["NBIRTH", "NDATA", "DBIRTH", "DDATA"].contains(&m["type"].as_str().unwrap_or("")) {
            for x in m["metrics"].as_array().unwrap() {
                if let (Some(n), Some(v)) = (x["name"].as_str(), x["value"].as_f64()) {
                    state.insert(without_gateway(n), v);
                }
            }
        }
    }
    let mut compared = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, v) = line.rsplit_once(' ').unwrap();
        let series = &without_gateway(series);
        // The agent's own telemetry (spool sizes, process figures, sink timestamps) moves with
        // every snapshot; the service's metrics do not while no request arrives.
        if series.starts_with("copilot_edge_") || series.starts_with("process_") {
            assert!(
                state.contains_key(series),
                "{series} never reached the host"
            );
            continue;
        }
        let v: f64 = if v == "+Inf" {
            f64::INFINITY
        } else {
            v.parse().unwrap()
        };
        let got = state.get(series).copied();
        assert!(
            got.is_some_and(|g| same(g, v)),
            "{series}: host {got:?}, /metrics {v}"
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} series compared");

    // Rebirth on request: a new NBIRTH, same bdSeq (same MQTT session), seq from 0 again.
    let from = host.len();
    host.send("rebirth");
    let (_, rb) = host.wait_for("the rebirth", from, |m| m["type"] == "NBIRTH");
    assert_eq!(bd_seq(&rb), bd0);
    a.wait_event(
        "sparkplug_rebirth_requested",
        Duration::from_secs(5),
        |_| true,
    );

    // SIGKILL: the broker publishes the will, an NDEATH with the birth's bdSeq.
    let from = host.len();
    a.kill();
    let (_, death) = host.wait_for("NDEATH after SIGKILL", from, |m| m["type"] == "NDEATH");
    assert_eq!(death["bdSeq"].as_u64(), Some(bd0));
    let a = Agent::start(dir.path(), &config(dir.path(), port));
    let (_, b2) = host.wait_for("the birth after the restart", from, |m| {
        m["type"] == "NBIRTH"
    });
    assert_eq!(
        bd_seq(&b2),
        (bd0 + 1) % 256,
        "bdSeq counts connects across restarts"
    );

    // Broker outage with traffic, the agent killed and restarted during it: the backlog waits
    // in the spool and arrives after the next birth as historical data with its timestamps.
    std::thread::sleep(Duration::from_millis(1200));
    let down_at = now_ms();
    broker.stop();
    let t = Traffic::start(a.addr, "sparkplug-outage");
    std::thread::sleep(Duration::from_millis(4000));
    a.kill();
    let a = Agent::start(dir.path(), &config(dir.path(), port));
    std::thread::sleep(Duration::from_millis(2000));
    t.stop();
    let backlog = spooled(dir.path());
    let newest = *backlog.keys().last().unwrap();
    assert!(backlog.len() >= 5, "{} records spooled", backlog.len());
    let back_at = now_ms();
    let from = host.len();
    let _broker = mosquitto_on(port, data.path());
    host.wait_for("the backlog's newest record", from, |m| {
        m["type"] == "NDATA" && record_seq(m) >= newest
    });
    let msgs = host.all();
    let seen = assert_values_match_spool(&msgs, &backlog);
    let mut historical = 0;
    for (seq, (ts, _)) in &backlog {
        let (hist, got_ts) = seen
            .get(seq)
            .unwrap_or_else(|| panic!("record {seq} never reached the host"));
        assert_eq!(got_ts, ts, "record {seq}: original timestamp");
        if *ts > down_at + 1000 && *ts < back_at - 2000 {
            assert!(hist, "record {seq} from the outage is historical");
            historical += 1;
        }
    }
    assert!(historical >= 2, "only {historical} outage records checked");

    // The primary host goes offline: NDEATH, nothing published until it is back, then a new
    // birth and the records of the pause as historical data.
    let from = host.len();
    host.send("offline");
    let (i_death, d) = host.wait_for("NDEATH for the offline host", from, |m| {
        m["type"] == "NDEATH"
    });
    let bd_now = d["bdSeq"].as_u64().unwrap();
    a.wait_event(
        "sparkplug_primary_host_offline",
        Duration::from_secs(5),
        |_| true,
    );
    for _ in 0..3 {
        assert_eq!(a.diagnose("plant-7", "press-01", PRESS).status, 200);
    }
    std::thread::sleep(Duration::from_millis(4500));
    let during = spooled(dir.path());
    let died_at = d["rx_ms"].as_i64().unwrap();
    let paused: Vec<u64> = during
        .iter()
        .filter(|(_, (ts, _))| *ts > died_at + 500)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        paused.len() >= 2,
        "{} records during the pause",
        paused.len()
    );
    let online_at = now_ms();
    let after_death = host.all()[i_death + 1..].to_vec();
    assert!(
        of_type(&after_death, "NBIRTH").is_empty() && of_type(&after_death, "NDATA").is_empty(),
        "published while the primary host was offline"
    );
    host.send("online");
    let (_, b3) = host.wait_for("the birth after the host is back", i_death, |m| {
        m["type"] == "NBIRTH"
    });
    assert_ne!(bd_seq(&b3), bd_now, "a new session, a new bdSeq");
    let last = *paused.last().unwrap();
    host.wait_for("the records of the pause", i_death, |m| {
        m["type"] == "NDATA" && record_seq(m) >= last
    });
    let msgs = host.all();
    let seen = assert_values_match_spool(&msgs, &during);
    let mut historical = 0;
    for s in &paused {
        let (hist, ts) = seen
            .get(s)
            .unwrap_or_else(|| panic!("record {s} of the pause never reached the host"));
        if *ts < online_at - 2000 {
            assert!(hist, "record {s} of the pause is historical");
            historical += 1;
        }
    }
    assert!(
        historical >= 1,
        "no record of the pause was old enough to check"
    );
    assert_sequence_rules(&msgs);
    drop(a);
}

/// Equal values; serde_json's default float parsing may be one ULP off the decoder's output.
fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// A series name without the `gateway_id` label snapshots carry (a scrape target gets it from
/// its job config instead).
fn without_gateway(series: &str) -> String {
    let g = format!("gateway_id=\"{NODE}\"");
    series
        .replace(&format!(",{g}"), "")
        .replace(&format!("{{{g}}}"), "")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One assertion of the Sparkplug 3.0 TCK per check (the `tck-id-…` in each message), against
/// the real Mosquitto and the pysparkplug host.
#[test]
fn sparkplug_3_0_conformance() {
    let (port, data, mut broker, mut host, dir, a) = rig("sp-tck");

    let (i_birth, birth) = host.wait_for("NBIRTH", 0, |m| m["type"] == "NBIRTH");
    let rebirth = metric(&birth, "Node Control/Rebirth").unwrap();
    assert!(
        rebirth["alias"].is_null(),
        "tck-id-operational-behavior-data-commands-rebirth-name-aliases: {rebirth}"
    );
    assert_eq!(birth["qos"], 0, "tck-id-topics-nbirth-qos");
    assert_eq!(birth["retain"], false, "tck-id-topics-nbirth-retain");
    // The first birth carries the full metric set with values, not only bdSeq and Rebirth.
    let n = birth["metrics"].as_array().unwrap().len();
    assert!(n >= 30, "the first NBIRTH lists {n} metrics");
    let info =
        metric_starting(&birth, "copilot_edge_build_info").expect("build_info in the first birth");
    assert_eq!(info["value"].as_f64(), Some(1.0), "{info}");
    // No traffic: no rebirth follows on its own.
    let (_, d) = host.wait_for("NDATA", i_birth, |m| m["type"] == "NDATA");
    assert_eq!(d["qos"], 0, "tck-id-topics-ndata-qos");
    assert_eq!(d["retain"], false, "tck-id-topics-ndata-retain");
    std::thread::sleep(Duration::from_secs(4));
    assert_one_birth(&host.all()[i_birth..], "a quiet start");
    let bd0 = bd_seq(&birth);

    // Equipment is a device: a new equipment id is one DBIRTH on the device's topic, with its
    // series, without a new NBIRTH; its counts arrive as DDATA. (The plant's first request
    // creates node series, latency and request counts, and so one NBIRTH: made first.)
    let from = host.len();
    assert_eq!(a.diagnose("plant-7", "press-76", PRESS).status, 200);
    host.wait_for("the first equipment's DBIRTH", from, |m| {
        m["type"] == "DBIRTH" && m["device"] == "press-76"
    });
    std::thread::sleep(Duration::from_secs(2));
    let i_birth = host
        .all()
        .iter()
        .rposition(|m| m["type"] == "NBIRTH")
        .unwrap();
    let birth = host.all()[i_birth].clone();
    let from = host.len();
    assert_eq!(a.diagnose("plant-7", "press-77", PRESS).status, 200);
    let (i_db, db) = host.wait_for("the new equipment's DBIRTH", from, |m| {
        m["type"] == "DBIRTH" && m["device"] == "press-77"
    });
    assert_eq!(db["qos"], 0, "tck-id-topics-dbirth-qos");
    assert_eq!(db["retain"], false, "tck-id-topics-dbirth-retain");
    let eq = metric_starting(&db, "copilot_equipment_requests_total{")
        .unwrap_or_else(|| panic!("the DBIRTH lists the equipment's series: {db}"));
    assert_eq!(eq["properties"]["equipment_id"], "press-77");
    host.wait_for(
        "the equipment's DDATA or its count in the birth",
        i_db,
        |m| {
            (m["type"] == "DDATA" || m["type"] == "DBIRTH")
                && m["device"] == "press-77"
                && metric_starting(m, "copilot_equipment_requests_total{")
                    .is_some_and(|x| x["value"].as_f64() == Some(1.0))
        },
    );
    assert_eq!(a.diagnose("plant-7", "press-78", PRESS).status, 200);
    host.wait_for("a second device", i_db, |m| {
        m["type"] == "DBIRTH" && m["device"] == "press-78"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_one_birth(&host.all()[i_birth..], "two new pieces of equipment");
    assert!(
        birth["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| !x["name"].as_str().unwrap().contains("equipment_id=")),
        "the NBIRTH carries no device series"
    );
    assert_sequence_rules(&host.all());

    // A broker outage long enough for several connect attempts the broker never answers: the
    // next birth's bdSeq is one more, not one more per attempt.
    let from = host.len();
    broker.stop();
    std::thread::sleep(Duration::from_secs(8));
    let mut broker = mosquitto_on(port, data.path());
    let (_, b1) = host.wait_for("the birth after the outage", from, |m| {
        m["type"] == "NBIRTH"
    });
    assert_eq!(
        bd_seq(&b1),
        (bd0 + 1) % 256,
        "tck-id-topics-nbirth-bdseq-increment (+1 per CONNECT the broker accepted)"
    );

    // Clean Session: an NCMD sent while the node is offline is not queued for it by the broker.
    let from = host.len();
    a.kill();
    host.wait_for("NDEATH (the will)", from, |m| m["type"] == "NDEATH");
    host.send("rebirth");
    host.wait_for("the command sent", from, |m| m["type"] == "COMMAND_SENT");
    let a = Agent::start(dir.path(), &config(dir.path(), port));
    let (_, b2) = host.wait_for("the birth after the restart", from, |m| {
        m["type"] == "NBIRTH"
    });
    assert_eq!(bd_seq(&b2), (bd0 + 2) % 256);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        a.events()
            .iter()
            .all(|e| e["event"] != "sparkplug_rebirth_requested"),
        "tck-id-principles-persistence-clean-session-311: a stale NCMD reached the node"
    );
    // (A second birth may follow here for another reason: a record of the killed process still
    // in the spool can carry a series the new process has not created yet.)

    // Records at QoS 0 are still confirmed before the spool lets them go: traffic through a
    // broker restart arrives whole.
    let t = Traffic::start(a.addr, "sp-tck");
    std::thread::sleep(Duration::from_secs(2));
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    t.stop();
    let backlog = spooled(dir.path());
    let newest = *backlog.keys().last().unwrap();
    let from = host.len();
    let _broker = mosquitto_on(port, data.path());
    host.wait_for("the backlog's newest record", from, |m| {
        m["type"] == "NDATA" && record_seq(m) >= newest
    });
    let msgs = host.all();
    let seen = assert_values_match_spool(&msgs, &backlog);
    for seq in backlog.keys() {
        assert!(
            seen.contains_key(seq),
            "record {seq} never reached the host"
        );
    }
    assert_sequence_rules(&msgs);
    drop(a);
}

/// Exactly one NBIRTH in `msgs`; otherwise names the series the later births added.
fn assert_one_birth(msgs: &[Value], after: &str) {
    let births = of_type(msgs, "NBIRTH");
    let names = |b: &Value| -> Vec<String> {
        b["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect()
    };
    let first = names(births[0]);
    let added: Vec<String> = births
        .iter()
        .skip(1)
        .flat_map(|b| names(b))
        .filter(|n| !first.contains(n))
        .collect();
    assert_eq!(
        births.len(),
        1,
        "NBIRTHs after {after}; series the later ones added: {added:?}"
    );
}
