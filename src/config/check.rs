//! The checks every table's validation shares: a [`Checker`] that collects [`Problem`]s (each
//! under its TOML key) and turns raw values into typed ones (a number in its bounds, a secret from
//! a file, credential or inline text, an HTTP endpoint with TLS, HTTP auth). A failed check
//! records a problem and returns a usable stand-in, so validation goes on and reports every
//! problem at once.

use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::path::Path;

use super::{Endpoint, HttpAuth, Problem, Secret};
use crate::tls::{self, TlsClient};

/// Splits `http(s)://host:port/path` into (https?, authority, host, path without trailing `/`).
pub(super) fn split_http_url(url: &str) -> Result<(bool, String, String, String), String> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return Err("must start with http:// or https://".to_string()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#']) {
        return Err("has no usable host (user info, query and fragment are not supported)".into());
    }
    let (host, authority) = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') && port.parse::<u16>().is_err() => {
            return Err(format!("bad port `{port}`"))
        }
        Some((h, _)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            authority.to_string(),
        ),
        None => (
            authority.to_string(),
            format!("{authority}:{}", if https { 443 } else { 80 }),
        ),
    };
    Ok((https, authority, host, path.to_string()))
}

/// The raw TLS keys every uplink table has.
pub(super) fn tls_files<'a>(
    ca: &'a str,
    cert: &'a str,
    key: &'a str,
) -> (&'a str, &'a str, &'a str) {
    (ca, cert, key)
}

/// Collects the problems of one validation run.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    /// TLS client settings from `<key>.tls_ca_file` / `tls_cert_file` / `tls_key_file`.
    pub(super) fn tls(
        &mut self,
        key: &str,
        (ca, cert, pkey): (&str, &str, &str),
    ) -> Option<TlsClient> {
        let ca = (!ca.is_empty()).then(|| Path::new(ca));
        let pair = match (cert.is_empty(), pkey.is_empty()) {
            (true, true) => None,
            (false, false) => Some((Path::new(cert), Path::new(pkey))),
            _ => {
                self.fail(
                    &format!("{key}.tls_cert_file"),
                    "tls_cert_file and tls_key_file go together",
                );
                None
            }
        };
        match tls::client_config(ca, pair) {
            Ok(t) => Some(t),
            Err(e) => {
                self.fail(&format!("{key}.tls_ca_file"), e.to_string());
                None
            }
        }
    }

    /// An endpoint from `<key>.url` (TLS when it is https).
    pub(super) fn endpoint(
        &mut self,
        key: &str,
        url: &str,
        files: (&str, &str, &str),
    ) -> Option<(Endpoint, String)> {
        match split_http_url(url) {
            Ok((https, authority, host, path)) => {
                let tls = if https {
                    Some(self.tls(key, files)?)
                } else {
                    None
                };
                Some((
                    Endpoint {
                        authority,
                        host,
                        tls,
                    },
                    path,
                ))
            }
            Err(msg) => {
                self.fail(&format!("{key}.url"), msg);
                None
            }
        }
    }

    /// HTTP auth for a sink: username + password (Basic) or a bearer token, not both.
    pub(super) fn http_auth(
        &mut self,
        key: &str,
        username: &str,
        password: (&str, &str, Option<String>),
        bearer: &str,
    ) -> HttpAuth {
        let password = self.secret(
            &format!("{key}.password"),
            password.0,
            password.1,
            password.2,
        );
        match (username.is_empty(), password, bearer.is_empty()) {
            (true, None, true) => HttpAuth::None,
            (false, Some(p), true) => HttpAuth::Basic {
                username: username.to_string(),
                password: p,
            },
            (true, None, false) => HttpAuth::Bearer(Secret::new(bearer)),
            _ => {
                self.fail(
                    key,
                    "set either username + password (Basic) or bearer_token, not both",
                );
                HttpAuth::None
            }
        }
    }

    pub(super) fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
    /// `v` within `bounds`; outside, a problem and the nearest bound.
    pub(super) fn range(&mut self, key: &str, v: u64, bounds: RangeInclusive<u64>) -> u64 {
        let (lo, hi) = bounds.into_inner();
        if v < lo || v > hi {
            self.fail(key, format!("must be between {lo} and {hi}, got {v}"));
        }
        v.clamp(lo, hi)
    }
    /// [`Checker::range`] for a count that must not be 0 (`bounds` start at 1).
    pub(super) fn nonzero(
        &mut self,
        key: &str,
        v: u64,
        bounds: RangeInclusive<u64>,
    ) -> NonZeroUsize {
        let v = self.range(key, v, bounds);
        NonZeroUsize::new(v as usize).unwrap_or(NonZeroUsize::MIN)
    }
    /// A secret from inline text, a file, or a systemd credential (in that order of precedence:
    /// file, credential, inline).
    pub(super) fn secret(
        &mut self,
        key: &str,
        inline: &str,
        file: &str,
        credential: Option<String>,
    ) -> Option<Secret> {
        if !file.is_empty() {
            match std::fs::read_to_string(file) {
                Ok(s) => return Some(Secret::new(s.trim())),
                Err(e) => {
                    self.fail(&format!("{key}_file"), format!("cannot read {file}: {e}"));
                    return None;
                }
            }
        }
        if let Some(c) = credential {
            return Some(Secret::new(c));
        }
        (!inline.is_empty()).then(|| Secret::new(inline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_split() {
        /// (https?, authority, host, path)
        type Split<'a> = (bool, &'a str, &'a str, &'a str);
        let cases: &[(&str, Option<Split>)] = &[
            (
                "http://10.0.0.5:8081",
                Some((false, "10.0.0.5:8081", "10.0.0.5", "")),
            ),
            ("http://llm/api/", Some((false, "llm:80", "llm", "/api"))),
            (
                "https://mimir.example/api/v1/push",
                Some((true, "mimir.example:443", "mimir.example", "/api/v1/push")),
            ),
            (
                "https://[::1]:9443/x",
                Some((true, "[::1]:9443", "::1", "/x")),
            ),
            ("ftp://x", None),
            ("http://user@x", None),
            ("http://x:notaport/", None),
            ("http://", None),
        ];
        for (url, want) in cases {
            let got = split_http_url(url).ok();
            let got = got
                .as_ref()
                .map(|(t, a, h, p)| (*t, a.as_str(), h.as_str(), p.as_str()));
            assert_eq!(got, *want, "{url}");
        }
    }
}
