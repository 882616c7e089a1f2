//! Configuration: TOML on disk (or the embedded defaults) → a validated [`Config`].
//!
//! Loading is two passes, as in rathole/bore: serde reads a [`RawConfig`] that mirrors the TOML
//! tables one to one and rejects unknown keys; [`RawConfig::validate`] then checks every value and
//! collects *all* problems, each with the TOML key it belongs to, so `check-config` can print them
//! in one go. Everything downstream only sees [`Config`], whose fields are typed (`SocketAddr`,
//! `Duration`, `NonZero*`, [`Secret`]).
//!
//! Paths follow systemd when it hands them over: `STATE_DIRECTORY`, `LOGS_DIRECTORY` and
//! `CONFIGURATION_DIRECTORY` take precedence over the relative defaults, and secrets may come from
//! files or `$CREDENTIALS_DIRECTORY/<name>` (`LoadCredential=`) instead of the config text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ids::is_valid_id;
use crate::tls::{self, TlsClient};

/// The commented default configuration, embedded so `print-default-config` and the no-config
/// start agree. A unit test checks it parses to exactly [`RawConfig::default`].
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/default.toml");

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

// ---------------------------------------------------------------------------------------------
// Raw (serde) layer: mirrors the TOML tables.
// ---------------------------------------------------------------------------------------------

/// The TOML document as written. Every table has defaults, so an empty file is valid.
#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub paths: RawPaths,
    pub identity: RawIdentity,
    pub auth: RawAuth,
    pub labels: RawLabels,
    pub engine: RawEngine,
    pub llm: RawLlm,
    pub metrics: RawMetrics,
    pub logging: RawLogging,
    pub spool: RawSpool,
    pub sinks: RawSinks,
}

/// `[server]`
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub max_body_bytes: u64,
    pub max_connections: u64,
    pub max_connections_per_client: u64,
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub metrics_require_auth: bool,
    pub sla_ms: u64,
    pub allowed_hosts: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            max_connections_per_client: 64,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            shutdown_grace_secs: 10,
            metrics_require_auth: false,
            sla_ms: 500,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[paths]`; empty strings mean "the default" (systemd's directory or `./copilot-edge-data/…`).
#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawPaths {
    pub state_dir: String,
    pub log_dir: String,
    /// A folder of SOP Markdown files; empty = the sample knowledge base embedded in the binary.
    pub knowledge_dir: String,
    /// The asset register (`.csv` or `.toml`); empty = the embedded sample when the knowledge
    /// base is the embedded one, else none.
    pub assets: String,
    /// A folder of extra lexicon files (`*.toml`) added to the embedded lexicon; empty = none.
    pub lexicon_dir: String,
}

/// `[identity]`: who this gateway is, for fleet views.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentity {
    pub gateway_id: String,
    pub site_plant_id: String,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            gateway_id: "gateway-local".into(),
            site_plant_id: "plant-local".into(),
        }
    }
}

/// `[auth]`
#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Inline tokens: `[[auth.tokens]] user_id = "...", sha256 = "<hex of the token>"`.
    pub tokens: Vec<RawToken>,
    /// A file with `user_id:sha256hex` lines that `copilot-edge token` manages and the agent
    /// follows (empty: `<state_dir>/tokens`). The `api-tokens` credential is read as well.
    pub tokens_file: String,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Deserialize, PartialEq, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub user_id: String,
    pub sha256: String,
}

/// `[labels]`: bounds on label values that come from requests.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLabels {
    /// Allowed plant ids; requests for other plants get 422. Empty = accept any, but only the
    /// first `max_plants` distinct ids get their own series (the rest count under `_other`).
    pub plant_ids: Vec<String>,
    pub max_plants: u64,
    /// Known equipment ids; empty = the first `max_equipment_per_plant` per plant.
    pub equipment_ids: Vec<String>,
    pub max_equipment_per_plant: u64,
}

impl Default for RawLabels {
    fn default() -> Self {
        RawLabels {
            plant_ids: vec![],
            max_plants: 16,
            equipment_ids: vec![],
            max_equipment_per_plant: 200,
        }
    }
}

/// The default refusal threshold, chosen on the dev split of the labelled questions
/// (`copilot-edge eval tests/fixtures/retrieval_eval.tsv --split dev --sweep`).
pub const DEFAULT_MIN_RELEVANCE: f64 = 0.28;

/// `[engine]`: the local retrieval engine.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawEngine {
    /// Minimum relevance (0..1) for a document to support an answer.
    pub min_relevance: f64,
    /// How many documents may be cited in one answer.
    pub max_documents: u64,
    /// How many steps at most in `recommended_steps`.
    pub max_steps: u64,
    /// How many answers the agent remembers for `/v1/feedback`.
    pub recent_answers: u64,
    /// How long an answer can be rated after it was given.
    pub feedback_window_secs: u64,
}

impl Default for RawEngine {
    fn default() -> Self {
        RawEngine {
            min_relevance: DEFAULT_MIN_RELEVANCE,
            max_documents: 2,
            max_steps: 10,
            recent_answers: 10_000,
            feedback_window_secs: 7 * 24 * 3600,
        }
    }
}

/// `[llm]`: an optional OpenAI-compatible upstream that writes the report.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLlm {
    /// Base URL, e.g. `http://10.0.0.5:8081` (llama.cpp) — `/v1/chat/completions` is appended.
    /// Empty = no upstream; the local engine writes every report.
    pub url: String,
    pub model: String,
    /// `gen_ai_provider_name` of the OpenTelemetry GenAI metrics (`openai` for any
    /// OpenAI-compatible server unless you name it).
    pub provider: String,
    pub api_key: String,
    pub api_key_file: String,
    pub timeout_ms: u64,
    pub max_tokens: u64,
    pub price_input_per_1k_usd: f64,
    pub price_output_per_1k_usd: f64,
    /// Exported as `copilot_edge_llm_budget_usd_per_day` for the TokenBudgetExceeded alert.
    pub budget_usd_per_day: f64,
    /// TLS (https URLs; MQTT with `tls = true`): CA bundle (PEM; empty = built-in Mozilla roots)
    /// and an optional client certificate and key for mutual TLS.
    pub tls_ca_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for RawLlm {
    fn default() -> Self {
        RawLlm {
            url: String::new(),
            model: "local-model".into(),
            provider: "openai".into(),
            api_key: String::new(),
            api_key_file: String::new(),
            timeout_ms: 3000,
            max_tokens: 400,
            price_input_per_1k_usd: 0.0005,
            price_output_per_1k_usd: 0.0015,
            budget_usd_per_day: 0.0,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

/// `[metrics]`
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// The hallucination-rate gauge covers this many most recent answers per plant.
    pub hallucination_window_answers: u64,
    /// The feedback-score gauge averages this many most recent ratings per plant.
    pub feedback_window_ratings: u64,
    /// How often a metrics snapshot is taken for the spool.
    pub snapshot_interval_secs: u64,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            hallucination_window_answers: 100,
            feedback_window_ratings: 50,
            snapshot_interval_secs: 15,
        }
    }
}

/// `[logging]`
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogging {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    pub file: bool,
    pub max_file_bytes: u64,
    pub max_files: u64,
}

impl Default for RawLogging {
    fn default() -> Self {
        RawLogging {
            level: "info".into(),
            file: true,
            max_file_bytes: 10 * 1024 * 1024,
            max_files: 10,
        }
    }
}

/// `[spool]`: the on-disk buffer for telemetry while the uplink is down.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpool {
    /// Empty = `<state_dir>/spool`.
    pub dir: String,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// Never write when the file system has less than this free.
    pub min_free_bytes: u64,
    /// Whether log events (request_completed, warnings, errors) are spooled and shipped.
    pub ship_logs: bool,
}

impl Default for RawSpool {
    fn default() -> Self {
        RawSpool {
            dir: String::new(),
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            min_free_bytes: 64 * 1024 * 1024,
            ship_logs: true,
        }
    }
}

/// `[sinks]`: each sink is off unless its table sets `enabled = true`.
#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSinks {
    pub mqtt: RawMqtt,
    pub pushgateway: RawPushgateway,
    pub remote_write: RawRemoteWrite,
}

/// `[sinks.remote_write]`
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRemoteWrite {
    pub enabled: bool,
    /// e.g. `http://prometheus.central:9090/api/v1/write`
    pub url: String,
    pub username: String,
    pub password: String,
    pub password_file: String,
    pub bearer_token: String,
    pub timeout_ms: u64,
    pub max_samples_per_request: u64,
    pub backlog_records_per_sec: u64,
    /// Added to every series that does not already have the label.
    pub external_labels: BTreeMap<String, String>,
    /// TLS (https URLs; MQTT with `tls = true`): CA bundle (PEM; empty = built-in Mozilla roots)
    /// and an optional client certificate and key for mutual TLS.
    pub tls_ca_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for RawRemoteWrite {
    fn default() -> Self {
        RawRemoteWrite {
            enabled: false,
            url: "http://127.0.0.1:9090/api/v1/write".into(),
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            bearer_token: String::new(),
            timeout_ms: 10_000,
            max_samples_per_request: 5000,
            backlog_records_per_sec: 1000,
            external_labels: BTreeMap::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

/// `[sinks.mqtt]`
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub password_file: String,
    pub topic_prefix: String,
    /// `prometheus` (text with timestamps, Telegraf-ready) or `json`.
    pub format: String,
    /// `none` or `gzip`: compress the metrics and log payloads (Telegraf's MQTT consumer reads
    /// them with `content_encoding = "gzip"`). Not with `sparkplug_b`.
    pub compression: String,
    pub keep_alive_secs: u64,
    pub max_packet_bytes: u64,
    pub max_inflight: u64,
    /// Backlog replay limit, records per second (live data is never held back by it).
    pub backlog_records_per_sec: u64,
    /// Connect with TLS (port 8883 by convention).
    pub tls: bool,
    /// TLS (https URLs; MQTT with `tls = true`): CA bundle (PEM; empty = built-in Mozilla roots)
    /// and an optional client certificate and key for mutual TLS.
    pub tls_ca_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Sparkplug B identities (`format = "sparkplug_b"`).
    pub sparkplug: RawSparkplug,
}

/// `[sinks.mqtt.sparkplug]`
#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSparkplug {
    /// Group id; empty = `identity.site_plant_id`.
    pub group_id: String,
    /// Edge node id; empty = `identity.gateway_id`.
    pub edge_node_id: String,
    /// Primary host application id: when set, nothing is published while its STATE is not
    /// online (store and forward); empty = no primary host.
    pub primary_host_id: String,
    /// MQTT QoS of NBIRTH/NDATA: 0 (the specification) or 1 (opt-in, acknowledged per message).
    pub data_qos: u8,
}

impl Default for RawMqtt {
    fn default() -> Self {
        RawMqtt {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            topic_prefix: "copilot".into(),
            format: "prometheus".into(),
            compression: "none".into(),
            keep_alive_secs: 30,
            max_packet_bytes: 4 * 1024 * 1024,
            max_inflight: 64,
            backlog_records_per_sec: 5000,
            tls: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            sparkplug: RawSparkplug::default(),
        }
    }
}

/// `[sinks.pushgateway]`
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawPushgateway {
    pub enabled: bool,
    /// e.g. `http://127.0.0.1:9091`
    pub url: String,
    pub job: String,
    pub username: String,
    pub password: String,
    pub password_file: String,
    pub bearer_token: String,
    pub timeout_ms: u64,
    /// TLS (https URLs; MQTT with `tls = true`): CA bundle (PEM; empty = built-in Mozilla roots)
    /// and an optional client certificate and key for mutual TLS.
    pub tls_ca_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for RawPushgateway {
    fn default() -> Self {
        RawPushgateway {
            enabled: false,
            url: "http://127.0.0.1:9091".into(),
            job: "copilot-edge".into(),
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            bearer_token: String::new(),
            timeout_ms: 5000,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validated layer.
// ---------------------------------------------------------------------------------------------

/// The validated configuration every component is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where this configuration came from (a path or `embedded defaults`).
    pub source: String,
    pub server: ServerConfig,
    pub paths: PathsConfig,
    pub identity: IdentityConfig,
    pub auth: AuthConfig,
    pub labels: LabelsConfig,
    pub engine: EngineConfig,
    pub llm: Option<LlmConfig>,
    pub llm_prices: LlmPrices,
    pub metrics: MetricsConfig,
    pub logging: LoggingConfig,
    pub spool: SpoolConfig,
    pub mqtt: Option<MqttSinkConfig>,
    pub pushgateway: Option<PushgatewaySinkConfig>,
    pub remote_write: Option<RemoteWriteSinkConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_connections: NonZeroUsize,
    /// 0 = no per-address bound.
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub metrics_require_auth: bool,
    pub sla: Duration,
    /// Host names requests may be addressed to besides IP literals, localhost and this
    /// machine's name (`*.example.com` for a domain, `*` for any: no DNS-rebinding check).
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PathsConfig {
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub knowledge_dir: Option<PathBuf>,
    pub assets: Option<PathBuf>,
    pub lexicon_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub gateway_id: String,
    pub site_plant_id: String,
}

pub use crate::auth::TokenEntry;

#[derive(Debug, Clone)]
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
pub struct LabelsConfig {
    pub plant_ids: BTreeSet<String>,
    pub max_plants: usize,
    pub equipment_ids: BTreeSet<String>,
    pub max_equipment_per_plant: usize,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub min_relevance: f64,
    pub max_documents: NonZeroUsize,
    pub max_steps: NonZeroUsize,
    pub recent_answers: NonZeroUsize,
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
    pub tls: Option<TlsClient>,
}

/// The upstream LLM (only when `[llm] url` is set).
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    pub model: String,
    /// `gen_ai_provider_name` label value.
    pub provider: String,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct LlmPrices {
    pub input_per_1k_usd: f64,
    pub output_per_1k_usd: f64,
    pub budget_usd_per_day: f64,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub hallucination_window: NonZeroUsize,
    pub feedback_window: NonZeroUsize,
    pub snapshot_interval: Duration,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub file: bool,
    pub max_file_bytes: u64,
    pub max_files: NonZeroUsize,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub min_free_bytes: u64,
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
    pub group_id: String,
    pub edge_node_id: String,
    pub primary_host_id: Option<String>,
    /// NBIRTH/NDATA at QoS 1 instead of the specification's QoS 0.
    pub data_qos1: bool,
}

#[derive(Debug, Clone)]
pub struct MqttSinkConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub topic_prefix: String,
    pub format: MqttFormat,
    /// gzip the metrics and log payloads (`compression = "gzip"`).
    pub gzip: bool,
    /// Set when `format = "sparkplug_b"`.
    pub sparkplug: Option<SparkplugConfig>,
    pub keep_alive: Duration,
    pub max_packet_bytes: usize,
    pub max_inflight: u16,
    pub backlog_records_per_sec: u32,
    /// TLS settings when `tls = true`.
    pub tls: Option<TlsClient>,
}

/// Pushgateway authentication.
#[derive(Debug, Clone)]
pub enum HttpAuth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

#[derive(Debug, Clone)]
pub struct PushgatewaySinkConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Base path prefix (usually empty).
    pub base_path: String,
    pub job: String,
    pub auth: HttpAuth,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RemoteWriteSinkConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Request path, e.g. `/api/v1/write`.
    pub path: String,
    pub auth: HttpAuth,
    pub timeout: Duration,
    pub max_samples_per_request: usize,
    pub backlog_records_per_sec: u32,
    /// Sorted by name; `site` = `identity.site_plant_id` unless configured otherwise.
    pub external_labels: Vec<(String, String)>,
}

/// Where the agent looks for things outside the config file.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub state_directory: Option<PathBuf>,
    pub logs_directory: Option<PathBuf>,
    pub configuration_directory: Option<PathBuf>,
    pub credentials_directory: Option<PathBuf>,
}

impl Environment {
    /// Reads the systemd directory variables (first entry of each colon-separated list).
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .map(|v| {
                    v.to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        Environment {
            state_directory: var("STATE_DIRECTORY"),
            logs_directory: var("LOGS_DIRECTORY"),
            configuration_directory: var("CONFIGURATION_DIRECTORY"),
            credentials_directory: var("CREDENTIALS_DIRECTORY"),
        }
    }

    /// A credential file's content, if systemd handed one over.
    fn credential(&self, name: &str) -> Option<String> {
        let dir = self.credentials_directory.as_ref()?;
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    }
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

/// Splits `http(s)://host:port/path` into (https?, authority, host, path without trailing `/`).
fn split_http_url(url: &str) -> Result<(bool, String, String, String), String> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return Err("must start with http:// or https://".to_string()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#']) {
        return Err("has no usable host (user info, query and fragment are not supported)".into());
    }
    let (host, authority) = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') && port.parse::<u16>().is_err() => {
            return Err(format!("bad port `{port}`"))
        }
        Some((h, _)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            authority.to_string(),
        ),
        None => (
            authority.to_string(),
            format!("{authority}:{}", if https { 443 } else { 80 }),
        ),
    };
    Ok((https, authority, host, path.to_string()))
}

/// The raw TLS keys every uplink table has.
fn tls_files<'a>(ca: &'a str, cert: &'a str, key: &'a str) -> (&'a str, &'a str, &'a str) {
    (ca, cert, key)
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    /// TLS client settings from `<key>.tls_ca_file` / `tls_cert_file` / `tls_key_file`.
    fn tls(&mut self, key: &str, (ca, cert, pkey): (&str, &str, &str)) -> Option<TlsClient> {
        let ca = (!ca.is_empty()).then(|| Path::new(ca));
        let pair = match (cert.is_empty(), pkey.is_empty()) {
            (true, true) => None,
            (false, false) => Some((Path::new(cert), Path::new(pkey))),
            _ => {
                self.fail(
                    &format!("{key}.tls_cert_file"),
                    "tls_cert_file and tls_key_file go together",
                );
                None
            }
        };
        match tls::client_config(ca, pair) {
            Ok(t) => Some(t),
            Err(e) => {
                self.fail(&format!("{key}.tls_ca_file"), e.to_string());
                None
            }
        }
    }

    /// An endpoint from `<key>.url` (TLS when it is https).
    fn endpoint(
        &mut self,
        key: &str,
        url: &str,
        files: (&str, &str, &str),
    ) -> Option<(Endpoint, String)> {
        match split_http_url(url) {
            Ok((https, authority, host, path)) => {
                let tls = if https {
                    Some(self.tls(key, files)?)
                } else {
                    None
                };
                Some((
                    Endpoint {
                        authority,
                        host,
                        tls,
                    },
                    path,
                ))
            }
            Err(msg) => {
                self.fail(&format!("{key}.url"), msg);
                None
            }
        }
    }

    /// HTTP auth for a sink: username + password (Basic) or a bearer token, not both.
    fn http_auth(
        &mut self,
        key: &str,
        username: &str,
        password: (&str, &str, Option<String>),
        bearer: &str,
    ) -> HttpAuth {
        let password = self.secret(
            &format!("{key}.password"),
            password.0,
            password.1,
            password.2,
        );
        match (username.is_empty(), password, bearer.is_empty()) {
            (true, None, true) => HttpAuth::None,
            (false, Some(p), true) => HttpAuth::Basic {
                username: username.to_string(),
                password: p,
            },
            (true, None, false) => HttpAuth::Bearer(Secret::new(bearer)),
            _ => {
                self.fail(
                    key,
                    "set either username + password (Basic) or bearer_token, not both",
                );
                HttpAuth::None
            }
        }
    }

    fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
    fn range(&mut self, key: &str, v: u64, lo: u64, hi: u64) -> u64 {
        if v < lo || v > hi {
            self.fail(key, format!("must be between {lo} and {hi}, got {v}"));
        }
        v.clamp(lo, hi)
    }
    fn nonzero(&mut self, key: &str, v: u64, hi: u64) -> NonZeroUsize {
        let v = self.range(key, v, 1, hi);
        NonZeroUsize::new(v as usize).unwrap_or(NonZeroUsize::MIN)
    }
    /// A secret from inline text, a file, or a systemd credential (in that order of precedence:
    /// file, credential, inline).
    fn secret(
        &mut self,
        key: &str,
        inline: &str,
        file: &str,
        credential: Option<String>,
    ) -> Option<Secret> {
        if !file.is_empty() {
            match std::fs::read_to_string(file) {
                Ok(s) => return Some(Secret::new(s.trim())),
                Err(e) => {
                    self.fail(&format!("{key}_file"), format!("cannot read {file}: {e}"));
                    return None;
                }
            }
        }
        if let Some(c) = credential {
            return Some(Secret::new(c));
        }
        (!inline.is_empty()).then(|| Secret::new(inline))
    }
}

impl RawConfig {
    /// Checks every value; returns the typed config or every problem at once.
    pub fn validate(self, source: &str, env: &Environment) -> Result<Config, ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        let s = &self.server;
        let listen = match s.listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                c.fail(
                    "server.listen",
                    format!("`{}` is not an address like 127.0.0.1:8080", s.listen),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };
        let server = ServerConfig {
            listen,
            max_body_bytes: c.range(
                "server.max_body_bytes",
                s.max_body_bytes,
                1024,
                16 * 1024 * 1024,
            ) as usize,
            max_connections: c.nonzero("server.max_connections", s.max_connections, 1_000_000),
            max_connections_per_client: c.range(
                "server.max_connections_per_client",
                s.max_connections_per_client,
                0,
                1_000_000,
            ) as usize,
            header_read_timeout: Duration::from_secs(c.range(
                "server.header_read_timeout_secs",
                s.header_read_timeout_secs,
                1,
                300,
            )),
            request_timeout: Duration::from_secs(c.range(
                "server.request_timeout_secs",
                s.request_timeout_secs,
                1,
                600,
            )),
            shutdown_grace: Duration::from_secs(c.range(
                "server.shutdown_grace_secs",
                s.shutdown_grace_secs,
                0,
                300,
            )),
            metrics_require_auth: s.metrics_require_auth,
            sla: Duration::from_millis(c.range("server.sla_ms", s.sla_ms, 1, 600_000)),
            allowed_hosts: s
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        };
        for (i, h) in s.allowed_hosts.iter().enumerate() {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let ok = h == "*"
                || (!name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            if !ok {
                c.fail(
                    &format!("server.allowed_hosts[{i}]"),
                    format!(
                        "`{h}` is not a host name (letters, digits, `-`, `.`; `*.domain`; or `*`)"
                    ),
                );
            }
        }

        let pick = |configured: &str, from_env: &Option<PathBuf>, fallback: &str| -> PathBuf {
            if !configured.is_empty() {
                PathBuf::from(configured)
            } else if let Some(p) = from_env {
                p.clone()
            } else {
                PathBuf::from(fallback)
            }
        };
        let state_dir = pick(
            &self.paths.state_dir,
            &env.state_directory,
            "copilot-edge-data/state",
        );
        let log_dir = pick(
            &self.paths.log_dir,
            &env.logs_directory,
            "copilot-edge-data/logs",
        );
        let knowledge_dir = (!self.paths.knowledge_dir.is_empty())
            .then(|| PathBuf::from(&self.paths.knowledge_dir));
        if let Some(k) = &knowledge_dir {
            if !k.is_dir() {
                c.fail(
                    "paths.knowledge_dir",
                    format!("{} is not a directory", k.display()),
                );
            }
        }
        let lexicon_dir =
            (!self.paths.lexicon_dir.is_empty()).then(|| PathBuf::from(&self.paths.lexicon_dir));
        if let Some(k) = &lexicon_dir {
            if !k.is_dir() {
                c.fail(
                    "paths.lexicon_dir",
                    format!("{} is not a directory", k.display()),
                );
            }
        }
        let assets = (!self.paths.assets.is_empty()).then(|| PathBuf::from(&self.paths.assets));
        if let Some(a) = &assets {
            if !a.is_file() {
                c.fail("paths.assets", format!("{} is not a file", a.display()));
            } else if !a.extension().is_some_and(|e| e == "csv" || e == "toml") {
                c.fail(
                    "paths.assets",
                    format!("{} must be a .csv or .toml file", a.display()),
                );
            }
        }

        let id = &self.identity;
        for (key, v) in [
            ("identity.gateway_id", &id.gateway_id),
            ("identity.site_plant_id", &id.site_plant_id),
        ] {
            if !is_valid_id(v) {
                c.fail(key, "must be 1-64 characters of [A-Za-z0-9-_.:]");
            }
        }

        let mut tokens = Vec::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if !crate::auth::is_valid_token_name(&t.user_id) {
                c.fail(
                    &format!("auth.tokens[{i}].user_id"),
                    crate::auth::TOKEN_NAME_RULE,
                );
            }
            match crate::auth::parse_sha256_hex(&t.sha256) {
                Some(h) => tokens.push(TokenEntry {
                    user_id: t.user_id.clone(),
                    sha256: h,
                }),
                None => c.fail(
                    &format!("auth.tokens[{i}].sha256"),
                    "must be the 64 hex digits of the token's SHA-256",
                ),
            }
        }
        if let Some(text) = env.credential("api-tokens") {
            match crate::auth::parse_token_lines(&text) {
                Ok(mut t) => tokens.append(&mut t),
                Err(e) => c.fail("credential api-tokens", e),
            }
        }
        let fixed_tokens = tokens.clone();
        let tokens_file = if self.auth.tokens_file.is_empty() {
            state_dir.join(crate::auth::TOKENS_FILE)
        } else {
            PathBuf::from(&self.auth.tokens_file)
        };
        let explicit = !self.auth.tokens_file.is_empty();
        let tokens_file_configured_but_missing = explicit && !tokens_file.exists();
        // Missing is empty: `copilot-edge token add` creates it, and the agent follows it.
        match crate::auth::read_tokens_file(&tokens_file, false) {
            Ok(mut t) => tokens.append(&mut t),
            Err(e) => c.fail("auth.tokens_file", e),
        }

        let l = &self.labels;
        for (key, ids) in [
            ("labels.plant_ids", &l.plant_ids),
            ("labels.equipment_ids", &l.equipment_ids),
        ] {
            for (i, p) in ids.iter().enumerate() {
                if !is_valid_id(p) {
                    c.fail(
                        &format!("{key}[{i}]"),
                        format!("`{p}` is not a valid id (1-64 of [A-Za-z0-9-_.:])"),
                    );
                }
            }
        }
        let labels = LabelsConfig {
            plant_ids: l.plant_ids.iter().cloned().collect(),
            max_plants: c.range("labels.max_plants", l.max_plants, 1, 10_000) as usize,
            equipment_ids: l.equipment_ids.iter().cloned().collect(),
            max_equipment_per_plant: c.range(
                "labels.max_equipment_per_plant",
                l.max_equipment_per_plant,
                1,
                100_000,
            ) as usize,
        };

        let e = &self.engine;
        if !(0.0..=1.0).contains(&e.min_relevance) {
            c.fail(
                "engine.min_relevance",
                format!("must be between 0 and 1, got {}", e.min_relevance),
            );
        }
        let engine = EngineConfig {
            min_relevance: e.min_relevance.clamp(0.0, 1.0),
            max_documents: c.nonzero("engine.max_documents", e.max_documents, 10),
            max_steps: c.nonzero("engine.max_steps", e.max_steps, 50),
            recent_answers: c.nonzero("engine.recent_answers", e.recent_answers, 1_000_000),
            feedback_window: Duration::from_secs(c.range(
                "engine.feedback_window_secs",
                e.feedback_window_secs,
                1,
                90 * 24 * 3600,
            )),
        };

        let lm = &self.llm;
        for (key, v) in [
            ("llm.price_input_per_1k_usd", lm.price_input_per_1k_usd),
            ("llm.price_output_per_1k_usd", lm.price_output_per_1k_usd),
            ("llm.budget_usd_per_day", lm.budget_usd_per_day),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                c.fail(key, "must be a non-negative number");
            }
        }
        let llm_prices = LlmPrices {
            input_per_1k_usd: lm.price_input_per_1k_usd.max(0.0),
            output_per_1k_usd: lm.price_output_per_1k_usd.max(0.0),
            budget_usd_per_day: lm.budget_usd_per_day.max(0.0),
        };
        let timeout = Duration::from_millis(c.range("llm.timeout_ms", lm.timeout_ms, 10, 600_000));
        let max_tokens = c.range("llm.max_tokens", lm.max_tokens, 1, 32_000) as u32;
        let api_key = c.secret(
            "llm.api_key",
            &lm.api_key,
            &lm.api_key_file,
            env.credential("llm-api-key"),
        );
        if !is_valid_id(&lm.provider) {
            c.fail("llm.provider", "must be 1-64 characters of [A-Za-z0-9-_.:]");
        }
        if lm.model.is_empty() || lm.model.len() > 128 || lm.model.chars().any(char::is_control) {
            c.fail("llm.model", "must be 1-128 printable characters");
        }
        let llm = if lm.url.is_empty() {
            None
        } else {
            c.endpoint(
                "llm",
                &lm.url,
                tls_files(&lm.tls_ca_file, &lm.tls_cert_file, &lm.tls_key_file),
            )
            .map(|(endpoint, base)| LlmConfig {
                endpoint,
                path: format!("{base}/v1/chat/completions"),
                model: lm.model.clone(),
                provider: lm.provider.clone(),
                api_key,
                timeout,
                max_tokens,
            })
        };

        let m = &self.metrics;
        let metrics = MetricsConfig {
            hallucination_window: c.nonzero(
                "metrics.hallucination_window_answers",
                m.hallucination_window_answers,
                100_000,
            ),
            feedback_window: c.nonzero(
                "metrics.feedback_window_ratings",
                m.feedback_window_ratings,
                100_000,
            ),
            snapshot_interval: Duration::from_secs(c.range(
                "metrics.snapshot_interval_secs",
                m.snapshot_interval_secs,
                1,
                3600,
            )),
        };

        let lg = &self.logging;
        let level = match lg.level.to_ascii_lowercase().as_str() {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            other => {
                c.fail(
                    "logging.level",
                    format!("`{other}` is not one of error, warn, info, debug, trace"),
                );
                LogLevel::Info
            }
        };
        let logging = LoggingConfig {
            level,
            file: lg.file,
            max_file_bytes: c.range("logging.max_file_bytes", lg.max_file_bytes, 4096, 1 << 40),
            max_files: c.nonzero("logging.max_files", lg.max_files, 10_000),
        };

        let sp = &self.spool;
        let spool = SpoolConfig {
            dir: if sp.dir.is_empty() {
                state_dir.join("spool")
            } else {
                PathBuf::from(&sp.dir)
            },
            max_bytes: c.range("spool.max_bytes", sp.max_bytes, 64 * 1024, 1 << 44),
            segment_bytes: c.range("spool.segment_bytes", sp.segment_bytes, 4096, 1 << 32),
            min_free_bytes: sp.min_free_bytes,
            ship_logs: sp.ship_logs,
        };
        if spool.segment_bytes > spool.max_bytes / 2 {
            c.fail(
                "spool.segment_bytes",
                "must be at most half of spool.max_bytes (so drop-oldest can free space)",
            );
        }

        let mq = &self.sinks.mqtt;
        let mqtt = if mq.enabled {
            if mq.host.is_empty() {
                c.fail("sinks.mqtt.host", "must not be empty");
            }
            if mq.port == 0 {
                c.fail("sinks.mqtt.port", "must not be 0");
            }
            if mq.topic_prefix.is_empty() || mq.topic_prefix.contains(['#', '+']) {
                c.fail(
                    "sinks.mqtt.topic_prefix",
                    "must be non-empty and contain no MQTT wildcards",
                );
            }
            let format = match mq.format.as_str() {
                "prometheus" => MqttFormat::Prometheus,
                "json" => MqttFormat::Json,
                "sparkplug_b" => MqttFormat::SparkplugB,
                other => {
                    c.fail(
                        "sinks.mqtt.format",
                        format!("`{other}` is not one of prometheus, json, sparkplug_b"),
                    );
                    MqttFormat::Prometheus
                }
            };
            let gzip = match mq.compression.as_str() {
                "none" => false,
                "gzip" if format == MqttFormat::SparkplugB => {
                    c.fail(
                        "sinks.mqtt.compression",
                        "Sparkplug B payloads are protobuf for Sparkplug consumers: compression \
                         applies to the prometheus and json formats",
                    );
                    false
                }
                "gzip" => true,
                other => {
                    c.fail(
                        "sinks.mqtt.compression",
                        format!("`{other}` is not one of none, gzip"),
                    );
                    false
                }
            };
            let sp = &mq.sparkplug;
            for (key, v) in [
                ("sinks.mqtt.sparkplug.group_id", &sp.group_id),
                ("sinks.mqtt.sparkplug.edge_node_id", &sp.edge_node_id),
                ("sinks.mqtt.sparkplug.primary_host_id", &sp.primary_host_id),
            ] {
                if !v.is_empty() && !is_valid_id(v) {
                    c.fail(key, "must be 1-64 characters of [A-Za-z0-9-_.:]");
                }
            }
            let or = |v: &str, d: &str| {
                if v.is_empty() {
                    d.to_string()
                } else {
                    v.to_string()
                }
            };
            let sparkplug = (format == MqttFormat::SparkplugB).then(|| SparkplugConfig {
                group_id: or(&sp.group_id, &id.site_plant_id),
                edge_node_id: or(&sp.edge_node_id, &id.gateway_id),
                primary_host_id: (!sp.primary_host_id.is_empty())
                    .then(|| sp.primary_host_id.clone()),
                data_qos1: sp.data_qos == 1,
            });
            if sp.data_qos > 1 {
                c.fail("sinks.mqtt.sparkplug.data_qos", "must be 0 or 1");
            }
            let password = c.secret(
                "sinks.mqtt.password",
                &mq.password,
                &mq.password_file,
                env.credential("mqtt-password"),
            );
            let tls = if mq.tls {
                c.tls(
                    "sinks.mqtt",
                    tls_files(&mq.tls_ca_file, &mq.tls_cert_file, &mq.tls_key_file),
                )
            } else {
                None
            };
            Some(MqttSinkConfig {
                tls,
                host: mq.host.clone(),
                port: mq.port,
                client_id: if mq.client_id.is_empty() {
                    format!("copilot-edge-{}", id.gateway_id)
                } else {
                    mq.client_id.clone()
                },
                username: (!mq.username.is_empty()).then(|| mq.username.clone()),
                password,
                topic_prefix: mq.topic_prefix.trim_end_matches('/').to_string(),
                format,
                gzip,
                sparkplug,
                keep_alive: Duration::from_secs(c.range(
                    "sinks.mqtt.keep_alive_secs",
                    mq.keep_alive_secs,
                    5,
                    3600,
                )),
                max_packet_bytes: c.range(
                    "sinks.mqtt.max_packet_bytes",
                    mq.max_packet_bytes,
                    64 * 1024,
                    256 * 1024 * 1024,
                ) as usize,
                max_inflight: c.range("sinks.mqtt.max_inflight", mq.max_inflight, 1, 65_535) as u16,
                backlog_records_per_sec: c.range(
                    "sinks.mqtt.backlog_records_per_sec",
                    mq.backlog_records_per_sec,
                    1,
                    1_000_000,
                ) as u32,
            })
        } else {
            None
        };

        let pg = &self.sinks.pushgateway;
        let pushgateway = if pg.enabled {
            if !is_valid_id(&pg.job) {
                c.fail(
                    "sinks.pushgateway.job",
                    "must be 1-64 characters of [A-Za-z0-9-_.:]",
                );
            }
            let auth = c.http_auth(
                "sinks.pushgateway",
                &pg.username,
                (
                    &pg.password,
                    &pg.password_file,
                    env.credential("pushgateway-password"),
                ),
                &pg.bearer_token,
            );
            let timeout = Duration::from_millis(c.range(
                "sinks.pushgateway.timeout_ms",
                pg.timeout_ms,
                10,
                600_000,
            ));
            c.endpoint(
                "sinks.pushgateway",
                &pg.url,
                tls_files(&pg.tls_ca_file, &pg.tls_cert_file, &pg.tls_key_file),
            )
            .map(|(endpoint, base_path)| PushgatewaySinkConfig {
                endpoint,
                base_path,
                job: pg.job.clone(),
                auth,
                timeout,
            })
        } else {
            None
        };

        let rw = &self.sinks.remote_write;
        let remote_write = if rw.enabled {
            let auth = c.http_auth(
                "sinks.remote_write",
                &rw.username,
                (
                    &rw.password,
                    &rw.password_file,
                    env.credential("remote-write-password"),
                ),
                &rw.bearer_token,
            );
            let timeout = Duration::from_millis(c.range(
                "sinks.remote_write.timeout_ms",
                rw.timeout_ms,
                10,
                600_000,
            ));
            let max_samples = c.range(
                "sinks.remote_write.max_samples_per_request",
                rw.max_samples_per_request,
                100,
                1_000_000,
            ) as usize;
            let rate = c.range(
                "sinks.remote_write.backlog_records_per_sec",
                rw.backlog_records_per_sec,
                1,
                1_000_000,
            ) as u32;
            let mut external: BTreeMap<String, String> =
                BTreeMap::from([("site".to_string(), id.site_plant_id.clone())]);
            for (k, v) in &rw.external_labels {
                let valid_name = k
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !k.starts_with("__");
                if !valid_name {
                    c.fail(
                        &format!("sinks.remote_write.external_labels.{k}"),
                        "is not a valid Prometheus label name",
                    );
                }
                external.insert(k.clone(), v.clone());
            }
            c.endpoint(
                "sinks.remote_write",
                &rw.url,
                tls_files(&rw.tls_ca_file, &rw.tls_cert_file, &rw.tls_key_file),
            )
            .map(|(endpoint, path)| RemoteWriteSinkConfig {
                endpoint,
                path: if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                },
                auth,
                timeout,
                max_samples_per_request: max_samples,
                backlog_records_per_sec: rate,
                external_labels: external.into_iter().collect(),
            })
        } else {
            None
        };

        if !c.problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: source.to_string(),
                problems: c.problems,
            });
        }
        Ok(Config {
            source: source.to_string(),
            server,
            paths: PathsConfig {
                state_dir,
                log_dir,
                knowledge_dir,
                assets,
                lexicon_dir,
            },
            identity: IdentityConfig {
                gateway_id: id.gateway_id.clone(),
                site_plant_id: id.site_plant_id.clone(),
            },
            auth: AuthConfig {
                tokens,
                fixed_tokens,
                tokens_file,
                tokens_file_configured_but_missing,
            },
            labels,
            engine,
            llm,
            llm_prices,
            metrics,
            logging,
            spool,
            mqtt,
            pushgateway,
            remote_write,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<Config, ConfigError> {
        parse(text, "test")?.validate("test", &Environment::default())
    }

    #[test]
    fn embedded_default_matches_serde_defaults() {
        let raw = parse(DEFAULT_CONFIG_TOML, "embedded").expect("default parses");
        assert_eq!(raw, RawConfig::default());
        validate(DEFAULT_CONFIG_TOML).expect("default validates");
    }

    #[test]
    fn sparkplug_ids_default_to_the_identity() {
        let c = validate("[identity]\ngateway_id = \"gw-9\"\nsite_plant_id = \"plant-3\"\n[sinks.mqtt]\nenabled = true\nformat = \"sparkplug_b\"\n").unwrap();
        let sp = c.mqtt.unwrap().sparkplug.unwrap();
        assert_eq!(
            (sp.group_id.as_str(), sp.edge_node_id.as_str()),
            ("plant-3", "gw-9")
        );
        assert_eq!(sp.primary_host_id, None);
        let c = validate("[sinks.mqtt]\nenabled = true\nformat = \"sparkplug_b\"\n[sinks.mqtt.sparkplug]\ngroup_id = \"g\"\nprimary_host_id = \"scada\"\n").unwrap();
        let sp = c.mqtt.unwrap().sparkplug.unwrap();
        assert_eq!(
            (sp.group_id.as_str(), sp.primary_host_id.as_deref()),
            ("g", Some("scada"))
        );
        let e = validate("[sinks.mqtt]\nenabled = true\nformat = \"sparkplug_b\"\n[sinks.mqtt.sparkplug]\ngroup_id = \"a/b\"\n").unwrap_err();
        assert!(
            e.to_string().contains("sinks.mqtt.sparkplug.group_id"),
            "{e}"
        );
        assert!(validate("[sinks.mqtt]\nenabled = true\n")
            .unwrap()
            .mqtt
            .unwrap()
            .sparkplug
            .is_none());
    }

    #[test]
    fn mqtt_compression() {
        let mq = |extra: &str| validate(&format!("[sinks.mqtt]\nenabled = true\n{extra}"));
        assert!(!mq("").unwrap().mqtt.unwrap().gzip, "off by default");
        assert!(mq("compression = \"gzip\"").unwrap().mqtt.unwrap().gzip);
        assert!(
            mq("compression = \"gzip\"\nformat = \"json\"")
                .unwrap()
                .mqtt
                .unwrap()
                .gzip
        );
        let e = mq("compression = \"zstd\"").unwrap_err().to_string();
        assert!(
            e.contains("sinks.mqtt.compression") && e.contains("none, gzip"),
            "{e}"
        );
        let e = mq("compression = \"gzip\"\nformat = \"sparkplug_b\"").unwrap_err();
        assert!(
            e.to_string().contains("Sparkplug B payloads are protobuf"),
            "{e}"
        );
    }

    #[test]
    fn empty_file_is_the_default() {
        let c = validate("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert!(c.llm.is_none());
        assert_eq!(c.paths.state_dir, PathBuf::from("copilot-edge-data/state"));
    }

    #[test]
    fn problems_name_their_keys() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\nmax_body_bytes = 1", "server.max_body_bytes"),
            ("[engine]\nmin_relevance = 2.0", "engine.min_relevance"),
            ("[logging]\nlevel = \"loud\"", "logging.level"),
            ("[llm]\nurl = \"ftp://x\"", "llm.url"),
            (
                "[[auth.tokens]]\nuser_id = \"a\"\nsha256 = \"zz\"",
                "auth.tokens[0].sha256",
            ),
            (
                "[identity]\ngateway_id = \"has space\"",
                "identity.gateway_id",
            ),
            (
                "[sinks.mqtt]\nenabled = true\nformat = \"xml\"",
                "sinks.mqtt.format",
            ),
            (
                "[sinks.pushgateway]\nenabled = true\nurl = \"ftp://x:1\"",
                "sinks.pushgateway.url",
            ),
        ];
        for (text, key) in cases {
            match validate(text) {
                Err(ConfigError::Invalid { problems, .. }) => {
                    assert!(
                        problems.iter().any(|p| p.key == *key),
                        "{text}: {problems:?}"
                    )
                }
                other => panic!("{text}: expected invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn all_problems_reported_at_once() {
        let err =
            validate("[server]\nlisten = \"x\"\nsla_ms = 0\n[logging]\nlevel = \"y\"").unwrap_err();
        match err {
            ConfigError::Invalid { problems, .. } => assert_eq!(problems.len(), 3, "{problems:?}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(matches!(
            validate("[server]\nlisen = \"x\""),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn systemd_directories_are_used() {
        let env = Environment {
            state_directory: Some("/var/lib/copilot-edge".into()),
            logs_directory: Some("/var/log/copilot-edge".into()),
            ..Default::default()
        };
        let c = parse("", "t").unwrap().validate("t", &env).unwrap();
        assert_eq!(c.paths.state_dir, PathBuf::from("/var/lib/copilot-edge"));
        assert_eq!(c.spool.dir, PathBuf::from("/var/lib/copilot-edge/spool"));
        assert_eq!(c.paths.log_dir, PathBuf::from("/var/log/copilot-edge"));
    }

    #[test]
    fn secret_debug_is_masked() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }

    #[test]
    fn url_split() {
        let cases: &[(&str, Option<(bool, &str, &str, &str)>)] = &[
            (
                "http://10.0.0.5:8081",
                Some((false, "10.0.0.5:8081", "10.0.0.5", "")),
            ),
            ("http://llm/api/", Some((false, "llm:80", "llm", "/api"))),
            (
                "https://mimir.example/api/v1/push",
                Some((true, "mimir.example:443", "mimir.example", "/api/v1/push")),
            ),
            (
                "https://[::1]:9443/x",
                Some((true, "[::1]:9443", "::1", "/x")),
            ),
            ("ftp://x", None),
            ("http://user@x", None),
            ("http://x:notaport/", None),
            ("http://", None),
        ];
        for (url, want) in cases {
            let got = split_http_url(url).ok();
            let got = got
                .as_ref()
                .map(|(t, a, h, p)| (*t, a.as_str(), h.as_str(), p.as_str()));
            assert_eq!(got, *want, "{url}");
        }
    }

    #[test]
    fn tls_files_are_checked() {
        let text = "[sinks.pushgateway]\nenabled = true\nurl = \"https://x:1\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n[sinks.mqtt]\nenabled = true\ntls = true\ntls_cert_file = \"/c.pem\"";
        match validate(text) {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert!(
                    problems
                        .iter()
                        .any(|p| p.key == "sinks.pushgateway.tls_ca_file"),
                    "{problems:?}"
                );
                assert!(
                    problems.iter().any(|p| p.key == "sinks.mqtt.tls_cert_file"),
                    "{problems:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            validate("[sinks.pushgateway]\nenabled = true\nurl = \"https://x:1\"").is_ok(),
            "built-in roots"
        );
    }
}
