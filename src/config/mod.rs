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
    RawAuth, RawConfig, RawEngine, RawIdentity, RawLabels, RawLlm, RawLogging, RawMetrics, RawMqtt,
    RawPaths, RawPushgateway, RawRemoteWrite, RawServer, RawSinks, RawSparkplug, RawSpool,
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
