//! The HTTP API against the real binary: endpoints, auth, bad input, trace ids, the LLM
//! fallback, logs and graceful shutdown.

use std::time::Duration;

use serde_json::json;

use crate::common::http::read_response;
use crate::common::services::{FakeLlm, LlmMode};
use crate::common::*;

const PRESS: &str = "hydraulic press vibrates above 5 mm/s and leaks coolant near the primary line";

#[test]
fn health_ready_and_metrics_are_open() {
    let dir = TempDir::new("open");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let h = a.get("/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    assert!(h.header("x-request-trace-id").is_some() && h.header("x-response-time-ms").is_some());
    let r = a.get("/ready");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["checks"]["knowledge_base"]["ok"], true);
    let m = a.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(m.text().contains("copilot_edge_build_info{"));
    assert_eq!(a.stop().code(), Some(0));
}

#[test]
fn diagnose_returns_cited_guidance() {
    let dir = TempDir::new("diag");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let r = a.diagnose("plant-7", "press-12", PRESS);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let rid = v["request_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(rid).is_ok(), "{rid}");
    assert_eq!(v["trace_id"], r.header("x-request-trace-id").unwrap());
    let cited: Vec<&str> = v["rag_guidance"]["cited_documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        cited.contains(&"SOP-HYD-001") && cited.contains(&"SOP-HYD-002"),
        "{cited:?}"
    );
    let steps = v["rag_guidance"]["recommended_steps"].as_array().unwrap();
    assert!(!steps.is_empty());
    for s in steps {
        let s = s.as_str().unwrap();
        assert!(
            s.contains("press-12") && cited.iter().any(|d| s.contains(d)),
            "{s}"
        );
    }
    assert!(
        v["vision_analysis"]["symptoms_found"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "vibration"),
        "{}",
        v["vision_analysis"]
    );
    let c = v["confidence_score"].as_f64().unwrap();
    assert!(c > 0.3 && c < 1.0, "{c}");
    assert_eq!(v["answer_status"], "supported");
    assert_eq!(v["hallucination_flag"], false);
    assert_eq!(v["agent"]["name"], "rag_agent");
    assert!(v["generated_report"].as_str().unwrap().contains("press-12"));
    assert!(
        r.header("x-response-time-ms")
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 0.0
    );
}

#[test]
fn unsupported_question_is_flagged_not_invented() {
    let dir = TempDir::new("idk");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let r = a.diagnose(
        "plant-7",
        "kiosk-1",
        "the HR portal rejects my email password since monday",
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["answer_status"], "no_supporting_document", "{v}");
    assert_eq!(v["hallucination_flag"], true);
    assert!(v["rag_guidance"]["cited_documents"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(v["rag_guidance"]["recommended_steps"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(v["confidence_score"], 0.0);
    assert!(v["generated_report"].as_str().unwrap().contains("No SOP"));
    assert_eq!(
        a.metric("copilot_hallucination_total", &["plant_id=\"plant-7\""]),
        Some(1.0)
    );
}

#[test]
fn auth_is_required_and_checked() {
    let dir = TempDir::new("auth");
    let a = Agent::start(
        dir.path(),
        &config_with(dir.path(), "[server]\nmetrics_require_auth = true\n"),
    );
    let body =
        json!({"plant_id": "plant-7", "equipment_id": "press-12", "problem_description": PRESS})
            .to_string();
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
    ] {
        let mut h = vec![("Content-Type", "application/json")];
        if let Some(x) = auth {
            h.push(("Authorization", x));
        }
        let r = request(a.addr, "POST", "/v1/diagnose", &h, body.as_bytes());
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        assert_eq!(
            r.json()["trace_id"],
            r.header("x-request-trace-id").unwrap()
        );
    }
    assert_eq!(a.get("/metrics").status, 401);
    assert_eq!(
        request(
            a.addr,
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            b""
        )
        .status,
        200
    );
    assert_eq!(a.get("/health").status, 200);
    assert_eq!(a.get("/ready").status, 200);
    assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
}

#[test]
fn first_start_generates_a_private_token() {
    let dir = TempDir::new("token");
    let cfg = format!(
        "[paths]\nstate_dir = {:?}\nlog_dir = {:?}\n",
        dir.path().join("s").display().to_string(),
        dir.path().join("l").display().to_string()
    );
    let a = Agent::start(dir.path(), &cfg);
    let ev = a.wait_event("api_token_generated", Duration::from_secs(5), |_| true);
    let path = std::path::PathBuf::from(ev["path"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(token.len() >= 40);
    let body =
        json!({"plant_id": "p", "equipment_id": "e", "problem_description": PRESS}).to_string();
    let r = request(
        a.addr,
        "POST",
        "/v1/diagnose",
        &[("Authorization", &format!("Bearer {token}"))],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a.stop().code(), Some(0));
    // The same token works after a restart.
    let a = Agent::start(dir.path(), &cfg);
    let r = request(
        a.addr,
        "POST",
        "/v1/diagnose",
        &[("Authorization", &format!("Bearer {token}"))],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn bad_input_gets_a_json_4xx_and_service_carries_on() {
    let dir = TempDir::new("bad");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            "[server]\nmax_body_bytes = 8192\n[labels]\nplant_ids = [\"plant-7\"]\n",
        ),
    );
    let auth = format!("Bearer {TOKEN}");
    let json_h = |extra: Option<(&'static str, &'static str)>| {
        let mut h = vec![("Authorization", auth.as_str())];
        h.push(extra.unwrap_or(("Content-Type", "application/json")));
        h
    };
    let long = "x".repeat(4001);
    let big = format!(
        "{{\"plant_id\":\"plant-7\",\"equipment_id\":\"e\",\"problem_description\":\"{}\"}}",
        "y".repeat(9000)
    );
    let cases: Vec<(&str, &str, Vec<(&str, &str)>, Vec<u8>, u16, &str)> = vec![
        ("malformed json", "/v1/diagnose", json_h(None), b"{\"plant_id\": ".to_vec(), 400, "malformed_json"),
        ("not json at all", "/v1/diagnose", json_h(None), b"hello".to_vec(), 400, "malformed_json"),
        ("invalid utf-8", "/v1/diagnose", json_h(None), b"{\"plant_id\":\"plant-7\",\"equipment_id\":\"e\",\"problem_description\":\"\xff\xfe bad\"}".to_vec(), 400, "malformed_json"),
        ("wrong type", "/v1/diagnose", json_h(None), br#"{"plant_id":7,"equipment_id":"e","problem_description":"pump noise"}"#.to_vec(), 422, "invalid_request"),
        ("missing field", "/v1/diagnose", json_h(None), br#"{"plant_id":"plant-7","problem_description":"pump noise"}"#.to_vec(), 422, "invalid_request"),
        ("array body", "/v1/diagnose", json_h(None), b"[1,2]".to_vec(), 422, "invalid_request"),
        ("over-long description", "/v1/diagnose", json_h(None), format!("{{\"plant_id\":\"plant-7\",\"equipment_id\":\"e\",\"problem_description\":\"{long}\"}}").into_bytes(), 422, "invalid_request"),
        ("empty description", "/v1/diagnose", json_h(None), br#"{"plant_id":"plant-7","equipment_id":"e","problem_description":"  "}"#.to_vec(), 422, "invalid_request"),
        ("bad equipment id", "/v1/diagnose", json_h(None), br#"{"plant_id":"plant-7","equipment_id":"a b/../c","problem_description":"pump noise"}"#.to_vec(), 422, "invalid_request"),
        ("plant not allowed", "/v1/diagnose", json_h(None), br#"{"plant_id":"plant-99","equipment_id":"e","problem_description":"pump noise"}"#.to_vec(), 422, "unknown_plant"),
        ("body too large", "/v1/diagnose", json_h(None), big.into_bytes(), 413, "payload_too_large"),
        ("wrong content type", "/v1/diagnose", json_h(Some(("Content-Type", "text/plain"))), br#"{"plant_id":"plant-7","equipment_id":"e","problem_description":"pump noise"}"#.to_vec(), 415, "unsupported_media_type"),
        ("xml content type", "/v1/feedback", json_h(Some(("Content-Type", "application/xml"))), b"<a/>".to_vec(), 415, "unsupported_media_type"),
        ("bad observation", "/v1/diagnose", json_h(None), br#"{"plant_id":"plant-7","equipment_id":"e","problem_description":"pump noise","observed_defects":[{"label":"crack","confidence":7}]}"#.to_vec(), 422, "invalid_request"),
        ("feedback not uuid", "/v1/feedback", json_h(None), br#"{"request_id":"nope","score":5}"#.to_vec(), 422, "invalid_request"),
        ("feedback float score", "/v1/feedback", json_h(None), br#"{"request_id":"6f1c2d3e-0000-4000-8000-000000000000","score":4.5}"#.to_vec(), 422, "invalid_request"),
    ];
    for (name, path, headers, body, status, code) in &cases {
        let r = request(a.addr, "POST", path, headers, body);
        assert_eq!(r.status, *status, "{name}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], *code, "{name}: {v}");
        assert!(
            !v["error"]["message"].as_str().unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(
            v["trace_id"],
            r.header("x-request-trace-id").unwrap(),
            "{name}"
        );
    }
    assert!(cases.len() >= 15);
    // A lying Content-Length larger than the limit is refused before reading.
    let r = request(
        a.addr,
        "POST",
        "/v1/diagnose",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Length", "999999999"),
        ],
        b"",
    );
    assert_eq!(r.status, 413);
    // Routing errors.
    let r = a.get("/v2/nothing-here");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str().unwrap()),
        (404, "not_found")
    );
    let r = a.get("/v1/diagnose");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    let r = request(a.addr, "DELETE", "/health", &[], b"");
    assert_eq!(r.status, 405);
    // Still serving; nothing above was a 5xx.
    assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
    assert_eq!(a.metric("http_requests_total", &["status=\"5xx\""]), None);
    let bad = a
        .metric(
            "copilot_requests_total",
            &["plant_id=\"_unknown\"", "status_code=\"422\""],
        )
        .unwrap();
    assert!(bad >= 1.0);
}

#[test]
fn trace_ids_are_propagated() {
    let dir = TempDir::new("trace");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let r = request(
        a.addr,
        "GET",
        "/health",
        &[("X-Request-Trace-ID", "tech-tablet-0042")],
        b"",
    );
    assert_eq!(r.header("x-request-trace-id"), Some("tech-tablet-0042"));
    let r = request(
        a.addr,
        "GET",
        "/health",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        b"",
    );
    assert_eq!(
        r.header("x-request-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let r = request(
        a.addr,
        "GET",
        "/health",
        &[(
            "X-Request-Trace-ID",
            "evil value; with spaces and a very long tail",
        )],
        b"",
    );
    let t = r.header("x-request-trace-id").unwrap();
    assert_eq!(t.len(), 32, "{t}");
    let auth = format!("Bearer {TOKEN}");
    let body =
        json!({"plant_id": "plant-7", "equipment_id": "press-12", "problem_description": PRESS})
            .to_string();
    let r = request(
        a.addr,
        "POST",
        "/v1/diagnose",
        &[("Authorization", &auth), ("X-Request-Trace-ID", "wo-5531")],
        body.as_bytes(),
    );
    assert_eq!(r.json()["trace_id"], "wo-5531");
    // Every log event of that request carries the trace id.
    let ev = a.wait_event("request_completed", Duration::from_secs(5), |e| {
        e["trace_id"] == "wo-5531"
    });
    assert_eq!(ev["path"], "/v1/diagnose");
    // request_completed of a diagnose names the answer it gave.
    assert_eq!(ev["request_id"], r.json()["request_id"]);
    assert_eq!(ev["supported"], true);
    // So does every other event of that request (here: a question no SOP covers).
    let idk = serde_json::json!({"plant_id": "plant-7", "equipment_id": "kiosk", "problem_description": "how do I reset my email password"}).to_string();
    request(
        a.addr,
        "POST",
        "/v1/diagnose",
        &[("Authorization", &auth), ("X-Request-Trace-ID", "wo-5532")],
        idk.as_bytes(),
    );
    a.wait_event("no_supporting_document", Duration::from_secs(5), |e| {
        e["trace_id"] == "wo-5532"
    });
}

#[test]
fn feedback_rates_real_answers_once() {
    let dir = TempDir::new("fb");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let rid = a.diagnose("plant-7", "press-12", PRESS).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = a.post(
        "/v1/feedback",
        &json!({"request_id": rid, "score": 4, "comment": "worked, coupling spider was cracked"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "recorded");
    let again = a.post("/v1/feedback", &json!({"request_id": rid, "score": 5}));
    assert_eq!(
        (
            again.status,
            again.json()["error"]["code"].as_str().unwrap()
        ),
        (409, "already_rated")
    );
    let unknown = a.post(
        "/v1/feedback",
        &json!({"request_id": uuid::Uuid::new_v4().to_string(), "score": 5}),
    );
    assert_eq!(
        (
            unknown.status,
            unknown.json()["error"]["code"].as_str().unwrap()
        ),
        (404, "unknown_request_id")
    );
    for score in [0, 6, -1] {
        let rid2 = a.diagnose("plant-7", "press-12", PRESS).json()["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            a.post("/v1/feedback", &json!({"request_id": rid2, "score": score}))
                .status,
            422,
            "score {score}"
        );
    }
    assert_eq!(
        a.metric("copilot_user_feedback_score", &["plant_id=\"plant-7\""]),
        Some(4.0)
    );
    assert_eq!(
        a.metric("copilot_user_feedback_total", &["plant_id=\"plant-7\""]),
        Some(1.0)
    );
    assert_eq!(
        a.metric(
            "copilot_requests_total",
            &["agent_name=\"feedback\"", "status_code=\"200\""]
        ),
        Some(1.0)
    );
}

#[test]
fn feedback_window_is_bounded() {
    let dir = TempDir::new("fbwin");
    let a = Agent::start(
        dir.path(),
        &config_with(dir.path(), "[engine]\nrecent_answers = 16\n"),
    );
    let first = a.diagnose("plant-7", "press-12", PRESS).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..200 {
        assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
    }
    assert_eq!(
        a.post("/v1/feedback", &json!({"request_id": first, "score": 3}))
            .status,
        404
    );
}

#[test]
fn llm_writes_the_report_when_reachable() {
    let llm = FakeLlm::start(LlmMode::Ok);
    let dir = TempDir::new("llm");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!(
                "[llm]\nurl = \"http://{}\"\nmodel = \"llama-3-8b\"\napi_key = \"sk-test\"\n",
                llm.addr
            ),
        ),
    );
    let v = a.diagnose("plant-7", "press-12", PRESS).json();
    assert_eq!(
        v["generated_report"],
        "LLM REPORT: follow SOP-HYD-001 [SOP-HYD-001]."
    );
    assert_eq!(v["agent"]["name"], "llm_report_agent");
    assert_eq!(v["agent"]["engine"], "llm:llama-3-8b");
    assert_eq!(v["agent"]["fallback"], false);
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 111, "output_tokens": 22})
    );
    // The retrieved passages were the model's context; steps still come from the SOPs.
    let sent = llm.last_body.lock().unwrap().clone();
    assert!(
        sent.contains("SOP-HYD-001") && sent.contains("llama-3-8b"),
        "{sent}"
    );
    assert!(!v["rag_guidance"]["recommended_steps"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        a.metric(
            "copilot_llm_token_usage_total",
            &["agent_name=\"llm_report_agent\"", "direction=\"input\""]
        ),
        Some(111.0)
    );
    assert_eq!(
        a.metric(
            "copilot_llm_token_usage_total",
            &["agent_name=\"llm_report_agent\"", "direction=\"output\""]
        ),
        Some(22.0)
    );
    let cost = a
        .metric("copilot_llm_cost_usd_total", &["plant_id=\"plant-7\""])
        .unwrap();
    assert!(
        (cost - (0.111 * 0.0005 + 0.022 * 0.0015)).abs() < 1e-9,
        "{cost}"
    );
    // The same call in the OpenTelemetry GenAI names: one chat operation, the reported tokens.
    let genai = [
        "gen_ai_operation_name=\"chat\"",
        "gen_ai_provider_name=\"openai\"",
        "gen_ai_request_model=\"llama-3-8b\"",
    ];
    for (kind, n) in [("input", 111.0), ("output", 22.0)] {
        let token_type = format!("gen_ai_token_type=\"{kind}\"");
        let mut labels = genai.to_vec();
        labels.push(&token_type);
        assert_eq!(
            a.metric("gen_ai_client_token_usage_sum", &labels),
            Some(n),
            "{kind}"
        );
    }
    assert_eq!(
        a.metric("gen_ai_client_operation_duration_seconds_count", &genai),
        Some(1.0)
    );
    assert_eq!(
        a.metric(
            "gen_ai_client_operation_duration_seconds_count",
            &[
                "gen_ai_operation_name=\"invoke_agent\"",
                "gen_ai_request_model=\"bm25-local\""
            ]
        ),
        Some(1.0)
    );
    // An unsupported question is never sent to the model.
    let before = llm.requests.load(std::sync::atomic::Ordering::Relaxed);
    a.diagnose("plant-7", "x", "how do I reset my email password");
    assert_eq!(
        llm.requests.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
}

#[test]
fn llm_failures_fall_back_to_local_answers() {
    let slow = FakeLlm::start(LlmMode::Slow(Duration::from_secs(3)));
    let failing = FakeLlm::start(LlmMode::Error);
    let closed = free_port();
    for (url, reason) in [
        (slow.addr.to_string(), "timeout"),
        (failing.addr.to_string(), "error"),
        (format!("127.0.0.1:{closed}"), "unreachable"),
    ] {
        let dir = TempDir::new("fallback");
        let a = Agent::start(
            dir.path(),
            &config_with(
                dir.path(),
                &format!("[llm]\nurl = \"http://{url}\"\ntimeout_ms = 300\n"),
            ),
        );
        let r = a.diagnose("plant-7", "press-12", PRESS);
        assert_eq!(r.status, 200, "{reason}: {}", r.text());
        let v = r.json();
        assert_eq!(v["agent"]["fallback"], true, "{reason}");
        assert_eq!(v["agent"]["fallback_reason"], reason);
        assert_eq!(v["agent"]["name"], "rag_agent");
        assert!(
            v["generated_report"].as_str().unwrap().contains("SOP-HYD"),
            "{reason}"
        );
        assert_eq!(
            a.metric(
                "copilot_llm_fallback_total",
                &[&format!("reason=\"{reason}\"")]
            ),
            Some(1.0),
            "{reason}"
        );
        a.wait_event("llm_fallback", Duration::from_secs(5), |e| {
            e["reason"] == reason
        });
        // The failed call is an operation with its error type; no tokens are reported.
        assert_eq!(
            a.metric(
                "gen_ai_client_operation_duration_seconds_count",
                &[
                    "gen_ai_operation_name=\"chat\"",
                    &format!("error_type=\"{reason}\"")
                ]
            ),
            Some(1.0),
            "{reason}"
        );
        assert_eq!(a.metric("gen_ai_client_token_usage_count", &[]), None);
    }
}

#[test]
fn log_files_hold_structured_request_events() {
    // The upstream answers after 200 ms and the agent gives up at 20 ms, so
    // the request always outlasts the 1 ms SLA, however fast the engine is.
    let llm = FakeLlm::start(LlmMode::Slow(Duration::from_millis(200)));
    let dir = TempDir::new("logs");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!(
                "[server]\nsla_ms = 1\n[llm]\nurl = \"http://{}\"\ntimeout_ms = 20\n",
                llm.addr
            ),
        ),
    );
    let r = request(
        a.addr,
        "POST",
        "/v1/diagnose",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("X-Request-Trace-ID", "log-check-1"),
        ],
        json!({"plant_id": "plant-7", "equipment_id": "press-12", "problem_description": PRESS})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(a.stop().code(), Some(0));
    let text = std::fs::read_to_string(dir.path().join("logs/copilot-edge.log")).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let done = events
        .iter()
        .find(|e| e["event"] == "request_completed" && e["trace_id"] == "log-check-1")
        .expect("request_completed in file");
    for key in [
        "timestamp",
        "level",
        "trace_id",
        "method",
        "path",
        "status_code",
        "duration_ms",
        "user_id",
        "plant_id",
        "equipment_id",
    ] {
        assert!(!done[key].is_null(), "missing {key} in {done}");
    }
    assert_eq!(done["user_id"], "technician-42");
    assert_eq!(done["status_code"], 200);
    assert_eq!(done["equipment_id"], "press-12");
    assert!(done["duration_ms"].as_f64().unwrap() > 0.0);
    let slow = events
        .iter()
        .find(|e| e["event"] == "high_latency_detected" && e["trace_id"] == "log-check-1")
        .expect("high_latency_detected");
    assert_eq!(slow["level"], "warn");
    assert!(events.iter().any(|e| e["event"] == "stopped"));
}

#[test]
fn sigterm_finishes_in_flight_requests() {
    let llm = FakeLlm::start(LlmMode::Slow(Duration::from_millis(1500)));
    let dir = TempDir::new("drain");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!("[llm]\nurl = \"http://{}\"\ntimeout_ms = 5000\n", llm.addr),
        ),
    );
    let addr = a.addr;
    let inflight = std::thread::spawn(move || {
        request(
            addr,
            "POST",
            "/v1/diagnose",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            json!({"plant_id": "plant-7", "equipment_id": "press-12", "problem_description": PRESS}).to_string().as_bytes(),
        )
    });
    wait_for("llm called", Duration::from_secs(5), || {
        (llm.requests.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(())
    });
    a.signal(libc::SIGTERM);
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request must complete");
    assert_eq!(r.json()["agent"]["name"], "llm_report_agent");
    let st = a.stop();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn cli_checks_configs_and_prints_defaults() {
    let dir = TempDir::new("cli");
    let (code, out, _) = run_cli(&["--version"], dir.path());
    assert_eq!(code, 0);
    assert!(out.starts_with("copilot-edge "));
    let (code, default, _) = run_cli(&["print-default-config"], dir.path());
    assert_eq!(code, 0);
    std::fs::write(dir.path().join("default.toml"), &default).unwrap();
    let (code, out, err) = run_cli(
        &[
            "check-config",
            dir.path().join("default.toml").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(dir.path().join("bad.toml"), "[server]\nlisten = \"nowhere\"\nsla_ms = 0\n[sinks.mqtt]\nenabled = true\nformat = \"xml\"\n").unwrap();
    let (code, _, err) = run_cli(
        &[
            "check-config",
            dir.path().join("bad.toml").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 78);
    for key in ["server.listen", "server.sla_ms", "sinks.mqtt.format"] {
        assert!(err.contains(key), "{key} not in {err}");
    }
    std::fs::write(
        dir.path().join("typo.toml"),
        "[server]\nlisen = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(
        &[
            "check-config",
            dir.path().join("typo.toml").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 78);
    assert!(err.contains("lisen"), "{err}");
    let (code, _, _) = run_cli(
        &[
            "serve",
            "--config",
            dir.path().join("bad.toml").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, 78, "serve exits 78 on a bad config");
    let (code, _, _) = run_cli(&["check-config", "/nonexistent.toml"], dir.path());
    assert_eq!(code, 78);
}

#[test]
fn slow_headers_are_cut_off_and_connections_are_capped() {
    use std::io::{Read, Write};
    let dir = TempDir::new("limits");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            "[server]\nheader_read_timeout_secs = 1\nmax_connections = 2\n",
        ),
    );
    // A client that never finishes its headers is disconnected after the header read timeout.
    let mut slow = std::net::TcpStream::connect(a.addr).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // Two idle keep-alive connections from 127.0.0.1 take both slots: a third from the same
    // address is refused at once (503: that address holds every slot), while one from an
    // address holding none gets a slot that 127.0.0.1 gives up (its newest idle connection).
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(a.addr).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut b = [0u8; 512];
            let n = s.read(&mut b).unwrap();
            assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    let r = request(a.addr, "GET", "/health", &[], b"");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "server_full");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut other = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        sock.connect(a.addr).await.unwrap().into_std().unwrap()
    });
    other.set_nonblocking(false).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut other).status, 200);
    drop(other);
    // Read over a new connection from 127.0.0.1, which can find both slots still taken until
    // the server has closed `other` (a 503 then): asked again until it gets the page.
    wait_for("the eviction counted", Duration::from_secs(5), || {
        a.metric("copilot_edge_http_rejected_total", &["reason=\"evicted\""])
            .filter(|v| *v >= 1.0)
    });
    drop(held);
}
