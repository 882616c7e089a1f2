//! The HTTP server: a hyper 1.x HTTP/1.1 accept loop with a connection limit, a header read
//! timeout and graceful shutdown. The only module on the serving side that knows hyper.
//!
//! Shutdown: when the token is cancelled the listener is dropped (no new connections), every
//! open connection is told to finish its in-flight request and close, and [`serve`] waits for
//! them up to `shutdown_grace`.

pub mod error;
pub mod routes;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthCell;
use crate::config::{LlmPrices, ServerConfig};
use crate::diagnose::EngineCell;
use crate::llm::LlmClient;
use crate::logging::Throttle;
use crate::metrics::Metrics;
use crate::notify::Heartbeat;
use crate::recent::RecentAnswers;
use crate::spool::Spool;

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    pub server: ServerConfig,
    /// The diagnose engine; replaced as a whole on reload.
    pub engine: EngineCell,
    /// Accepted tokens; follows the tokens file.
    pub auth: AuthCell,
    pub metrics: Arc<Metrics>,
    pub recent: RecentAnswers,
    pub llm: Option<LlmClient>,
    pub prices: LlmPrices,
    /// Directories `/ready` checks for writability.
    pub writable_dirs: Vec<(&'static str, PathBuf)>,
    /// The telemetry spool, when a sink drains one: `/ready` reports its disk state.
    pub spool: Option<Arc<Spool>>,
    pub started: Instant,
    /// `identity.gateway_id` and `identity.site_plant_id`, for the status page.
    pub gateway_id: String,
    pub site: String,
    /// The configured sinks, by name.
    pub sinks: Vec<&'static str>,
}

impl AppState {
    /// Readiness checks: (name, ok, detail).
    pub fn readiness(&self) -> Vec<(&'static str, bool, String)> {
        let engine = self.engine.get();
        let mut v = vec![(
            "knowledge_base",
            !engine.is_empty(),
            format!("{} documents", engine.len()),
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
        if let Some(spool) = &self.spool {
            // Not ready while telemetry is being dropped; diagnose answers all the same.
            let fault = spool.disk_fault();
            v.push((
                "spool",
                fault.is_none(),
                fault.unwrap_or_else(|| "accepting records".to_string()),
            ));
        }
        v
    }
}

/// Open connections per client address, bounded by `server.max_connections_per_client`.
///
/// The address is the TCP peer: behind a reverse proxy or NAT every client shares one, so there
/// the bound must be raised (or set to 0, off) and enforced by the proxy instead. Request headers
/// such as `X-Forwarded-For` are not used: the bound acts before any byte is read, and a header
/// is whatever the client says.
struct ClientSlots {
    max: usize,
    open: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`ClientSlots`]; freed on drop. `ip` is None when there is no
/// per-client bound.
struct ClientSlot {
    ip: Option<IpAddr>,
    open: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
}

impl ClientSlots {
    fn new(max: usize) -> Self {
        ClientSlots {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or None when that address is at its bound.
    fn enter(&self, ip: IpAddr) -> Option<ClientSlot> {
        if self.max == 0 {
            return Some(ClientSlot {
                ip: None,
                open: self.open.clone(),
            });
        }
        // IPv4 clients on a dual-stack socket arrive as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            ip: Some(ip),
            open: self.open.clone(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// Why the HTTP layer refused a client before any handler ran: the `reason` label of
/// `copilot_edge_http_rejected_total`.
#[derive(Debug, Clone, Copy)]
enum Rejection {
    /// Over `server.max_connections_per_client`.
    PerClientLimit,
    /// A malformed request line or header.
    Parse,
    /// Too many or too large headers.
    TooLarge,
    /// Headers not sent within `server.header_read_timeout_secs`.
    HeaderTimeout,
    /// The client went away in the middle of a request.
    Incomplete,
    /// Anything else hyper blames on the request.
    Other,
}

impl Rejection {
    const COUNT: usize = 6;
    fn as_str(self) -> &'static str {
        match self {
            Rejection::PerClientLimit => "per_client_limit",
            Rejection::Parse => "parse",
            Rejection::TooLarge => "too_large",
            Rejection::HeaderTimeout => "header_timeout",
            Rejection::Incomplete => "incomplete",
            Rejection::Other => "other",
        }
    }
}

/// Warnings about misbehaving clients, at most one per reason every 10 s (with a count), so a
/// flood of garbage cannot turn into a flood of log lines.
static CLIENT_WARNINGS: std::sync::Mutex<[Throttle; Rejection::COUNT]> =
    std::sync::Mutex::new([const { Throttle::new(CLIENT_WARNING_EVERY) }; Rejection::COUNT]);
const CLIENT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Counts a rejection in `copilot_edge_http_rejected_total{reason}` and logs it, throttled.
fn count_rejection(state: &AppState, peer: SocketAddr, why: Rejection, detail: &str) {
    let reason = why.as_str();
    state
        .metrics
        .http_rejected
        .with_label_values(&[reason])
        .inc();
    let report = CLIENT_WARNINGS.lock().unwrap_or_else(|e| e.into_inner())[why as usize].hit();
    if let Some(suppressed) = report {
        tracing::warn!(peer = %peer.ip(), reason, error = detail, similar_suppressed = suppressed, "http_rejected");
    }
}

/// Refuses a connection over the per-client bound: a 429 written without waiting (the socket
/// buffer of a fresh connection takes it), then close.
fn reject_over_limit(stream: &tokio::net::TcpStream, state: &AppState, peer: SocketAddr) {
    let trace = crate::ids::trace_id();
    let body = format!(
        "{{\"error\":{{\"code\":\"too_many_connections\",\"message\":\"more than {} open connections from this address\"}},\"trace_id\":\"{trace}\"}}",
        state.server.max_connections_per_client
    );
    let resp = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nconnection: close\r\nx-request-trace-id: {trace}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
    count_rejection(
        state,
        peer,
        Rejection::PerClientLimit,
        "connection limit per client reached",
    );
}

/// A connection hyper ended with an error before or instead of a handler: malformed request
/// line or headers, headers too large, header read timeout (slow clients), a request cut off.
/// Client aborts and resets are not counted (they are not the client sending garbage).
///
/// hyper's header read timer also runs while a kept-alive connection waits idle for its next
/// request, so a timeout after at least one served request is an idle close, not a slow client.
fn protocol_error(state: &AppState, peer: SocketAddr, e: &hyper::Error, served: u64) {
    let why = if e.is_parse_too_large() {
        Rejection::TooLarge
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_version_h2() {
        Rejection::Parse
    } else if e.is_timeout() && served == 0 {
        Rejection::HeaderTimeout
    } else if e.is_incomplete_message() {
        Rejection::Incomplete
    } else if e.is_user() {
        Rejection::Other
    } else {
        return;
    };
    count_rejection(state, peer, why, &e.to_string());
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
    let clients = ClientSlots::new(state.server.max_connections_per_client);
    loop {
        // Take a connection slot before accepting, so connections over the limit wait in the
        // kernel's backlog instead of being accepted and starved. The tick keeps the watchdog
        // heartbeat going while idle; it only beats when this loop is really turning. All three
        // futures are cancel-safe.
        let (stream, peer) = tokio::select! {
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
        heartbeat.beat();
        // Per-client bound first: one address holding its share of connections gets the next
        // one refused at once, so it cannot take every slot from the rest of the LAN.
        let Some(client_slot) = clients.enter(peer.ip()) else {
            reject_over_limit(&stream, &state, peer);
            continue;
        };
        let Some(permit) = slot.take() else { continue };
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        let served = Arc::new(AtomicU64::new(0));
        let served_in_svc = served.clone();
        let svc = service_fn(move |req| {
            let st = st.clone();
            served_in_svc.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(routes::handle(st, req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        let st = state.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                protocol_error(&st, peer, &e, served.load(Ordering::Relaxed));
            }
            drop(permit);
            drop(client_slot);
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
