//! A minimal outbound HTTP/1.1 client on hyper's connection API, over TCP or TLS (rustls): one
//! request per connection, the whole exchange under one deadline, the response body
//! size-limited. Used by the LLM client and the HTTP sinks, which send a handful of requests a
//! second at most, so connection pooling would buy nothing but code.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::Endpoint;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpcError {
    /// No response within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// TCP connect failed.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// host:port
        authority: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, protocol mismatch).
    #[error("tls with {authority}: {message}")]
    Tls {
        /// host:port
        authority: String,
        /// rustls' reason.
        message: String,
    },
    /// The HTTP exchange failed (connection reset, protocol error, oversized body).
    #[error("http: {0}")]
    Http(String),
}

/// Sends `req` to `ep` and returns status and body.
pub async fn send(
    ep: &Endpoint,
    req: Request<Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
) -> Result<(u16, Bytes), HttpcError> {
    send_with_headers(ep, req, timeout, max_body)
        .await
        .map(|(status, _, body)| (status, body))
}

/// Sends `req` to `ep` and returns status, response headers and body.
pub async fn send_with_headers(
    ep: &Endpoint,
    req: Request<Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
) -> Result<(u16, HeaderMap, Bytes), HttpcError> {
    match tokio::time::timeout(timeout, connect_and_send(ep, req, max_body)).await {
        Ok(r) => r,
        Err(_) => Err(HttpcError::Timeout(timeout)),
    }
}

async fn connect_and_send(
    ep: &Endpoint,
    req: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(u16, HeaderMap, Bytes), HttpcError> {
    let stream = TcpStream::connect(&ep.authority)
        .await
        .map_err(|source| HttpcError::Connect {
            authority: ep.authority.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    match &ep.tls {
        None => exchange(stream, req, max_body, &ep.authority).await,
        Some(tls) => {
            let tls_err = |message: String| HttpcError::Tls {
                authority: ep.authority.clone(),
                message,
            };
            let name = ServerName::try_from(ep.host.clone()).map_err(|e| tls_err(e.to_string()))?;
            let s = tokio_rustls::TlsConnector::from(tls.0.clone())
                .connect(name, stream)
                .await
                .map_err(|e| tls_err(e.to_string()))?;
            exchange(s, req, max_body, &ep.authority).await
        }
    }
}

async fn exchange<S>(
    stream: S,
    req: Request<Full<Bytes>>,
    max_body: usize,
    authority: &str,
) -> Result<(u16, HeaderMap, Bytes), HttpcError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpcError::Http(e.to_string()))?;
    tokio::spawn(async move {
        // Ends when the exchange completes or the caller's deadline drops the sender.
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| HttpcError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if let Some(date) = resp.headers().get(hyper::header::DATE) {
        // Every receiver's answer is a chance to see whether this gateway's clock is right.
        crate::clock::observe_http_date(authority, date.as_bytes());
    }
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| HttpcError::Http(format!("reading body: {e}")))?
        .to_bytes();
    Ok((status, headers, body))
}
