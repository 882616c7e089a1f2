//! copilot-edge: the Manufacturing Copilot on a plant-floor gateway.
//!
//! # Layout
//! - [`cli`]: command-line interface (serve, check-config, print-default-config, spool status).
//! - [`config`]: TOML → validated [`config::Config`], systemd directories and credentials.
//! - [`app`]: builds the components from the config, runs them, and shuts them down in order.
//! - [`compress`]: gzip for MQTT payloads and the gzip-compressed files built into the binary.
//! - [`console`]: the technician console and the gateway status page, embedded web files.
//! - [`http`]: hyper 1.x server, routes and one handler per endpoint; the only hyper user on the
//!   serving side.
//! - [`diagnose`]: the engine: knowledge base, BM25 retrieval, answers (pure, synchronous).
//! - [`httpc`]: a minimal outbound HTTP/1.1 client (LLM, Pushgateway).
//! - [`ids`]: fast trace and request ids.
//! - [`auth`]: bearer tokens (SHA-256 at rest, constant-time comparison, first-start token, the
//!   tokens file `copilot-edge token` manages and the agent follows).
//! - [`llm`]: optional OpenAI-compatible upstream that writes the report, with local fallback.
//! - [`metrics`]: every Prometheus metric and the cardinality bounds on request labels.
//! - [`logging`]: JSON log lines to stdout and rotating files, and log shipping to the spool.
//! - [`recent`]: the bounded window of recent answers that `/v1/feedback` can rate.
//! - [`notify`]: systemd readiness and watchdog notifications.
//! - [`report`]: the weekly health report, computed from a Prometheus server's HTTP API.
//! - [`sinks`]: MQTT and Pushgateway uplinks that drain the spool.
//! - [`tls`]: rustls client settings shared by every uplink.
//! - [`spool`]: the on-disk, append-only, crash-safe buffer of telemetry records.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod compress;
pub mod config;
pub mod console;
pub mod diagnose;
pub mod fsutil;
pub mod http;
pub mod httpc;
pub mod ids;
pub mod llm;
pub mod logging;
pub mod memtrim;
pub mod metrics;
pub mod notify;
pub mod recent;
pub mod report;
pub mod sinks;
pub mod spool;
pub mod tls;
