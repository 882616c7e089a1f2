//! A thin client for Prometheus' HTTP API (`/api/v1/query`, `/api/v1/query_range`) over
//! [`crate::httpc`]: one POST per query (form-encoded, so long PromQL never meets a URL length
//! limit), the JSON answer parsed with serde_json into plain samples and series. Everything
//! about *what* to ask lives in `query`; this file only knows the wire format.
//!
//! Errors keep their context: the server URL for connection problems, the PromQL text and
//! Prometheus' own `errorType`/`error` for a refused query.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;

use super::ReportError;

/// Per-query deadline: a week of raw `ALERTS` samples on a busy server can take a while.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer accepted (a week of raw samples for many alert series).
const MAX_BODY: usize = 64 << 20;

/// Labels of a series, without `__name__` unless the query kept it.
pub type Labels = BTreeMap<String, String>;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's labels.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

/// One series of a matrix: `(unix seconds, value)` points in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: Labels,
    /// `(unix seconds, value)` points in time order.
    pub points: Vec<(f64, f64)>,
}

/// Where Prometheus is: `http://host[:port][/prefix]`.
#[derive(Debug, Clone)]
pub struct Prometheus {
    /// The URL as the user gave it (for messages).
    pub url: String,
    authority: String,
    prefix: String,
}

impl Prometheus {
    /// Parses the base URL. Only `http://` is supported (the client has no TLS).
    pub fn new(url: &str) -> Result<Prometheus, ReportError> {
        let bad = |reason: &str| ReportError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "scheme {scheme}:// is not supported (only http://; put a local proxy in front for TLS)"
                )))
            }
            None => return Err(bad("expected http://host:port")),
        };
        let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host_port.is_empty() || host_port.contains('@') {
            return Err(bad("expected http://host:port (no user info)"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("no query string or fragment expected"));
        }
        let has_port = match host_port.rsplit_once(':') {
            // "[::1]" alone has colons but no port.
            Some((_, port)) if !host_port.ends_with(']') => {
                port.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?;
                true
            }
            _ => false,
        };
        let authority = if has_port {
            host_port.to_string()
        } else {
            format!("{host_port}:80")
        };
        let prefix = path.trim_end_matches('/');
        Ok(Prometheus {
            url: url.to_string(),
            authority,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            },
        })
    }

    /// The `host:port` connected to.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// An instant query evaluated at `time`, whose result is a vector (or scalar).
    pub async fn vector(&self, query: &str, time: i64) -> Result<Vec<Sample>, ReportError> {
        let data = self
            .call("query", query, &[("time", time.to_string())])
            .await?;
        parse_vector(&data).map_err(|reason| self.bad(query, reason))
    }

    /// An instant query whose result is a matrix: a range selector such as `ALERTS[7d]`, which
    /// returns the raw samples.
    pub async fn raw(&self, query: &str, time: i64) -> Result<Vec<Series>, ReportError> {
        let data = self
            .call("query", query, &[("time", time.to_string())])
            .await?;
        parse_matrix(&data).map_err(|reason| self.bad(query, reason))
    }

    /// A range query from `start` to `end` (inclusive) every `step` seconds.
    pub async fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Series>, ReportError> {
        let params = [
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        let data = self.call("query_range", query, &params).await?;
        parse_matrix(&data).map_err(|reason| self.bad(query, reason))
    }

    fn bad(&self, query: &str, reason: String) -> ReportError {
        ReportError::BadResponse {
            url: self.url.clone(),
            query: query.to_string(),
            reason,
        }
    }

    /// POSTs one query and returns the `data` object of a successful answer.
    async fn call(
        &self,
        endpoint: &str,
        query: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, ReportError> {
        let mut body = format!("query={}", form_encode(query));
        for (k, v) in params {
            body.push_str(&format!("&{k}={}", form_encode(v)));
        }
        let req = Request::post(format!("{}/api/v1/{endpoint}", self.prefix))
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.bad(query, format!("cannot build the request: {e}")))?;
        let endpoint = crate::config::Endpoint {
            authority: self.authority.clone(),
            host: String::new(),
            tls: None,
        };
        let (status, body) = crate::httpc::send(&endpoint, req, QUERY_TIMEOUT, MAX_BODY)
            .await
            .map_err(|source| ReportError::Unreachable {
                url: self.url.clone(),
                source,
            })?;
        let json: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                return Err(self.bad(
                    query,
                    format!("HTTP {status}, not a Prometheus API answer ({e}): {snippet:?}"),
                ));
            }
        };
        if json["status"] == "success" {
            return Ok(json["data"].clone());
        }
        Err(ReportError::Query {
            url: self.url.clone(),
            query: query.to_string(),
            status,
            error_type: json["errorType"].as_str().unwrap_or("unknown").to_string(),
            message: json["error"]
                .as_str()
                .unwrap_or("(no error message)")
                .to_string(),
        })
    }
}

/// `application/x-www-form-urlencoded` value encoding.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Prometheus sends sample values as strings, including `NaN`, `+Inf` and `-Inf`.
fn parse_value(v: &serde_json::Value) -> Result<f64, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("sample value {v} is not a string"))?;
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse()
            .map_err(|_| format!("sample value {s:?} is not a number")),
    }
}

fn parse_point(p: &serde_json::Value) -> Result<(f64, f64), String> {
    let ts = p[0]
        .as_f64()
        .ok_or_else(|| format!("point {p} has no timestamp"))?;
    Ok((ts, parse_value(&p[1])?))
}

fn parse_labels(m: &serde_json::Value) -> Result<Labels, String> {
    let obj = m
        .as_object()
        .ok_or_else(|| format!("metric {m} is not an object"))?;
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| format!("label {k} is not a string"))
        })
        .collect()
}

/// `data` of a vector (or scalar) answer.
pub fn parse_vector(data: &serde_json::Value) -> Result<Vec<Sample>, String> {
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or("vector result is not an array")?
            .iter()
            .map(|r| {
                Ok(Sample {
                    labels: parse_labels(&r["metric"])?,
                    value: parse_point(&r["value"])?.1,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: Labels::new(),
            value: parse_point(&data["result"])?.1,
        }]),
        other => Err(format!("expected a vector result, got {other:?}")),
    }
}

/// `data` of a matrix answer.
pub fn parse_matrix(data: &serde_json::Value) -> Result<Vec<Series>, String> {
    if data["resultType"] != "matrix" {
        return Err(format!(
            "expected a matrix result, got {:?}",
            data["resultType"].as_str()
        ));
    }
    data["result"]
        .as_array()
        .ok_or("matrix result is not an array")?
        .iter()
        .map(|r| {
            let points = r["values"]
                .as_array()
                .ok_or("series without values")?
                .iter()
                .map(parse_point)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Series {
                labels: parse_labels(&r["metric"])?,
                points,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_split_into_authority_and_prefix_or_are_refused() {
        let ok = [
            ("http://127.0.0.1:9090", "127.0.0.1:9090", ""),
            ("http://prom:9090/", "prom:9090", ""),
            ("http://prom/prometheus/", "prom:80", "/prometheus"),
            ("HTTP://[::1]:9090/a/b", "[::1]:9090", "/a/b"),
            ("http://[::1]", "[::1]:80", ""),
        ];
        for (url, authority, prefix) in ok {
            let p = Prometheus::new(url).unwrap();
            assert_eq!(
                (p.authority(), p.prefix.as_str()),
                (authority, prefix),
                "{url}"
            );
        }
        for bad in [
            "https://prom:9090",
            "prom:9090",
            "http://",
            "http://a:b",
            "http://u@p:1",
            "http://p:1/?x",
        ] {
            assert!(Prometheus::new(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode(r#"sum(x{a="b c"}[7d]) / 2 + 1"#),
            "sum%28x%7Ba%3D%22b+c%22%7D%5B7d%5D%29+%2F+2+%2B+1"
        );
        assert_eq!(form_encode("é"), "%C3%A9");
    }

    #[test]
    fn vectors_scalars_and_special_values() {
        let v = parse_vector(&json!({"resultType": "vector", "result": [
            {"metric": {"plant_id": "p"}, "value": [1.5, "3.25"]},
            {"metric": {}, "value": [1.5, "NaN"]},
            {"metric": {}, "value": [1.5, "+Inf"]}
        ]}))
        .unwrap();
        assert_eq!(v[0].labels["plant_id"], "p");
        assert_eq!(v[0].value, 3.25);
        assert!(v[1].value.is_nan());
        assert_eq!(v[2].value, f64::INFINITY);
        let s = parse_vector(&json!({"resultType": "scalar", "result": [1.5, "7"]})).unwrap();
        assert_eq!(s[0].value, 7.0);
        assert!(parse_vector(&json!({"resultType": "matrix", "result": []})).is_err());
        assert!(parse_vector(
            &json!({"resultType": "vector", "result": [{"metric": {}, "value": [1, 2]}]})
        )
        .is_err());
    }

    #[test]
    fn matrices_parse_and_other_result_types_are_refused() {
        let m = parse_matrix(&json!({"resultType": "matrix", "result": [
            {"metric": {"alertname": "A"}, "values": [[10, "1"], [70, "1"]]}
        ]}))
        .unwrap();
        assert_eq!(m[0].labels["alertname"], "A");
        assert_eq!(m[0].points, vec![(10.0, 1.0), (70.0, 1.0)]);
        assert!(parse_matrix(&json!({"resultType": "vector", "result": []})).is_err());
    }
}
