//! Knowledge bundles: one signed, versioned file with the SOPs, lexicon packs and asset
//! register ([`bundle`]), the directory where a gateway keeps the last good one and the one
//! before ([`Store`]), and the service side that takes new bundles from a central source and
//! swaps them in ([`rollout`]).

pub mod bundle;
pub mod commands;
#[cfg(feature = "publish")]
pub mod publish;
pub mod rollout;
mod tar;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use bundle::{is_public_key, Bundle, BundleError};

/// The bundle in use.
pub const CURRENT: &str = "current.kb";
/// The bundle before it (what `kb rollback` returns to).
pub const PREVIOUS: &str = "previous.kb";
/// Where each bundle came from and the bundles rolled back from.
const STATE: &str = "state.json";

/// What the kb directory records besides the bundles.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StoreState {
    /// Source of `current.kb` (`http`, `mqtt`).
    pub current_source: String,
    /// Source of `previous.kb`.
    pub previous_source: String,
    /// Content hashes of bundles rolled back from: a source that still offers one is not
    /// followed back to it (a newer bundle is).
    pub rolled_back: Vec<String>,
}

/// Why the kb directory could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `kb rollback` with nothing to return to.
    #[error("no previous bundle in {0}")]
    NoPrevious(PathBuf),
    /// A bundle in the directory does not read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// The kb directory: `current.kb`, `previous.kb`, `state.json`. Every change is an atomic
/// replacement, so a crash leaves either the old or the new bundle, never half of one.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created on the first install).
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, name: &str) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = self.dir.join(name);
        move |source| StoreError::Io { path, source }
    }

    /// The bytes of `name` (`CURRENT`, `PREVIOUS`), `None` when absent.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(name)(e)),
        }
    }

    /// What `state.json` says (defaults when absent or unreadable).
    pub fn state(&self) -> StoreState {
        std::fs::read(self.dir.join(STATE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        crate::fsutil::write_atomic(&self.dir.join(name), bytes, 0o640).map_err(self.io(name))
    }

    fn save_state(&self, s: &StoreState) -> Result<(), StoreError> {
        self.write(STATE, &serde_json::to_vec_pretty(s).expect("serializable"))
    }

    /// An exclusive lock on the directory (`.lock`), so that the service's install and a
    /// `kb rollback` in another process never interleave; released when the file is dropped.
    fn lock(&self) -> Result<std::fs::File, StoreError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))
            .map_err(self.io(".lock"))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(self.io(".lock")(std::io::Error::last_os_error()));
        }
        Ok(f)
    }

    /// Makes `bytes` (from `source`) the current bundle; the current one becomes the previous.
    pub fn install(&self, bytes: &[u8], source: &str) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(""))?;
        let _lock = self.lock()?;
        let mut st = self.state();
        if let Some(cur) = self.read(CURRENT)? {
            self.write(PREVIOUS, &cur)?;
            st.previous_source = std::mem::take(&mut st.current_source);
        }
        self.write(CURRENT, bytes)?;
        st.current_source = source.to_string();
        self.save_state(&st)
    }

    /// `kb rollback`: the previous bundle becomes current again, and the current one's content
    /// hash is remembered so that its source is not followed back to it. Returns the bundle
    /// now current and the one rolled back from.
    pub fn rollback(&self) -> Result<(Bundle, Bundle), StoreError> {
        if !self.dir.exists() {
            return Err(StoreError::NoPrevious(self.dir.clone()));
        }
        let _lock = self.lock()?;
        let Some(prev) = self.read(PREVIOUS)? else {
            return Err(StoreError::NoPrevious(self.dir.clone()));
        };
        let back_to = Bundle::parse(&prev)?;
        let from = match self.read(CURRENT)? {
            Some(cur) => Bundle::parse(&cur)?,
            None => return Err(StoreError::NoPrevious(self.dir.clone())),
        };
        let mut st = self.state();
        if !st.rolled_back.contains(&from.manifest.content_hash) {
            st.rolled_back.push(from.manifest.content_hash.clone());
        }
        // Remember at most a few: a bundle published again much later is a new decision.
        let excess = st.rolled_back.len().saturating_sub(16);
        st.rolled_back.drain(..excess);
        st.current_source = std::mem::take(&mut st.previous_source);
        // State first: if the bundle write fails, nothing follows back to the bad bundle.
        self.save_state(&st)?;
        self.write(CURRENT, &prev)?;
        std::fs::remove_file(self.dir.join(PREVIOUS)).map_err(self.io(PREVIOUS))?;
        Ok((back_to, from))
    }

    /// A fingerprint of `current.kb` (size, modification time, inode) that changes when another
    /// process (`kb rollback`) replaces it.
    pub fn fingerprint(&self) -> Option<(u64, i64, i64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.dir.join(CURRENT)).ok()?;
        Some((m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
    }
}

#[cfg(all(test, feature = "publish"))]
mod tests {
    use super::*;

    fn bundle(version: &str, sops: &[&str]) -> Vec<u8> {
        let d = bundle::tests::sop_dir(sops, "");
        publish::pack(&d.0, Some(version), std::time::SystemTime::now())
            .unwrap()
            .to_bytes()
    }

    #[test]
    fn install_keeps_the_previous_and_rollback_returns_to_it_once() {
        let dir =
            std::env::temp_dir().join(format!("copilot-edge-store-{}", crate::ids::trace_id()));
        let s = Store::new(&dir);
        assert!(matches!(s.rollback(), Err(StoreError::NoPrevious(_))));
        let (v1, v2) = (
            bundle("1", &["sop-cmp-001.md"]),
            bundle("2", &["sop-cmp-001.md", "sop-hyd-001.md"]),
        );
        s.install(&v1, "http").unwrap();
        s.install(&v2, "mqtt").unwrap();
        assert_eq!(s.read(PREVIOUS).unwrap().unwrap(), v1);
        let (back, from) = s.rollback().unwrap();
        assert_eq!(
            (
                back.manifest.version.as_str(),
                from.manifest.version.as_str()
            ),
            ("1", "2")
        );
        assert_eq!(s.read(CURRENT).unwrap().unwrap(), v1);
        let st = s.state();
        assert_eq!(st.current_source, "http");
        assert_eq!(st.rolled_back, vec![from.manifest.content_hash]);
        assert!(matches!(s.rollback(), Err(StoreError::NoPrevious(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
