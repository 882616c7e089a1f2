//! TLS client settings for every uplink (LLM, Pushgateway, remote write, MQTT): rustls with the
//! ring provider, so the static aarch64 build needs no OpenSSL.
//!
//! Trust: the configured CA file (PEM, one or more certificates) when set, else the Mozilla root
//! set compiled in (webpki-roots), so a gateway without a CA bundle can still reach public
//! endpoints. An optional client certificate and key (PEM) enable mutual TLS. Built once while the
//! config is validated, so `check-config` reports unreadable or malformed files with their key.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A shareable rustls client configuration.
#[derive(Clone)]
pub struct TlsClient(pub Arc<rustls::ClientConfig>);

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |m: String| TlsError::File {
        path: path.display().to_string(),
        message: m,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in file".into()));
    }
    Ok(certs)
}

/// Builds the client configuration. `ca_file` None = the built-in Mozilla roots.
pub fn client_config(
    ca_file: Option<&Path>,
    cert_key: Option<(&Path, &Path)>,
) -> Result<TlsClient, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            for c in certs(p)? {
                roots.add(c).map_err(|e| TlsError::File {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let cfg = match cert_key {
        Some((cert, key)) => {
            let k = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                path: key.display().to_string(),
                message: e.to_string(),
            })?;
            builder.with_client_auth_cert(certs(cert)?, k)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsClient(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roots_and_file_errors() {
        assert!(client_config(None, None).is_ok());
        let missing = client_config(Some(Path::new("/nonexistent/ca.pem")), None).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        let dir = std::env::temp_dir().join(format!("ce-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("empty.pem"), "not a certificate").unwrap();
        let empty = client_config(Some(&dir.join("empty.pem")), None).unwrap_err();
        assert!(empty.to_string().contains("no PEM certificate"), "{empty}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
