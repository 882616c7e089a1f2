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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Creates `dir` (and missing parents) with `mode` whatever the umask says, so a service
/// started under `umask 000` does not leave its state world-writable. Existing directories are
/// left as they are.
pub fn create_private_dir(dir: &Path, mode: u32) -> io::Result<Option<u32>> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(dir) {
        if !meta.is_dir() {
            return Ok(None);
        }
        // Made by an older version, under a loose umask, or by hand: tighten a directory of our
        // own (never a shared one such as /tmp, which has the sticky bit or another owner).
        // SAFETY: geteuid has no preconditions.
        let ours = meta.uid() == unsafe { libc::geteuid() };
        let old = meta.mode() & 0o7777;
        if ours && old & 0o1000 == 0 && old & 0o777 & !mode != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(old & 0o777 & mode))?;
            return Ok(Some(old));
        }
        return Ok(None);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    // The umask can only take bits away; set exactly `mode` on the leaf.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    Ok(None)
}

/// Opens a log file for appending, created 0640 (owner writes, group `adm`-style readers read).
fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    let meta = f.metadata()?;
    if meta.permissions().mode() & 0o7777 & !0o640 != 0 {
        // Created under a permissive umask by an older version, or by hand: tighten it.
        f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    }
    Ok(f)
}

/// A file writer that rotates by size and keeps a bounded number of files.
pub struct RotatingFile {
    dir: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: usize,
    /// Set while the disk refuses writes.
    failing: Option<Failing>,
    /// State-change lines for [`Tee`] to put on stdout.
    events: Vec<String>,
    /// The number the next rotated file gets: one more than the highest on disk, so the newest
    /// file always sorts last whatever the wall clock says (a clock stepped back an hour, or a
    /// gateway booted at 2020, must never make pruning delete the newest lines).
    next_seq: u128,
}

impl RotatingFile {
    /// Opens (appending) `dir/copilot-edge.log`.
    pub fn open(dir: &Path, max_bytes: u64, max_files: usize) -> io::Result<Self> {
        create_private_dir(dir, 0o750)?;
        let file = open_log(&dir.join(LOG_FILE))?;
        let size = file.metadata()?.len();
        let mut r = RotatingFile {
            dir: dir.to_path_buf(),
            file,
            size,
            max_bytes,
            max_files: max_files.max(1),
            failing: None,
            events: Vec::new(),
            next_seq: 1,
        };
        r.next_seq = Self::rotated_files(dir)?
            .iter()
            .filter_map(|p| Self::seq_of(p))
            .max()
            .map_or(1, |n| n + 1);
        r.prune()?;
        Ok(r)
    }

    /// The number in a rotated file's name (`copilot-edge.<number>.log`).
    fn seq_of(p: &Path) -> Option<u128> {
        p.file_name()?
            .to_str()?
            .strip_prefix("copilot-edge.")?
            .strip_suffix(".log")?
            .parse()
            .ok()
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
        // A counter, zero-padded so that lexical order is age order. (Older versions named the
        // files by wall-clock nanoseconds, also 20 digits: the counter continues above them.)
        let seq = self.next_seq;
        std::fs::rename(
            self.dir.join(LOG_FILE),
            self.dir.join(format!("copilot-edge.{seq:020}.log")),
        )?;
        self.next_seq += 1;
        self.file = open_log(&self.dir.join(LOG_FILE))?;
        self.size = 0;
        self.prune()
    }
}

impl RotatingFile {
    /// Writes `buf` (whole lines) entirely or not at all: a write the disk could not finish is
    /// cut back off the file, so a full disk never leaves a torn JSON line behind.
    fn write_lines(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(buf) {
            // O_APPEND: the next write goes to the (restored) end.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += buf.len() as u64;
        Ok(())
    }
}

/// Log lines the file could not take, since start (read by the metrics).
static FILE_LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines the log file could not take (disk full, I/O error) since start.
pub fn file_lines_dropped() -> u64 {
    FILE_LINES_DROPPED.load(Ordering::Relaxed)
}

impl Write for RotatingFile {
    /// Never fails: lines the disk cannot take are dropped and counted (stdout still gets
    /// them), and the failure and the recovery are reported once each on stdout by [`Tee`].
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.write_lines(buf) {
            Ok(()) => {
                if let Some(f) = self.failing.take() {
                    self.events.push(state_line(
                        "info",
                        "log_file_recovered",
                        &format!(",\"dropped_lines\":{}", f.dropped),
                    ));
                }
            }
            Err(e) => {
                let lines = buf.iter().filter(|b| **b == b'\n').count().max(1) as u64;
                FILE_LINES_DROPPED.fetch_add(lines, Ordering::Relaxed);
                match &mut self.failing {
                    Some(f) => f.dropped += lines,
                    None => {
                        let mut detail = String::from(",\"error\":");
                        push_json_str(&mut detail, &e.to_string());
                        let mut path = String::new();
                        push_json_str(&mut path, &self.dir.join(LOG_FILE).display().to_string());
                        detail.push_str(",\"path\":");
                        detail.push_str(&path);
                        self.events
                            .push(state_line("warn", "log_file_write_failed", &detail));
                        self.failing = Some(Failing { dropped: lines });
                    }
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The log file is refusing writes.
struct Failing {
    dropped: u64,
}

/// A log line written by the writer thread itself (it cannot go through tracing, whose queue
/// this thread drains).
fn state_line(level: &str, event: &str, fields: &str) -> String {
    format!(
        "{{\"timestamp\":\"{}\",\"level\":\"{level}\",\"event\":\"{event}\"{fields},\"target\":\"copilot_edge::logging\"}}\n",
        rfc3339(SystemTime::now())
    )
}

/// Rate limit for a warning that can repeat: the first occurrence is logged at once, then at
/// most one every `every`, carrying how many were suppressed in between.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle that lets one warning through per `every`.
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Call on every occurrence: `Some(suppressed since the last one logged)` when this one
    /// should be logged, `None` when it should only be counted.
    pub fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forgets the past: the next occurrence is logged at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

/// Formats `SystemTime` as RFC 3339 UTC with microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::clock::civil_from_days(days);
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

/// The last warnings and errors, as their JSON log lines, for the status page.
static RECENT_WARNINGS: std::sync::Mutex<std::collections::VecDeque<String>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());
const RECENT_WARNINGS_KEPT: usize = 20;

/// The most recent warning and error lines (JSON, oldest first), at most 20.
pub fn recent_warnings() -> Vec<String> {
    let g = RECENT_WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    g.iter().cloned().collect()
}

fn remember_warning(line: &str) {
    let mut g = RECENT_WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    if g.len() == RECENT_WARNINGS_KEPT {
        g.pop_front();
    }
    g.push_back(line.trim_end().to_string());
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

impl Tee {
    /// Puts the log file's failure/recovery lines on stdout (the file may be what is failing).
    fn report_file_state(&mut self) {
        if let Some(f) = self.file.as_mut() {
            for line in std::mem::take(&mut f.get_mut().events) {
                let _ = self.stdout.write_all(line.as_bytes());
            }
        }
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A broken stdout (closed pipe) must not stop the file log, and vice versa.
        let a = self.stdout.write_all(buf);
        let b = self.file.as_mut().map_or(Ok(()), |f| f.write_all(buf));
        self.report_file_state();
        a.and(b).map(|_| buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        let a = self.stdout.flush();
        let b = self.file.as_mut().map_or(Ok(()), |f| f.flush());
        self.report_file_state();
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
        let warning = *event.metadata().level() <= Level::WARN;
        if warning {
            remember_warning(&line);
        }
        if warning || name == "request_completed" {
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
    fn a_refused_log_write_leaves_no_torn_line() {
        let dir = std::env::temp_dir().join(format!("ce-log-{}", uuid::Uuid::new_v4()));
        let mut f = RotatingFile::open(&dir, 1 << 20, 3).unwrap();
        f.write_all(b"{\"n\":1}\n").unwrap();
        // The disk refuses writes: dropped, counted, reported once; never an error to the
        // writer thread (stdout still gets the lines).
        let real = std::mem::replace(
            &mut f.file,
            OpenOptions::new().append(true).open("/dev/full").unwrap(),
        );
        let before = file_lines_dropped();
        f.write_all(b"{\"n\":2}\n{\"n\":3}\n").unwrap();
        f.write_all(b"{\"n\":4}\n").unwrap();
        assert!(file_lines_dropped() >= before + 3);
        let events = std::mem::take(&mut f.events);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].contains("log_file_write_failed"));
        f.file = real;
        f.write_all(b"{\"n\":5}\n").unwrap();
        let events = std::mem::take(&mut f.events);
        assert!(
            events[0].contains("log_file_recovered") && events[0].contains("\"dropped_lines\":3")
        );
        let live = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
        assert_eq!(live, "{\"n\":1}\n{\"n\":5}\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn throttle_lets_one_through_per_interval_with_a_count() {
        let mut t = Throttle::new(Duration::from_millis(200));
        assert_eq!(t.hit(), Some(0));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(t.hit(), Some(2));
        t.reset();
        assert_eq!(t.hit(), Some(0));
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

    #[test]
    fn rotated_names_follow_a_counter_not_the_wall_clock() {
        let dir = std::env::temp_dir().join(format!("ce-log-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        // A file an older version named by wall-clock nanoseconds "in the future" (before a
        // clock stepped back): the next rotation still sorts after it, and pruning keeps the
        // newest lines.
        let old = dir.join("copilot-edge.01800000000000000000.log");
        std::fs::write(&old, "{\"n\":\"old\"}\n").unwrap();
        let mut f = RotatingFile::open(&dir, 60, 2).unwrap();
        for i in 0..6 {
            let line = format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}}\n");
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let rotated = RotatingFile::rotated_files(&dir).unwrap();
        assert_eq!(rotated.len(), 1, "{rotated:?}");
        assert!(!old.exists(), "the oldest file is the one pruned");
        let kept = std::fs::read_to_string(&rotated[0]).unwrap();
        assert!(kept.contains("\"n\":4"), "{kept}");
        assert!(std::fs::read_to_string(dir.join(LOG_FILE))
            .unwrap()
            .contains("\"n\":5"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
