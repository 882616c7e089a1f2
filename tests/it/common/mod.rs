//! Shared helpers: run the real `copilot-edge` executable, talk raw HTTP/1.1 to it, start real
//! services (Prometheus, Pushgateway, Mosquitto) on loopback, and small in-test fakes.

#![allow(dead_code)]

pub mod http;
pub mod mqtt;
pub mod net;
pub mod services;

pub use net::{free_port, need};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use self::http::{request, Response};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_copilot-edge");

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ce-it-{tag}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// SHA-256 hex of a token, for `[[auth.tokens]]`.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A question the sample knowledge base answers (two hydraulic-press SOPs).
pub const PRESS: &str =
    "hydraulic press vibrates above 5 mm/s and leaks coolant near the primary line";

/// The token every test config accepts.
pub const TOKEN: &str = "test-token-technician-42";

/// A config with test directories and one known token, plus `extra` TOML appended.
pub fn config_with(dir: &Path, extra: &str) -> String {
    format!(
        "[paths]\nstate_dir = {:?}\nlog_dir = {:?}\n\n[identity]\ngateway_id = \"gw-test\"\nsite_plant_id = \"plant-7\"\n\n[[auth.tokens]]\nuser_id = \"technician-42\"\nsha256 = \"{}\"\n\n{extra}",
        dir.join("state").display().to_string(),
        dir.join("logs").display().to_string(),
        sha256_hex(TOKEN)
    )
}

/// `copilot-edge serve --config CONFIG --listen 127.0.0.1:0`, run in `dir`.
pub fn serve_command(config: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir);
    cmd
}

/// A running agent.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

impl Agent {
    /// Starts the agent with `config_toml` written into `dir`, on 127.0.0.1:0.
    pub fn start(dir: &Path, config_toml: &str) -> Agent {
        Self::start_env(dir, config_toml, &[])
    }

    pub fn start_env(dir: &Path, config_toml: &str, env: &[(&str, &str)]) -> Agent {
        let config = dir.join("copilot-edge.toml");
        std::fs::write(&config, config_toml).unwrap();
        let mut cmd = serve_command(&config, dir);
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("STATE_DIRECTORY")
            .env_remove("LOGS_DIRECTORY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, dir.to_path_buf(), config)
    }

    /// Spawns a prepared command and waits for its `listening` event.
    pub fn spawn(mut cmd: Command, dir: PathBuf, config: PathBuf) -> Agent {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn copilot-edge");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => l2.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        let l3 = lines.clone();
        let mut agent = Agent {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            dir,
            stdout: lines,
            config,
        };
        let addr = wait_for("listening event", Duration::from_secs(20), || {
            if let Ok(Some(st)) = agent.child.try_wait() {
                panic!("agent exited early with {st}: {:?}", l3.lock().unwrap());
            }
            l3.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["event"] == "listening")
                    .then(|| v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap())
            })
        });
        agent.addr = addr;
        agent
    }

    /// Parsed JSON log lines seen on stdout so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until an event named `name` satisfying `pred` appears on stdout.
    pub fn wait_event(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(&format!("event {name}"), timeout, || {
            self.events()
                .into_iter()
                .find(|e| e["event"] == name && pred(e))
        })
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"")
    }

    /// Authenticated GET (the test token).
    pub fn get_auth(&self, path: &str) -> Response {
        let auth = format!("Bearer {TOKEN}");
        request(self.addr, "GET", path, &[("Authorization", &auth)], b"")
    }

    /// Authenticated JSON POST.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Response {
        let auth = format!("Bearer {TOKEN}");
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    pub fn diagnose(&self, plant: &str, equipment: &str, text: &str) -> Response {
        self.post("/v1/diagnose", &serde_json::json!({"plant_id": plant, "equipment_id": equipment, "problem_description": text}))
    }

    /// Records the receiver of `sink` refused for good (0 when none were ever counted).
    pub fn sink_rejected(&self, sink: &str) -> f64 {
        self.metric(
            "copilot_edge_sink_rejected_records_total",
            &[&format!("sink=\"{sink}\"")],
        )
        .unwrap_or(0.0)
    }

    /// Value of one sample in the agent's /metrics (labels given as `k="v"` pairs that must all
    /// be present), or None.
    pub fn metric(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let text = self.get("/metrics").text();
        metric_in(&text, name, labels)
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM and wait for exit (deadline 20 s).
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let st = wait_for("agent exit", Duration::from_secs(20), || {
            self.child.try_wait().unwrap()
        });
        std::mem::forget(self);
        st
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds a sample in Prometheus text.
pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        (n == name && labels.iter().all(|kv| rest.contains(kv))).then(|| value.parse().ok())?
    })
}

/// A blocking connection to `to` from the loopback address `from` (127.0.0.0/8: every address
/// is this machine), so a test can be several clients.
pub fn connect_from(from: &str, to: SocketAddr) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        sock.connect(to).await.unwrap().into_std().unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s
}

/// Runs the binary with arguments, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small tmpfs mounted for a test (a real file system that really fills up), unmounted on
/// drop. Needs root; `tests/run` also runs the tests in a private mount namespace, so a test
/// killed before its drop leaves no mount behind.
pub struct TmpFs {
    pub dir: TempDir,
}

impl TmpFs {
    pub fn mount(tag: &str, size: &str) -> TmpFs {
        let dir = TempDir::new(tag);
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs failed (the fault tests need root)"
        );
        TmpFs { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.path().to_str().unwrap()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
    /// Writes `name` until the file system is full (ENOSPC), or until it holds `max` bytes.
    pub fn fill(&self, name: &str, max: u64) -> PathBuf {
        use std::io::Write;
        let p = self.path().join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        while n < max {
            let take = chunk.len().min((max - n) as usize);
            match f.write(&chunk[..take]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        p
    }
}

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Sends diagnose requests until stopped; counts the 200s.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    /// Answers other than 200.
    bad: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(addr: std::net::SocketAddr, tag: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(AtomicU64::new(0));
        let (s2, o2, b2) = (stop.clone(), ok.clone(), bad.clone());
        let handle = std::thread::spawn(move || {
            let mut i = 0;
            while !s2.load(Ordering::Relaxed) {
                i += 1;
                let body = serde_json::json!({"plant_id": "plant-7", "equipment_id": "press-12", "problem_description": PRESS}).to_string();
                let trace = format!("{tag}-{i}");
                let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                    break;
                };
                use std::io::Write;
                let req = format!(
                    "POST /v1/diagnose HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nX-Request-Trace-ID: {trace}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(req.as_bytes()).is_err() {
                    break;
                }
                let r = self::http::read_response(&mut s);
                if r.status == 200 {
                    o2.fetch_add(1, Ordering::Relaxed);
                } else {
                    b2.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic {
            stop,
            ok,
            bad,
            handle: Some(handle),
        }
    }

    /// Stops and returns the number of 200 answers.
    pub fn stop(self) -> u64 {
        self.stop_counts().0
    }

    /// Stops and returns (200 answers, other answers).
    pub fn stop_counts(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.bad.load(Ordering::Relaxed),
        )
    }
}

/// Records appended to the spool so far (snapshots and log events).
pub fn appended(a: &Agent) -> u64 {
    let text = a.get("/metrics").text();
    ["metrics", "logs"]
        .iter()
        .map(|k| {
            metric_in(
                &text,
                "copilot_edge_spool_appended_records_total",
                &[&format!("kind=\"{k}\"")],
            )
            .unwrap_or(0.0) as u64
        })
        .sum()
}

/// Runs every query of the shipped dashboard against a Prometheus-API store
/// (`tests/dashboard-queries`), requiring data on the panels whose titles match `require`; panics
/// with the script's report when a query fails or a required panel is empty.
pub fn assert_dashboard_queries(store_url: &str, require: &str) {
    let out = Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard-queries"),
    )
    .arg(store_url)
    .args(["--require-data", require])
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("dashboard-queries:") && text.contains(" 0 failed"),
        "dashboard queries against {store_url} failed:\n{text}"
    );
}
