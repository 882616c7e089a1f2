//! The HTTP server: a hyper 1.x HTTP/1.1 accept loop with a connection limit, a header read
//! timeout and graceful shutdown. The only module on the serving side that knows hyper.
//!
//! Shutdown: when the token is cancelled the listener is dropped (no new connections), every
//! open connection is told to finish its in-flight request and close, and [`serve`] waits for
//! them up to `shutdown_grace`.

pub mod error;
pub mod routes;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::{LlmPrices, ServerConfig};
use crate::diagnose::DiagnoseEngine;
use crate::llm::LlmClient;
use crate::metrics::Metrics;
use crate::notify::Heartbeat;
use crate::recent::RecentAnswers;

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    pub server: ServerConfig,
    pub engine: DiagnoseEngine,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub recent: RecentAnswers,
    pub llm: Option<LlmClient>,
    pub prices: LlmPrices,
    /// Directories `/ready` checks for writability.
    pub writable_dirs: Vec<(&'static str, PathBuf)>,
    pub started: Instant,
}

impl AppState {
    /// Readiness checks: (name, ok, detail).
    pub fn readiness(&self) -> Vec<(&'static str, bool, String)> {
        let mut v = vec![(
            "knowledge_base",
            !self.engine.is_empty(),
            format!("{} documents", self.engine.len()),
        )];
        for (name, dir) in &self.writable_dirs {
            let probe = dir.join(format!(".ready-probe-{}", std::process::id()));
            let r = std::fs::write(&probe, b"ok").and_then(|_| std::fs::remove_file(&probe));
            v.push((
                name,
                r.is_ok(),
                match r {
                    Ok(()) => format!("{} writable", dir.display()),
                    Err(e) => format!("{}: {e}", dir.display()),
                },
            ));
        }
        v
    }
}

/// Errors of the server loop.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Accepting failed in a way that will not heal (e.g. the listener was closed under us).
    #[error("accept failed: {0}")]
    Accept(std::io::Error),
}

/// Serves connections until `shutdown` is cancelled, then drains them.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    heartbeat: Heartbeat,
) -> Result<(), HttpError> {
    let limit = Arc::new(Semaphore::new(state.server.max_connections.get()));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.server.header_read_timeout)
        .keep_alive(true);
    let mut tick = tokio::time::interval(heartbeat.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut accept_errors = 0u32;
    heartbeat.beat();
    let mut slot: Option<tokio::sync::OwnedSemaphorePermit> = None;
    loop {
        // Take a connection slot before accepting, so connections over the limit wait in the
        // kernel's backlog instead of being accepted and starved. The tick keeps the watchdog
        // heartbeat going while idle; it only beats when this loop is really turning. All three
        // futures are cancel-safe.
        let (stream, _peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => { heartbeat.beat(); continue; }
            p = limit.clone().acquire_owned(), if slot.is_none() => match p {
                Ok(p) => { slot = Some(p); continue; }
                Err(_) => break,
            },
            r = listener.accept(), if slot.is_some() => match r {
                Ok(s) => { accept_errors = 0; s }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; give up only if it persists.
                    accept_errors += 1;
                    tracing::warn!(error = %e, "accept_failed");
                    if accept_errors > 100 { return Err(HttpError::Accept(e)); }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = slot.take() else { continue };
        heartbeat.beat();
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        let svc = service_fn(move |req| {
            let st = st.clone();
            async move { Ok::<_, Infallible>(routes::handle(st, req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let grace = state.server.shutdown_grace;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("http_drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!(grace_secs = grace.as_secs(), "http_drain_timeout"),
    }
    Ok(())
}
