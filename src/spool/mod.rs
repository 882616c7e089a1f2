//! The spool: an on-disk, append-only buffer of telemetry records (metrics snapshots and log
//! events) that sinks drain in order and acknowledge.
//!
//! # Layout
//! `<dir>/segments/<first seq, 20 digits>.seg` holds records in the format of [`segment`];
//! `<dir>/cursors/<sink>.ack` holds the highest sequence number the sink has delivered, so every
//! record up to it may be forgotten by that sink.
//!
//! # Invariants
//! - Sequence numbers strictly increase across restarts: after a restart the next one is above
//!   both the newest record on disk and every cursor (a consumer that drops duplicates by
//!   sequence number never drops new data).
//! - A record is appended with one `write(2)` before `append` returns, so it survives the agent
//!   being killed; `fdatasync` runs at least every second (`flush`) and on shutdown, so power
//!   loss costs at most about a second of records.
//! - Delivery is at-least-once: a sink acknowledges a record only after its receiver did (an
//!   MQTT PUBACK, an HTTP 2xx); cursors are written crash-safely (write, fsync, rename, fsync the
//!   directory) at most once a second, so a crash can only cause re-delivery, never loss.
//! - On open, every segment is checked: a torn tail is cut off, a damaged region is skipped (the
//!   segment is rewritten with its intact records), and what was lost is counted in
//!   `copilot_edge_spool_corrupt_records_total`. Opening never fails because of damaged data.
//! - Disk use stays under `max_bytes`: before an append that would pass it, the oldest segments
//!   are deleted and their undelivered records counted as dropped (`reason="max_bytes"`). Below
//!   the free-space floor nothing is written and the new records are counted as dropped
//!   (`reason="disk_floor"`).
//! - Segments every sink has delivered are deleted.
//!
//! The spool knows nothing of sinks beyond their names; sinks know nothing of files.

mod disk;
mod inspect;
mod recovery;
pub mod segment;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use self::disk::{
    free_bytes, DiskFault, DiskState, DISK_REPORT_EVERY, DROP_MAX_BYTES, DROP_REASONS,
};
pub use self::inspect::{inspect, Inspection};
use self::recovery::{recover_segment, segment_files};
use self::segment::{Decoded, Kind, Record};
use crate::clock::now_ms;
use crate::config::SpoolConfig;
use crate::logging::Throttle;
use crate::metrics::Metrics;

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or directory operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
struct SegmentMeta {
    path: PathBuf,
    first_seq: u64,
    last_seq: u64,
    first_ts_ms: i64,
    records: u64,
    bytes: u64,
    /// (seq, offset) samples, one every few records, to start reads near the right place.
    index: Vec<(u64, u64, i64)>,
}

const INDEX_EVERY: u64 = 64;
const READ_CHUNK: u64 = 256 * 1024;

#[derive(Debug)]
struct Cursor {
    acked: u64,
    persisted: u64,
}

struct Inner {
    dir: PathBuf,
    cfg: SpoolConfig,
    segments: Vec<SegmentMeta>,
    active: Option<File>,
    next_seq: u64,
    cursors: BTreeMap<String, Cursor>,
    total_bytes: u64,
    unsynced: bool,
    last_cursor_persist: Instant,
    buf: Vec<u8>,
    /// Newest sequence number appended in this run, per kind (index `Kind as usize`).
    last_by_kind: [u64; 3],
    /// Record timestamps: never backwards, corrected by the receivers' clock ([`crate::clock`]).
    clock: crate::clock::RecordClock,
    /// Record ages from the boot clock, whatever the wall clock did since.
    timeline: crate::clock::Timeline,
    /// Whether appends are being refused, and the reporting state of that.
    disk: DiskState,
}

impl Inner {
    /// The highest sequence number every sink has delivered (`u64::MAX` with no sinks).
    fn min_acked(&self) -> u64 {
        self.cursors
            .values()
            .map(|c| c.acked)
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// One consumer's backlog in the running service, for `/v1/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    /// The consumer's name (the sink's `NAME`).
    pub sink: String,
    /// Highest sequence number the sink has acknowledged (its cursor); 0 = none yet.
    pub acked: u64,
    /// Records after `acked` still on disk.
    pub pending_records: u64,
    /// Bytes of the pending records on disk (exact at segment starts, otherwise rounded up to
    /// the nearest index entry, at most 64 records more).
    pub pending_bytes: u64,
    /// Age of the oldest pending record, from the boot clock (true across wall-clock steps).
    pub oldest_pending_age_ms: Option<i64>,
}

/// The spool's disk use against its bounds.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Bytes of segment files on disk.
    pub bytes: u64,
    /// `spool.max_bytes`: the disk bound; the oldest records are dropped beyond it.
    pub max_bytes: u64,
    /// `spool.min_free_bytes`: appends stop while the file system has less free space.
    pub min_free_bytes: u64,
    /// Free space on the spool's file system (None when it cannot be read).
    pub free_disk_bytes: Option<u64>,
    /// Appends are being refused (disk below the floor or failing).
    pub write_blocked: bool,
}

/// The spool. Cheap to share (`Arc`); all methods take `&self`.
pub struct Spool {
    dir: PathBuf,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    /// Woken after every append, so sinks wait without polling.
    pub appended: tokio::sync::Notify,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Replaces `path` crash-safely ([`crate::fsutil::write_atomic`]; private like everything in the
/// spool directory).
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), SpoolError> {
    crate::fsutil::write_atomic(path, contents, 0o600).map_err(io_err(path))
}

impl Spool {
    /// Opens (creating if needed) the spool for the named sinks, repairing damage.
    pub fn open(
        cfg: &SpoolConfig,
        sinks: &[&str],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Spool>, SpoolError> {
        let dir = cfg.dir.clone();
        let segdir = dir.join("segments");
        let curdir = dir.join("cursors");
        for d in [&dir, &segdir, &curdir] {
            crate::logging::create_private_dir(d, 0o700).map_err(io_err(d))?;
        }
        let mut cursors = BTreeMap::new();
        let mut max_cursor = 0;
        for s in sinks {
            let p = curdir.join(format!("{s}.ack"));
            let acked = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            max_cursor = max_cursor.max(acked);
            cursors.insert(
                s.to_string(),
                Cursor {
                    acked,
                    persisted: acked,
                },
            );
        }
        // Sequence numbers ever used, even by sinks no longer configured.
        if let Ok(rd) = std::fs::read_dir(&curdir) {
            for e in rd.flatten() {
                if let Some(n) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                {
                    max_cursor = max_cursor.max(n);
                }
            }
        }
        let files = segment_files(&segdir)?;
        let mut segments = Vec::new();
        let mut last = 0u64;
        let mut lost = 0;
        for f in files {
            let (meta, l) = recover_segment(&f, last)?;
            lost += l;
            if let Some(m) = meta {
                last = m.last_seq;
                segments.push(m);
            }
        }
        for reason in DROP_REASONS {
            metrics.spool.dropped.with_label_values(&[reason]);
        }
        if lost > 0 {
            metrics.spool.corrupt.inc_by(lost);
            tracing::warn!(lost_records = lost, dir = %dir.display(), "spool_corruption_repaired");
        }
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let next_seq = last.max(max_cursor) + 1;
        let active = match segments.last() {
            Some(s) => Some(
                OpenOptions::new()
                    .append(true)
                    .open(&s.path)
                    .map_err(io_err(&s.path))?,
            ),
            None => None,
        };
        let spool = Arc::new(Spool {
            dir: dir.clone(),
            inner: Mutex::new(Inner {
                dir,
                cfg: cfg.clone(),
                segments,
                active,
                next_seq,
                cursors,
                total_bytes,
                unsynced: false,
                last_cursor_persist: Instant::now(),
                buf: Vec::new(),
                last_by_kind: [0; 3],
                clock: crate::clock::RecordClock::default(),
                timeline: crate::clock::Timeline::new(next_seq),
                disk: DiskState {
                    fault: None,
                    since: None,
                    dropped: 0,
                    throttle: Throttle::new(DISK_REPORT_EVERY),
                    io_throttle: Throttle::new(DISK_REPORT_EVERY),
                },
            }),
            metrics,
            appended: tokio::sync::Notify::new(),
        });
        // Both kinds' counters exist from the start (at 0), so the first append adds no series:
        // a Sparkplug node would have to rebirth for it.
        for kind in [Kind::Metrics, Kind::Log] {
            spool
                .metrics
                .spool
                .appended
                .with_label_values(&[kind.as_str()]);
        }
        {
            let g = spool.lock();
            spool.update_gauges(&g);
            tracing::info!(
                records = g.segments.iter().map(|s| s.records).sum::<u64>(),
                bytes = g.total_bytes,
                next_seq = g.next_seq,
                "spool_opened"
            );
        }
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_gauges(&self, g: &Inner) {
        let m = &self.metrics.spool;
        m.bytes.set(g.total_bytes as i64);
        let min_acked = g.min_acked();
        let pending: u64 = g.segments.iter().map(|s| pending_in(s, min_acked)).sum();
        m.records.set(pending as i64);
        for (name, c) in &g.cursors {
            let age = oldest_pending(&g.segments, c.acked)
                .map_or(0, |(seq, ts)| g.timeline.age_ms(seq, ts));
            m.oldest_age_seconds
                .with_label_values(&[name])
                .set(age as f64 / 1000.0);
        }
    }

    /// Appends records of one kind, all stamped with the wall-clock reading `ts_ms` as
    /// [`crate::clock::RecordClock`] corrects it (never backwards within a process). Returns the
    /// sequence numbers given (empty if the records were dropped: below the free-space floor, or
    /// the disk refused the write). A refused write leaves no partial record behind and is
    /// counted, not returned as an error: a full disk is a state of the spool
    /// ([`Spool::disk_fault`]), reported when it starts, once a minute while it lasts, and when
    /// it ends.
    pub fn append(&self, kind: Kind, ts_ms: i64, payloads: &[&[u8]]) -> Vec<u64> {
        if payloads.is_empty() {
            return Vec::new();
        }
        let mut g = self.lock();
        let incoming: u64 = payloads
            .iter()
            .map(|p| (segment::HEADER_LEN + p.len()) as u64)
            .sum();
        if let Some(free) = free_bytes(&g.dir) {
            if free < g.cfg.min_free_bytes.saturating_add(incoming) {
                let floor = g.cfg.min_free_bytes;
                self.refuse(
                    &mut g,
                    DiskFault::BelowFloor { free, floor },
                    payloads.len() as u64,
                );
                return Vec::new();
            }
        }
        // The timeline follows the clock the stamps come from (the wall clock now, as the record
        // clock corrects it), not the caller's time: a record appended with an earlier time
        // (a backfill) keeps that time and is never re-stamped as if the clock had stepped.
        let wall = crate::clock::now_ms();
        let stamped = g.clock.stamp(ts_ms);
        let clock_now = wall.saturating_add(stamped - ts_ms);
        let ts_ms = stamped;
        match self.write_records(&mut g, kind, ts_ms, payloads, incoming) {
            Ok(seqs) => {
                if let Some(&first) = seqs.first() {
                    g.timeline.note(first, clock_now);
                }
                if let Some(fault) = g.disk.fault.take() {
                    self.metrics.spool.write_blocked.set(0);
                    tracing::info!(
                        fault = %fault,
                        dropped = std::mem::take(&mut g.disk.dropped),
                        lasted_secs = g.disk.since.map_or(0, |t| t.elapsed().as_secs()),
                        "spool_disk_recovered"
                    );
                    g.disk.throttle.reset();
                }
                self.update_gauges(&g);
                drop(g);
                self.appended.notify_waiters();
                seqs
            }
            Err(e) => {
                self.refuse(
                    &mut g,
                    DiskFault::WriteFailed(e.to_string()),
                    payloads.len() as u64,
                );
                Vec::new()
            }
        }
    }

    /// Encodes and writes the records with one `write(2)`; the segment's metadata changes only
    /// once the write succeeded, and a failed write is cut back off the file.
    fn write_records(
        &self,
        g: &mut Inner,
        kind: Kind,
        ts_ms: i64,
        payloads: &[&[u8]],
        incoming: u64,
    ) -> Result<Vec<u64>, SpoolError> {
        let needs_new = match g.segments.last() {
            None => true,
            Some(s) => s.bytes + incoming > g.cfg.segment_bytes && s.records > 0,
        };
        if needs_new {
            self.start_segment(g)?;
        }
        while g.total_bytes + incoming > g.cfg.max_bytes && g.segments.len() > 1 {
            self.drop_oldest(g)?;
        }
        let mut buf = std::mem::take(&mut g.buf);
        buf.clear();
        let first = g.next_seq;
        let seg_idx = g.segments.len() - 1;
        let base = g.segments[seg_idx].bytes;
        let mut offsets = Vec::with_capacity(payloads.len());
        for (i, p) in payloads.iter().enumerate() {
            offsets.push(base + buf.len() as u64);
            segment::encode(first + i as u64, ts_ms, kind, p, &mut buf);
        }
        let path = g.segments[seg_idx].path.clone();
        let f = g
            .active
            .as_mut()
            .expect("an active segment exists after start_segment");
        if let Err(e) = f.write_all(&buf) {
            // Nothing of a refused write may stay: a torn record would read as damage.
            let _ = f.set_len(base);
            g.buf = buf;
            return Err(SpoolError::Io { path, source: e });
        }
        let s = &mut g.segments[seg_idx];
        let mut seqs = Vec::with_capacity(payloads.len());
        for (i, off) in offsets.into_iter().enumerate() {
            let seq = first + i as u64;
            if s.records % INDEX_EVERY == 0 {
                s.index.push((seq, off, ts_ms));
            }
            if s.records == 0 {
                s.first_seq = seq;
                s.first_ts_ms = ts_ms;
            }
            s.records += 1;
            s.last_seq = seq;
            seqs.push(seq);
        }
        s.bytes += buf.len() as u64;
        g.next_seq = first + payloads.len() as u64;
        g.total_bytes += buf.len() as u64;
        g.unsynced = true;
        g.buf = buf;
        if let Some(last) = seqs.last() {
            g.last_by_kind[kind as usize] = *last;
        }
        self.metrics
            .spool
            .appended
            .with_label_values(&[kind.as_str()])
            .inc_by(seqs.len() as u64);
        Ok(seqs)
    }

    fn start_segment(&self, g: &mut Inner) -> Result<(), SpoolError> {
        if let Some(f) = g.active.take() {
            let _ = f.sync_data();
        }
        let seq = g.next_seq;
        let path = g.dir.join("segments").join(segment_name(seq));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        fsync_dir(&g.dir.join("segments"))?;
        g.segments.push(SegmentMeta {
            path,
            first_seq: seq,
            last_seq: seq.saturating_sub(1),
            first_ts_ms: now_ms(),
            records: 0,
            bytes: 0,
            index: Vec::new(),
        });
        g.active = Some(f);
        Ok(())
    }

    fn drop_oldest(&self, g: &mut Inner) -> Result<(), SpoolError> {
        let s = g.segments.remove(0);
        let min_acked = g.min_acked();
        let lost = pending_in(&s, min_acked);
        std::fs::remove_file(&s.path).map_err(io_err(&s.path))?;
        g.total_bytes -= s.bytes;
        for c in g.cursors.values_mut() {
            c.acked = c.acked.max(s.last_seq);
        }
        if lost > 0 {
            self.metrics
                .spool
                .dropped
                .with_label_values(&[DROP_MAX_BYTES])
                .inc_by(lost);
            tracing::warn!(
                dropped_records = lost,
                first_seq = s.first_seq,
                last_seq = s.last_seq,
                "spool_full_dropped_oldest"
            );
        }
        Ok(())
    }

    /// Up to `max` records after `after`, in order, stopping early past `max_bytes` (at least
    /// one record is returned when any is available).
    pub fn read(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        // Records stamped under a clock that was wrong then go out at their true time once a
        // receiver vouches for the time now ([`crate::clock::Timeline::true_ts`]).
        self.read_at(after, max, max_bytes, crate::clock::true_offset_ms())
    }

    /// [`Spool::read`] given the true offset of the clock (receivers' time minus boot clock).
    fn read_at(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
        truth: Option<i64>,
    ) -> Result<Vec<Record>, SpoolError> {
        let g = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        for s in g
            .segments
            .iter()
            .filter(|s| s.records > 0 && s.last_seq > after)
        {
            let start = s
                .index
                .iter()
                .rev()
                .find(|(seq, _, _)| *seq <= after + 1)
                .map_or(0, |(_, off, _)| *off);
            let f = File::open(&s.path).map_err(io_err(&s.path))?;
            // Read forward in chunks, decoding as we go; a record larger than a chunk just takes
            // several refills.
            let (mut off, mut buf, mut pos) = (start, Vec::<u8>::new(), 0usize);
            loop {
                match segment::decode(&buf, pos) {
                    Decoded::Record(mut r, next) => {
                        pos = next;
                        if r.seq > after {
                            bytes += r.encoded_len();
                            r.ts_ms = g.timeline.true_ts(r.seq, r.ts_ms, truth);
                            out.push(r);
                            if out.len() >= max || bytes >= max_bytes {
                                return Ok(out);
                            }
                        }
                    }
                    Decoded::Incomplete if off >= s.bytes => break,
                    Decoded::Incomplete => {
                        buf.drain(..pos);
                        pos = 0;
                        let chunk = (s.bytes - off).min(READ_CHUNK) as usize;
                        let at = buf.len();
                        buf.resize(at + chunk, 0);
                        f.read_exact_at(&mut buf[at..], off)
                            .map_err(io_err(&s.path))?;
                        off += chunk as u64;
                    }
                    Decoded::Corrupt => {
                        // Repaired on open; damage appearing while running is a disk fault.
                        self.metrics.spool.corrupt.inc();
                        tracing::error!(path = %s.path.display(), offset = off, "spool_corruption_while_running");
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Marks every record up to `seq` as delivered by `sink`.
    pub fn ack(&self, sink: &str, seq: u64) -> Result<(), SpoolError> {
        let mut g = self.lock();
        if let Some(c) = g.cursors.get_mut(sink) {
            c.acked = c.acked.max(seq);
        }
        if g.last_cursor_persist.elapsed() >= Duration::from_secs(1) {
            // A cursor that cannot be persisted only means re-delivery after a crash: keep it in
            // memory, report (throttled), retry on the next ack.
            if let Err(e) = self.persist_cursors(&mut g) {
                g.last_cursor_persist = Instant::now();
                self.io_problem(&mut g, &e);
            }
        }
        if let Err(e) = self.gc(&mut g) {
            self.io_problem(&mut g, &e);
        }
        self.update_gauges(&g);
        Ok(())
    }

    /// The highest sequence number `sink` has delivered.
    pub fn acked(&self, sink: &str) -> u64 {
        self.lock().cursors.get(sink).map_or(0, |c| c.acked)
    }

    /// The newest record of `kind` appended since the spool was opened.
    pub fn last_seq_of(&self, kind: Kind) -> Option<u64> {
        Some(self.lock().last_by_kind[kind as usize]).filter(|s| *s > 0)
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    fn persist_cursors(&self, g: &mut Inner) -> Result<(), SpoolError> {
        let dir = g.dir.join("cursors");
        for (name, c) in g.cursors.iter_mut() {
            if c.acked != c.persisted {
                write_atomic(
                    &dir.join(format!("{name}.ack")),
                    c.acked.to_string().as_bytes(),
                )?;
                c.persisted = c.acked;
            }
        }
        g.last_cursor_persist = Instant::now();
        Ok(())
    }

    fn gc(&self, g: &mut Inner) -> Result<(), SpoolError> {
        let min_acked = g.min_acked();
        while g.segments.len() > 1 && g.segments[0].last_seq <= min_acked {
            let s = g.segments.remove(0);
            std::fs::remove_file(&s.path).map_err(io_err(&s.path))?;
            g.total_bytes -= s.bytes;
        }
        Ok(())
    }

    /// fdatasync the active segment and persist cursors. Called every second and on shutdown.
    /// Failures are reported (throttled) and retried on the next call, never returned: the
    /// data stays in memory and on disk as far as the disk took it.
    pub fn flush(&self) -> Result<(), SpoolError> {
        let mut g = self.lock();
        if g.unsynced {
            if let (Some(f), Some(s)) = (&g.active, g.segments.last()) {
                if let Err(e) = f.sync_data().map_err(io_err(&s.path)) {
                    self.io_problem(&mut g, &e);
                    return Ok(());
                }
            }
            g.unsynced = false;
        }
        if let Err(e) = self.persist_cursors(&mut g) {
            self.io_problem(&mut g, &e);
        }
        self.update_gauges(&g);
        Ok(())
    }

    /// The backlog of every sink.
    pub fn backlog(&self) -> Vec<Backlog> {
        let g = self.lock();
        g.cursors
            .iter()
            .map(|(name, c)| Backlog {
                sink: name.clone(),
                acked: c.acked,
                pending_records: g.segments.iter().map(|s| pending_in(s, c.acked)).sum(),
                pending_bytes: g.segments.iter().map(|s| pending_bytes(s, c.acked)).sum(),
                oldest_pending_age_ms: oldest_pending(&g.segments, c.acked)
                    .map(|(seq, ts)| g.timeline.age_ms(seq, ts)),
            })
            .collect()
    }

    /// Disk use against the configured bounds.
    pub fn usage(&self) -> Usage {
        let g = self.lock();
        Usage {
            bytes: g.total_bytes,
            max_bytes: g.cfg.max_bytes,
            min_free_bytes: g.cfg.min_free_bytes,
            free_disk_bytes: free_bytes(&g.dir),
            write_blocked: g.disk.fault.is_some(),
        }
    }

    /// The spool directory (sinks keep their state files under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().total_bytes
    }
}

fn pending_in(s: &SegmentMeta, acked: u64) -> u64 {
    if s.records == 0 || s.last_seq <= acked {
        0
    } else if s.first_seq > acked {
        s.records
    } else {
        // Sequence numbers inside a segment are contiguous except where damage was cut out.
        (s.last_seq - acked).min(s.records)
    }
}

fn pending_bytes(s: &SegmentMeta, acked: u64) -> u64 {
    if s.records == 0 || s.last_seq <= acked {
        0
    } else if s.first_seq > acked {
        s.bytes
    } else {
        let from = s
            .index
            .iter()
            .rev()
            .find(|(seq, _, _)| *seq <= acked + 1)
            .map_or(0, |e| e.1);
        s.bytes.saturating_sub(from)
    }
}

/// `(seq, ts_ms)` of the oldest pending record, or of a record at most [`INDEX_EVERY`] before it.
fn oldest_pending(segments: &[SegmentMeta], acked: u64) -> Option<(u64, i64)> {
    // The first segment with pending records; within it, the index entry at or before the first
    // pending record. Exact at segment starts; otherwise at most INDEX_EVERY records older than
    // the true oldest pending record (timestamps only grow within a run).
    let s = segments
        .iter()
        .find(|s| s.records > 0 && s.last_seq > acked)?;
    if s.first_seq > acked {
        return Some((s.first_seq, s.first_ts_ms));
    }
    s.index
        .iter()
        .rev()
        .find(|(seq, _, _)| *seq <= acked + 1)
        .map(|e| (e.0, e.2))
        .or(Some((s.first_seq, s.first_ts_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::test_metrics as metrics;

    fn cfg(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            min_free_bytes: 0,
            ship_logs: true,
        }
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ce-spool-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("record-{i:06}-{}", "x".repeat(100)).into_bytes()
    }

    #[test]
    fn every_drop_reason_is_exported_from_zero() {
        let d = tmp();
        let m = metrics();
        let _s = Spool::open(&cfg(&d, 1 << 20, 4096), &["a"], m.clone()).unwrap();
        let text = String::from_utf8(m.render()).unwrap();
        for reason in DROP_REASONS {
            let label = format!("reason=\"{reason}\"");
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with("copilot_edge_spool_dropped_records_total{") && l.contains(&label)
                })
                .unwrap_or_else(|| panic!("{reason} missing:\n{text}"));
            assert!(line.ends_with(" 0"), "{line}");
        }
        for f in [
            DiskFault::BelowFloor { free: 0, floor: 1 },
            DiskFault::WriteFailed(String::new()),
        ] {
            assert!(DROP_REASONS.contains(&f.reason()));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn records_appended_with_an_earlier_time_keep_it_when_the_clock_is_vouched_for() {
        // A backfill appends records with the times they were taken; the clock itself is right.
        // Once a receiver vouches for the time, those records must go out at their own times
        // (re-stamping them as if the clock had stepped collapses a day onto the present).
        let d = tmp();
        let s = Spool::open(&cfg(&d, 1 << 20, 4096), &["a"], metrics()).unwrap();
        let now = crate::clock::now_ms();
        let day = 86_400_000;
        for k in 0..100 {
            s.append(Kind::Metrics, now - day + k * 15_000, &[b"x"]);
        }
        s.append(Kind::Metrics, now, &[b"live"]);
        let truth = Some(now - crate::clock::boot_ms());
        let r = s.read_at(0, 1000, usize::MAX, truth).unwrap();
        assert_eq!(r.len(), 101);
        for (k, rec) in r.iter().take(100).enumerate() {
            assert_eq!(
                rec.ts_ms,
                now - day + k as i64 * 15_000,
                "record {}",
                rec.seq
            );
        }
        assert_eq!(r[100].ts_ms, now);
        // The same spool read while the receivers say the clock is a day behind: every record of
        // this run moves by that day, backfilled or not.
        let r = s
            .read_at(0, 1000, usize::MAX, truth.map(|t| t + day))
            .unwrap();
        // (within the few ms between the wall clock and the boot clock read apart)
        assert!((r[0].ts_ms - now).abs() < 1_000, "{}", r[0].ts_ms - now);
        assert!((r[100].ts_ms - now - day).abs() < 1_000);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn append_read_ack_restart() {
        let d = tmp();
        let m = metrics();
        let s = Spool::open(&cfg(&d, 1 << 20, 4096), &["a", "b"], m.clone()).unwrap();
        for i in 1..=100 {
            assert_eq!(s.append(Kind::Metrics, i as i64, &[&payload(i)]), vec![i]);
        }
        let r = s.read(0, 1000, usize::MAX).unwrap();
        assert_eq!(
            r.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );
        assert_eq!(r[41].payload, payload(42));
        let r = s.read(57, 10, usize::MAX).unwrap();
        assert_eq!(
            r.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (58..=67).collect::<Vec<_>>()
        );
        s.ack("a", 60).unwrap();
        s.ack("b", 30).unwrap();
        // Record i has timestamp i: the oldest pending age is that of record 61 / 31, give or
        // take the index granularity.
        let bl = s.backlog();
        let a = bl.iter().find(|b| b.sink == "a").unwrap();
        assert_eq!(a.pending_records, 40);
        assert!(a.oldest_pending_age_ms.is_some());
        let (seq, ts) = oldest_pending(&s.lock().segments, 60).unwrap();
        assert!(
            (61u64.saturating_sub(INDEX_EVERY)..=61).contains(&seq),
            "{seq}"
        );
        assert_eq!(ts, seq as i64);
        s.flush().unwrap();
        let segs_before = std::fs::read_dir(d.join("segments")).unwrap().count();
        drop(s);
        let s = Spool::open(&cfg(&d, 1 << 20, 4096), &["a", "b"], m).unwrap();
        assert_eq!(s.acked("a"), 60);
        assert_eq!(s.acked("b"), 30);
        assert_eq!(s.next_seq(), 101);
        assert_eq!(
            s.read(30, 1000, usize::MAX).unwrap().first().map(|r| r.seq),
            Some(31)
        );
        // Segments wholly acked by both sinks are gone.
        s.ack("b", 60).unwrap();
        assert!(std::fs::read_dir(d.join("segments")).unwrap().count() < segs_before);
        assert_eq!(s.read(60, 1, usize::MAX).unwrap()[0].seq, 61);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn sequence_survives_full_gc() {
        let d = tmp();
        let s = Spool::open(&cfg(&d, 1 << 20, 4096), &["a"], metrics()).unwrap();
        for i in 1..=10 {
            s.append(Kind::Log, 0, &[&payload(i)]);
        }
        s.ack("a", 10).unwrap();
        s.flush().unwrap();
        drop(s);
        std::fs::remove_dir_all(d.join("segments")).unwrap();
        let s = Spool::open(&cfg(&d, 1 << 20, 4096), &["a"], metrics()).unwrap();
        assert_eq!(s.append(Kind::Log, 0, &[b"x"]), vec![11]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn bounded_by_max_bytes_with_drops_counted() {
        let d = tmp();
        let m = metrics();
        let s = Spool::open(&cfg(&d, 64 * 1024, 8 * 1024), &["a"], m.clone()).unwrap();
        for i in 1..=2000 {
            s.append(Kind::Metrics, 0, &[&payload(i)]);
            let on_disk: u64 = std::fs::read_dir(d.join("segments"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(on_disk <= 64 * 1024, "{on_disk}");
        }
        let dropped = m.spool.dropped.with_label_values(&["max_bytes"]).get();
        let kept = s.read(0, 100_000, usize::MAX).unwrap();
        assert_eq!(
            dropped + kept.len() as u64,
            2000,
            "every record is either kept or counted"
        );
        assert_eq!(kept.last().unwrap().seq, 2000);
        assert!(kept.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_refused_write_leaves_nothing_and_uses_no_sequence_number() {
        let d = tmp();
        let m = metrics();
        let s = Spool::open(&cfg(&d, 1 << 20, 1 << 16), &["a"], m.clone()).unwrap();
        assert_eq!(s.append(Kind::Log, 0, &[b"one"]), vec![1]);
        // The disk refuses the next writes (ENOSPC from /dev/full), though statvfs says there
        // is room: the records are dropped and counted, the fault is reported.
        let real = s.lock().active.take();
        s.lock().active = Some(OpenOptions::new().append(true).open("/dev/full").unwrap());
        assert!(s.append(Kind::Log, 0, &[b"two", b"three"]).is_empty());
        assert_eq!(m.spool.dropped.with_label_values(&["write_error"]).get(), 2);
        assert_eq!(m.spool.write_blocked.get(), 1);
        assert!(s.disk_fault().unwrap().contains("refused a write"));
        // The disk takes writes again: the next record follows the last one that was written.
        s.lock().active = real;
        assert_eq!(s.append(Kind::Log, 0, &[b"four"]), vec![2]);
        assert_eq!(m.spool.write_blocked.get(), 0);
        assert!(s.disk_fault().is_none());
        let got: Vec<(u64, Vec<u8>)> = s
            .read(0, 10, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| (r.seq, r.payload))
            .collect();
        assert_eq!(got, vec![(1, b"one".to_vec()), (2, b"four".to_vec())]);
        drop(s);
        // Nothing torn on disk either.
        let s = Spool::open(&cfg(&d, 1 << 20, 1 << 16), &["a"], m.clone()).unwrap();
        assert_eq!(m.spool.corrupt.get(), 0);
        assert_eq!(s.next_seq(), 3);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn repairs_damage_on_open() {
        let d = tmp();
        let m = metrics();
        let s = Spool::open(&cfg(&d, 1 << 20, 1 << 16), &["a"], m.clone()).unwrap();
        for i in 1..=50 {
            s.append(Kind::Metrics, 0, &[&payload(i)]);
        }
        drop(s);
        let seg = std::fs::read_dir(d.join("segments"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut b = std::fs::read(&seg).unwrap();
        let one = segment::HEADER_LEN + payload(1).len();
        b[10 * one + 40] ^= 0xFF; // damage record 11
        b.truncate(b.len() - 7); // tear record 50
        std::fs::write(&seg, &b).unwrap();
        let s = Spool::open(&cfg(&d, 1 << 20, 1 << 16), &["a"], m.clone()).unwrap();
        let seqs: Vec<u64> = s
            .read(0, 1000, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let want: Vec<u64> = (1..=49).filter(|s| *s != 11).collect();
        assert_eq!(seqs, want);
        assert_eq!(m.spool.corrupt.get(), 2);
        // Appends continue after the repaired tail, and a second open finds nothing to repair.
        assert_eq!(s.append(Kind::Log, 0, &[b"after"]), vec![50]);
        drop(s);
        let s = Spool::open(&cfg(&d, 1 << 20, 1 << 16), &["a"], m.clone()).unwrap();
        assert_eq!(m.spool.corrupt.get(), 2);
        assert_eq!(s.read(49, 10, usize::MAX).unwrap()[0].payload, b"after");
        std::fs::remove_dir_all(d).unwrap();
    }
}
