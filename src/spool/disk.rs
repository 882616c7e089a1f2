//! The spool's disk policy: a free-space floor checked before every append, a refused write
//! counted (never an error to the caller), and the fault reported when it starts, once a minute
//! while it lasts, and when it ends.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Inner, Spool, SpoolError};
use crate::logging::Throttle;

/// Why the spool refuses appends.
#[derive(Debug, Clone)]
pub(super) enum DiskFault {
    /// Free space under `spool.min_free_bytes`.
    BelowFloor { free: u64, floor: u64 },
    /// The file system refused a write (ENOSPC with no floor set, EIO, read-only remount).
    WriteFailed(String),
}

/// Every `reason` of `copilot_edge_spool_dropped_records_total`. Exported from 0 when the spool
/// opens, so the first drop is an increase to every query engine (Prometheus's `increase()`
/// does not count a series that is born non-zero; VictoriaMetrics' does).
pub(super) const DROP_REASONS: [&str; 3] = [DROP_MAX_BYTES, "disk_floor", "write_error"];
pub(super) const DROP_MAX_BYTES: &str = "max_bytes";

impl DiskFault {
    /// The `reason` label of `copilot_edge_spool_dropped_records_total`.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            DiskFault::BelowFloor { .. } => "disk_floor",
            DiskFault::WriteFailed(_) => "write_error",
        }
    }
}

impl std::fmt::Display for DiskFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskFault::BelowFloor { free, floor } => write!(
                f,
                "free space {free} bytes is below spool.min_free_bytes {floor}"
            ),
            DiskFault::WriteFailed(e) => write!(f, "disk refused a write: {e}"),
        }
    }
}

#[derive(Debug)]
pub(super) struct DiskState {
    pub(super) fault: Option<DiskFault>,
    pub(super) since: Option<Instant>,
    /// Records refused since the fault began.
    pub(super) dropped: u64,
    pub(super) throttle: Throttle,
    /// For failures outside appends.
    pub(super) io_throttle: Throttle,
}

/// How often an ongoing disk fault is reported again.
pub(super) const DISK_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Free bytes available to us on the file system holding `dir`.
pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (r == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

impl Spool {
    /// Counts refused records and reports the fault: at once when it starts, then at most once
    /// a minute with the count (the report is itself a log event that may be shipped to this
    /// spool, so an unthrottled one would feed itself).
    pub(super) fn refuse(&self, g: &mut Inner, fault: DiskFault, n: u64) {
        let reason = fault.reason();
        self.metrics
            .spool
            .dropped
            .with_label_values(&[reason])
            .inc_by(n);
        self.metrics.spool.write_blocked.set(1);
        let starting = g.disk.fault.is_none();
        if starting {
            g.disk.since = Some(Instant::now());
            g.disk.throttle.reset();
        }
        g.disk.dropped += n;
        let report = g.disk.throttle.hit();
        if let Some(suppressed) = report {
            let (free, floor) = match &fault {
                DiskFault::BelowFloor { free, floor } => (*free, *floor),
                DiskFault::WriteFailed(_) => {
                    (free_bytes(&g.dir).unwrap_or(0), g.cfg.min_free_bytes)
                }
            };
            tracing::warn!(
                fault = %fault,
                free_bytes = free,
                floor,
                dropped = g.disk.dropped,
                reports_suppressed = suppressed,
                ongoing = !starting,
                "spool_disk_floor"
            );
        }
        g.disk.fault = Some(fault);
    }

    /// Why appends are being refused, if they are: re-checks the free space now, so a disk
    /// that was freed reads as healthy before the next append proves it.
    pub fn disk_fault(&self) -> Option<String> {
        let g = self.lock();
        match &g.disk.fault {
            None => None,
            Some(DiskFault::BelowFloor { floor, .. }) => match free_bytes(&g.dir) {
                Some(free) if free >= *floor => None,
                free => Some(
                    DiskFault::BelowFloor {
                        free: free.unwrap_or(0),
                        floor: *floor,
                    }
                    .to_string(),
                ),
            },
            Some(f) => Some(f.to_string()),
        }
    }

    /// Reports an I/O failure outside appends (cursor persistence, sync, garbage collection) at
    /// most once a minute: on a full disk it would otherwise repeat every second.
    pub(super) fn io_problem(&self, g: &mut Inner, e: &SpoolError) {
        if let Some(suppressed) = g.disk.io_throttle.hit() {
            tracing::warn!(error = %e, reports_suppressed = suppressed, "spool_io_error");
        }
    }
}
