//! Trust: the tokens file as a small database (names, locking, modes), the first-start token's
//! rule, guessing made visible and slowed down, the DNS-rebinding `Host` check, `/ready` without
//! paths, and CLI output that ends quietly on a closed pipe. Each against the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::http::read_response;
use crate::common::*;

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A config whose only tokens are the tokens file's (no inline token).
fn file_only_config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\nstate_dir = {:?}\nlog_dir = {:?}\n",
            dir.join("data/state").display().to_string(),
            dir.join("data/logs").display().to_string()
        ),
    )
    .unwrap();
    cfg
}

fn token_cmd(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", cfg.to_str().unwrap()]);
    run_cli(&all, cfg.parent().unwrap())
}

fn bearer_status(a: &Agent, token: &str) -> u16 {
    request(
        a.addr,
        "GET",
        "/v1/assets",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    )
    .status
}

#[test]
fn a_token_name_with_a_colon_is_refused_and_the_file_keeps_parsing() {
    let dir = TempDir::new("tok-name");
    let cfg = file_only_config(dir.path());
    let (code, out, err) = token_cmd(&cfg, &["add", "ops:dave"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.is_empty(), "no token printed: {out}");
    assert!(err.contains("A-Z a-z 0-9 . _ -"), "{err}");
    let (code, _, err) = token_cmd(&cfg, &["add", "ops.dave"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = token_cmd(&cfg, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ops.dave\t"), "{out}");
    // The agent starts on that file.
    let a = Agent::spawn(
        serve_command(&cfg, dir.path()),
        dir.path().to_path_buf(),
        cfg.clone(),
    );
    assert_eq!(a.get("/health").status, 200);
}

#[test]
fn concurrent_token_commands_never_lose_a_change() {
    let dir = TempDir::new("tok-race");
    let cfg = file_only_config(dir.path());
    let tokens_file = dir.path().join("data/state/tokens");
    let (code, _, err) = token_cmd(&cfg, &["add", "seed"]);
    assert_eq!(code, 0, "{err}");
    let mut kept: Vec<String> = Vec::new();
    let mut revoked: Vec<String> = Vec::new();
    let (_, first, _) = token_cmd(&cfg, &["add", "victim-0"]);
    let mut victim = first.trim().to_string();
    for round in 0..20 {
        // Eight adds and one revoke at once, as separate processes.
        let mut children: Vec<(String, std::process::Child)> = (0..8)
            .map(|i| {
                let name = format!("r{round}-u{i}");
                let child = Command::new(BIN)
                    .args(["token", "add", &name, "--config", cfg.to_str().unwrap()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (name, child)
            })
            .collect();
        let revoke = Command::new(BIN)
            .args(["token", "revoke", &format!("victim-{round}"), "--config"])
            .arg(&cfg)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((String::new(), revoke));
        for (name, child) in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if !name.is_empty() {
                kept.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
        }
        revoked.push(std::mem::take(&mut victim));
        let (code, out, err) = token_cmd(&cfg, &["add", &format!("victim-{}", round + 1)]);
        assert_eq!(code, 0, "{err}");
        victim = out.trim().to_string();
        // The file parses after every round and holds exactly what was said.
        let (code, list, err) = token_cmd(&cfg, &["list"]);
        assert_eq!(code, 0, "round {round}: {err}");
        assert_eq!(
            list.lines().count(),
            1 + 8 * (round + 1) + 1,
            "round {round}:\n{list}"
        );
        assert!(
            !list.contains(&format!("victim-{round}\t")),
            "round {round}: revoke lost"
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(tokens_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Every printed token is valid, every revoked one is not, on the real agent.
    let a = Agent::spawn(
        serve_command(&cfg, dir.path()),
        dir.path().to_path_buf(),
        cfg.clone(),
    );
    assert_eq!(kept.len(), 160);
    for t in &kept {
        assert_eq!(bearer_status(&a, t), 200, "a printed token does not work");
    }
    for t in &revoked {
        assert_eq!(bearer_status(&a, t), 401, "a revoked token still works");
    }
}

#[test]
fn umask_000_and_loose_modes_are_tightened() {
    let dir = TempDir::new("tok-umask");
    let cfg = file_only_config(dir.path());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {BIN} token add anna --config {}",
            cfg.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = dir.path().join("data/state");
    assert_eq!(mode_of(&dir.path().join("data")), 0o700);
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&state.join("tokens")), 0o644);
    // Loosened by hand (or by an older version): serve repairs both and says so.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(state.join("tokens"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let a = Agent::spawn(
        serve_command(&cfg, dir.path()),
        dir.path().to_path_buf(),
        cfg.clone(),
    );
    a.wait_event(
        "tokens_file_permissions_repaired",
        Duration::from_secs(5),
        |_| true,
    );
    a.wait_event(
        "state_dir_permissions_repaired",
        Duration::from_secs(5),
        |_| true,
    );
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&state.join("tokens")), 0o644);
    // And while it runs: a file made writable for others is repaired at the next poll.
    std::fs::set_permissions(state.join("tokens"), std::fs::Permissions::from_mode(0o666)).unwrap();
    wait_for("the tokens file repaired", Duration::from_secs(10), || {
        (mode_of(&state.join("tokens")) == 0o644).then_some(())
    });
}

#[test]
fn the_first_start_token_holds_until_it_is_revoked() {
    let dir = TempDir::new("tok-first");
    let cfg = file_only_config(dir.path());
    let a = Agent::spawn(
        serve_command(&cfg, dir.path()),
        dir.path().to_path_buf(),
        cfg.clone(),
    );
    let ev = a.wait_event("api_token_generated", Duration::from_secs(5), |_| true);
    let path = std::path::PathBuf::from(ev["path"].as_str().unwrap());
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(bearer_status(&a, &first), 200);
    // A personal token added, then a restart: the first-start token still works and is listed.
    let (code, out, _) = token_cmd(&cfg, &["add", "anna"]);
    assert_eq!(code, 0);
    let anna = out.trim().to_string();
    drop(a);
    let a = Agent::spawn(
        serve_command(&cfg, dir.path()),
        dir.path().to_path_buf(),
        cfg.clone(),
    );
    assert_eq!(bearer_status(&a, &first), 200);
    assert_eq!(bearer_status(&a, &anna), 200);
    let (_, list, _) = token_cmd(&cfg, &["list"]);
    assert!(list.contains("local-operator\t"), "{list}");
    // Revoked: refused within seconds, and the file with the clear token is gone.
    let (code, _, err) = token_cmd(&cfg, &["revoke", "local-operator"]);
    assert_eq!(code, 0, "{err}");
    assert!(!path.exists());
    wait_for("revocation", Duration::from_secs(10), || {
        (bearer_status(&a, &first) == 401).then_some(())
    });
    assert_eq!(bearer_status(&a, &anna), 200);
}

#[test]
fn guessing_is_counted_logged_once_and_slowed_down_for_that_address_only() {
    let dir = TempDir::new("guess");
    let a = Agent::start(dir.path(), &config_with(dir.path(), ""));
    let guess = |from: &str, token: &str, path: &str| -> u16 {
        let s = connect_from(from, a.addr);
        raw_get(s, path, &format!("Bearer {token}"))
    };
    let mut codes = Vec::new();
    for i in 0..40 {
        codes.push(guess("127.0.0.2", &format!("guess-{i}"), "/v1/assets"));
    }
    assert!(codes[..20].iter().all(|&c| c == 401), "{codes:?}");
    assert!(codes[20..].iter().all(|&c| c == 429), "{codes:?}");
    // /v1/status answers a wrong token with 401 (throttled here: 429), never a 200.
    assert_eq!(guess("127.0.0.3", "nope", "/v1/status"), 401);
    // Everyone else is unaffected, even with the right token from another address.
    assert_eq!(guess("127.0.0.1", TOKEN, "/v1/assets"), 200);
    assert_eq!(a.diagnose("plant-7", "press-12", PRESS).status, 200);
    assert_eq!(
        a.metric("copilot_edge_auth_failures_total", &["reason=\"invalid\""]),
        Some(21.0)
    );
    assert_eq!(
        a.metric(
            "copilot_edge_auth_failures_total",
            &["reason=\"throttled\""]
        ),
        Some(20.0)
    );
    let failed_lines = a
        .events()
        .iter()
        .filter(|e| e["event"] == "auth_failed" && e["peer"] == "127.0.0.2")
        .count();
    assert_eq!(failed_lines, 1, "one line per address per minute");
    a.wait_event("auth_throttled", Duration::from_secs(2), |e| {
        e["peer"] == "127.0.0.2"
    });
}

fn raw_get(mut s: std::net::TcpStream, path: &str, auth: &str) -> u16 {
    use std::io::Write;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let addr = s.peer_addr().unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut s).status
}

#[test]
fn a_rebinding_host_is_refused_and_ready_shows_no_paths() {
    let dir = TempDir::new("host");
    let a = Agent::start(
        dir.path(),
        &config_with(
            dir.path(),
            "[server]\nallowed_hosts = [\"gw12.plant.example\"]\n",
        ),
    );
    let with_host = |host: &str, path: &str| {
        let mut s = std::net::TcpStream::connect(a.addr).unwrap();
        use std::io::Write;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        read_response(&mut s)
    };
    for path in ["/", "/v1/status", "/status", "/ready"] {
        let r = with_host("evil.example:8080", path);
        assert_eq!(r.status, 421, "{path}");
        let v = r.json();
        assert_eq!(v["error"]["code"], "misdirected_host", "{v}");
        assert!(v["trace_id"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(
            with_host("gw12.plant.example:8080", path).status,
            200,
            "{path}"
        );
        assert_eq!(with_host(&a.addr.to_string(), path).status, 200, "{path}");
        assert_eq!(with_host("localhost", path).status, 200, "{path}");
    }
    // Probes and scrapers may use any name.
    assert_eq!(with_host("evil.example", "/health").status, 200);
    assert_eq!(with_host("evil.example", "/metrics").status, 200);
    // /ready: no directory paths without a token; with one, the detail.
    let state = dir.path().join("state").display().to_string();
    let public = a.get("/ready").text();
    assert!(!public.contains(&state), "{public}");
    let authed = request(
        a.addr,
        "GET",
        "/ready",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(authed.status, 200);
    assert!(authed.text().contains(&state), "{}", authed.text());
}

#[test]
fn cli_output_ends_quietly_on_a_closed_pipe_and_reports_a_full_disk() {
    let dir = TempDir::new("pipe");
    // A reader that is already gone: the write fails with EPIPE at once.
    let mut child = Command::new(BIN)
        .arg("print-default-config")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `token list | head -1` with more lines than head reads.
    let cfg = file_only_config(dir.path());
    for i in 0..3 {
        assert_eq!(token_cmd(&cfg, &["add", &format!("u{i}")]).0, 0);
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {BIN} token list --config {} | head -1",
            cfg.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // A full disk is an error, said once, exit 1.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(BIN)
        .arg("print-default-config")
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
