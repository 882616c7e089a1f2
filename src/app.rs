//! Builds the components from a validated [`Config`], runs them, and shuts them down in order.
//!
//! Start: directories → logging → API token → knowledge base → metrics → bind → `listening`
//! event → `READY=1`. Stop (SIGTERM/SIGINT): `STOPPING=1` → stop accepting and drain in-flight
//! requests (bounded by `shutdown_grace_secs`) → background tasks → flush logs → exit 0.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::auth::{self, Authenticator};
use crate::config::Config;
use crate::diagnose::{self, DiagnoseEngine, EngineSettings};
use crate::http::{self, AppState};
use crate::llm::LlmClient;
use crate::logging;
use crate::metrics::Metrics;
use crate::notify::{self, Heartbeat, Notifier};
use crate::recent::RecentAnswers;

fn ensure_dir(p: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create directory {}", p.display()))
}

/// Runs the agent until SIGTERM/SIGINT. Returns after an orderly shutdown.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_dir(&cfg.paths.state_dir)?;
    ensure_dir(&cfg.paths.log_dir)?;
    let _log_guard = logging::init(&cfg.logging, Some(&cfg.paths.log_dir)).context("logging")?;
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

async fn run_async(cfg: Config, started: Instant) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), config = %cfg.source, state_dir = %cfg.paths.state_dir.display(), log_dir = %cfg.paths.log_dir.display(), "starting");
    let mut tokens = cfg.auth.tokens.clone();
    let mut token_hint = None;
    if tokens.is_empty() {
        let (entry, path, created) =
            auth::ensure_token(&cfg.paths.state_dir).context("first-start API token")?;
        if created {
            info!(path = %path.display(), user_id = %entry.user_id, "api_token_generated");
        } else {
            info!(path = %path.display(), user_id = %entry.user_id, "api_token_loaded");
        }
        token_hint = Some(path);
        tokens.push(entry);
    }

    let docs = match &cfg.paths.knowledge_dir {
        Some(dir) => diagnose::kb::load_dir(dir)
            .with_context(|| format!("knowledge base {}", dir.display()))?,
        None => diagnose::embedded_documents().context("embedded knowledge base")?,
    };
    let engine = DiagnoseEngine::new(
        docs,
        EngineSettings {
            min_relevance: cfg.engine.min_relevance,
            max_documents: cfg.engine.max_documents.get(),
            max_steps: cfg.engine.max_steps.get(),
        },
    );
    info!(documents = engine.len(), source = %cfg.paths.knowledge_dir.as_ref().map_or("embedded".to_string(), |p| p.display().to_string()), "knowledge_base_loaded");

    let metrics = Arc::new(Metrics::new(
        &cfg.identity.gateway_id,
        cfg.labels.clone(),
        &cfg.metrics,
        cfg.llm_prices.budget_usd_per_day,
    )?);
    let state = Arc::new(AppState {
        server: cfg.server.clone(),
        engine,
        auth: Authenticator::new(tokens),
        metrics: metrics.clone(),
        recent: RecentAnswers::new(cfg.engine.recent_answers.get(), cfg.engine.feedback_window),
        llm: cfg.llm.clone().map(LlmClient::new),
        prices: cfg.llm_prices,
        writable_dirs: vec![
            ("state_dir", cfg.paths.state_dir.clone()),
            ("log_dir", cfg.paths.log_dir.clone()),
        ],
        started,
    });

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
    tracker.close();

    wait_for_signal().await;
    info!("shutdown_started");
    notifier.notify("STOPPING=1");
    shutdown.cancel();
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "http_server_failed"),
        Err(e) => error!(error = %e, "http_task_panicked"),
    }
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            error!(error = %e, "cannot install SIGTERM handler; only SIGINT will stop the agent");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
