//! The report of a `/v1/diagnose` answer: the upstream LLM writes it when one is configured and
//! the answer is supported, with its duration, tokens and cost counted; when the LLM fails the
//! engine's own report stands and the fallback is counted and logged. Beside the engine call,
//! apart from the request handling in `diagnose`.

use std::borrow::Cow;
use std::time::Instant;

use tracing::warn;

use crate::diagnose::{Answer, DiagnoseEngine};
use crate::http::AppState;
use crate::metrics::{agent, genai};

/// The report an answer goes out with, who wrote it, and the tokens it took.
pub(super) struct Composed<'a> {
    /// The report text: the LLM's, or the engine's own.
    pub report: Cow<'a, str>,
    /// `llm_report` when the LLM wrote it, else `rag_agent`.
    pub answered_by: &'static str,
    /// `bm25-local` or `llm:<model>`.
    pub engine: Cow<'static, str>,
    /// Why the LLM's report was not used, when it was asked and failed.
    pub fallback_reason: Option<&'static str>,
    /// Tokens the answer took: the model's count when it reported one, else the engine's.
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Lets the upstream LLM write the report of a supported answer when one is configured,
/// counting its duration, the tokens it reports and their cost; when it fails the local report
/// stands, and the fallback is counted and logged. Without an LLM: the local report as it is.
pub(super) async fn compose<'a>(
    state: &AppState,
    plant: &str,
    (plant_id, equipment_id): (&str, &str),
    desc: &str,
    kb: &DiagnoseEngine,
    answer: &'a Answer,
    trace: &str,
) -> Composed<'a> {
    let m = &state.metrics;
    let mut report = Cow::Borrowed(answer.report.as_str());
    let mut answered_by = agent::RAG;
    let mut engine = Cow::Borrowed("bm25-local");
    let mut fallback_reason: Option<&'static str> = None;
    let (mut input_tokens, mut output_tokens) = (answer.input_tokens, answer.output_tokens);
    if let (Some(llm), true) = (&state.llm, answer.supported) {
        let active = m
            .active_agents
            .with_label_values(&[plant, agent::LLM_REPORT]);
        active.inc();
        let t_llm = Instant::now();
        let r = llm
            .write_report(plant_id, equipment_id, desc, &kb.passages(answer))
            .await;
        active.dec();
        m.genai_duration
            .with_label_values(&[
                genai::CHAT,
                llm.provider(),
                llm.model(),
                r.as_ref().err().map_or("", |e| e.reason()),
            ])
            .observe(t_llm.elapsed().as_secs_f64());
        match r {
            Ok(r) => {
                report = Cow::Owned(r.text);
                answered_by = agent::LLM_REPORT;
                engine = Cow::Owned(format!("llm:{}", llm.model()));
                if r.input_tokens + r.output_tokens > 0 {
                    (input_tokens, output_tokens) = (r.input_tokens, r.output_tokens);
                    // Only counts the model reported (the conventions forbid estimates here).
                    for (kind, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
                        m.genai_tokens
                            .with_label_values(&[genai::CHAT, llm.provider(), llm.model(), kind])
                            .observe(n as f64);
                    }
                }
                let p = &state.prices;
                let cost = input_tokens as f64 / 1000.0 * p.input_per_1k_usd
                    + output_tokens as f64 / 1000.0 * p.output_per_1k_usd;
                m.cost
                    .with_label_values(&[plant, agent::LLM_REPORT])
                    .inc_by(cost);
            }
            Err(e) => {
                fallback_reason = Some(e.reason());
                m.llm_fallback.with_label_values(&[plant, e.reason()]).inc();
                warn!(trace_id = %trace, reason = e.reason(), error = %e, "llm_fallback");
            }
        }
    }
    Composed {
        report,
        answered_by,
        engine,
        fallback_reason,
        input_tokens,
        output_tokens,
    }
}
