//! The bundle file: a gzip-compressed ustar archive of
//!
//! ```text
//! manifest.json        version, created, content hash, every file's SHA-256, smoke questions, target
//! knowledge/*.md       the SOPs (translations as <name>.<language>.md)
//! lexicon/*.toml       lexicon packs added to the built-in lexicon (optional)
//! assets.csv|.toml     the asset register (optional)
//! signatures.json      Ed25519 signatures of manifest.json's exact bytes (added by `kb sign`)
//! ```
//!
//! A signature covers the manifest, and the manifest names every file's hash, so one check of
//! the signature and of each file's hash covers everything. The content hash (the SHA-256 of a
//! `sha256sum`-style listing of the files) identifies the knowledge itself: two packs of the
//! same files have the same content hash whatever their version string or creation time.

use std::path::Path;

use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tar;
use crate::diagnose::{self, Knowledge, Question};

/// The manifest's name inside a bundle.
pub const MANIFEST: &str = "manifest.json";
/// The signatures' name inside a bundle.
pub const SIGNATURES: &str = "signatures.json";
/// A bundle file larger than this is refused (download limit too). The 43 sample SOPs pack to
/// 41 KB, so this holds thousands of SOPs while a hostile file costs little before its
/// signature is checked.
pub const MAX_BUNDLE_BYTES: usize = 16 << 20;
/// Unpacked, a bundle may hold at most this much (a gzip bomb stops here).
const MAX_UNPACKED_BYTES: usize = 64 << 20;
/// Bundle format this build writes and reads.
pub(super) const FORMAT: u32 = 1;
/// The longest version string (it becomes a label value).
pub const MAX_VERSION_CHARS: usize = 64;

/// Why a bundle is refused. `kind()` is the reason label of `copilot_edge_knowledge_checks_total`.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a readable bundle: not gzip, not tar, a missing or malformed manifest, a file whose
    /// hash differs, a knowledge base that does not load.
    #[error("broken bundle: {0}")]
    Broken(String),
    /// No signature by a configured key, or one that does not verify.
    #[error("signature: {0}")]
    Signature(String),
    /// A smoke question of the bundle's own does not get the SOP it names.
    #[error("smoke question failed: {0}")]
    Smoke(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl BundleError {
    /// The `result` label value for this refusal.
    pub fn kind(&self) -> &'static str {
        match self {
            BundleError::Broken(_) | BundleError::Io { .. } => "broken",
            BundleError::Signature(_) => "bad_signature",
            BundleError::Smoke(_) => "smoke_failed",
        }
    }
}

pub(super) fn broken(m: impl std::fmt::Display) -> BundleError {
    BundleError::Broken(m.to_string())
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle format (1).
    pub format: u32,
    /// The publisher's version string, e.g. `2026.12.07-1`.
    pub version: String,
    /// When it was packed, RFC 3339.
    pub created: String,
    /// The same moment in Unix milliseconds; bundles are ordered by it.
    pub created_unix_ms: i64,
    /// `sha256:<hex>` of the file listing.
    pub content_hash: String,
    /// Every file besides the manifest and the signatures.
    pub files: Vec<FileEntry>,
    /// Questions the bundle must answer with the SOP each names, on the gateway, before use.
    #[serde(default)]
    pub smoke: Vec<Smoke>,
    /// Which gateways apply it (all when absent).
    #[serde(default)]
    pub target: Option<Target>,
}

/// A file of the bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the bundle.
    pub path: String,
    /// SHA-256 hex of its bytes.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// A smoke question.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Smoke {
    /// The question as a technician would type it.
    pub question: String,
    /// Equipment id sent with it (may be empty).
    #[serde(default)]
    pub equipment_id: String,
    /// The SOP id the answer's first cited document must have, or `NONE` for a refusal.
    pub expect: String,
}

/// Staged rollout: every condition given must hold for a gateway to apply the bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `identity.site_plant_id` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// Patterns with `*` (as in the asset register) on `identity.gateway_id`; any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// The share of gateways, by a hash of the gateway id (stable: a gateway in at 10 % is in
    /// at 20 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
}

impl Target {
    /// Whether gateway `gateway_id` of site `site` applies the bundle.
    pub fn selects(&self, site: &str, gateway_id: &str) -> bool {
        (self.sites.is_empty() || self.sites.iter().any(|s| s == site))
            && (self.gateways.is_empty() || self.gateways.iter().any(|g| glob(g, gateway_id)))
            && self
                .percent
                .is_none_or(|p| bucket(gateway_id) < u64::from(p))
    }
}

/// The gateway's rollout bucket, 0..100, from the SHA-256 of its id.
pub fn bucket(gateway_id: &str) -> u64 {
    let d = Sha256::digest(gateway_id.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % 100
}

/// `*` any run, the rest literal: the asset register's patterns.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<String> = pattern.split('*').map(str::to_string).collect();
    crate::diagnose::assets::glob_match(&parts, s)
}

/// One signature in `signatures.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signer's Ed25519 public key, base64.
    pub key: String,
    /// The signature of `manifest.json`'s bytes, base64.
    pub sig: String,
}

/// A bundle read from its file: integrity checked (every file's hash), not yet its signature.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The manifest.
    pub manifest: Manifest,
    /// `manifest.json` as stored (what the signatures sign).
    pub(super) manifest_bytes: Vec<u8>,
    /// The signatures, in file order.
    pub signatures: Vec<Signature>,
    /// The files, in manifest order.
    pub(super) files: Vec<(String, Vec<u8>)>,
}

impl Bundle {
    /// Reads a bundle file's bytes and checks every file against the manifest.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(broken(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
        }
        let tar = crate::compress::gunzip(bytes, MAX_UNPACKED_BYTES).map_err(broken)?;
        let mut members = tar::read(&tar).map_err(broken)?;
        let take = |members: &mut Vec<(String, Vec<u8>)>, name: &str| {
            members
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| members.remove(i).1)
        };
        let manifest_bytes = take(&mut members, MANIFEST).ok_or_else(|| broken("no manifest"))?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| broken(format!("manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(broken(format!(
                "format {} (this build reads {FORMAT})",
                manifest.format
            )));
        }
        check_version(&manifest.version).map_err(broken)?;
        let signatures = match take(&mut members, SIGNATURES) {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|e| broken(format!("{SIGNATURES}: {e}")))?
            }
            None => Vec::new(),
        };
        let mut files = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            let data = take(&mut members, &f.path).ok_or_else(|| {
                broken(format!("{} is in the manifest, not in the bundle", f.path))
            })?;
            if hex(&Sha256::digest(&data)) != f.sha256 || data.len() as u64 != f.bytes {
                return Err(broken(format!(
                    "{}: content differs from the manifest",
                    f.path
                )));
            }
            files.push((f.path.clone(), data));
        }
        if let Some((name, _)) = members.first() {
            return Err(broken(format!("{name} is not in the manifest")));
        }
        if content_hash(&manifest.files) != manifest.content_hash {
            return Err(broken("content hash differs from the file list"));
        }
        Ok(Bundle {
            manifest,
            manifest_bytes,
            signatures,
            files,
        })
    }

    /// Reads a bundle file.
    pub fn read(path: &Path) -> Result<Bundle, BundleError> {
        Bundle::parse(&std::fs::read(path).map_err(io(path))?)
    }

    /// The first 12 hex digits of the content hash (the `hash` label).
    pub fn short_hash(&self) -> &str {
        short_hash(&self.manifest.content_hash)
    }

    /// The first of `keys` (base64 Ed25519 public keys) that signed this bundle, or why none.
    pub fn verify(&self, keys: &[String]) -> Result<String, BundleError> {
        if keys.is_empty() {
            return Err(BundleError::Signature("no public key configured".into()));
        }
        if self.signatures.is_empty() {
            return Err(BundleError::Signature("the bundle is not signed".into()));
        }
        for s in &self.signatures {
            let Some(k) = keys.iter().find(|k| k.trim() == s.key) else {
                continue;
            };
            let (Some(pk), Some(sig)) = (crate::base64::decode(k), crate::base64::decode(&s.sig))
            else {
                return Err(BundleError::Signature("malformed signature".into()));
            };
            return UnparsedPublicKey::new(&ED25519, pk)
                .verify(&self.manifest_bytes, &sig)
                .map(|()| s.key.clone())
                .map_err(|_| {
                    BundleError::Signature(format!(
                        "signature by {} does not verify",
                        short_key(&s.key)
                    ))
                });
        }
        Err(BundleError::Signature(format!(
            "signed by {}, none of them a configured key",
            self.signatures
                .iter()
                .map(|s| short_key(&s.key))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// The knowledge it carries: SOPs, the built-in lexicon extended by its packs, its asset
    /// register (none when it has none).
    pub fn knowledge(&self) -> Result<Knowledge, BundleError> {
        let text = |n: &str, d: &[u8]| {
            std::str::from_utf8(d)
                .map(str::to_string)
                .map_err(|_| broken(format!("{n} is not UTF-8")))
        };
        let mut docs = Vec::new();
        let mut packs = Vec::new();
        let mut assets = None;
        for (n, d) in &self.files {
            if let Some(f) = n.strip_prefix("knowledge/").filter(|f| f.ends_with(".md")) {
                docs.push((f.to_string(), text(n, d)?));
            } else if n.starts_with("lexicon/") && n.ends_with(".toml") {
                packs.push((n.clone(), text(n, d)?));
            } else if n == "assets.csv" {
                assets = Some(diagnose::assets::AssetRegister::parse_csv(n, &text(n, d)?));
            } else if n == "assets.toml" {
                assets = Some(diagnose::assets::AssetRegister::parse_toml(n, &text(n, d)?));
            }
        }
        let docs = diagnose::kb::parse_all(docs.iter().map(|(n, t)| (n.as_str(), t.as_str())))
            .map_err(broken)?;
        let lexicon = diagnose::lexicon::Lexicon::embedded_with(&packs).map_err(broken)?;
        let assets = match assets {
            Some(a) => a.map_err(broken)?,
            None => diagnose::assets::AssetRegister::default(),
        };
        Ok(Knowledge {
            docs,
            lexicon,
            assets,
        })
    }
}

/// Runs the smoke questions on `engine`; the first that fails, as an error.
pub fn smoke(engine: &diagnose::DiagnoseEngine, questions: &[Smoke]) -> Result<(), BundleError> {
    for s in questions {
        let a = engine.diagnose(&Question {
            plant_id: "smoke",
            equipment_id: &s.equipment_id,
            problem_description: &s.question,
            observed_defects: &[],
        });
        let got = a
            .guidance
            .cited_documents
            .first()
            .map_or("NONE", String::as_str);
        if got != s.expect {
            return Err(BundleError::Smoke(format!(
                "{:?} cites {got}, expected {}",
                s.question, s.expect
            )));
        }
    }
    Ok(())
}

pub(super) fn check_version(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("no version (bundle.toml `version` or --version)".into());
    }
    if v.chars().count() > MAX_VERSION_CHARS
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+:".contains(c))
    {
        return Err(format!(
            "version {v:?}: at most {MAX_VERSION_CHARS} of A-Z a-z 0-9 . _ - + :"
        ));
    }
    Ok(())
}

/// `sha256:<hex>` of the `sha256sum`-style listing (`<hex>  <path>\n`, by path).
pub(super) fn content_hash(files: &[FileEntry]) -> String {
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for f in sorted {
        h.update(format!("{}  {}\n", f.sha256, f.path).as_bytes());
    }
    format!("sha256:{}", hex(&h.finalize()))
}

/// The first 12 hex digits of a `sha256:<hex>` content hash.
pub fn short_hash(content_hash: &str) -> &str {
    let h = content_hash.strip_prefix("sha256:").unwrap_or(content_hash);
    h.char_indices().nth(12).map_or(h, |(i, _)| &h[..i])
}

/// A key's first characters for a message (the key text comes from an unsigned file: never
/// sliced by bytes).
fn short_key(k: &str) -> String {
    format!("key {}…", k.chars().take(10).collect::<String>())
}

pub(super) fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` is a base64 Ed25519 public key (32 bytes).
pub fn is_public_key(text: &str) -> bool {
    crate::base64::decode(text).is_some_and(|k| k.len() == 32)
}

#[cfg(all(test, feature = "publish"))]
pub(super) mod tests {
    use super::super::publish::*;
    use super::*;
    use ring::signature::Ed25519KeyPair;

    /// A temporary directory, removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A `kb pack` directory with these SOPs of `config/knowledge` and `bundle_toml`.
    pub fn sop_dir(sops: &[&str], bundle_toml: &str) -> Dir {
        let d = Dir(std::env::temp_dir().join(format!(
            "copilot-edge-kb-{}-{}",
            std::process::id(),
            crate::ids::trace_id()
        )));
        std::fs::create_dir_all(d.0.join("knowledge")).unwrap();
        for n in sops {
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("config/knowledge")
                    .join(n),
                d.0.join("knowledge").join(n),
            )
            .unwrap();
        }
        std::fs::write(d.0.join("bundle.toml"), bundle_toml).unwrap();
        d
    }

    fn sample_dir() -> Dir {
        sop_dir(
            &[
                "sop-cmp-001.md",
                "sop-hyd-001.md",
                "sop-conv-001.md",
                "sop-conv-001.de.md",
            ],
            "version = \"1.0\"\n[target]\nsites = [\"plant-a\"]\n",
        )
    }

    #[test]
    fn a_packed_signed_bundle_reads_back_verifies_and_loads() {
        let d = sample_dir();
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let mut b = pack(&d.0, None, now).unwrap();
        assert_eq!(b.manifest.version, "1.0");
        assert_eq!(b.manifest.files.len(), 4);
        let (private, public) = keygen();
        let key = Ed25519KeyPair::from_pkcs8(&crate::base64::decode(&private).unwrap()).unwrap();
        b.sign(&key);
        let back = Bundle::parse(&b.to_bytes()).unwrap();
        assert_eq!(back.manifest, b.manifest);
        assert_eq!(back.verify(std::slice::from_ref(&public)).unwrap(), public);
        let k = back.knowledge().unwrap();
        assert_eq!(k.docs.len(), 3);
        assert_eq!(back.short_hash().len(), 12);
        // The same files pack to the same content hash whatever the version.
        let again = pack(&d.0, Some("2.0"), std::time::SystemTime::now()).unwrap();
        assert_eq!(again.manifest.content_hash, b.manifest.content_hash);
    }

    #[test]
    fn wrong_keys_tampered_files_and_truncation_are_refused_with_their_reason() {
        let d = sample_dir();
        let mut b = pack(&d.0, None, std::time::SystemTime::now()).unwrap();
        let (private, _) = keygen();
        let (_, other_public) = keygen();
        let key = Ed25519KeyPair::from_pkcs8(&crate::base64::decode(&private).unwrap()).unwrap();
        b.sign(&key);
        assert_eq!(
            b.verify(&[other_public]).unwrap_err().kind(),
            "bad_signature"
        );
        let bytes = b.to_bytes();
        assert_eq!(
            Bundle::parse(&bytes[..bytes.len() / 2]).unwrap_err().kind(),
            "broken"
        );
        // A file changed after packing: the manifest's hash no longer matches.
        let mut t = b.clone();
        t.files[0]
            .1
            .extend_from_slice(b"\n1. Open the valve fully.\n");
        assert!(matches!(
            Bundle::parse(&t.to_bytes()),
            Err(BundleError::Broken(m)) if m.contains("content differs")
        ));
        // A manifest changed after signing: the signature no longer verifies.
        let mut m = b.clone();
        m.manifest_bytes = String::from_utf8(m.manifest_bytes)
            .unwrap()
            .replace("\"1.0\"", "\"9.9\"")
            .into_bytes();
        let public = b.signatures[0].key.clone();
        assert_eq!(
            Bundle::parse(&m.to_bytes())
                .unwrap()
                .verify(&[public])
                .unwrap_err()
                .kind(),
            "bad_signature"
        );
    }

    #[test]
    fn signer_names_from_an_unsigned_file_never_split_a_character() {
        let mut b = pack(&sample_dir().0, None, std::time::SystemTime::now()).unwrap();
        b.signatures.push(Signature {
            key: "aéééééééééééé".into(),
            sig: String::new(),
        });
        let e = b.verify(&[keygen().1]).unwrap_err();
        assert_eq!(e.kind(), "bad_signature", "{e}");
        assert_eq!(short_hash("sha256:éééééééééééééé").chars().count(), 12);
    }

    #[test]
    fn targets_select_by_site_pattern_and_percentage() {
        let t = Target {
            sites: vec!["plant-a".into()],
            gateways: vec!["gw-a-*".into(), "line*-gw".into()],
            percent: None,
        };
        assert!(t.selects("plant-a", "gw-a-1"));
        assert!(t.selects("plant-a", "line7-gw"));
        assert!(!t.selects("plant-a", "gw-b-1"));
        assert!(!t.selects("plant-b", "gw-a-1"));
        let share = |p| {
            let t = Target {
                percent: Some(p),
                ..Target::default()
            };
            (0..1000)
                .filter(|i| t.selects("s", &format!("gw-{i}")))
                .count()
        };
        assert_eq!(share(0), 0);
        assert_eq!(share(100), 1000);
        assert!((150..250).contains(&share(20)), "{}", share(20));
    }
}
