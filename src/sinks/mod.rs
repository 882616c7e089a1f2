//! Uplinks that carry the spooled telemetry to the central side.
//!
//! - [`mqtt`]: every spooled record, in order, QoS 1; a record counts as delivered only when the
//!   broker's PUBACK for it arrives (rumqttc's `publish()` returning Ok only means queued). The
//!   sink's spool cursor moves over the longest prefix of acknowledged records, so delivery is
//!   at-least-once and duplicates carry the same sequence number.
//! - [`pushgateway`]: the newest metrics state, `PUT` every snapshot interval. The Pushgateway
//!   keeps only the latest value per series and refuses timestamps, so it cannot take history:
//!   after an outage the next push carries the current (cumulative) counters, and the history of
//!   the outage travels by MQTT or remote write. A push counts as delivered on an HTTP 2xx.
//! - [`remote_write`]: every spooled snapshot, with its original timestamps, as Prometheus
//!   remote write 1.0; a batch counts as delivered on an HTTP 2xx.
//!
//! Shared here: capped exponential backoff with jitter, and the payload encodings.

pub mod mqtt;
pub mod pushgateway;
pub mod remote_write;
pub mod sparkplug;

use std::time::Duration;

/// Errors a sink reports about one attempt; the `kind` label of `copilot_edge_sink_errors_total`.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Could not connect or the connection dropped.
    #[error("{sink}: connection: {message}")]
    Connection {
        /// Sink name.
        sink: &'static str,
        /// What happened.
        message: String,
    },
    /// The receiver answered with an error status.
    #[error("{sink}: rejected with status {status}: {message}")]
    Status {
        /// Sink name.
        sink: &'static str,
        /// HTTP status.
        status: u16,
        /// Body excerpt.
        message: String,
    },
    /// No answer in time.
    #[error("{sink}: timed out")]
    Timeout {
        /// Sink name.
        sink: &'static str,
    },
    /// The receiver refused our credentials (HTTP 401/403, MQTT CONNACK "bad user name or
    /// password"/"not authorized"). Says nothing about the data: the backlog is kept and
    /// retried until the credential is fixed.
    #[error("{sink}: credentials refused: {message}")]
    Auth {
        /// Sink name.
        sink: &'static str,
        /// Status and body excerpt, or the CONNACK code.
        message: String,
    },
    /// Reading the spool failed.
    #[error("{sink}: spool: {source}")]
    Spool {
        /// Sink name.
        sink: &'static str,
        /// The spool error.
        source: crate::spool::SpoolError,
    },
}

impl SinkError {
    /// Label value for `copilot_edge_sink_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Connection { .. } => "connection",
            SinkError::Status { .. } => "status",
            SinkError::Timeout { .. } => "timeout",
            SinkError::Auth { .. } => "auth",
            SinkError::Spool { .. } => "spool",
        }
    }
}

/// Where a sink stands with its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The last attempt was delivered.
    Online,
    /// Unreachable, timing out or answering with a retryable error.
    Offline,
    /// The receiver refuses the credentials; nothing is discarded meanwhile.
    AuthFailed,
}

impl Link {
    /// As written in the state file and shown by `spool status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Online => "online",
            Link::Offline => "offline",
            Link::AuthFailed => "auth_failed",
        }
    }
}

/// When a sink's state file says its link state began, in today's wall clock (ms): from the
/// boot clock when the file has it and it is from this boot, so a wall-clock step since does not
/// make a link "online for seven years".
pub fn state_since_ms(file: &serde_json::Value) -> Option<i64> {
    let boot = file["since_boot_ms"].as_i64();
    match boot {
        Some(b) if b <= crate::clock::boot_ms() => Some(crate::clock::wall_of_boot_ms(b)),
        _ => file["since_ms"].as_i64(),
    }
}

/// The sinks `cfg` enables, in a fixed order.
pub fn enabled(cfg: &crate::config::Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg.mqtt.is_some() {
        v.push(mqtt::NAME);
    }
    if cfg.pushgateway.is_some() {
        v.push(pushgateway::NAME);
    }
    if cfg.remote_write.is_some() {
        v.push(remote_write::NAME);
    }
    v
}

/// The enabled sinks that drain the spool (the Pushgateway only ever takes the newest values).
pub fn draining_spool(cfg: &crate::config::Config) -> Vec<&'static str> {
    enabled(cfg)
        .into_iter()
        .filter(|&s| s != pushgateway::NAME)
        .collect()
}

/// A sink's link state, kept in one place for every sink: the `up`/`auth_failed` gauges, one
/// `sink_offline`/`sink_auth_failed` event per change (not per attempt), and a small JSON file
/// `<spool dir>/sinks/<sink>.json` written on each change, which `copilot-edge spool status`
/// (another process) reads.
pub struct SinkHealth {
    sink: &'static str,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    file: std::path::PathBuf,
    link: Option<Link>,
    since_ms: i64,
    /// The same moment on the boot clock ([`crate::clock::boot_ms`]), which no step moves.
    since_boot_ms: i64,
    last_error: String,
    last_success_ms: Option<i64>,
}

impl SinkHealth {
    /// Health of `sink`, recorded under `state_dir` (the spool directory).
    pub fn new(
        sink: &'static str,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        state_dir: &std::path::Path,
    ) -> Self {
        metrics.sink.up.with_label_values(&[sink]).set(0);
        metrics.sink.auth_failed.with_label_values(&[sink]).set(0);
        // Counters exist from 0 (Prometheus' advice for known label values; a Sparkplug birth
        // then lists them and the first delivery needs no rebirth).
        metrics.sink.sent.with_label_values(&[sink]);
        metrics.sink.rejected.with_label_values(&[sink]);
        SinkHealth {
            sink,
            metrics,
            file: state_dir.join("sinks").join(format!("{sink}.json")),
            link: None,
            since_ms: crate::clock::now_ms(),
            since_boot_ms: crate::clock::boot_ms(),
            last_error: String::new(),
            last_success_ms: None,
        }
    }

    /// A delivery succeeded. Returns true when the sink was not online before (the caller logs
    /// its own `sink_online` with what it knows: broker, url, acknowledged sequence).
    pub fn delivered(&mut self) -> bool {
        let now = crate::clock::now_ms();
        let m = &self.metrics.sink;
        m.up.with_label_values(&[self.sink]).set(1);
        m.last_success
            .with_label_values(&[self.sink])
            .set(now as f64 / 1000.0);
        self.last_success_ms = Some(now);
        self.set(Link::Online)
    }

    /// An attempt failed: counts it, and reports the change to offline or auth_failed once.
    pub fn failed(&mut self, e: &SinkError) {
        let m = &self.metrics.sink;
        m.up.with_label_values(&[self.sink]).set(0);
        m.errors.with_label_values(&[self.sink, e.kind()]).inc();
        let error = e.to_string();
        let new_error = error != self.last_error;
        self.last_error = error;
        let link = match e {
            SinkError::Auth { .. } => Link::AuthFailed,
            _ => Link::Offline,
        };
        let changed = self.set(link);
        if !changed && new_error {
            // Same state, another reason (401 → 403): the status shows the current one.
            self.write_state();
        }
        if changed {
            match link {
                Link::AuthFailed => {
                    tracing::error!(sink = self.sink, error = %e, "sink_auth_failed")
                }
                _ => tracing::warn!(sink = self.sink, error = %e, "sink_offline"),
            }
        }
    }

    /// The current link state (None before the first attempt).
    pub fn link(&self) -> Option<Link> {
        self.link
    }

    fn set(&mut self, link: Link) -> bool {
        if self.link == Some(link) {
            return false;
        }
        self.link = Some(link);
        self.since_ms = crate::clock::now_ms();
        self.since_boot_ms = crate::clock::boot_ms();
        self.metrics
            .sink
            .auth_failed
            .with_label_values(&[self.sink])
            .set(i64::from(link == Link::AuthFailed));
        self.write_state();
        true
    }

    /// Writes the state file that `spool status` and `/v1/status` read.
    fn write_state(&self) {
        let Some(link) = self.link else { return };
        let doc = serde_json::json!({
            "sink": self.sink,
            "state": link.as_str(),
            "since_ms": self.since_ms,
            "since_boot_ms": self.since_boot_ms,
            "last_error": self.last_error,
            "last_success_ms": self.last_success_ms,
        });
        // Best effort: a full disk must not stop delivery; the metrics carry the same state.
        let _ = std::fs::create_dir_all(self.file.parent().unwrap_or(std::path::Path::new(".")))
            .and_then(|_| {
                crate::fsutil::write_atomic(&self.file, doc.to_string().as_bytes(), 0o600)
            });
    }
}

/// Reads the state files of every sink under a spool directory: (sink, state document).
pub fn read_states(spool_dir: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<(String, serde_json::Value)> = std::fs::read_dir(spool_dir.join("sinks"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
            let v = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((name, v))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// An HTTP status from a receiver, as a sink error: 401/403/407 refuse the credentials, the rest
/// are plain status errors.
pub fn status_error(sink: &'static str, status: u16, body: &[u8]) -> SinkError {
    let message = String::from_utf8_lossy(&body[..body.len().min(300)])
        .trim()
        .to_string();
    match status {
        401 | 403 | 407 => SinkError::Auth {
            sink,
            message: format!("status {status}: {message}"),
        },
        _ => SinkError::Status {
            sink,
            status,
            message,
        },
    }
}

/// Capped exponential backoff with full jitter; reset after a connection has stayed up.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// Backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            base,
            cap,
            attempt: 0,
            rng: seed,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: plenty for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The upper bound of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        exp.min(self.cap)
    }

    /// The next delay: uniformly random in [ceiling/2, ceiling], so a fleet that lost its broker
    /// together does not reconnect together.
    pub fn next_delay(&mut self) -> Duration {
        let c = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = c / 2;
        let span = (c - half).as_millis() as u64;
        half + Duration::from_millis(if span == 0 {
            0
        } else {
            self.next_rand() % (span + 1)
        })
    }

    /// Back to the base delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The `Authorization` header value for an HTTP sink, if any.
pub fn authorization(auth: &crate::config::HttpAuth) -> Option<String> {
    use crate::config::HttpAuth;
    match auth {
        HttpAuth::None => None,
        HttpAuth::Basic { username, password } => Some(format!(
            "Basic {}",
            crate::base64::encode(format!("{username}:{}", password.expose()).as_bytes())
        )),
        HttpAuth::Bearer(t) => Some(format!("Bearer {}", t.expose())),
    }
}

/// A failed HTTP exchange as a sink error.
pub fn http_error(sink: &'static str, e: crate::httpc::HttpcError) -> SinkError {
    match e {
        crate::httpc::HttpcError::Timeout(_) => SinkError::Timeout { sink },
        e => SinkError::Connection {
            sink,
            message: e.to_string(),
        },
    }
}

/// Prometheus text with every sample line given the timestamp `ts_ms`, headed by a comment with
/// the record's sequence number (parsers ignore comments that are not HELP/TYPE).
pub fn prometheus_with_timestamps(text: &[u8], seq: u64, ts_ms: i64, gateway_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 4 + 64);
    out.extend_from_slice(
        format!("# copilot_edge_record seq={seq} ts_ms={ts_ms} gateway_id={gateway_id}\n")
            .as_bytes(),
    );
    for line in text.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        out.extend_from_slice(line);
        if line[0] != b'#' {
            out.extend_from_slice(format!(" {ts_ms}").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// One sample of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (for histograms the `_bucket`, `_sum` or `_count` series).
    pub name: String,
    /// Label pairs in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The sample value (`+Inf`/`-Inf` parsed as infinities).
    pub value: f64,
}

/// Parses the sample lines of a Prometheus text exposition as the agent renders it (no
/// timestamps; label values escaped with `\\`, `\"`, `\n`). Unparsable lines are skipped.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let (name, labels) = match series.find('{') {
            None => (series.to_string(), Vec::new()),
            Some(i) => match parse_labels(&series[i + 1..]) {
                Some(l) => (series[..i].to_string(), l),
                None => continue,
            },
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

pub(crate) fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        match chars.peek() {
            Some('}') => return Some(labels),
            Some(',') | Some(' ') => {
                chars.next();
                continue;
            }
            None => return None,
            _ => {}
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut val = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.push((key, val));
    }
}

/// The JSON payload of a metrics record.
pub fn metrics_json(
    text: &[u8],
    seq: u64,
    ts_ms: i64,
    gateway_id: &str,
    site_plant_id: &str,
) -> Vec<u8> {
    let samples: Vec<serde_json::Value> = parse_samples(&String::from_utf8_lossy(text))
        .into_iter()
        .map(|s| {
            let labels: serde_json::Map<String, serde_json::Value> = s
                .labels
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            // JSON has no infinities: +Inf bucket bounds are labels, values are finite in practice.
            let value = if s.value.is_finite() {
                serde_json::json!(s.value)
            } else {
                serde_json::Value::String(s.value.to_string())
            };
            serde_json::json!({"name": s.name, "labels": labels, "value": value})
        })
        .collect();
    serde_json::json!({"seq": seq, "ts_ms": ts_ms, "gateway_id": gateway_id, "site_plant_id": site_plant_id, "kind": "metrics", "samples": samples})
        .to_string()
        .into_bytes()
}

/// The JSON payload of a log record: the log line embedded as an object.
pub fn log_json(line: &[u8], seq: u64, ts_ms: i64, gateway_id: &str) -> Vec<u8> {
    let event: serde_json::Value = serde_json::from_slice(line)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(line).into_owned()));
    serde_json::json!({"seq": seq, "ts_ms": ts_ms, "gateway_id": gateway_id, "kind": "log", "event": event}).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_refusals_are_auth_errors() {
        for s in [401, 403, 407] {
            assert_eq!(status_error("pushgateway", s, b"no").kind(), "auth", "{s}");
        }
        for s in [400, 404, 429, 500, 503] {
            assert_eq!(
                status_error("pushgateway", s, b"no").kind(),
                "status",
                "{s}"
            );
        }
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(delays[11] >= Duration::from_millis(2500), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn timestamps_are_appended_to_samples_only() {
        let t = b"# HELP a x\n# TYPE a counter\na_total{x=\"1\"} 3\nb 4.5\n";
        let out = String::from_utf8(prometheus_with_timestamps(t, 7, 1700000000000, "gw")).unwrap();
        assert_eq!(out, "# copilot_edge_record seq=7 ts_ms=1700000000000 gateway_id=gw\n# HELP a x\n# TYPE a counter\na_total{x=\"1\"} 3 1700000000000\nb 4.5 1700000000000\n");
    }

    #[test]
    fn parses_own_exposition() {
        let s = parse_samples("# TYPE h histogram\nh_bucket{le=\"+Inf\",p=\"a \\\"q\\\" \\\\ b\"} 2\nup 1\nbad line here x\n");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].labels,
            vec![
                ("le".to_string(), "+Inf".to_string()),
                ("p".to_string(), "a \"q\" \\ b".to_string())
            ]
        );
        assert_eq!(
            s[1],
            Sample {
                name: "up".into(),
                labels: vec![],
                value: 1.0
            }
        );
    }
}
