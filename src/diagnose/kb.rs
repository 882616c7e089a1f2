//! The knowledge base: SOP documents in Markdown with a small front-matter header.
//!
//! ```text
//! ---
//! id: SOP-HYD-001
//! title: Hydraulic press excessive vibration
//! equipment: hydraulic press, press
//! symptoms: vibration, noise
//! defects: misalignment, loose mounting bolts
//! evidence: cracked welds on the frame, parts out of tolerance   (optional: consequences)
//! ---
//! Scope paragraph.
//! ## Safety
//! - bullet
//! ## Steps
//! 1. step
//! ## Escalate
//! - bullet
//! ```
//! Parsing is strict about the header (a document without `id`, `title` or steps is rejected with
//! its file name) and lenient about the prose. Loaded once at start; immutable afterwards.

use std::path::Path;

/// One SOP document.
#[derive(Debug, Clone)]
pub struct Document {
    /// The `id:` header, e.g. `SOP-HYD-001`; cited as `[ID step n]`.
    pub id: String,
    /// The `title:` header.
    pub title: String,
    /// The `equipment:` header: equipment names the document covers, comma-separated in the file.
    pub equipment: Vec<String>,
    /// The `symptoms:` header: what a technician observes.
    pub symptoms: Vec<String>,
    /// The `defects:` header: the faults the document addresses.
    pub defects: Vec<String>,
    /// Consequences a person may report instead of the fault itself (a puddle that keeps
    /// coming back, a higher energy bill, rubber dust under a belt, complaints from QA): the
    /// `evidence:` header. Searched like the other header fields.
    pub evidence: Vec<String>,
    /// The scope paragraph(s).
    pub summary: String,
    /// The `## Safety` bullets.
    pub safety: Vec<String>,
    /// Numbered steps, without their numbers.
    pub steps: Vec<String>,
    /// The `## Escalate` bullets: whom to call when the steps do not help.
    pub escalate: Vec<String>,
    /// Translations from `<name>.<language>.md` files beside the document.
    pub translations: Vec<Translation>,
}

/// A document's text in another language: same id, same number of steps (so `[ID step n]`
/// citations point at the same step in every language).
#[derive(Debug, Clone)]
pub struct Translation {
    /// Language code from the file name (`sop-conv-001.de.md` → `de`).
    pub language: String,
    /// The translated title.
    pub title: String,
    /// The translated `## Safety` bullets.
    pub safety: Vec<String>,
    /// The translated steps, as many as the original's.
    pub steps: Vec<String>,
}

impl Document {
    /// The document as Markdown, rebuilt from what the engine parsed: front matter, title,
    /// scope, safety, numbered steps and escalation. Step n here is the `[ID step n]` that
    /// answers cite.
    pub fn to_markdown(&self) -> String {
        let mut m = String::with_capacity(1024);
        m.push_str("---\n");
        for (k, v) in [
            ("id", self.id.clone()),
            ("equipment", self.equipment.join(", ")),
            ("symptoms", self.symptoms.join(", ")),
            ("defects", self.defects.join(", ")),
            ("evidence", self.evidence.join(", ")),
        ] {
            if !v.is_empty() {
                m.push_str(&format!("{k}: {v}\n"));
            }
        }
        m.push_str(&format!("---\n\n# {}\n\n", self.title));
        if !self.summary.is_empty() {
            m.push_str(&self.summary);
            m.push_str("\n\n");
        }
        let list = |m: &mut String, heading: &str, items: &[String], numbered: bool| {
            if items.is_empty() {
                return;
            }
            m.push_str(&format!("## {heading}\n\n"));
            for (i, s) in items.iter().enumerate() {
                if numbered {
                    m.push_str(&format!("{}. {s}\n", i + 1));
                } else {
                    m.push_str(&format!("- {s}\n"));
                }
            }
            m.push('\n');
        };
        list(&mut m, "Safety", &self.safety, false);
        list(&mut m, "Steps", &self.steps, true);
        list(&mut m, "Escalate", &self.escalate, false);
        m
    }

    /// The translation into `language`, if the knowledge base has one.
    pub fn translation(&self, language: &str) -> Option<&Translation> {
        self.translations.iter().find(|t| t.language == language)
    }
}

/// The language of a translation file name (`x.de.md` → `de`), if it is one.
pub fn translation_language(file: &str) -> Option<&str> {
    let stem = file.strip_suffix(".md")?;
    let (_, lang) = stem.rsplit_once('.')?;
    (lang.len() >= 2 && lang.len() <= 3 && lang.bytes().all(|b| b.is_ascii_lowercase()))
        .then_some(lang)
}

/// Why a knowledge base could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KbError {
    /// A document is malformed.
    #[error("{file}: {message}")]
    Document {
        /// File name of the document.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// The folder could not be read.
    #[error("cannot read knowledge base {path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Two documents share an id.
    #[error("duplicate document id {0}")]
    Duplicate(String),
    /// No documents at all.
    #[error("the knowledge base has no documents")]
    Empty,
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses one document; `file` is only used in error messages.
pub fn parse_document(file: &str, text: &str) -> Result<Document, KbError> {
    let err = |m: &str| KbError::Document {
        file: file.to_string(),
        message: m.to_string(),
    };
    let text = text.replace("\r\n", "\n");
    let body = text
        .trim_start()
        .strip_prefix("---\n")
        .ok_or_else(|| err("missing front matter (--- header)"))?;
    let end = body
        .find("\n---")
        .ok_or_else(|| err("front matter is not closed with ---"))?;
    let (header, rest) = (&body[..end], &body[end + 4..]);
    let (mut id, mut title) = (String::new(), String::new());
    let (mut equipment, mut symptoms, mut defects, mut evidence) = (vec![], vec![], vec![], vec![]);
    for line in header.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| err(&format!("header line without `key:`: {line}")))?;
        let v = v.trim();
        match k.trim() {
            "id" => id = v.to_string(),
            "title" => title = v.to_string(),
            "equipment" => equipment = list(v),
            "symptoms" => symptoms = list(v),
            "defects" => defects = list(v),
            "evidence" => evidence = list(v),
            other => return Err(err(&format!("unknown header key `{other}`"))),
        }
    }
    if id.is_empty() || title.is_empty() {
        return Err(err("header needs both id and title"));
    }
    let (mut summary, mut safety, mut steps, mut escalate) =
        (String::new(), vec![], vec![], vec![]);
    let mut section = "";
    for line in rest.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("## ") {
            section = match h.trim().to_ascii_lowercase().as_str() {
                "safety" => "safety",
                "steps" => "steps",
                "escalate" => "escalate",
                _ => "other",
            };
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match section {
            "" => {
                if !summary.is_empty() {
                    summary.push(' ');
                }
                summary.push_str(t);
            }
            "safety" => safety.push(t.trim_start_matches("- ").to_string()),
            "escalate" => escalate.push(t.trim_start_matches("- ").to_string()),
            "steps" => {
                let digits = t.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 && t[digits..].starts_with(". ") {
                    steps.push(t[digits + 2..].trim().to_string());
                } else if let Some(last) = steps.last_mut() {
                    // A wrapped continuation line of the previous step.
                    last.push(' ');
                    last.push_str(t);
                }
            }
            _ => {}
        }
    }
    if steps.is_empty() {
        return Err(err("no numbered steps under `## Steps`"));
    }
    Ok(Document {
        id,
        title,
        equipment,
        symptoms,
        defects,
        evidence,
        summary,
        safety,
        steps,
        escalate,
        translations: Vec::new(),
    })
}

/// Parses a set of `(file name, text)` documents, rejecting duplicates and an empty set.
/// Files named `<name>.<language>.md` are translations of the document with the same id.
pub fn parse_all<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Document>, KbError> {
    let mut docs: Vec<Document> = Vec::new();
    let mut translations = Vec::new();
    for (name, text) in files {
        let d = parse_document(name, text)?;
        if let Some(lang) = translation_language(name) {
            translations.push((name, lang.to_string(), d));
            continue;
        }
        if docs.iter().any(|o| o.id == d.id) {
            return Err(KbError::Duplicate(d.id));
        }
        docs.push(d);
    }
    for (name, language, t) in translations {
        let err = |message: String| KbError::Document {
            file: name.to_string(),
            message,
        };
        let Some(d) = docs.iter_mut().find(|d| d.id == t.id) else {
            return Err(err(format!("translation of unknown document id {}", t.id)));
        };
        if t.steps.len() != d.steps.len() {
            return Err(err(format!(
                "{} steps, the original {} has {}: a translation keeps the step numbers",
                t.steps.len(),
                d.id,
                d.steps.len()
            )));
        }
        if d.translation(&language).is_some() {
            return Err(err(format!("second {language} translation of {}", d.id)));
        }
        d.translations.push(Translation {
            language,
            title: t.title,
            safety: t.safety,
            steps: t.steps,
        });
    }
    if docs.is_empty() {
        return Err(KbError::Empty);
    }
    Ok(docs)
}

/// Loads every `*.md` file of a folder.
pub fn load_dir(dir: &Path) -> Result<Vec<Document>, KbError> {
    let io = |source| KbError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            files.push((
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                text,
            ));
        }
    }
    files.sort();
    parse_all(files.iter().map(|(n, t)| (n.as_str(), t.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "---\nid: SOP-X-001\ntitle: Thing\nequipment: pump, centrifugal pump\nsymptoms: noise\ndefects: cavitation\n---\nScope.\n## Safety\n- Lock out.\n## Steps\n1. First.\n2. Second\n   continued.\n## Escalate\n- Call OEM.\n";

    #[test]
    fn parses_sections() {
        let d = parse_document("x.md", DOC).unwrap();
        assert_eq!(d.id, "SOP-X-001");
        assert_eq!(d.equipment, vec!["pump", "centrifugal pump"]);
        assert_eq!(d.steps, vec!["First.", "Second continued."]);
        assert_eq!(d.safety, vec!["Lock out."]);
        assert_eq!(d.escalate, vec!["Call OEM."]);
        assert_eq!(d.summary, "Scope.");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "no header",
            "---\nid: A\n---\n## Steps\n1. x",
            "---\nid: A\ntitle: T\n---\nno steps",
            "---\nid: A\ntitle: T\nfoo: 1\n---\n## Steps\n1. x",
        ] {
            assert!(parse_document("b.md", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn translations_attach_to_their_document() {
        let de = DOC
            .replace("title: Thing", "title: Ding")
            .replace("1. First.", "1. Erstens.")
            .replace("Lock out.", "Freischalten.");
        let docs = parse_all([("x.md", DOC), ("x.de.md", de.as_str())]).unwrap();
        assert_eq!(docs.len(), 1);
        let t = docs[0].translation("de").unwrap();
        assert_eq!(t.title, "Ding");
        assert_eq!(t.steps[0], "Erstens.");
        assert_eq!(t.safety, vec!["Freischalten."]);
        let short = "---\nid: SOP-X-001\ntitle: Ding\n---\n## Steps\n1. Nur einer.\n";
        let e = parse_all([("x.md", DOC), ("x.de.md", short)]).unwrap_err();
        assert!(e.to_string().contains("step numbers"), "{e}");
        let orphan = parse_all([
            ("x.md", DOC),
            ("y.es.md", &DOC.replace("SOP-X-001", "SOP-Y")),
        ]);
        assert!(orphan.unwrap_err().to_string().contains("unknown document"));
        assert_eq!(translation_language("sop-a-001.md"), None);
        assert_eq!(translation_language("sop-a-001.es.md"), Some("es"));
    }

    #[test]
    fn duplicates_and_empty_rejected() {
        assert!(matches!(
            parse_all([("a", DOC), ("b", DOC)]),
            Err(KbError::Duplicate(_))
        ));
        assert!(matches!(parse_all([]), Err(KbError::Empty)));
    }
}
