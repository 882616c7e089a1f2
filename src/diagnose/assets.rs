//! The asset register: which machine an `equipment_id` is. A CSV file
//! (`id,class,make,model,line,location`, `#` comments) or a TOML file (`[[asset]]` tables with
//! the same keys). `id` is an exact id or a pattern with `*` wildcards (`press-*`); an exact id
//! wins over patterns, and among patterns the one with the most literal characters wins. Ids
//! match case-insensitively. The class is matched against the SOPs' `equipment:` header.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One register entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    /// An exact equipment id or a pattern with `*` wildcards (`press-*`).
    pub id: String,
    /// The equipment class, matched against the SOPs' `equipment:` header.
    pub class: String,
    /// Manufacturer; empty = not given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub make: String,
    /// Model designation; empty = not given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// Production line; empty = not given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub line: String,
    /// Where the machine stands (hall, bay); empty = not given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
}

/// Why a register could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// One line (CSV) or entry (TOML) of the register is invalid.
    #[error("{file} line {line}: {message}")]
    Line {
        /// The register file.
        file: String,
        /// 1-based line number (CSV) or entry number (TOML).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The file as a whole cannot be used (unreadable, bad TOML, no CSV header, wrong type).
    #[error("{file}: {message}")]
    File {
        /// The register file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The register.
#[derive(Debug, Clone, Default)]
pub struct AssetRegister {
    /// Exact ids (lower-cased) → entry.
    exact: rustc_hash::FxHashMap<String, Asset>,
    /// Patterns, most specific first: (lower-cased pattern parts split at `*`, entry).
    patterns: Vec<(Vec<String>, Asset)>,
}

impl AssetRegister {
    /// The assets listed by exact id, sorted by id (patterns are not assets one can pick).
    pub fn listed(&self) -> Vec<&Asset> {
        let mut v: Vec<&Asset> = self.exact.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// The sample register compiled into the binary (`config/assets.csv`).
pub const EMBEDDED_ASSETS: &str = include_str!("../../config/assets.csv");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    asset: Vec<Asset>,
}

/// Whether `s` matches a pattern given as its parts split at `*` (the asset register's ids and
/// a knowledge bundle's gateway targets).
pub(crate) fn glob_match(parts: &[String], s: &str) -> bool {
    // parts = pattern split at '*': first must be a prefix, last a suffix, middle in order.
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return first == s;
    }
    // Both ends checked before slicing between them, so the cut is at character boundaries.
    if !s.starts_with(first.as_str())
        || !s.ends_with(last.as_str())
        || s.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid.as_str()) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl AssetRegister {
    fn from_assets(file: &str, assets: Vec<(usize, Asset)>) -> Result<AssetRegister, AssetError> {
        let mut r = AssetRegister::default();
        for (line, a) in assets {
            let bad = |message: String| AssetError::Line {
                file: file.to_string(),
                line,
                message,
            };
            let id = a.id.trim().to_lowercase();
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(format!("`id` {:?} is empty or has spaces", a.id)));
            }
            if a.class.trim().is_empty() {
                return Err(bad(format!("asset {:?} has no `class`", a.id)));
            }
            let mut a = a;
            a.class = a.class.trim().to_lowercase();
            if id.contains('*') {
                if id.chars().all(|c| c == '*') {
                    return Err(bad(format!("pattern {:?} matches every id", a.id)));
                }
                let parts = id.split('*').map(str::to_string).collect();
                r.patterns.push((parts, a));
            } else if r.exact.insert(id, a.clone()).is_some() {
                return Err(bad(format!("asset id {:?} is listed twice", a.id)));
            }
        }
        // Most literal characters first; stable, so file order breaks ties.
        r.patterns
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.iter().map(String::len).sum::<usize>()));
        Ok(r)
    }

    /// Parses CSV text (`file` names it in errors).
    pub fn parse_csv(file: &str, text: &str) -> Result<AssetRegister, AssetError> {
        let mut header: Option<Vec<String>> = None;
        let mut assets = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<String> = line.split(',').map(|f| f.trim().to_string()).collect();
            let err = |message: String| AssetError::Line {
                file: file.to_string(),
                line: n + 1,
                message,
            };
            let Some(h) = &header else {
                for f in &fields {
                    if !["id", "class", "make", "model", "line", "location"].contains(&f.as_str()) {
                        return Err(err(format!("unknown column `{f}` in the header (expected id,class,make,model,line,location)")));
                    }
                }
                if !fields.iter().any(|f| f == "id") || !fields.iter().any(|f| f == "class") {
                    return Err(err("the header needs at least `id` and `class`".into()));
                }
                header = Some(fields);
                continue;
            };
            if fields.len() != h.len() {
                return Err(err(format!(
                    "{} fields, the header has {} (commas inside values are not supported)",
                    fields.len(),
                    h.len()
                )));
            }
            let get = |k: &str| {
                h.iter()
                    .position(|c| c == k)
                    .map(|i| fields[i].clone())
                    .unwrap_or_default()
            };
            assets.push((
                n + 1,
                Asset {
                    id: get("id"),
                    class: get("class"),
                    make: get("make"),
                    model: get("model"),
                    line: get("line"),
                    location: get("location"),
                },
            ));
        }
        if header.is_none() {
            return Err(AssetError::File {
                file: file.to_string(),
                message: "no header line (id,class,...)".into(),
            });
        }
        Self::from_assets(file, assets)
    }

    /// Parses TOML text (`[[asset]]` tables).
    pub fn parse_toml(file: &str, text: &str) -> Result<AssetRegister, AssetError> {
        let t: TomlFile = toml::from_str(text).map_err(|e| AssetError::File {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        Self::from_assets(
            file,
            t.asset
                .into_iter()
                .enumerate()
                .map(|(i, a)| (i + 1, a))
                .collect(),
        )
    }

    /// Loads a `.csv` or `.toml` file.
    pub fn load(path: &Path) -> Result<AssetRegister, AssetError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AssetError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::parse_toml(&file, &text),
            Some("csv") => Self::parse_csv(&file, &text),
            _ => Err(AssetError::File {
                file,
                message: "the asset register must be a .csv or .toml file".into(),
            }),
        }
    }

    /// The embedded sample.
    pub fn embedded() -> AssetRegister {
        Self::parse_csv("config/assets.csv", EMBEDDED_ASSETS).expect("embedded asset register")
    }

    /// Number of exact ids and patterns.
    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    /// Whether the register is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry (exact ids, then patterns).
    pub fn entries(&self) -> impl Iterator<Item = &Asset> {
        self.exact
            .values()
            .chain(self.patterns.iter().map(|(_, a)| a))
    }

    /// The entry for an equipment id, if the register knows it.
    pub fn resolve(&self, equipment_id: &str) -> Option<&Asset> {
        let id = equipment_id.trim().to_lowercase();
        if let Some(a) = self.exact.get(&id) {
            return Some(a);
        }
        self.patterns
            .iter()
            .find(|(p, _)| glob_match(p, &id))
            .map(|(_, a)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_pattern_and_longest_pattern_wins() {
        let r = AssetRegister::parse_csv(
            "t.csv",
            "# c\nid,class,make\npress-12,hydraulic press,Schuler\npress-*,press,\npress-1*,servo press,\n*-pump,pump,\n",
        )
        .unwrap();
        assert_eq!(r.resolve("PRESS-12").unwrap().make, "Schuler");
        assert_eq!(r.resolve("press-15").unwrap().class, "servo press");
        assert_eq!(r.resolve("press-3").unwrap().class, "press");
        assert_eq!(r.resolve("cool-pump").unwrap().class, "pump");
        assert!(r.resolve("lathe-1").is_none());
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, want) in [
            ("id,class\npress-1\n", "line 2"),
            ("id,class,colour\n", "unknown column"),
            ("id,class\na b,press\n", "spaces"),
            ("id,class\np1,press\np1,press\n", "twice"),
            ("id,class\n*,press\n", "every id"),
            ("id,class\np1,\n", "no `class`"),
        ] {
            let e = AssetRegister::parse_csv("t.csv", text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = AssetRegister::parse_toml("t.toml", "[[asset]]\nid = \"x\"\nclas = \"y\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml"), "{e}");
    }

    #[test]
    fn toml_form_and_embedded_sample() {
        let r = AssetRegister::parse_toml(
            "t.toml",
            "[[asset]]\nid = \"pump-*\"\nclass = \"Centrifugal Pump\"\n",
        )
        .unwrap();
        assert_eq!(r.resolve("pump-9").unwrap().class, "centrifugal pump");
        let e = AssetRegister::embedded();
        assert_eq!(e.resolve("press-12").unwrap().make, "Schuler");
        assert_eq!(e.resolve("forklift-2").unwrap().class, "forklift");
    }
}
