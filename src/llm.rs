//! The optional upstream LLM: an OpenAI-compatible `POST /v1/chat/completions` (llama.cpp
//! server, Ollama, vLLM) that writes the report from the retrieved SOP passages.
//!
//! It is only asked when the local engine found supporting documents (an unsupported question
//! is never handed to a model to improvise). Any failure — connect error, timeout, non-2xx,
//! malformed body — is returned as an [`LlmError`] whose [`LlmError::reason`] becomes the
//! `reason` label of `copilot_llm_fallback_total`; the caller then serves the local report.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use serde_json::json;

use crate::config::LlmConfig;
use crate::httpc::{self, HttpcError};

/// Largest upstream response accepted.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why the upstream could not write the report.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// No answer within the configured timeout.
    #[error("llm timed out after {0:?}")]
    Timeout(Duration),
    /// TCP connect failed (no uplink, server down).
    #[error("llm unreachable at {authority}: {source}")]
    Unreachable {
        /// host:port
        authority: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// HTTP-level failure or a non-2xx status.
    #[error("llm request failed: {0}")]
    Http(String),
    /// The body was not a chat-completions response with content.
    #[error("llm response unusable: {0}")]
    BadResponse(String),
}

impl LlmError {
    /// The `reason` label value.
    pub fn reason(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => "timeout",
            LlmError::Unreachable { .. } => "unreachable",
            LlmError::Http(_) | LlmError::BadResponse(_) => "error",
        }
    }
}

/// A report written by the upstream, with its reported usage.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmReport {
    /// The report, `choices[0].message.content` trimmed (never empty).
    pub text: String,
    /// `usage.prompt_tokens`; 0 when the server reports no usage.
    pub input_tokens: u64,
    /// `usage.completion_tokens`; 0 when the server reports no usage.
    pub output_tokens: u64,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

const SYSTEM_PROMPT: &str = "You are a maintenance copilot on a plant floor. Write a short repair report for the \
technician using ONLY the SOP passages provided. Cite document ids in square brackets after each step. \
If the passages do not cover the problem, say so and recommend escalation. Never invent steps.";

/// The client for one configured upstream.
#[derive(Debug, Clone)]
pub struct LlmClient {
    cfg: LlmConfig,
}

impl LlmClient {
    /// A client for `cfg`.
    pub fn new(cfg: LlmConfig) -> Self {
        LlmClient { cfg }
    }

    /// The configured model name.
    pub fn model(&self) -> &str {
        &self.cfg.model
    }

    /// The provider name for the GenAI metrics (`[llm] provider`).
    pub fn provider(&self) -> &str {
        &self.cfg.provider
    }

    /// Asks the upstream for a report; the whole exchange is bounded by the configured timeout.
    pub async fn write_report(
        &self,
        plant: &str,
        equipment: &str,
        problem: &str,
        passages: &[String],
    ) -> Result<LlmReport, LlmError> {
        let user = format!(
            "Plant: {plant}\nEquipment: {equipment}\nProblem reported by the technician: {problem}\n\nSOP passages:\n{}",
            passages.join("\n\n")
        );
        let body = json!({
            "model": self.cfg.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            "max_tokens": self.cfg.max_tokens,
            "temperature": 0.2,
            "stream": false,
        });
        let mut req = hyper::Request::post(&self.cfg.path)
            .header(hyper::header::HOST, &self.cfg.endpoint.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(k) = &self.cfg.api_key {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", k.expose()),
            );
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| LlmError::Http(e.to_string()))?;
        let (status, bytes) = httpc::send(
            &self.cfg.endpoint,
            req,
            self.cfg.timeout,
            MAX_RESPONSE_BYTES,
        )
        .await
        .map_err(|e| match e {
            HttpcError::Timeout(d) => LlmError::Timeout(d),
            HttpcError::Connect { authority, source } => {
                LlmError::Unreachable { authority, source }
            }
            HttpcError::Tls { authority, message } => {
                LlmError::Http(format!("tls with {authority}: {message}"))
            }
            HttpcError::Http(m) => LlmError::Http(m),
        })?;
        if !(200..300).contains(&status) {
            return Err(LlmError::Http(format!("status {status}")));
        }
        parse_response(&bytes)
    }
}

/// Extracts the report and usage from a chat-completions body.
pub fn parse_response(bytes: &[u8]) -> Result<LlmReport, LlmError> {
    let r: ChatResponse =
        serde_json::from_slice(bytes).map_err(|e| LlmError::BadResponse(e.to_string()))?;
    let text = r
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message.content)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| LlmError::BadResponse("no choices[0].message.content".into()))?;
    let (input_tokens, output_tokens) = r
        .usage
        .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    Ok(LlmReport {
        text,
        input_tokens,
        output_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chat_completion() {
        let r = parse_response(br#"{"choices":[{"message":{"role":"assistant","content":" Do X [SOP-1] "}}],"usage":{"prompt_tokens":120,"completion_tokens":30}}"#).unwrap();
        assert_eq!(
            r,
            LlmReport {
                text: "Do X [SOP-1]".into(),
                input_tokens: 120,
                output_tokens: 30
            }
        );
        assert!(matches!(
            parse_response(br#"{"choices":[]}"#),
            Err(LlmError::BadResponse(_))
        ));
        assert!(matches!(
            parse_response(b"<html>"),
            Err(LlmError::BadResponse(_))
        ));
    }
}
