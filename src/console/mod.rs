//! The technician console (`GET /`) and the gateway status page (`GET /status`): plain HTML,
//! CSS and JavaScript embedded in the binary (`web/`), no build step and nothing fetched from
//! outside the gateway. The pages talk to the JSON API like any other client.
//!
//! Every page and asset is sent with a Content-Security-Policy that allows only the gateway's
//! own scripts and styles (no inline script, no framing), `nosniff`, and `Cache-Control:
//! no-cache` with an `ETag`: a browser revalidates on each visit and gets a bodiless 304 while the
//! agent's version is unchanged, so an upgrade is seen at once and a weak Wi-Fi link carries the
//! files only once.

/// The Content-Security-Policy of the pages.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// Quoted strong validator: a hash of the body.
    pub etag: &'static str,
}

/// FNV-1a, at compile time, for the ETags.
const fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const fn hex_etag(h: u64) -> [u8; 18] {
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = digits[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($file:literal, $ct:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("web/", $file));
        const TAG: [u8; 18] = hex_etag(fnv1a(BODY));
        Asset {
            content_type: $ct,
            body: BODY,
            // The tag is ASCII hex between quotes.
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("etag"),
            },
        }
    }};
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static CONSOLE: Asset = asset!("index.html", HTML);
static STATUS: Asset = asset!("status.html", HTML);
static APP_CSS: Asset = asset!("app.css", CSS);
static COMMON_JS: Asset = asset!("common.js", JS);
static CONSOLE_JS: Asset = asset!("console.js", JS);
static STATUS_JS: Asset = asset!("status.js", JS);

/// The embedded file served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    Some(match path {
        "/" | "/index.html" => &CONSOLE,
        "/status" | "/status.html" => &STATUS,
        "/assets/app.css" => &APP_CSS,
        "/assets/common.js" => &COMMON_JS,
        "/assets/console.js" => &CONSOLE_JS,
        "/assets/status.js" => &STATUS_JS,
        _ => return None,
    })
}

/// Every embedded file with its path (for tests and the size budget).
pub fn all() -> [(&'static str, &'static Asset); 6] {
    [
        ("/", &CONSOLE),
        ("/status", &STATUS),
        ("/assets/app.css", &APP_CSS),
        ("/assets/common.js", &COMMON_JS),
        ("/assets/console.js", &CONSOLE_JS),
        ("/assets/status.js", &STATUS_JS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_small_and_carry_no_inline_code() {
        let start: usize = [
            "/",
            "/assets/app.css",
            "/assets/common.js",
            "/assets/console.js",
        ]
        .iter()
        .map(|p| find(p).unwrap().body.len())
        .sum();
        assert!(start < 60 * 1024, "console fetches {start} bytes at start");
        for (path, a) in all() {
            let text = std::str::from_utf8(a.body).unwrap();
            assert!(a.etag.len() == 18 && a.etag.starts_with('"'), "{path}");
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(banned), "{path} uses {banned}");
            }
            if a.content_type.starts_with("text/html") {
                let lower = text.to_ascii_lowercase();
                assert!(!lower.contains("<style"), "{path}: inline style block");
                assert!(!lower.contains(" style="), "{path}: style attribute");
                assert!(
                    !lower.contains(" onclick=") && !lower.contains(" onload="),
                    "{path}"
                );
                for (i, _) in lower.match_indices("<script") {
                    let tag_end = lower[i..].find('>').unwrap() + i;
                    assert!(lower[i..tag_end].contains(" src="), "{path}: inline script");
                }
                assert!(
                    !lower.contains("http://") && !lower.contains("https://"),
                    "{path}: external URL"
                );
            }
        }
    }
}
