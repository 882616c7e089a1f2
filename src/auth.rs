//! Bearer-token authentication.
//!
//! Tokens are stored only as SHA-256 digests (in the config, a token file or a systemd
//! credential). A presented token is hashed and compared against every entry in constant time,
//! so neither the match position nor the prefix length leaks through timing.
//!
//! The agent never runs with a known default secret: when no token is configured,
//! [`ensure_token`] generates one on first start, stores it as `<state_dir>/api-token` with mode
//! 0600 and reuses it on later starts.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::TokenEntry;

/// The user id given to the generated first-start token.
pub const GENERATED_USER: &str = "local-operator";

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or not of the form `Bearer <token>`.
    #[error("missing or malformed Authorization header (expected `Bearer <token>`)")]
    Missing,
    /// The token matches no configured user.
    #[error("invalid token")]
    Invalid,
}

/// Errors while preparing the first-start token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The token file could not be read or written.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// Checks bearer tokens against the configured users.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Vec<TokenEntry>,
}

impl Authenticator {
    /// An authenticator for these users.
    pub fn new(tokens: Vec<TokenEntry>) -> Self {
        Authenticator { tokens }
    }

    /// The user id for an `Authorization` header value.
    pub fn verify(&self, header: Option<&[u8]>) -> Result<&str, AuthError> {
        let h = header.ok_or(AuthError::Missing)?;
        let token = h
            .strip_prefix(b"Bearer ")
            .or_else(|| h.strip_prefix(b"bearer "))
            .and_then(|t| std::str::from_utf8(t).ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let d = digest(token);
        let mut found = None;
        for e in &self.tokens {
            if ct_eq(&e.sha256, &d) && found.is_none() {
                found = Some(e.user_id.as_str());
            }
        }
        found.ok_or(AuthError::Invalid)
    }
}

/// Makes an existing first-start token file readable by its owner only. Returns the mode it had
/// when that let others (group or world) read or write it: the caller says so, since the token
/// may already have leaked.
pub fn tighten_token_file(state_dir: &Path) -> Result<Option<u32>, TokenFileError> {
    use std::os::unix::fs::PermissionsExt;
    let path = state_dir.join("api-token");
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TokenFileError::Io { path, source }),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| TokenFileError::Io { path, source })?;
    Ok(Some(mode))
}

/// Reads `<state_dir>/api-token`, or creates it (mode 0600) with a fresh random token.
/// Returns the token's entry, the file, and whether it was created now.
pub fn ensure_token(state_dir: &Path) -> Result<(TokenEntry, PathBuf, bool), TokenFileError> {
    let path = state_dir.join("api-token");
    let io = |source| TokenFileError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            return Ok((
                TokenEntry {
                    user_id: GENERATED_USER.into(),
                    sha256: digest(t.trim()),
                },
                path,
                false,
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    // Two v4 UUIDs: 244 random bits from the OS generator.
    let token = format!(
        "ce_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp = state_dir.join(".api-token.tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(token.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok((
        TokenEntry {
            user_id: GENERATED_USER.into(),
            sha256: digest(&token),
        },
        path,
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_bearer_tokens() {
        let a = Authenticator::new(vec![TokenEntry {
            user_id: "tech-1".into(),
            sha256: digest("s3cret"),
        }]);
        assert_eq!(a.verify(Some(b"Bearer s3cret")), Ok("tech-1"));
        assert_eq!(a.verify(Some(b"Bearer s3cre")), Err(AuthError::Invalid));
        assert_eq!(a.verify(Some(b"Basic abc")), Err(AuthError::Missing));
        assert_eq!(a.verify(Some(b"Bearer ")), Err(AuthError::Missing));
        assert_eq!(a.verify(Some(b"Bearer \xff")), Err(AuthError::Missing));
        assert_eq!(a.verify(None), Err(AuthError::Missing));
    }

    #[test]
    fn first_start_token_is_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("ce-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (e1, path, created) = ensure_token(&dir).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (e2, _, created) = ensure_token(&dir).unwrap();
        assert!(!created);
        assert_eq!(e1.sha256, e2.sha256);
        let token = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            Authenticator::new(vec![e1]).verify(Some(format!("Bearer {token}").as_bytes())),
            Ok(GENERATED_USER)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
