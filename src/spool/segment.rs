//! The on-disk record format of spool segments (pure encoding, no I/O).
//!
//! ```text
//! magic  u16 = 0xCE5F (LE bytes 5F CE)
//! len    u32   payload length
//! crc    u32   CRC-32 of everything after this field (seq, ts, kind, payload)
//! seq    u64   sequence number, strictly increasing across the spool's life
//! ts_ms  i64   record time, unix milliseconds
//! kind   u8    1 = metrics snapshot, 2 = log event
//! payload [len]
//! ```
//! All integers little-endian. A reader that meets a bad checksum, an impossible length or a
//! truncated record resynchronises by scanning for the next magic whose record checks out, so one
//! flipped byte costs one record, not the rest of the segment.

/// Bytes before the payload.
pub const HEADER_LEN: usize = 2 + 4 + 4 + 8 + 8 + 1;
/// Largest payload accepted (a metrics snapshot is far smaller).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
const MAGIC: [u8; 2] = [0x5F, 0xCE];

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Prometheus text exposition of all metrics, without sample timestamps.
    Metrics = 1,
    /// One JSON log line.
    Log = 2,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Metrics),
            2 => Some(Kind::Log),
            _ => None,
        }
    }
    /// Lowercase name, for labels and topics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Metrics => "metrics",
            Kind::Log => "logs",
        }
    }
}

/// One spooled record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number, strictly increasing across the spool's life.
    pub seq: u64,
    /// Record time, Unix milliseconds, as the record clock stamped it at append.
    pub ts_ms: i64,
    /// What the payload is: a metrics snapshot or a log event.
    pub kind: Kind,
    /// The record's bytes, as the producer wrote them.
    pub payload: Vec<u8>,
}

impl Record {
    /// Size on disk.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Appends the encoding of a record to `out`.
pub fn encode(seq: u64, ts_ms: i64, kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let body_at = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts_ms.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[body_at..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Result of decoding at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record and the offset just after it.
    Record(Record, usize),
    /// The buffer ends inside a record (a torn tail, or a write in progress).
    Incomplete,
    /// The bytes at this offset are not a valid record.
    Corrupt,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the record starting at `off`.
pub fn decode(buf: &[u8], off: usize) -> Decoded {
    let b = &buf[off.min(buf.len())..];
    if b.len() < HEADER_LEN {
        return if b.len() >= 2 && b[..2] != MAGIC {
            Decoded::Corrupt
        } else {
            Decoded::Incomplete
        };
    }
    if b[..2] != MAGIC {
        return Decoded::Corrupt;
    }
    let len = u32_at(b, 2) as usize;
    if len > MAX_PAYLOAD {
        return Decoded::Corrupt;
    }
    if b.len() < HEADER_LEN + len {
        return Decoded::Incomplete;
    }
    let crc = u32_at(b, 6);
    if crc32fast::hash(&b[10..HEADER_LEN + len]) != crc {
        return Decoded::Corrupt;
    }
    let Some(kind) = Kind::from_u8(b[26]) else {
        return Decoded::Corrupt;
    };
    let rec = Record {
        seq: u64_at(b, 10),
        ts_ms: u64_at(b, 18) as i64,
        kind,
        payload: b[HEADER_LEN..HEADER_LEN + len].to_vec(),
    };
    Decoded::Record(rec, off + HEADER_LEN + len)
}

/// Outcome of scanning a whole segment.
#[derive(Debug, Default)]
pub struct Scan {
    /// Valid records in order of their position, with strictly increasing sequence numbers.
    pub records: Vec<(Record, usize)>,
    /// Damaged regions skipped (each costs at least one record).
    pub corrupt_regions: u64,
    /// Records known to be lost in those regions (by sequence gaps; at least one per region).
    pub lost_records: u64,
    /// Bytes at the end that form an incomplete record (a torn write).
    pub torn_tail: bool,
    /// Offset after the last valid record.
    pub valid_end: usize,
}

/// Scans a segment, skipping damage. `after` is the last sequence number known before this
/// segment (records must be newer).
pub fn scan(buf: &[u8], after: u64) -> Scan {
    let mut s = Scan::default();
    let mut off = 0;
    let mut last = after;
    let mut in_damage = false;
    while off < buf.len() {
        match decode(buf, off) {
            Decoded::Record(r, next) if r.seq > last => {
                if in_damage {
                    s.lost_records += (r.seq - last - 1).max(1);
                    in_damage = false;
                }
                last = r.seq;
                s.valid_end = next;
                s.records.push((r, off));
                off = next;
            }
            // The buffer ends inside this record and nothing valid follows: a torn write.
            Decoded::Incomplete if !in_damage && !has_later_record(buf, off + 1, last) => {
                s.torn_tail = true;
                break;
            }
            _ => {
                if !in_damage {
                    s.corrupt_regions += 1;
                    in_damage = true;
                }
                off += 1;
            }
        }
    }
    if in_damage {
        // Damage ran to the end of the segment: at least one record lost there.
        s.lost_records += 1;
    }
    s
}

fn has_later_record(buf: &[u8], from: usize, last: u64) -> bool {
    (from..buf.len().saturating_sub(HEADER_LEN - 1)).any(|o| {
        buf[o..o + 2] == MAGIC && matches!(decode(buf, o), Decoded::Record(r, _) if r.seq > last)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u64) -> Vec<u8> {
        let mut b = Vec::new();
        for s in 1..=n {
            encode(
                s,
                1000 + s as i64,
                if s % 2 == 0 { Kind::Log } else { Kind::Metrics },
                format!("payload-{s}").as_bytes(),
                &mut b,
            );
        }
        b
    }

    #[test]
    fn records_read_back_as_written() {
        let b = seg(3);
        let s = scan(&b, 0);
        assert_eq!(s.records.len(), 3);
        assert_eq!(
            s.records[1].0,
            Record {
                seq: 2,
                ts_ms: 1002,
                kind: Kind::Log,
                payload: b"payload-2".to_vec()
            }
        );
        assert_eq!(
            (s.corrupt_regions, s.lost_records, s.torn_tail, s.valid_end),
            (0, 0, false, b.len())
        );
    }

    #[test]
    fn damage_cases() {
        let one = {
            let mut b = Vec::new();
            encode(1, 0, Kind::Metrics, b"payload-1", &mut b);
            b.len()
        };
        // (name, mutation, expected surviving seqs, lost, torn)
        type Mutate = fn(&mut Vec<u8>, usize);
        let cases: &[(&str, Mutate, &[u64], u64, bool)] = &[
            (
                "flip payload byte of record 2",
                |b, n| b[n + HEADER_LEN + 1] ^= 0xFF,
                &[1, 3, 4, 5],
                1,
                false,
            ),
            (
                "flip length of record 3",
                |b, n| b[2 * n + 3] = 0x7F,
                &[1, 2, 4, 5],
                1,
                false,
            ),
            (
                "truncate mid last record",
                |b, _| b.truncate(b.len() - 4),
                &[1, 2, 3, 4],
                0,
                true,
            ),
            (
                "truncate inside last header",
                |b, n| b.truncate(4 * n + 5),
                &[1, 2, 3, 4],
                0,
                true,
            ),
            (
                "zeroed tail (preallocated)",
                |b, _| b.extend_from_slice(&[0; 64]),
                &[1, 2, 3, 4, 5],
                1,
                false,
            ),
            (
                "flip magic of record 1",
                |b, _| b[0] = 0,
                &[2, 3, 4, 5],
                1,
                false,
            ),
            (
                "garbage in the middle of record 4 to end",
                |b, n| b.truncate(3 * n + 7),
                &[1, 2, 3],
                0,
                true,
            ),
        ];
        for (name, mutate, want, lost, torn) in cases {
            let mut b = seg(5);
            mutate(&mut b, one);
            let s = scan(&b, 0);
            let got: Vec<u64> = s.records.iter().map(|(r, _)| r.seq).collect();
            assert_eq!(&got, want, "{name}");
            assert_eq!(s.lost_records, *lost, "{name}: lost");
            assert_eq!(s.torn_tail, *torn, "{name}: torn");
        }
    }

    #[test]
    fn old_sequence_numbers_are_not_resurrected() {
        let b = seg(3);
        let s = scan(&b, 2);
        assert_eq!(
            s.records.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(),
            vec![3]
        );
    }
}
