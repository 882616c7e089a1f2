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
//! `FLEET_DEBUG=1` also prints, in the uplink scenario, the messages and bytes per type each
//! broker carried and the series that appeared after a gateway's first snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use copilot_edge::clock::now_ms;
use copilot_edge::config::{self, Config, Environment};
use copilot_edge::metrics::{agent, Metrics};
use copilot_edge::sinks::mqtt::MqttSink;
use copilot_edge::sinks::remote_write::RemoteWriteSink;
use copilot_edge::spool::segment::Kind;
use copilot_edge::spool::Spool;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

#[path = "../it/common/net.rs"]
mod net;
use net::{free_port, need};

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
    /// How long the central store is down mid-run (scenario 2a).
    store_down_secs: u64,
    /// Gateways per format in the uplink measurement (scenario 4), and its length.
    uplink_gateways: usize,
    uplink_secs: u64,
    dir: PathBuf,
    bin: PathBuf,
    md: Option<PathBuf>,
    backfill_only: bool,
    uplink_only: bool,
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
        store_down_secs: 30,
        uplink_gateways: 8,
        uplink_secs: 60,
        dir: std::env::temp_dir().join("copilot-edge-fleet"),
        bin: PathBuf::from("target/release/copilot-edge"),
        md: None,
        backfill_only: false,
        uplink_only: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        let num = || {
            val.parse::<u64>()
                .unwrap_or_else(|_| panic!("{}: a number", v[i]))
        };
        if v[i] == "--backfill-only" || v[i] == "--uplink-only" {
            a.backfill_only |= v[i] == "--backfill-only";
            a.uplink_only |= v[i] == "--uplink-only";
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
            "--store-down-secs" => a.store_down_secs = num(),
            "--uplink-gateways" => a.uplink_gateways = num() as usize,
            "--uplink-secs" => a.uplink_secs = num(),
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

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, bin: &str, args: &[String], port: u16) -> Proc {
    let child = Command::new(need(bin))
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

/// A Mosquitto on `port` with its files in `dir`; `extra`: more configuration lines.
fn mosquitto(port: u16, dir: &Path, extra: &str) -> (Proc, PathBuf) {
    let conf = dir.join("mosquitto.conf");
    let log = dir.join("mosquitto.log");
    std::fs::write(
        &conf,
        format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nmessage_size_limit 0\n\
             log_dest file {}\nlog_type notice\nlog_timestamp true\nlog_timestamp_format %s\n{extra}",
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
    http(port, "GET", path, &[], b"")
}

/// One HTTP/1.1 request on a fresh connection: status and body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
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

/// The sum of a service's own `/metrics` lines that start with `prefix`.
fn metric_sum(port: u16, prefix: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
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

/// How a simulated gateway's MQTT sink sends its metrics.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fmt {
    /// Prometheus text (`format = "prometheus"`).
    Text,
    /// Prometheus text, `compression = "gzip"`.
    Gzip,
    /// Sparkplug B (`format = "sparkplug_b"`).
    Sparkplug,
}

struct Gw {
    id: String,
    plant: String,
    cfg: Config,
    metrics: Arc<Metrics>,
    spool: Arc<Spool>,
    /// Timestamps of every snapshot appended.
    snaps: Mutex<Vec<i64>>,
    /// Every sample of every snapshot appended (same order as `snaps`), as a store must hold
    /// it: series ids into `series`, values.
    samples: Mutex<Vec<Vec<(u32, f64)>>>,
    series: Mutex<Interner>,
    rng: Mutex<u64>,
}

/// Series keys (`name{label="value",…}`, labels sorted) and their ids.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    keys: Vec<String>,
}

impl Interner {
    fn id(&mut self, key: String) -> u32 {
        if let Some(&i) = self.ids.get(&key) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.keys.push(key.clone());
        self.ids.insert(key, i);
        i
    }
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
        mqtt: Option<(u16, Fmt)>,
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
            samples: Mutex::new(Vec::new()),
            series: Mutex::new(Interner::default()),
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
        mqtt: Option<(u16, Fmt)>,
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
        if let Some((port, fmt)) = mqtt {
            let (format, compression) = match fmt {
                Fmt::Text => ("prometheus", "none"),
                Fmt::Gzip => ("prometheus", "gzip"),
                Fmt::Sparkplug => ("sparkplug_b", "none"),
            };
            text.push_str(&format!(
                "[sinks.mqtt]\nenabled = true\nport = {port}\nclient_id = \"{id}\"\nkeep_alive_secs = 60\n\
                 format = \"{format}\"\ncompression = \"{compression}\"\n"
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
        // What a store must hold afterwards: every sample line with the sink's external labels
        // (read by this simulator's own parser, not the sink's).
        let external = &self.cfg.remote_write.as_ref().unwrap().external_labels;
        let mut samples = Vec::new();
        {
            let mut series = self.series.lock().unwrap();
            for line in String::from_utf8_lossy(&text).lines() {
                if let Some((name, mut labels, value)) = parse_text_sample(line) {
                    for (k, v) in external {
                        if !labels.iter().any(|(lk, _)| lk == k) {
                            labels.push((k.clone(), v.clone()));
                        }
                    }
                    samples.push((series.id(series_key(&name, labels)), value));
                }
            }
        }
        // One lock order for both lists, so `snaps[k]` and `samples[k]` stay one snapshot.
        let mut snaps = self.snaps.lock().unwrap();
        self.spool.append(Kind::Metrics, ts, &[&text]);
        snaps.push(ts);
        self.samples.lock().unwrap().push(samples);
    }

    /// Runs this gateway's MQTT sink (when it has one) until `stop`.
    fn spawn_mqtt(&self, rt: &tokio::runtime::Runtime, stop: &CancellationToken) {
        let c = &self.cfg;
        if let Some(mq) = c.mqtt.clone() {
            let s = MqttSink::new(
                mq,
                self.spool.clone(),
                self.metrics.clone(),
                &self.id,
                &c.identity.site_plant_id,
                c.metrics.snapshot_interval,
            );
            rt.spawn(s.run(stop.clone()));
        }
    }

    /// Runs a remote-write sink of this gateway (its own, or `to` another receiver) until `stop`.
    fn spawn_remote_write(
        &self,
        rt: &tokio::runtime::Runtime,
        to: Option<&str>,
        stop: &CancellationToken,
    ) {
        let cfg = match to {
            Some(url) => self.remote_write_to(url),
            None => self.cfg.remote_write.clone().unwrap(),
        };
        let s = RemoteWriteSink::new(
            cfg,
            self.spool.clone(),
            self.metrics.clone(),
            self.cfg.metrics.snapshot_interval,
        );
        rt.spawn(s.run(stop.clone()));
    }

    /// The highest sequence number appended.
    fn last_seq(&self) -> u64 {
        self.spool.next_seq() - 1
    }
}

/// A snapshot every `interval_ms`, continuing the gateway's cadence from its last snapshot (a
/// gateway without one starts at a random phase), until `stop`.
async fn live_snapshots(g: Arc<Gw>, stop: CancellationToken, interval_ms: i64) {
    let first = g.snaps.lock().unwrap().last().copied();
    let mut next = first.map_or_else(
        || now_ms() + (rand(&g.rng) % interval_ms as u64) as i64,
        |t| t + interval_ms,
    );
    loop {
        let wait = (next - now_ms()).max(0) as u64;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                g.snapshot(now_ms());
                next = g.snaps.lock().unwrap().last().copied().unwrap_or_else(now_ms) + interval_ms;
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// MQTT collector: every metrics record per gateway, and the bytes it took
// ----------------------------------------------------------------------------------------------

#[derive(Default)]
struct Collected {
    seqs: HashMap<String, HashSet<u64>>,
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

/// A real `copilot-edge` process of the fleet: its port, token, log and the answers it gave.
struct RealAgent {
    id: String,
    proc_: Proc,
    port: u16,
    token: String,
    log: PathBuf,
    /// HTTP statuses of the diagnose requests sent to it.
    statuses: Arc<Mutex<BTreeMap<u16, u64>>>,
}

impl RealAgent {
    /// Starts the agent (MQTT and remote write; its JSON log from stdout into `agent.log`, the
    /// human start-up banner from stderr into `agent.err`) and waits for its `listening` event.
    fn start(bin: &Path, dir: &Path, id: &str, interval: u64, mqtt: u16, rw: &str) -> RealAgent {
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
        let log = d.join("agent.log");
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&conf)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(d.join("agent.err")).unwrap())
            .spawn()
            .unwrap();
        let proc_ = Proc { child };
        let end = Instant::now() + Duration::from_secs(30);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let found = text.lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["event"] == "listening").then(|| {
                    v["addr"]
                        .as_str()
                        .and_then(|a| a.rsplit_once(':'))
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                })?
            });
            if let Some(p) = found {
                break p;
            }
            assert!(Instant::now() < end, "{id} did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The first-start token (no tokens configured), as plant IT would use it.
        let token = std::fs::read_to_string(d.join("state").join("api-token"))
            .unwrap()
            .trim()
            .to_string();
        RealAgent {
            id: id.to_string(),
            proc_,
            port,
            token,
            log,
            statuses: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// A technician's diagnose request every half second until `stop`.
    fn drive(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let (port, auth, statuses) = (
            self.port,
            format!("Bearer {}", self.token),
            self.statuses.clone(),
        );
        std::thread::spawn(move || {
            const ASKS: [&str; 5] = [
                "hydraulic hose leaking under the press",
                "motor running hot and tripping the overload",
                "conveyor belt slipping at the tail pulley",
                "compressor keeps loading, pressure drops",
                "boiler low water alarm",
            ];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = serde_json::json!({
                    "plant_id": "plant-real",
                    "equipment_id": format!("press-{:02}", i % 4),
                    "problem_description": ASKS[i % ASKS.len()],
                })
                .to_string();
                let (status, _) = http(
                    port,
                    "POST",
                    "/v1/diagnose",
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    body.as_bytes(),
                );
                *statuses.lock().unwrap().entry(status).or_default() += 1;
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    }
}

/// The real agents, checked like a central SRE would: every answer they gave counted in
/// VictoriaMetrics, their MQTT records complete and in order at the collector, their snapshots
/// without gaps and never twice in the store, still running, and a log that is JSON throughout.
fn check_real_agents(
    reals: &[RealAgent],
    vm_port: u16,
    collected: &Arc<Mutex<Collected>>,
    interval: u64,
    rows: &mut Vec<(String, String)>,
    failures: &mut Vec<String>,
) {
    if reals.is_empty() {
        return;
    }
    let answered = |r: &RealAgent| r.statuses.lock().unwrap().values().sum::<u64>() as f64;
    // The last answers reach the store with the next snapshot.
    let deadline = Instant::now() + Duration::from_secs(3 * interval + 30);
    let mut counted: HashMap<String, f64>;
    loop {
        let v = query(
            vm_port,
            "sum by (gateway_id) (copilot_requests_total{gateway_id=~\"real-.*\"})",
        );
        counted = v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    r["metric"]["gateway_id"].as_str().unwrap_or("").to_string(),
                    r["value"][1]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0.0),
                )
            })
            .collect();
        if reals
            .iter()
            .all(|r| counted.get(&r.id).copied() == Some(answered(r)))
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let times = exported_times(vm_port, "copilot_edge_build_info{gateway_id=~\"real-.*\"}");
    let mut summary = Vec::new();
    for r in reals {
        let sent = answered(r);
        let statuses = r.statuses.lock().unwrap().clone();
        let ok = statuses.get(&200).copied().unwrap_or(0) as f64;
        let central = counted.get(&r.id).copied().unwrap_or(f64::NAN);
        if ok != sent {
            failures.push(format!("{}: diagnose answered {statuses:?}", r.id));
        }
        if central != sent {
            failures.push(format!(
                "{}: {sent} answers given, {central} counted in VictoriaMetrics",
                r.id
            ));
        }
        // MQTT: every sequence number from 1 to the highest seen.
        let (max, missing) = {
            let c = collected.lock().unwrap();
            let set = c.seqs.get(&r.id).cloned().unwrap_or_default();
            let max = set.iter().copied().max().unwrap_or(0);
            (max, (1..=max).filter(|q| !set.contains(q)).count())
        };
        if max == 0 || missing > 0 {
            failures.push(format!(
                "{}: MQTT records 1..{max} with {missing} missing at the collector",
                r.id
            ));
        }
        // The store: snapshots every interval from the first on, none held twice.
        let ts = times.get(&r.id).cloned().unwrap_or_default();
        let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        if ts.len() < 2 || gap > interval as i64 * 1500 + 2000 {
            failures.push(format!(
                "{}: {} snapshots in VictoriaMetrics, largest gap {gap} ms",
                r.id,
                ts.len()
            ));
        }
        let dup: usize = exported_samples(vm_port, &r.id)
            .values()
            .map(|pts| {
                let mut t: Vec<i64> = pts.iter().map(|p| p.0).collect();
                let n = t.len();
                t.sort_unstable();
                t.dedup();
                n - t.len()
            })
            .sum();
        if dup > 0 {
            failures.push(format!(
                "{}: {dup} samples held twice in VictoriaMetrics",
                r.id
            ));
        }
        // Its log: JSON lines only, warnings by event; stderr holds the start-up banner and
        // nothing else (a panic would print there).
        let err = std::fs::read_to_string(r.log.with_extension("err")).unwrap_or_default();
        if err.contains("panicked") {
            failures.push(format!("{}: panicked: {err}", r.id));
        }
        let text = std::fs::read_to_string(&r.log).unwrap_or_default();
        let mut warned: BTreeMap<String, u64> = BTreeMap::new();
        let mut plain = 0;
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) if v["level"] == "warn" || v["level"] == "error" => {
                    let key = format!(
                        "{} {}",
                        v["level"].as_str().unwrap_or(""),
                        v["event"].as_str().unwrap_or("?")
                    );
                    *warned.entry(key).or_default() += 1;
                }
                Ok(_) => {}
                Err(_) => plain += 1,
            }
        }
        if plain > 0 {
            failures.push(format!("{}: {plain} log lines that are not JSON", r.id));
        }
        // Still running (an exited child stays a zombie until reaped: state Z).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", r.proc_.child.id()))
            .unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|p| p.1.split_whitespace().next());
        if !matches!(state, Some(s) if s != "Z") {
            failures.push(format!("{}: the agent exited during the run", r.id));
        }
        summary.push(format!(
            "{}: {sent:.0} answered / {central:.0} counted; MQTT 1..{max}, {missing} missing; {} snapshots, gap ≤ {:.1} s, {dup} twice; warnings {warned:?}",
            r.id,
            ts.len(),
            gap as f64 / 1000.0
        ));
    }
    rows.push((
        "real agents: answers given / counted centrally; MQTT records; snapshots in the store; log warnings".into(),
        summary.join("<br>"),
    ));
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
    if a.backfill_only || a.uplink_only {
        let svc = a.dir.join("services");
        if a.uplink_only {
            uplink(&a, &rt, &svc, &mut rows, &mut failures);
        } else {
            backfill(&a, &rt, &svc, &mut rows, &mut failures);
        }
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
                // every second gateway compresses its MQTT payloads, so both are checked
                Some((mqtt_port, if i % 2 == 1 { Fmt::Gzip } else { Fmt::Text })),
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
        let (mut b, _) = mosquitto(mqtt_port, &svc, "");
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
        g.spawn_mqtt(&rt, &shutdown);
        g.spawn_remote_write(&rt, None, &rw_stop);
        // Live snapshots continue the gateway's cadence from its last backdated one.
        rt.spawn(live_snapshots(g.clone(), shutdown.clone(), interval_ms));
    }
    let reals: Vec<RealAgent> = (0..a.real)
        .map(|i| {
            RealAgent::start(
                &a.bin,
                &a.dir.join("real"),
                &format!("real-{i:02}"),
                a.interval,
                mqtt_port,
                &rw_url,
            )
        })
        .collect();
    // Technicians keep asking the real agents through the whole run: they answer locally
    // whatever the uplink does, and every answer must be counted on the central side.
    let traffic_stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<std::thread::JoinHandle<()>> = reals
        .iter()
        .map(|r| r.drive(traffic_stop.clone()))
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
    let (broker, broker_log) = mosquitto(mqtt_port, &svc, "");
    let mut vm = victoria_metrics(vm_port, &svc.join("vm"));
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
    // Caught up: acknowledged by the receiver, and then queryable there (the collector holds
    // every record; the store's export holds every snapshot of the backlog).
    let mut caught: HashMap<&str, f64> = HashMap::new();
    let mut queryable: HashMap<&str, f64> = HashMap::new();
    let mut last_export = Instant::now() - Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(900);
    while (caught.len() < 2 || queryable.len() < 2) && Instant::now() < deadline {
        for sink in ["mqtt", "remote_write"] {
            if !caught.contains_key(sink)
                && gws
                    .iter()
                    .zip(&backlog_upto)
                    .all(|(g, upto)| g.spool.acked(sink) >= *upto)
            {
                caught.insert(sink, back.elapsed().as_secs_f64());
                eprintln!(
                    "fleet: {sink} acknowledged the backlog after {:.1} s",
                    back.elapsed().as_secs_f64()
                );
            }
        }
        if !queryable.contains_key("mqtt") {
            let c = collected.lock().unwrap();
            if gws.iter().zip(&backlog_upto).all(|(g, upto)| {
                c.seqs
                    .get(&g.id)
                    .is_some_and(|s| (1..=*upto).all(|q| s.contains(&q)))
            }) {
                queryable.insert("mqtt", back.elapsed().as_secs_f64());
            }
        }
        if !queryable.contains_key("remote_write")
            && last_export.elapsed() >= Duration::from_secs(1)
        {
            last_export = Instant::now();
            let times = exported_times(vm_port, "copilot_edge_build_info{gateway_id=~\"sim-.*\"}");
            if gws.iter().zip(&backlog_upto).all(|(g, upto)| {
                let have: HashSet<i64> = times
                    .get(&g.id)
                    .map(|v| v.iter().copied().collect())
                    .unwrap_or_default();
                g.snaps.lock().unwrap()[..*upto as usize]
                    .iter()
                    .all(|t| have.contains(t))
            }) {
                queryable.insert("remote_write", back.elapsed().as_secs_f64());
                eprintln!(
                    "fleet: the backlog is queryable in VictoriaMetrics after {:.1} s",
                    back.elapsed().as_secs_f64()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for sink in ["mqtt", "remote_write"] {
        if !caught.contains_key(sink) || !queryable.contains_key(sink) {
            failures.push(format!(
                "{sink}: backlog not delivered and queryable within 15 minutes"
            ));
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

    // MQTT completeness: every sequence number each gateway's broker acknowledged, at the
    // collector (later records may be in flight).
    let acked_mqtt: Vec<u64> = gws.iter().map(|g| g.spool.acked("mqtt")).collect();
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
    let secs_of = |m: &HashMap<&str, f64>, k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    rows.push((
        "catch-up after the storm, MQTT: acknowledged / at the collector".into(),
        format!(
            "{:.1} s / {:.1} s",
            secs_of(&caught, "mqtt"),
            secs_of(&queryable, "mqtt")
        ),
    ));
    rows.push((
        "catch-up after the storm, remote write: acknowledged / queryable in VictoriaMetrics"
            .into(),
        format!(
            "{:.1} s / {:.1} s",
            secs_of(&caught, "remote_write"),
            secs_of(&queryable, "remote_write")
        ),
    ));
    rows.push((
        "MQTT records acknowledged but not at the collector".into(),
        mqtt_missing.to_string(),
    ));

    // --- 2. steady state ------------------------------------------------------------------
    let rows_at = |port: u16| metric_sum(port, "vm_rows_inserted_total");
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

    // --- 2a. the central store itself stops and comes back mid-run -------------------------
    // Not a backdated backlog: VictoriaMetrics goes down (SIGTERM, as a restart for an upgrade
    // would) while every gateway keeps taking snapshots, and comes back on the same data.
    unsafe { libc::kill(vm.child.id() as i32, libc::SIGTERM) };
    let _ = vm.child.wait();
    std::thread::sleep(Duration::from_secs(a.store_down_secs));
    let upto: Vec<usize> = gws.iter().map(|g| g.snaps.lock().unwrap().len()).collect();
    let back = Instant::now();
    vm = victoria_metrics(vm_port, &svc.join("vm"));
    let (mut acked_at, mut queryable_at) = (f64::NAN, f64::NAN);
    let deadline = Instant::now() + Duration::from_secs(300);
    while queryable_at.is_nan() && Instant::now() < deadline {
        if acked_at.is_nan()
            && gws
                .iter()
                .zip(&upto)
                .all(|(g, n)| g.spool.acked("remote_write") as usize >= *n)
        {
            acked_at = back.elapsed().as_secs_f64();
        }
        let times = exported_times(vm_port, "copilot_edge_build_info{gateway_id=~\"sim-.*\"}");
        if gws.iter().zip(&upto).all(|(g, n)| {
            let have: HashSet<i64> = times
                .get(&g.id)
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            g.snaps.lock().unwrap()[..*n]
                .iter()
                .all(|t| have.contains(t))
        }) {
            queryable_at = back.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if queryable_at.is_nan() {
        failures.push(
            "store restart: the snapshots taken while it was down never became queryable".into(),
        );
    }
    rows.push((
        format!(
            "VictoriaMetrics stopped for {} s mid-run: snapshots taken meanwhile acknowledged / queryable after it is back",
            a.store_down_secs
        ),
        format!("{acked_at:.1} s / {queryable_at:.1} s"),
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

    // --- the whole run, audited sample by sample --------------------------------------------
    // Every sample of every snapshot each simulated gateway's store acknowledged (the outage
    // backlog, live data and the store restart), exactly once and with its value.
    let acked_rw: Vec<usize> = gws
        .iter()
        .map(|g| g.spool.acked("remote_write") as usize)
        .collect();
    audit_fleet(
        vm_port,
        &gws,
        &acked_rw,
        "VictoriaMetrics, simulated gateways",
        &mut rows,
        &mut failures,
    );

    // --- the real agents: every answer counted centrally, records in order, logs clean -----
    traffic_stop.store(true, Ordering::Relaxed);
    for t in traffic {
        let _ = t.join();
    }
    check_real_agents(
        &reals,
        vm_port,
        &collected,
        a.interval,
        &mut rows,
        &mut failures,
    );

    // --- 2b. the same steady load on Prometheus (remote-write receiver) ----------------------
    // The simulated gateways' remote write moves from VictoriaMetrics to a Prometheus; after a
    // settling period its CPU, memory and ingest are measured like VictoriaMetrics' above.
    rw_stop.cancel();
    let prom_port = free_port();
    let prom = prometheus(prom_port, &svc.join("prom-steady"));
    let prom_url = format!("http://127.0.0.1:{prom_port}/api/v1/write");
    for g in &gws {
        g.spawn_remote_write(&rt, Some(&prom_url), &shutdown);
    }
    let prom_samples = || metric_sum(prom_port, "prometheus_tsdb_head_samples_appended_total");
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

    if a.uplink_gateways > 0 {
        uplink(&a, &rt, &svc, &mut rows, &mut failures);
    }
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
    seed.spawn_remote_write(rt, None, &stop);
    let end = Instant::now() + Duration::from_secs(30);
    while seed.spool.acked("remote_write") < seed.last_seq() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    for (_, _, gs) in &sets {
        for g in gs {
            g.spawn_remote_write(rt, None, &stop);
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

// ----------------------------------------------------------------------------------------------
// Central-side audit: every sample of every snapshot, exactly once, with its value
// ----------------------------------------------------------------------------------------------

/// `name{k="v",…}` with the labels sorted: one series, however a store orders its labels.
fn series_key(name: &str, mut labels: Vec<(String, String)>) -> String {
    labels.sort();
    let mut s = format!("{name}{{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{k}={v:?}"));
    }
    s.push('}');
    s
}

/// A sample of the text format: metric name, labels, value.
type TextSample = (String, Vec<(String, String)>, f64);

/// One sample line of the Prometheus text format: name, labels (unescaped), value. Comments,
/// blank lines and anything unreadable give `None`. Written apart from the sinks' parser so the
/// audit does not share its mistakes.
fn parse_text_sample(line: &str) -> Option<TextSample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(['{', ' '])?;
    let name = line[..end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[end..];
    if let Some(r) = rest.strip_prefix('{') {
        let b = r.as_bytes();
        let mut i = 0;
        loop {
            while matches!(b.get(i)?, b' ' | b',') {
                i += 1;
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            let eq = i + r[i..].find('=')?;
            let key = r[i..eq].trim().to_string();
            i = eq + 1;
            if *b.get(i)? != b'"' {
                return None;
            }
            i += 1;
            let mut v = String::new();
            loop {
                match *b.get(i)? {
                    b'\\' => {
                        v.push(match *b.get(i + 1)? {
                            b'n' => '\n',
                            c => c as char,
                        });
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        break;
                    }
                    _ => {
                        let ch = r[i..].chars().next()?;
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            labels.push((key, v));
        }
        rest = &r[i..];
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((name, labels, value))
}

/// Every raw sample a store holds for one gateway (`/api/v1/export`, no de-duplication): per
/// series key, its (timestamp, value) pairs in the order exported.
fn exported_samples(port: u16, gateway: &str) -> HashMap<String, Vec<(i64, f64)>> {
    let sel = format!("{{gateway_id=\"{gateway}\"}}");
    let (status, body) = http_get(port, &format!("/api/v1/export?match[]={}", enc(&sel)));
    assert_eq!(status, 200, "export {gateway}");
    let mut out: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("export {gateway}: {e}: {}", String::from_utf8_lossy(line)));
        let m = v["metric"].as_object().cloned().unwrap_or_default();
        let name = m.get("__name__").and_then(|n| n.as_str()).unwrap_or("");
        let labels = m
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        let key = series_key(name, labels);
        let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
        let vals = v["values"].as_array().cloned().unwrap_or_default();
        let e = out.entry(key).or_default();
        for (t, x) in ts.iter().zip(&vals) {
            let x = x
                .as_f64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(f64::NAN);
            e.push((t.as_i64().unwrap_or(0), x));
        }
    }
    out
}

/// What one gateway's audit found.
#[derive(Default)]
struct Audit {
    /// Samples the gateway produced in acknowledged snapshots.
    expected: usize,
    /// … of which the store does not hold.
    missing: usize,
    /// Samples the store holds more than once (same series and timestamp).
    duplicated: usize,
    /// Samples held with another value.
    wrong_value: usize,
    /// Samples held at a time no snapshot of the gateway had, or of a series it never sent.
    unexpected: usize,
    /// Largest gap between the gateway's snapshots in the store / as produced (acknowledged
    /// range), ms.
    gap_store: i64,
    gap_produced: i64,
    /// The first problem, for the log.
    example: Option<String>,
}

/// Compares every sample of the first `acked` snapshots of `g` with the store's raw export.
fn audit(port: u16, g: &Gw, acked: usize) -> Audit {
    let got = exported_samples(port, &g.id);
    let snaps = g.snaps.lock().unwrap().clone();
    let samples = g.samples.lock().unwrap();
    let series = g.series.lock().unwrap();
    let acked = acked.min(snaps.len());
    let known: HashSet<i64> = snaps.iter().copied().collect();
    let mut a = Audit::default();
    let note = |a: &mut Audit, what: String| {
        if a.example.is_none() {
            a.example = Some(format!("{}: {what}", g.id));
        }
    };
    // (series id, ts) -> values held
    let mut held: HashMap<(u32, i64), Vec<f64>> = HashMap::new();
    let last_acked_ts = acked.checked_sub(1).map_or(i64::MIN, |k| snaps[k]);
    let mut store_ts: Vec<i64> = Vec::new();
    for (key, pts) in &got {
        let Some(&id) = series.ids.get(key) else {
            let n = pts.iter().filter(|(t, _)| *t <= last_acked_ts).count();
            if n > 0 {
                a.unexpected += n;
                note(&mut a, format!("series never sent: {key} ({n} samples)"));
            }
            continue;
        };
        for &(t, v) in pts {
            if !known.contains(&t) {
                if t <= last_acked_ts {
                    a.unexpected += 1;
                    note(&mut a, format!("{key} at {t}: no snapshot at that time"));
                }
                continue;
            }
            held.entry((id, t)).or_default().push(v);
            store_ts.push(t);
        }
    }
    for (k, &ts) in snaps.iter().enumerate().take(acked) {
        for &(id, want) in &samples[k] {
            a.expected += 1;
            match held.get(&(id, ts)).map(Vec::as_slice) {
                None | Some([]) => {
                    a.missing += 1;
                    note(
                        &mut a,
                        format!("{} at {ts}: missing", series.keys[id as usize]),
                    );
                }
                Some(vs) => {
                    if vs.len() > 1 {
                        a.duplicated += vs.len() - 1;
                        note(
                            &mut a,
                            format!("{} at {ts}: held {}x", series.keys[id as usize], vs.len()),
                        );
                    }
                    let same = |v: f64| {
                        (v.is_nan() && want.is_nan())
                            || v == want
                            || (v - want).abs() <= 1e-9 * want.abs().max(1e-3)
                    };
                    if vs.iter().any(|&v| !same(v)) {
                        a.wrong_value += 1;
                        note(
                            &mut a,
                            format!(
                                "{} at {ts}: held {vs:?}, sent {want}",
                                series.keys[id as usize]
                            ),
                        );
                    }
                }
            }
        }
    }
    store_ts.sort_unstable();
    store_ts.dedup();
    store_ts.retain(|t| *t <= last_acked_ts);
    let gap = |v: &[i64]| v.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    a.gap_store = gap(&store_ts);
    a.gap_produced = gap(&snaps[..acked]);
    a
}

/// Audits every gateway in `gws` (the first `acked[i]` snapshots of each) and adds the totals to
/// `rows` (labelled `what`) and any loss, duplicate, wrong value or gap to `failures`.
fn audit_fleet(
    port: u16,
    gws: &[Arc<Gw>],
    acked: &[usize],
    what: &str,
    rows: &mut Vec<(String, String)>,
    failures: &mut Vec<String>,
) {
    // A store may still be writing what it acknowledged: retry while the count of missing
    // samples keeps falling.
    let mut best = usize::MAX;
    let mut audits = Vec::new();
    for attempt in 0..30 {
        audits = gws
            .iter()
            .zip(acked)
            .map(|(g, n)| audit(port, g, *n))
            .collect::<Vec<_>>();
        let missing: usize = audits.iter().map(|a| a.missing).sum();
        if missing == 0 || (missing >= best && attempt >= 5) {
            break;
        }
        best = best.min(missing);
        eprintln!("fleet: {what}: {missing} samples not yet in the store (attempt {attempt})");
        std::thread::sleep(Duration::from_secs(1));
    }
    let sum = |f: fn(&Audit) -> usize| audits.iter().map(f).sum::<usize>();
    let (expected, missing, duplicated, wrong, unexpected) = (
        sum(|a| a.expected),
        sum(|a| a.missing),
        sum(|a| a.duplicated),
        sum(|a| a.wrong_value),
        sum(|a| a.unexpected),
    );
    // Per gateway: the store may not show a gap that gateway did not produce.
    let gapped: Vec<String> = gws
        .iter()
        .zip(&audits)
        .filter(|(_, a)| a.gap_store > a.gap_produced)
        .map(|(g, a)| format!("{} {} ms > {} ms", g.id, a.gap_store, a.gap_produced))
        .collect();
    rows.push((
        format!("{what}: samples checked, missing / duplicated / other value / unexpected"),
        format!(
            "{expected} in {} gateways, {missing} / {duplicated} / {wrong} / {unexpected}",
            gws.len()
        ),
    ));
    for a in &audits {
        if let Some(e) = &a.example {
            eprintln!("fleet: {what}: {e}");
            break;
        }
    }
    if missing + duplicated + wrong + unexpected > 0 {
        failures.push(format!(
            "{what}: {missing} samples missing, {duplicated} duplicated, {wrong} with another value, {unexpected} unexpected"
        ));
    }
    if !gapped.is_empty() {
        failures.push(format!(
            "{what}: {} gateways with a gap they did not produce, e.g. {}",
            gapped.len(),
            gapped[..gapped.len().min(3)].join("; ")
        ));
    }
}

// ----------------------------------------------------------------------------------------------
// Uplink per format, measured at the receivers
// ----------------------------------------------------------------------------------------------

/// The broker's own count of bytes received (`$SYS/broker/bytes/received`, published every
/// `sys_interval`), kept in `into` with the moment it arrived.
async fn sys_bytes_received(port: u16, into: Arc<Mutex<(f64, Instant)>>, stop: CancellationToken) {
    let mut o = MqttOptions::new(format!("sys-reader-{port}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut el) = AsyncClient::new(o, 16);
    let debug = std::env::var("FLEET_DEBUG").is_ok();
    let mut seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if debug {
                    eprintln!("fleet: broker {port}: messages and payload bytes by type {seen:?}");
                }
                return;
            }
            ev = el.poll() => match ev {
                // (Re)subscribe on every connection: a clean session forgets subscriptions.
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("$SYS/broker/bytes/received", QoS::AtMostOnce);
                    if debug {
                        let _ = client.try_subscribe("spBv1.0/#", QoS::AtMostOnce);
                        let _ = client.try_subscribe("copilot/#", QoS::AtMostOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if !p.topic.starts_with("$SYS") => {
                    let kind = p.topic.split('/').nth(if p.topic.starts_with("spB") { 2 } else { 3 });
                    let e = seen.entry(kind.unwrap_or("").to_string()).or_default();
                    e.0 += 1;
                    e.1 += p.payload.len() as u64;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = String::from_utf8_lossy(&p.payload).trim().parse::<f64>() {
                        *into.lock().unwrap() = (v, Instant::now());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// The broker's bytes received as of `after`: the first value published after it, or — when none
/// comes within a few `sys_interval`s (Mosquitto publishes a `$SYS` value only when it changed)
/// — the last one, which still holds. Panics when the broker never published one.
fn sys_value_after(cell: &Mutex<(f64, Instant)>, after: Instant) -> f64 {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let (v, at) = *cell.lock().unwrap();
        if at > after || (Instant::now() >= end && v > 0.0) {
            return v;
        }
        assert!(
            Instant::now() < end + Duration::from_secs(10),
            "no $SYS/broker/bytes/received from the broker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// VictoriaMetrics' bytes read on its HTTP listener (`vm_tcplistener_read_bytes_total`).
fn vm_bytes_read(port: u16) -> f64 {
    metric_sum(port, "vm_tcplistener_read_bytes_total{name=\"http\"")
}

/// Live snapshots per remote-write request in the uplink scenario's metered variant.
const BATCH: usize = 4;

/// Scenario 4: what each format costs on the uplink, counted by the receivers themselves —
/// Mosquitto's `$SYS` bytes received, one broker per MQTT format (Prometheus text, gzip,
/// Sparkplug B), and VictoriaMetrics' listener bytes for remote write (HTTP headers included) —
/// with `--uplink-gateways` live gateways per format at the snapshot interval, for
/// `--uplink-secs`.
fn uplink(
    a: &Args,
    rt: &tokio::runtime::Runtime,
    svc: &Path,
    rows: &mut Vec<(String, String)>,
    failures: &mut Vec<String>,
) {
    let interval_ms = a.interval as i64 * 1000;
    let stop = CancellationToken::new();
    let vm_port = free_port();
    std::fs::create_dir_all(svc.join("vm-uplink")).unwrap();
    let vm = victoria_metrics(vm_port, &svc.join("vm-uplink"));
    let rw_url = format!("http://127.0.0.1:{vm_port}/api/v1/write");
    let _guard = rt.enter();
    let mut sets = Vec::new();
    for fmt in [Fmt::Text, Fmt::Gzip, Fmt::Sparkplug] {
        let port = free_port();
        let dir = svc.join(format!("mq-uplink-{fmt:?}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (broker, _) = mosquitto(port, &dir, "sys_interval 1\n");
        let cell = Arc::new(Mutex::new((0.0, Instant::now())));
        rt.spawn(sys_bytes_received(port, cell.clone(), stop.clone()));
        let gs: Vec<Arc<Gw>> = (0..a.uplink_gateways)
            .map(|i| {
                let g = Arc::new(Gw::new(
                    &format!("up-{}-{i:02}", format!("{fmt:?}").to_lowercase()),
                    "site-up",
                    &a.dir.join("uplink"),
                    a.interval,
                    Some((port, fmt)),
                    &rw_url,
                ));
                // A gateway that has served a while: every label value its traffic uses exists
                // before the first snapshot, so the window measures steady cost, not the births
                // of series that appear at start (each one a Sparkplug rebirth).
                for _ in 0..100 {
                    g.traffic();
                }
                g.spawn_mqtt(rt, &stop);
                g.spawn_remote_write(rt, None, &stop);
                rt.spawn(live_snapshots(g.clone(), stop.clone(), interval_ms));
                g
            })
            .collect();
        sets.push((fmt, broker, cell, gs));
    }
    // Remote write with `batch_snapshots = 4` (a metered uplink), into a store of its own.
    let vmb_port = free_port();
    std::fs::create_dir_all(svc.join("vm-uplink-batch")).unwrap();
    let vmb = victoria_metrics(vmb_port, &svc.join("vm-uplink-batch"));
    let batched: Vec<Arc<Gw>> = (0..a.uplink_gateways)
        .map(|i| {
            let mut g = Gw::new(
                &format!("up-batch-{i:02}"),
                "site-up",
                &a.dir.join("uplink"),
                a.interval,
                None,
                &format!("http://127.0.0.1:{vmb_port}/api/v1/write"),
            );
            g.cfg.remote_write.as_mut().unwrap().batch_snapshots = BATCH;
            for _ in 0..100 {
                g.traffic();
            }
            let g = Arc::new(g);
            g.spawn_remote_write(rt, None, &stop);
            rt.spawn(live_snapshots(g.clone(), stop.clone(), interval_ms));
            g
        })
        .collect();
    // The window opens once every gateway has delivered two snapshots on both sinks: its
    // births, first full snapshot and the series its first delivery creates (the sink's
    // last-success time: one Sparkplug rebirth) are start-up, not steady cost.
    let all: Vec<&Arc<Gw>> = sets.iter().flat_map(|s| &s.3).collect();
    let end = Instant::now() + Duration::from_secs((BATCH as u64 + 3) * a.interval + 30);
    while !all
        .iter()
        .all(|g| g.spool.acked("mqtt") >= 2 && g.spool.acked("remote_write") >= 2)
        || !batched.iter().all(|g| g.spool.acked("remote_write") >= 2)
    {
        assert!(
            Instant::now() < end,
            "uplink: gateways did not deliver a first snapshot"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let acked =
        |sink: &str, gs: &[&Arc<Gw>]| -> u64 { gs.iter().map(|g| g.spool.acked(sink)).sum() };
    let t0 = Instant::now();
    let mq0: Vec<f64> = sets.iter().map(|s| sys_value_after(&s.2, t0)).collect();
    let vm0 = vm_bytes_read(vm_port);
    let vmb0 = vm_bytes_read(vmb_port);
    let batched_refs: Vec<&Arc<Gw>> = batched.iter().collect();
    let batch_acked0 = acked("remote_write", &batched_refs);
    let set_gws: Vec<Vec<&Arc<Gw>>> = sets.iter().map(|s| s.3.iter().collect()).collect();
    let mq_acked0: Vec<u64> = set_gws.iter().map(|g| acked("mqtt", g)).collect();
    let rw_acked0 = acked("remote_write", &all);
    std::thread::sleep(Duration::from_secs(a.uplink_secs));
    let t1 = Instant::now();
    let mq1: Vec<f64> = sets.iter().map(|s| sys_value_after(&s.2, t1)).collect();
    let vm1 = vm_bytes_read(vm_port);
    let vmb1 = vm_bytes_read(vmb_port);
    let batch_acked1 = acked("remote_write", &batched_refs);
    let mq_acked1: Vec<u64> = set_gws.iter().map(|g| acked("mqtt", g)).collect();
    let rw_acked1 = acked("remote_write", &all);
    let per_day = 86400.0 / a.interval as f64;
    let samples_per_snapshot = {
        let s = all[0].samples.lock().unwrap();
        s.last().map_or(1, Vec::len).max(1) as f64
    };
    let mut line = |what: &str, bytes: f64, snapshots: u64| {
        if snapshots == 0 || bytes <= 0.0 {
            failures.push(format!(
                "uplink {what}: {bytes} bytes for {snapshots} snapshots"
            ));
            return;
        }
        let per = bytes / snapshots as f64;
        rows.push((
            format!("uplink per gateway per day at the receiver, {what}"),
            format!(
                "{} ({per:.0} B per snapshot, {:.1} B per sample)",
                fmt_bytes(per * per_day),
                per / samples_per_snapshot
            ),
        ));
    };
    for (i, (fmt, _, _, _)) in sets.iter().enumerate() {
        let what = match fmt {
            Fmt::Text => "MQTT, Prometheus text",
            Fmt::Gzip => "MQTT, Prometheus text with compression = \"gzip\"",
            Fmt::Sparkplug => "MQTT, Sparkplug B (by exception)",
        };
        line(what, mq1[i] - mq0[i], mq_acked1[i] - mq_acked0[i]);
    }
    line(
        "remote write (snappy protobuf, HTTP headers included)",
        vm1 - vm0,
        rw_acked1 - rw_acked0,
    );
    // A window shorter than one batch may see none go out; only a longer one must.
    if a.uplink_secs >= BATCH as u64 * a.interval || batch_acked1 > batch_acked0 {
        line(
            &format!("remote write, batch_snapshots = {BATCH} (a metered uplink)"),
            vmb1 - vmb0,
            batch_acked1 - batch_acked0,
        );
    }
    rows.push((
        "uplink measurement".into(),
        format!(
            "{} live gateways per format for {} s at {} s snapshots, {samples_per_snapshot:.0} samples per snapshot",
            a.uplink_gateways, a.uplink_secs, a.interval
        ),
    ));
    if std::env::var("FLEET_DEBUG").is_ok() {
        let g = &sets[2].3[0];
        let samples = g.samples.lock().unwrap();
        let keys = &g.series.lock().unwrap().keys;
        let first: HashSet<u32> = samples[0].iter().map(|x| x.0).collect();
        for (k, snap) in samples.iter().enumerate() {
            for (id, _) in snap {
                if !first.contains(id) {
                    eprintln!("fleet: new in snapshot {k}: {}", keys[*id as usize]);
                }
            }
        }
    }
    stop.cancel();
    std::thread::sleep(Duration::from_millis(500));
    drop(sets);
    drop(vm);
    drop(vmb);
}
