//! `POST /v1/diagnose`: validates the question, asks the engine (one snapshot per request), lets
//! the upstream LLM write the report when one is configured and the answer is supported (the
//! local report when it fails), counts tokens, cost and the answer, and serialises the response
//! from borrowed parts.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use uuid::Uuid;

use super::compose::{compose, Composed};
use super::{check_id, json_body, Ctx, Resp};
use crate::diagnose::{Guidance, Observation, Question, Refusal, VisionAnalysis};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::metrics::{agent, genai, UNKNOWN};
use crate::recent::AnswerRecord;

/// Longest accepted problem description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Most camera observations per request.
pub const MAX_OBSERVATIONS: usize = 32;

#[derive(Deserialize)]
struct DiagnoseBody {
    plant_id: String,
    equipment_id: String,
    problem_description: String,
    #[serde(default)]
    observed_defects: Vec<Observation>,
}

pub(super) async fn post(
    state: &AppState,
    req: Request<Incoming>,
    trace: &str,
    ctx: &mut Ctx,
) -> Result<Resp, ApiError> {
    let body: DiagnoseBody = json_body(state, req, ctx).await?;
    check_id("plant_id", &body.plant_id)?;
    check_id("equipment_id", &body.equipment_id)?;
    if !state.metrics.labels.plant_allowed(&body.plant_id) {
        ctx.plant_label = Some(UNKNOWN.to_string());
        return Err(ApiError::UnknownPlant(body.plant_id));
    }
    let m = &state.metrics;
    let plant = m.labels.plant(&body.plant_id);
    ctx.plant_label = Some(plant.clone());
    ctx.plant_id = Some(body.plant_id.clone());
    ctx.equipment_id = Some(body.equipment_id.clone());
    let desc = body.problem_description.trim();
    let chars = desc.chars().count();
    if !(3..=MAX_DESCRIPTION_CHARS).contains(&chars) {
        return Err(ApiError::Invalid(format!(
            "problem_description must be 3 to {MAX_DESCRIPTION_CHARS} characters, got {chars}"
        )));
    }
    if body.observed_defects.len() > MAX_OBSERVATIONS
        || body.observed_defects.iter().any(|o| {
            o.label.trim().is_empty() || o.label.len() > 64 || !(0.0..=1.0).contains(&o.confidence)
        })
    {
        return Err(ApiError::Invalid(format!(
            "observed_defects: at most {MAX_OBSERVATIONS} entries, each a label of 1-64 characters and a confidence in 0..1"
        )));
    }
    let equipment = m.labels.equipment(&plant, &body.equipment_id);
    m.equipment_requests.inc(&plant, &equipment);
    debug!(trace_id = %trace, user_id = ctx.user_id.as_deref().unwrap_or(""), plant_id = %body.plant_id, equipment_id = %body.equipment_id, "diagnosis_request_received");

    let active = m.active_agents.with_label_values(&[&plant, agent::RAG]);
    active.inc();
    let q = Question {
        plant_id: &body.plant_id,
        equipment_id: &body.equipment_id,
        problem_description: desc,
        observed_defects: &body.observed_defects,
    };
    // One snapshot of the engine for the whole request: a reload (SIGHUP) swaps in a new one
    // for later requests without disturbing this one.
    let kb = state.engine.get();
    let t_engine = Instant::now();
    let answer = kb.diagnose(&q);
    m.genai_duration
        .with_label_values(&[
            genai::INVOKE_AGENT,
            genai::LOCAL_PROVIDER,
            genai::LOCAL_MODEL,
            "",
        ])
        .observe(t_engine.elapsed().as_secs_f64());
    active.dec();
    m.languages.with_label_values(&[&answer.language]).inc();
    if let Some(r) = &answer.refusal {
        m.refusals.with_label_values(&[r.code()]).inc();
    }

    let Composed {
        report,
        answered_by,
        engine,
        fallback_reason,
        input_tokens,
        output_tokens,
    } = compose(
        state,
        &plant,
        (&body.plant_id, &body.equipment_id),
        desc,
        &kb,
        &answer,
        trace,
    )
    .await;
    m.tokens
        .with_label_values(&[&plant, answered_by, "input"])
        .inc_by(input_tokens);
    m.tokens
        .with_label_values(&[&plant, answered_by, "output"])
        .inc_by(output_tokens);
    m.record_answer(&plant, agent::RAG, answer.supported);

    let request_id = crate::ids::uuid();
    let question = crate::gaps::Question::new(
        &body.plant_id,
        &body.equipment_id,
        answer.asset.as_ref().map(|a| a.class.as_str()),
        &answer.language,
        desc,
    );
    if let Some(r) = &answer.refusal {
        state.gaps.record(
            m,
            &plant,
            r.code(),
            &request_id.to_string(),
            trace,
            &question,
        );
    }
    state.recent.insert(
        request_id,
        AnswerRecord {
            plant: plant.clone(),
            agent_name: agent::RAG,
            question,
        },
        Instant::now(),
    );
    ctx.answer = Some((request_id, answer.supported, answer.confidence));
    if answer.supported {
        debug!(trace_id = %trace, request_id = %request_id, confidence = answer.confidence, cited = %answer.guidance.cited_documents.join(","), "diagnosis_request_success");
    } else {
        warn!(trace_id = %trace, request_id = %request_id, best_relevance = answer.best_relevance, "no_supporting_document");
    }
    let out = DiagnoseResponse {
        request_id,
        trace_id: trace,
        plant_id: &body.plant_id,
        equipment_id: &body.equipment_id,
        vision_analysis: &answer.vision,
        rag_guidance: &answer.guidance,
        generated_report: &report,
        confidence_score: answer.confidence,
        answer_status: match &answer.refusal {
            None => "supported",
            Some(Refusal::NotAFaultReport) => "not_a_fault_report",
            Some(Refusal::LanguageNotSupported(_)) => "language_not_supported",
            Some(_) => "no_supporting_document",
        },
        hallucination_flag: !answer.supported,
        refusal_reason: answer.refusal.as_ref().map(|r| r.code()),
        understood: Understood {
            language: &answer.language,
            asset: answer.asset.as_ref(),
            rewrites: &answer.rewrites,
        },
        agent: AgentInfo {
            name: answered_by,
            engine: &engine,
            fallback: fallback_reason.is_some(),
            fallback_reason,
        },
        usage: Usage {
            input_tokens,
            output_tokens,
        },
    };
    // The body repeats the steps inside the report: about twice the report plus the rest.
    let hint = 2 * report.len()
        + answer
            .guidance
            .safety_notes
            .iter()
            .map(String::len)
            .sum::<usize>()
        + 1024;
    Ok(serialized_response(&out, hint))
}

/// The `/v1/diagnose` answer, serialised straight from borrowed parts (no `Value` tree).
#[derive(Serialize)]
struct DiagnoseResponse<'a> {
    request_id: Uuid,
    trace_id: &'a str,
    plant_id: &'a str,
    equipment_id: &'a str,
    vision_analysis: &'a VisionAnalysis,
    rag_guidance: &'a Guidance,
    generated_report: &'a str,
    confidence_score: f64,
    answer_status: &'static str,
    hallucination_flag: bool,
    /// Why nothing is cited: `no_matching_sop`, `out_of_scope`, `no_sop_for_equipment_class`,
    /// `no_sop_for_machine`, `not_a_fault_report`, `language_not_supported`.
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal_reason: Option<&'static str>,
    understood: Understood<'a>,
    agent: AgentInfo<'a>,
    usage: Usage,
}

/// What the engine understood: the question's language, the asset from the register, and the
/// words it rewrote (`typed → meant` for lexicon terms and compounds, `typed ≈ meant` for typo
/// corrections).
#[derive(Serialize)]
struct Understood<'a> {
    language: &'a str,
    asset: Option<&'a crate::diagnose::assets::Asset>,
    rewrites: &'a [String],
}

#[derive(Serialize)]
struct AgentInfo<'a> {
    name: &'static str,
    engine: &'a str,
    fallback: bool,
    fallback_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
}

/// `capacity` is a guess at the body's size: growing the buffer as it fills copies it each time.
fn serialized_response<T: Serialize>(v: &T, capacity: usize) -> Resp {
    let mut body = Vec::with_capacity(capacity);
    // Serialising these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, v);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
