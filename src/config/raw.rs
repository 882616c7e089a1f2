//! The raw (serde) layer: one struct per TOML table, field for field, each with
//! `deny_unknown_fields` so a misspelt key is an error rather than a silently ignored setting,
//! and each with its defaults, so an empty file (or a missing table or key) is valid.
//!
//! Nothing here checks a value: [`super::validate`] turns a [`RawConfig`] into a
//! [`super::Config`]. The embedded `config/default.toml` must parse to exactly
//! [`RawConfig::default`] (a test below checks it), so the printed default config and these
//! defaults never disagree.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The TOML document as written. Every table has defaults, so an empty file is valid.
#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[server]`: the HTTP listener.
    pub server: RawServer,
    /// `[paths]`: directories and knowledge files.
    pub paths: RawPaths,
    /// `[identity]`: gateway and plant ids.
    pub identity: RawIdentity,
    /// `[auth]`: API tokens.
    pub auth: RawAuth,
    /// `[labels]`: bounds on label values from requests.
    pub labels: RawLabels,
    /// `[engine]`: the local retrieval engine.
    pub engine: RawEngine,
    /// `[llm]`: the optional upstream LLM and its prices.
    pub llm: RawLlm,
    /// `[metrics]`: rolling windows and the snapshot interval.
    pub metrics: RawMetrics,
    /// `[logging]`: level and log files.
    pub logging: RawLogging,
    /// `[spool]`: the on-disk buffer.
    pub spool: RawSpool,
    /// `[kb]`: knowledge bundles from a central source.
    pub kb: RawKb,
    /// `[sinks]`: the uplinks, each off unless enabled.
    pub sinks: RawSinks,
}

/// `[server]`
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Socket address the API binds, e.g. `0.0.0.0:8080` for the plant LAN.
    pub listen: String,
    /// Requests with a larger body get 413.
    pub max_body_bytes: u64,
    /// Connections beyond this wait in the kernel's accept queue.
    pub max_connections: u64,
    /// Open connections one client address may hold (the next gets 429); 0 = no bound.
    pub max_connections_per_client: u64,
    /// A client must send its request headers within this many seconds.
    pub header_read_timeout_secs: u64,
    /// A request (an upstream LLM call included) must finish within this many seconds.
    pub request_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT; 0 = drop them at once.
    pub shutdown_grace_secs: u64,
    /// Require a bearer token on `GET /metrics` too.
    pub metrics_require_auth: bool,
    /// Latency SLA in milliseconds: slower requests log `high_latency_detected`.
    pub sla_ms: u64,
    /// Host names the API may be reached by besides IPs, localhost and this host (`*.domain`, `*`).
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
    /// State directory; empty = `$STATE_DIRECTORY`, else `copilot-edge-data/state`.
    pub state_dir: String,
    /// Log directory; empty = `$LOGS_DIRECTORY`, else `copilot-edge-data/logs`.
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
    /// The `gateway_id` label on every series; part of MQTT topics and push grouping keys.
    pub gateway_id: String,
    /// The plant this gateway stands in (MQTT topics, the Pushgateway grouping key `site`).
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
    /// The token's name, e.g. `technician-42`.
    pub user_id: String,
    /// The SHA-256 of the token, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

/// `[labels]`: bounds on label values that come from requests.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLabels {
    /// Allowed plant ids; requests for other plants get 422. Empty = accept any, but only the
    /// first `max_plants` distinct ids get their own series (the rest count under `_other`).
    pub plant_ids: Vec<String>,
    /// Plants with their own metric series; the rest count under `_other`.
    pub max_plants: u64,
    /// Known equipment ids; empty = the first `max_equipment_per_plant` per plant.
    pub equipment_ids: Vec<String>,
    /// Equipment series per plant; the rest count under `_other`.
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
    /// Model name sent in each request.
    pub model: String,
    /// `gen_ai_provider_name` of the OpenTelemetry GenAI metrics (`openai` for any
    /// OpenAI-compatible server unless you name it).
    pub provider: String,
    /// Bearer key, inline (`api_key_file` and the `llm-api-key` credential take precedence).
    pub api_key: String,
    /// A file holding the bearer key.
    pub api_key_file: String,
    /// Past this many milliseconds the local engine answers and a fallback is counted.
    pub timeout_ms: u64,
    /// Completion limit sent as `max_tokens`.
    pub max_tokens: u64,
    /// USD per 1,000 prompt tokens, for `copilot_llm_cost_usd_total`.
    pub price_input_per_1k_usd: f64,
    /// USD per 1,000 completion tokens, for `copilot_llm_cost_usd_total`.
    pub price_output_per_1k_usd: f64,
    /// Exported as `copilot_edge_llm_budget_usd_per_day` for the TokenBudgetExceeded alert.
    pub budget_usd_per_day: f64,
    /// CA bundle (PEM) to verify the server with (https URLs; MQTT with `tls = true`);
    /// empty = the built-in Mozilla roots.
    pub tls_ca_file: String,
    /// Client certificate (PEM) for mutual TLS; set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// The client certificate's private key (PEM); set together with `tls_cert_file`.
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
    /// Also write JSON lines to rotating files in the log directory (stdout always gets them).
    pub file: bool,
    /// A log file is rotated at this size, in bytes.
    pub max_file_bytes: u64,
    /// Rotated log files kept.
    pub max_files: u64,
    /// `knowledge_gap` events carry the question text.
    pub gap_question_text: bool,
}

impl Default for RawLogging {
    fn default() -> Self {
        RawLogging {
            level: "info".into(),
            file: true,
            max_file_bytes: 10 * 1024 * 1024,
            max_files: 10,
            gap_question_text: true,
        }
    }
}

/// `[spool]`: the on-disk buffer for telemetry while the uplink is down.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpool {
    /// Empty = `<state_dir>/spool`.
    pub dir: String,
    /// Disk bound in bytes; when full, the oldest records are dropped (and counted).
    pub max_bytes: u64,
    /// Size of one segment file in bytes; at most half of `max_bytes`.
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

/// `[kb]`: knowledge bundles from a central source.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawKb {
    /// An http(s) URL of the fleet's bundle; empty = none.
    pub url: String,
    /// Seconds between polls of `url`.
    pub poll_interval_secs: u64,
    /// A retained MQTT topic on the `[sinks.mqtt]` broker; empty = none.
    pub mqtt_topic: String,
    /// Base64 Ed25519 public keys a bundle may be signed by.
    pub public_keys: Vec<String>,
    /// Where bundles are kept; empty = `<state_dir>/kb`.
    pub dir: String,
    /// CA bundle (PEM) for an https URL; empty = built-in roots.
    pub tls_ca_file: String,
    /// Client certificate (PEM).
    pub tls_cert_file: String,
    /// Client key (PEM).
    pub tls_key_file: String,
}

impl Default for RawKb {
    fn default() -> Self {
        RawKb {
            url: String::new(),
            poll_interval_secs: 300,
            mqtt_topic: String::new(),
            public_keys: Vec::new(),
            dir: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

/// `[sinks]`: each sink is off unless its table sets `enabled = true`.
#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSinks {
    /// `[sinks.mqtt]`
    pub mqtt: RawMqtt,
    /// `[sinks.pushgateway]`
    pub pushgateway: RawPushgateway,
    /// `[sinks.remote_write]`
    pub remote_write: RawRemoteWrite,
}

/// `[sinks.remote_write]`
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRemoteWrite {
    /// Ship spooled snapshots to this receiver.
    pub enabled: bool,
    /// e.g. `http://prometheus.central:9090/api/v1/write`
    pub url: String,
    /// Basic-auth user name; set with a password, never with `bearer_token`.
    pub username: String,
    /// Basic-auth password, inline (`password_file` and the credential take precedence).
    pub password: String,
    /// A file holding the Basic-auth password.
    pub password_file: String,
    /// Bearer token instead of Basic auth.
    pub bearer_token: String,
    /// One write request must finish within this many milliseconds.
    pub timeout_ms: u64,
    /// A request carries at most this many samples; larger snapshots are split.
    pub max_samples_per_request: u64,
    /// Backlog replay rate in snapshots per second; live snapshots are never held back.
    pub backlog_records_per_sec: u64,
    /// Live snapshots per request: 1 sends each as it is taken; more holds them until that many
    /// are pending (at most that many snapshot intervals), for a metered uplink.
    pub batch_snapshots: u64,
    /// Added to every series that does not already have the label.
    pub external_labels: BTreeMap<String, String>,
    /// CA bundle (PEM) to verify the server with (https URLs; MQTT with `tls = true`);
    /// empty = the built-in Mozilla roots.
    pub tls_ca_file: String,
    /// Client certificate (PEM) for mutual TLS; set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// The client certificate's private key (PEM); set together with `tls_cert_file`.
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
            batch_snapshots: 1,
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
    /// Ship spooled snapshots and log events to this broker.
    pub enabled: bool,
    /// The broker's host name or address.
    pub host: String,
    /// The broker's port (1883, or 8883 with TLS by convention).
    pub port: u16,
    /// Client id; empty = `copilot-edge-<gateway_id>`. Must stay stable: the session is persistent.
    pub client_id: String,
    /// User name; empty = none.
    pub username: String,
    /// Password, inline (`password_file` and the `mqtt-password` credential take precedence).
    pub password: String,
    /// A file holding the password.
    pub password_file: String,
    /// Topics are `<prefix>/<site_plant_id>/<gateway_id>/{metrics,logs,status}`.
    pub topic_prefix: String,
    /// `prometheus` (text with timestamps, Telegraf-ready), `json` or `sparkplug_b`.
    pub format: String,
    /// `none` or `gzip`: compress the metrics and log payloads (Telegraf's MQTT consumer reads
    /// them with `content_encoding = "gzip"`). Not with `sparkplug_b`.
    pub compression: String,
    /// MQTT keep-alive interval in seconds.
    pub keep_alive_secs: u64,
    /// The largest MQTT packet sent or received, in bytes.
    pub max_packet_bytes: u64,
    /// QoS 1 publishes awaiting their PUBACK at once.
    pub max_inflight: u64,
    /// Backlog replay limit, records per second (live data is never held back by it).
    pub backlog_records_per_sec: u64,
    /// Connect with TLS (port 8883 by convention).
    pub tls: bool,
    /// CA bundle (PEM) to verify the server with (https URLs; MQTT with `tls = true`);
    /// empty = the built-in Mozilla roots.
    pub tls_ca_file: String,
    /// Client certificate (PEM) for mutual TLS; set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// The client certificate's private key (PEM); set together with `tls_cert_file`.
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
    /// Push the current metrics to this Pushgateway every snapshot interval.
    pub enabled: bool,
    /// e.g. `http://127.0.0.1:9091`
    pub url: String,
    /// The grouping key's `job`: `/metrics/job/<job>/gateway_id/<gateway_id>/site/<site>`.
    pub job: String,
    /// Basic-auth user name; set with a password, never with `bearer_token`.
    pub username: String,
    /// Basic-auth password, inline (`password_file` and the credential take precedence).
    pub password: String,
    /// A file holding the Basic-auth password.
    pub password_file: String,
    /// Bearer token instead of Basic auth.
    pub bearer_token: String,
    /// One push must finish within this many milliseconds.
    pub timeout_ms: u64,
    /// CA bundle (PEM) to verify the server with (https URLs; MQTT with `tls = true`);
    /// empty = the built-in Mozilla roots.
    pub tls_ca_file: String,
    /// Client certificate (PEM) for mutual TLS; set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// The client certificate's private key (PEM); set together with `tls_cert_file`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::validate;
    use crate::config::{parse, ConfigError, DEFAULT_CONFIG_TOML};

    #[test]
    fn embedded_default_matches_serde_defaults() {
        let raw = parse(DEFAULT_CONFIG_TOML, "embedded").expect("default parses");
        assert_eq!(raw, RawConfig::default());
        validate(DEFAULT_CONFIG_TOML).expect("default validates");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(matches!(
            validate("[server]\nlisen = \"x\""),
            Err(ConfigError::Parse { .. })
        ));
    }
}
