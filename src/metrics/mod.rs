//! Every metric the agent exports, in one place, so names and labels are reviewable in one file.
//!
//! Service metrics keep the names operators already query (`copilot_*` from the reference
//! service, `http_*` as prometheus-fastapi-instrumentator names them); the agent's own health is
//! `copilot_edge_<subsystem>_<name>_<unit>`. Every series carries the constant label
//! `gateway_id` so a fleet can be told apart.
//!
//! Cardinality: `plant_id` and `equipment_id` come from request bodies, so they pass through
//! [`LabelGuard`] first: configured allow-lists, else the first N distinct values, and the rest
//! collapse into `_other` (counted in `copilot_edge_label_overflow_total`). Recording takes no
//! global lock: label lookups are read-locked maps, the counters are atomics, and the sliding
//! windows lock only their own plant's window.

use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::config::{LabelsConfig, MetricsConfig};

mod labels;
mod pair;
mod text;
mod windows;

pub use labels::LabelGuard;
pub use pair::PairCounter;
use pair::PairCounterHandle;
pub use text::encode_text;
use windows::Windows;

/// Latency buckets: fine between 0.1 and 1 s so the 0.5 s SLA resolves well.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];
/// The `_other` label value for ids beyond the cardinality bound.
pub const OTHER: &str = "_other";
/// The plant label of requests whose plant is not known (bad body, rejected plant).
pub const UNKNOWN: &str = "_unknown";

/// Agent names, used as the `agent_name` label everywhere.
pub mod agent {
    /// The local retrieval engine answering /v1/diagnose.
    pub const RAG: &str = "rag_agent";
    /// The upstream LLM that wrote a report.
    pub const LLM_REPORT: &str = "llm_report_agent";
    /// /v1/feedback.
    pub const FEEDBACK: &str = "feedback";
}

/// Errors building the metric set (a name or label clash: a programming error caught by tests).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The spool's own metrics.
pub struct SpoolMetrics {
    /// `copilot_edge_spool_bytes`: bytes of segment files on disk.
    pub bytes: IntGauge,
    /// `copilot_edge_spool_records`: records not yet delivered to every sink.
    pub records: IntGauge,
    /// `copilot_edge_spool_oldest_record_age_seconds{sink}`: age of the oldest undelivered record.
    pub oldest_age_seconds: GaugeVec,
    /// `copilot_edge_spool_dropped_records_total{reason}`: records dropped before delivery.
    pub dropped: IntCounterVec,
    /// `copilot_edge_spool_corrupt_records_total`: corrupt or torn records discarded.
    pub corrupt: IntCounter,
    /// `copilot_edge_spool_appended_records_total{kind}`: records appended.
    pub appended: IntCounterVec,
    /// 1 while appends are refused (below the free-space floor, or writes failing).
    pub write_blocked: IntGauge,
}

/// Per-sink metrics.
pub struct SinkMetrics {
    /// `copilot_edge_sink_up{sink}`: 1 when the sink's last attempt succeeded.
    pub up: IntGaugeVec,
    /// `copilot_edge_sink_last_success_timestamp_seconds{sink}`: Unix time of the last delivery.
    pub last_success: GaugeVec,
    /// `copilot_edge_sink_sent_records_total{sink}`: records the receiver acknowledged.
    pub sent: IntCounterVec,
    /// `copilot_edge_sink_errors_total{sink,kind}`: failed delivery attempts.
    pub errors: IntCounterVec,
    /// `copilot_edge_sink_rejected_records_total{sink}`: records refused for good (not retried).
    pub rejected: IntCounterVec,
    /// 1 while the receiver refuses the sink's credentials (401/403, MQTT CONNACK 4/5).
    pub auth_failed: IntGaugeVec,
}

/// Bucket boundaries the GenAI semantic conventions advise for `gen_ai.client.token.usage`.
pub const GENAI_TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Bucket boundaries the GenAI semantic conventions advise for
/// `gen_ai.client.operation.duration` (seconds).
pub const GENAI_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// GenAI operation names and the local engine's provider/model values.
pub mod genai {
    /// An LLM chat-completions call.
    pub const CHAT: &str = "chat";
    /// The local engine answering a question (an agent invocation in GenAI terms).
    pub const INVOKE_AGENT: &str = "invoke_agent";
    /// Provider name of the local engine.
    pub const LOCAL_PROVIDER: &str = "copilot_edge";
    /// Model name of the local engine.
    pub const LOCAL_MODEL: &str = "bm25-local";
}

/// The whole metric set.
pub struct Metrics {
    registry: Reg,
    /// `gateway_id="…"`, appended to every series by [`encode_text`].
    const_labels: String,
    /// Size of the last rendering, to allocate the next one in one go.
    last_len: std::sync::atomic::AtomicUsize,
    /// Bounds `plant_id` and `equipment_id` values (allow-lists or first N, the rest `_other`).
    pub labels: LabelGuard,
    /// `copilot_requests_total{plant_id,agent_name,status_code}`: diagnose and feedback requests.
    pub requests: IntCounterVec,
    /// `copilot_answers_total{plant_id,agent_name}`: diagnose answers produced.
    pub answers: IntCounterVec,
    /// `copilot_latency_seconds{plant_id,agent_name}`: end-to-end request latency.
    pub latency: HistogramVec,
    /// `copilot_llm_token_usage_total{plant_id,agent_name,direction}`: tokens used.
    pub tokens: IntCounterVec,
    /// `copilot_llm_cost_usd_total{plant_id,agent_name}`: estimated upstream LLM cost, USD.
    pub cost: CounterVec,
    /// `copilot_edge_llm_budget_usd_per_day`: the configured daily budget (0 = none).
    pub budget: Gauge,
    /// `copilot_hallucination_total{plant_id,agent_name}`: answers with no supporting document.
    pub hallucinations: IntCounterVec,
    /// `copilot_hallucination_rate{plant_id,agent_name}`: unsupported share of the recent answers.
    pub hallucination_rate: GaugeVec,
    /// `copilot_user_feedback_score{plant_id,agent_name}`: mean rating (1-5) of recent ratings.
    pub feedback_score: GaugeVec,
    /// `copilot_user_feedback_total{plant_id,agent_name}`: ratings received.
    pub feedback_total: IntCounterVec,
    /// `copilot_user_feedback_last_timestamp_seconds{plant_id,agent_name}`: latest rating's time.
    pub feedback_last: GaugeVec,
    /// `copilot_equipment_requests_total{plant_id,equipment_id}`: diagnose requests per equipment.
    pub equipment_requests: Arc<PairCounter>,
    /// `copilot_active_agents{plant_id,agent_name}`: inferences in flight.
    pub active_agents: IntGaugeVec,
    /// `copilot_llm_fallback_total{plant_id,reason}`: answers the local engine served for the LLM.
    pub llm_fallback: IntCounterVec,
    /// `http_requests_total{handler,method,status}`: HTTP requests.
    pub http_requests: IntCounterVec,
    /// `http_request_duration_seconds{handler,method}`: HTTP latency (buckets 0.1, 0.5, 1 s).
    pub http_duration: HistogramVec,
    /// `copilot_edge_log_events_dropped_total`: log events not shipped (spool queue full).
    pub log_events_dropped: IntCounter,
    /// Log lines the log file could not take (disk full); stdout still got them.
    pub log_file_lines_dropped: IntCounter,
    /// Connections and requests the HTTP layer refused before a handler ran, by reason.
    pub http_rejected: IntCounterVec,
    /// Requests refused for their credentials, by reason (missing, invalid, throttled); every
    /// reason is exported from 0 so the first failure is an increase.
    pub auth_failures: IntCounterVec,
    /// 1 while the tokens file parses; 0 after a change that does not (the last good set is in
    /// use).
    pub tokens_file_valid: IntGauge,
    /// The wall clock minus the receivers' (HTTP `Date`), seconds; set at each rendering from
    /// [`crate::clock`], absent until a receiver has answered.
    pub clock_skew: IntGauge,
    /// OpenTelemetry GenAI client metrics (semantic conventions, Prometheus form): tokens per
    /// operation by `gen_ai_token_type`, only where the model reported them.
    pub genai_tokens: HistogramVec,
    /// OpenTelemetry GenAI client operation duration, for LLM calls and the local engine.
    pub genai_duration: HistogramVec,
    /// Knowledge base reloads (SIGHUP) by result (ok, failed).
    pub kb_reloads: IntCounterVec,
    /// Knowledge bundles ([`crate::kb`]): what runs, when it was checked and changed.
    pub kb: KbMetrics,
    /// Answers that cite nothing, by reason (no_matching_sop, out_of_scope, no_sop_for_machine,
    /// not_a_fault_report, language_not_supported,
    /// no_sop_for_equipment_class).
    pub refusals: IntCounterVec,
    /// Knowledge gaps ([`crate::gaps`]): refusals and ratings of 1-2 stars, by plant (bounded),
    /// equipment class (from the asset register) and reason.
    pub knowledge_gaps: IntCounterVec,
    /// Questions by the language they were understood in (the lexicon's codes: bounded by the
    /// lexicon files, never by request input).
    pub languages: IntCounterVec,
    /// The spool's metrics (`copilot_edge_spool_*`).
    pub spool: SpoolMetrics,
    /// The sinks' metrics (`copilot_edge_sink_*`), labelled by `sink`.
    pub sink: SinkMetrics,
    hallucination_window: Windows,
    feedback_window: Windows,
    /// When each (plant, agent) last got a rating, on the boot clock: the last-feedback gauge is
    /// re-expressed in today's wall clock after a step, so a clock stepped forward by years does
    /// not make the last rating look years old.
    feedback_at: Mutex<Vec<(String, String, i64)>>,
}

/// The registry plus our own list of its collectors, so `render` can collect them directly
/// (the registry's `gather` also sorts every family's series by label values, which costs more
/// than the rest of a 10,000-series rendering together; series order carries no meaning in the
/// exposition format).
struct Reg {
    registry: Registry,
    all: Mutex<Vec<Box<dyn Collector>>>,
}

impl Reg {
    fn register(&self, a: Box<dyn Collector>, b: Box<dyn Collector>) -> Result<(), MetricsError> {
        self.registry.register(a)?;
        self.all.lock().unwrap_or_else(|e| e.into_inner()).push(b);
        Ok(())
    }
}

fn reg<C: Collector + Clone + 'static>(r: &Reg, c: C) -> Result<C, MetricsError> {
    r.register(Box::new(c.clone()), Box::new(c.clone()))?;
    Ok(c)
}

/// Knowledge-bundle metrics (`copilot_edge_knowledge_*`).
pub struct KbMetrics {
    /// `copilot_edge_knowledge_info{version,hash,source}`: one series, the running knowledge base.
    pub info: GaugeVec,
    /// `copilot_edge_knowledge_bundle_created_timestamp_seconds`.
    pub created: Gauge,
    /// `copilot_edge_knowledge_last_check_timestamp_seconds{source}`.
    pub last_check: GaugeVec,
    /// `copilot_edge_knowledge_last_change_timestamp_seconds`.
    pub last_change: Gauge,
    /// `copilot_edge_knowledge_checks_total{result}`.
    pub checks: IntCounterVec,
}

fn counter_vec(
    r: &Reg,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    reg(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn gauge_vec(r: &Reg, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
    reg(r, GaugeVec::new(Opts::new(name, help), labels)?)
}

impl Metrics {
    /// Builds and registers every metric. `gateway_id` becomes a constant label of all series.
    pub fn new(
        gateway_id: &str,
        labels: LabelsConfig,
        windows: &MetricsConfig,
        budget_usd_per_day: f64,
    ) -> Result<Metrics, MetricsError> {
        // gateway_id is added by the encoder, not as a registry constant label: constant labels
        // make `gather` clone and re-sort the label pairs of every series on every scrape.
        let r = Reg {
            registry: Registry::new(),
            all: Mutex::new(Vec::new()),
        };
        #[cfg(target_os = "linux")]
        r.register(
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        )?;
        let pa = &["plant_id", "agent_name"];
        let overflow = counter_vec(
            &r,
            "copilot_edge_label_overflow_total",
            "Request label values collapsed into _other by the cardinality bound.",
            &["label"],
        )?;
        let build = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("copilot_edge_build_info", "Build information; always 1."),
                &["version", "target"],
            )?,
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("COPILOT_EDGE_TARGET")])
            .set(1);
        let budget = reg(
            &r,
            Gauge::new(
                "copilot_edge_llm_budget_usd_per_day",
                "Configured daily LLM budget in USD (0 = none).",
            )?,
        )?;
        budget.set(budget_usd_per_day);
        let m = Metrics {
            labels: LabelGuard::new(labels, overflow),
            requests: counter_vec(
                &r,
                "copilot_requests_total",
                "Copilot API requests (diagnose and feedback).",
                &["plant_id", "agent_name", "status_code"],
            )?,
            answers: counter_vec(
                &r,
                "copilot_answers_total",
                "Diagnose answers produced.",
                pa,
            )?,
            latency: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "copilot_latency_seconds",
                        "End-to-end copilot request latency.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    pa,
                )?,
            )?,
            tokens: counter_vec(
                &r,
                "copilot_llm_token_usage_total",
                "Tokens used, as reported by the LLM or counted by the local engine.",
                &["plant_id", "agent_name", "direction"],
            )?,
            cost: reg(
                &r,
                CounterVec::new(
                    Opts::new(
                        "copilot_llm_cost_usd_total",
                        "Estimated upstream LLM cost in USD.",
                    ),
                    pa,
                )?,
            )?,
            budget,
            hallucinations: counter_vec(
                &r,
                "copilot_hallucination_total",
                "Answers with no supporting document (the agent said it does not know).",
                pa,
            )?,
            hallucination_rate: gauge_vec(
                &r,
                "copilot_hallucination_rate",
                "Share of unsupported answers over the most recent answers window.",
                pa,
            )?,
            feedback_score: gauge_vec(
                &r,
                "copilot_user_feedback_score",
                "Average technician rating (1-5) over the most recent ratings window.",
                pa,
            )?,
            feedback_total: counter_vec(
                &r,
                "copilot_user_feedback_total",
                "Technician ratings received.",
                pa,
            )?,
            feedback_last: gauge_vec(
                &r,
                "copilot_user_feedback_last_timestamp_seconds",
                "Unix time of the latest rating.",
                pa,
            )?,
            equipment_requests: {
                let c = Arc::new(PairCounter::new(
                    "copilot_equipment_requests_total",
                    "Diagnose requests per equipment.",
                    ["plant_id", "equipment_id"],
                )?);
                // In the registry for `gather`; `render` writes it straight from its map.
                r.registry
                    .register(Box::new(PairCounterHandle(c.clone())))?;
                c
            },
            active_agents: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("copilot_active_agents", "Inferences in flight."),
                    pa,
                )?,
            )?,
            llm_fallback: counter_vec(
                &r,
                "copilot_llm_fallback_total",
                "Answers served by the local engine because the LLM failed.",
                &["plant_id", "reason"],
            )?,
            http_requests: counter_vec(
                &r,
                "http_requests_total",
                "Total number of requests by method, status and handler.",
                &["handler", "method", "status"],
            )?,
            http_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "http_request_duration_seconds",
                        "Latency with only few buckets by handler.",
                    )
                    .buckets(vec![0.1, 0.5, 1.0]),
                    &["handler", "method"],
                )?,
            )?,
            log_events_dropped: reg(
                &r,
                IntCounter::new(
                    "copilot_edge_log_events_dropped_total",
                    "Log events not shipped because the spool queue was full.",
                )?,
            )?,
            log_file_lines_dropped: reg(
                &r,
                IntCounter::new(
                    "copilot_edge_log_file_lines_dropped_total",
                    "Log lines the log file could not take (disk full or write error); stdout still had them.",
                )?,
            )?,
            http_rejected: counter_vec(
                &r,
                "copilot_edge_http_rejected_total",
                "Connections or requests refused by the HTTP layer before a handler ran (per_client_limit, parse, too_large, header_timeout, incomplete, other, server_full), or closed for a fair share of the slots (evicted).",
                &["reason"],
            )?,
            auth_failures: counter_vec(
                &r,
                "copilot_edge_auth_failures_total",
                "Requests refused for their credentials: missing (no or malformed bearer token), invalid (unknown token), throttled (refused unchecked while the address is slowed down after repeated failures).",
                &["reason"],
            )?,
            tokens_file_valid: reg(
                &r,
                IntGauge::new(
                    "copilot_edge_auth_tokens_file_valid",
                    "1 while the tokens file parses; 0 after a change that does not (the agent keeps the last good set).",
                )?,
            )?,
            clock_skew: IntGauge::new(
                "copilot_edge_clock_skew_seconds",
                "This gateway's wall clock minus its receivers' (the HTTP Date of remote-write, Pushgateway and LLM answers), seconds; positive = ahead.",
            )?,
            genai_tokens: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gen_ai_client_token_usage",
                        "OpenTelemetry gen_ai.client.token.usage: tokens used per GenAI operation, as reported by the model.",
                    )
                    .buckets(GENAI_TOKEN_BUCKETS.to_vec()),
                    &[
                        "gen_ai_operation_name",
                        "gen_ai_provider_name",
                        "gen_ai_request_model",
                        "gen_ai_token_type",
                    ],
                )?,
            )?,
            genai_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gen_ai_client_operation_duration_seconds",
                        "OpenTelemetry gen_ai.client.operation.duration: GenAI operation duration (LLM chat calls and the local engine).",
                    )
                    .buckets(GENAI_DURATION_BUCKETS.to_vec()),
                    &[
                        "gen_ai_operation_name",
                        "gen_ai_provider_name",
                        "gen_ai_request_model",
                        "error_type",
                    ],
                )?,
            )?,
            kb_reloads: counter_vec(
                &r,
                "copilot_edge_knowledge_reloads_total",
                "Reloads of the knowledge base, lexicon and asset register (SIGHUP), by result.",
                &["result"],
            )?,
            kb: KbMetrics {
                info: gauge_vec(
                    &r,
                    "copilot_edge_knowledge_info",
                    "1 for the knowledge base this gateway serves: bundle version, first 12 hex digits of its content hash, and where it came from (embedded, directory, http, mqtt).",
                    &["version", "hash", "source"],
                )?,
                created: reg(
                    &r,
                    Gauge::new(
                        "copilot_edge_knowledge_bundle_created_timestamp_seconds",
                        "When the running knowledge bundle was packed (bundles are ordered by it); 0 when no bundle runs (embedded or directory knowledge).",
                    )?,
                )?,
                last_check: gauge_vec(
                    &r,
                    "copilot_edge_knowledge_last_check_timestamp_seconds",
                    "When the gateway last reached its bundle source (an answer, changed or not), by source; absent without a source.",
                    &["source"],
                )?,
                last_change: reg(
                    &r,
                    Gauge::new(
                        "copilot_edge_knowledge_last_change_timestamp_seconds",
                        "When the running knowledge base last changed (the load at start counts).",
                    )?,
                )?,
                checks: counter_vec(
                    &r,
                    "copilot_edge_knowledge_checks_total",
                    "Bundle checks by result: unchanged, applied, not_targeted, fetch_failed, bad_signature, broken, smoke_failed, rolled_back, not_saved (the gateway could not keep it on disk, so it does not serve it).",
                    &["result"],
                )?,
            },
            knowledge_gaps: counter_vec(
                &r,
                "copilot_edge_knowledge_gaps_total",
                "Questions no SOP answered and answers rated 1-2 stars, by plant, equipment class (asset register; unknown) and reason (a refusal reason or low_rating).",
                &["plant_id", "equipment_class", "reason"],
            )?,
            refusals: counter_vec(
                &r,
                "copilot_edge_diagnose_refusals_total",
                "Diagnose answers citing no SOP, by reason (no_matching_sop, out_of_scope, no_sop_for_equipment_class, no_sop_for_machine, not_a_fault_report, language_not_supported).",
                &["reason"],
            )?,
            languages: counter_vec(
                &r,
                "copilot_edge_diagnose_language_total",
                "Diagnose questions by the language they were understood in.",
                &["language"],
            )?,
            spool: SpoolMetrics {
                bytes: reg(
                    &r,
                    IntGauge::new(
                        "copilot_edge_spool_bytes",
                        "Bytes of spool segments on disk.",
                    )?,
                )?,
                records: reg(
                    &r,
                    IntGauge::new(
                        "copilot_edge_spool_records",
                        "Records in the spool not yet delivered to every sink.",
                    )?,
                )?,
                oldest_age_seconds: gauge_vec(
                    &r,
                    "copilot_edge_spool_oldest_record_age_seconds",
                    "Age of the oldest record a sink has not yet delivered.",
                    &["sink"],
                )?,
                dropped: counter_vec(
                    &r,
                    "copilot_edge_spool_dropped_records_total",
                    "Records dropped before delivery.",
                    &["reason"],
                )?,
                corrupt: reg(
                    &r,
                    IntCounter::new(
                        "copilot_edge_spool_corrupt_records_total",
                        "Records found corrupt or torn and discarded.",
                    )?,
                )?,
                appended: counter_vec(
                    &r,
                    "copilot_edge_spool_appended_records_total",
                    "Records appended to the spool.",
                    &["kind"],
                )?,
                write_blocked: reg(
                    &r,
                    IntGauge::new(
                        "copilot_edge_spool_write_blocked",
                        "1 while the spool refuses appends: free space below spool.min_free_bytes, or writes failing.",
                    )?,
                )?,
            },
            sink: SinkMetrics {
                up: reg(
                    &r,
                    IntGaugeVec::new(
                        Opts::new(
                            "copilot_edge_sink_up",
                            "1 when the sink's last attempt succeeded.",
                        ),
                        &["sink"],
                    )?,
                )?,
                last_success: gauge_vec(
                    &r,
                    "copilot_edge_sink_last_success_timestamp_seconds",
                    "Unix time of the sink's last delivery.",
                    &["sink"],
                )?,
                sent: counter_vec(
                    &r,
                    "copilot_edge_sink_sent_records_total",
                    "Records acknowledged by the sink's receiver.",
                    &["sink"],
                )?,
                errors: counter_vec(
                    &r,
                    "copilot_edge_sink_errors_total",
                    "Failed delivery attempts.",
                    &["sink", "kind"],
                )?,
                rejected: counter_vec(
                    &r,
                    "copilot_edge_sink_rejected_records_total",
                    "Records the receiver refused for good (not retried).",
                    &["sink"],
                )?,
                auth_failed: reg(
                    &r,
                    IntGaugeVec::new(
                        Opts::new(
                            "copilot_edge_sink_auth_failed",
                            "1 while the receiver refuses the sink's credentials; the backlog is kept and retried.",
                        ),
                        &["sink"],
                    )?,
                )?,
            },
            const_labels: format!("gateway_id=\"{gateway_id}\""),
            last_len: std::sync::atomic::AtomicUsize::new(16 * 1024),
            hallucination_window: Windows::new(windows.hallucination_window.get()),
            feedback_window: Windows::new(windows.feedback_window.get()),
            feedback_at: Mutex::new(Vec::new()),
            registry: r,
        };
        for reason in ["missing", "invalid", "throttled"] {
            m.auth_failures.with_label_values(&[reason]);
        }
        m.tokens_file_valid.set(1);
        Ok(m)
    }

    /// Records an answer's support status and updates the sliding hallucination rate.
    pub fn record_answer(&self, plant: &str, agent_name: &str, supported: bool) {
        self.answers.with_label_values(&[plant, agent_name]).inc();
        if !supported {
            self.hallucinations
                .with_label_values(&[plant, agent_name])
                .inc();
        }
        let rate = self
            .hallucination_window
            .push(plant, if supported { 0.0 } else { 1.0 });
        self.hallucination_rate
            .with_label_values(&[plant, agent_name])
            .set(rate);
    }

    /// Records a rating (1..5) at unix time `now`.
    pub fn record_feedback(&self, plant: &str, agent_name: &str, score: u8, now: f64) {
        let avg = self.feedback_window.push(plant, score as f64);
        self.feedback_score
            .with_label_values(&[plant, agent_name])
            .set(avg);
        self.feedback_total
            .with_label_values(&[plant, agent_name])
            .inc();
        self.feedback_last
            .with_label_values(&[plant, agent_name])
            .set(now);
        let boot = crate::clock::boot_ms();
        let mut at = self.feedback_at.lock().unwrap_or_else(|e| e.into_inner());
        match at
            .iter_mut()
            .find(|(p, a, _)| p == plant && a == agent_name)
        {
            Some(e) => e.2 = boot,
            // Bounded like the gauge's own series: plant ids pass the label guard first.
            None => at.push((plant.to_string(), agent_name.to_string(), boot)),
        }
    }

    /// Re-expresses the last-feedback times in today's wall clock when it has stepped (more than
    /// 5 s off what the boot clock says); ordinary drift leaves the exported value alone.
    fn follow_clock_steps(&self) {
        let at = self.feedback_at.lock().unwrap_or_else(|e| e.into_inner());
        for (plant, agent, boot) in at.iter() {
            let g = self.feedback_last.with_label_values(&[plant, agent]);
            let now_view = crate::clock::wall_of_boot_ms(*boot) as f64 / 1000.0;
            if (now_view - g.get()).abs() > 5.0 {
                g.set(now_view.round());
            }
        }
    }

    /// The current state of every metric family.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.follow_clock_steps();
        self.registry.registry.gather()
    }

    /// Prometheus text exposition of every metric (families by name, series unsorted).
    pub fn render(&self) -> Vec<u8> {
        use std::sync::atomic::Ordering::Relaxed;
        self.follow_clock_steps();
        // The log writer thread counts what the file could not take in a static (it runs before
        // and outside the metrics); bring the counter up to date.
        let file_dropped = crate::logging::file_lines_dropped();
        let seen = self.log_file_lines_dropped.get();
        if file_dropped > seen {
            self.log_file_lines_dropped.inc_by(file_dropped - seen);
        }
        let mut families: Vec<prometheus::proto::MetricFamily> = {
            let all = self.registry.all.lock().unwrap_or_else(|e| e.into_inner());
            all.iter()
                .flat_map(|c| c.collect())
                .filter(|f| !f.get_metric().is_empty())
                .collect()
        };
        // Only once measured: a made-up 0 would read as "the clock is right".
        if let Some(skew) = crate::clock::skew_seconds() {
            self.clock_skew.set(skew);
            families.extend(self.clock_skew.collect());
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::with_capacity(self.last_len.load(Relaxed) + 4096);
        encode_text(&families, &self.const_labels, &mut buf);
        self.equipment_requests.encode(&self.const_labels, &mut buf);
        self.last_len.store(buf.len(), Relaxed);
        buf
    }
}

/// A registry for unit tests: gateway `gw`, at most 4 plants and 4 equipment ids per plant,
/// windows of one, 1 s snapshots.
#[cfg(test)]
pub(crate) fn test_metrics() -> Arc<Metrics> {
    let labels = LabelsConfig {
        plant_ids: Default::default(),
        max_plants: 4,
        equipment_ids: Default::default(),
        max_equipment_per_plant: 4,
    };
    let w = MetricsConfig {
        hallucination_window: std::num::NonZeroUsize::MIN,
        feedback_window: std::num::NonZeroUsize::MIN,
        snapshot_interval: std::time::Duration::from_secs(1),
    };
    Arc::new(Metrics::new("gw", labels, &w, 0.0).expect("a valid registry"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::num::NonZeroUsize;
    use std::time::Duration;

    fn metrics(plants: &[&str], max_plants: usize, max_eq: usize) -> Metrics {
        let labels = LabelsConfig {
            plant_ids: plants.iter().map(|s| s.to_string()).collect(),
            max_plants,
            equipment_ids: BTreeSet::new(),
            max_equipment_per_plant: max_eq,
        };
        let w = MetricsConfig {
            hallucination_window: NonZeroUsize::new(4).unwrap(),
            feedback_window: NonZeroUsize::new(3).unwrap(),
            snapshot_interval: Duration::from_secs(15),
        };
        Metrics::new("gw-1", labels, &w, 0.0).unwrap()
    }

    #[test]
    fn plant_labels_are_bounded_without_allow_list() {
        let m = metrics(&[], 3, 10);
        let got: Vec<String> = (0..10).map(|i| m.labels.plant(&format!("p{i}"))).collect();
        assert_eq!(&got[..3], &["p0", "p1", "p2"]);
        assert!(got[3..].iter().all(|g| g == OTHER));
        assert_eq!(m.labels.plant("p1"), "p1");
        assert_eq!(m.labels.overflow.with_label_values(&["plant_id"]).get(), 7);
    }

    #[test]
    fn allow_list_rejects_and_labels_unknown() {
        let m = metrics(&["plant-7"], 3, 10);
        assert!(m.labels.plant_allowed("plant-7"));
        assert!(!m.labels.plant_allowed("plant-8"));
        assert_eq!(m.labels.plant("plant-8"), UNKNOWN);
    }

    #[test]
    fn equipment_capped_per_plant() {
        let m = metrics(&[], 3, 2);
        let a: Vec<String> = ["e1", "e2", "e3", "e1"]
            .iter()
            .map(|e| m.labels.equipment("p", e))
            .collect();
        assert_eq!(a, ["e1", "e2", OTHER, "e1"]);
        assert_eq!(m.labels.equipment("q", "e3"), "e3", "the cap is per plant");
    }

    #[test]
    fn windows_track_recent_values() {
        let m = metrics(&[], 3, 2);
        for s in [true, false, true, true] {
            m.record_answer("p", agent::RAG, s);
        }
        assert_eq!(
            m.hallucination_rate
                .with_label_values(&["p", agent::RAG])
                .get(),
            0.25
        );
        m.record_answer("p", agent::RAG, true); // window of 4: the `false` is still in
        assert_eq!(
            m.hallucination_rate
                .with_label_values(&["p", agent::RAG])
                .get(),
            0.25
        );
        m.record_answer("p", agent::RAG, true); // now it has left
        assert_eq!(
            m.hallucination_rate
                .with_label_values(&["p", agent::RAG])
                .get(),
            0.0
        );
        for s in [5, 4, 3, 1] {
            m.record_feedback("p", agent::RAG, s, 100.0);
        }
        assert!(
            (m.feedback_score.with_label_values(&["p", agent::RAG]).get() - 8.0 / 3.0).abs() < 1e-9
        );
        assert_eq!(
            m.feedback_total.with_label_values(&["p", agent::RAG]).get(),
            4
        );
    }

    #[test]
    fn pair_counter_renders_and_gathers() {
        let m = metrics(&[], 3, 10);
        m.equipment_requests.inc("p", "e\"1");
        m.equipment_requests.inc("p", "e\"1");
        m.equipment_requests.inc("q", "e2");
        assert_eq!(m.equipment_requests.get("p", "e\"1"), Some(2));
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("# TYPE copilot_equipment_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("copilot_equipment_requests_total{plant_id=\"p\",equipment_id=\"e\\\"1\",gateway_id=\"gw-1\"} 2\n"), "{text}");
        let fam = m
            .gather()
            .into_iter()
            .find(|f| f.name() == "copilot_equipment_requests_total")
            .unwrap();
        assert_eq!(fam.get_metric().len(), 2);
    }

    #[test]
    fn encoder_matches_the_crate_encoder() {
        use prometheus::Encoder;
        let r = Registry::new();
        let c = IntCounterVec::new(
            Opts::new("a_total", "help with \\ and\nnewline"),
            &["x", "y"],
        )
        .unwrap();
        r.register(Box::new(c.clone())).unwrap();
        c.with_label_values(&["q\"uote", "back\\slash\nnl"])
            .inc_by(3);
        let h = HistogramVec::new(
            HistogramOpts::new("h_seconds", "h").buckets(vec![0.1, 0.5, 1.0]),
            &["p"],
        )
        .unwrap();
        r.register(Box::new(h.clone())).unwrap();
        h.with_label_values(&["a"]).observe(0.3);
        h.with_label_values(&["a"]).observe(2.5);
        let g = Gauge::new("g", "gauge").unwrap();
        r.register(Box::new(g.clone())).unwrap();
        g.set(0.25);
        let fams = r.gather();
        let mut theirs = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&fams, &mut theirs)
            .unwrap();
        let mut ours = Vec::new();
        encode_text(&fams, "", &mut ours);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }

    #[test]
    fn render_has_constant_gateway_label() {
        let m = metrics(&[], 3, 2);
        m.requests
            .with_label_values(&["p", agent::RAG, "200"])
            .inc();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("copilot_requests_total{agent_name=\"rag_agent\",plant_id=\"p\",status_code=\"200\",gateway_id=\"gw-1\"} 1"), "{text}");
        assert!(text.contains("copilot_edge_build_info"));
    }
}
