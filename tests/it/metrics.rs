//! The metric set, checked with the real Prometheus tools: `promtool check metrics` on a scrape,
//! and a real Prometheus server scraping the agent and answering PromQL.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::services::{prom_query, prom_value, prometheus, FakeLlm, LlmMode};
use crate::common::*;

const PRESS: &str = "hydraulic press vibrates above 5 mm/s and leaks coolant near the primary line";
const NO_SOP: &str = "how do I reset my email password for the HR portal";

/// Mixed traffic with known outcomes: 7 supported answers, 3 unsupported, ratings 5, 4, 3,
/// some bad requests, and (with the alternating fake LLM) both LLM reports and fallbacks.
fn mixed_traffic(a: &Agent) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = a.diagnose("plant-7", &format!("press-{}", i % 3), PRESS);
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.json()["request_id"].as_str().unwrap().to_string());
    }
    for _ in 0..3 {
        assert_eq!(a.diagnose("plant-7", "kiosk-1", NO_SOP).status, 200);
    }
    for (id, score) in ids.iter().zip([5, 4, 3]) {
        assert_eq!(
            a.post("/v1/feedback", &json!({"request_id": id, "score": score}))
                .status,
            200
        );
    }
    assert_eq!(
        a.post("/v1/diagnose", &json!({"plant_id": "plant-7"}))
            .status,
        422
    );
    assert_eq!(a.get("/nope").status, 404);
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by tests/run");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_exposition() {
    let llm = FakeLlm::start(LlmMode::Alternate);
    let dir = TempDir::new("promtool");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!("[llm]\nurl = \"http://{}\"\ntimeout_ms = 2000\n", llm.addr),
        ),
    );
    mixed_traffic(&a);
    let text = a.get("/metrics").text();
    let (ok, out) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{out}");
    // The check can fail: a counter without _total is reported.
    let (ok, _) =
        promtool_check("# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n");
    assert!(!ok, "promtool must reject a counter without _total");
}

#[test]
fn real_prometheus_sees_every_metric_with_exact_values() {
    let llm = FakeLlm::start(LlmMode::Alternate);
    let dir = TempDir::new("prom");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!(
                "[llm]\nurl = \"http://{}\"\ntimeout_ms = 2000\nbudget_usd_per_day = 5.0\n",
                llm.addr
            ),
        ),
    );
    mixed_traffic(&a);
    let prom = prometheus(&[a.addr], &[], None, &[]);
    wait_for("scrape with traffic", Duration::from_secs(30), || {
        (prom_value(&prom, "sum(copilot_answers_total{gateway_id=\"gw-test\"})") == Some(10.0))
            .then_some(())
    });
    // Every metric, with its labels.
    let expect: &[(&str, &[&str])] = &[
        (
            "copilot_requests_total",
            &["plant_id", "agent_name", "status_code", "gateway_id"],
        ),
        (
            "copilot_latency_seconds_bucket",
            &["plant_id", "agent_name", "le"],
        ),
        (
            "copilot_llm_token_usage_total",
            &["plant_id", "agent_name", "direction"],
        ),
        ("copilot_llm_cost_usd_total", &["plant_id", "agent_name"]),
        ("copilot_hallucination_total", &["plant_id", "agent_name"]),
        ("copilot_hallucination_rate", &["plant_id", "agent_name"]),
        ("copilot_user_feedback_score", &["plant_id", "agent_name"]),
        ("copilot_user_feedback_total", &["plant_id", "agent_name"]),
        (
            "copilot_user_feedback_last_timestamp_seconds",
            &["plant_id", "agent_name"],
        ),
        (
            "copilot_equipment_requests_total",
            &["plant_id", "equipment_id"],
        ),
        ("copilot_active_agents", &["plant_id", "agent_name"]),
        ("copilot_llm_fallback_total", &["plant_id", "reason"]),
        ("copilot_answers_total", &["plant_id", "agent_name"]),
        ("http_requests_total", &["handler", "method", "status"]),
        (
            "http_request_duration_seconds_bucket",
            &["handler", "method", "le"],
        ),
        ("process_resident_memory_bytes", &[]),
        ("process_cpu_seconds_total", &[]),
        ("process_open_fds", &[]),
        ("process_start_time_seconds", &[]),
        ("copilot_edge_build_info", &["version", "target"]),
        ("copilot_edge_llm_budget_usd_per_day", &[]),
    ];
    for (name, labels) in expect {
        let r = prom_query(&prom, name);
        let series = r.as_array().unwrap();
        assert!(!series.is_empty(), "{name} missing in Prometheus");
        for l in labels.iter().chain(&["gateway_id"]) {
            assert!(
                series.iter().all(|s| s["metric"][l].is_string()),
                "{name} lacks label {l}: {r}"
            );
        }
    }
    // Types, from Prometheus' metadata API.
    let meta = request(prom.addr(), "GET", "/api/v1/metadata", &[], b"").json();
    for (name, ty) in [
        ("copilot_requests_total", "counter"),
        ("copilot_latency_seconds", "histogram"),
        ("copilot_hallucination_rate", "gauge"),
        ("copilot_user_feedback_score", "gauge"),
        ("copilot_active_agents", "gauge"),
        ("http_request_duration_seconds", "histogram"),
        ("copilot_llm_cost_usd_total", "counter"),
    ] {
        assert_eq!(
            meta["data"][name][0]["type"], ty,
            "{name}: {}",
            meta["data"][name]
        );
    }
    // Exact values dictated by the traffic.
    let v = |q: &str| prom_value(&prom, q).unwrap_or_else(|| panic!("no value for {q}"));
    assert_eq!(
        v("copilot_hallucination_rate{plant_id=\"plant-7\",agent_name=\"rag_agent\"}"),
        0.3
    );
    assert_eq!(v("copilot_hallucination_total{plant_id=\"plant-7\"}"), 3.0);
    assert_eq!(v("copilot_user_feedback_score{plant_id=\"plant-7\"}"), 4.0);
    assert_eq!(v("copilot_user_feedback_total{plant_id=\"plant-7\"}"), 3.0);
    assert_eq!(
        v("sum(copilot_requests_total{agent_name=\"rag_agent\",status_code=\"200\"})"),
        10.0
    );
    assert_eq!(
        v("sum(copilot_equipment_requests_total{plant_id=\"plant-7\"})"),
        10.0
    );
    assert_eq!(
        v("copilot_equipment_requests_total{equipment_id=\"press-0\"}"),
        3.0
    );
    // 7 supported answers went to the LLM, alternating error / success: 4 fallbacks, 3 reports.
    assert_eq!(v("copilot_llm_fallback_total{reason=\"error\"}"), 4.0);
    assert_eq!(
        v("copilot_llm_token_usage_total{agent_name=\"llm_report_agent\",direction=\"input\"}"),
        333.0
    );
    assert_eq!(v("copilot_active_agents{agent_name=\"rag_agent\"}"), 0.0);
    assert_eq!(v("copilot_edge_llm_budget_usd_per_day"), 5.0);
    let fb_age = v("time() - copilot_user_feedback_last_timestamp_seconds{plant_id=\"plant-7\"}");
    assert!((0.0..120.0).contains(&fb_age), "{fb_age}");
    assert!(v("http_requests_total{handler=\"none\",status=\"4xx\"}") >= 1.0);
    // The SLA query: more traffic after the first scrapes so the rate has two points to work on.
    let p95 = wait_for("a finite P95", Duration::from_secs(30), || {
        assert_eq!(a.diagnose("plant-7", "press-1", PRESS).status, 200);
        prom_value(
            &prom,
            "histogram_quantile(0.95, sum by (le) (rate(copilot_latency_seconds_bucket[1m])))",
        )
        .filter(|p| p.is_finite())
    });
    assert!(
        p95 > 0.0 && p95 <= 0.5,
        "P95 {p95} s on an idle test machine"
    );
}

#[test]
fn request_labels_have_bounded_cardinality() {
    let dir = TempDir::new("card");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            "[labels]\nmax_plants = 4\nmax_equipment_per_plant = 10\n",
        ),
    );
    for i in 0..300 {
        let r = a.diagnose(
            &format!("plant-{i}"),
            &format!("eq-{i}"),
            "conveyor belt drifts to one side",
        );
        assert_eq!(r.status, 200);
    }
    for i in 0..300 {
        assert_eq!(
            a.diagnose(
                "plant-0",
                &format!("eq-{i}"),
                "conveyor belt drifts to one side"
            )
            .status,
            200
        );
    }
    let text = a.get("/metrics").text();
    let series = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .count()
    };
    // 4 plants + _other; equipment: at most 10 per plant label (5 labels) + one _other each.
    assert_eq!(series("copilot_requests_total"), 5, "{text}");
    assert!(
        series("copilot_equipment_requests_total") <= 5 * 11,
        "{}",
        series("copilot_equipment_requests_total")
    );
    assert_eq!(
        metric_in(&text, "copilot_requests_total", &["plant_id=\"_other\""]),
        Some(296.0)
    );
    assert_eq!(
        metric_in(
            &text,
            "copilot_edge_label_overflow_total",
            &["label=\"plant_id\""]
        ),
        Some(296.0)
    );
    assert!(
        metric_in(
            &text,
            "copilot_edge_label_overflow_total",
            &["label=\"equipment_id\""]
        )
        .unwrap()
            >= 290.0
    );
    assert!(
        text.len() < 200_000,
        "exposition grew to {} bytes",
        text.len()
    );
}
