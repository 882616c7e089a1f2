//! Fleet simulator (`cargo run --release --example fleet-sim -- …`; `tests/fleet` runs it).
//!
//! Runs many gateways' telemetry against real central services on this machine: a handful of
//! real `copilot-edge` processes plus, for the rest, the project's own code per gateway — a
//! `Metrics` registry with simulated traffic, a `Spool` in its own directory, and the real
//! `MqttSink` and `RemoteWriteSink` tasks — against a real Mosquitto and a real VictoriaMetrics
//! (and a real Prometheus for the backfill comparison), all started here on loopback ports.
//!
//! Scenarios, in one run:
//! 1. **Outage and reconnect storm**: every gateway starts with `--outage-secs` of backdated
//!    snapshots in its spool (an outage "with traffic") and its sinks running against a broker
//!    and a store that are down, long enough for their backoff to reach its cap (`--warm-secs`);
//!    then the broker and VictoriaMetrics come back in the same second. Measured: reconnects per
//!    second at the broker (its own log), time until every gateway's backlog is acknowledged on
//!    each sink, and completeness on the central side — every snapshot's timestamp present in
//!    VictoriaMetrics for every gateway, every record sequence number received over MQTT.
//! 2. **Steady state** for `--steady-secs`: samples/s ingested by VictoriaMetrics, CPU and memory
//!    of VictoriaMetrics and Mosquitto, bytes per gateway per day on each sink, and the query time
//!    of the dashboard's panels over the whole fleet.
//! 3. **24 h backfill** of `--backfill-gateways` gateways into VictoriaMetrics and, the same
//!    backlog, into Prometheus with its 2 h out-of-order window: what each accepts, and what the
//!    agent counts as rejected.
//!
//! Prints a Markdown table (and writes it to `--md FILE`); exits non-zero when anything is lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use copilot_edge::clock::now_ms;
use copilot_edge::config::{self, Config, Environment};
use copilot_edge::metrics::{agent, Metrics};
use copilot_edge::sinks::mqtt::MqttSink;
use copilot_edge::sinks::remote_write::{self, RemoteWriteSink};
use copilot_edge::spool::segment::{Kind, Record};
use copilot_edge::spool::Spool;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

// ----------------------------------------------------------------------------------------------
// Arguments
// ----------------------------------------------------------------------------------------------

struct Args {
    gateways: usize,
    real: usize,
    interval: u64,
    outage_secs: u64,
    warm_secs: u64,
    steady_secs: u64,
    backfill_gateways: usize,
    backfill_hours: u64,
    dir: PathBuf,
    bin: PathBuf,
    md: Option<PathBuf>,
    backfill_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        gateways: 50,
        real: 3,
        interval: 15,
        outage_secs: 3600,
        warm_secs: 65,
        steady_secs: 60,
        backfill_gateways: 5,
        backfill_hours: 24,
        dir: std::env::temp_dir().join("copilot-edge-fleet"),
        bin: PathBuf::from("target/release/copilot-edge"),
        md: None,
        backfill_only: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        let num = || {
            val.parse::<u64>()
                .unwrap_or_else(|_| panic!("{}: a number", v[i]))
        };
        if v[i] == "--backfill-only" {
            a.backfill_only = true;
            i += 1;
            continue;
        }
        match v[i].as_str() {
            "--gateways" => a.gateways = num() as usize,
            "--real" => a.real = num() as usize,
            "--interval-secs" => a.interval = num(),
            "--outage-secs" => a.outage_secs = num(),
            "--warm-secs" => a.warm_secs = num(),
            "--steady-secs" => a.steady_secs = num(),
            "--backfill-gateways" => a.backfill_gateways = num() as usize,
            "--backfill-hours" => a.backfill_hours = num(),
            "--dir" => a.dir = PathBuf::from(&val),
            "--bin" => a.bin = PathBuf::from(&val),
            "--md" => a.md = Some(PathBuf::from(&val)),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    assert!(a.real <= a.gateways, "--real must not exceed --gateways");
    a
}

// ----------------------------------------------------------------------------------------------
// Central services and small HTTP helpers
// ----------------------------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(bin: &str) -> PathBuf {
    for d in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let p = Path::new(d).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{bin}` is not installed (tests/run installs it)");
}

fn spawn(name: &'static str, bin: &str, args: &[String], port: u16) -> Proc {
    let child = Command::new(which(bin))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{name} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc { child }
}

fn mosquitto(port: u16, dir: &Path) -> (Proc, PathBuf) {
    let conf = dir.join("mosquitto.conf");
    let log = dir.join("mosquitto.log");
    std::fs::write(
        &conf,
        format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nmessage_size_limit 0\n\
             log_dest file {}\nlog_type notice\nlog_timestamp true\nlog_timestamp_format %s\n",
            dir.display(),
            log.display()
        ),
    )
    .unwrap();
    (
        spawn(
            "mosquitto",
            "mosquitto",
            &["-c".into(), conf.display().to_string()],
            port,
        ),
        log,
    )
}

fn victoria_metrics(port: u16, dir: &Path) -> Proc {
    spawn(
        "victoria-metrics",
        "victoria-metrics",
        &[
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}", dir.display()),
            "-retentionPeriod=1".into(),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=ERROR".into(),
        ],
        port,
    )
}

fn prometheus(port: u16, dir: &Path) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("prometheus.yml");
    std::fs::write(
        &conf,
        "global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 2h\n",
    )
    .unwrap();
    spawn(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", conf.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".into(),
            "--storage.tsdb.retention.time=30d".into(),
            "--log.level=error".into(),
        ],
        port,
    )
}

fn http_get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut body = raw[(split + 4).min(raw.len())..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(port: u16, q: &str) -> serde_json::Value {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", enc(q)));
    assert_eq!(status, 200, "{q}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn scalar(port: u16, q: &str) -> f64 {
    query(port, q)["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Sample timestamps of `copilot_edge_build_info` per gateway in a store (`/api/v1/export`).
fn exported_times(port: u16, selector: &str) -> HashMap<String, Vec<i64>> {
    let (status, body) = http_get(port, &format!("/api/v1/export?match[]={}", enc(selector)));
    assert_eq!(status, 200);
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        let gw = v["metric"]["gateway_id"].as_str().unwrap_or("").to_string();
        let ts = v["timestamps"].as_array().unwrap();
        out.entry(gw)
            .or_default()
            .extend(ts.iter().filter_map(|t| t.as_i64()));
    }
    for v in out.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    out
}

/// (cpu seconds, rss MiB, peak rss MiB) of a process.
fn proc_usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |p| p.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0;
    let cpu = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (cpu, kb("VmRSS:"), kb("VmHWM:"))
}

// ----------------------------------------------------------------------------------------------
// Simulated gateways
// ----------------------------------------------------------------------------------------------

struct Gw {
    id: String,
    plant: String,
    cfg: Config,
    metrics: Arc<Metrics>,
    spool: Arc<Spool>,
    /// Timestamps of every snapshot appended.
    snaps: Mutex<Vec<i64>>,
    rng: Mutex<u64>,
}

fn rand(state: &Mutex<u64>) -> u64 {
    let mut s = state.lock().unwrap();
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

impl Gw {
    /// A gateway; `gzip`: its MQTT sink compresses (`compression = "gzip"`).
    fn new(
        id: &str,
        site: &str,
        dir: &Path,
        interval: u64,
        mqtt: Option<(u16, bool)>,
        rw: &str,
    ) -> Gw {
        let cfg = Gw::config(id, &Gw::config_text(id, site, dir, interval, mqtt, rw));
        let metrics = Arc::new(Metrics::new(id, cfg.labels.clone(), &cfg.metrics, 0.0).unwrap());
        let sinks: Vec<&str> = if mqtt.is_some() {
            vec!["mqtt", "remote_write"]
        } else {
            vec!["remote_write"]
        };
        let spool = Spool::open(&cfg.spool, &sinks, metrics.clone()).unwrap();
        let seed = id.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        }) | 1;
        Gw {
            id: id.to_string(),
            plant: format!("plant-{}", seed % 7),
            cfg,
            metrics,
            spool,
            snaps: Mutex::new(Vec::new()),
            rng: Mutex::new(seed),
        }
    }

    /// The remote-write sink of this gateway's configuration, pointed at `url`.
    fn remote_write_to(&self, url: &str) -> copilot_edge::config::RemoteWriteSinkConfig {
        let dir = self.cfg.spool.dir.parent().unwrap().parent().unwrap();
        let text = Gw::config_text(
            &self.id,
            &self.cfg.identity.site_plant_id,
            dir,
            self.cfg.metrics.snapshot_interval.as_secs(),
            None,
            url,
        );
        Gw::config(&self.id, &text).remote_write.unwrap()
    }

    fn config(id: &str, text: &str) -> Config {
        config::parse(text, id)
            .and_then(|r| r.validate(id, &Environment::default()))
            .unwrap_or_else(|e| panic!("{id}: {e}"))
    }

    fn config_text(
        id: &str,
        site: &str,
        dir: &Path,
        interval: u64,
        mqtt: Option<(u16, bool)>,
        rw: &str,
    ) -> String {
        let spool_dir = dir.join(id);
        let mut text = format!(
            "[identity]\ngateway_id = \"{id}\"\nsite_plant_id = \"{site}\"\n\
             [paths]\nstate_dir = {sd:?}\nlog_dir = {ld:?}\n\
             [metrics]\nsnapshot_interval_secs = {interval}\n\
             [spool]\ndir = {sp:?}\nmax_bytes = 268435456\nsegment_bytes = 4194304\nmin_free_bytes = 0\nship_logs = false\n\
             [sinks.remote_write]\nenabled = true\nurl = \"{rw}\"\ntimeout_ms = 30000\n",
            sd = spool_dir.join("state").display().to_string(),
            ld = spool_dir.join("logs").display().to_string(),
            sp = spool_dir.join("spool").display().to_string(),
        );
        if let Some((port, gzip)) = mqtt {
            text.push_str(&format!(
                "[sinks.mqtt]\nenabled = true\nport = {port}\nclient_id = \"{id}\"\nkeep_alive_secs = 60\n\
                 compression = \"{}\"\n",
                if gzip { "gzip" } else { "none" }
            ));
        }
        text
    }

    /// A few requests' worth of metric updates, as the HTTP layer records them.
    fn traffic(&self) {
        let m = &self.metrics;
        let plant = m.labels.plant(&self.plant);
        for _ in 0..rand(&self.rng) % 6 {
            let r = rand(&self.rng);
            let secs = 0.002 + (r % 400) as f64 / 1000.0;
            m.http_requests
                .with_label_values(&["/v1/diagnose", "POST", "2xx"])
                .inc();
            m.http_duration
                .with_label_values(&["/v1/diagnose", "POST"])
                .observe(secs);
            m.requests
                .with_label_values(&[&plant, agent::RAG, "200"])
                .inc();
            m.latency
                .with_label_values(&[&plant, agent::RAG])
                .observe(secs);
            m.record_answer(&plant, agent::RAG, r % 10 != 0);
            let eq = m.labels.equipment(&plant, &format!("press-{:02}", r % 12));
            m.equipment_requests.inc(&plant, &eq);
        }
    }

    fn snapshot(&self, ts: i64) {
        self.traffic();
        let text = self.metrics.render();
        self.spool.append(Kind::Metrics, ts, &[&text]);
        self.snaps.lock().unwrap().push(ts);
    }

    /// The highest sequence number appended.
    fn last_seq(&self) -> u64 {
        self.spool.next_seq() - 1
    }
}

// ----------------------------------------------------------------------------------------------
// MQTT collector: every metrics record per gateway, and the bytes it took
// ----------------------------------------------------------------------------------------------

#[derive(Default)]
struct Collected {
    seqs: HashMap<String, HashSet<u64>>,
    bytes: HashMap<String, u64>,
}

async fn collect(
    port: u16,
    into: Arc<Mutex<Collected>>,
    stop: CancellationToken,
    mut subscribed: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut o = MqttOptions::new("fleet-collector", "127.0.0.1", port);
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut el) = AsyncClient::new(o, 1024);
    client
        .subscribe("copilot/+/+/metrics", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // "# copilot_edge_record seq=N ts_ms=T gateway_id=G", gzip-compressed or not
                    let plain = if p.payload.starts_with(&[0x1f, 0x8b]) {
                        match copilot_edge::compress::gunzip(&p.payload, 64 << 20) {
                            Ok(d) => d,
                            Err(e) => panic!("{}: bad gzip payload: {e}", p.topic),
                        }
                    } else {
                        p.payload.to_vec()
                    };
                    let head = plain.split(|b| *b == b'\n').next().unwrap_or(b"");
                    let head = String::from_utf8_lossy(head);
                    let field = |k: &str| head.split(' ').find_map(|f| f.strip_prefix(k)).map(str::to_string);
                    if let (Some(seq), Some(gw)) = (field("seq=").and_then(|s| s.parse().ok()), field("gateway_id=")) {
                        let mut c = into.lock().unwrap();
                        *c.bytes.entry(gw.clone()).or_default() += (p.payload.len() + p.topic.len() + 4) as u64;
                        c.seqs.entry(gw).or_default().insert(seq);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Real agents
// ----------------------------------------------------------------------------------------------

fn real_agent(bin: &Path, dir: &Path, id: &str, interval: u64, mqtt: u16, rw: &str) -> Proc {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap();
    let conf = d.join("copilot-edge.toml");
    std::fs::write(
        &conf,
        format!(
            "[identity]\ngateway_id = \"{id}\"\nsite_plant_id = \"site-real\"\n[paths]\nstate_dir = {:?}\nlog_dir = {:?}\n\
             [metrics]\nsnapshot_interval_secs = {interval}\n[spool]\nship_logs = false\n\
             [sinks.mqtt]\nenabled = true\nport = {mqtt}\n[sinks.remote_write]\nenabled = true\nurl = \"{rw}\"\n",
            d.join("state").display().to_string(),
            d.join("logs").display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&conf)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc { child }
}

// ----------------------------------------------------------------------------------------------
// Main
// ----------------------------------------------------------------------------------------------

fn fmt_bytes(b: f64) -> String {
    if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} KB", b / 1e3)
    }
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .unwrap();
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).unwrap();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let interval_ms = a.interval as i64 * 1000;
    let sim_n = a.gateways - a.real;
    if a.backfill_only {
        let svc = a.dir.join("services");
        backfill(&a, &rt, &svc, &mut rows, &mut failures);
        return report(&a, &rows, &failures, rt);
    }
    let (mqtt_port, vm_port) = (free_port(), free_port());
    let rw_url = format!("http://127.0.0.1:{vm_port}/api/v1/write");

    // --- 1. the outage: backdated backlogs, sinks failing against absent services ----------
    let t0 = Instant::now();
    let gws: Vec<Arc<Gw>> = (0..sim_n)
        .map(|i| {
            Arc::new(Gw::new(
                &format!("sim-{i:04}"),
                &format!("site-{:02}", i % 40),
                &a.dir.join("gw"),
                a.interval,
                // every second gateway compresses its MQTT payloads, to measure both
                Some((mqtt_port, i % 2 == 1)),
                &rw_url,
            ))
        })
        .collect();
    let backlog_n = (a.outage_secs / a.interval) as i64;
    let start = now_ms() - a.outage_secs as i64 * 1000;
    for g in &gws {
        let phase = (rand(&g.rng) % interval_ms as u64) as i64;
        for k in 0..backlog_n {
            g.snapshot(start + phase + k * interval_ms);
        }
    }
    eprintln!(
        "fleet: {} simulated gateways with {} backdated snapshots each in {:.1} s",
        sim_n,
        backlog_n,
        t0.elapsed().as_secs_f64()
    );
    let series_per_gw = String::from_utf8_lossy(&gws[0].metrics.render())
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();

    // The collector's persistent session exists on the broker before any gateway publishes: it
    // subscribes once now, and the broker keeps the session in its persistence file.
    let svc = a.dir.join("services");
    std::fs::create_dir_all(svc.join("vm")).unwrap();
    {
        let (mut b, _) = mosquitto(mqtt_port, &svc);
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(collect(
            mqtt_port,
            Arc::new(Mutex::new(Collected::default())),
            stop.clone(),
            Some(tx),
        ));
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), rx).await })
            .expect("collector subscribed")
            .unwrap();
        stop.cancel();
        std::thread::sleep(Duration::from_millis(300));
        // SIGTERM: the broker writes its persistence file on the way out.
        unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) };
        let _ = b.child.wait();
        let _ = std::fs::remove_file(svc.join("mosquitto.log"));
    }

    let shutdown = CancellationToken::new();
    // The remote-write sinks stop on their own token when the load moves to Prometheus.
    let rw_stop = shutdown.child_token();
    let _guard = rt.enter();
    for g in &gws {
        let c = &g.cfg;
        if let Some(mq) = c.mqtt.clone() {
            let s = MqttSink::new(
                mq,
                g.spool.clone(),
                g.metrics.clone(),
                &g.id,
                &c.identity.site_plant_id,
                c.metrics.snapshot_interval,
            );
            rt.spawn(s.run(shutdown.clone()));
        }
        let rw = c.remote_write.clone().unwrap();
        let s = RemoteWriteSink::new(
            rw,
            g.spool.clone(),
            g.metrics.clone(),
            c.metrics.snapshot_interval,
        );
        rt.spawn(s.run(rw_stop.clone()));
        // Live snapshots continue the gateway's cadence from its last backdated one.
        let g2 = g.clone();
        let stop = shutdown.clone();
        rt.spawn(async move {
            loop {
                let last = g2
                    .snaps
                    .lock()
                    .unwrap()
                    .last()
                    .copied()
                    .unwrap_or_else(now_ms);
                let wait = (last + interval_ms - now_ms()).max(0) as u64;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => g2.snapshot(now_ms()),
                }
            }
        });
    }
    let reals: Vec<Proc> = (0..a.real)
        .map(|i| {
            real_agent(
                &a.bin,
                &a.dir.join("real"),
                &format!("real-{i:02}"),
                a.interval,
                mqtt_port,
                &rw_url,
            )
        })
        .collect();
    eprintln!(
        "fleet: sinks failing for {} s (backoff reaches its cap)",
        a.warm_secs
    );
    std::thread::sleep(Duration::from_secs(a.warm_secs));

    // --- back within the same second ------------------------------------------------------
    let backlog_upto: Vec<u64> = gws.iter().map(|g| g.last_seq()).collect();
    let collected = Arc::new(Mutex::new(Collected::default()));
    let back = Instant::now();
    let (broker, broker_log) = mosquitto(mqtt_port, &svc);
    let vm = victoria_metrics(vm_port, &svc.join("vm"));
    let stop_collect = CancellationToken::new();
    rt.spawn(collect(
        mqtt_port,
        collected.clone(),
        stop_collect.clone(),
        None,
    ));
    eprintln!(
        "fleet: broker and VictoriaMetrics up in {:.2} s",
        back.elapsed().as_secs_f64()
    );
    let mut caught: HashMap<&str, f64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    while caught.len() < 2 && Instant::now() < deadline {
        for sink in ["mqtt", "remote_write"] {
            if !caught.contains_key(sink)
                && gws
                    .iter()
                    .zip(&backlog_upto)
                    .all(|(g, upto)| g.spool.acked(sink) >= *upto)
            {
                caught.insert(sink, back.elapsed().as_secs_f64());
                eprintln!(
                    "fleet: {sink} caught up after {:.1} s",
                    back.elapsed().as_secs_f64()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for sink in ["mqtt", "remote_write"] {
        if !caught.contains_key(sink) {
            failures.push(format!("{sink}: backlog not delivered within 15 minutes"));
        }
    }

    // Reconnects per second at the broker, from its log.
    let log = std::fs::read_to_string(&broker_log).unwrap_or_default();
    let mut per_sec: BTreeMap<i64, u64> = BTreeMap::new();
    for l in log.lines().filter(|l| l.contains("New client connected")) {
        if let Some(t) = l
            .split(':')
            .next()
            .and_then(|t| t.trim().parse::<i64>().ok())
        {
            *per_sec.entry(t).or_default() += 1;
        }
    }
    let connects: u64 = per_sec.values().sum();
    let peak = per_sec.values().copied().max().unwrap_or(0);
    let spread = per_sec
        .keys()
        .next()
        .zip(per_sec.keys().last())
        .map_or(0, |(f, l)| l - f + 1);

    // Completeness: MQTT sequence numbers and VictoriaMetrics timestamps per gateway, for what
    // the broker and the store had acknowledged at this moment (later records may be in flight).
    let acked_mqtt: Vec<u64> = gws.iter().map(|g| g.spool.acked("mqtt")).collect();
    let acked_rw: Vec<usize> = gws
        .iter()
        .map(|g| g.spool.acked("remote_write") as usize)
        .collect();
    // One collector takes the whole fleet's backlog; wait while it is still catching up.
    let mut mqtt_missing = u64::MAX;
    let mut progress = Instant::now();
    while progress.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        let c = collected.lock().unwrap();
        let missing = gws
            .iter()
            .zip(&acked_mqtt)
            .map(|(g, acked)| {
                let got = c.seqs.get(&g.id);
                (1..=*acked)
                    .filter(|s| !got.is_some_and(|set| set.contains(s)))
                    .count() as u64
            })
            .sum::<u64>();
        if missing < mqtt_missing {
            progress = Instant::now();
        }
        mqtt_missing = missing;
        if mqtt_missing == 0 {
            break;
        }
    }
    if mqtt_missing > 0 {
        let c = collected.lock().unwrap();
        let detail: Vec<String> = gws
            .iter()
            .zip(&acked_mqtt)
            .filter_map(|(g, acked)| {
                let got = c.seqs.get(&g.id);
                let miss: Vec<u64> = (1..=*acked)
                    .filter(|s| !got.is_some_and(|set| set.contains(s)))
                    .collect();
                (!miss.is_empty()).then(|| {
                    format!(
                        "{} {}x from {} to {} (acked {acked})",
                        g.id,
                        miss.len(),
                        miss[0],
                        miss[miss.len() - 1]
                    )
                })
            })
            .take(8)
            .collect();
        eprintln!("fleet: missing at the collector: {}", detail.join("; "));
        failures.push(format!(
            "mqtt: {mqtt_missing} acknowledged records never reached the collector"
        ));
    }
    let mut vm_missing = 0usize;
    let mut max_gap = 0i64;
    let mut produced_gap = 0i64;
    for attempt in 0..30 {
        let times = exported_times(vm_port, "copilot_edge_build_info{gateway_id=~\"sim-.*\"}");
        vm_missing = 0;
        max_gap = 0;
        produced_gap = 0;
        for (g, acked) in gws.iter().zip(&acked_rw) {
            let want = g.snaps.lock().unwrap().clone();
            let acked = *acked;
            let have: HashSet<i64> = times
                .get(&g.id)
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            vm_missing += want
                .iter()
                .take(acked)
                .filter(|t| !have.contains(t))
                .count();
            if let Some(v) = times.get(&g.id) {
                max_gap = max_gap.max(v.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0));
            }
            produced_gap =
                produced_gap.max(want.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0));
        }
        if vm_missing == 0 {
            break;
        }
        eprintln!("fleet: VictoriaMetrics misses {vm_missing} snapshots (attempt {attempt})");
        std::thread::sleep(Duration::from_secs(1));
    }
    if vm_missing > 0 {
        failures.push(format!(
            "victoriametrics: {vm_missing} acknowledged snapshots missing"
        ));
    }
    // A gap in the store is only a loss when the gateway produced snapshots inside it (then
    // they are counted as missing above); a gateway whose snapshot task was starved on this
    // 2-core host produced the gap itself, which the table shows.
    if max_gap > produced_gap.max(interval_ms * 3 / 2) {
        failures.push(format!(
            "victoriametrics: a gap of {max_gap} ms (largest produced {produced_gap} ms)"
        ));
    }

    rows.push((
        "gateways (simulated + real copilot-edge processes)".into(),
        format!("{} ({sim_n} + {})", a.gateways, a.real),
    ));
    rows.push(("snapshot interval".into(), format!("{} s", a.interval)));
    rows.push((
        "series per gateway (simulated traffic: 7 plants' worth of labels)".into(),
        series_per_gw.to_string(),
    ));
    let total_series = scalar(vm_port, "count({__name__!=\"\"})");
    rows.push((
        "series in total in VictoriaMetrics".into(),
        format!("{total_series:.0}"),
    ));
    rows.push((
        "outage backlog per gateway".into(),
        format!(
            "{} s = {backlog_n} snapshots, {} in all",
            a.outage_secs,
            backlog_n * sim_n as i64
        ),
    ));
    rows.push((
        "reconnects at the broker: total, peak per second, spread".into(),
        format!("{connects}, {peak}/s, over {spread} s"),
    ));
    rows.push((
        "catch-up after the storm: MQTT / remote write".into(),
        format!(
            "{:.1} s / {:.1} s",
            caught.get("mqtt").copied().unwrap_or(f64::NAN),
            caught.get("remote_write").copied().unwrap_or(f64::NAN)
        ),
    ));
    rows.push((
        "lost: MQTT records / VictoriaMetrics snapshots".into(),
        format!("{mqtt_missing} / {vm_missing}"),
    ));
    rows.push((
        "largest gap between snapshots: in VictoriaMetrics / as produced by the gateways".into(),
        format!(
            "{:.1} s / {:.1} s",
            max_gap as f64 / 1000.0,
            produced_gap as f64 / 1000.0
        ),
    ));

    // --- 2. steady state ------------------------------------------------------------------
    let rows_at = |port: u16| -> f64 {
        let (_, body) = http_get(port, "/metrics");
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with("vm_rows_inserted_total"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };
    let bytes_before: HashMap<String, u64> = collected.lock().unwrap().bytes.clone();
    let (vm_cpu0, _, _) = proc_usage(vm.child.id());
    let (mq_cpu0, _, _) = proc_usage(broker.child.id());
    let rows0 = rows_at(vm_port);
    let steady = Instant::now();
    let mut vm_rss = 0f64;
    let mut mq_rss = 0f64;
    while steady.elapsed() < Duration::from_secs(a.steady_secs) {
        std::thread::sleep(Duration::from_secs(1));
        vm_rss = vm_rss.max(proc_usage(vm.child.id()).1);
        mq_rss = mq_rss.max(proc_usage(broker.child.id()).1);
    }
    let secs = steady.elapsed().as_secs_f64();
    let ingest = (rows_at(vm_port) - rows0) / secs;
    let vm_cpu = (proc_usage(vm.child.id()).0 - vm_cpu0) / secs;
    let mq_cpu = (proc_usage(broker.child.id()).0 - mq_cpu0) / secs;
    // Bytes per gateway per day at the collector, for the plain and the gzip half of the fleet.
    let mqtt_bytes = |gzip: bool| -> f64 {
        let c = collected.lock().unwrap();
        let half: Vec<&Arc<Gw>> = gws
            .iter()
            .filter(|g| g.cfg.mqtt.as_ref().is_some_and(|m| m.gzip == gzip))
            .collect();
        half.iter()
            .map(|g| {
                c.bytes.get(&g.id).copied().unwrap_or(0)
                    - bytes_before.get(&g.id).copied().unwrap_or(0)
            })
            .sum::<u64>() as f64
            / half.len().max(1) as f64
            / secs
            * 86400.0
    };
    // Remote write bodies per snapshot (snappy-compressed protobuf), as the sink sends them live.
    let g = &gws[0];
    let text = g.metrics.render();
    let rec = Record {
        seq: 1,
        ts_ms: now_ms(),
        kind: Kind::Metrics,
        payload: text.clone(),
    };
    let ext = g.cfg.remote_write.as_ref().unwrap().external_labels.clone();
    let body =
        remote_write::encode_write_request(&remote_write::snapshots_to_series(&[&rec], &ext));
    let snappy = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    let per_day = 86400.0 / a.interval as f64;
    // Sparkplug B NDATA by exception (only the series that changed), for the same gateway.
    let mut node = copilot_edge::sinks::sparkplug::Node::new(0);
    let first = String::from_utf8_lossy(&text).into_owned();
    node.birth(Some((1, now_ms(), &first)), "", now_ms());
    node.device_births(now_ms(), &first, now_ms());
    let d = node.data(1, now_ms(), &first, false, true, now_ms());
    node.commit(d.messages(), true);
    g.traffic();
    let second = String::from_utf8_lossy(&g.metrics.render()).into_owned();
    node.register(&second);
    // DDATA and NDATA of one snapshot together (a new device's DBIRTH not counted).
    node.device_births(now_ms(), &second, now_ms());
    let ndata = node
        .data(2, now_ms(), &second, false, true, now_ms())
        .bytes();
    rows.push((
        "central ingest, steady state (VictoriaMetrics rows/s)".into(),
        format!("{ingest:.0} samples/s"),
    ));
    rows.push((
        "VictoriaMetrics CPU / peak RSS".into(),
        format!("{:.0} % of a core / {vm_rss:.0} MiB", vm_cpu * 100.0),
    ));
    rows.push((
        "Mosquitto CPU / peak RSS".into(),
        format!("{:.0} % of a core / {mq_rss:.0} MiB", mq_cpu * 100.0),
    ));
    rows.push((
        "uplink per gateway per day, MQTT (Prometheus text, measured at the collector)".into(),
        fmt_bytes(mqtt_bytes(false)),
    ));
    rows.push((
        "uplink per gateway per day, MQTT (Prometheus text, compression = \"gzip\", the other half of the fleet)".into(),
        fmt_bytes(mqtt_bytes(true)),
    ));
    rows.push(("uplink per gateway per day, MQTT Sparkplug B (NDATA by exception, one snapshot of traffic apart)".into(), format!(
        "{} ({ndata} B per snapshot)",
        fmt_bytes(ndata as f64 * per_day)
    )));
    rows.push((
        "uplink per gateway per day, remote write (snappy protobuf bodies)".into(),
        format!(
            "{} ({} B per snapshot; uncompressed {} B)",
            fmt_bytes(snappy.len() as f64 * per_day),
            snappy.len(),
            body.len()
        ),
    ));

    // Dashboard panels over the fleet.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/alerts/dashboards/copilot-edge.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<(String, String)>, title: &str) {
        match v {
            serde_json::Value::Object(m) => {
                let t = m
                    .get("title")
                    .and_then(|t| t.as_str())
                    .unwrap_or(title)
                    .to_string();
                if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                    out.push((t.clone(), e.to_string()));
                }
                for x in m.values() {
                    walk(x, out, &t);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out, title)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs, "");
    let mut timed: Vec<(f64, String)> = Vec::new();
    for (title, e) in &exprs {
        if e.contains("{job=") && e.contains("loki") {
            continue;
        }
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$__range", "1h")
            .replace("${plant_id:regex}", ".*")
            .replace("$plant_id", ".*")
            .replace("$agent_name", ".*")
            .replace("$gateway_id", ".*");
        let end = now_ms() / 1000;
        let t = Instant::now();
        let (status, _) = http_get(
            vm_port,
            &format!(
                "/api/v1/query_range?query={}&start={}&end={end}&step=60",
                enc(&q),
                end - 3600
            ),
        );
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if status == 200 {
            timed.push((ms, title.clone()));
        }
    }
    timed.sort_by(|x, y| y.0.total_cmp(&x.0));
    let top: Vec<String> = timed
        .iter()
        .take(3)
        .map(|(ms, t)| format!("{t} {ms:.0} ms"))
        .collect();
    rows.push((
        format!(
            "dashboard queries over the fleet, 1 h range ({} panels' queries), slowest",
            timed.len()
        ),
        top.join("; "),
    ));

    // --- 2b. the same steady load on Prometheus (remote-write receiver) ----------------------
    // The simulated gateways' remote write moves from VictoriaMetrics to a Prometheus; after a
    // settling period its CPU, memory and ingest are measured like VictoriaMetrics' above.
    rw_stop.cancel();
    let prom_port = free_port();
    let prom = prometheus(prom_port, &svc.join("prom-steady"));
    let prom_url = format!("http://127.0.0.1:{prom_port}/api/v1/write");
    for g in &gws {
        let s = RemoteWriteSink::new(
            g.remote_write_to(&prom_url),
            g.spool.clone(),
            g.metrics.clone(),
            g.cfg.metrics.snapshot_interval,
        );
        rt.spawn(s.run(shutdown.clone()));
    }
    let prom_samples = || -> f64 {
        let (_, body) = http_get(prom_port, "/metrics");
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with("prometheus_tsdb_head_samples_appended_total"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };
    std::thread::sleep(Duration::from_secs(2 * a.interval));
    let (p_cpu0, _, _) = proc_usage(prom.child.id());
    let p_rows0 = prom_samples();
    let steady = Instant::now();
    let mut p_rss = 0f64;
    while steady.elapsed() < Duration::from_secs(a.steady_secs) {
        std::thread::sleep(Duration::from_secs(1));
        p_rss = p_rss.max(proc_usage(prom.child.id()).1);
    }
    let secs = steady.elapsed().as_secs_f64();
    let p_ingest = (prom_samples() - p_rows0) / secs;
    let p_cpu = (proc_usage(prom.child.id()).0 - p_cpu0) / secs;
    if p_ingest <= 0.0 {
        failures.push("steady state on Prometheus: no samples ingested".into());
    }
    rows.push((
        "Prometheus with the same load by remote write: ingest, CPU / peak RSS".into(),
        format!(
            "{p_ingest:.0} samples/s, {:.0} % of a core / {p_rss:.0} MiB",
            p_cpu * 100.0
        ),
    ));

    shutdown.cancel();
    stop_collect.cancel();
    std::thread::sleep(Duration::from_millis(500));
    drop(reals);
    drop(broker);
    drop(vm);
    drop(prom);

    if a.backfill_gateways > 0 {
        backfill(&a, &rt, &svc, &mut rows, &mut failures);
    }

    report(&a, &rows, &failures, rt);
}

/// Prints the table (and writes it to `--md`); exits 1 when anything failed.
fn report(a: &Args, rows: &[(String, String)], failures: &[String], rt: tokio::runtime::Runtime) {
    let mut md = String::from("| measure | value |\n|---|---|\n");
    for (k, v) in rows {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    println!("{md}");
    if let Some(p) = &a.md {
        std::fs::write(p, &md).unwrap();
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    if !failures.is_empty() {
        for f in failures {
            eprintln!("fleet: FAIL {f}");
        }
        std::process::exit(1);
    }
    eprintln!("fleet: nothing lost");
}

/// Scenario 3: a backlog of `--backfill-hours` for `--backfill-gateways` gateways, delivered by
/// remote write to VictoriaMetrics and, the same backlog, to Prometheus.
fn backfill(
    a: &Args,
    rt: &tokio::runtime::Runtime,
    svc: &Path,
    rows: &mut Vec<(String, String)>,
    failures: &mut Vec<String>,
) {
    let interval_ms = a.interval as i64 * 1000;
    // --- 3. 24 h backfill into VictoriaMetrics and into Prometheus --------------------------
    let (vm2_port, prom_port) = (free_port(), free_port());
    std::fs::create_dir_all(svc.join("vm2")).unwrap();
    std::fs::create_dir_all(svc.join("prom")).unwrap();
    let vm2 = victoria_metrics(vm2_port, &svc.join("vm2"));
    let prom = prometheus(prom_port, &svc.join("prom"));
    let n = (a.backfill_hours * 3600 / a.interval) as i64;
    let start = now_ms() - a.backfill_hours as i64 * 3_600_000;
    let mut sets = Vec::new();
    for (store, port) in [("vm", vm2_port), ("prom", prom_port)] {
        let gs: Vec<Arc<Gw>> = (0..a.backfill_gateways)
            .map(|i| {
                let g = Gw::new(
                    &format!("bf-{store}-{i:03}"),
                    "site-bf",
                    &a.dir.join("bf"),
                    a.interval,
                    None,
                    &format!("http://127.0.0.1:{port}/api/v1/write"),
                );
                for k in 0..n {
                    g.snapshot(start + k * interval_ms);
                }
                Arc::new(g)
            })
            .collect();
        sets.push((store, port, gs));
    }
    let stop = CancellationToken::new();
    // Live gateways keep Prometheus's head at "now" (as in a real fleet): one current
    // snapshot goes in first, so the backlog is judged against the head, not an empty TSDB.
    let seed = Arc::new(Gw::new(
        "bf-prom-live",
        "site-bf",
        &a.dir.join("bf"),
        a.interval,
        None,
        &format!("http://127.0.0.1:{prom_port}/api/v1/write"),
    ));
    seed.snapshot(now_ms());
    let c = &seed.cfg;
    rt.spawn(
        RemoteWriteSink::new(
            c.remote_write.clone().unwrap(),
            seed.spool.clone(),
            seed.metrics.clone(),
            c.metrics.snapshot_interval,
        )
        .run(stop.clone()),
    );
    let end = Instant::now() + Duration::from_secs(30);
    while seed.spool.acked("remote_write") < seed.last_seq() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    for (_, _, gs) in &sets {
        for g in gs {
            let c = &g.cfg;
            let s = RemoteWriteSink::new(
                c.remote_write.clone().unwrap(),
                g.spool.clone(),
                g.metrics.clone(),
                c.metrics.snapshot_interval,
            );
            rt.spawn(s.run(stop.clone()));
        }
    }
    let mut done: HashMap<&str, f64> = HashMap::new();
    while done.len() < 2 && t.elapsed() < Duration::from_secs(600) {
        for (store, _, gs) in &sets {
            if !done.contains_key(store)
                && gs
                    .iter()
                    .all(|g| g.spool.acked("remote_write") >= g.last_seq())
            {
                done.insert(store, t.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.cancel();
    std::thread::sleep(Duration::from_secs(2));
    let total = n as usize * a.backfill_gateways;
    for (store, port, gs) in &sets {
        let rejected: u64 = gs
            .iter()
            .map(|g| {
                g.metrics
                    .sink
                    .rejected
                    .with_label_values(&["remote_write"])
                    .get()
            })
            .sum();
        let stored: usize = exported_or_count(*port, store, gs);
        let name = if *store == "vm" {
            "VictoriaMetrics"
        } else {
            "Prometheus (out-of-order window 2 h)"
        };
        rows.push((format!("{} h backfill of {} gateways into {name}: time, snapshots stored / sent, rejected (agent's count)", a.backfill_hours, gs.len()), format!(
                "{:.1} s, {stored} / {total}, {rejected} records",
                done.get(store).copied().unwrap_or(f64::NAN)
            )));
        if *store == "vm" && stored < total {
            failures.push(format!(
                "backfill: VictoriaMetrics stored {stored} of {total} snapshots"
            ));
        }
        if *store == "prom" && rejected == 0 {
            failures.push("backfill: Prometheus refused nothing older than its window".into());
        }
    }
    drop(vm2);
    drop(prom);
}

/// Snapshots of the gateways `gs` stored in a store (samples of `copilot_edge_build_info`).
fn exported_or_count(port: u16, store: &str, gs: &[Arc<Gw>]) -> usize {
    let times = exported_or_query(port, store);
    gs.iter()
        .map(|g| times.get(&g.id).map_or(0, |v| v.len()))
        .sum()
}

fn exported_or_query(port: u16, store: &str) -> HashMap<String, Vec<i64>> {
    if store == "vm" {
        return exported_times(port, "copilot_edge_build_info{gateway_id=~\"bf-.*\"}");
    }
    // Prometheus: count the samples per gateway over the whole range.
    let v = query(
        port,
        "count_over_time(copilot_edge_build_info{gateway_id=~\"bf-.*\"}[30d])",
    );
    let mut out = HashMap::new();
    for r in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let gw = r["metric"]["gateway_id"].as_str().unwrap_or("").to_string();
        let n: usize = r["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        out.insert(gw, vec![0; n]);
    }
    out
}
