//! copilot-edge: the Manufacturing Copilot on a plant-floor gateway.
//!
//! # Layout
//! By layer, top down; domain modules (`diagnose`, `spool`, `metrics`) never import hyper.
//!
//! **Entry and composition**
//! - [`cli`]: subcommands: serve (default), check-config, print-default-config, report, spool
//!   status, eval, token add/list/revoke, kb keygen/pack/sign/verify/show/rollback.
//! - [`config`]: TOML → validated [`config::Config`]: the serde tables (`config/raw.rs`), one
//!   validation function per table with its bounds named (`config/validate.rs`, shared checks in
//!   `config/check.rs`), systemd directories and credentials (`config/env.rs`).
//! - [`app`]: builds the components from the config, runs them, reloads on SIGHUP, polls the
//!   tokens file, and shuts down in order; `eval` and its ablation table.
//! - [`status`]: each sink's link state and backlog, derived once for `spool status` (from the
//!   files) and `/v1/status` (from the running service).
//!
//! **Serving the plant LAN**
//! - [`http`]: hyper 1.x server (connection bounds, fair share of slots, Host check), routing,
//!   one handler module per endpoint (`http/routes/`: probes, status, diagnose, feedback,
//!   console), API errors; the only hyper user on the serving side.
//! - [`console`]: the technician console and the gateway status page, embedded web files.
//! - [`auth`]: bearer tokens (SHA-256 at rest, constant-time comparison), the first-start
//!   token, the per-address guessing slow-down; the tokens file's one format and parser and the
//!   locked edits `copilot-edge token` makes (`auth/file.rs`), which config validation uses too.
//! - [`recent`]: the bounded window of recent answers that `/v1/feedback` can rate.
//! - [`gaps`]: knowledge gaps — refusals and low ratings as events, bounded counters and the
//!   recent list the status page shows.
//!
//! **Answers**
//! - [`diagnose`]: the engine: knowledge base, lexicon and language packs, asset register,
//!   BM25 retrieval with clause windows, intent and machine gates, answers (pure, synchronous).
//! - [`kb`]: knowledge bundles: one signed, versioned file of SOPs, lexicon packs and asset
//!   register; the gateway's last good and previous bundles; the rollout task that takes new
//!   ones from HTTP or MQTT, checks them and swaps the engine.
//! - [`llm`]: optional OpenAI-compatible upstream that writes the report, with local fallback.
//!
//! **Observing**
//! - [`metrics`]: every Prometheus metric (the registry in one file) and, beside it, the
//!   cardinality bounds on request labels, sliding windows, pair counters and the text encoder.
//! - [`logging`]: JSON log lines to stdout and counter-named rotating files, and log shipping
//!   to the spool.
//! - [`clock`]: where time lives: the wall clock against the receivers' HTTP `Date` (skew gauge
//!   and events), record stamps that never go backwards, ages from the boot clock, civil dates.
//! - [`notify`]: systemd readiness and watchdog notifications.
//! - [`report`]: the weekly health report, computed from a Prometheus server's HTTP API.
//!
//! **Store and forward**
//! - [`spool`]: the on-disk, append-only, crash-safe buffer of telemetry records (it knows
//!   nothing of sinks but their cursor names); its disk policy, crash recovery and read-only
//!   view in their own files.
//! - [`sinks`]: the uplinks that drain the spool: MQTT (text, gzip, Sparkplug B with devices),
//!   Prometheus remote write, Pushgateway; which are enabled, and their link state files.
//! - [`httpc`]: a minimal outbound HTTP/1.1 client (remote write, Pushgateway, LLM).
//! - [`tls`]: rustls client settings shared by every uplink.
//!
//! **Helpers**
//! - [`base64`]: base64 for Basic auth and for bundle keys and signatures.
//! - [`compress`]: gzip for MQTT payloads and the gzip-compressed files built into the binary.
//! - [`fsutil`]: the one atomic file replacement (private temporary file, fsync, rename, dir
//!   fsync) for every file the agent replaces.
//! - [`memtrim`]: hands freed heap back to the OS after bursts (glibc).
//! - [`ids`]: fast trace and request ids, and the rule for ids that become label values
//!   (gateway, plant, equipment ids).

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod base64;
pub mod cli;
pub mod clock;
pub mod compress;
pub mod config;
pub mod console;
pub mod diagnose;
pub mod fsutil;
pub mod gaps;
pub mod http;
pub mod httpc;
pub mod ids;
pub mod kb;
pub mod llm;
pub mod logging;
pub mod memtrim;
pub mod metrics;
pub mod notify;
pub mod recent;
#[cfg(feature = "report")]
pub mod report;
pub mod sinks;
pub mod spool;
pub mod status;
pub mod tls;
