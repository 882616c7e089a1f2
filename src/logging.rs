//! Structured JSON logs: one line per event to stdout (journald) and to size-rotated files in the
//! log directory, and a copy of the events operations care about to the spool for shipping.
//!
//! A line looks like
//! `{"timestamp":"2026-11-26T22:40:01.123456Z","level":"info","event":"request_completed","trace_id":"…",…,"target":"copilot_edge::http"}`:
//! the event name is the tracing message, every field is a top-level key (so `jq .trace_id`
//! works), numbers stay numbers. Writing happens on background threads (tracing-appender's
//! non-blocking writer, not lossy): a slow disk delays log lines, never drops them silently.
//!
//! Retention: files rotate at `max_file_bytes` and at most `max_files` are kept (the oldest are
//! deleted), so the log directory is bounded by `max_files × max_file_bytes`. Shipping does not
//! depend on the files — shipped events go through the spool, which has its own bound and
//! counts what it drops — so rotation can never lose an unshipped event unseen.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::config::{LogLevel, LoggingConfig};

/// Lines queued per output before logging blocks.
const LOG_QUEUE_LINES: usize = 8192;

/// Base name of the live log file.
pub const LOG_FILE: &str = "copilot-edge.log";

/// Receives a copy of the events to ship (one JSON line each, no newline). Installed by `app`
/// once the spool is running; returns false when the line could not be queued.
pub type ShipFn = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

static SHIPPER: OnceLock<ShipFn> = OnceLock::new();

/// Installs the log shipper (once per process).
pub fn set_shipper(f: ShipFn) {
    let _ = SHIPPER.set(f);
}

/// Flushes the writers when dropped; keep it alive until the process exits.
pub struct LogGuard {
    _guard: WorkerGuard,
}

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log directory or file could not be opened.
    #[error("log directory {path}: {source}")]
    Io {
        /// Directory or file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A global subscriber was already installed.
    #[error("logging already initialised")]
    AlreadySet,
}

/// A file writer that rotates by size and keeps a bounded number of files.
pub struct RotatingFile {
    dir: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: usize,
}

impl RotatingFile {
    /// Opens (appending) `dir/copilot-edge.log`.
    pub fn open(dir: &Path, max_bytes: u64, max_files: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))?;
        let size = file.metadata()?.len();
        let mut r = RotatingFile {
            dir: dir.to_path_buf(),
            file,
            size,
            max_bytes,
            max_files: max_files.max(1),
        };
        r.prune()?;
        Ok(r)
    }

    /// Rotated files, oldest first.
    pub fn rotated_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("copilot-edge.") && n.ends_with(".log") && n != LOG_FILE
                })
            })
            .collect();
        v.sort();
        Ok(v)
    }

    fn prune(&mut self) -> io::Result<()> {
        let rotated = Self::rotated_files(&self.dir)?;
        let excess = (rotated.len() + 1).saturating_sub(self.max_files);
        for p in rotated.into_iter().take(excess) {
            std::fs::remove_file(p)?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Zero-padded so that lexical order is age order.
        std::fs::rename(
            self.dir.join(LOG_FILE),
            self.dir.join(format!("copilot-edge.{nanos:020}.log")),
        )?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.size = 0;
        self.prune()
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Formats `SystemTime` as RFC 3339 UTC with microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Appends `s` as a JSON string literal (RFC 8259 escaping), without allocating.
fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1F | 0x7F => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

struct JsonVisitor<'a> {
    out: &'a mut String,
    event: Option<String>,
}

impl JsonVisitor<'_> {
    fn key(&mut self, f: &Field) {
        self.out.push(',');
        push_json_str(self.out, f.name());
        self.out.push(':');
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" {
            self.event = Some(v.to_string());
            return;
        }
        self.key(f);
        push_json_str(self.out, v);
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        let s = format!("{v:?}");
        self.record_str(f, &s);
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.key(f);
        let _ = write!(self.out, "{v}");
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.key(f);
        let _ = write!(self.out, "{v}");
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.key(f);
        if v.is_finite() {
            let _ = write!(self.out, "{v}");
        } else {
            self.out.push_str("null");
        }
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.key(f);
        self.out.push_str(if v { "true" } else { "false" });
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        let s = v.to_string();
        self.record_str(f, &s);
    }
}

/// Formats one event as a JSON line (with trailing newline).
pub fn format_event(event: &Event<'_>, now: SystemTime) -> (String, String) {
    let meta = event.metadata();
    let mut fields = String::with_capacity(256);
    let mut v = JsonVisitor {
        out: &mut fields,
        event: None,
    };
    event.record(&mut v);
    let name = v.event.take().unwrap_or_default();
    let mut line = String::with_capacity(fields.len() + 128);
    line.push_str("{\"timestamp\":\"");
    line.push_str(&rfc3339(now));
    line.push_str("\",\"level\":\"");
    line.push_str(&meta.level().as_str().to_ascii_lowercase());
    line.push_str("\",\"event\":");
    push_json_str(&mut line, &name);
    line.push_str(&fields);
    line.push_str(",\"target\":");
    push_json_str(&mut line, meta.target());
    line.push_str("}\n");
    (line, name)
}

struct JsonLayer {
    out: NonBlocking,
    max_level: Level,
}

/// Where the writer thread puts each batch of lines: stdout and, if configured, the log file.
/// One thread and one queue for both, so a request's log line costs one queue push and at most
/// one wake-up.
struct Tee {
    stdout: io::BufWriter<io::Stdout>,
    file: Option<io::BufWriter<RotatingFile>>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A broken stdout (closed pipe) must not stop the file log, and vice versa.
        let a = self.stdout.write_all(buf);
        let b = self.file.as_mut().map_or(Ok(()), |f| f.write_all(buf));
        a.and(b).map(|_| buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        let a = self.stdout.flush();
        let b = self.file.as_mut().map_or(Ok(()), |f| f.flush());
        a.and(b)
    }
}

fn level_of(l: LogLevel) -> Level {
    match l {
        LogLevel::Error => Level::ERROR,
        LogLevel::Warn => Level::WARN,
        LogLevel::Info => Level::INFO,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Trace => Level::TRACE,
    }
}

impl<S: Subscriber> Layer<S> for JsonLayer {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        // Our own events at the configured level; dependencies only when they warn.
        let limit = if meta.target().starts_with("copilot_edge") {
            self.max_level
        } else {
            Level::WARN
        };
        *meta.level() <= limit
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let (line, name) = format_event(event, SystemTime::now());
        let _ = self.out.clone().write_all(line.as_bytes());
        if *event.metadata().level() <= Level::WARN || name == "request_completed" {
            if let Some(ship) = SHIPPER.get() {
                ship(line.trim_end().as_bytes());
            }
        }
    }
}

/// Installs the global JSON logger. With `log_dir` = None (or `file = false`) only stdout.
pub fn init(cfg: &LoggingConfig, log_dir: Option<&Path>) -> Result<LogGuard, LoggingError> {
    // The writer thread drains its queue into buffers and flushes once per batch, so a busy
    // agent makes a few large writes instead of one syscall per line. The queue is bounded
    // (slots are allocated up front, so it is kept small): when full, logging blocks.
    let file = match (cfg.file, log_dir) {
        (true, Some(dir)) => {
            let rf = RotatingFile::open(dir, cfg.max_file_bytes, cfg.max_files.get()).map_err(
                |source| LoggingError::Io {
                    path: dir.to_path_buf(),
                    source,
                },
            )?;
            Some(io::BufWriter::with_capacity(64 * 1024, rf))
        }
        _ => None,
    };
    let tee = Tee {
        stdout: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
        file,
    };
    let (out, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(tee);
    let layer = JsonLayer {
        out,
        max_level: level_of(cfg.level),
    };
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .map_err(|_| LoggingError::AlreadySet)?;
    Ok(LogGuard { _guard: guard })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_micros(1_795_731_601_123_456)),
            "2026-11-26T22:20:01.123456Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn json_escaping_matches_serde() {
        for s in [
            "plain",
            "quote \" and \\ backslash",
            "new\nline\ttab\r",
            "ctl \u{1} \u{7f} é ✓",
            "",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
        }
    }

    #[test]
    fn rotation_is_bounded() {
        let dir = std::env::temp_dir().join(format!("ce-log-{}", uuid::Uuid::new_v4()));
        let mut f = RotatingFile::open(&dir, 100, 3).unwrap();
        for i in 0..50 {
            writeln!(f, "{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}}").unwrap();
        }
        f.flush().unwrap();
        let rotated = RotatingFile::rotated_files(&dir).unwrap();
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let total: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 300, "{total}");
        let live = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
        assert!(live.contains("\"n\":49"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
