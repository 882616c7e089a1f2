//! A read-only view of a spool directory for `copilot-edge spool status` (another process than
//! the service: it reads files, never the service's state).

use std::path::Path;

use super::recovery::segment_files;
use super::segment;
use super::SpoolError;

/// What `inspect` reads from a spool directory.
#[derive(Debug, Default)]
pub struct Inspection {
    /// Number of segment files.
    pub segments: usize,
    /// Total bytes of the segment files.
    pub bytes: u64,
    /// `(seq, ts_ms)` of every readable record, in order.
    pub records: Vec<(u64, i64)>,
    /// Each consumer's acknowledged sequence number, from its cursor file.
    pub cursors: Vec<(String, u64)>,
}

/// Reads a spool directory without modifying anything (safe while the service runs; segments
/// deleted meanwhile are skipped). `None` when it has no segments directory yet.
pub fn inspect(dir: &Path) -> Result<Option<Inspection>, SpoolError> {
    let segdir = dir.join("segments");
    if !segdir.exists() {
        return Ok(None);
    }
    let files = segment_files(&segdir)?;
    let mut out = Inspection {
        segments: files.len(),
        ..Default::default()
    };
    for f in &files {
        let buf = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // deleted meanwhile
            Err(e) => {
                return Err(SpoolError::Io {
                    path: f.clone(),
                    source: e,
                })
            }
        };
        out.bytes += buf.len() as u64;
        let s = segment::scan(&buf, out.records.last().map_or(0, |r| r.0));
        out.records
            .extend(s.records.iter().map(|(r, _)| (r.seq, r.ts_ms)));
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("cursors")) {
        for e in rd.flatten() {
            if let Some(n) = e.file_name().to_str().and_then(|n| n.strip_suffix(".ack")) {
                let acked = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0);
                out.cursors.push((n.to_string(), acked));
            }
        }
    }
    out.cursors.sort();
    Ok(Some(out))
}
