//! The console's pages and assets (embedded, gzip when the browser takes it, 304 when its copy
//! is current), `GET /v1/assets` (the asset register for the equipment picker) and
//! `GET /v1/documents/{id}` (one SOP).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::{json_response, Resp};
use crate::http::error::ApiError;
use crate::http::AppState;

/// An embedded page or asset with the security and cache headers (304 when the browser's copy
/// is current).
pub(super) fn page(asset: &'static crate::console::Asset, headers: &HeaderMap, head: bool) -> Resp {
    use hyper::header::{CACHE_CONTROL, CONTENT_ENCODING, ETAG, IF_NONE_MATCH, VARY};
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let gzip = accepts_gzip(headers);
    let full = if fresh {
        Bytes::new()
    } else if gzip {
        Bytes::from_static(asset.gz)
    } else {
        Bytes::from(asset.body())
    };
    let len = full.len();
    let body = if head { Bytes::new() } else { full };
    let mut r = Response::new(Full::new(body));
    if fresh {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(ETAG, HeaderValue::from_static(asset.etag));
    h.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if gzip && !fresh {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(crate::console::CSP),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if head && !fresh {
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    r
}

/// Whether `Accept-Encoding` accepts gzip (`gzip` or `*`, with a q-value above 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

/// `GET /v1/assets`: the asset register's listed ids, for the console's equipment picker.
pub(super) fn assets(state: &AppState) -> Resp {
    let engine = state.engine.get();
    json_response(StatusCode::OK, &json!({"assets": engine.assets().listed()}))
}

/// `GET /v1/documents/{id}`: one SOP as the engine knows it (step numbers match citations).
pub(super) fn document(state: &AppState, id: &str) -> Result<Resp, ApiError> {
    let engine = state.engine.get();
    let d = engine
        .document(id)
        .ok_or_else(|| ApiError::NotFound(id.chars().take(128).collect()))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": d.id,
            "title": d.title,
            "equipment": d.equipment,
            "translations": d.translations.iter().map(|t| t.language.as_str()).collect::<Vec<_>>(),
            "markdown": d.to_markdown(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    #[test]
    fn gzip_only_when_accepted() {
        for (v, want) in [
            ("gzip, deflate, br", true),
            ("br;q=1.0, GZIP;q=0.5", true),
            ("*", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("deflate, br", false),
        ] {
            assert_eq!(
                accepts_gzip(&headers(&[("accept-encoding", v)])),
                want,
                "{v}"
            );
        }
        assert!(!accepts_gzip(&headers(&[])));
        let page = crate::console::find("/assets/common.js").unwrap();
        let plain = super::page(page, &headers(&[]), false);
        assert!(plain.headers().get("content-encoding").is_none());
        let gz = super::page(page, &headers(&[("accept-encoding", "gzip")]), false);
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        assert_eq!(gz.headers()["vary"], "accept-encoding");
        let head = super::page(page, &headers(&[("accept-encoding", "gzip")]), true);
        assert_eq!(head.headers()["content-length"], page.gz.len().to_string());
    }
}
