//! Base64, standard alphabet, padded (RFC 4648 §4): the Basic auth header of the HTTP sinks and
//! the Ed25519 keys and signatures of knowledge bundles.

const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `input`.
pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(T[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes `text` (surrounding whitespace ignored); `None` unless it is canonical padded base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let s = text.trim().as_bytes();
    if s.len() % 4 != 0 {
        return None;
    }
    let val = |b: u8| T.iter().position(|&t| t == b).map(|p| p as u32);
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (q, chunk) in s.chunks(4).enumerate() {
        let last = q == s.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &b in &chunk[..4 - pad] {
            n = n << 6 | val(b)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    // Canonical: the bits under the padding are zero (re-encoding gives the same text).
    (encode(&out).as_bytes() == s).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_encode_and_decode() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(encode(i.as_bytes()), o);
            assert_eq!(decode(o).as_deref(), Some(i.as_bytes()));
        }
    }

    #[test]
    fn malformed_text_does_not_decode() {
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zh==", "Zm9v!", "Zm 9v"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
