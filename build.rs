//! Embeds the sample knowledge base (`config/knowledge/*.md`) and the lexicon
//! (`config/lexicon/*.toml`) so the agent's defaults work from any directory: generates
//! `$OUT_DIR/embedded_kb.rs` and `$OUT_DIR/embedded_lexicon.rs`, one `(file name, text)` per file.
use std::fmt::Write as _;

fn embed(dir: &str, ext: &str, konst: &str, dest: &str) {
    let dir = std::path::Path::new(dir);
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = format!("pub const {konst}: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let abs = std::fs::canonicalize(f).expect("embedded file path");
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name");
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            abs.display().to_string()
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join(dest);
    std::fs::write(dest, out).expect("write embedded file list");
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
}
