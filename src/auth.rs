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

/// Name of the tokens file under the state directory (when `auth.tokens_file` is not set).
pub const TOKENS_FILE: &str = "tokens";

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

/// Reads a tokens file (`user_id:sha256hex` lines, `#` comments). A missing file is empty
/// unless `required`.
pub fn read_tokens_file(path: &Path, required: bool) -> Result<Vec<TokenEntry>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            crate::config::parse_token_lines(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        // Missing, or under a state directory that is not one (reported by its own check).
        Err(e)
            if !required
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
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

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry of the tokens file as `token list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub name: String,
    /// From the `# added …` comment `token add` writes above the entry.
    pub added: Option<String>,
}

/// Errors of the `token` subcommands.
#[derive(Debug, thiserror::Error)]
pub enum TokenCmdError {
    #[error("{0}")]
    File(String),
    #[error("`{0}` is not a valid token name (1-64 of [A-Za-z0-9-_.:])")]
    BadName(String),
    #[error("a token named `{0}` already exists (revoke it first)")]
    Exists(String),
    #[error("no token named `{0}`")]
    Unknown(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The tokens file's lines and entries (entries keep their comment line, if any).
fn load_lines(path: &Path) -> Result<Vec<String>, TokenCmdError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(TokenCmdError::File(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    // A file that does not parse is not edited further (the agent would not accept it either).
    crate::config::parse_token_lines(&text)
        .map_err(|e| TokenCmdError::File(format!("{}: {e}", path.display())))?;
    Ok(text.lines().map(str::to_string).collect())
}

fn entry_name(line: &str) -> Option<&str> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    l.split_once(':').map(|(n, _)| n.trim())
}

/// Replaces the file atomically (temporary file, fsync, rename). It holds only digests of
/// 244-bit random tokens, so it is readable by all (mode 0644): the service may run as another
/// (dynamic) user than the root who manages the tokens. An existing file keeps its mode.
fn store_lines(path: &Path, lines: &[String]) -> Result<(), TokenCmdError> {
    use std::os::unix::fs::PermissionsExt;
    let werr = |source| TokenCmdError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o777);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        let mut f = opts.open(&tmp).map_err(werr)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(werr)?;
        let mut text = lines.join("\n");
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(werr)?;
        f.sync_all().map_err(werr)?;
    }
    std::fs::rename(&tmp, path).map_err(werr)
}

/// `copilot-edge token add NAME`: stores the new token's SHA-256 under NAME and returns the
/// token (the only time it exists in clear).
pub fn add_token(path: &Path, name: &str, now_rfc3339: &str) -> Result<String, TokenCmdError> {
    if !crate::config::is_valid_id(name) {
        return Err(TokenCmdError::BadName(name.to_string()));
    }
    let mut lines = load_lines(path)?;
    if lines.iter().any(|l| entry_name(l) == Some(name)) {
        return Err(TokenCmdError::Exists(name.to_string()));
    }
    let token = new_token();
    if lines.is_empty() {
        lines.push(
            "# copilot-edge API tokens: user_id:sha256 of the token (`copilot-edge token`)".into(),
        );
    }
    lines.push(format!("# added {now_rfc3339}"));
    lines.push(format!("{name}:{}", hex(&digest(&token))));
    store_lines(path, &lines)?;
    Ok(token)
}

/// `copilot-edge token list`.
pub fn list_tokens(path: &Path) -> Result<Vec<Listed>, TokenCmdError> {
    let lines = load_lines(path)?;
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = entry_name(l) {
            let added = i
                .checked_sub(1)
                .and_then(|p| lines[p].trim().strip_prefix("# added "))
                .map(str::to_string);
            out.push(Listed {
                name: name.to_string(),
                added,
            });
        }
    }
    Ok(out)
}

/// `copilot-edge token revoke NAME`: removes the entry (and its `# added` comment).
pub fn revoke_token(path: &Path, name: &str) -> Result<(), TokenCmdError> {
    let lines = load_lines(path)?;
    let Some(at) = lines.iter().position(|l| entry_name(l) == Some(name)) else {
        return Err(TokenCmdError::Unknown(name.to_string()));
    };
    let mut kept = Vec::with_capacity(lines.len());
    for (i, l) in lines.into_iter().enumerate() {
        let comment_of_entry = i + 1 == at && l.trim().starts_with("# added ");
        if i != at && !comment_of_entry {
            kept.push(l);
        }
    }
    store_lines(path, &kept)
}

/// The authenticator in use, replaced as a whole when the tokens file changes.
pub struct AuthCell {
    current: std::sync::RwLock<std::sync::Arc<Authenticator>>,
    /// Tokens that do not come from the file (inline, credential, first-start token).
    fixed: Vec<TokenEntry>,
    file: PathBuf,
    /// (modified time, length, inode) of the file as last read.
    seen: std::sync::Mutex<Option<(std::time::SystemTime, u64, u64)>>,
}

/// What a [`AuthCell::refresh`] did.
#[derive(Debug, PartialEq)]
pub enum Refresh {
    Unchanged,
    /// Reloaded: number of tokens now accepted.
    Reloaded(usize),
    /// The file changed but does not parse: the previous set stays.
    Invalid(String),
}

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

impl AuthCell {
    /// Starts from every token known now; `fixed` are those not read from `file`.
    pub fn new(all: Vec<TokenEntry>, fixed: Vec<TokenEntry>, file: PathBuf) -> AuthCell {
        AuthCell {
            current: std::sync::RwLock::new(std::sync::Arc::new(Authenticator::new(all))),
            seen: std::sync::Mutex::new(stamp(&file)),
            fixed,
            file,
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

    /// Re-reads the tokens file when its modification time, size or inode changed.
    pub fn refresh(&self) -> Refresh {
        let now = stamp(&self.file);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return Refresh::Unchanged;
            }
            *seen = now;
        }
        match read_tokens_file(&self.file, false) {
            Ok(from_file) => {
                let mut all = self.fixed.clone();
                all.extend(from_file);
                let n = all.len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    std::sync::Arc::new(Authenticator::new(all));
                Refresh::Reloaded(n)
            }
            Err(e) => Refresh::Invalid(e),
        }
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
    let token = new_token();
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
