//! Validation: a [`RawConfig`] becomes a [`Config`], or every problem found, in one pass.
//!
//! One function per TOML table, called by [`RawConfig::validate`] in document order, so
//! `check-config` lists the problems in the order of the file's tables (and, within a table, in
//! the order below). Each function takes its raw table and the [`Checker`] (plus whatever it
//! needs from tables checked before it: the state directory, the identity, the environment).
//! The bounds are the constants at the top of this file; the problem messages quote them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::check::{tls_files, Checker};
use super::*;
use crate::auth::{self, TokenEntry};
use crate::ids::{is_valid_id, ID_RULE};

// [server]
/// `server.max_body_bytes`: at least one small JSON question, at most 16 MiB held per request.
const MAX_BODY_BYTES: RangeInclusive<u64> = 1024..=16 * 1024 * 1024;
/// `server.max_connections`.
const MAX_CONNECTIONS: RangeInclusive<u64> = 1..=1_000_000;
/// `server.max_connections_per_client` (0 = no per-address bound).
const MAX_CONNECTIONS_PER_CLIENT: RangeInclusive<u64> = 0..=1_000_000;
/// `server.header_read_timeout_secs`.
const HEADER_READ_TIMEOUT_SECS: RangeInclusive<u64> = 1..=300;
/// `server.request_timeout_secs`.
const REQUEST_TIMEOUT_SECS: RangeInclusive<u64> = 1..=600;
/// `server.shutdown_grace_secs` (0 = drop in-flight requests at once).
const SHUTDOWN_GRACE_SECS: RangeInclusive<u64> = 0..=300;
/// `server.sla_ms`.
const SLA_MS: RangeInclusive<u64> = 1..=600_000;
/// `server.allowed_hosts`: the longest DNS name.
const MAX_HOST_NAME_LEN: usize = 253;

// [labels]
/// `labels.max_plants`: plant series before the rest count under `_other`.
const MAX_PLANTS: RangeInclusive<u64> = 1..=10_000;
/// `labels.max_equipment_per_plant`.
const MAX_EQUIPMENT_PER_PLANT: RangeInclusive<u64> = 1..=100_000;

// [engine]
/// `engine.min_relevance`: a relevance score.
const MIN_RELEVANCE: RangeInclusive<f64> = 0.0..=1.0;
/// `engine.max_documents`: documents cited in one answer.
const MAX_DOCUMENTS: RangeInclusive<u64> = 1..=10;
/// `engine.max_steps`: steps in one answer.
const MAX_STEPS: RangeInclusive<u64> = 1..=50;
/// `engine.recent_answers`: answers remembered for `/v1/feedback`.
const RECENT_ANSWERS: RangeInclusive<u64> = 1..=1_000_000;
/// `engine.feedback_window_secs`: up to 90 days.
const FEEDBACK_WINDOW_SECS: RangeInclusive<u64> = 1..=90 * 24 * 3600;

// [llm], [sinks.pushgateway], [sinks.remote_write]
/// `timeout_ms` of every outbound HTTP peer (`llm`, `sinks.pushgateway`, `sinks.remote_write`).
const HTTP_TIMEOUT_MS: RangeInclusive<u64> = 10..=600_000;
/// `llm.max_tokens`.
const LLM_MAX_TOKENS: RangeInclusive<u64> = 1..=32_000;
/// `llm.model`: the longest model name, in bytes.
const MAX_MODEL_LEN: usize = 128;

// [metrics]
/// `metrics.hallucination_window_answers`.
const HALLUCINATION_WINDOW_ANSWERS: RangeInclusive<u64> = 1..=100_000;
/// `metrics.feedback_window_ratings`.
const FEEDBACK_WINDOW_RATINGS: RangeInclusive<u64> = 1..=100_000;
/// `metrics.snapshot_interval_secs`.
const SNAPSHOT_INTERVAL_SECS: RangeInclusive<u64> = 1..=3600;

// [logging]
/// `logging.max_file_bytes`: 4 KiB to 1 TiB.
const MAX_FILE_BYTES: RangeInclusive<u64> = 4096..=1 << 40;
/// `logging.max_files`.
const MAX_FILES: RangeInclusive<u64> = 1..=10_000;

// [spool]
/// `spool.max_bytes`: 64 KiB to 16 TiB.
const SPOOL_MAX_BYTES: RangeInclusive<u64> = 64 * 1024..=1 << 44;
/// `spool.segment_bytes`: 4 KiB to 4 GiB (and at most half of `spool.max_bytes`).
const SEGMENT_BYTES: RangeInclusive<u64> = 4096..=1 << 32;

// [sinks.*]
/// `backlog_records_per_sec` of the MQTT and remote-write sinks.
const BACKLOG_RECORDS_PER_SEC: RangeInclusive<u64> = 1..=1_000_000;
/// `sinks.remote_write.batch_snapshots`: up to an hour of 1-minute snapshots held back.
const BATCH_SNAPSHOTS: RangeInclusive<u64> = 1..=60;
/// `sinks.mqtt.keep_alive_secs`.
const MQTT_KEEP_ALIVE_SECS: RangeInclusive<u64> = 5..=3600;
/// `sinks.mqtt.max_packet_bytes`: 64 KiB to 256 MiB (MQTT's own limit).
const MQTT_MAX_PACKET_BYTES: RangeInclusive<u64> = 64 * 1024..=256 * 1024 * 1024;
/// `sinks.mqtt.max_inflight`: MQTT packet ids are 16 bits.
const MQTT_MAX_INFLIGHT: RangeInclusive<u64> = 1..=65_535;
/// `kb.poll_interval_secs`: from once a second (tests) to once a day.
const KB_POLL_SECS: RangeInclusive<u64> = 1..=86_400;
/// `sinks.remote_write.max_samples_per_request`.
const MAX_SAMPLES_PER_REQUEST: RangeInclusive<u64> = 100..=1_000_000;

impl RawConfig {
    /// Checks every value; returns the typed config or every problem at once.
    pub fn validate(self, source: &str, env: &Environment) -> Result<Config, ConfigError> {
        let mut c = Checker::default();
        let server = server(&self.server, &mut c);
        let paths = paths(&self.paths, env, &mut c);
        let identity = identity(&self.identity, &mut c);
        let auth = auth(&self.auth, &paths.state_dir, env, &mut c);
        let labels = labels(&self.labels, &mut c);
        let engine = engine(&self.engine, &mut c);
        let (llm, llm_prices) = llm(&self.llm, env, &mut c);
        let metrics = metrics(&self.metrics, &mut c);
        let logging = logging(&self.logging, &mut c);
        let spool = spool(&self.spool, &paths.state_dir, &mut c);
        let mqtt = mqtt(&self.sinks.mqtt, &identity, env, &mut c);
        let kb = kb(&self.kb, &paths.state_dir, mqtt.is_some(), &mut c);
        let pushgateway = pushgateway(&self.sinks.pushgateway, env, &mut c);
        let remote_write = remote_write(&self.sinks.remote_write, &identity, env, &mut c);

        if !c.problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: source.to_string(),
                problems: c.problems,
            });
        }
        Ok(Config {
            source: source.to_string(),
            server,
            paths,
            identity,
            auth,
            labels,
            engine,
            llm,
            llm_prices,
            metrics,
            logging,
            spool,
            kb,
            mqtt,
            pushgateway,
            remote_write,
        })
    }
}

/// `[server]`
fn server(s: &RawServer, c: &mut Checker) -> ServerConfig {
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
        max_body_bytes: c.range("server.max_body_bytes", s.max_body_bytes, MAX_BODY_BYTES) as usize,
        max_connections: c.nonzero("server.max_connections", s.max_connections, MAX_CONNECTIONS),
        max_connections_per_client: c.range(
            "server.max_connections_per_client",
            s.max_connections_per_client,
            MAX_CONNECTIONS_PER_CLIENT,
        ) as usize,
        header_read_timeout: Duration::from_secs(c.range(
            "server.header_read_timeout_secs",
            s.header_read_timeout_secs,
            HEADER_READ_TIMEOUT_SECS,
        )),
        request_timeout: Duration::from_secs(c.range(
            "server.request_timeout_secs",
            s.request_timeout_secs,
            REQUEST_TIMEOUT_SECS,
        )),
        shutdown_grace: Duration::from_secs(c.range(
            "server.shutdown_grace_secs",
            s.shutdown_grace_secs,
            SHUTDOWN_GRACE_SECS,
        )),
        metrics_require_auth: s.metrics_require_auth,
        sla: Duration::from_millis(c.range("server.sla_ms", s.sla_ms, SLA_MS)),
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
                && name.len() <= MAX_HOST_NAME_LEN
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !ok {
            c.fail(
                &format!("server.allowed_hosts[{i}]"),
                format!("`{h}` is not a host name (letters, digits, `-`, `.`; `*.domain`; or `*`)"),
            );
        }
    }
    server
}

/// `[paths]`: empty means systemd's directory, else `./copilot-edge-data/…`.
fn paths(p: &RawPaths, env: &Environment, c: &mut Checker) -> PathsConfig {
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
        &p.state_dir,
        &env.state_directory,
        "copilot-edge-data/state",
    );
    let log_dir = pick(&p.log_dir, &env.logs_directory, "copilot-edge-data/logs");
    let knowledge_dir = (!p.knowledge_dir.is_empty()).then(|| PathBuf::from(&p.knowledge_dir));
    if let Some(k) = &knowledge_dir {
        if !k.is_dir() {
            c.fail(
                "paths.knowledge_dir",
                format!("{} is not a directory", k.display()),
            );
        }
    }
    let lexicon_dir = (!p.lexicon_dir.is_empty()).then(|| PathBuf::from(&p.lexicon_dir));
    if let Some(k) = &lexicon_dir {
        if !k.is_dir() {
            c.fail(
                "paths.lexicon_dir",
                format!("{} is not a directory", k.display()),
            );
        }
    }
    let assets = (!p.assets.is_empty()).then(|| PathBuf::from(&p.assets));
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
    PathsConfig {
        state_dir,
        log_dir,
        knowledge_dir,
        assets,
        lexicon_dir,
    }
}

/// `[identity]`
fn identity(id: &RawIdentity, c: &mut Checker) -> IdentityConfig {
    for (key, v) in [
        ("identity.gateway_id", &id.gateway_id),
        ("identity.site_plant_id", &id.site_plant_id),
    ] {
        if !is_valid_id(v) {
            c.fail(key, ID_RULE);
        }
    }
    IdentityConfig {
        gateway_id: id.gateway_id.clone(),
        site_plant_id: id.site_plant_id.clone(),
    }
}

/// `[auth]`: inline tokens, the `api-tokens` credential and the tokens file, each read with
/// [`crate::auth`]'s parser. The tokens file is read here, once, so that `check-config` reports
/// a broken one (exit 78); the running agent then follows it (`auth::AuthCell`).
fn auth(a: &RawAuth, state_dir: &Path, env: &Environment, c: &mut Checker) -> AuthConfig {
    let mut tokens = Vec::new();
    for (i, t) in a.tokens.iter().enumerate() {
        if !auth::is_valid_token_name(&t.user_id) {
            c.fail(&format!("auth.tokens[{i}].user_id"), auth::TOKEN_NAME_RULE);
        }
        match auth::parse_sha256_hex(&t.sha256) {
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
        match auth::parse_token_lines(&text) {
            Ok(mut t) => tokens.append(&mut t),
            Err(e) => c.fail("credential api-tokens", e),
        }
    }
    let fixed_tokens = tokens.clone();
    let tokens_file = if a.tokens_file.is_empty() {
        state_dir.join(auth::TOKENS_FILE)
    } else {
        PathBuf::from(&a.tokens_file)
    };
    let explicit = !a.tokens_file.is_empty();
    let tokens_file_configured_but_missing = explicit && !tokens_file.exists();
    // Missing is empty: `copilot-edge token add` creates it, and the agent follows it.
    match auth::read_tokens_file(&tokens_file, false) {
        Ok(mut t) => tokens.append(&mut t),
        Err(e) => c.fail("auth.tokens_file", e),
    }
    AuthConfig {
        tokens,
        fixed_tokens,
        tokens_file,
        tokens_file_configured_but_missing,
    }
}

/// `[labels]`
fn labels(l: &RawLabels, c: &mut Checker) -> LabelsConfig {
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
    LabelsConfig {
        plant_ids: l.plant_ids.iter().cloned().collect(),
        max_plants: c.range("labels.max_plants", l.max_plants, MAX_PLANTS) as usize,
        equipment_ids: l.equipment_ids.iter().cloned().collect(),
        max_equipment_per_plant: c.range(
            "labels.max_equipment_per_plant",
            l.max_equipment_per_plant,
            MAX_EQUIPMENT_PER_PLANT,
        ) as usize,
    }
}

/// `[engine]`
fn engine(e: &RawEngine, c: &mut Checker) -> EngineConfig {
    if !MIN_RELEVANCE.contains(&e.min_relevance) {
        c.fail(
            "engine.min_relevance",
            format!(
                "must be between {} and {}, got {}",
                MIN_RELEVANCE.start(),
                MIN_RELEVANCE.end(),
                e.min_relevance
            ),
        );
    }
    EngineConfig {
        min_relevance: e
            .min_relevance
            .clamp(*MIN_RELEVANCE.start(), *MIN_RELEVANCE.end()),
        max_documents: c.nonzero("engine.max_documents", e.max_documents, MAX_DOCUMENTS),
        max_steps: c.nonzero("engine.max_steps", e.max_steps, MAX_STEPS),
        recent_answers: c.nonzero("engine.recent_answers", e.recent_answers, RECENT_ANSWERS),
        feedback_window: Duration::from_secs(c.range(
            "engine.feedback_window_secs",
            e.feedback_window_secs,
            FEEDBACK_WINDOW_SECS,
        )),
    }
}

/// `[llm]`: the upstream (only when `url` is set) and the prices, which count either way.
fn llm(lm: &RawLlm, env: &Environment, c: &mut Checker) -> (Option<LlmConfig>, LlmPrices) {
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
    let timeout = Duration::from_millis(c.range("llm.timeout_ms", lm.timeout_ms, HTTP_TIMEOUT_MS));
    let max_tokens = c.range("llm.max_tokens", lm.max_tokens, LLM_MAX_TOKENS) as u32;
    let api_key = c.secret(
        "llm.api_key",
        &lm.api_key,
        &lm.api_key_file,
        env.credential("llm-api-key"),
    );
    if !is_valid_id(&lm.provider) {
        c.fail("llm.provider", ID_RULE);
    }
    if lm.model.is_empty()
        || lm.model.len() > MAX_MODEL_LEN
        || lm.model.chars().any(char::is_control)
    {
        c.fail(
            "llm.model",
            format!("must be 1-{MAX_MODEL_LEN} printable characters"),
        );
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
    (llm, llm_prices)
}

/// `[metrics]`
fn metrics(m: &RawMetrics, c: &mut Checker) -> MetricsConfig {
    MetricsConfig {
        hallucination_window: c.nonzero(
            "metrics.hallucination_window_answers",
            m.hallucination_window_answers,
            HALLUCINATION_WINDOW_ANSWERS,
        ),
        feedback_window: c.nonzero(
            "metrics.feedback_window_ratings",
            m.feedback_window_ratings,
            FEEDBACK_WINDOW_RATINGS,
        ),
        snapshot_interval: Duration::from_secs(c.range(
            "metrics.snapshot_interval_secs",
            m.snapshot_interval_secs,
            SNAPSHOT_INTERVAL_SECS,
        )),
    }
}

/// `[logging]`
fn logging(lg: &RawLogging, c: &mut Checker) -> LoggingConfig {
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
    LoggingConfig {
        level,
        file: lg.file,
        max_file_bytes: c.range("logging.max_file_bytes", lg.max_file_bytes, MAX_FILE_BYTES),
        max_files: c.nonzero("logging.max_files", lg.max_files, MAX_FILES),
        gap_question_text: lg.gap_question_text,
    }
}

/// `[kb]`: a source needs a key to check its bundles against; an MQTT source needs the broker.
fn kb(k: &RawKb, state_dir: &Path, mqtt_enabled: bool, c: &mut Checker) -> KbConfig {
    let http = (!k.url.is_empty())
        .then(|| {
            c.endpoint(
                "kb",
                &k.url,
                tls_files(&k.tls_ca_file, &k.tls_cert_file, &k.tls_key_file),
            )
            .map(|(ep, path)| (ep, path, k.url.clone()))
        })
        .flatten();
    let mqtt_topic = (!k.mqtt_topic.is_empty()).then(|| k.mqtt_topic.clone());
    if let Some(t) = &mqtt_topic {
        if t.contains(['#', '+', '\0']) || t.len() > 256 {
            c.fail(
                "kb.mqtt_topic",
                "a topic name without wildcards, at most 256 bytes",
            );
        }
        if !mqtt_enabled {
            c.fail(
                "kb.mqtt_topic",
                "needs [sinks.mqtt] enabled (the broker it listens on)",
            );
        }
    }
    for (i, key) in k.public_keys.iter().enumerate() {
        if !crate::kb::is_public_key(key) {
            c.fail(
                &format!("kb.public_keys[{i}]"),
                "not a base64 Ed25519 public key (32 bytes; `copilot-edge kb keygen` prints one)",
            );
        }
    }
    if (!k.url.is_empty() || mqtt_topic.is_some()) && k.public_keys.is_empty() {
        c.fail(
            "kb.public_keys",
            "a bundle source needs at least one public key to verify bundles against",
        );
    }
    KbConfig {
        http,
        poll_interval: Duration::from_secs(c.range(
            "kb.poll_interval_secs",
            k.poll_interval_secs,
            KB_POLL_SECS,
        )),
        mqtt_topic,
        public_keys: k.public_keys.iter().map(|s| s.trim().to_string()).collect(),
        dir: if k.dir.is_empty() {
            state_dir.join("kb")
        } else {
            PathBuf::from(&k.dir)
        },
    }
}

/// `[spool]`: empty `dir` = `<state_dir>/spool`.
fn spool(sp: &RawSpool, state_dir: &Path, c: &mut Checker) -> SpoolConfig {
    let spool = SpoolConfig {
        dir: if sp.dir.is_empty() {
            state_dir.join("spool")
        } else {
            PathBuf::from(&sp.dir)
        },
        max_bytes: c.range("spool.max_bytes", sp.max_bytes, SPOOL_MAX_BYTES),
        segment_bytes: c.range("spool.segment_bytes", sp.segment_bytes, SEGMENT_BYTES),
        min_free_bytes: sp.min_free_bytes,
        ship_logs: sp.ship_logs,
    };
    if spool.segment_bytes > spool.max_bytes / 2 {
        c.fail(
            "spool.segment_bytes",
            "must be at most half of spool.max_bytes (so drop-oldest can free space)",
        );
    }
    spool
}

/// `[sinks.mqtt]` (only when enabled), with `[sinks.mqtt.sparkplug]`.
fn mqtt(
    mq: &RawMqtt,
    id: &IdentityConfig,
    env: &Environment,
    c: &mut Checker,
) -> Option<MqttSinkConfig> {
    if !mq.enabled {
        return None;
    }
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
    let sparkplug = sparkplug(&mq.sparkplug, format, id, c);
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
            MQTT_KEEP_ALIVE_SECS,
        )),
        max_packet_bytes: c.range(
            "sinks.mqtt.max_packet_bytes",
            mq.max_packet_bytes,
            MQTT_MAX_PACKET_BYTES,
        ) as usize,
        max_inflight: c.range(
            "sinks.mqtt.max_inflight",
            mq.max_inflight,
            MQTT_MAX_INFLIGHT,
        ) as u16,
        backlog_records_per_sec: c.range(
            "sinks.mqtt.backlog_records_per_sec",
            mq.backlog_records_per_sec,
            BACKLOG_RECORDS_PER_SEC,
        ) as u32,
    })
}

/// `[sinks.mqtt.sparkplug]`: its ids are checked whatever the format; the identities exist only
/// with `format = "sparkplug_b"`, the empty ones taken from `[identity]`.
fn sparkplug(
    sp: &RawSparkplug,
    format: MqttFormat,
    id: &IdentityConfig,
    c: &mut Checker,
) -> Option<SparkplugConfig> {
    for (key, v) in [
        ("sinks.mqtt.sparkplug.group_id", &sp.group_id),
        ("sinks.mqtt.sparkplug.edge_node_id", &sp.edge_node_id),
        ("sinks.mqtt.sparkplug.primary_host_id", &sp.primary_host_id),
    ] {
        if !v.is_empty() && !is_valid_id(v) {
            c.fail(key, ID_RULE);
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
        primary_host_id: (!sp.primary_host_id.is_empty()).then(|| sp.primary_host_id.clone()),
        data_qos1: sp.data_qos == 1,
    });
    if sp.data_qos > 1 {
        c.fail("sinks.mqtt.sparkplug.data_qos", "must be 0 or 1");
    }
    sparkplug
}

/// `[sinks.pushgateway]` (only when enabled).
fn pushgateway(
    pg: &RawPushgateway,
    env: &Environment,
    c: &mut Checker,
) -> Option<PushgatewaySinkConfig> {
    if !pg.enabled {
        return None;
    }
    if !is_valid_id(&pg.job) {
        c.fail("sinks.pushgateway.job", ID_RULE);
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
        HTTP_TIMEOUT_MS,
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
}

/// `[sinks.remote_write]` (only when enabled); `site` = `identity.site_plant_id` unless the
/// external labels set it.
fn remote_write(
    rw: &RawRemoteWrite,
    id: &IdentityConfig,
    env: &Environment,
    c: &mut Checker,
) -> Option<RemoteWriteSinkConfig> {
    if !rw.enabled {
        return None;
    }
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
        HTTP_TIMEOUT_MS,
    ));
    let max_samples = c.range(
        "sinks.remote_write.max_samples_per_request",
        rw.max_samples_per_request,
        MAX_SAMPLES_PER_REQUEST,
    ) as usize;
    let rate = c.range(
        "sinks.remote_write.backlog_records_per_sec",
        rw.backlog_records_per_sec,
        BACKLOG_RECORDS_PER_SEC,
    ) as u32;
    let batch = c.range(
        "sinks.remote_write.batch_snapshots",
        rw.batch_snapshots,
        BATCH_SNAPSHOTS,
    ) as usize;
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
        batch_snapshots: batch,
        external_labels: external.into_iter().collect(),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Parses and validates `text` with no systemd environment (shared by the config tests).
    pub(in crate::config) fn validate(text: &str) -> Result<Config, ConfigError> {
        parse(text, "test")?.validate("test", &Environment::default())
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
