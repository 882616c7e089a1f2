//! The technician console and the status page in a real headless Chromium (Debian's
//! `chromium` + `chromium-driver`, driven by Python's selenium from Debian in
//! `tests/it/console.py`), against the real agent, a real Mosquitto broker and tokens made
//! with `copilot-edge token add`. The script asks this harness to revoke a token, stop and
//! restart the agent, and stop and restart the broker (`WAIT <what>` on its stdout, `go` on its
//! stdin). Screenshots land in `target/browser-shots/`; with `COPILOT_UPDATE_DOCS=1` they are
//! also copied into `docs/` for the README.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::services::mosquitto_on;
use crate::common::*;

/// A SOP whose title, safety notes and steps carry script and event-handler payloads.
const XSS_SOP: &str = r#"---
id: SOP-XSS-001
title: Widget calibrator drift <script>window.__xss=3</script> <img src=x onerror="window.__xss=4">
equipment: widget calibrator, calibrator
symptoms: widget drift, calibrator offset, zero drift
defects: worn reference <iframe src=javascript:alert(1)>
---
This SOP covers a widget calibrator whose zero drifts <img src=x onerror=alert(1)>.

## Safety
- Isolate the calibrator before opening it <script>alert(1)</script>.

## Steps
1. Zero the calibrator against the reference <b onmouseover=alert(1)>block</b>.
2. Record the offset; replace the reference if it is worn <svg onload=alert(1)>.

## Escalate
- Call metrology <a href="javascript:alert(1)">now</a>.
"#;

fn knowledge_dir(dir: &Path) -> PathBuf {
    let kb = dir.join("kb");
    std::fs::create_dir_all(&kb).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/knowledge");
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            std::fs::copy(&p, kb.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(kb.join("sop-xss-001.md"), XSS_SOP).unwrap();
    kb
}

/// Adds `knowledge_dir` and `assets` (the sample register plus the XSS SOP's calibrator) to the
/// `[paths]` table of a [`config_with`] config.
fn with_knowledge(toml: String, kb: &Path) -> String {
    let assets = kb.with_file_name("assets.csv");
    let mut csv =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/assets.csv"))
            .unwrap();
    csv.push_str("xss-1,widget calibrator,Acme <script>,W-1,Lab,Bench 2\n");
    std::fs::write(&assets, csv).unwrap();
    toml.replacen(
        "[identity]",
        &format!(
            "knowledge_dir = {:?}\nassets = {:?}\n\n[identity]",
            kb.display().to_string(),
            assets.display().to_string()
        ),
        1,
    )
}

fn token_add(config: &Path, dir: &Path, name: &str) -> String {
    let (code, out, err) = run_cli(
        &["token", "add", name, "--config", config.to_str().unwrap()],
        dir,
    );
    assert_eq!(code, 0, "token add: {err}");
    let token = out.trim().to_string();
    assert!(
        token.starts_with("ce_") && !err.contains(&token),
        "{out} / {err}"
    );
    token
}

fn python() -> &'static str {
    // Debian's interpreter: it has python3-selenium (a pyenv python3 on PATH may not).
    "/usr/bin/python3"
}

#[test]
fn console_and_status_page_in_a_real_browser() {
    let dir = TempDir::new("console");
    let kb = knowledge_dir(dir.path());
    let port = free_port();
    let data = TempDir::new("console-mq");
    let mut broker = Some(mosquitto_on(port, data.path()));
    let toml = with_knowledge(
        config_with(
            dir.path(),
            &format!(
                "[metrics]\nsnapshot_interval_secs = 1\n\n[sinks.mqtt]\nenabled = true\nport = {port}\nbacklog_records_per_sec = 2000\n"
            ),
        ),
        &kb,
    );
    let config = dir.path().join("copilot-edge.toml");
    std::fs::write(&config, &toml).unwrap();
    // Personal tokens made with the CLI before the start, and one more while it runs.
    let token = token_add(&config, dir.path(), "anna");
    let (code, listed, _) = run_cli(
        &["token", "list", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0);
    assert!(
        listed.starts_with("anna\t") && !listed.contains(&token),
        "{listed}"
    );

    let mut agent = Some(Agent::spawn(
        serve_command(&config, dir.path()),
        dir.path().to_path_buf(),
        config.clone(),
    ));
    let addr = agent.as_ref().unwrap().addr;
    let token2 = token_add(&config, dir.path(), "ben");
    // The running agent picks the new token up without a restart.
    wait_for("token ben accepted", Duration::from_secs(10), || {
        let r = ureq_get(addr, "/v1/assets", &token2);
        (r == 200).then_some(())
    });

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-shots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/console.py");
    let mut child = Command::new(python())
        .arg(&script)
        .args(["--url", &format!("http://{addr}")])
        .args(["--token", &token, "--token2", &token2])
        .arg("--shots")
        .arg(&shots)
        .args(["--xss-doc", "SOP-XSS-001", "--xss-equipment", "xss-1"])
        .args([
            "--xss-question",
            "widget calibrator zero drift, offset keeps growing",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tests/it/console.py with /usr/bin/python3");
    let mut stdin = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let err_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        eprintln!("browser: {line}");
        seen.push(line.clone());
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "browser test too slow"
        );
        let Some(what) = line.strip_prefix("WAIT ") else {
            continue;
        };
        match what.trim() {
            "revoke_token2" => {
                let (code, _, err) = run_cli(
                    &[
                        "token",
                        "revoke",
                        "ben",
                        "--config",
                        config.to_str().unwrap(),
                    ],
                    dir.path(),
                );
                assert_eq!(code, 0, "{err}");
                wait_for("token ben refused", Duration::from_secs(10), || {
                    (ureq_get(addr, "/v1/assets", &token2) == 401).then_some(())
                });
            }
            "agent_down" => {
                agent.take().unwrap().kill();
            }
            "agent_up" => {
                let mut cmd = Command::new(BIN);
                cmd.args(["serve", "--config"])
                    .arg(&config)
                    .args(["--listen", &addr.to_string()])
                    .current_dir(dir.path());
                agent = Some(Agent::spawn(cmd, dir.path().to_path_buf(), config.clone()));
            }
            "broker_down" => {
                broker.take().unwrap().stop();
            }
            "broker_up" => {
                broker = Some(mosquitto_on(port, data.path()));
            }
            other => panic!("unknown request from the browser script: {other}"),
        }
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
    let status = child.wait().unwrap();
    let errs = err_lines.join().unwrap();
    assert!(
        status.success() && seen.iter().any(|l| l == "ok all"),
        "browser test failed ({status}):\n{}\n--- stderr ---\n{}",
        seen.join("\n"),
        errs.join("\n")
    );
    for name in ["console-tablet.png", "console-phone.png", "status.png"] {
        let p = shots.join(name);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
            "{name}"
        );
        if std::env::var_os("COPILOT_UPDATE_DOCS").is_some() {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&p, docs.join(name)).unwrap();
        }
    }
    // Tokens never reach the logs.
    let logs = agent.as_ref().unwrap().events();
    let text = serde_json::to_string(&logs).unwrap();
    assert!(!text.contains(&token) && !text.contains(&token2));
}

/// Status of an authenticated GET.
fn ureq_get(addr: std::net::SocketAddr, path: &str, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    request(addr, "GET", path, &[("Authorization", &auth)], b"").status
}

#[test]
fn pages_carry_security_headers_and_the_status_api_hides_details_without_a_token() {
    let dir = TempDir::new("pages");
    let kb = knowledge_dir(dir.path());
    let a = Agent::start(
        dir.path(),
        &with_knowledge(config_with(dir.path(), ""), &kb),
    );
    for path in [
        "/",
        "/status",
        "/assets/app.css",
        "/assets/common.js",
        "/assets/console.js",
        "/assets/status.js",
    ] {
        let r = a.get(path);
        assert_eq!(r.status, 200, "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{path}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        let etag = r.header("etag").unwrap().to_string();
        let again = request(a.addr, "GET", path, &[("If-None-Match", &etag)], b"");
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
    }
    assert!(a
        .get("/")
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(a
        .get("/assets/console.js")
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(a.get("/assets/nope.js").status, 404);
    assert_eq!(a.post("/", &serde_json::json!({})).status, 405);

    // Status: public part without a token, details with one.
    let public = a.get("/v1/status").json();
    assert_eq!(public["gateway_id"], "gw-test");
    assert_eq!(public["site"], "plant-7");
    assert_eq!(public["authenticated"], false);
    assert!(public["knowledge_base"]["documents"].as_u64().unwrap() >= 40);
    assert!(public.get("warnings").is_none());
    let full = a.get_auth("/v1/status").json();
    assert_eq!(full["authenticated"], true);
    assert!(full["warnings"].is_array());
    // A wrong token sees the public part, not an error.
    let wrong = request(
        a.addr,
        "GET",
        "/v1/status",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    // A wrong token is a failed authentication like anywhere else (counted, slowed down).
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert_eq!(wrong.json()["error"]["code"], "unauthorized");

    // Documents and assets need a token; a document comes back as Markdown, payloads as text.
    assert_eq!(a.get("/v1/documents/SOP-PMP-001").status, 401);
    assert_eq!(a.get("/v1/assets").status, 401);
    let d = a.get_auth("/v1/documents/SOP-XSS-001");
    assert_eq!(d.status, 200, "{}", d.text());
    let d = d.json();
    assert!(d["title"].as_str().unwrap().contains("<script>"));
    let md = d["markdown"].as_str().unwrap();
    assert!(md.contains("## Steps\n\n1. Zero the calibrator"), "{md}");
    let missing = a.get_auth("/v1/documents/NOPE");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    let assets = a.get_auth("/v1/assets").json();
    let ids: Vec<&str> = assets["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"pump-7") && ids.contains(&"press-12"),
        "{ids:?}"
    );
    assert!(!ids.iter().any(|i| i.contains('*')));
}
