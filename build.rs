//! Embeds the sample knowledge base (`config/knowledge/*.md`) so the agent's defaults work from
//! any directory: generates `$OUT_DIR/embedded_kb.rs` with one `(file name, text)` per document.
use std::fmt::Write as _;

fn main() {
    // The target triple, for copilot_edge_build_info{target}.
    println!(
        "cargo:rustc-env=COPILOT_EDGE_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    let dir = std::path::Path::new("config/knowledge");
    println!("cargo:rerun-if-changed=config/knowledge");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::from("pub const EMBEDDED_KB: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let abs = std::fs::canonicalize(f).expect("knowledge file path");
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
    let dest =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded_kb.rs");
    std::fs::write(dest, out).expect("write embedded_kb.rs");
}
