//! Bearer-token authentication.
//!
//! Tokens are stored only as SHA-256 digests (in the config, a token file or a systemd
//! credential). A presented token is hashed and compared against every entry in constant time,
//! so neither the match position nor the prefix length leaks through timing.
//!
//! The agent never runs with a known default secret: when no token is configured,
//! [`ensure_token`] generates one on first start, stores it as `<state_dir>/api-token` with mode
//! 0600 and reuses it on later starts.
//!
//! The tokens file's format, reading and editing are in `file.rs` (re-exported here).

mod file;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use file::add_entry;
#[cfg(test)]
use file::hex;
pub use file::{
    add_token, is_valid_token_name, list_tokens, parse_sha256_hex, parse_token_lines,
    read_tokens_file, revoke_token, tighten_tokens_file, Listed, TokenCmdError, TokensLock,
    TOKENS_FILE, TOKEN_NAME_RULE,
};

/// A configured API user: the SHA-256 of their token, never the token itself.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// The user's name (`user_id`), logged with each request the token authenticates.
    pub user_id: String,
    /// SHA-256 of the bearer token; a request's token is hashed and compared in constant time.
    pub sha256: [u8; 32],
}

/// The user id given to the generated first-start token. It is an ordinary entry of the tokens
/// file: valid until `copilot-edge token revoke local-operator`, listed by `token list`.
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

impl AuthError {
    /// The `reason` label of `copilot_edge_auth_failures_total`.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid => "invalid",
        }
    }
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

/// A fresh random token: `ce_` and 64 hex digits (two v4 UUIDs, 244 random bits from the OS).
pub fn new_token() -> String {
    format!(
        "ce_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The authenticator in use, replaced as a whole when the tokens file changes.
pub struct AuthCell {
    current: std::sync::RwLock<std::sync::Arc<Authenticator>>,
    /// Tokens that do not come from the file (inline, credential).
    fixed: Vec<TokenEntry>,
    file: PathBuf,
    /// (modified time, length, inode, mode) of the file as last read.
    seen: std::sync::Mutex<Option<Stamp>>,
    /// The last reload's problem, while the file does not parse (the previous set is in use).
    problem: std::sync::Mutex<Option<String>>,
}

type Stamp = (std::time::SystemTime, u64, u64, u32);

/// What a [`AuthCell::refresh`] did.
#[derive(Debug, PartialEq)]
pub enum Refresh {
    /// The file has not changed since it was last read.
    Unchanged,
    /// Reloaded: number of tokens now accepted.
    Reloaded(usize),
    /// The file changed but does not parse: the previous set stays.
    Invalid(String),
    /// The file was writable by group or others: its mode was repaired (the old mode), then it
    /// was read as usual.
    Repaired(u32, Box<Refresh>),
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino(), m.mode()))
}

impl AuthCell {
    /// Starts from every token known now; `fixed` are those not read from `file`.
    pub fn new(all: Vec<TokenEntry>, fixed: Vec<TokenEntry>, file: PathBuf) -> AuthCell {
        AuthCell {
            current: std::sync::RwLock::new(std::sync::Arc::new(Authenticator::new(all))),
            seen: std::sync::Mutex::new(stamp(&file)),
            fixed,
            file,
            problem: std::sync::Mutex::new(None),
        }
    }

    /// The user id for an `Authorization` header value.
    pub fn verify(&self, header: Option<&[u8]>) -> Result<String, AuthError> {
        let a = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        a.verify(header).map(str::to_string)
    }

    /// The tokens file this cell follows.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Why the tokens file is not in use, while its last change does not parse.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the tokens file when its modification time, size, inode or mode changed. A file
    /// that others may write is repaired first (0644 at most).
    pub fn refresh(&self) -> Refresh {
        let now = stamp(&self.file);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return Refresh::Unchanged;
            }
            *seen = now;
        }
        let repaired = tighten_tokens_file(&self.file).ok().flatten();
        if repaired.is_some() {
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp(&self.file);
        }
        let r = match read_tokens_file(&self.file, false) {
            Ok(from_file) => {
                let mut all = self.fixed.clone();
                all.extend(from_file);
                let n = all.len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    std::sync::Arc::new(Authenticator::new(all));
                *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Refresh::Reloaded(n)
            }
            Err(e) => {
                *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                Refresh::Invalid(e)
            }
        };
        match repaired {
            Some(mode) => Refresh::Repaired(mode, Box::new(r)),
            None => r,
        }
    }
}

/// Name of the first-start token file under the state directory.
pub const API_TOKEN_FILE: &str = "api-token";

/// Makes an existing first-start token file readable by its owner only. Returns the mode it had
/// when that let others (group or world) read or write it: the caller says so, since the token
/// may already have leaked.
pub fn tighten_token_file(state_dir: &Path) -> Result<Option<u32>, TokenFileError> {
    use std::os::unix::fs::PermissionsExt;
    let path = state_dir.join(API_TOKEN_FILE);
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

/// The first-start token's entry, its `api-token` file, what was done, and whether the entry
/// is in the tokens file.
pub type FirstStartToken = (TokenEntry, PathBuf, FirstStart, Result<(), TokenCmdError>);

/// What [`ensure_token`] did.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FirstStart {
    /// A new token was written to `api-token` and entered in the tokens file.
    Created,
    /// An existing `api-token` (from an older version, or whose entry was lost) was entered in
    /// the tokens file.
    Entered,
}

/// The first-start token, used only when no token is configured anywhere (inline, credential,
/// tokens file). It is made an ordinary entry of the tokens file named [`GENERATED_USER`], so
/// the rule is one: valid until `copilot-edge token revoke local-operator` (which also deletes
/// `api-token`), listed by `token list`, and unaffected by tokens added later. The clear token is
/// kept in `<state_dir>/api-token` (0600) for the operator to read.
/// The last element says whether the entry is in the tokens file (an error when that file
/// cannot be written: the token then holds for this run only).
pub fn ensure_token(
    state_dir: &Path,
    tokens_file: &Path,
    now_rfc3339: &str,
) -> Result<FirstStartToken, TokenFileError> {
    let path = state_dir.join(API_TOKEN_FILE);
    let io = |source| TokenFileError::Io {
        path: path.clone(),
        source,
    };
    let (token, made) = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => (t.trim().to_string(), FirstStart::Entered),
        Ok(_) => (new_token(), FirstStart::Created),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (new_token(), FirstStart::Created),
        Err(e) => return Err(io(e)),
    };
    if made == FirstStart::Created {
        crate::fsutil::write_atomic(&path, token.as_bytes(), 0o600).map_err(io)?;
    }
    let entered = match add_entry(tokens_file, GENERATED_USER, &token, now_rfc3339) {
        // An entry under that name exists already (entered by an earlier start).
        Ok(()) | Err(TokenCmdError::Exists(_)) => Ok(()),
        Err(e) => Err(e),
    };
    Ok((
        TokenEntry {
            user_id: GENERATED_USER.into(),
            sha256: digest(&token),
        },
        path,
        made,
        entered,
    ))
}

/// Failed authentications per client address, for the slow-down and the throttled log line.
///
/// A fixed window per address: after [`AuthFailures::LIMIT`] different wrong tokens inside
/// [`AuthFailures::WINDOW`], that address's requests that carry a token are refused with 429
/// until the window ends, without their token being checked; no other address is affected. The
/// same wrong token sent again (a tablet retrying with a revoked token) is counted in the metric
/// but guesses nothing, so it does not slow the address down. The table is
/// bounded ([`AuthFailures::MAX_ADDRESSES`]): when full, expired windows are dropped, then the
/// oldest window. Uses the monotonic clock.
pub struct AuthFailures {
    table: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, FailWindow>>,
}

struct FailWindow {
    started: std::time::Instant,
    /// Different wrong tokens in this window (a short prefix of their digests).
    tokens: Vec<u64>,
    /// Failures since the last log line for this address.
    unlogged: u32,
    logged: Option<std::time::Instant>,
}

/// What [`AuthFailures::failed`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct FailureNote {
    /// Log a line now, with this many failures from the address since the last line.
    pub log: Option<u32>,
    /// The address has just reached the limit.
    pub now_throttled: bool,
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthFailures {
    /// Failures an address may have inside one window before it is slowed down. A technician
    /// who mistypes a token a few times stays far below; a guessing script reaches it at once.
    pub const LIMIT: u32 = 20;
    /// The window (and so the longest slow-down).
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
    /// At most one log line per address per this interval.
    pub const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
    /// Addresses tracked at once.
    pub const MAX_ADDRESSES: usize = 4096;

    /// An empty table: no address slowed down.
    pub fn new() -> Self {
        AuthFailures {
            table: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether `ip` is slowed down now; the seconds until it may try again.
    pub fn throttled(&self, ip: std::net::IpAddr) -> Option<u64> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let w = t.get(&ip.to_canonical())?;
        let age = w.started.elapsed();
        (w.tokens.len() >= Self::LIMIT as usize && age < Self::WINDOW)
            .then(|| (Self::WINDOW - age).as_secs().max(1))
    }

    /// Records one failure from `ip` with a token whose SHA-256 starts with `token_prefix`.
    pub fn failed(&self, ip: std::net::IpAddr, token_prefix: u64) -> FailureNote {
        let now = std::time::Instant::now();
        let ip = ip.to_canonical();
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= Self::MAX_ADDRESSES && !t.contains_key(&ip) {
            t.retain(|_, w| now.duration_since(w.started) < Self::WINDOW);
            if t.len() >= Self::MAX_ADDRESSES {
                if let Some(oldest) = t.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| *k) {
                    t.remove(&oldest);
                }
            }
        }
        let w = t.entry(ip).or_insert(FailWindow {
            started: now,
            tokens: Vec::new(),
            unlogged: 0,
            logged: None,
        });
        if now.duration_since(w.started) >= Self::WINDOW {
            w.started = now;
            w.tokens.clear();
        }
        let mut reached = false;
        if !w.tokens.contains(&token_prefix) && w.tokens.len() < Self::LIMIT as usize {
            w.tokens.push(token_prefix);
            reached = w.tokens.len() == Self::LIMIT as usize;
        }
        w.unlogged += 1;
        let log = match w.logged {
            Some(at) if now.duration_since(at) < Self::LOG_EVERY => None,
            _ => {
                w.logged = Some(now);
                Some(std::mem::take(&mut w.unlogged))
            }
        };
        FailureNote {
            log,
            now_throttled: reached,
        }
    }
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
    fn token_commands_store_hashes_and_the_cell_follows_the_file() {
        let dir = std::env::temp_dir().join(format!("ce-tok-{}", uuid::Uuid::new_v4()));
        let path = dir.join("tokens");
        let cell = AuthCell::new(vec![], vec![], path.clone());
        let t1 = add_token(&path, "anna", "2026-12-03T07:00:00Z").unwrap();
        let t2 = add_token(&path, "ben", "2026-12-03T07:01:00Z").unwrap();
        assert!(t1.starts_with("ce_") && t1.len() == 67 && t1 != t2);
        assert!(matches!(
            add_token(&path, "anna", "x"),
            Err(TokenCmdError::Exists(_))
        ));
        assert!(matches!(
            add_token(&path, "a b", "x"),
            Err(TokenCmdError::BadName(_))
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&t1) && text.contains(&hex(&digest(&t1))),
            "{text}"
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let listed = list_tokens(&path).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].name, "anna");
        assert_eq!(listed[0].added.as_deref(), Some("2026-12-03T07:00:00Z"));
        assert_eq!(cell.refresh(), Refresh::Reloaded(2));
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            cell.verify(Some(bearer(&t2).as_bytes())).as_deref(),
            Ok("ben")
        );
        revoke_token(&path, "ben").unwrap();
        assert!(matches!(
            revoke_token(&path, "ben"),
            Err(TokenCmdError::Unknown(_))
        ));
        assert_eq!(list_tokens(&path).unwrap().len(), 1);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("07:01"));
        assert_eq!(cell.refresh(), Refresh::Reloaded(1));
        assert_eq!(
            cell.verify(Some(bearer(&t2).as_bytes())),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            cell.verify(Some(bearer(&t1).as_bytes())).as_deref(),
            Ok("anna")
        );
        assert_eq!(cell.refresh(), Refresh::Unchanged);
        // A broken file keeps the previous set.
        std::fs::write(&path, "anna:nothex\n").unwrap();
        assert!(matches!(cell.refresh(), Refresh::Invalid(_)));
        assert_eq!(
            cell.verify(Some(bearer(&t1).as_bytes())).as_deref(),
            Ok("anna")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn first_start_token_is_an_entry_of_the_tokens_file_until_revoked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ce-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = dir.join(TOKENS_FILE);
        let (e1, path, made, entered) = ensure_token(&dir, &tokens, "t0").unwrap();
        assert!(entered.is_ok());
        assert_eq!(made, FirstStart::Created);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let token = std::fs::read_to_string(&path).unwrap();
        let listed = list_tokens(&tokens).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, GENERATED_USER);
        // A token added later does not retire it.
        add_token(&tokens, "anna", "t1").unwrap();
        let from_file = read_tokens_file(&tokens, true).unwrap();
        assert_eq!(
            Authenticator::new(from_file).verify(Some(format!("Bearer {token}").as_bytes())),
            Ok(GENERATED_USER)
        );
        assert_eq!(e1.sha256, digest(&token));
        // Revoked: gone from the file and from the disk.
        revoke_token(&tokens, GENERATED_USER).unwrap();
        assert!(!path.exists());
        assert_eq!(list_tokens(&tokens).unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_older_api_token_is_entered_in_the_tokens_file() {
        let dir = std::env::temp_dir().join(format!("ce-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(API_TOKEN_FILE), "ce_old\n").unwrap();
        let tokens = dir.join(TOKENS_FILE);
        let (e, _, made, _) = ensure_token(&dir, &tokens, "t0").unwrap();
        assert_eq!(made, FirstStart::Entered);
        assert_eq!(e.sha256, digest("ce_old"));
        assert_eq!(
            read_tokens_file(&tokens, true).unwrap()[0].sha256,
            digest("ce_old")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_writable_tokens_file_is_repaired_and_new_dirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ce-tok-{}", uuid::Uuid::new_v4()));
        let path = dir.join("a/b/tokens");
        add_token(&path, "anna", "t").unwrap();
        for d in [dir.join("a"), dir.join("a/b")] {
            assert_eq!(
                std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let cell = AuthCell::new(vec![], vec![], path.clone());
        std::fs::write(&path, std::fs::read(&path).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(cell.refresh(), Refresh::Repaired(0o666, _)));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(cell.refresh(), Refresh::Unchanged);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn guessing_from_one_address_is_slowed_down_and_logged_once() {
        let f = AuthFailures::new();
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        // The same wrong token again and again guesses nothing.
        for _ in 0..100 {
            f.failed(b, 7);
        }
        assert_eq!(f.throttled(b), None);
        let notes: Vec<FailureNote> = (0..AuthFailures::LIMIT as u64 + 5)
            .map(|i| f.failed(a, i))
            .collect();
        assert_eq!(notes.iter().filter(|n| n.log.is_some()).count(), 1);
        assert_eq!(notes.iter().filter(|n| n.now_throttled).count(), 1);
        assert!(f.throttled(a).is_some_and(|s| s <= 60));
        assert_eq!(f.throttled(b), None);
    }
}
