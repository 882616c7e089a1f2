//! Just enough of POSIX ustar to write and read a knowledge bundle: regular files with short
//! relative names, nothing else (no links, no directories, no owners). The bundle is then a
//! `.tar.gz` that `tar tzf` lists, so plant IT can look inside with the tools it has.

/// Why an archive does not read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TarError {
    /// The archive ends inside a header or a file.
    #[error("truncated archive")]
    Truncated,
    /// A header's checksum does not match (a corrupt or non-tar file).
    #[error("bad header checksum at byte {0}")]
    Checksum(usize),
    /// A member that is not a regular file, or a name that is absolute, has `..` or is too long.
    #[error("unsupported member {0:?}")]
    Member(String),
}

const BLOCK: usize = 512;
/// The longest member name (ustar's name field; no prefix field used).
pub const MAX_NAME: usize = 99;

#[cfg(feature = "publish")]
/// Appends a regular file `name` with `data` to `out`.
pub fn append(out: &mut Vec<u8>, name: &str, data: &[u8]) -> Result<(), TarError> {
    if !name_ok(name) {
        return Err(TarError::Member(name.to_string()));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], 0); // mtime 0: the same input packs to the same bytes
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    Ok(())
}

#[cfg(feature = "publish")]
/// Ends an archive (two zero blocks).
pub fn finish(out: &mut Vec<u8>) {
    out.resize(out.len() + 2 * BLOCK, 0);
}

/// Every member of `archive`, in order, as `(name, data)`.
pub fn read(archive: &[u8]) -> Result<Vec<(String, Vec<u8>)>, TarError> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let h = archive.get(at..at + BLOCK).ok_or(TarError::Truncated)?;
        if h.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let stored = parse_octal(&h[148..156]).ok_or(TarError::Checksum(at))?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
            .sum();
        if sum != stored {
            return Err(TarError::Checksum(at));
        }
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..end]).into_owned();
        let size = parse_octal(&h[124..136]).ok_or(TarError::Checksum(at))? as usize;
        if !(h[156] == b'0' || h[156] == 0) || !name_ok(&name) || h[345] != 0 {
            return Err(TarError::Member(name));
        }
        let data_at = at + BLOCK;
        let data = archive
            .get(data_at..data_at.checked_add(size).ok_or(TarError::Truncated)?)
            .ok_or(TarError::Truncated)?;
        out.push((name, data.to_vec()));
        at = data_at + size.next_multiple_of(BLOCK);
    }
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && !name.chars().any(|c| c.is_control() || c == '\\')
}

#[cfg(feature = "publish")]
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

#[cfg(all(test, feature = "publish"))]
mod tests {
    use super::*;

    #[test]
    fn files_written_read_back_in_order_with_their_bytes() {
        let mut a = Vec::new();
        append(&mut a, "manifest.json", b"{}").unwrap();
        append(&mut a, "knowledge/sop-a.md", &[7u8; 1000]).unwrap();
        append(&mut a, "empty", b"").unwrap();
        finish(&mut a);
        assert_eq!(a.len() % BLOCK, 0);
        let m = read(&a).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], ("manifest.json".to_string(), b"{}".to_vec()));
        assert_eq!(m[1].1, vec![7u8; 1000]);
        assert_eq!(m[2].1, Vec::<u8>::new());
    }

    #[test]
    fn truncated_corrupt_and_escaping_archives_are_refused() {
        let mut a = Vec::new();
        append(&mut a, "knowledge/sop-a.md", &[7u8; 1000]).unwrap();
        finish(&mut a);
        assert_eq!(read(&a[..700]), Err(TarError::Truncated));
        assert_eq!(read(&a[..BLOCK + 100]), Err(TarError::Truncated));
        let mut bad = a.clone();
        bad[3] ^= 1;
        assert_eq!(read(&bad), Err(TarError::Checksum(0)));
        for name in ["/etc/passwd", "../x", "a/../../x", "a//b", ""] {
            assert!(append(&mut Vec::new(), name, b"x").is_err(), "{name}");
        }
    }
}
