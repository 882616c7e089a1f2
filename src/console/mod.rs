//! The technician console (`GET /`) and the gateway status page (`GET /status`): plain HTML,
//! CSS and JavaScript embedded in the binary (`web/`, gzip-compressed by `build.rs`), no
//! front-end build step and nothing fetched from outside the gateway. The pages talk to the JSON
//! API like any other client. A browser that accepts gzip (every one does) gets the stored gzip
//! as it is (`Content-Encoding: gzip`, about a third of the bytes on a weak Wi-Fi link); any
//! other client gets the file decompressed.
//!
//! Every page and asset is sent with a Content-Security-Policy that allows only the gateway's
//! own scripts and styles (no inline script, no framing), `nosniff`, and `Cache-Control:
//! no-cache` with an `ETag`: a browser revalidates on each visit and gets a bodiless 304 while the
//! agent's version is unchanged, so an upgrade is seen at once and a weak Wi-Fi link carries the
//! files only once.

/// The Content-Security-Policy of the pages.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

include!(concat!(env!("OUT_DIR"), "/embedded_web.rs"));

/// One embedded file, stored gzip-compressed by `build.rs`.
pub struct Asset {
    /// The `Content-Type` header value, e.g. `text/html; charset=utf-8`.
    pub content_type: &'static str,
    /// The file as one gzip member: sent as it is to clients that accept gzip.
    pub gz: &'static [u8],
    /// Quoted weak validator, a hash of the file: the same for the gzip and the plain form.
    pub etag: &'static str,
}

impl Asset {
    /// The file itself, for clients that do not accept gzip.
    pub fn body(&self) -> Vec<u8> {
        crate::compress::gunzip(self.gz, usize::MAX).expect("embedded page is gzip")
    }
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The embedded `web/<file>`, found at compile time.
const fn web(file: &str, content_type: &'static str) -> Asset {
    let mut i = 0;
    while i < WEB_FILES.len() {
        let (name, gz, etag) = WEB_FILES[i];
        if same(name, file) {
            return Asset {
                content_type,
                gz,
                etag,
            };
        }
        i += 1;
    }
    panic!("no such file in src/console/web")
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static CONSOLE: Asset = web("index.html", HTML);
static STATUS: Asset = web("status.html", HTML);
static APP_CSS: Asset = web("app.css", CSS);
static COMMON_JS: Asset = web("common.js", JS);
static CONSOLE_JS: Asset = web("console.js", JS);
static STATUS_JS: Asset = web("status.js", JS);

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
        .map(|p| find(p).unwrap().body().len())
        .sum();
        assert!(start < 60 * 1024, "console is {start} bytes at start");
        for (path, a) in all() {
            let body = a.body();
            let text = std::str::from_utf8(&body).unwrap();
            assert!(a.etag.len() == 20 && a.etag.starts_with("W/\""), "{path}");
            assert!(
                a.gz.len() * 2 < body.len(),
                "{path}: gzip {} of {}",
                a.gz.len(),
                body.len()
            );
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
