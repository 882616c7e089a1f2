//! The lexicon: per-language data files (`config/lexicon/*.toml`, embedded; a plant adds or
//! extends languages with files of the same schema in `paths.lexicon_dir`, no rebuild). Each
//! file names its language, its Snowball stemmer, its function words (for detection and as stop
//! words), negators, "works fine" words, clause-break words, out-of-scope objects, and a `[terms]`
//! table from what technicians type (abbreviations, jargon, indirect phrasings, or a foreign
//! word) to the English words the SOPs use. See `config/lexicon/README.md`.
//!
//! Nothing here knows a particular word: every list comes from the data.

use std::collections::BTreeMap;
use std::path::Path;

use rust_stemmers::{Algorithm, Stemmer};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Deserialize;

use super::text::{fold, tokens};

include!(concat!(env!("OUT_DIR"), "/embedded_lexicon.rs"));

/// Marker for a negation in symptom streams ("motor will not start" → motor ¬ start).
pub const NOT: &str = "¬";

/// Longest lexicon phrase, in words.
pub const MAX_PHRASE: usize = 6;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LangFile {
    language: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    stemmer: Option<String>,
    #[serde(default)]
    letters: String,
    #[serde(default)]
    compounds: Option<bool>,
    #[serde(default)]
    stop_words: Vec<String>,
    #[serde(default)]
    negators: Vec<String>,
    #[serde(default)]
    fine_words: Vec<String>,
    #[serde(default)]
    comparison_words: Vec<String>,
    #[serde(default)]
    clause_breaks: Vec<String>,
    #[serde(default)]
    fault_words: Vec<String>,
    #[serde(default)]
    out_of_scope: Vec<String>,
    #[serde(default)]
    out_of_scope_settings: Vec<String>,
    #[serde(default)]
    non_repair: Vec<String>,
    #[serde(default)]
    question_words: Vec<String>,
    #[serde(default)]
    uncovered_equipment: Vec<String>,
    #[serde(default)]
    detect_only: Option<bool>,
    #[serde(default)]
    terms: BTreeMap<String, String>,
}

/// Why a lexicon could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    /// A lexicon file does not parse or breaks the schema (or no English file was given).
    #[error("{file}: {message}")]
    File {
        /// The file's name (`lexicon` when the set as a whole lacks English).
        file: String,
        /// What is wrong, naming the key or entry.
        message: String,
    },
    /// The lexicon directory (or one of its files) could not be read.
    #[error("cannot read lexicon directory {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn algorithm(name: &str) -> Result<Option<Algorithm>, String> {
    Ok(Some(match name {
        "none" | "" => return Ok(None),
        "arabic" => Algorithm::Arabic,
        "danish" => Algorithm::Danish,
        "dutch" => Algorithm::Dutch,
        "english" => Algorithm::English,
        "finnish" => Algorithm::Finnish,
        "french" => Algorithm::French,
        "german" => Algorithm::German,
        "greek" => Algorithm::Greek,
        "hungarian" => Algorithm::Hungarian,
        "italian" => Algorithm::Italian,
        "norwegian" => Algorithm::Norwegian,
        "portuguese" => Algorithm::Portuguese,
        "romanian" => Algorithm::Romanian,
        "russian" => Algorithm::Russian,
        "spanish" => Algorithm::Spanish,
        "swedish" => Algorithm::Swedish,
        "tamil" => Algorithm::Tamil,
        "turkish" => Algorithm::Turkish,
        other => return Err(format!("unknown stemmer `{other}` (a Snowball algorithm name such as english, german, spanish, french, italian, portuguese, or none)")),
    }))
}

/// One `[terms]` entry or out-of-scope object, as stems of its words.
#[derive(Debug, Clone)]
pub struct Phrase {
    /// The key as written in the file (for explanations).
    pub key: String,
    /// Stems of the key's words, in the language's stemmer.
    pub stems: Box<[Box<str>]>,
    /// The English value (empty for out-of-scope objects, [`SETTING`] for settings).
    pub value: String,
    /// Length in bytes of the key's first word, folded (capped at 255): a much shorter typed
    /// word with the same stem is another word (see the analyzer).
    pub first_len: u8,
}

/// Folded byte length of a key's first word (capped at 255).
fn first_len(key: &str) -> u8 {
    tokens(key)
        .first()
        .map_or(0, |t| t.text.len().min(255) as u8)
}

/// A table of phrases looked up by the stem of their first word, longest phrases first.
#[derive(Debug, Default)]
pub struct PhraseTable {
    /// Every phrase, in file order; a phrase id is its index here.
    pub list: Vec<Phrase>,
    by_first: HashMap<String, Vec<u32>>,
}

impl PhraseTable {
    fn rebuild(&mut self) {
        self.by_first.clear();
        let mut order: Vec<u32> = (0..self.list.len() as u32).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.list[i as usize].stems.len()));
        for i in order {
            let p = &self.list[i as usize];
            self.by_first
                .entry(p.stems[0].to_string())
                .or_default()
                .push(i);
        }
    }

    /// The longest phrase starting at `stems[0]`, as (phrase id, words consumed).
    pub fn longest_at(&self, stems: &[&str]) -> Option<(u32, usize)> {
        let first = stems.first()?;
        for &id in self.by_first.get(*first)? {
            let p = &self.list[id as usize];
            if p.stems.len() <= stems.len() && p.stems.iter().zip(stems).all(|(a, b)| &**a == *b) {
                return Some((id, p.stems.len()));
            }
        }
        None
    }

    /// Whether a single word (by stem) is a key.
    pub fn has_word(&self, stem: &str) -> bool {
        self.by_first
            .get(stem)
            .is_some_and(|ids| ids.iter().any(|&i| self.list[i as usize].stems.len() == 1))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// One language.
pub struct Language {
    /// The `language` key: ISO 639-1 code, lower-cased (`en`, `de`).
    pub code: String,
    /// The `name` key: the language's own name, shown when it is only detected (`Deutsch`).
    pub name: String,
    stemmer_name: String,
    stemmer: Option<Stemmer>,
    /// Characters typical of the language (`äöüß`), counted as evidence before folding.
    pub letters: Vec<char>,
    /// Split unknown compound words into known keys (German).
    pub compounds: bool,
    /// `stop_words`: function words (folded), for detection and dropped from queries.
    pub stop: HashSet<String>,
    /// `negators`: words that negate what follows in the clause (`not`, `nicht`).
    pub negators: HashSet<String>,
    /// `fine_words`: words that say something works (`fine`, `gut`).
    pub fine: HashSet<String>,
    /// `comparison_words`: a fine word right after one of these is a comparison (`than`, `als`).
    pub comparison: HashSet<String>,
    /// `clause_breaks`: words that start a new clause (`but`, `aber`).
    pub breaks: HashSet<String>,
    /// Fault words as written (folded); turned into English stems by the engine.
    pub fault: Vec<String>,
    /// `[terms]`: what technicians type → the English words the SOPs use.
    pub terms: PhraseTable,
    /// `out_of_scope` and `out_of_scope_settings`: non-plant objects and settings.
    pub out_of_scope: PhraseTable,
    /// Phrases that ask something other than a repair (`how many`, `who is on call`,
    /// `order a spare`): with no fault word, the question is not a fault report.
    pub non_repair: PhraseTable,
    /// Interrogatives (`what`, `wie viele`): a text that opens with one and names no fault asks
    /// for something else.
    pub question: PhraseTable,
    /// Machines and systems that no SOP covers (`diesel generator`, `forklift`): named before
    /// (or without) covered equipment, the answer says there is no SOP for them.
    pub uncovered: PhraseTable,
    /// A language known only well enough to be recognised (stop words, letters): a question in
    /// it is answered with "language not supported", naming it.
    pub detect_only: bool,
    /// Single-word keys by their folded surface form → phrase id (compound parts).
    pub surface: HashMap<String, u32>,
}

impl Language {
    /// The language's stem of a folded word (the word itself without a stemmer).
    pub fn stem(&self, word: &str) -> String {
        match &self.stemmer {
            Some(s) => s.stem(word).into_owned(),
            None => word.to_string(),
        }
    }

    fn phrase_stems(&self, text: &str) -> Box<[Box<str>]> {
        tokens(text)
            .iter()
            .map(|t| self.stem(&t.text).into_boxed_str())
            .collect()
    }

    fn new(f: &LangFile, file: &str) -> Result<Language, LexiconError> {
        let err = |message: String| LexiconError::File {
            file: file.to_string(),
            message,
        };
        let code = f.language.trim().to_lowercase();
        if code.is_empty() || code.len() > 8 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(err(format!(
                "`language` {:?} is not a language code such as \"de\"",
                f.language
            )));
        }
        let stemmer_name = f.stemmer.clone().unwrap_or_else(|| "none".into());
        let alg = algorithm(&stemmer_name).map_err(err)?;
        let mut l = Language {
            name: if f.name.is_empty() {
                code.clone()
            } else {
                f.name.clone()
            },
            code,
            stemmer_name,
            stemmer: alg.map(Stemmer::create),
            letters: vec![],
            compounds: false,
            stop: HashSet::default(),
            negators: HashSet::default(),
            fine: HashSet::default(),
            comparison: HashSet::default(),
            breaks: HashSet::default(),
            fault: vec![],
            terms: PhraseTable::default(),
            out_of_scope: PhraseTable::default(),
            non_repair: PhraseTable::default(),
            question: PhraseTable::default(),
            uncovered: PhraseTable::default(),
            detect_only: false,
            surface: HashMap::default(),
        };
        l.extend(f, file)?;
        Ok(l)
    }

    /// Adds a file's entries (same language); later keys replace earlier ones.
    fn extend(&mut self, f: &LangFile, file: &str) -> Result<(), LexiconError> {
        let err = |message: String| LexiconError::File {
            file: file.to_string(),
            message,
        };
        if let Some(s) = &f.stemmer {
            if *s != self.stemmer_name {
                return Err(err(format!(
                    "stemmer `{s}` differs from `{}` already set for language {}",
                    self.stemmer_name, self.code
                )));
            }
        }
        if let Some(c) = f.compounds {
            self.compounds = c;
        }
        if let Some(d) = f.detect_only {
            self.detect_only = d;
        }
        // A file that adds terms makes a detect-only language a real one.
        if !f.terms.is_empty() && f.detect_only.is_none() {
            self.detect_only = false;
        }
        self.letters
            .extend(f.letters.chars().flat_map(char::to_lowercase));
        let word_set = |list: &[String], set: &mut HashSet<String>, key: &str| {
            for w in list {
                let w = fold(w.trim());
                if w.is_empty() || w.contains(char::is_whitespace) {
                    return Err(err(format!("`{key}` entry {w:?} must be one word")));
                }
                set.insert(w);
            }
            Ok(())
        };
        word_set(&f.stop_words, &mut self.stop, "stop_words")?;
        word_set(&f.negators, &mut self.negators, "negators")?;
        word_set(&f.fine_words, &mut self.fine, "fine_words")?;
        word_set(
            &f.comparison_words,
            &mut self.comparison,
            "comparison_words",
        )?;
        word_set(&f.clause_breaks, &mut self.breaks, "clause_breaks")?;
        self.fault
            .extend(f.fault_words.iter().map(|w| fold(w.trim())));
        // Keys with the same stems are one entry (a later one replaces it).
        let mut by_stems: HashMap<Box<[Box<str>]>, usize> = self
            .terms
            .list
            .iter()
            .enumerate()
            .map(|(i, p)| (p.stems.clone(), i))
            .collect();
        for (k, v) in &f.terms {
            let stems = self.phrase_stems(k);
            if stems.is_empty() || stems.len() > MAX_PHRASE {
                return Err(err(format!(
                    "[terms] key {k:?} must have 1 to {MAX_PHRASE} words"
                )));
            }
            if v.trim().is_empty() {
                return Err(err(format!("[terms] {k:?} has an empty value")));
            }
            let phrase = Phrase {
                key: k.clone(),
                stems,
                value: v.trim().to_string(),
                first_len: first_len(k),
            };
            let id = match by_stems.get(&phrase.stems) {
                Some(&i) => {
                    self.terms.list[i] = phrase;
                    i
                }
                None => {
                    by_stems.insert(phrase.stems.clone(), self.terms.list.len());
                    self.terms.list.push(phrase);
                    self.terms.list.len() - 1
                }
            };
            let toks = tokens(k);
            if toks.len() == 1 {
                self.surface.insert(toks[0].text.clone(), id as u32);
            }
        }
        let objects = f.out_of_scope.iter().map(|o| (o, "out_of_scope", ""));
        let settings = f
            .out_of_scope_settings
            .iter()
            .map(|o| (o, "out_of_scope_settings", SETTING));
        for (o, list, value) in objects.chain(settings) {
            let stems = self.phrase_stems(o);
            if stems.is_empty() || stems.len() > MAX_PHRASE {
                return Err(err(format!(
                    "{list} entry {o:?} must have 1 to {MAX_PHRASE} words"
                )));
            }
            self.out_of_scope.list.push(Phrase {
                key: o.clone(),
                stems,
                value: value.to_string(),
                first_len: first_len(o),
            });
        }
        for (list, key, table) in [
            (&f.non_repair, "non_repair", &mut self.non_repair),
            (&f.question_words, "question_words", &mut self.question),
            (
                &f.uncovered_equipment,
                "uncovered_equipment",
                &mut self.uncovered,
            ),
        ] {
            for o in list {
                let stems: Box<[Box<str>]> = tokens(o)
                    .iter()
                    .map(|t| match &self.stemmer {
                        Some(s) => s.stem(&t.text).into_owned().into_boxed_str(),
                        None => t.text.clone().into_boxed_str(),
                    })
                    .collect();
                if stems.is_empty() || stems.len() > MAX_PHRASE {
                    return Err(err(format!(
                        "{key} entry {o:?} must have 1 to {MAX_PHRASE} words"
                    )));
                }
                table.list.push(Phrase {
                    key: o.clone(),
                    stems,
                    value: String::new(),
                    first_len: first_len(o),
                });
            }
            table.rebuild();
        }
        self.terms.rebuild();
        self.out_of_scope.rebuild();
        Ok(())
    }
}

/// The value of an `out_of_scope` phrase that names a setting ("at home", "my car"): it takes
/// the question out of the plant wherever it stands, even after a plant equipment word.
pub const SETTING: &str = "setting";

/// Every language, English (the knowledge base's language) first.
pub struct Lexicon {
    /// Every loaded language; English first.
    pub languages: Vec<Language>,
    /// Names of the files it was built from, for logs.
    pub sources: Vec<String>,
}

impl Lexicon {
    /// Builds a lexicon from `(file name, TOML text)` pairs, in order. A file for a language
    /// already loaded extends it. English must be present.
    pub fn parse<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Lexicon, LexiconError> {
        let mut lex = Lexicon {
            languages: Vec::new(),
            sources: Vec::new(),
        };
        for (name, text) in files {
            lex.add(name, text)?;
        }
        if !lex.languages.first().is_some_and(|l| l.code == "en") {
            return Err(LexiconError::File {
                file: "lexicon".into(),
                message: "no English (language = \"en\") file: the knowledge base's own language needs its stop words and negators".into(),
            });
        }
        Ok(lex)
    }

    fn add(&mut self, name: &str, text: &str) -> Result<(), LexiconError> {
        let f: LangFile = toml::from_str(text).map_err(|e| LexiconError::File {
            file: name.to_string(),
            message: e.to_string().trim().to_string(),
        })?;
        let code = f.language.trim().to_lowercase();
        match self.languages.iter_mut().find(|l| l.code == code) {
            Some(l) => l.extend(&f, name)?,
            None => {
                let l = Language::new(&f, name)?;
                if l.code == "en" {
                    self.languages.insert(0, l);
                } else {
                    self.languages.push(l);
                }
            }
        }
        self.sources.push(name.to_string());
        Ok(())
    }

    /// The embedded lexicon (`config/lexicon/*.toml`).
    pub fn embedded() -> Lexicon {
        let texts = crate::compress::embedded_texts(EMBEDDED_LEXICON);
        Lexicon::parse(texts.iter().map(|(name, text)| (*name, text.as_str())))
            .expect("embedded lexicon is valid")
    }

    /// The embedded lexicon extended by every `*.toml` of `dir` (in file-name order).
    pub fn load_with_dir(dir: &Path) -> Result<Lexicon, LexiconError> {
        let io = |source| LexiconError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        Lexicon::embedded_with(&files)
    }

    /// The embedded lexicon extended by `(file name, TOML text)` packs, in order (a folder's
    /// files, or a knowledge bundle's).
    pub fn embedded_with(files: &[(String, String)]) -> Result<Lexicon, LexiconError> {
        let embedded = crate::compress::embedded_texts(EMBEDDED_LEXICON);
        Lexicon::parse(
            embedded
                .iter()
                .map(|(n, t)| (*n, t.as_str()))
                .chain(files.iter().map(|(n, t)| (n.as_str(), t.as_str()))),
        )
    }

    /// English.
    pub fn en(&self) -> &Language {
        &self.languages[0]
    }

    /// Number of `[terms]` entries over all languages.
    pub fn terms_len(&self) -> usize {
        self.languages.iter().map(|l| l.terms.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EN: &str = "language = \"en\"\nstemmer = \"english\"\nstop_words = [\"the\"]\nnegators = [\"no\"]\n[terms]\n\"ot\" = \"overtemperature\"\n\"takes ages to fill\" = \"long pump-up time\"\n";

    #[test]
    fn embedded_lexicon_loads_with_english_first() {
        let l = Lexicon::embedded();
        assert_eq!(l.en().code, "en");
        assert!(l.languages.iter().any(|l| l.code == "de"));
        assert!(l.languages.iter().any(|l| l.code == "es"));
        assert!(l.terms_len() > 100);
    }

    #[test]
    fn phrases_match_longest_by_stem() {
        let l = Lexicon::parse([("en.toml", EN)]).unwrap();
        let en = l.en();
        let words = ["takes", "ages", "to", "filling", "up"];
        let stems: Vec<String> = words.iter().map(|w| en.stem(w)).collect();
        let s: Vec<&str> = stems.iter().map(String::as_str).collect();
        let (id, n) = en.terms.longest_at(&s).unwrap();
        assert_eq!(
            (en.terms.list[id as usize].value.as_str(), n),
            ("long pump-up time", 4)
        );
    }

    #[test]
    fn plant_file_extends_and_new_language_needs_no_code() {
        let fr = "language = \"fr\"\nname = \"Français\"\nstemmer = \"french\"\nstop_words = [\"le\", \"la\"]\n[terms]\n\"pompe\" = \"pump\"\n";
        let extra = "language = \"en\"\n[terms]\n\"ot\" = \"high temperature\"\n\"lwco\" = \"low water cutoff\"\n";
        let l = Lexicon::parse([("en.toml", EN), ("fr.toml", fr), ("plant.toml", extra)]).unwrap();
        let en = l.en();
        assert_eq!(en.terms.len(), 3);
        let (id, _) = en.terms.longest_at(&["ot"]).unwrap();
        assert_eq!(en.terms.list[id as usize].value, "high temperature");
        assert_eq!(l.languages[1].code, "fr");
    }

    #[test]
    fn bad_files_are_named() {
        for (text, want) in [
            (
                "language = \"en\"\nstemmer = \"klingon\"\n",
                "unknown stemmer",
            ),
            (
                "language = \"en\"\nstop_words = [\"two words\"]\n",
                "one word",
            ),
            ("language = \"en\"\n[terms]\n\"x\" = \"\"\n", "empty value"),
            ("language = \"en\"\nbogus = 1\n", "bogus"),
            ("language = \"de\"\n", "no English"),
        ] {
            let e = Lexicon::parse([("bad.toml", text)])
                .err()
                .expect(text)
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
