//! Configuration: TOML on disk (or the embedded defaults) → a validated [`Config`].
//!
//! The flow, one file a step:
//! 1. [`parse`] reads the text with serde into a [`RawConfig`] (`raw.rs`): the TOML tables one to
//!    one, unknown keys rejected (`deny_unknown_fields`), every key defaulted, nothing checked.
//! 2. [`RawConfig::validate`] (`validate.rs`) checks the tables in document order, one function
//!    per table, each bound a named constant at the top of that file; it collects *all* problems,
//!    each with the TOML key it belongs to, so `check-config` prints them in one go (and in the
//!    same order every time). The checks those functions share (ranges, URLs, TLS files, secrets,
//!    HTTP auth) are `check.rs`'s `Checker`.
//! 3. Everything downstream only sees [`Config`] (this file), whose fields are typed
//!    (`SocketAddr`, `Duration`, `NonZero*`, [`Secret`]).
//!
//! Paths follow systemd when it hands them over ([`Environment`], `env.rs`): `STATE_DIRECTORY`,
//! `LOGS_DIRECTORY` and `CONFIGURATION_DIRECTORY` take precedence over the relative defaults, and
//! secrets may come from files or `$CREDENTIALS_DIRECTORY/<name>` (`LoadCredential=`) instead of
//! the config text. The tokens-file format belongs to [`crate::auth`]; validation reads the file
//! with auth's parser so a broken file is a configuration problem (exit 78).

mod check;
mod env;
mod raw;
mod validate;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::tls::TlsClient;

pub use env::Environment;
pub use raw::{
    RawAuth, RawConfig, RawEngine, RawIdentity, RawKb, RawLabels, RawLlm, RawLogging, RawMetrics,
    RawMqtt, RawPaths, RawPushgateway, RawRemoteWrite, RawServer, RawSinks, RawSparkplug, RawSpool,
    RawToken, DEFAULT_MIN_RELEVANCE,
};

/// The commented default configuration, embedded so `print-default-config` and the no-config
/// start agree. A unit test checks it parses to exactly [`RawConfig::default`].
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/default.toml");

/// Errors while loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (unknown key, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// Where the TOML came from.
        path: String,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// One or more values are out of range or inconsistent.
    #[error("{} problem(s) in {path}:\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Where the TOML came from.
        path: String,
        /// Every problem found, each naming its key.
        problems: Vec<Problem>,
    },
}

/// One validation problem: the TOML key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted TOML key, e.g. `server.listen`.
    pub key: String,
    /// Human explanation.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A secret string whose `Debug` and `Display` never print the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The validated configuration every component is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where this configuration came from (a path or `embedded defaults`).
    pub source: String,
    /// `[server]`: the HTTP listener and its bounds.
    pub server: ServerConfig,
    /// `[paths]`: state, log, knowledge-base, asset-register and lexicon locations.
    pub paths: PathsConfig,
    /// `[identity]`: the gateway and plant ids on every series and topic.
    pub identity: IdentityConfig,
    /// `[auth]`: the bearer tokens known at load time and the tokens file to follow.
    pub auth: AuthConfig,
    /// `[labels]`: bounds on plant and equipment label values from requests.
    pub labels: LabelsConfig,
    /// `[engine]`: the local retrieval engine's thresholds and answer limits.
    pub engine: EngineConfig,
    /// `[llm]`: the upstream that writes reports; `None` when `llm.url` is empty.
    pub llm: Option<LlmConfig>,
    /// `[llm]` prices and daily budget, which count whether or not an upstream is set.
    pub llm_prices: LlmPrices,
    /// `[metrics]`: rolling-window sizes and the snapshot interval.
    pub metrics: MetricsConfig,
    /// `[logging]`: level and rotating log files.
    pub logging: LoggingConfig,
    /// `[spool]`: the on-disk buffer for the sinks.
    pub spool: SpoolConfig,
    /// `[kb]`: knowledge bundles from a central source.
    pub kb: KbConfig,
    /// `[sinks.mqtt]`; `None` unless `enabled = true`.
    pub mqtt: Option<MqttSinkConfig>,
    /// `[sinks.pushgateway]`; `None` unless `enabled = true`.
    pub pushgateway: Option<PushgatewaySinkConfig>,
    /// `[sinks.remote_write]`; `None` unless `enabled = true`.
    pub remote_write: Option<RemoteWriteSinkConfig>,
}

#[derive(Debug, Clone)]
/// `[server]`: where the API listens and the bounds on connections and requests.
pub struct ServerConfig {
    /// `server.listen`: the address the API binds.
    pub listen: SocketAddr,
    /// `server.max_body_bytes`: larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `server.max_connections`: connections beyond this wait in the kernel's accept queue.
    pub max_connections: NonZeroUsize,
    /// 0 = no per-address bound.
    pub max_connections_per_client: usize,
    /// `server.header_read_timeout_secs`: a client must send its request headers within this.
    pub header_read_timeout: Duration,
    /// `server.request_timeout_secs`: a request, an upstream LLM call included, must end in this.
    pub request_timeout: Duration,
    /// `server.shutdown_grace_secs`: how long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// `server.metrics_require_auth`: `GET /metrics` needs a bearer token too.
    pub metrics_require_auth: bool,
    /// `server.sla_ms`: requests slower than this log `high_latency_detected`.
    pub sla: Duration,
    /// Host names requests may be addressed to besides IP literals, localhost and this
    /// machine's name (`*.example.com` for a domain, `*` for any: no DNS-rebinding check).
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
/// `[paths]`: where the agent keeps state and logs and finds its knowledge.
pub struct PathsConfig {
    /// `paths.state_dir`, else `$STATE_DIRECTORY`, else `copilot-edge-data/state`.
    pub state_dir: PathBuf,
    /// `paths.log_dir`, else `$LOGS_DIRECTORY`, else `copilot-edge-data/logs`.
    pub log_dir: PathBuf,
    /// `paths.knowledge_dir`: a folder of SOP Markdown files; `None` = the embedded sample base.
    pub knowledge_dir: Option<PathBuf>,
    /// `paths.assets`: the asset register (`.csv` or `.toml`); `None` = the embedded sample when
    /// the knowledge base is the embedded one, else no register.
    pub assets: Option<PathBuf>,
    /// `paths.lexicon_dir`: extra lexicon files added to the embedded one; `None` = embedded only.
    pub lexicon_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
/// `[identity]`: who this gateway is, for fleet views.
pub struct IdentityConfig {
    /// `identity.gateway_id`: the `gateway_id` label on every series; in topics and grouping keys.
    pub gateway_id: String,
    /// `identity.site_plant_id`: the plant the gateway stands in (topics, the `site` grouping key).
    pub site_plant_id: String,
}

pub use crate::auth::TokenEntry;

#[derive(Debug, Clone)]
/// `[auth]`: the tokens that may call the API, and the file the running agent follows.
pub struct AuthConfig {
    /// Every token known at load time (inline, credential, tokens file). Empty means: generate
    /// a token on first start (see `auth::ensure_token`).
    pub tokens: Vec<TokenEntry>,
    /// Inline and credential tokens: the part that does not change while the agent runs.
    pub fixed_tokens: Vec<TokenEntry>,
    /// The tokens file: `auth.tokens_file`, or `<state_dir>/tokens`. `copilot-edge token`
    /// edits it and the running agent re-reads it when it changes.
    pub tokens_file: PathBuf,
    /// `auth.tokens_file` is set but names no file (yet): the agent says so at start, since a
    /// typo there would silently ignore every token the operator adds elsewhere.
    pub tokens_file_configured_but_missing: bool,
}

#[derive(Debug, Clone)]
/// `[labels]`: which plant and equipment ids get their own metric series.
pub struct LabelsConfig {
    /// `labels.plant_ids`: plants `/v1/diagnose` accepts (others get 422); empty = any plant.
    pub plant_ids: BTreeSet<String>,
    /// `labels.max_plants`: distinct plants with their own series; the rest count under `_other`.
    pub max_plants: usize,
    /// `labels.equipment_ids`: known equipment ids; empty = the first ones seen per plant.
    pub equipment_ids: BTreeSet<String>,
    /// `labels.max_equipment_per_plant`: equipment series per plant before the rest go to `_other`.
    pub max_equipment_per_plant: usize,
}

#[derive(Debug, Clone)]
/// `[engine]`: the local retrieval engine.
pub struct EngineConfig {
    /// `engine.min_relevance` (0..=1): the relevance a document needs to support an answer.
    pub min_relevance: f64,
    /// `engine.max_documents`: documents cited in one answer (1..=10).
    pub max_documents: NonZeroUsize,
    /// `engine.max_steps`: steps in one answer's `recommended_steps` (1..=50).
    pub max_steps: NonZeroUsize,
    /// `engine.recent_answers`: answers remembered so that `/v1/feedback` can rate them.
    pub recent_answers: NonZeroUsize,
    /// `engine.feedback_window_secs`: how long after it was given an answer can be rated.
    pub feedback_window: Duration,
}

/// An HTTP(S) peer: where to connect, the name to put in `Host` and to verify, and TLS settings
/// when the URL is `https://`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`
    pub authority: String,
    /// The host part, for TLS server-name verification.
    pub host: String,
    /// TLS client settings; `Some` exactly when the URL is `https://`.
    pub tls: Option<TlsClient>,
}

/// The upstream LLM (only when `[llm] url` is set).
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// `llm.model`: the model name sent in each request.
    pub model: String,
    /// `gen_ai_provider_name` label value.
    pub provider: String,
    /// `llm.api_key_file`, else the `llm-api-key` credential, else `api_key`; `None` = no key.
    pub api_key: Option<Secret>,
    /// `llm.timeout_ms`: past this the local engine answers and a fallback is counted.
    pub timeout: Duration,
    /// `llm.max_tokens`: the completion limit sent as `max_tokens`.
    pub max_tokens: u32,
}

#[derive(Debug, Clone, Copy)]
/// `[llm]` prices for `copilot_llm_cost_usd_total` and the daily budget; each `>= 0`.
pub struct LlmPrices {
    /// `llm.price_input_per_1k_usd`: USD per 1,000 prompt tokens.
    pub input_per_1k_usd: f64,
    /// `llm.price_output_per_1k_usd`: USD per 1,000 completion tokens.
    pub output_per_1k_usd: f64,
    /// `llm.budget_usd_per_day`: the TokenBudgetExceeded alert's threshold; 0 = no budget.
    pub budget_usd_per_day: f64,
}

#[derive(Debug, Clone)]
/// `[metrics]`: the rolling windows behind the quality gauges, and the snapshot interval.
pub struct MetricsConfig {
    /// `metrics.hallucination_window_answers`: answers per plant in `copilot_hallucination_rate`.
    pub hallucination_window: NonZeroUsize,
    /// `metrics.feedback_window_ratings`: ratings per plant in `copilot_user_feedback_score`.
    pub feedback_window: NonZeroUsize,
    /// `metrics.snapshot_interval_secs`: how often a snapshot of all metrics is spooled.
    pub snapshot_interval: Duration,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `error`: errors only.
    Error,
    /// `warn`: warnings and errors.
    Warn,
    /// `info`: the default: events such as `request_completed`, plus warnings and errors.
    Info,
    /// `debug`: detail for troubleshooting.
    Debug,
    /// `trace`: everything.
    Trace,
}

#[derive(Debug, Clone)]
/// `[logging]`: JSON lines to stdout and, optionally, rotating files.
pub struct LoggingConfig {
    /// `logging.level`: the most verbose level written.
    pub level: LogLevel,
    /// `logging.file`: also write rotating files in the log directory (stdout always gets them).
    pub file: bool,
    /// `logging.max_file_bytes`: a log file is rotated at this size.
    pub max_file_bytes: u64,
    /// `logging.max_files`: rotated files kept.
    pub max_files: NonZeroUsize,
    /// `logging.gap_question_text`: `knowledge_gap` events carry the question text.
    pub gap_question_text: bool,
}

#[derive(Debug, Clone)]
/// `[kb]`: where knowledge bundles come from and who may sign them.
pub struct KbConfig {
    /// `kb.url`: the endpoint, the request path and the URL as written; `None` = no HTTP source.
    pub http: Option<(Endpoint, String, String)>,
    /// `kb.poll_interval_secs`.
    pub poll_interval: Duration,
    /// `kb.mqtt_topic`; `None` = no MQTT source.
    pub mqtt_topic: Option<String>,
    /// `kb.public_keys`: base64 Ed25519 public keys.
    pub public_keys: Vec<String>,
    /// `kb.dir`, else `<state_dir>/kb`.
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
/// `[spool]`: the on-disk buffer that holds snapshots and log events until every sink has them.
pub struct SpoolConfig {
    /// `spool.dir`, else `<state_dir>/spool`.
    pub dir: PathBuf,
    /// `spool.max_bytes`: the disk bound; when full, the oldest records are dropped (and counted).
    pub max_bytes: u64,
    /// `spool.segment_bytes`: size of one segment file; at most half of `max_bytes`.
    pub segment_bytes: u64,
    /// `spool.min_free_bytes`: never write while the file system has less free space than this.
    pub min_free_bytes: u64,
    /// `spool.ship_logs`: spool `request_completed`, warning and error log events as well.
    pub ship_logs: bool,
}

/// Payload format of MQTT messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttFormat {
    /// Prometheus text exposition with sample timestamps.
    Prometheus,
    /// One JSON document per record.
    Json,
    /// Sparkplug B: the gateway is an edge node (NBIRTH/NDATA/NDEATH), logs stay JSON.
    SparkplugB,
}

/// Sparkplug B identities of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkplugConfig {
    /// Sparkplug group id: `sinks.mqtt.sparkplug.group_id`, else `identity.site_plant_id`.
    pub group_id: String,
    /// Edge node id: `sinks.mqtt.sparkplug.edge_node_id`, else `identity.gateway_id`.
    pub edge_node_id: String,
    /// Primary host application whose STATE gates publishing; `None` = no primary host.
    pub primary_host_id: Option<String>,
    /// NBIRTH/NDATA at QoS 1 instead of the specification's QoS 0.
    pub data_qos1: bool,
}

#[derive(Debug, Clone)]
/// `[sinks.mqtt]` (enabled): the broker, topics, payload format and flow limits.
pub struct MqttSinkConfig {
    /// `sinks.mqtt.host`: the broker's host name or address.
    pub host: String,
    /// `sinks.mqtt.port`: the broker's port (never 0).
    pub port: u16,
    /// `sinks.mqtt.client_id`, else `copilot-edge-<gateway_id>`; stable for the persistent session.
    pub client_id: String,
    /// `sinks.mqtt.username`; `None` when empty.
    pub username: Option<String>,
    /// `sinks.mqtt.password_file`, else the `mqtt-password` credential, else `password`.
    pub password: Option<Secret>,
    /// `sinks.mqtt.topic_prefix` without a trailing `/`: `<prefix>/<site>/<gateway>/{metrics,...}`.
    pub topic_prefix: String,
    /// `sinks.mqtt.format`: the payload format of metrics messages.
    pub format: MqttFormat,
    /// gzip the metrics and log payloads (`compression = "gzip"`).
    pub gzip: bool,
    /// Set when `format = "sparkplug_b"`.
    pub sparkplug: Option<SparkplugConfig>,
    /// `sinks.mqtt.keep_alive_secs`: the MQTT keep-alive interval (5 s..=1 h).
    pub keep_alive: Duration,
    /// `sinks.mqtt.max_packet_bytes`: the largest MQTT packet sent or accepted.
    pub max_packet_bytes: usize,
    /// `sinks.mqtt.max_inflight`: QoS 1 publishes awaiting their PUBACK at once.
    pub max_inflight: u16,
    /// `sinks.mqtt.backlog_records_per_sec`: backlog replay rate; live records go first.
    pub backlog_records_per_sec: u32,
    /// TLS settings when `tls = true`.
    pub tls: Option<TlsClient>,
}

/// HTTP authentication of an uplink (Pushgateway, remote write): Basic or bearer, not both.
#[derive(Debug, Clone)]
pub enum HttpAuth {
    /// No authentication header.
    None,
    /// HTTP Basic with the table's `username` and password.
    Basic {
        /// `username` of the sink's table.
        username: String,
        /// The password: `password_file`, else the sink's credential, else `password`.
        password: Secret,
    },
    /// `Authorization: Bearer` with `bearer_token`.
    Bearer(Secret),
}

#[derive(Debug, Clone)]
/// `[sinks.pushgateway]` (enabled): where and how the metrics snapshot is pushed.
pub struct PushgatewaySinkConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Base path prefix (usually empty).
    pub base_path: String,
    /// `sinks.pushgateway.job`: the `job` of the grouping key.
    pub job: String,
    /// Basic or bearer authentication from the table's keys.
    pub auth: HttpAuth,
    /// `sinks.pushgateway.timeout_ms`: one push must finish within this.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
/// `[sinks.remote_write]` (enabled): Prometheus remote write 1.0 of every spooled snapshot.
pub struct RemoteWriteSinkConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Request path, e.g. `/api/v1/write`.
    pub path: String,
    /// Basic or bearer authentication from the table's keys.
    pub auth: HttpAuth,
    /// `sinks.remote_write.timeout_ms`: one write request must finish within this.
    pub timeout: Duration,
    /// `sinks.remote_write.max_samples_per_request`: a request is split beyond this many samples.
    pub max_samples_per_request: usize,
    /// `sinks.remote_write.backlog_records_per_sec`: backlog replay, snapshots per second.
    pub backlog_records_per_sec: u32,
    /// Live snapshots sent together (1: each at once).
    pub batch_snapshots: usize,
    /// Sorted by name; `site` = `identity.site_plant_id` unless configured otherwise.
    pub external_labels: Vec<(String, String)>,
}

/// Which file to load when none is named: `$CONFIGURATION_DIRECTORY/copilot-edge.toml` if it
/// exists, else none (embedded defaults).
pub fn default_config_path(env: &Environment) -> Option<PathBuf> {
    let p = env
        .configuration_directory
        .as_ref()?
        .join("copilot-edge.toml");
    p.exists().then_some(p)
}

/// Can the agent use `dir` as a directory it writes to? An existing path must be a writable
/// directory; a missing one must be creatable (its nearest existing ancestor a writable
/// directory). Returns what is wrong, for a [`Problem`] under the key that named the path.
pub fn writable_dir_problem(dir: &Path) -> Option<String> {
    fn writable(p: &Path) -> Result<(), std::io::Error> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c` is a valid NUL-terminated path. access(2) also reports EROFS for a
        // read-only mount, which a mode check would miss (and root passes mode checks).
        if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    let mut p = dir;
    loop {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                return writable(p).err().map(|e| {
                    if p == dir {
                        format!("{} is not writable: {e}", dir.display())
                    } else {
                        format!(
                            "{} cannot be created: {} is not writable: {e}",
                            dir.display(),
                            p.display()
                        )
                    }
                })
            }
            Ok(_) if p == dir => {
                return Some(format!("{} is a file, not a directory", dir.display()))
            }
            Ok(_) => {
                return Some(format!(
                    "{} cannot be created: {} is a file",
                    dir.display(),
                    p.display()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Some(format!("{}: {e}", p.display())),
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return None, // a relative path whose first part is missing: created under the cwd
        }
    }
}

/// Loads and validates a config file, or the embedded defaults when `path` is `None`.
pub fn load(path: Option<&Path>, env: &Environment) -> Result<Config, ConfigError> {
    let (text, source) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            p.display().to_string(),
        ),
        None => (
            DEFAULT_CONFIG_TOML.to_string(),
            "embedded defaults".to_string(),
        ),
    };
    let raw = parse(&text, &source)?;
    raw.validate(&source, env)
}

/// Parses TOML text into the raw layer.
pub fn parse(text: &str, source: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: source.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_masked() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }
}
