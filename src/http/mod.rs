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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// `[server]`: listener bounds, timeouts, SLA and whether `/metrics` needs a token.
    pub server: ServerConfig,
    /// The diagnose engine; replaced as a whole on reload.
    pub engine: EngineCell,
    /// Accepted tokens; follows the tokens file.
    pub auth: AuthCell,
    /// Every exported metric.
    pub metrics: Arc<Metrics>,
    /// Recent answers `/v1/feedback` can rate, by request id.
    pub recent: RecentAnswers,
    /// Refusals and low ratings, for the status page ([`crate::gaps`]).
    pub gaps: crate::gaps::RecentGaps,
    /// The running knowledge base's version, source and last check ([`crate::kb`]).
    pub kb: crate::kb::rollout::KbState,
    /// The upstream LLM client; `None` = the local engine writes every report.
    pub llm: Option<LlmClient>,
    /// `[llm]` prices, for `copilot_llm_cost_usd_total`.
    pub prices: LlmPrices,
    /// Directories `/ready` checks for writability.
    pub writable_dirs: Vec<(&'static str, PathBuf)>,
    /// The telemetry spool, when a sink drains one: `/ready` reports its disk state.
    pub spool: Option<Arc<Spool>>,
    /// When the agent started (monotonic), for `uptime_seconds`.
    pub started: Instant,
    /// `identity.gateway_id`, for the status page.
    pub gateway_id: String,
    /// `identity.site_plant_id`, for the status page.
    pub site: String,
    /// The configured sinks, by name.
    pub sinks: Vec<&'static str>,
    /// Failed authentications per client address (slow-down, throttled log lines).
    pub auth_failures: crate::auth::AuthFailures,
    /// Names the `Host` header may carry besides IP literals and localhost: this machine's
    /// host name (and `<name>.local`) and `server.allowed_hosts`.
    pub host_names: Vec<String>,
}

/// This machine's host name, lower case (empty when unknown).
pub fn machine_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The names a request's `Host` may use: this machine's host name, `<name>.local` (mDNS), and
/// the configured `server.allowed_hosts`.
pub fn host_names(allowed: &[String]) -> Vec<String> {
    let mut v: Vec<String> = allowed.iter().map(|h| h.to_ascii_lowercase()).collect();
    let own = machine_host_name();
    if !own.is_empty() {
        v.push(format!("{own}.local"));
        v.push(own);
    }
    v
}

/// Whether a `Host` header value is acceptable: an IP literal (a rebinding attack needs a name
/// of its own), `localhost` or `*.localhost`, a single-label name, or one of `names` (an entry `*.example.com`
/// accepts every name under it; `*` accepts all).
pub fn host_allowed(host: &str, names: &[String]) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split(']')
            .next()
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        }
    };
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // A single-label name (`gw12`) resolves only on the plant's own network (hosts file,
    // search domain): a rebinding page needs a public name of its own, which has a dot.
    if name == "localhost" || name.ends_with(".localhost") || !name.contains('.') {
        return true;
    }
    names.iter().any(|n| {
        n == "*"
            || *n == name
            || n.strip_prefix("*.").is_some_and(|suffix| {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            })
    })
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

/// Open connections per client address, bounded by `server.max_connections_per_client`, and the
/// fair share of the global bound (`server.max_connections`) when it is reached.
///
/// The address is the TCP peer: behind a reverse proxy or NAT every client shares one, so there
/// the bound must be raised (or set to 0, off) and enforced by the proxy instead. Request headers
/// such as `X-Forwarded-For` are not used: the bound acts before any byte is read, and a header
/// is whatever the client says.
///
/// Fair share: when every slot is taken, a connection from an address that holds fewer
/// connections than the address holding the most makes that address give one up (its newest
/// connection is closed); otherwise it is refused at once with 503. So many addresses together
/// (each under the per-client bound) cannot starve an address that holds few or none, and the
/// addresses holding the most never push each other out. Off with the per-client bound (0).
struct ClientSlots {
    max: usize,
    table: Arc<std::sync::Mutex<SlotTable>>,
}

#[derive(Default)]
struct SlotTable {
    by_ip: std::collections::HashMap<IpAddr, Vec<Entry>>,
    next_id: u64,
}

/// A connection in the table: its id, its eviction signal, whether it holds one of the global
/// slots yet (only such a connection can give one up), and, once it is told to go, where its
/// slot goes: straight to the connection that asked, so no other connection can take it first.
struct Entry {
    id: u64,
    evicted: CancellationToken,
    holds_slot: Arc<std::sync::atomic::AtomicBool>,
    handoff: Option<tokio::sync::oneshot::Sender<OwnedSemaphorePermit>>,
}

/// One connection's place in [`ClientSlots`]; freed on drop. `evicted` is cancelled when the
/// connection must give its slot up for a fairer share.
struct ClientSlot {
    ip: IpAddr,
    id: u64,
    evicted: CancellationToken,
    holds_slot: Arc<std::sync::atomic::AtomicBool>,
    table: Arc<std::sync::Mutex<SlotTable>>,
}

impl ClientSlots {
    fn new(max: usize) -> Self {
        ClientSlots {
            max,
            table: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or None when that address is at its bound.
    fn enter(&self, ip: IpAddr) -> Option<ClientSlot> {
        // IPv4 clients on a dual-stack socket arrive as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let id = t.next_id;
        t.next_id += 1;
        let open = t.by_ip.entry(ip).or_default();
        if self.max > 0 && open.len() >= self.max {
            if open.is_empty() {
                t.by_ip.remove(&ip);
            }
            return None;
        }
        let evicted = CancellationToken::new();
        let holds_slot = Arc::new(std::sync::atomic::AtomicBool::new(false));
        open.push(Entry {
            id,
            evicted: evicted.clone(),
            holds_slot: holds_slot.clone(),
            handoff: None,
        });
        Some(ClientSlot {
            ip,
            id,
            evicted,
            holds_slot,
            table: self.table.clone(),
        })
    }

    /// With every slot taken: makes the address holding the most live connections close its
    /// newest one when it holds more than `ip` (counting `ip`'s new connection). The closed
    /// connection's slot arrives on the returned channel.
    fn evict_for(
        &self,
        ip: IpAddr,
    ) -> Option<tokio::sync::oneshot::Receiver<OwnedSemaphorePermit>> {
        if self.max == 0 {
            return None;
        }
        let ip = ip.to_canonical();
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let live = |v: &Vec<Entry>| v.iter().filter(|e| !e.evicted.is_cancelled()).count();
        let mine = t.by_ip.get(&ip).map_or(0, live);
        let top = t
            .by_ip
            .iter()
            .filter(|(a, _)| **a != ip)
            .map(|(a, v)| (live(v), *a))
            .max_by_key(|(n, _)| *n);
        let (n, a) = top?;
        if n <= mine {
            return None;
        }
        // Its newest connection that holds a slot (one still waiting has none to give).
        let victim = t
            .by_ip
            .get_mut(&a)?
            .iter_mut()
            .rev()
            .find(|e| !e.evicted.is_cancelled() && e.holds_slot.load(Ordering::Acquire))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        victim.handoff = Some(tx);
        victim.evicted.cancel();
        Some(rx)
    }
}

impl ClientSlot {
    /// The connection is over: leaves the table and gives its slot to the connection it was
    /// evicted for, if any (else the slot returns to the pool).
    fn finish(self, permit: OwnedSemaphorePermit) {
        let handoff = {
            let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
            t.by_ip
                .get_mut(&self.ip)
                .and_then(|v| v.iter_mut().find(|e| e.id == self.id))
                .and_then(|e| e.handoff.take())
        };
        // Drop (below) removes the entry.
        if let Some(tx) = handoff {
            let _ = tx.send(permit);
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = t.by_ip.get_mut(&self.ip) {
            v.retain(|e| e.id != self.id);
            if v.is_empty() {
                t.by_ip.remove(&self.ip);
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
    /// Every slot taken and the address already holds its fair share: refused with 503.
    ServerFull,
    /// A connection closed to give its slot to an address holding fewer.
    Evicted,
}

impl Rejection {
    const COUNT: usize = 8;
    fn as_str(self) -> &'static str {
        match self {
            Rejection::PerClientLimit => "per_client_limit",
            Rejection::Parse => "parse",
            Rejection::TooLarge => "too_large",
            Rejection::HeaderTimeout => "header_timeout",
            Rejection::Incomplete => "incomplete",
            Rejection::Other => "other",
            Rejection::ServerFull => "server_full",
            Rejection::Evicted => "evicted",
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

/// Refuses a connection at once: a JSON error written without waiting (the socket buffer of a
/// fresh connection takes it), then close.
fn reject_connection(
    stream: &tokio::net::TcpStream,
    state: &AppState,
    peer: SocketAddr,
    why: Rejection,
) {
    let trace = crate::ids::trace_id();
    let (status, code, message) = match why {
        Rejection::PerClientLimit => (
            "429 Too Many Requests",
            "too_many_connections",
            format!(
                "more than {} open connections from this address",
                state.server.max_connections_per_client
            ),
        ),
        _ => (
            "503 Service Unavailable",
            "server_full",
            "every connection slot is taken and this address holds its share".to_string(),
        ),
    };
    let body = format!(
        "{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\"}},\"trace_id\":\"{trace}\"}}"
    );
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\nx-request-trace-id: {trace}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
    count_rejection(state, peer, why, &message);
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

/// How often the accept loop checks whether a connection flood is over, to hand the memory its
/// connections used back to the OS.
const TRIM_CHECK: Duration = Duration::from_secs(5);
/// A flood: at least this many connections open at once since the last trim...
const FLOOD_CONNECTIONS: usize = 256;
/// ...and over when at most this many remain.
const CALM_CONNECTIONS: usize = 16;

/// Serves connections until `shutdown` is cancelled, then drains them.
///
/// Every connection takes one of `server.max_connections` slots. The loop accepts at once and
/// decides after seeing the peer: over the per-client bound → 429; no free slot → the fair
/// share rule of [`ClientSlots`] (an address holding fewer than the top address gets a slot
/// that address gives up, else 503). Refusals are written and closed without a task.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    heartbeat: Heartbeat,
) -> Result<(), HttpError> {
    let max = state.server.max_connections.get();
    let limit = Arc::new(Semaphore::new(max));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.server.header_read_timeout)
        .keep_alive(true);
    let mut tick = tokio::time::interval(heartbeat.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trim_tick = tokio::time::interval(TRIM_CHECK);
    trim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak_open = 0usize;
    let mut accept_errors = 0u32;
    heartbeat.beat();
    let clients = ClientSlots::new(state.server.max_connections_per_client);
    loop {
        // The tick keeps the watchdog heartbeat going while idle; it only beats when this loop
        // is really turning. All three futures are cancel-safe.
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => { heartbeat.beat(); continue; }
            _ = trim_tick.tick() => {
                let open = max - limit.available_permits();
                if peak_open >= FLOOD_CONNECTIONS && open <= CALM_CONNECTIONS {
                    peak_open = 0;
                    tokio::task::spawn_blocking(crate::memtrim::release_freed_memory);
                }
                continue;
            }
            r = listener.accept() => match r {
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
            reject_connection(&stream, &state, peer, Rejection::PerClientLimit);
            continue;
        };
        // A free slot, or one that an address holding more is told to give up (its connection
        // closes at once, so the wait below is short), or a refusal.
        let (permit, handoff) = match limit.clone().try_acquire_owned() {
            Ok(p) => (Some(p), None),
            Err(_) => match clients.evict_for(peer.ip()) {
                Some(rx) => (None, Some(rx)),
                None => {
                    reject_connection(&stream, &state, peer, Rejection::ServerFull);
                    continue;
                }
            },
        };
        peak_open = peak_open.max(max - limit.available_permits());
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        let served = Arc::new(AtomicU64::new(0));
        let served_in_svc = served.clone();
        let ip = peer.ip().to_canonical();
        let svc = service_fn(move |req| {
            let st = st.clone();
            served_in_svc.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(routes::handle(st, req, ip).await) }
        });
        let st = state.clone();
        let wait = state.server.header_read_timeout;
        let evicted = client_slot.evicted.clone();
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        if permit.is_some() {
            client_slot.holds_slot.store(true, Ordering::Release);
        }
        tokio::spawn(async move {
            let permit = match (permit, handoff) {
                (Some(p), _) => p,
                (None, Some(rx)) => match tokio::time::timeout(wait, rx).await {
                    Ok(Ok(p)) => {
                        client_slot.holds_slot.store(true, Ordering::Release);
                        p
                    }
                    // The connection told to go never gave its slot up (cannot happen: a
                    // connection hands it over on every path); do not wait longer.
                    _ => return,
                },
                (None, None) => return,
            };
            tokio::select! {
                r = conn => if let Err(e) = r {
                    protocol_error(&st, peer, &e, served.load(Ordering::Relaxed));
                },
                // Dropping the connection closes it (an idle keep-alive one, or one still
                // sending headers: the addresses holding the most are the ones told to go).
                _ = evicted.cancelled() => count_rejection(&st, peer, Rejection::Evicted, "connection closed for a fair share"),
            }
            client_slot.finish(permit);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_that_a_rebinding_page_cannot_use() {
        let names = vec![
            "gw12.plant.example".to_string(),
            "*.lan.example".to_string(),
        ];
        for ok in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "localhost:8080",
            "LOCALHOST",
            "gw12.plant.example:8080",
            "gw12.plant.example.",
            "tablet.lan.example",
            "gw12:8080",
        ] {
            assert!(host_allowed(ok, &names), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "lan.example",
            "xlan.example",
            "[zz]:1",
            "gw12.plant.example.evil.example",
        ] {
            assert!(!host_allowed(bad, &names), "{bad}");
        }
        assert!(host_allowed("anything", &["*".to_string()]));
    }

    #[test]
    fn the_address_holding_most_gives_up_a_slot_to_one_holding_fewer() {
        let slots = ClientSlots::new(64);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let hold = |s: ClientSlot| {
            s.holds_slot.store(true, Ordering::Release);
            s
        };
        let held: Vec<ClientSlot> = (0..3).map(|_| hold(slots.enter(a).unwrap())).collect();
        // b's first connection: a holds 3 > 1.
        let b1 = slots.enter(b).unwrap();
        assert!(slots.evict_for(b).is_some());
        assert!(held[2].evicted.is_cancelled() && !held[0].evicted.is_cancelled());
        // a's next connection: a would hold 3 live, b 1 → a is not owed anything.
        let a4 = hold(slots.enter(a).unwrap());
        assert!(slots.evict_for(a).is_none());
        // b's second: 3 against 2 → a gives up its newest again; then 2 and 2.
        let _b2 = slots.enter(b).unwrap();
        assert!(slots.evict_for(b).is_some());
        assert!(a4.evicted.is_cancelled() && !held[1].evicted.is_cancelled());
        // Equal shares never push each other out.
        let _b3 = slots.enter(b).unwrap();
        assert!(slots.evict_for(b).is_none());
        drop(b1);
        // Off with the per-client bound.
        let off = ClientSlots::new(0);
        let _x = off.enter(a).unwrap();
        assert!(off.evict_for(b).is_none());
    }
}
