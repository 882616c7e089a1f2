//! Builds the components from a validated [`Config`], runs them, and shuts them down in order.
//!
//! Start: directories → logging → API token → knowledge base → metrics → bind → `listening`
//! event → `READY=1`. Stop (SIGTERM/SIGINT): `STOPPING=1` → stop accepting and drain in-flight
//! requests (bounded by `shutdown_grace_secs`) → background tasks → flush logs → exit 0.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::auth::{self, AuthCell};
use crate::clock::now_ms;
use crate::config::{self, Config, ConfigError, Problem};
use crate::diagnose::{self, DiagnoseEngine, EngineSettings};
use crate::http::{self, AppState};
use crate::llm::LlmClient;
use crate::logging;
use crate::metrics::Metrics;
use crate::notify::{self, Heartbeat, Notifier};
use crate::recent::RecentAnswers;
use crate::sinks::mqtt::MqttSink;
use crate::sinks::pushgateway::PushgatewaySink;
use crate::sinks::remote_write::RemoteWriteSink;
use crate::spool::segment::Kind;
use crate::spool::Spool;

/// Creates a directory the agent owns with `mode` (whatever the umask), or checks it is one.
/// Creates a directory the agent owns, or tightens an existing one to `mode`; returns the mode it
/// had when it was looser.
fn ensure_dir(p: &Path, mode: u32) -> anyhow::Result<Option<u32>> {
    logging::create_private_dir(p, mode)
        .with_context(|| format!("cannot create directory {}", p.display()))
}

/// What `serve` needs from the machine before it starts, checked the same way by
/// `check-config` and by `serve` (which exits 78 on any of it, so systemd does not restart-loop
/// on a configuration that can never start): the directories it writes are (or can become)
/// writable directories, and the knowledge base loads. Every problem names its TOML key.
pub fn preflight(cfg: &Config) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for (key, dir) in [
        ("paths.state_dir", &cfg.paths.state_dir),
        ("paths.log_dir", &cfg.paths.log_dir),
        ("spool.dir", &cfg.spool.dir),
    ] {
        if let Some(message) = config::writable_dir_problem(dir) {
            problems.push(Problem {
                key: key.into(),
                message,
            });
        }
    }
    if let Err(p) = load_knowledge(cfg) {
        problems.extend(p);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            path: cfg.source.clone(),
            problems,
        })
    }
}

/// Loads what the diagnose engine is built from: the knowledge base (`paths.knowledge_dir` or the
/// embedded sample), the lexicon (embedded, plus `paths.lexicon_dir`) and the asset register
/// (`paths.assets`; the embedded sample only with the embedded knowledge base). Every problem
/// names its key. Used at start, by `check-config` and on reload.
pub fn load_knowledge(cfg: &Config) -> Result<diagnose::Knowledge, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            key: key.into(),
            message,
        })
    };
    let docs = match &cfg.paths.knowledge_dir {
        Some(dir) => diagnose::kb::load_dir(dir)
            .map_err(|e| problem("paths.knowledge_dir", format!("{}: {e}", dir.display())))
            .ok(),
        None => diagnose::embedded_documents()
            .map_err(|e| problem("paths.knowledge_dir", format!("embedded: {e}")))
            .ok(),
    };
    let lexicon = match &cfg.paths.lexicon_dir {
        Some(dir) => diagnose::lexicon::Lexicon::load_with_dir(dir)
            .map_err(|e| problem("paths.lexicon_dir", e.to_string()))
            .ok(),
        None => Some(diagnose::lexicon::Lexicon::embedded()),
    };
    let assets = match (&cfg.paths.assets, &cfg.paths.knowledge_dir) {
        (Some(path), _) => diagnose::assets::AssetRegister::load(path)
            .map_err(|e| problem("paths.assets", e.to_string()))
            .ok(),
        (None, None) => Some(diagnose::assets::AssetRegister::embedded()),
        (None, Some(_)) => Some(diagnose::assets::AssetRegister::default()),
    };
    match (docs, lexicon, assets) {
        (Some(docs), Some(lexicon), Some(assets)) if problems.is_empty() => {
            Ok(diagnose::Knowledge {
                docs,
                lexicon,
                assets,
            })
        }
        _ => Err(problems),
    }
}

/// The engine settings of `[engine]`.
pub fn engine_settings(cfg: &Config) -> EngineSettings {
    EngineSettings {
        min_relevance: cfg.engine.min_relevance,
        max_documents: cfg.engine.max_documents.get(),
        max_steps: cfg.engine.max_steps.get(),
        off: Default::default(),
    }
}

/// Problems as one line for a log event or an error.
pub fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn log_engine(engine: &DiagnoseEngine, cfg: &Config, event: &'static str) {
    info!(
        documents = engine.len(),
        source = %cfg.paths.knowledge_dir.as_ref().map_or("embedded".to_string(), |p| p.display().to_string()),
        languages = %engine.lexicon().languages.iter().map(|l| l.code.as_str()).collect::<Vec<_>>().join(","),
        lexicon_terms = engine.lexicon().terms_len(),
        assets = engine.assets().len(),
        "{event}"
    );
}

/// `copilot-edge eval FILE`: answer quality of the configured engine on a labelled file.
pub fn eval(cfg: &Config, args: &crate::cli::EvalArgs) -> anyhow::Result<String> {
    use crate::diagnose::eval;
    if !["dev", "heldout", "all"].contains(&args.split.as_str()) {
        anyhow::bail!("--split must be dev, heldout or all");
    }
    let knowledge = load_knowledge(cfg)
        .map_err(|p| anyhow::anyhow!("knowledge base: {}", problems_text(&p)))?;
    let engine = DiagnoseEngine::build(knowledge, engine_settings(cfg));
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let cases = eval::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let outcomes = eval::run(&engine, &cases);
    let t = args.threshold.unwrap_or(cfg.engine.min_relevance);
    let one = [args.split.as_str()];
    let splits: &[&str] = if args.split == "all" {
        &["dev", "heldout", "all"]
    } else {
        &one
    };
    let mut out = String::new();
    for split in splits {
        out.push_str(&eval::subset_table(&outcomes, split, t));
        out.push('\n');
        out.push_str(&eval::family_table(&outcomes, split, t));
        out.push('\n');
        if args.reliability {
            out.push_str(&eval::reliability_table(&outcomes, split, t));
            out.push('\n');
        }
        if args.sweep {
            out.push_str(&eval::sweep_table(&outcomes, split));
            out.push('\n');
        }
    }
    if args.ablate {
        out.push_str(&ablation_table(cfg, &cases, &args.split, t)?);
        out.push('\n');
    }
    if args.misses {
        out.push_str("misses (dev split):\n");
        for m in eval::misses(&outcomes, "dev", t) {
            out.push_str(&m);
            out.push('\n');
        }
    }
    if args.outcomes {
        out.push_str("outcomes (dev split):\n");
        for line in eval::outcome_lines(&outcomes, "dev") {
            out.push_str(&line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// `eval --ablate`: the same questions with each engine part switched off in turn.
fn ablation_table(
    cfg: &Config,
    cases: &[crate::diagnose::eval::Case],
    split: &str,
    t: f64,
) -> anyhow::Result<String> {
    use crate::diagnose::eval::{self, Figures};
    type Change = fn(&mut diagnose::Knowledge, &mut EngineSettings);
    let variants: [(&str, Change); 8] = [
        ("everything on", |_, _| {}),
        (
            "no lexicon glossaries ([terms] of every language)",
            |k, _| {
                for l in &mut k.lexicon.languages {
                    l.terms = Default::default();
                    l.surface.clear();
                }
            },
        ),
        ("no language packs (English only)", |k, _| {
            k.lexicon.languages.truncate(1)
        }),
        ("no consequences (SOP `evidence:` lines)", |k, _| {
            for d in &mut k.docs {
                d.evidence.clear();
            }
        }),
        ("no intent check", |_, s| s.off.intent = true),
        ("no machine gate", |_, s| s.off.machine_gate = true),
        ("no clause windows", |_, s| s.off.windows = true),
        ("no higher bar for texts naming no machine", |_, s| {
            s.off.unnamed = true
        }),
    ];
    let mut out = format!(
        "ablation, split {split}, threshold {t:.2}\n\n| engine | right SOP first | English | other languages | consequence | NONE answered | non-repair recognised |\n|---|---|---|---|---|---|---|\n"
    );
    for (name, change) in variants {
        let mut k = load_knowledge(cfg)
            .map_err(|p| anyhow::anyhow!("knowledge base: {}", problems_text(&p)))?;
        let mut settings = engine_settings(cfg);
        change(&mut k, &mut settings);
        let engine = DiagnoseEngine::build(k, settings);
        let outcomes = eval::run(&engine, cases);
        let mine: Vec<&eval::Outcome> = outcomes
            .iter()
            .filter(|o| split == "all" || o.case.split == split)
            .collect();
        let pick = |f: &dyn Fn(&str) -> bool| {
            Figures::of(mine.iter().copied().filter(|o| f(&o.case.subset)), t)
        };
        let all = pick(&|_| true);
        // The same families as the per-family table (English styles, languages, consequences).
        let english = pick(&|s| eval::family(s) == "English");
        let langs = pick(&|s| eval::family(s).len() == 2);
        let consequence = pick(&|s| eval::family(s) == "consequence");
        let pct = |a: usize, b: usize| {
            if b == 0 {
                "–".to_string()
            } else {
                format!("{:.0} %", 100.0 * a as f64 / b as f64)
            }
        };
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            pct(all.right_first, all.covered),
            pct(english.right_first, english.covered),
            pct(langs.right_first, langs.covered),
            pct(consequence.right_first, consequence.covered),
            pct(all.none_answered, all.none),
            pct(all.non_repair_recognised, all.non_repair),
        );
    }
    Ok(out)
}

/// How often the tokens file is checked for changes.
const TOKENS_POLL: Duration = Duration::from_secs(2);

fn refresh_tokens(state: &AppState) {
    let file = state.auth.file().display();
    let mut r = state.auth.refresh();
    if let auth::Refresh::Repaired(mode, then) = r {
        tracing::warn!(path = %file, mode = %format!("{mode:04o}"), now = %format!("{:04o}", mode & 0o755), "tokens_file_permissions_repaired");
        r = *then;
    }
    match r {
        auth::Refresh::Unchanged | auth::Refresh::Repaired(..) => {}
        auth::Refresh::Reloaded(n) => {
            state.metrics.tokens_file_valid.set(1);
            info!(path = %file, tokens = n, "tokens_reloaded")
        }
        auth::Refresh::Invalid(e) => {
            state.metrics.tokens_file_valid.set(0);
            tracing::warn!(path = %file, error = %e, kept = "the last good set of tokens", "tokens_file_invalid")
        }
    }
}

/// Re-reads the knowledge base, lexicon and asset register on SIGHUP (`systemctl reload`), and
/// the tokens file when it changes. A set that does not load keeps the engine in use and logs
/// why; requests in flight keep the engine snapshot they started with.
async fn run_reloads(cfg: Arc<Config>, state: Arc<AppState>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install SIGHUP handler; reload needs a restart");
            return;
        }
    };
    // The tokens file is polled (`copilot-edge token add/revoke` take effect within seconds,
    // no signal needed); everything else reloads on SIGHUP.
    let mut poll = tokio::time::interval(TOKENS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = poll.tick() => {
                refresh_tokens(&state);
                continue;
            }
            r = hup.recv() => if r.is_none() { return },
        }
        refresh_tokens(&state);
        // No bundle is taken or rolled back while the reload reads and swaps.
        let _changing = state.kb.changing().await;
        let t0 = Instant::now();
        let c = cfg.clone();
        let built = tokio::task::spawn_blocking(move || {
            crate::kb::rollout::startup_knowledge(&c)
                .map(|(k, view)| (DiagnoseEngine::build(k, engine_settings(&c)), view))
        })
        .await;
        match built {
            Ok(Ok((engine, view))) => {
                // Swapped and counted before the event says so: whoever reads the log line (a
                // test, an operator) then finds the new set answering and the counter moved.
                state.engine.replace(engine);
                crate::kb::rollout::publish(&state, view);
                state.metrics.kb_reloads.with_label_values(&["ok"]).inc();
                log_engine(&state.engine.get(), &cfg, "knowledge_base_reloaded");
                crate::memtrim::release_freed_memory();
                info!(ms = t0.elapsed().as_millis() as u64, "reload_done");
            }
            Ok(Err(problems)) => {
                state
                    .metrics
                    .kb_reloads
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(error = %problems_text(&problems), "knowledge_base_reload_failed");
            }
            Err(e) => {
                state
                    .metrics
                    .kb_reloads
                    .with_label_values(&["failed"])
                    .inc();
                error!(error = %e, "knowledge_base_reload_failed");
            }
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT. Returns after an orderly shutdown.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let state_repaired = ensure_dir(&cfg.paths.state_dir, 0o700)?;
    let logs_repaired = ensure_dir(&cfg.paths.log_dir, 0o750)?;
    let _log_guard = logging::init(&cfg.logging, Some(&cfg.paths.log_dir)).context("logging")?;
    if let Some(old) = state_repaired {
        tracing::warn!(path = %cfg.paths.state_dir.display(), mode = %format!("{old:04o}"), now = %format!("{:04o}", old & 0o700), "state_dir_permissions_repaired");
    }
    if let Some(old) = logs_repaired {
        tracing::warn!(path = %cfg.paths.log_dir.display(), mode = %format!("{old:04o}"), now = %format!("{:04o}", old & 0o750), "log_dir_permissions_repaired");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("copilot-edge")
        .build()
        .context("tokio runtime")?;
    let result = runtime.block_on(run_async(cfg, started));
    if let Err(e) = &result {
        error!(error = format!("{e:#}"), "fatal");
    }
    // Give background tasks (none should be left) a moment, then flush logs via the guard.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The tokens accepted at start (every token, and those not from the tokens file), after the
/// permission repairs, and the first-start `api-token` path when that is how the operator gets
/// in. The first-start token exists only while no token is configured anywhere; it becomes the
/// `local-operator` entry of the tokens file (see [`auth::ensure_token`]).
type StartTokens = (
    Vec<auth::TokenEntry>,
    Vec<auth::TokenEntry>,
    Option<PathBuf>,
);

fn first_start_tokens(cfg: &Config) -> anyhow::Result<StartTokens> {
    let mut tokens = cfg.auth.tokens.clone();
    let mut fixed_tokens = cfg.auth.fixed_tokens.clone();
    let file = &cfg.auth.tokens_file;
    let state_dir = &cfg.paths.state_dir;
    if let Some(mode) = auth::tighten_tokens_file(file).context("tokens file permissions")? {
        tracing::warn!(path = %file.display(), mode = %format!("{mode:04o}"), now = %format!("{:04o}", mode & 0o755), "tokens_file_permissions_repaired");
    }
    if let Some(mode) =
        auth::tighten_token_file(state_dir).context("first-start API token permissions")?
    {
        tracing::warn!(path = %state_dir.join(auth::API_TOKEN_FILE).display(), mode = %format!("{mode:04o}"), now = "0600", "api_token_permissions_repaired");
    }
    if cfg.auth.tokens_file_configured_but_missing {
        tracing::warn!(path = %file.display(), "tokens_file_missing");
    }
    let api_token = state_dir.join(auth::API_TOKEN_FILE);
    if tokens.is_empty() {
        let now = logging::rfc3339(std::time::SystemTime::now());
        let (entry, path, made, entered) =
            auth::ensure_token(state_dir, file, &now).context("first-start API token")?;
        match made {
            auth::FirstStart::Created => {
                info!(path = %path.display(), user_id = %entry.user_id, tokens_file = %file.display(), "api_token_generated")
            }
            auth::FirstStart::Entered => {
                info!(path = %path.display(), user_id = %entry.user_id, tokens_file = %file.display(), "api_token_entered")
            }
        }
        if let Err(e) = entered {
            // A tokens file the service cannot write (e.g. under /etc): the token still works
            // for this run, and the operator is told how to make it permanent.
            tracing::warn!(path = %path.display(), error = %e, "api_token_not_entered");
            fixed_tokens.push(entry.clone());
        }
        tokens.push(entry);
        return Ok((tokens, fixed_tokens, Some(path)));
    }
    if let Ok(t) = std::fs::read_to_string(&api_token) {
        let d = auth::digest(t.trim());
        if !t.trim().is_empty() && !tokens.iter().any(|e| e.sha256 == d) {
            tracing::warn!(path = %api_token.display(), tokens_file = %file.display(), hint = "this token is not accepted: it was revoked or never entered; delete the file, or use `copilot-edge token add NAME`", "api_token_not_accepted");
        }
    }
    Ok((tokens, fixed_tokens, None))
}

async fn run_async(cfg: Config, started: Instant) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), config = %cfg.source, state_dir = %cfg.paths.state_dir.display(), log_dir = %cfg.paths.log_dir.display(), "starting");
    let (tokens, fixed_tokens, token_hint) = first_start_tokens(&cfg)?;

    let (knowledge, kb_view) = crate::kb::rollout::startup_knowledge(&cfg)
        .map_err(|p| anyhow::anyhow!("knowledge base: {}", problems_text(&p)))?;
    let engine = DiagnoseEngine::build(knowledge, engine_settings(&cfg));
    log_engine(&engine, &cfg, "knowledge_base_loaded");
    info!(version = %kb_view.version, hash = %kb_view.hash, source = %kb_view.source, "kb_serving");
    crate::memtrim::release_freed_memory();

    let metrics = Arc::new(Metrics::new(
        &cfg.identity.gateway_id,
        cfg.labels.clone(),
        &cfg.metrics,
        cfg.llm_prices.budget_usd_per_day,
    )?);
    let telemetry = Telemetry::start(&cfg, metrics.clone())?;
    let state = Arc::new(AppState {
        server: cfg.server.clone(),
        engine: diagnose::EngineCell::new(engine),
        auth: AuthCell::new(tokens, fixed_tokens, cfg.auth.tokens_file.clone()),
        metrics: metrics.clone(),
        recent: RecentAnswers::new(cfg.engine.recent_answers.get(), cfg.engine.feedback_window),
        gaps: crate::gaps::RecentGaps::new(cfg.logging.gap_question_text),
        kb: Default::default(),
        llm: cfg.llm.clone().map(LlmClient::new),
        prices: cfg.llm_prices,
        writable_dirs: vec![
            ("state_dir", cfg.paths.state_dir.clone()),
            ("log_dir", cfg.paths.log_dir.clone()),
        ],
        spool: telemetry.spool.clone(),
        started,
        gateway_id: cfg.identity.gateway_id.clone(),
        site: cfg.identity.site_plant_id.clone(),
        sinks: crate::sinks::enabled(&cfg),
        auth_failures: auth::AuthFailures::new(),
        host_names: http::host_names(&cfg.server.allowed_hosts),
    });

    crate::kb::rollout::publish(&state, kb_view);

    let stop_signal = StopSignal::install();
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let addr = listener.local_addr().context("local address")?;
    info!(addr = %addr, startup_ms = started.elapsed().as_millis() as u64, "listening");
    let token_cmd = token_hint.as_ref().map_or("<your token>".to_string(), |p| {
        format!("$(cat {})", p.display())
    });
    eprintln!(
        "copilot-edge {} listening on http://{addr}\n  try: curl -H \"Authorization: Bearer {token_cmd}\" -d '{{\"plant_id\":\"plant-7\",\"equipment_id\":\"press-12\",\"problem_description\":\"hydraulic press vibrates above 5 mm/s and leaks coolant near the primary line\"}}' http://{addr}/v1/diagnose",
        env!("CARGO_PKG_VERSION")
    );

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let watchdog = notify::watchdog_interval();
    let heartbeat = Heartbeat::for_watchdog(watchdog);
    let notifier = Notifier::from_env();

    let http_task = tracker.spawn(http::serve(
        listener,
        state.clone(),
        shutdown.child_token(),
        heartbeat.clone(),
    ));
    if let Some(interval) = watchdog {
        tracker.spawn(notify::run_watchdog(
            notifier.clone(),
            interval,
            heartbeat.clone(),
            shutdown.child_token(),
        ));
    }
    notifier.notify("READY=1");
    let sinks_shutdown = CancellationToken::new();
    let producers_shutdown = shutdown.child_token();
    let snapshot_task = telemetry.spool.as_ref().map(|spool| {
        tokio::spawn(run_snapshots(
            spool.clone(),
            metrics.clone(),
            cfg.metrics.snapshot_interval,
            producers_shutdown.clone(),
        ))
    });
    if let (Some(mqtt), Some(spool)) = (cfg.mqtt.clone(), telemetry.spool.clone()) {
        let sink = MqttSink::new(
            mqtt,
            spool,
            metrics.clone(),
            &cfg.identity.gateway_id,
            &cfg.identity.site_plant_id,
            cfg.metrics.snapshot_interval,
        );
        tracker.spawn(sink.run(sinks_shutdown.clone()));
    }
    if let (Some(rw), Some(spool)) = (cfg.remote_write.clone(), telemetry.spool.clone()) {
        let sink = RemoteWriteSink::new(rw, spool, metrics.clone(), cfg.metrics.snapshot_interval);
        tracker.spawn(sink.run(sinks_shutdown.clone()));
    }
    if let Some(pg) = cfg.pushgateway.clone() {
        let sink = PushgatewaySink::new(
            pg,
            &cfg.identity.gateway_id,
            &cfg.identity.site_plant_id,
            metrics.clone(),
            cfg.metrics.snapshot_interval,
            &cfg.spool.dir,
        );
        tracker.spawn(sink.run(sinks_shutdown.clone()));
    }
    let cfg = Arc::new(cfg);
    tracker.spawn(run_reloads(
        cfg.clone(),
        state.clone(),
        shutdown.child_token(),
    ));
    tracker.spawn(
        crate::kb::rollout::Rollout::new(cfg.clone(), state.clone(), engine_settings(&cfg))
            .run(shutdown.child_token()),
    );
    tracker.close();

    stop_signal.wait().await;
    info!("shutdown_started");
    notifier.notify("STOPPING=1");
    shutdown.cancel();
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "http_server_failed"),
        Err(e) => error!(error = %e, "http_task_panicked"),
    }
    // Producers next: a last snapshot, then the log writer drains its queue; then the spool is
    // synced; only then are the sinks told to finish (they get a bounded drain).
    if let Some(t) = snapshot_task {
        let _ = t.await;
    }
    telemetry.stop();
    sinks_shutdown.cancel();
    if tokio::time::timeout(
        cfg.server.shutdown_grace + Duration::from_secs(5),
        tracker.wait(),
    )
    .await
    .is_err()
    {
        error!("shutdown_deadline_exceeded");
    }
    info!(uptime_secs = started.elapsed().as_secs(), "stopped");
    Ok(())
}

/// The spool and the log writer thread that feeds it (only when a spooling sink is enabled).
struct Telemetry {
    spool: Option<Arc<Spool>>,
    writer: Option<(std::thread::JoinHandle<()>, Arc<AtomicBool>)>,
}

impl Telemetry {
    fn start(cfg: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Telemetry> {
        let sinks = crate::sinks::draining_spool(cfg);
        let spool = Spool::open(&cfg.spool, &sinks, metrics.clone()).context("spool")?;
        if sinks.is_empty() {
            // Nothing would ever drain it: keep the directory (for `spool status`), spool nothing.
            return Ok(Telemetry {
                spool: None,
                writer: None,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(LOG_QUEUE);
        if cfg.spool.ship_logs {
            let m = metrics.clone();
            logging::set_shipper(Box::new(move |line: &[u8]| {
                let ok = tx.try_send(line.to_vec()).is_ok();
                if !ok {
                    m.log_events_dropped.inc();
                }
                ok
            }));
        }
        let (sp, st) = (spool.clone(), stop.clone());
        let writer = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || log_writer(sp, rx, st))
            .context("spool writer thread")?;
        Ok(Telemetry {
            spool: Some(spool),
            writer: Some((writer, stop)),
        })
    }

    /// Drains the log queue into the spool and syncs it.
    fn stop(self) {
        if let Some((h, stop)) = self.writer {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
        if let Some(s) = &self.spool {
            if let Err(e) = s.flush() {
                error!(error = %e, "spool_flush_failed");
            }
        }
    }
}

/// Log events queued for the spool before new ones are dropped (and counted).
const LOG_QUEUE: usize = 8192;

/// Batches queued log lines into the spool; syncs the spool every second.
///
/// Loop freedom: the spool reports its own faults through tracing, and those reports come back
/// here as lines to append. The spool throttles them (one a minute while a fault lasts), so a
/// refused append cannot feed itself; and on stop this thread takes what is queued at that
/// moment and returns, whatever keeps arriving.
fn log_writer(spool: Arc<Spool>, rx: std::sync::mpsc::Receiver<Vec<u8>>, stop: Arc<AtomicBool>) {
    let mut last_flush = Instant::now();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(1024);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => batch.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // No shipper installed (`spool.ship_logs = false`): nothing will ever arrive, but
                // this thread still owes the spool its once-a-second sync.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(200))
                }
            }
        }
        // On stop: at most one queue's worth, then out.
        let take = if stopping { LOG_QUEUE } else { 1024 };
        while batch.len() < take {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            // Refusals are counted and reported by the spool itself.
            spool.append(Kind::Log, now_ms(), &refs);
            batch.clear();
        }
        if stopping {
            return;
        }
        if last_flush.elapsed() >= Duration::from_secs(1) {
            let _ = spool.flush();
            last_flush = Instant::now();
        }
    }
}

/// Appends a metrics snapshot every interval, and a last one on shutdown.
async fn run_snapshots(
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            biased;
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let text = metrics.render();
        // A refused append is counted and reported by the spool (a disk fault is its state).
        spool.append(Kind::Metrics, now_ms(), &[&text]);
        if last {
            return;
        }
    }
}

/// SIGTERM and SIGINT, installed before the server answers its first request: a stop that
/// arrives right after `/ready` said 200 is a clean stop, not the default action of the signal.
struct StopSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignal {
    fn install() -> StopSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                error!(error = %e, signal = name, "cannot install the stop signal handler");
                None
            }
        };
        StopSignal {
            term: install(SignalKind::terminate(), "SIGTERM"),
            int: install(SignalKind::interrupt(), "SIGINT"),
        }
    }

    async fn wait(mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => {}
            _ = recv(&mut self.int) => {}
        }
    }
}
