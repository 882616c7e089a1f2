//! Signed knowledge bundles and their rollout (issue 30), end to end with real parts: the real
//! `copilot-edge` CLI packs, signs and checks bundles; a real nginx (Debian's `nginx-light`,
//! started here on a free loopback port, with its default ETags) or a real Mosquitto (a retained
//! message) carries them to real agents; the tests watch `/metrics`, `/v1/status`, the JSON log
//! and the answers themselves.
//!
//! Bundles are told apart by their answers: v2 carries an extra SOP (`SOP-TEST-777`, a "widget
//! polisher" no shipped SOP covers), an asset-register row and a lexicon term for it, so a
//! question only v2 answers shows which knowledge base is serving.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::services::{mosquitto_on, prom_query, prometheus_with_config, Service};
use crate::common::*;

/// The SOP only v2 carries.
const POLISHER_SOP: &str = "---
id: SOP-TEST-777
title: Widget polisher squeals during polishing
equipment: widget polisher, polisher
symptoms: polisher squeals, squealing noise, squeal when the polishing wheel spins up
defects: glazed polishing wheel, dry spindle bearing, loose polisher drive belt
---
This SOP applies when a widget polisher squeals while its polishing wheel runs.

## Safety
- Stop the widget polisher and lock out its power before touching the wheel.

## Steps
1. Check the polisher drive belt tension and replace a glazed belt.
2. Grease the spindle bearing with the grease on the polisher nameplate.
3. Dress the polishing wheel and run it up without load for 2 minutes.
";
/// A question only `SOP-TEST-777` answers, and the equipment it is asked about.
const POLISHER_Q: &str = "the widget polisher squeals loudly when the polishing wheel spins up";
const POLISHER_EQ: &str = "polisher-3";
/// The same question through v2's lexicon term (`wdgp` = widget polisher).
const POLISHER_Q_LEXICON: &str = "the wdgp squeals loudly when the polishing wheel spins up";
/// The smoke question every test bundle carries (the shipped SOPs answer it).
const COMPRESSOR_Q: &str = "compressor overheating and tripping";

const V1: &str = "2026.12.07-1";
const V2: &str = "2026.12.07-2";
const V3: &str = "2026.12.07-3";
const V4: &str = "2026.12.07-4";

/// `[[smoke]]` for v2's own SOP.
const POLISHER_SMOKE: &str = "\n[[smoke]]\nquestion = \"widget polisher squeals\"\nequipment_id = \"polisher-3\"\nexpect = \"SOP-TEST-777\"\n";

// --- the CLI ---------------------------------------------------------------------------------

/// `copilot-edge ARGS`, (exit code, stdout, stderr).
fn cli(args: &[&str], cwd: &Path) -> (i32, String, String) {
    run_cli(args, cwd)
}

/// `copilot-edge ARGS`, which must exit 0; its stdout.
fn cli_ok(args: &[&str], cwd: &Path) -> String {
    let (code, out, err) = cli(args, cwd);
    assert_eq!(
        code, 0,
        "copilot-edge {args:?} exited {code}\nstdout: {out}\nstderr: {err}"
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An Ed25519 key pair made by `kb keygen`.
struct Key {
    file: PathBuf,
    public: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let file = dir.join(name);
    let out = cli_ok(&["kb", "keygen", s(&file)], dir);
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub")))
        .expect("kb keygen writes KEYFILE.pub")
        .trim()
        .to_string();
    // Base64 of 32 bytes: 43 characters and one '='.
    assert!(
        public.len() == 44
            && public.ends_with('=')
            && public[..43]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
        "not a base64 Ed25519 public key: {public:?}"
    );
    assert!(out.contains(&public), "keygen prints the public key: {out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode {mode:o}");
    Key { file, public }
}

/// A bundle source directory `parent/name`: the shipped SOPs and asset register; with
/// `polisher`, also `SOP-TEST-777`, its asset row and a lexicon term; `files` are extra
/// (relative path, text) pairs; `bundle.toml` has `version` (when given), the compressor smoke
/// question and `bundle_extra` (more `[[smoke]]`, a `[target]`).
fn source_dir(
    parent: &Path,
    name: &str,
    version: Option<&str>,
    polisher: bool,
    files: &[(&str, &str)],
    bundle_extra: &str,
) -> PathBuf {
    let dir = parent.join(name);
    let knowledge = dir.join("knowledge");
    std::fs::create_dir_all(&knowledge).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for e in std::fs::read_dir(shipped.join("knowledge")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            std::fs::copy(&p, knowledge.join(p.file_name().unwrap())).unwrap();
            n += 1;
        }
    }
    assert!(n >= 40, "only {n} SOPs in config/knowledge");
    let mut assets = std::fs::read_to_string(shipped.join("assets.csv")).unwrap();
    if polisher {
        std::fs::write(knowledge.join("sop-test-777.md"), POLISHER_SOP).unwrap();
        assets.push_str("polisher-*,widget polisher,,,,\n");
        std::fs::create_dir_all(dir.join("lexicon")).unwrap();
        std::fs::write(
            dir.join("lexicon/plant.toml"),
            "language = \"en\"\n[terms]\n\"wdgp\" = \"widget polisher\"\n",
        )
        .unwrap();
    }
    std::fs::write(dir.join("assets.csv"), assets).unwrap();
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let version = version.map_or(String::new(), |v| format!("version = \"{v}\"\n"));
    std::fs::write(
        dir.join("bundle.toml"),
        format!(
            "{version}\n[[smoke]]\nquestion = \"{COMPRESSOR_Q}\"\nequipment_id = \"\"\nexpect = \"SOP-CMP-001\"\n{bundle_extra}"
        ),
    )
    .unwrap();
    dir
}

/// `kb pack SRC -o OUT [--version V]`.
fn pack(src: &Path, out: &Path, version_flag: Option<&str>) {
    let mut args = vec!["kb", "pack", s(src), "-o", s(out)];
    if let Some(v) = version_flag {
        args.extend(["--version", v]);
    }
    cli_ok(&args, src.parent().unwrap());
    assert!(out.is_file(), "kb pack wrote no {}", out.display());
}

/// `kb sign FILE --key KEYFILE` (in place).
fn sign(file: &Path, key: &Key) {
    cli_ok(
        &["kb", "sign", s(file), "--key", s(&key.file)],
        file.parent().unwrap(),
    );
}

/// Packs `src` into `parent/<name>.kb` and signs it with `key`; the file's bytes.
fn bundle_from(src: &Path, name: &str, key: &Key) -> Vec<u8> {
    let out = src.parent().unwrap().join(format!("{name}.kb"));
    pack(src, &out, None);
    sign(&out, key);
    std::fs::read(&out).unwrap()
}

/// A signed bundle built from a fresh source dir (see [`source_dir`]).
fn bundle(
    parent: &Path,
    name: &str,
    version: &str,
    polisher: bool,
    files: &[(&str, &str)],
    bundle_extra: &str,
    key: &Key,
) -> Vec<u8> {
    let src = source_dir(parent, name, Some(version), polisher, files, bundle_extra);
    bundle_from(&src, name, key)
}

/// Writes `bytes` to `dir/name` and returns the path (for `kb verify` / `kb show`).
fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

// --- nginx -----------------------------------------------------------------------------------

/// A real nginx serving `root/bundle.kb` on a free loopback port with its default ETags (mtime
/// and size), single process (`master_process off`, so killing the one PID stops it), every
/// path inside its temp dir; killed on drop.
struct Nginx {
    svc: Service,
    root: PathBuf,
}

/// Gives every published file its own mtime, so each publication has its own ETag even when two
/// fall in the same second.
static PUBLISHED: AtomicU64 = AtomicU64::new(0);

impl Nginx {
    fn start() -> Nginx {
        let bin = need("nginx");
        let dir = TempDir::new("nginx");
        let p = dir.path().to_path_buf();
        let root = p.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(p.join("tmp")).unwrap();
        let port = free_port();
        let conf = p.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "master_process off;
worker_processes 1;
user root;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {p}/access.log;
  client_body_temp_path {p}/tmp/body;
  proxy_temp_path {p}/tmp/proxy;
  fastcgi_temp_path {p}/tmp/fastcgi;
  uwsgi_temp_path {p}/tmp/uwsgi;
  scgi_temp_path {p}/tmp/scgi;
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    etag on;
  }}
}}
",
                p = p.display(),
                root = root.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(&p)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p.join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn nginx");
        let mut svc = Service {
            child,
            port,
            dir,
            name: "nginx",
        };
        wait_for("nginx listening", Duration::from_secs(20), || {
            if let Ok(Some(st)) = svc.child.try_wait() {
                panic!(
                    "nginx exited with {st}: {}{}",
                    std::fs::read_to_string(p.join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(p.join("error.log")).unwrap_or_default()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Nginx { svc, root }
    }

    /// The bundle's URL.
    fn url(&self) -> String {
        format!("{}/bundle.kb", self.svc.url())
    }

    /// Replaces `bundle.kb` atomically (write a temp file, give it a fresh mtime, rename).
    fn publish(&self, bytes: &[u8]) {
        let tmp = self.root.join(".bundle.kb.tmp");
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
        let n = PUBLISHED.fetch_add(1, Ordering::Relaxed);
        let base = SystemTime::now() - Duration::from_secs(86_400);
        f.set_modified(base + Duration::from_secs(n)).unwrap();
        drop(f);
        std::fs::rename(&tmp, self.root.join("bundle.kb")).unwrap();
    }

    /// Answers nginx gave to `GET /bundle.kb` with this status, from its access log.
    fn served(&self, status: u16) -> usize {
        std::fs::read_to_string(self.svc.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /bundle.kb ") && l.contains(&format!("\" {status} ")))
            .count()
    }

    fn stop(&mut self) {
        self.svc.stop();
    }
}

// --- what the agent says ---------------------------------------------------------------------

/// The bundle an agent runs, from `copilot_edge_knowledge_info{version,hash,source} 1`.
#[derive(Debug, Clone, PartialEq)]
struct KbInfo {
    version: String,
    hash: String,
    source: String,
}

/// The value of `key` in a series' label set (`name{k="v",...}`).
fn label(series: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=\"");
    let mut from = 0;
    while let Some(i) = series[from..].find(&pat) {
        let at = from + i;
        if at > 0 && matches!(series.as_bytes()[at - 1], b'{' | b',') {
            let rest = &series[at + pat.len()..];
            return rest.find('"').map(|e| rest[..e].to_string());
        }
        from = at + 1;
    }
    None
}

fn kb_info_in(text: &str) -> Option<KbInfo> {
    let live: Vec<KbInfo> = text
        .lines()
        .filter(|l| l.starts_with("copilot_edge_knowledge_info{"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (value.parse::<f64>().ok()? == 1.0).then(|| KbInfo {
                version: label(series, "version").unwrap_or_default(),
                hash: label(series, "hash").unwrap_or_default(),
                source: label(series, "source").unwrap_or_default(),
            })
        })
        .collect();
    assert!(
        live.len() <= 1,
        "more than one copilot_edge_knowledge_info series at 1: {live:?}"
    );
    live.into_iter().next()
}

fn kb_info(a: &Agent) -> Option<KbInfo> {
    kb_info_in(&a.get("/metrics").text())
}

/// Sum of every sample of `name` whose labels include all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|kv| rest.contains(kv)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// `copilot_edge_knowledge_checks_total{result}` (0 when not yet counted).
fn checks(a: &Agent, result: &str) -> f64 {
    metric_sum(
        &a.get("/metrics").text(),
        "copilot_edge_knowledge_checks_total",
        &[&format!("result=\"{result}\"")],
    )
}

/// Every check, whatever its result.
fn all_checks(a: &Agent) -> f64 {
    metric_sum(
        &a.get("/metrics").text(),
        "copilot_edge_knowledge_checks_total",
        &[],
    )
}

fn gauge(a: &Agent, name: &str) -> f64 {
    metric_sum(&a.get("/metrics").text(), name, &[])
}

/// Polls `f` (every 25 ms) until it holds, for at most `secs` seconds.
fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(secs), || f().then_some(()));
}

/// Waits until the agent runs `version` (and, when given, from `source`); its kb_info.
fn wait_version(a: &Agent, version: &str, source: Option<&str>, secs: u64) -> KbInfo {
    let mut last = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            &format!("kb_info version {version}"),
            Duration::from_secs(secs),
            || {
                let i = kb_info(a);
                last = i.clone();
                let i = i?;
                (i.version == version && source.is_none_or(|s| i.source == s)).then_some(i)
            },
        )
    }));
    r.unwrap_or_else(|_| {
        let rejected: Vec<_> = a
            .events()
            .into_iter()
            .filter(|e| e["event"] == "kb_rejected" || e["event"] == "kb_applied")
            .collect();
        panic!(
            "agent never ran {version} (source {source:?}) within {secs} s; kb_info {last:?}; \
             kb events {rejected:?}; status {}",
            a.get_auth("/v1/status").text()
        )
    })
}

/// `/v1/status` → `knowledge_base`, with the token or without.
fn kb_status(a: &Agent, token: bool) -> serde_json::Value {
    let r = if token {
        a.get_auth("/v1/status")
    } else {
        a.get("/v1/status")
    };
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["knowledge_base"].clone()
}

fn cited(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["rag_guidance"]["cited_documents"]
        .as_array()
        .unwrap_or_else(|| panic!("no cited_documents: {}", r.text()))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The documents the polisher question cites.
fn polisher_cites(a: &Agent) -> Vec<String> {
    cited(&a.diagnose("plant-7", POLISHER_EQ, POLISHER_Q))
}

/// The agent answers from v2: the polisher SOP first, the asset row, the lexicon term.
fn assert_answers_from_v2(a: &Agent) {
    let r = a.diagnose("plant-7", POLISHER_EQ, POLISHER_Q);
    let c = cited(&r);
    assert_eq!(
        c.first().map(String::as_str),
        Some("SOP-TEST-777"),
        "{}",
        r.text()
    );
    assert_eq!(
        r.json()["understood"]["asset"]["class"],
        "widget polisher",
        "the bundle's asset register: {}",
        r.text()
    );
    let r = a.diagnose("plant-7", POLISHER_EQ, POLISHER_Q_LEXICON);
    assert_eq!(
        cited(&r).first().map(String::as_str),
        Some("SOP-TEST-777"),
        "the bundle's lexicon pack: {}",
        r.text()
    );
}

/// The agent still answers the shipped SOPs' questions.
fn assert_still_answers(a: &Agent) {
    let c = cited(&a.diagnose("plant-7", "press-12", PRESS));
    assert!(c.contains(&"SOP-HYD-001".to_string()), "{c:?}");
}

/// The test config with `gateway_id = gateway` and a `[kb]` table.
fn kb_config(dir: &Path, gateway: &str, kb: &str) -> String {
    let cfg = config_with(dir, kb);
    assert!(cfg.contains("gateway_id = \"gw-test\""));
    cfg.replacen(
        "gateway_id = \"gw-test\"",
        &format!("gateway_id = \"{gateway}\""),
        1,
    )
}

/// `[kb]` polling `url` every second, trusting `key`.
fn http_kb(url: &str, key: &Key) -> String {
    format!(
        "[kb]\nurl = \"{url}\"\npoll_interval_secs = 1\npublic_keys = [\"{}\"]\n",
        key.public
    )
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// --- the tests -------------------------------------------------------------------------------

#[test]
fn agents_take_a_new_signed_bundle_from_http_and_keep_it_after_a_restart_offline() {
    let work = TempDir::new("kb-http");
    let w = work.path();
    let key = keygen(w, "fleet.key");
    let v1 = bundle(w, "v1", V1, false, &[], "", &key);
    let v2 = bundle(w, "v2", V2, true, &[], POLISHER_SMOKE, &key);
    let v2_file = file(w, "v2-copy.kb", &v2);
    // The CLI's own view of v2: signature, hashes and smoke questions hold; `show` lists it.
    cli_ok(
        &["kb", "verify", s(&v2_file), "--public-key", &key.public],
        w,
    );
    let show = cli_ok(&["kb", "show", s(&v2_file)], w);
    assert!(
        show.contains(V2) && show.contains("SOP-TEST-777"),
        "kb show: {show}"
    );

    let mut web = Nginx::start();
    web.publish(&v1);
    let mut agents: Vec<(TempDir, String, Agent)> = (1..=3)
        .map(|i| {
            let d = TempDir::new(&format!("kb-http-gw{i}"));
            let cfg = kb_config(d.path(), &format!("gw-{i}"), &http_kb(&web.url(), &key));
            let a = Agent::start(d.path(), &cfg);
            (d, cfg, a)
        })
        .collect();
    // `kb verify` with no key flag uses the config's kb.public_keys.
    let cfg0 = agents[0].2.config.clone();
    cli_ok(&["-c", s(&cfg0), "kb", "verify", s(&v2_file)], w);
    let mut docs_v1 = 0;
    for (_, _, a) in &agents {
        wait_version(a, V1, Some("http"), 30);
        assert!(!polisher_cites(a).contains(&"SOP-TEST-777".to_string()));
        docs_v1 = kb_status(a, true)["documents"].as_u64().unwrap();
    }
    // Nothing new: the polls are conditional GETs that nginx answers 304.
    for (_, _, a) in &agents {
        wait_until("two unchanged checks", 20, || checks(a, "unchanged") >= 2.0);
    }
    assert!(
        web.served(304) >= 6,
        "nginx answered {} 304s",
        web.served(304)
    );
    let full_fetches = web.served(200);

    // v2 goes out: every agent takes it.
    web.publish(&v2);
    let mut hash = String::new();
    for (_, _, a) in &agents {
        let info = wait_version(a, V2, Some("http"), 30);
        assert_eq!(info.hash.len(), 12, "{info:?}");
        assert!(info.hash.bytes().all(|b| b.is_ascii_hexdigit()), "{info:?}");
        assert!(
            hash.is_empty() || hash == info.hash,
            "same bundle, same hash"
        );
        hash = info.hash.clone();
        assert_answers_from_v2(a);
        assert_still_answers(a);
        a.wait_event("kb_applied", Duration::from_secs(5), |e| {
            e["version"] == V2
                && e["source"] == "http"
                && e["hash"].as_str().is_some_and(|h| h.starts_with(&hash))
        });
        wait_until("two applied checks", 5, || checks(a, "applied") >= 2.0);
        let st = kb_status(a, true);
        assert_eq!(st["version"], V2, "{st}");
        // The status may give the whole content hash; the metric gives its first 12 digits.
        assert!(
            st["hash"].as_str().is_some_and(|h| h.starts_with(&hash)),
            "{st}"
        );
        assert_eq!(st["source"], "http", "{st}");
        assert_eq!(st["documents"].as_u64().unwrap(), docs_v1 + 1, "{st}");
        for k in ["created", "last_check", "last_change"] {
            assert!(st[k].as_str().is_some_and(|t| t.len() >= 20), "{k}: {st}");
        }
        assert!(st["last_error"].is_null(), "{st}");
        let public = kb_status(a, false);
        assert_eq!(public["version"], V2, "{public}");
        assert!(public.get("last_error").is_none(), "{public}");
        // The time gauges: created just now, a change seen, checks going on.
        let created = gauge(a, "copilot_edge_knowledge_bundle_created_timestamp_seconds");
        assert!(
            (now_secs() - 600.0..now_secs() + 60.0).contains(&created),
            "created {created}"
        );
        assert!(gauge(a, "copilot_edge_knowledge_last_change_timestamp_seconds") >= created - 1.0);
        let checked = gauge(a, "copilot_edge_knowledge_last_check_timestamp_seconds");
        wait_until("another check", 10, || {
            gauge(a, "copilot_edge_knowledge_last_check_timestamp_seconds") > checked
        });
    }
    assert!(
        web.served(200) >= full_fetches + 3,
        "each agent fetched v2 once"
    );
    // `kb show` states the content hash the agents report.
    assert!(show.contains(&hash), "kb show has no hash {hash}: {show}");

    // The source goes away and an agent restarts: it serves the last good bundle at once.
    web.stop();
    let (d0, cfg, a0) = agents.remove(0);
    assert_eq!(a0.stop().code(), Some(0));
    let a0 = Agent::start(d0.path(), &cfg);
    let info = kb_info(&a0).expect("kb_info right after the restart");
    assert_eq!(
        info,
        KbInfo {
            version: V2.into(),
            hash: hash.clone(),
            source: "http".into()
        }
    );
    assert_answers_from_v2(&a0);
    wait_until("a failed fetch counted", 20, || {
        checks(&a0, "fetch_failed") >= 1.0
    });
    wait_until("last_error says the fetch failed", 10, || {
        kb_status(&a0, true)["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    });
    assert_eq!(kb_info(&a0).unwrap().version, V2);
    assert_answers_from_v2(&a0);
    assert_eq!(a0.stop().code(), Some(0));
}

#[test]
fn bad_signature_broken_and_failing_smoke_bundles_are_refused_and_the_old_version_keeps_serving() {
    let work = TempDir::new("kb-refuse");
    let w = work.path();
    let key = keygen(w, "fleet.key");
    let stranger = keygen(w, "stranger.key");
    let v1 = bundle(w, "v1", V1, false, &[], "", &key);
    let v2_src = source_dir(w, "v2", Some(V2), true, &[], POLISHER_SMOKE);
    let v2 = bundle_from(&v2_src, "v2", &key);
    let bad_signature = bundle_from(&v2_src, "v2-stranger", &stranger);
    let truncated = v2[..v2.len() / 2].to_vec();
    let smoke_src = source_dir(
        w,
        "v2-smoke",
        Some(V2),
        true,
        &[],
        &format!("\n[[smoke]]\nquestion = \"{COMPRESSOR_Q}\"\nexpect = \"SOP-HYD-001\"\n"),
    );
    // `kb pack` refuses a bundle whose smoke questions fail where it is packed, and says why;
    // --skip-smoke writes it anyway, for the gateways to refuse.
    let bad_smoke_file = w.join("v2-smoke.kb");
    let (code, _, err) = cli(&["kb", "pack", s(&smoke_src), "-o", s(&bad_smoke_file)], w);
    assert_eq!(code, 1, "kb pack with a failing smoke question: {err}");
    assert!(err.contains("smoke") && !bad_smoke_file.exists(), "{err}");
    cli_ok(
        &[
            "kb",
            "pack",
            s(&smoke_src),
            "-o",
            s(&bad_smoke_file),
            "--skip-smoke",
        ],
        w,
    );
    sign(&bad_smoke_file, &key);
    let bad_smoke = std::fs::read(&bad_smoke_file).unwrap();

    // `kb verify` refuses each of them, saying why.
    for (name, bytes, hint) in [
        ("bad-signature.kb", &bad_signature, ""),
        ("truncated.kb", &truncated, ""),
        ("bad-smoke.kb", &bad_smoke, "smoke"),
    ] {
        let f = file(w, name, bytes);
        let (code, out, err) = cli(&["kb", "verify", s(&f), "--public-key", &key.public], w);
        assert_eq!(code, 1, "kb verify {name}: {out}{err}");
        assert!(
            !err.trim().is_empty() && err.to_lowercase().contains(hint),
            "kb verify {name} says why on stderr: {err:?}"
        );
    }

    let web = Nginx::start();
    web.publish(&v1);
    let d = TempDir::new("kb-refuse-gw");
    let a = Agent::start(
        d.path(),
        &kb_config(d.path(), "gw-1", &http_kb(&web.url(), &key)),
    );
    let v1_info = wait_version(&a, V1, Some("http"), 30);
    assert!(kb_status(&a, true)["last_error"].is_null());

    for (bytes, reason) in [
        (&bad_signature, "bad_signature"),
        (&truncated, "broken"),
        (&bad_smoke, "smoke_failed"),
    ] {
        let before = checks(&a, reason);
        web.publish(bytes);
        wait_until(&format!("a {reason} check"), 20, || {
            checks(&a, reason) > before
        });
        assert_eq!(kb_info(&a), Some(v1_info.clone()), "after {reason}");
        a.wait_event("kb_rejected", Duration::from_secs(5), |e| {
            e["reason"] == reason && e["detail"].as_str().is_some_and(|d| !d.is_empty())
        });
        wait_until(&format!("last_error after {reason}"), 10, || {
            kb_status(&a, true)["last_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        });
        let st = kb_status(&a, true);
        assert_eq!(st["version"], V1, "{st}");
        assert!(
            kb_status(&a, false).get("last_error").is_none(),
            "last_error needs a token"
        );
        assert_still_answers(&a);
        assert!(!polisher_cites(&a).contains(&"SOP-TEST-777".to_string()));
    }
    assert_eq!(checks(&a, "applied"), 1.0, "only v1 was ever applied");
    // The good v2 still goes through afterwards.
    web.publish(&v2);
    wait_version(&a, V2, Some("http"), 30);
    assert_answers_from_v2(&a);
    assert_eq!(a.stop().code(), Some(0));
}

#[test]
fn rollback_returns_to_the_previous_bundle_and_sticks() {
    let work = TempDir::new("kb-rollback");
    let w = work.path();
    let key = keygen(w, "fleet.key");
    let v1 = bundle(w, "v1", V1, false, &[], "", &key);
    let v2 = bundle(w, "v2", V2, true, &[], POLISHER_SMOKE, &key);
    // v3: v1's SOPs plus a lexicon pack (content of its own), versioned with --version.
    let v3_src = source_dir(
        w,
        "v3",
        None,
        false,
        &[(
            "lexicon/site.toml",
            "language = \"en\"\n[terms]\n\"cmpr\" = \"compressor\"\n",
        )],
        "",
    );
    let v3_file = w.join("v3.kb");
    pack(&v3_src, &v3_file, Some(V3));
    sign(&v3_file, &key);
    let v3 = std::fs::read(&v3_file).unwrap();

    let web = Nginx::start();
    let d = TempDir::new("kb-rollback-gw");
    let cfg_text = kb_config(d.path(), "gw-1", &http_kb(&web.url(), &key));
    let cfg = d.path().join("copilot-edge.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    // Nothing to roll back to yet.
    let (code, out, err) = cli(&["-c", s(&cfg), "kb", "rollback"], d.path());
    assert_eq!(code, 1, "rollback with no bundle: {out}{err}");
    assert!(!err.trim().is_empty(), "rollback says why: {out}");

    web.publish(&v1);
    let a = Agent::start(d.path(), &cfg_text);
    let v1_info = wait_version(&a, V1, Some("http"), 30);
    web.publish(&v2);
    wait_version(&a, V2, Some("http"), 30);
    assert_answers_from_v2(&a);

    cli_ok(&["-c", s(&cfg), "kb", "rollback"], d.path());
    let info = wait_version(&a, V1, None, 10);
    assert_eq!(info.hash, v1_info.hash);
    wait_until("a rolled_back check", 10, || {
        checks(&a, "rolled_back") >= 1.0
    });
    assert!(!polisher_cites(&a).contains(&"SOP-TEST-777".to_string()));
    assert_still_answers(&a);

    // It sticks over several polls while nginx still offers v2 ...
    let polls = all_checks(&a);
    wait_until("three more checks, all on v1", 20, || {
        let i = kb_info(&a).unwrap();
        assert_eq!(i.version, V1, "v2 came back after the rollback");
        all_checks(&a) >= polls + 3.0
    });
    // ... and when v2 is published again (a new ETag, the same bundle): fetched, not applied.
    let fetched = web.served(200);
    web.publish(&v2);
    wait_until("v2 fetched again", 20, || web.served(200) > fetched);
    let polls = all_checks(&a);
    wait_until("three more checks, still v1", 20, || {
        let i = kb_info(&a).unwrap();
        assert_eq!(i.version, V1, "the rolled-back v2 was re-applied");
        all_checks(&a) >= polls + 3.0
    });
    assert!(!polisher_cites(&a).contains(&"SOP-TEST-777".to_string()));

    // A newer bundle is taken again: a rollback does not freeze the gateway.
    web.publish(&v3);
    wait_version(&a, V3, Some("http"), 30);
    assert_still_answers(&a);
    assert_eq!(a.stop().code(), Some(0));
}

/// Diagnose load on `conns` connections until stopped: every answer must be a 200 with the
/// hydraulic-press SOP cited (both bundles carry it); anything else is recorded as a failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

fn diagnose_once(addr: SocketAddr, i: u64) -> Result<(), String> {
    let body = serde_json::json!({"plant_id": "plant-7", "equipment_id": "press-12", "problem_description": PRESS}).to_string();
    let mut c = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!(
        "POST /v1/diagnose HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nX-Request-Trace-ID: kb-load-{i}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(format!(
            "no complete response: {:?}",
            String::from_utf8_lossy(&raw)
        ));
    }
    let r = crate::common::http::parse_response(&raw);
    if r.status != 200 {
        return Err(format!("{}: {}", r.status, r.text()));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("not JSON ({e}): {}", r.text()))?;
    let has = v["rag_guidance"]["cited_documents"]
        .as_array()
        .is_some_and(|c| c.iter().any(|d| d == "SOP-HYD-001"));
    if !has {
        return Err(format!("SOP-HYD-001 not cited: {v}"));
    }
    Ok(())
}

impl Load {
    fn start(addr: SocketAddr, conns: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..conns)
            .map(|t| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        match diagnose_once(addr, ((t as u64) << 32) | i) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            handles,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops; (answers that were right, failures).
    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().expect("load thread panicked");
        }
        let f = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), f)
    }
}

#[test]
fn twenty_swaps_under_load_fail_no_request() {
    let work = TempDir::new("kb-swaps");
    let w = work.path();
    let key = keygen(w, "fleet.key");
    let (va, vb) = ("2026.12.07-a", "2026.12.07-b");
    let a_bytes = bundle(w, "a", va, false, &[], "", &key);
    let b_bytes = bundle(w, "b", vb, true, &[], POLISHER_SMOKE, &key);

    let web = Nginx::start();
    web.publish(&a_bytes);
    let d = TempDir::new("kb-swaps-gw");
    let a = Agent::start(
        d.path(),
        &kb_config(d.path(), "gw-1", &http_kb(&web.url(), &key)),
    );
    wait_version(&a, va, Some("http"), 30);
    let applied_before = checks(&a, "applied");

    let load = Load::start(a.addr, 3);
    wait_until("load running", 10, || load.ok() >= 10);
    let t0 = std::time::Instant::now();
    for i in 0..20 {
        let (bytes, v) = if i % 2 == 0 {
            (&b_bytes, vb)
        } else {
            (&a_bytes, va)
        };
        web.publish(bytes);
        wait_version(&a, v, Some("http"), 15);
        // The answers swapped too, not only the metric.
        let from_b = polisher_cites(&a).first().map(String::as_str) == Some("SOP-TEST-777");
        assert_eq!(from_b, v == vb, "swap {i} to {v}: the polisher answer");
    }
    let swaps_took = t0.elapsed();
    let applied = checks(&a, "applied") - applied_before;
    let (ok, failures) = load.stop();
    eprintln!(
        "kb swaps: 20 swaps in {swaps_took:?}, {ok} answers under load, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the swaps, e.g. {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    assert!(ok >= 50, "only {ok} requests during 20 swaps");
    assert!(applied >= 20.0, "{applied} bundles applied during 20 swaps");
    let applied_events = a
        .events()
        .into_iter()
        .filter(|e| e["event"] == "kb_applied")
        .count();
    assert!(applied_events >= 21, "{applied_events} kb_applied events");
    assert_eq!(a.stop().code(), Some(0));
}

#[test]
fn a_staged_bundle_reaches_only_the_gateways_it_targets() {
    let work = TempDir::new("kb-staged");
    let w = work.path();
    let key = keygen(w, "fleet.key");
    let v1 = bundle(w, "v1", V1, false, &[], "", &key);
    let v2 = bundle(
        w,
        "v2",
        V2,
        true,
        &[],
        &format!("{POLISHER_SMOKE}\n[target]\ngateways = [\"gw-a-*\"]\n"),
        &key,
    );
    // v3: the right gateway glob but another site. v4: site, glob and percent all match gw-b-1.
    let lex = |term: &str| format!("language = \"en\"\n[terms]\n\"{term}\" = \"compressor\"\n");
    let (lex3, lex4) = (lex("cmpr"), lex("cmpx"));
    let v3 = bundle(
        w,
        "v3",
        V3,
        false,
        &[("lexicon/site.toml", &lex3)],
        "\n[target]\nsites = [\"plant-9\"]\ngateways = [\"gw-a-*\"]\n",
        &key,
    );
    let v4 = bundle(
        w,
        "v4",
        V4,
        false,
        &[("lexicon/site.toml", &lex4)],
        "\n[target]\nsites = [\"plant-7\"]\ngateways = [\"gw-b-*\"]\npercent = 100\n",
        &key,
    );
    let show = cli_ok(&["kb", "show", s(&file(w, "v2-copy.kb", &v2))], w);
    assert!(show.contains("gw-a-*"), "kb show lists the target: {show}");

    let web = Nginx::start();
    web.publish(&v1);
    let (da, db) = (TempDir::new("kb-staged-a"), TempDir::new("kb-staged-b"));
    let ga = Agent::start(
        da.path(),
        &kb_config(da.path(), "gw-a-1", &http_kb(&web.url(), &key)),
    );
    let gb = Agent::start(
        db.path(),
        &kb_config(db.path(), "gw-b-1", &http_kb(&web.url(), &key)),
    );
    wait_version(&ga, V1, Some("http"), 30);
    wait_version(&gb, V1, Some("http"), 30);

    // v2 targets gw-a-*: gw-a-1 takes it, gw-b-1 counts it as not for it and keeps v1.
    web.publish(&v2);
    wait_version(&ga, V2, Some("http"), 30);
    assert_answers_from_v2(&ga);
    wait_until("gw-b-1 counts not_targeted", 20, || {
        checks(&gb, "not_targeted") >= 1.0
    });
    let polls = all_checks(&gb);
    wait_until("gw-b-1 polls on, still v1", 20, || {
        assert_eq!(kb_info(&gb).unwrap().version, V1, "gw-b-1 took v2");
        all_checks(&gb) >= polls + 2.0
    });
    assert!(!polisher_cites(&gb).contains(&"SOP-TEST-777".to_string()));
    assert_still_answers(&gb);
    assert_eq!(checks(&ga, "not_targeted"), 0.0);

    // A real Prometheus with the shipped rules (`for:` shortened) scrapes both: gw-b-1 is behind
    // its plant's newest bundle, so KnowledgeBaseBehindFleet fires for it and not for gw-a-1.
    let pdir = TempDir::new("kb-prom");
    crate::alerts::fast_rules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/copilot-edge.rules.yml"),
        &pdir.path().join("rules.yml"),
    );
    let prom_cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\nscrape_configs:\n  - job_name: copilot-edge\n    static_configs:\n      - targets: ['{}', '{}']\n        labels:\n          plant_id: plant-7\n",
        pdir.path().join("rules.yml"),
        ga.addr,
        gb.addr
    );
    let prom = prometheus_with_config(free_port(), pdir, &prom_cfg, &[]);
    let firing = |gw: &str| {
        prom_query(
            &prom,
            &format!("ALERTS{{alertname=\"KnowledgeBaseBehindFleet\",alertstate=\"firing\",gateway_id=\"{gw}\"}}"),
        )
        .as_array()
        .is_some_and(|r| !r.is_empty())
    };
    wait_until("KnowledgeBaseBehindFleet fires for gw-b-1", 60, || {
        firing("gw-b-1")
    });
    assert!(!firing("gw-a-1"), "gw-a-1 runs the newest bundle");
    drop(prom);

    // Every condition must match: v3's site is another plant, so nobody takes it.
    let (na, nb) = (checks(&ga, "not_targeted"), checks(&gb, "not_targeted"));
    web.publish(&v3);
    wait_until("both count v3 as not targeted", 20, || {
        checks(&ga, "not_targeted") > na && checks(&gb, "not_targeted") > nb
    });
    assert_eq!(kb_info(&ga).unwrap().version, V2);
    assert_eq!(kb_info(&gb).unwrap().version, V1);

    // v4: site, gateway glob and percent = 100 all match gw-b-1 only.
    let na = checks(&ga, "not_targeted");
    web.publish(&v4);
    wait_version(&gb, V4, Some("http"), 30);
    wait_until("gw-a-1 counts v4 as not targeted", 20, || {
        checks(&ga, "not_targeted") > na
    });
    assert_eq!(kb_info(&ga).unwrap().version, V2);
    assert_eq!(ga.stop().code(), Some(0));
    assert_eq!(gb.stop().code(), Some(0));
}

/// `mosquitto_pub -r -q 1 -t TOPIC -f FILE` to the broker on `port`.
fn publish_retained(port: u16, topic: &str, bundle: &Path) {
    let out = Command::new(need("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-r", "-t", topic, "-f", s(bundle)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_retained_mqtt_message_delivers_the_bundle() {
    let work = TempDir::new("kb-mqtt");
    let w = work.path();
    let key = keygen(w, "fleet.key");
    let v1 = file(w, "v1-copy.kb", &bundle(w, "v1", V1, false, &[], "", &key));
    let v2 = file(
        w,
        "v2-copy.kb",
        &bundle(w, "v2", V2, true, &[], POLISHER_SMOKE, &key),
    );
    let port = free_port();
    let data = TempDir::new("kb-mqtt-data");
    let _broker = mosquitto_on(port, data.path());
    let topic = "copilot/kb/plant-a";
    // Retained before the agent exists: it gets the bundle when it subscribes.
    publish_retained(port, topic, &v1);

    let d = TempDir::new("kb-mqtt-gw");
    let a = Agent::start(
        d.path(),
        &kb_config(
            d.path(),
            "gw-1",
            &format!(
                "[sinks.mqtt]\nenabled = true\nport = {port}\n\n[kb]\nmqtt_topic = \"{topic}\"\npublic_keys = [\"{}\"]\n",
                key.public
            ),
        ),
    );
    wait_version(&a, V1, Some("mqtt"), 30);
    a.wait_event("kb_applied", Duration::from_secs(5), |e| {
        e["version"] == V1 && e["source"] == "mqtt"
    });
    assert!(!polisher_cites(&a).contains(&"SOP-TEST-777".to_string()));

    // A new retained bundle while the agent is connected.
    publish_retained(port, topic, &v2);
    wait_version(&a, V2, Some("mqtt"), 30);
    assert_answers_from_v2(&a);
    let st = kb_status(&a, true);
    assert_eq!(st["source"], "mqtt", "{st}");
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(a.stop().code(), Some(0));
}
