//! `POST /v1/feedback`: one 1-5 star rating per answer, by the answer's request id.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tracing::info;
use uuid::Uuid;

use super::{json_body, json_response, Ctx, Resp};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::recent::Lookup;

/// Longest accepted feedback comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

#[derive(Deserialize)]
struct FeedbackBody {
    request_id: String,
    score: i64,
    #[serde(default)]
    comment: Option<String>,
}

pub(super) async fn post(
    state: &AppState,
    req: Request<Incoming>,
    trace: &str,
    ctx: &mut Ctx,
) -> Result<Resp, ApiError> {
    let body: FeedbackBody = json_body(state, req, ctx).await?;
    let id = Uuid::parse_str(&body.request_id).map_err(|_| {
        ApiError::Invalid("request_id must be a UUID returned by /v1/diagnose".into())
    })?;
    if !(1..=5).contains(&body.score) {
        return Err(ApiError::Invalid(format!(
            "score must be an integer from 1 to 5, got {}",
            body.score
        )));
    }
    let comment = body.comment.unwrap_or_default();
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::Invalid(format!(
            "comment must be at most {MAX_COMMENT_CHARS} characters"
        )));
    }
    let rec = match state.recent.take(&id, Instant::now()) {
        Lookup::Found(r) => r,
        Lookup::Unknown => return Err(ApiError::UnknownAnswer(id.to_string())),
        Lookup::AlreadyRated => return Err(ApiError::AlreadyRated(id.to_string())),
    };
    ctx.plant_label = Some(rec.plant.clone());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    state
        .metrics
        .record_feedback(&rec.plant, rec.agent_name, body.score as u8, now);
    info!(trace_id = %trace, request_id = %id, score = body.score, comment = %comment, "feedback_received");
    if body.score as u8 <= crate::gaps::LOW_RATING_MAX {
        state.gaps.record(
            &state.metrics,
            &rec.plant,
            crate::gaps::LOW_RATING,
            &id.to_string(),
            trace,
            &rec.question,
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "recorded", "request_id": id.to_string(), "score": body.score, "trace_id": trace}),
    ))
}
