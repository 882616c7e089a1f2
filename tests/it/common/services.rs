//! Real services from Debian's packages, started on loopback ports for one test and stopped on
//! drop, and a fake OpenAI-compatible LLM (the only stand-in the suite uses).
//!
//! The services must be installed (`tests/run` installs them); a missing binary fails the test
//! with a message saying so, it is never skipped.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{free_port, need, request, wait_for, TempDir};

/// A background service process, killed on drop.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub dir: TempDir,
    pub name: &'static str,
}

impl Service {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// Stops the service (SIGTERM, then SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_http_ok(url: &str, what: &str) {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |(_, p)| p)
    );
    wait_for(what, Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).ok()?;
        (request(addr, "GET", &path, &[], b"").status == 200).then_some(())
    });
}

/// Prometheus scraping `targets` (host:port) every second, with optional rule files and
/// Alertmanager; remote-write receiver on, with an out-of-order window of `ooo_window`.
pub fn prometheus(
    targets: &[SocketAddr],
    rule_files: &[PathBuf],
    alertmanager: Option<SocketAddr>,
    extra_args: &[&str],
) -> Service {
    prometheus_on(free_port(), targets, rule_files, alertmanager, extra_args)
}

/// [`prometheus`] on a given port (for a receiver the agent already points at).
pub fn prometheus_on(
    port: u16,
    targets: &[SocketAddr],
    rule_files: &[PathBuf],
    alertmanager: Option<SocketAddr>,
    extra_args: &[&str],
) -> Service {
    let dir = TempDir::new("prom");
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let rules: Vec<String> = rule_files
        .iter()
        .map(|r| format!("'{}'", r.display()))
        .collect();
    let am = alertmanager.map_or(String::new(), |a| {
        format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{a}']\n")
    });
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nstorage:\n  tsdb:\n    out_of_order_time_window: 3h\nrule_files: [{}]\n{am}scrape_configs:\n  - job_name: copilot-edge\n    static_configs:\n      - targets: [{}]\n",
        rules.join(", "),
        targets.join(", ")
    );
    prometheus_with_config(port, dir, &cfg, extra_args)
}

/// A Prometheus on `port` with the given configuration text (written into `dir`).
pub fn prometheus_with_config(port: u16, dir: TempDir, cfg: &str, extra_args: &[&str]) -> Service {
    let data = dir.path().join("data");
    prometheus_at(port, dir, cfg, &data, extra_args)
}

/// A Prometheus on `port` with the configuration text `cfg` (written into `dir`) and its TSDB in
/// `data` (e.g. a backfilled data directory). Fails the test, with Prometheus' own error, if it
/// exits instead of becoming ready.
pub fn prometheus_at(
    port: u16,
    dir: TempDir,
    cfg: &str,
    data: &Path,
    extra_args: &[&str],
) -> Service {
    std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
    let child = Command::new(need("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args([
            "--web.enable-lifecycle",
            "--web.enable-remote-write-receiver",
            "--rules.alert.resend-delay=1s",
        ])
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut s = Service {
        child,
        port,
        dir,
        name: "prometheus",
    };
    wait_for("prometheus ready", Duration::from_secs(30), || {
        if let Ok(Some(st)) = s.child.try_wait() {
            panic!(
                "prometheus exited with {st}: {}",
                std::fs::read_to_string(s.dir.path().join("stderr.log")).unwrap_or_default()
            );
        }
        std::net::TcpStream::connect(s.addr()).ok()?;
        (request(s.addr(), "GET", "/-/ready", &[], b"").status == 200).then_some(())
    });
    s
}

/// Runs a PromQL instant query; returns the `data.result` array.
pub fn prom_query(prom: &Service, q: &str) -> serde_json::Value {
    let path = format!("/api/v1/query?query={}", urlencode(q));
    let r = request(prom.addr(), "GET", &path, &[], b"");
    let v = r.json();
    assert_eq!(v["status"], "success", "query {q}: {}", r.text());
    v["data"]["result"].clone()
}

/// A scalar from a query returning one sample.
pub fn prom_value(prom: &Service, q: &str) -> Option<f64> {
    let r = prom_query(prom, q);
    let first = r.as_array()?.first()?;
    first["value"][1].as_str()?.parse().ok()
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Spawns `bin args` with output discarded, as a [`Service`] on `port` owning `dir`.
fn spawn(name: &'static str, bin: &str, args: &[String], port: u16, dir: TempDir) -> Service {
    let child = Command::new(need(bin))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Service {
        child,
        port,
        dir,
        name,
    }
}

fn wait_listening(port: u16, what: &str) {
    wait_for(what, Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
}

/// A Pushgateway without persistence.
pub fn pushgateway_on(port: u16) -> Service {
    let args = [
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--persistence.file=".to_string(),
    ];
    let s = spawn(
        "pushgateway",
        "prometheus-pushgateway",
        &args,
        port,
        TempDir::new("pgw"),
    );
    wait_http_ok(&format!("{}/-/ready", s.url()), "pushgateway ready");
    s
}

/// A Pushgateway serving HTTPS with `cert`/`key`.
pub fn pushgateway_tls(port: u16, cert: &Path, key: &Path) -> Service {
    let dir = TempDir::new("pgw-tls");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let args = [
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--persistence.file=".to_string(),
        format!("--web.config.file={}", web.display()),
    ];
    let s = spawn("pushgateway", "prometheus-pushgateway", &args, port, dir);
    wait_listening(port, "pushgateway (tls) listening");
    s
}

/// A Mosquitto broker on `port` with persistence in `data` (kept across restarts).
pub fn mosquitto_on(port: u16, data: &Path) -> Service {
    std::fs::create_dir_all(data).unwrap();
    mosquitto_with(
        port,
        &format!("listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nmax_queued_messages 1000000\nmessage_size_limit 0\n", data.display()),
    )
}

/// A Mosquitto broker with these configuration lines (listeners, TLS, persistence), ready when
/// `port` accepts connections.
pub fn mosquitto_with(port: u16, extra: &str) -> Service {
    let dir = TempDir::new("mqtt");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("user root\nlog_dest stderr\nallow_anonymous true\n{extra}\n"),
    )
    .unwrap();
    let s = spawn(
        "mosquitto",
        "mosquitto",
        &["-c".to_string(), conf.display().to_string()],
        port,
        dir,
    );
    wait_listening(port, "mosquitto ready");
    s
}

/// An Alertmanager routing to webhook receivers; `config` is the YAML text.
pub fn alertmanager(config: &str) -> Service {
    let dir = TempDir::new("am");
    let port = free_port();
    std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
    let args = [
        format!(
            "--config.file={}",
            dir.path().join("alertmanager.yml").display()
        ),
        format!("--storage.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let s = spawn("alertmanager", "prometheus-alertmanager", &args, port, dir);
    wait_http_ok(&format!("{}/-/ready", s.url()), "alertmanager ready");
    s
}

/// How the fake LLM behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LlmMode {
    /// Answer a chat completion with usage 111 / 22.
    Ok,
    /// Sleep this long before answering.
    Slow(Duration),
    /// Answer 500.
    Error,
    /// Odd-numbered requests (1st, 3rd, ...) get 500, the others a completion.
    Alternate,
}

/// A fake OpenAI-compatible chat-completions server (std threads).
pub struct FakeLlm {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub last_body: Arc<std::sync::Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl FakeLlm {
    pub fn start(mode: LlmMode) -> FakeLlm {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let last_body = Arc::new(std::sync::Mutex::new(String::new()));
        let (r2, s2, b2) = (requests.clone(), stop.clone(), last_body.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                let (r3, b3) = (r2.clone(), b2.clone());
                std::thread::spawn(move || {
                    let Some(req) = super::http::read_request(&c) else {
                        return;
                    };
                    let body = req.body;
                    *b3.lock().unwrap() = String::from_utf8_lossy(&body).into_owned();
                    let n = r3.fetch_add(1, Ordering::Relaxed) + 1;
                    let mode = match mode {
                        LlmMode::Alternate if n % 2 == 1 => LlmMode::Error,
                        LlmMode::Alternate => LlmMode::Ok,
                        m => m,
                    };
                    let (status, resp) = match mode {
                        LlmMode::Error | LlmMode::Alternate => (
                            "500 Internal Server Error",
                            "{\"error\":\"boom\"}".to_string(),
                        ),
                        LlmMode::Slow(d) => {
                            std::thread::sleep(d);
                            ("200 OK", completion())
                        }
                        LlmMode::Ok => ("200 OK", completion()),
                    };
                    let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}", resp.len());
                });
            }
        });
        FakeLlm {
            addr,
            requests,
            last_body,
            stop,
        }
    }
}

fn completion() -> String {
    serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "LLM REPORT: follow SOP-HYD-001 [SOP-HYD-001]."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 111, "completion_tokens": 22, "total_tokens": 133}
    })
    .to_string()
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// A single-node VictoriaMetrics (Debian's `victoria-metrics`) storing under `data` (kept across
/// restarts). Queries see samples at once (no latency offset), as a test needs.
pub fn victoria_metrics_on(port: u16, data: &Path) -> Service {
    std::fs::create_dir_all(data).unwrap();
    let args = [
        format!("-httpListenAddr=127.0.0.1:{port}"),
        format!("-storageDataPath={}", data.display()),
        "-retentionPeriod=1".to_string(),
        "-search.latencyOffset=0s".to_string(),
        "-search.disableCache".to_string(),
        "-loggerLevel=ERROR".to_string(),
    ];
    let s = spawn(
        "victoria-metrics",
        "victoria-metrics",
        &args,
        port,
        TempDir::new("vm"),
    );
    wait_listening(port, "victoria-metrics listening");
    s
}

/// vmalert evaluating `rule_files` against VictoriaMetrics at `vm`, writing recording-rule
/// results back to it and sending alerts to `alertmanager`.
pub fn vmalert(vm: &str, alertmanager: &str, rule_files: &[PathBuf]) -> Service {
    let port = free_port();
    let mut args = vec![
        format!("-httpListenAddr=127.0.0.1:{port}"),
        format!("-datasource.url={vm}"),
        format!("-remoteWrite.url={vm}"),
        format!("-remoteRead.url={vm}"),
        format!("-notifier.url={alertmanager}"),
        "-evaluationInterval=2s".to_string(),
        "-remoteWrite.flushInterval=1s".to_string(),
        "-loggerLevel=ERROR".to_string(),
    ];
    args.extend(rule_files.iter().map(|f| format!("-rule={}", f.display())));
    let s = spawn("vmalert", "vmalert", &args, port, TempDir::new("vmalert"));
    wait_listening(port, "vmalert listening");
    s
}
