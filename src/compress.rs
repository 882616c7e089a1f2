//! gzip (RFC 1952) on miniz_oxide's pure-Rust deflate: the optional compression of MQTT
//! payloads, and the files compiled into the binary, which `build.rs` stores gzip-compressed
//! (the knowledge base, the lexicon and the console pages: about a third of their size, and the
//! pages go to browsers as they are stored, with `Content-Encoding: gzip`).

/// gzip member header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// `data` as one gzip member. `level` 1 (fast) to 9 (small); 6 is zlib's default.
pub fn gzip(data: &[u8], level: u8) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, level);
    let mut out = Vec::with_capacity(HEADER.len() + deflated.len() + 8);
    out.extend_from_slice(&HEADER);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Why a gzip member could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GunzipError {
    /// Too short, or no gzip magic and deflate method in the header.
    #[error("not a gzip member")]
    NotGzip,
    /// The header sets flags (file name, comment, extra fields, header CRC): not supported.
    #[error("gzip header flags {0:#x} are not supported")]
    Flags(u8),
    /// The deflate stream is corrupt or truncated.
    #[error("corrupt deflate data")]
    Deflate,
    /// The CRC-32 or length in the trailer does not match the inflated data.
    #[error("checksum or length mismatch")]
    Trailer,
    /// The data inflates to more than the limit (the limit in bytes).
    #[error("larger than {0} bytes")]
    TooLarge(usize),
}

/// The data of one gzip member as written by [`gzip`] (or `gzip -n`: no optional header
/// fields), at most `limit` bytes of it.
pub fn gunzip(gz: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    if gz.len() < HEADER.len() + 8 || gz[..3] != HEADER[..3] {
        return Err(GunzipError::NotGzip);
    }
    if gz[3] != 0 {
        return Err(GunzipError::Flags(gz[3]));
    }
    let body = &gz[HEADER.len()..gz.len() - 8];
    let data = miniz_oxide::inflate::decompress_to_vec_with_limit(body, limit).map_err(|e| {
        if e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput {
            GunzipError::TooLarge(limit)
        } else {
            GunzipError::Deflate
        }
    })?;
    let trailer = &gz[gz.len() - 8..];
    let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&data) || len != data.len() as u32 {
        return Err(GunzipError::Trailer);
    }
    Ok(data)
}

/// Text files compiled into the binary by `build.rs`: `(file name, gzip of the text)`.
pub type EmbeddedFiles = [(&'static str, &'static [u8])];

/// The texts of embedded files, decompressed (the build wrote them, so they are valid).
pub fn embedded_texts(files: &EmbeddedFiles) -> Vec<(&'static str, String)> {
    files
        .iter()
        .map(|(name, gz)| {
            let data = gunzip(gz, usize::MAX).expect("embedded file is gzip");
            (
                *name,
                String::from_utf8(data).expect("embedded file is UTF-8"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let text = "copilot_requests_total{plant_id=\"plant-a\"} 42 1700000000000\n".repeat(200);
        let gz = gzip(text.as_bytes(), 6);
        assert!(gz.len() * 10 < text.len(), "{} of {}", gz.len(), text.len());
        assert_eq!(gunzip(&gz, usize::MAX).unwrap(), text.as_bytes());
        assert_eq!(gunzip(&gzip(b"", 6), 16).unwrap(), b"");
        assert_eq!(gunzip(&gz, 100), Err(GunzipError::TooLarge(100)));
        assert_eq!(
            gunzip(b"plain text, not gzip", 1 << 20),
            Err(GunzipError::NotGzip)
        );
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert_eq!(gunzip(&bad, usize::MAX), Err(GunzipError::Trailer));
    }

    #[test]
    fn readable_by_the_gzip_tool() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let text = b"Hydraulic press: pressure builds slowly; check the relief valve.\n".repeat(50);
        let Ok(mut child) = Command::new("gzip")
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        else {
            panic!("gzip(1) is needed for this test");
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&gzip(&text, 6))
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, text);
    }

    #[test]
    fn embedded_files_decompress() {
        const FILES: &EmbeddedFiles = &[("a.md", &[])];
        let gz: &'static [u8] = Box::leak(gzip(b"# A\ntext\n", 9).into_boxed_slice());
        let files: Vec<(&str, &[u8])> = vec![(FILES[0].0, gz)];
        assert_eq!(
            embedded_texts(&files),
            vec![("a.md", "# A\ntext\n".to_string())]
        );
    }
}
