//! The shipped central stack, run for real: `config/central/prometheus.yml` (ports rewritten to
//! the test's, intervals shortened) with the shipped rules scrapes a real agent, fires an alert
//! into a real Alertmanager running the shipped `alertmanager.yml`, which routes it to the
//! expected receiver; and every dashboard panel query runs against that Prometheus.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::services::{alertmanager, prometheus_with_config, FakeLlm, LlmMode};
use crate::common::*;

const NO_SOP: &str = "how do I reset my email password for the HR portal";
const PRESS: &str = "hydraulic press vibrates above 5 mm/s and leaks coolant near the primary line";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Records webhook POSTs: (path, body).
fn webhook_sink() -> (u16, Arc<Mutex<Vec<(String, String)>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let Some(req) = crate::common::http::read_request(&c) else {
                continue;
            };
            g2.lock()
                .unwrap()
                .push((req.path, String::from_utf8_lossy(&req.body).into_owned()));
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

/// A copy of a rules file with every `for:` shortened and group intervals at 1 s.
pub(crate) fn fast_rules(src: &Path, dst: &Path) {
    let text = std::fs::read_to_string(src).unwrap();
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if t.starts_with("for:") {
                format!("{indent}for: 2s")
            } else if t.starts_with("interval:") {
                format!("{indent}interval: 1s")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(dst, out.join("\n")).unwrap();
}

#[test]
fn shipped_stack_fires_routes_and_dashboard_queries_work() {
    // The agent, with traffic that drives the hallucination rate far over 15 %.
    let llm = FakeLlm::start(LlmMode::Alternate);
    let dir = TempDir::new("alerts");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            &format!("[llm]\nurl = \"http://{}\"\ntimeout_ms = 2000\nbudget_usd_per_day = 1.0\n[metrics]\nsnapshot_interval_secs = 1\n[sinks.mqtt]\nenabled = true\nport = {}\n", llm.addr, free_port()),
        ),
    );
    let drive = |a: &Agent| {
        let rid = a.diagnose("plant-7", "press-12", PRESS).json()["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            a.post("/v1/feedback", &json!({"request_id": rid, "score": 2}))
                .status,
            200
        );
        for _ in 0..3 {
            assert_eq!(a.diagnose("plant-7", "kiosk-1", NO_SOP).status, 200);
        }
    };
    drive(&a);

    // Alertmanager with the shipped routing; webhooks go to the test's recorder.
    let (hook_port, hooks) = webhook_sink();
    let am_cfg = std::fs::read_to_string(repo().join("alerts/alertmanager.yml"))
        .unwrap()
        .replace("127.0.0.1:9099", &format!("127.0.0.1:{hook_port}"));
    let am_cfg: String = am_cfg
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if t.starts_with("group_wait:") {
                format!("{indent}group_wait: 1s")
            } else if t.starts_with("group_interval:") {
                format!("{indent}group_interval: 1s")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let am = alertmanager(&am_cfg);

    // The central Prometheus config, ports rewritten, intervals shortened, rules copied.
    let pdir = TempDir::new("central");
    fast_rules(
        &repo().join("alerts/copilot-edge.rules.yml"),
        &pdir.path().join("rules.yml"),
    );
    fast_rules(
        &repo().join("alerts/copilot-edge.recording.yml"),
        &pdir.path().join("recording.yml"),
    );
    let port = free_port();
    let central = std::fs::read_to_string(repo().join("config/central/prometheus.yml")).unwrap();
    assert!(
        central.contains("../../alerts/copilot-edge.rules.yml")
            && central.contains("127.0.0.1:8080"),
        "central config changed shape"
    );
    let cfg = central
        .replace(
            "../../alerts/copilot-edge.rules.yml",
            pdir.path().join("rules.yml").to_str().unwrap(),
        )
        .replace(
            "../../alerts/copilot-edge.recording.yml",
            pdir.path().join("recording.yml").to_str().unwrap(),
        )
        .replace("127.0.0.1:9093", &am.addr().to_string())
        .replace("127.0.0.1:8080", &a.addr.to_string())
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{port}"))
        .replace("gw-example-01", "gw-test")
        .replace("plant-example", "plant-7")
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    let prom = prometheus_with_config(port, pdir, &cfg, &[]);

    // Keep traffic flowing until the critical hallucination alert reaches the pager receiver.
    let alert = wait_for(
        "HighHallucinationRate routed to ai-operations-pager",
        Duration::from_secs(90),
        || {
            drive(&a);
            std::thread::sleep(Duration::from_millis(300));
            let v = request(
                am.addr(),
                "GET",
                "/api/v2/alerts?filter=alertname%3D%22HighHallucinationRate%22",
                &[],
                b"",
            )
            .json();
            v.as_array()?
                .iter()
                .find(|al| {
                    al["labels"]["severity"] == "critical"
                        && al["receivers"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|x| x["name"] == "ai-operations-pager"))
                })
                .cloned()
        },
    );
    assert_eq!(alert["labels"]["plant_id"], "plant-7");
    assert_eq!(alert["labels"]["gateway_id"], "gw-test");
    assert_eq!(alert["labels"]["team"], "ai_operations");
    assert!(alert["annotations"]["runbook_url"]
        .as_str()
        .unwrap()
        .contains("RUNBOOK.md#highhallucinationrate"));
    // The webhook of that receiver was called with the alert.
    wait_for("pager webhook", Duration::from_secs(30), || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|(p, b)| p == "/ai-operations-pager" && b.contains("HighHallucinationRate"))
            .then_some(())
    });
    // The warning of the same alert is inhibited by the critical one.
    let v = request(
        am.addr(),
        "GET",
        "/api/v2/alerts?filter=alertname%3D%22HighHallucinationRate%22&inhibited=true",
        &[],
        b"",
    )
    .json();
    if let Some(w) = v
        .as_array()
        .unwrap()
        .iter()
        .find(|al| al["labels"]["severity"] == "warning")
    {
        assert!(
            !w["status"]["inhibitedBy"].as_array().unwrap().is_empty(),
            "warning not inhibited: {w}"
        );
    }

    // Every dashboard query runs without error; the core panels have data.
    let require = r"^(P95 latency|Hallucination rate|Average feedback|Requests / s|Latency P50 / P95 / P99|Requests per second by status code|Token rate by direction|Top equipment|LLM fallbacks by reason|User feedback|Gateway up|Sink status|Spool backlog \(records\)|Memory \(RSS\)|Agent versions|Hallucination ratio by plant \(recorded\)|P95 latency by plant \(recorded\)|GenAI operation duration P95 by operation and model)$";
    assert_dashboard_queries(&prom.url(), require);
}
