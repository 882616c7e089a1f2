//! `copilot-edge kb …`: what plant IT and the people who publish SOPs run from a shell.

use std::fmt::Write as _;
use std::path::Path;

use super::bundle::{self, Bundle};
use super::{Store, CURRENT};
use crate::cli::KbCommand;
use crate::config::Config;
use crate::diagnose::DiagnoseEngine;

/// Runs one `kb` subcommand; the text for stdout, or the message for stderr (exit 1).
pub fn run(cmd: KbCommand, cfg: &Config) -> Result<String, String> {
    match cmd {
        #[cfg(feature = "publish")]
        KbCommand::Keygen { key } => keygen(&key),
        #[cfg(feature = "publish")]
        KbCommand::Pack {
            dir,
            output,
            version,
            skip_smoke,
        } => {
            let b = super::publish::pack(&dir, version.as_deref(), std::time::SystemTime::now())
                .map_err(|e| e.to_string())?;
            let smoke = smoke(&b, cfg);
            if let (Err(e), false) = (&smoke, skip_smoke) {
                return Err(format!("{e} (not written; --skip-smoke writes it anyway)"));
            }
            write(&output, &b.to_bytes())?;
            Ok(format!(
                "{}: version {}, {} files, content {}, smoke {}; unsigned: `copilot-edge kb sign {} --key KEYFILE`\n",
                output.display(),
                b.manifest.version,
                b.manifest.files.len(),
                b.manifest.content_hash,
                smoke.map_or_else(|e| format!("FAILED ({e})"), |n| format!("{n} passed")),
                output.display()
            ))
        }
        #[cfg(feature = "publish")]
        KbCommand::Sign { file, key } => {
            let mut b = Bundle::read(&file).map_err(|e| e.to_string())?;
            let key = super::publish::read_private_key(&key).map_err(|e| e.to_string())?;
            b.sign(&key);
            write(&file, &b.to_bytes())?;
            Ok(format!(
                "{}: signed ({} signature(s))\n",
                file.display(),
                b.signatures.len()
            ))
        }
        KbCommand::Verify { file, public_keys } => {
            let keys = if public_keys.is_empty() {
                cfg.kb.public_keys.clone()
            } else {
                public_keys
            };
            let b = Bundle::read(&file).map_err(|e| e.to_string())?;
            let signer = b.verify(&keys).map_err(|e| e.to_string())?;
            let n = smoke(&b, cfg)?;
            Ok(format!(
                "{}: ok — version {}, content {}, signed by {signer}, {n} smoke question(s) passed\n",
                file.display(),
                b.manifest.version,
                b.manifest.content_hash
            ))
        }
        KbCommand::Show { file } => {
            let path = file.unwrap_or_else(|| cfg.kb.dir.join(CURRENT));
            let b = Bundle::read(&path).map_err(|e| e.to_string())?;
            Ok(show(&path, &b))
        }
        KbCommand::Rollback => {
            let (back, from) = Store::new(&cfg.kb.dir)
                .rollback()
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "rolled back from {} ({}) to {} ({}); the running agent follows within seconds\n",
                from.manifest.version,
                from.short_hash(),
                back.manifest.version,
                back.short_hash()
            ))
        }
    }
}

/// Builds the bundle's engine with `cfg`'s settings and runs its smoke questions.
fn smoke(b: &Bundle, cfg: &Config) -> Result<usize, String> {
    let k = b.knowledge().map_err(|e| e.to_string())?;
    let engine = DiagnoseEngine::build(k, crate::app::engine_settings(cfg));
    bundle::smoke(&engine, &b.manifest.smoke).map_err(|e| e.to_string())?;
    Ok(b.manifest.smoke.len())
}

#[cfg(feature = "publish")]
fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::fsutil::write_atomic(path, bytes, 0o644).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(feature = "publish")]
fn keygen(path: &Path) -> Result<String, String> {
    if path.exists() {
        return Err(format!("{} exists; not overwritten", path.display()));
    }
    let (private, public) = super::publish::keygen();
    crate::fsutil::write_atomic(path, format!("{private}\n").as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    write(Path::new(&pub_path), format!("{public}\n").as_bytes())?;
    eprintln!(
        "private key {} (keep it off the gateways), public key {}; put the public key in kb.public_keys:",
        path.display(),
        Path::new(&pub_path).display()
    );
    Ok(format!("{public}\n"))
}

fn show(path: &Path, b: &Bundle) -> String {
    let m = &b.manifest;
    let mut o = String::new();
    let _ = writeln!(o, "bundle   {}", path.display());
    let _ = writeln!(o, "version  {}", m.version);
    let _ = writeln!(o, "content  {}", m.content_hash);
    let _ = writeln!(o, "created  {}", m.created);
    let _ = writeln!(o, "files    {}", m.files.len());
    for f in &m.files {
        let _ = writeln!(o, "  {:>8}  {}", f.bytes, f.path);
    }
    match &m.target {
        None => o.push_str("target   every gateway\n"),
        Some(t) => {
            let _ = writeln!(
                o,
                "target   sites {:?}, gateways {:?}, percent {}",
                t.sites,
                t.gateways,
                t.percent.map_or("all".to_string(), |p| p.to_string())
            );
        }
    }
    let _ = writeln!(o, "smoke    {}", m.smoke.len());
    for s in &m.smoke {
        let _ = writeln!(o, "  {:?} -> {}", s.question, s.expect);
    }
    let _ = writeln!(o, "signers  {}", b.signatures.len());
    for s in &b.signatures {
        let _ = writeln!(o, "  {}", s.key);
    }
    o
}
