//! Embeds the sample knowledge base (`config/knowledge/*.md`), the lexicon
//! (`config/lexicon/*.toml`) and the console pages (`src/console/web/*`) gzip-compressed, so the
//! agent's defaults work from any directory at a third of the files' size: writes each file's
//! gzip to `$OUT_DIR/embedded/` and generates `$OUT_DIR/embedded_kb.rs`,
//! `$OUT_DIR/embedded_lexicon.rs` (one `(file name, gzip)` per file) and
//! `$OUT_DIR/embedded_web.rs` (`(file name, gzip, ETag)`).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "src/compress.rs"]
mod compress;

/// The files of `dir` ending in `.ext` (any file when `ext` is empty), sorted.
fn files_of(dir: &str, ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(dir);
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file() && (ext.is_empty() || p.extension().is_some_and(|e| e == ext))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Writes the gzip of `f` under `$OUT_DIR/embedded/<prefix>-<name>.gz`; returns its name, the
/// absolute path of the gzip and the original bytes. TOML files lose their whole-line comments
/// first (notes for editors, a sixth of the lexicon; the files in the repository keep them).
fn compress_file(f: &Path, prefix: &str) -> (String, String, Vec<u8>) {
    println!("cargo:rerun-if-changed={}", f.display());
    let name = f
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 file name")
        .to_string();
    let mut data = std::fs::read(f).expect("read embedded file");
    if name.ends_with(".toml") {
        let text = String::from_utf8(data).expect("utf-8 TOML");
        data = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| [l, "\n"])
            .collect::<String>()
            .into_bytes();
    }
    let out_dir = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded");
    std::fs::create_dir_all(&out_dir).expect("create $OUT_DIR/embedded");
    let gz = out_dir.join(format!("{prefix}-{name}.gz"));
    std::fs::write(&gz, compress::gzip(&data, 9)).expect("write gzip");
    (name, gz.display().to_string(), data)
}

/// FNV-1a of the page, for its ETag.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn embed(dir: &str, ext: &str, konst: &str, dest: &str) {
    let mut out = format!(
        "/// The files of `{dir}/*.{ext}` built in: (file name, gzip-compressed contents).\npub const {konst}: &crate::compress::EmbeddedFiles = &[\n"
    );
    for f in files_of(dir, ext) {
        let (name, gz, _) = compress_file(&f, konst);
        writeln!(out, "    ({name:?}, include_bytes!({gz:?})),").expect("write to string");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join(dest);
    std::fs::write(dest, out).expect("write embedded file list");
}

fn embed_web() {
    let mut out = String::from("/// (file name, gzip, ETag) of every page and asset.\n");
    out.push_str("pub const WEB_FILES: &[(&str, &[u8], &str)] = &[\n");
    for f in files_of("src/console/web", "") {
        let (name, gz, data) = compress_file(&f, "web");
        let etag = format!("W/\"{:016x}\"", fnv1a(&data));
        writeln!(out, "    ({name:?}, include_bytes!({gz:?}), {etag:?}),")
            .expect("write to string");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded_web.rs");
    std::fs::write(dest, out).expect("write embedded web list");
}

fn main() {
    // The target triple, for copilot_edge_build_info{target}.
    println!(
        "cargo:rustc-env=COPILOT_EDGE_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!("cargo:rerun-if-changed=config/assets.csv");
    embed("config/knowledge", "md", "EMBEDDED_KB", "embedded_kb.rs");
    embed(
        "config/lexicon",
        "toml",
        "EMBEDDED_LEXICON",
        "embedded_lexicon.rs",
    );
    embed_web();
}
