//! systemd notifications (`sd_notify`): `READY=1` once the listener is bound and the knowledge
//! base is loaded, `WATCHDOG=1` while the service makes progress, `STOPPING=1` on shutdown.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op. The watchdog only pings
//! when the HTTP accept loop has reported a heartbeat within the last interval, so a wedged
//! server stops pinging and systemd restarts it; a bare timer would keep a dead service alive.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Sends notifications to the service manager, if there is one.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<std::path::PathBuf>,
    abstract_name: Option<Vec<u8>>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(s) if s.to_string_lossy().starts_with('@') => Notifier {
                socket: None,
                abstract_name: Some(s.to_string_lossy()[1..].as_bytes().to_vec()),
            },
            Some(s) if !s.is_empty() => Notifier {
                socket: Some(s.into()),
                abstract_name: None,
            },
            _ => Notifier {
                socket: None,
                abstract_name: None,
            },
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some() || self.abstract_name.is_some()
    }

    /// Sends one notification; errors are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let result = (|| -> std::io::Result<()> {
            let sock = UnixDatagram::unbound()?;
            if let Some(p) = &self.socket {
                sock.send_to(state.as_bytes(), p)?;
            } else if let Some(name) = &self.abstract_name {
                #[cfg(target_os = "linux")]
                {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    sock.send_to_addr(state.as_bytes(), &addr)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            if self.enabled() {
                tracing::warn!(error = %e, state, "sd_notify_failed");
            }
        }
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, when `WATCHDOG_PID` is ours or unset).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// A progress marker: the accept loop beats it; the watchdog reads it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    /// How often the beating loop should beat while idle.
    pub every: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            every: Duration::from_secs(1),
        }
    }
}

impl Heartbeat {
    /// A heartbeat that beats often enough for a watchdog of `interval` (four beats per interval).
    pub fn for_watchdog(interval: Option<Duration>) -> Self {
        let every = interval.map_or(Duration::from_secs(1), |i| {
            (i / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
        });
        Heartbeat {
            every,
            ..Default::default()
        }
    }

    /// Records progress now.
    pub fn beat(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Time since the last beat.
    pub fn since_last(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Pings `WATCHDOG=1` every `interval / 2` while the heartbeat is fresher than `interval / 2`.
pub async fn run_watchdog(
    n: Notifier,
    interval: Duration,
    hb: Heartbeat,
    shutdown: CancellationToken,
) {
    let period = interval / 2;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if hb.since_last() <= period {
                    n.notify("WATCHDOG=1");
                } else {
                    tracing::warn!(stalled_ms = hb.since_last().as_millis() as u64, "watchdog_skipped");
                }
            }
        }
    }
}
