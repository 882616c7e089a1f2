//! Making bundles (`kb keygen`, `kb pack`, `kb sign`): tools for whoever publishes SOPs, behind
//! the Cargo feature `publish` (default on) so a gateway build can leave them out; a gateway
//! only reads and verifies ([`super::bundle`]).

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::bundle::{
    broken, check_version, content_hash, hex, io, Bundle, BundleError, FileEntry, Manifest,
    Signature, Smoke, Target, FORMAT, MANIFEST, SIGNATURES,
};
use super::tar;

/// `bundle.toml` in the directory `kb pack` reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PackFile {
    version: String,
    target: Option<Target>,
    smoke: Vec<Smoke>,
}

impl Bundle {
    /// The bundle as file bytes (gzip'd tar: manifest, files, signatures).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut t = Vec::new();
        let mut add = |n: &str, d: &[u8]| tar::append(&mut t, n, d).expect("names checked");
        add(MANIFEST, &self.manifest_bytes);
        for (n, d) in &self.files {
            add(n, d);
        }
        if !self.signatures.is_empty() {
            add(
                SIGNATURES,
                &serde_json::to_vec_pretty(&self.signatures).expect("serializable"),
            );
        }
        tar::finish(&mut t);
        crate::compress::gzip(&t, 9)
    }

    /// Adds a signature by `key`.
    pub fn sign(&mut self, key: &Ed25519KeyPair) {
        let public = crate::base64::encode(key.public_key().as_ref());
        self.signatures.retain(|s| s.key != public);
        self.signatures.push(Signature {
            key: public,
            sig: crate::base64::encode(key.sign(&self.manifest_bytes).as_ref()),
        });
    }
}

/// `kb pack DIR`: a bundle of `DIR/knowledge/*.md`, `DIR/lexicon/*.toml`, `DIR/assets.csv` or
/// `DIR/assets.toml`, with `DIR/bundle.toml` (version, target, smoke). `version` overrides the
/// file's. The knowledge must load (a broken set is never packed).
pub fn pack(
    dir: &Path,
    version: Option<&str>,
    now: std::time::SystemTime,
) -> Result<Bundle, BundleError> {
    let spec_path = dir.join("bundle.toml");
    let spec: PackFile = match std::fs::read_to_string(&spec_path) {
        Ok(t) => toml::from_str(&t).map_err(|e| broken(format!("{}: {e}", spec_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PackFile::default(),
        Err(e) => return Err(io(&spec_path)(e)),
    };
    let version = version.map_or(spec.version, str::to_string);
    check_version(&version).map_err(broken)?;
    if let Some(p) = spec.target.as_ref().and_then(|t| t.percent) {
        if p > 100 {
            return Err(broken("target.percent is 0..=100"));
        }
    }
    let mut files = Vec::new();
    for (sub, ext) in [("knowledge", "md"), ("lexicon", "toml")] {
        let d = dir.join(sub);
        if sub == "lexicon" && !d.exists() {
            continue;
        }
        let mut names = Vec::new();
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let p = e.map_err(io(&d))?.path();
            if p.is_file() && p.extension().is_some_and(|x| x == ext) {
                names.push(p);
            }
        }
        names.sort();
        for p in names {
            let name = format!(
                "{sub}/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            );
            files.push((name, std::fs::read(&p).map_err(io(&p))?));
        }
    }
    for a in ["assets.csv", "assets.toml"] {
        let p = dir.join(a);
        if p.exists() {
            if files.iter().any(|(n, _)| n.starts_with("assets.")) {
                return Err(broken("both assets.csv and assets.toml: keep one"));
            }
            files.push((a.to_string(), std::fs::read(&p).map_err(io(&p))?));
        }
    }
    for (n, _) in &files {
        if n.len() > tar::MAX_NAME {
            return Err(broken(format!(
                "{n}: name longer than {} bytes",
                tar::MAX_NAME
            )));
        }
    }
    let entries: Vec<FileEntry> = files
        .iter()
        .map(|(n, d)| FileEntry {
            path: n.clone(),
            sha256: hex(&Sha256::digest(d)),
            bytes: d.len() as u64,
        })
        .collect();
    let created_unix_ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let manifest = Manifest {
        format: FORMAT,
        version,
        created: crate::logging::rfc3339(now),
        created_unix_ms,
        content_hash: content_hash(&entries),
        files: entries,
        smoke: spec.smoke,
        target: spec.target,
    };
    let bundle = Bundle {
        manifest_bytes: serde_json::to_vec_pretty(&manifest).expect("serializable"),
        manifest,
        signatures: Vec::new(),
        files,
    };
    bundle.knowledge()?;
    Ok(bundle)
}

/// A new Ed25519 key pair: the private key (PKCS#8, base64) and the public key (base64).
pub fn keygen() -> (String, String) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("system random source");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("just generated");
    (
        crate::base64::encode(pkcs8.as_ref()),
        crate::base64::encode(pair.public_key().as_ref()),
    )
}

/// A private key file written by [`keygen`].
pub fn read_private_key(path: &Path) -> Result<Ed25519KeyPair, BundleError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let der = crate::base64::decode(&text)
        .ok_or_else(|| broken(format!("{}: not a base64 private key", path.display())))?;
    Ed25519KeyPair::from_pkcs8(&der).map_err(|e| {
        broken(format!(
            "{}: not an Ed25519 PKCS#8 key: {e}",
            path.display()
        ))
    })
}
