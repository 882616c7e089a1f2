//! Opening a spool after a crash: segment files read in order, damaged records cut out (a
//! segment rewritten without them), a torn tail dropped.

use std::path::{Path, PathBuf};

use super::segment;
use super::{io_err, write_atomic, SegmentMeta, SpoolError, INDEX_EVERY};

/// Reads and repairs one segment file. Returns its metadata (None if no record survived) and
/// the number of records lost to damage.
pub(super) fn recover_segment(
    path: &Path,
    after: u64,
) -> Result<(Option<SegmentMeta>, u64), SpoolError> {
    let buf = std::fs::read(path).map_err(io_err(path))?;
    let scan = segment::scan(&buf, after);
    let damaged = scan.corrupt_regions > 0 || scan.torn_tail;
    let mut lost = scan.lost_records;
    if scan.torn_tail {
        // A record cut short by a crash: it was never acknowledged to anyone, count it.
        lost += 1;
    }
    if scan.records.is_empty() {
        std::fs::remove_file(path).map_err(io_err(path))?;
        return Ok((None, lost));
    }
    let mut meta = SegmentMeta {
        path: path.to_path_buf(),
        first_seq: scan.records[0].0.seq,
        last_seq: 0,
        first_ts_ms: scan.records[0].0.ts_ms,
        records: 0,
        bytes: 0,
        index: Vec::new(),
    };
    let mut clean = Vec::with_capacity(if damaged { buf.len() } else { 0 });
    for (r, off) in &scan.records {
        let at = if damaged {
            clean.len() as u64
        } else {
            *off as u64
        };
        if meta.records % INDEX_EVERY == 0 {
            meta.index.push((r.seq, at, r.ts_ms));
        }
        if damaged {
            segment::encode(r.seq, r.ts_ms, r.kind, &r.payload, &mut clean);
        }
        meta.records += 1;
        meta.last_seq = r.seq;
    }
    if damaged {
        write_atomic(path, &clean)?;
        meta.bytes = clean.len() as u64;
    } else {
        meta.bytes = scan.valid_end as u64;
    }
    Ok((Some(meta), lost))
}

/// The segment files of a spool, oldest first (names sort by first sequence number).
pub(super) fn segment_files(segdir: &Path) -> Result<Vec<PathBuf>, SpoolError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(segdir)
        .map_err(io_err(segdir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    Ok(files)
}
