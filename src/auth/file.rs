//! The tokens file: its format and every read and edit of it.
//!
//! One `name:sha256hex` line per token (the hex SHA-256 of the token, never the token), `#`
//! comments (`token add` writes `# added <time>` above its entry) and blank lines ignored. The
//! same parser ([`parse_token_lines`]) serves the config check (which reads the file at load, so
//! `check-config` reports a broken file), the `api-tokens` credential, the running agent's
//! reloads ([`super::AuthCell`]) and the `copilot-edge token` commands, which refuse to edit a
//! file that does not parse.
//!
//! Edits (`token add`, `token revoke`, the first-start entry) hold an `flock` ([`TokensLock`])
//! and replace the file atomically, so concurrent commands lose nothing and a reader never sees
//! half a file. The file may be world-readable (it holds digests only) but never writable by
//! others: a writable one is repaired ([`tighten_tokens_file`]).

use std::path::{Path, PathBuf};

use super::{digest, new_token, TokenEntry, TokenFileError, API_TOKEN_FILE, GENERATED_USER};

/// Name of the tokens file under the state directory (when `auth.tokens_file` is not set).
pub const TOKENS_FILE: &str = "tokens";

/// The token-name rule, as error messages state it.
pub const TOKEN_NAME_RULE: &str =
    "must be 1-64 characters of A-Z a-z 0-9 . _ - (no `:`, spaces or other characters)";

/// Is `s` a valid token name (user id)? `:` separates the name from the digest in the tokens
/// file, so it can never be part of a name.
pub fn is_valid_token_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The 64 hex digits of a SHA-256, as bytes.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Parses the tokens file format: `name:sha256hex` lines, `#` comments and blank lines ignored.
/// The error names the line.
pub fn parse_token_lines(text: &str) -> Result<Vec<TokenEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: expected name:sha256hex", n + 1))?;
        let sha256 = parse_sha256_hex(hash.trim())
            .ok_or_else(|| format!("line {}: sha256 must be 64 hex digits", n + 1))?;
        if !is_valid_token_name(user.trim()) {
            return Err(format!("line {}: token name {TOKEN_NAME_RULE}", n + 1));
        }
        out.push(TokenEntry {
            user_id: user.trim().to_string(),
            sha256,
        });
    }
    Ok(out)
}

/// Reads a tokens file. A missing file is empty unless `required`.
pub fn read_tokens_file(path: &Path, required: bool) -> Result<Vec<TokenEntry>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_token_lines(&text).map_err(|e| format!("{}: {e}", path.display())),
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

pub(super) fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry of the tokens file as `token list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The token's name (`user_id`).
    pub name: String,
    /// From the `# added …` comment `token add` writes above the entry.
    pub added: Option<String>,
}

/// Errors of the `token` subcommands.
#[derive(Debug, thiserror::Error)]
pub enum TokenCmdError {
    /// The tokens file cannot be read or does not parse (it is then never rewritten).
    #[error("{0}")]
    File(String),
    /// The name breaks [`TOKEN_NAME_RULE`].
    #[error("`{0}` is not a valid token name: it {TOKEN_NAME_RULE}")]
    BadName(String),
    /// `token add` for a name that has a token.
    #[error("a token named `{0}` already exists (revoke it first)")]
    Exists(String),
    /// `token revoke` for a name that has none.
    #[error("no token named `{0}`")]
    Unknown(String),
    /// Locking, writing, syncing or renaming failed; the file is unchanged.
    #[error("writing {path}: {source}")]
    Write {
        /// The tokens file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An exclusive lock on a tokens file: every read-modify-write of the file holds one, so two
/// `token` commands (or a command and the agent adding its first-start entry) never interleave.
/// It is an `flock` on a lock file beside the tokens file (`.tokens.lock`), released when the
/// value is dropped or the process dies.
pub struct TokensLock {
    _file: std::fs::File,
}

/// Creates `dir` and any missing parents as 0700 (whatever the umask).
fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| TOKENS_FILE.into());
    path.with_file_name(format!(".{name}.lock"))
}

impl TokensLock {
    /// Waits for the exclusive lock on `path` (creating its directory 0700 when missing).
    pub fn acquire(path: &Path) -> Result<TokensLock, TokenCmdError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let werr = |source| TokenCmdError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            create_private_dirs(dir).map_err(werr)?;
        }
        let lp = lock_path(path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // The lock file is never written; an existing one is kept as it is.
            .truncate(false)
            .mode(0o600)
            .open(&lp)
            // A lock file made by another user (root's CLI vs the service): a shared fd is
            // enough for flock.
            .or_else(|_| std::fs::File::open(&lp))
            .map_err(werr)?;
        loop {
            // SAFETY: flock on a file descriptor this function owns.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(TokensLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(werr(e));
            }
        }
    }
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
    parse_token_lines(&text)
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

/// The mode a tokens file is written with: it holds only digests of 244-bit random tokens, so it
/// may be readable by all (0644: the service may run as another, dynamic, user than the root who
/// manages the tokens), but never writable by anyone but its owner. An existing file keeps its
/// read bits.
fn tokens_file_mode(existing: Option<u32>) -> u32 {
    existing.map_or(0o644, |m| m & 0o777 & !0o022)
}

/// Replaces the file atomically: a temporary file of this process's own (never shared with a
/// concurrent writer), written, fsynced, renamed over the file, and the directory fsynced, so a
/// reader sees the old file or the new one, never a part. Call with the [`TokensLock`] held.
fn store_lines(path: &Path, lines: &[String], _lock: &TokensLock) -> Result<(), TokenCmdError> {
    let mut text = lines.join("\n");
    text.push('\n');
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        tokens_file_mode(std::fs::metadata(path).ok().map(|m| m.permissions().mode()))
    };
    crate::fsutil::write_atomic(path, text.as_bytes(), mode).map_err(|source| {
        TokenCmdError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Adds `name` with this token's digest under the lock; `now_rfc3339` goes into the `# added`
/// comment.
pub(super) fn add_entry(
    path: &Path,
    name: &str,
    token: &str,
    now_rfc3339: &str,
) -> Result<(), TokenCmdError> {
    if !is_valid_token_name(name) {
        return Err(TokenCmdError::BadName(name.to_string()));
    }
    let lock = TokensLock::acquire(path)?;
    let mut lines = load_lines(path)?;
    if lines.iter().any(|l| entry_name(l) == Some(name)) {
        return Err(TokenCmdError::Exists(name.to_string()));
    }
    if lines.is_empty() {
        lines.push(
            "# copilot-edge API tokens: name:sha256 of the token (`copilot-edge token`)".into(),
        );
    }
    lines.push(format!("# added {now_rfc3339}"));
    lines.push(format!("{name}:{}", hex(&digest(token))));
    store_lines(path, &lines, &lock)
}

/// `copilot-edge token add NAME`: stores the new token's SHA-256 under NAME and returns the
/// token (the only time it exists in clear).
pub fn add_token(path: &Path, name: &str, now_rfc3339: &str) -> Result<String, TokenCmdError> {
    if !is_valid_token_name(name) {
        return Err(TokenCmdError::BadName(name.to_string()));
    }
    let token = new_token();
    add_entry(path, name, &token, now_rfc3339)?;
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

/// `copilot-edge token revoke NAME`: removes the entry (and its `# added` comment). Revoking
/// [`GENERATED_USER`] also deletes the first-start `api-token` file beside the tokens file when it
/// holds that entry's token, so the revoked token cannot be read back from disk.
pub fn revoke_token(path: &Path, name: &str) -> Result<(), TokenCmdError> {
    let lock = TokensLock::acquire(path)?;
    let lines = load_lines(path)?;
    let Some(at) = lines.iter().position(|l| entry_name(l) == Some(name)) else {
        return Err(TokenCmdError::Unknown(name.to_string()));
    };
    let revoked = lines[at]
        .split_once(':')
        .and_then(|(_, h)| parse_sha256_hex(h.trim()));
    let mut kept = Vec::with_capacity(lines.len());
    for (i, l) in lines.into_iter().enumerate() {
        let comment_of_entry = i + 1 == at && l.trim().starts_with("# added ");
        if i != at && !comment_of_entry {
            kept.push(l);
        }
    }
    store_lines(path, &kept, &lock)?;
    if name == GENERATED_USER {
        let api_token = path.with_file_name(API_TOKEN_FILE);
        if let (Ok(t), Some(h)) = (std::fs::read_to_string(&api_token), revoked) {
            if digest(t.trim()) == h {
                let _ = std::fs::remove_file(&api_token);
            }
        }
    }
    Ok(())
}

/// Removes group and world write bits from an existing tokens file (anyone who can write it can
/// let themselves in). Returns the mode it had when it changed.
pub fn tighten_tokens_file(path: &Path) -> Result<Option<u32>, TokenFileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(TokenFileError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(tokens_file_mode(Some(mode))),
    )
    .map_err(|source| TokenFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;

    #[test]
    fn token_names_never_break_the_file() {
        let dir = std::env::temp_dir().join(format!("ce-tok-{}", uuid::Uuid::new_v4()));
        let path = dir.join("tokens");
        for bad in ["ops:dave", "", "a b", "x\ny", "é", &"a".repeat(65)] {
            let e = add_token(&path, bad, "t").unwrap_err();
            assert!(matches!(e, TokenCmdError::BadName(_)), "{bad:?}: {e}");
            assert!(e.to_string().contains("A-Z a-z 0-9 . _ -"), "{e}");
        }
        add_token(&path, "ops.dave_2-b", "t").unwrap();
        assert_eq!(read_tokens_file(&path, true).unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_token_commands_lose_nothing() {
        let dir = std::env::temp_dir().join(format!("ce-tok-{}", uuid::Uuid::new_v4()));
        let path = dir.join("tokens");
        add_token(&path, "victim", "t").unwrap();
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let p = path.clone();
                std::thread::spawn(move || add_token(&p, &format!("u{i}"), "t").unwrap())
            })
            .chain(std::iter::once({
                let p = path.clone();
                std::thread::spawn(move || {
                    revoke_token(&p, "victim").unwrap();
                    String::new()
                })
            }))
            .collect();
        let printed: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let a = Authenticator::new(read_tokens_file(&path, true).unwrap());
        for t in printed.iter().filter(|t| !t.is_empty()) {
            assert!(a.verify(Some(format!("Bearer {t}").as_bytes())).is_ok());
        }
        let names: Vec<String> = list_tokens(&path)
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names.len(), 16, "{names:?}");
        assert!(!names.contains(&"victim".to_string()));
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
