//! API errors: each becomes a status and a JSON body `{"error":{"code","message"},"trace_id"}`.
//! Internal detail goes to the log, never to the client. Bad input always maps to a 4xx.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::json;

/// Everything a request can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No route for the path.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists but not for this method; carries the `Allow` value.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// Missing/invalid bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// Content-Type is not JSON.
    #[error("unsupported content type `{0}`; send application/json")]
    UnsupportedMediaType(String),
    /// Body over `max_body_bytes`.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Body is not valid JSON (syntax, truncation, invalid UTF-8).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// Valid JSON, wrong shape or values.
    #[error("{0}")]
    Invalid(String),
    /// Plant not in the allow-list.
    #[error("plant `{0}` is not served by this gateway")]
    UnknownPlant(String),
    /// `/v1/feedback` for an answer the agent does not remember.
    #[error("no recent answer with request_id {0}")]
    UnknownAnswer(String),
    /// The answer was rated already.
    #[error("answer {0} was already rated")]
    AlreadyRated(String),
    /// The body could not be read (client went away mid-body).
    #[error("could not read request body")]
    BodyRead,
    /// The request took longer than `request_timeout_secs`.
    #[error("request timed out")]
    Timeout,
    /// The request body did not arrive within `server.request_timeout_secs`.
    #[error("request body not received in time")]
    BodyTimeout,
    /// Too many failed authentications from this address: refused unchecked for the seconds
    /// given (`Retry-After`).
    #[error("too many failed authentications from this address; try again in {0} s")]
    AuthThrottled(u64),
    /// The `Host` header names neither this gateway nor a configured name (DNS rebinding).
    #[error("host `{0}` is not a name of this gateway; add it to server.allowed_hosts")]
    MisdirectedHost(String),
}

impl ApiError {
    /// Status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::UnknownAnswer(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MalformedJson(_) | ApiError::BodyRead => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) | ApiError::UnknownPlant(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::AlreadyRated(_) => StatusCode::CONFLICT,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::AuthThrottled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Invalid(_) => "invalid_request",
            ApiError::UnknownPlant(_) => "unknown_plant",
            ApiError::UnknownAnswer(_) => "unknown_request_id",
            ApiError::AlreadyRated(_) => "already_rated",
            ApiError::BodyRead => "body_read_error",
            ApiError::Timeout => "timeout",
            ApiError::BodyTimeout => "request_timeout",
            ApiError::AuthThrottled(_) => "too_many_auth_failures",
            ApiError::MisdirectedHost(_) => "misdirected_host",
        }
    }

    /// The JSON error response.
    pub fn into_response(self, trace_id: &str) -> Response<Full<Bytes>> {
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}, "trace_id": trace_id});
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = self.status();
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            ApiError::Unauthorized(_) => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"copilot-edge\""),
                );
            }
            ApiError::MethodNotAllowed(allow) => {
                h.insert(ALLOW, HeaderValue::from_static(allow));
            }
            // The rest of the body may still come: this connection cannot carry another request.
            ApiError::BodyTimeout => {
                h.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::AuthThrottled(secs) => {
                h.insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_never_5xx() {
        let all = [
            ApiError::NotFound("/x".into()),
            ApiError::MethodNotAllowed("GET"),
            ApiError::Unauthorized("x".into()),
            ApiError::UnsupportedMediaType("text/plain".into()),
            ApiError::PayloadTooLarge(1),
            ApiError::MalformedJson("x".into()),
            ApiError::Invalid("x".into()),
            ApiError::UnknownPlant("p".into()),
            ApiError::UnknownAnswer("u".into()),
            ApiError::AlreadyRated("u".into()),
            ApiError::BodyRead,
            ApiError::BodyTimeout,
            ApiError::AuthThrottled(3),
            ApiError::MisdirectedHost("evil.example".into()),
        ];
        for e in all {
            assert!(e.status().is_client_error(), "{e:?}");
        }
    }
}
