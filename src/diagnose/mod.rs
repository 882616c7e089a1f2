//! The diagnose engine: knowledge base + retrieval → an answer a technician can act on.
//!
//! Pure and synchronous (no tokio, no hyper): `http` calls [`DiagnoseEngine::diagnose`] and, when
//! an upstream LLM is configured, hands [`DiagnoseEngine::passages`] of the answer to `llm` to
//! rewrite the report.
//!
//! Invariants:
//! - Every recommended step comes verbatim from a cited document and names that document.
//! - When no document reaches `min_relevance` (or the best one matches no header term), the
//!   answer cites nothing, recommends escalation only, and has `supported == false`: the agent
//!   says it does not know rather than inventing steps.
//! - `confidence_score` is derived from retrieval evidence (relevance of the best document and
//!   its margin over the runner-up), never a constant.

pub mod assets;
pub mod eval;
pub mod index;
pub mod kb;
pub mod lexicon;
pub mod query;
pub mod speller;
pub mod text;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use self::assets::{Asset, AssetRegister};
use self::index::{Hit, Index};
use self::kb::Document;
use self::lexicon::Lexicon;
use self::query::{Analysis, QueryAnalyzer};

include!(concat!(env!("OUT_DIR"), "/embedded_kb.rs"));

/// The sample knowledge base compiled into the binary.
pub fn embedded_documents() -> Result<Vec<Document>, kb::KbError> {
    let texts = crate::compress::embedded_texts(EMBEDDED_KB);
    kb::parse_all(texts.iter().map(|(name, text)| (*name, text.as_str())))
}

/// A defect reported by a camera system alongside the description.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// The defect's name as the camera system reports it (lower-cased for the answer).
    pub label: String,
    /// The camera's confidence, 0..=1 (clamped); 1 when omitted.
    #[serde(default = "one")]
    pub confidence: f64,
}

fn one() -> f64 {
    1.0
}

/// What the engine needs from a request (validated by the caller).
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// The plant the question comes from (already bounded by the label rules).
    pub plant_id: &'a str,
    /// The equipment the question is about; looked up in the asset register.
    pub equipment_id: &'a str,
    /// The technician's free-text description of the problem.
    pub problem_description: &'a str,
    /// Defects a camera system reported for the equipment, if any.
    pub observed_defects: &'a [Observation],
}

/// A recognised defect or symptom.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// The defect or symptom, as named in the vocabulary (or by the camera).
    pub label: String,
    /// 0..=1: 0.9 for a phrase matched in order, 0.75 for one word, the camera's own value.
    pub confidence: f64,
    /// `description` (matched in the text) or `camera` (sent by a vision system).
    pub source: &'static str,
}

/// `vision_analysis` of the response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VisionAnalysis {
    /// Defects named in the description or reported by a camera.
    pub defects_found: Vec<String>,
    /// Symptoms named in the description.
    pub symptoms_found: Vec<String>,
    /// Every finding with its confidence and source.
    pub findings: Vec<Finding>,
    /// Mean confidence of the findings, 0..=1; 0 with none.
    pub confidence: f64,
}

/// One cited document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Citation {
    /// The document's id (its front matter `id`, e.g. `SOP-HYD-001`).
    pub document_id: String,
    /// The document's title, in the question's language when a translation exists.
    pub title: String,
    /// Relevance of the document to the question, 0..=1, rounded to 3 decimals.
    pub relevance: f64,
}

/// `rag_guidance` of the response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Guidance {
    /// Steps quoted verbatim from the cited documents, each naming its document.
    pub recommended_steps: Vec<String>,
    /// Ids of the cited documents, best first.
    pub cited_documents: Vec<String>,
    /// The cited documents with title and relevance, best first.
    pub citations: Vec<Citation>,
    /// Up to two safety notes per cited document, each ending with `[document id]`.
    pub safety_notes: Vec<String>,
}

/// Why an answer cites nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No document reached the relevance threshold.
    NoDocument,
    /// The question is about something outside the plant's equipment (the object named).
    OutOfScope(String),
    /// The asset register knows the equipment, and no SOP covers its class.
    NoSopForClass(String),
    /// The text names a machine that no SOP covers (the lexicon's `uncovered_equipment`).
    NoSopForMachine(String),
    /// The text asks something other than a repair (inventory, schedule, ordering, ...).
    NotAFaultReport,
    /// The text is in a language (or script) the lexicon only recognises: its name.
    LanguageNotSupported(String),
}

impl Refusal {
    /// A short machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoDocument => "no_matching_sop",
            Refusal::OutOfScope(_) => "out_of_scope",
            Refusal::NoSopForClass(_) => "no_sop_for_equipment_class",
            Refusal::NoSopForMachine(_) => "no_sop_for_machine",
            Refusal::NotAFaultReport => "not_a_fault_report",
            Refusal::LanguageNotSupported(_) => "language_not_supported",
        }
    }
}

/// The engine's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `vision_analysis`: what was recognised in the question.
    pub vision: VisionAnalysis,
    /// `rag_guidance`: steps, citations and safety notes; empty steps when refused.
    pub guidance: Guidance,
    /// The report text for the technician (the upstream LLM may rewrite it).
    pub report: String,
    /// `confidence_score`, 0..0.99: relevance and margin over the runner-up; 0 when unsupported.
    pub confidence: f64,
    /// False when no document supports the answer (the "I don't know" case).
    pub supported: bool,
    /// Best relevance seen, for logs.
    pub best_relevance: f64,
    /// Whether the question reports one of the first document's `evidence:` items nearly word
    /// for word (which supports it down to [`EVIDENCE_MIN_RELEVANCE`]).
    pub evidence: bool,
    /// The cited documents (indexes), for [`DiagnoseEngine::passages`].
    pub cited_docs: Vec<usize>,
    /// The ranking before the threshold (document ids, best first), for calibration.
    pub ranked: Vec<String>,
    /// Approximate tokens of the question's description (≈ 4 characters per token).
    pub input_tokens: u64,
    /// Approximate tokens of the report and the recommended steps (≈ 4 characters per token).
    pub output_tokens: u64,
    /// The language the question was understood in (lexicon code, `en` for English).
    pub language: String,
    /// The asset the equipment id resolved to in the register, if any.
    pub asset: Option<Asset>,
    /// Why nothing is cited (`None` when supported).
    pub refusal: Option<Refusal>,
    /// What the engine rewrote to understand the question (`typed → understood`).
    pub rewrites: Vec<String>,
}

/// Engine settings (from `[engine]`).
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// `engine.min_relevance`: relevance (0..=1) a document needs to support an answer.
    pub min_relevance: f64,
    /// `engine.max_documents`: documents cited at most.
    pub max_documents: usize,
    /// `engine.max_steps`: recommended steps at most, shared among the cited documents.
    pub max_steps: usize,
    /// Parts switched off, for the ablation table (`copilot-edge eval --ablate`); all on in
    /// service.
    pub off: Ablation,
}

/// Engine parts that `eval --ablate` switches off one at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ablation {
    /// The intent check (not a fault report).
    pub intent: bool,
    /// The machine gate (uncovered equipment).
    pub machine_gate: bool,
    /// Relevance within a clause window (narratives).
    pub windows: bool,
    /// The higher bar for a text that names no machine (see [`UNNAMED_MIN_RELEVANCE`]).
    pub unnamed: bool,
}

/// How much higher documents of the asset's equipment class score. Their relevance is raised by
/// the same factor (capped at 1): a known asset of that class is evidence that the question is
/// about it, so fewer of the question's words need to match. Chosen on the dev split.
pub const CLASS_BOOST: f32 = 1.5;

/// Distinct symptom or defect words that make a text a fault report even without a fault
/// word and beside a non-repair phrase ("oil at 68 and climbing, press sluggish, on-call not
/// answering").
pub const INTENT_SYMPTOMS: usize = 2;

/// The relevance below which even a reported consequence (an `evidence:` item) does not
/// support an answer. Chosen on the field sets' dev splits.
pub const EVIDENCE_MIN_RELEVANCE: f64 = 0.15;

/// A clause with more terms than this is a run-on (voice-to-text without punctuation): its
/// relevance is also taken over runs of [`RUN_WINDOW`] terms (half overlapping), each needing
/// [`RUN_WINDOW_MIN_MATCHES`] distinct terms of the document.
pub const RUN_ON_TERMS: usize = 12;
/// See [`RUN_ON_TERMS`].
pub const RUN_WINDOW: usize = 8;
/// See [`RUN_ON_TERMS`].
pub const RUN_WINDOW_MIN_MATCHES: usize = 3;

/// The same for a text that opens with a question word ("is the shuttle bus still running at
/// 21:30", "what's the rated tonnage of press-12"): a question asks about something, so it
/// takes one more symptom word to read as a report. Chosen on the three field sets' dev splits.
pub const INTENT_SYMPTOMS_QUESTION: usize = 3;

/// The highest `confidence_score` of an answer to a text that opens with a question word and
/// names no fault word (see [`INTENT_SYMPTOMS_QUESTION`]).
pub const QUESTION_CONFIDENCE_CAP: f64 = 0.5;

/// The relevance a text needs when it names no machine: no equipment word the knowledge base
/// covers and no equipment id the asset register resolves ("how do I apply for a new badge, mine
/// is broken"). Its symptom words are then all the evidence there is, so more of them must
/// match; a consequence the first document lists (`evidence:`) still counts at the usual bar.
/// Chosen on the four field sets' dev splits.
pub const UNNAMED_MIN_RELEVANCE: f64 = 0.45;

/// Terms of a clause window that must occur in the document for the window's relevance to count:
/// one matching word in a short clause ("it leaks") says too little on its own.
pub const WINDOW_MIN_MATCHES: usize = 2;

/// What the engine is built from: documents, lexicon and asset register.
pub struct Knowledge {
    /// The SOP documents.
    pub docs: Vec<Document>,
    /// Abbreviations, jargon, vocabulary and language packs.
    pub lexicon: Lexicon,
    /// Equipment ids and patterns with their class, make, model, line and location.
    pub assets: AssetRegister,
}

struct VocabEntry {
    label: String,
    terms: Vec<String>,
    defect: bool,
}

/// The engine: documents, their index and the defect/symptom vocabulary.
pub struct DiagnoseEngine {
    docs: Vec<Document>,
    index: Index,
    analyzer: QueryAnalyzer,
    assets: AssetRegister,
    /// Equipment class (folded) → documents listing it under `equipment:` (ascending).
    class_docs: rustc_hash::FxHashMap<String, Vec<u32>>,
    vocab: Vec<VocabEntry>,
    /// Vocabulary entries by their first term (indexes into `vocab`, ascending).
    vocab_by_first: rustc_hash::FxHashMap<String, Vec<usize>>,
    /// Per document, its `evidence:` items of two or more terms (English terms, deduplicated).
    evidence: Vec<Vec<Box<[String]>>>,
    settings: EngineSettings,
    /// When this engine was built (the knowledge base's "loaded at").
    built_at: std::time::SystemTime,
}

/// The engine in use, swapped as a whole when the knowledge base is reloaded: each request takes
/// one snapshot (an `Arc`) and keeps it to the end, so a reload never changes an answer halfway.
pub struct EngineCell(std::sync::RwLock<std::sync::Arc<DiagnoseEngine>>);

impl EngineCell {
    /// Wraps an engine.
    pub fn new(engine: DiagnoseEngine) -> EngineCell {
        EngineCell(std::sync::RwLock::new(std::sync::Arc::new(engine)))
    }

    /// The current engine.
    pub fn get(&self) -> std::sync::Arc<DiagnoseEngine> {
        // A poisoned lock still holds a whole engine (replace only assigns an Arc).
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the engine for later requests.
    pub fn replace(&self, engine: DiagnoseEngine) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(engine);
    }
}

/// Rough token estimate used when no LLM reports usage (OpenAI's rule of thumb).
pub fn approx_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn contains_run(hay: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `terms` occur in order in one clause of the symptom stream, within a window of the
/// phrase's length plus two words ("motor will not start" matches "motor does not want to start").
fn matches_in_clause(stream: &[(u16, String)], terms: &[String]) -> bool {
    let Some(first) = terms.first() else {
        return false;
    };
    stream.iter().enumerate().any(|(p, (clause, s))| {
        if s != first {
            return false;
        }
        let mut j = 1;
        let end = (p + terms.len() + 2).min(stream.len() - 1);
        for (c, t) in &stream[p + 1..=end.max(p)] {
            if j == terms.len() || c != clause {
                break;
            }
            if *t == terms[j] {
                j += 1;
            }
        }
        j == terms.len()
    })
}

impl DiagnoseEngine {
    /// Builds the engine over documents with the embedded lexicon and no asset register.
    pub fn new(docs: Vec<Document>, settings: EngineSettings) -> DiagnoseEngine {
        DiagnoseEngine::build(
            Knowledge {
                docs,
                lexicon: Lexicon::embedded(),
                assets: AssetRegister::default(),
            },
            settings,
        )
    }

    /// Builds the index, the question analyzer and the vocabulary.
    pub fn build(k: Knowledge, settings: EngineSettings) -> DiagnoseEngine {
        let Knowledge {
            docs,
            lexicon,
            assets,
        } = k;
        let en = lexicon.en();
        let index = Index::build(&docs, |t| query::english_terms(en, t));
        let evidence = docs
            .iter()
            .map(|d| {
                d.evidence
                    .iter()
                    .filter_map(|item| {
                        let mut terms = query::english_terms(en, item);
                        terms.sort_unstable();
                        terms.dedup();
                        (terms.len() >= 2).then(|| terms.into_boxed_slice())
                    })
                    .collect()
            })
            .collect();
        let kb_words = query::kb_words(
            en,
            docs.iter().flat_map(|d| {
                [d.title.as_str(), d.summary.as_str()]
                    .into_iter()
                    .chain(d.steps.iter().map(String::as_str))
                    .chain(d.symptoms.iter().map(String::as_str))
                    .chain(d.defects.iter().map(String::as_str))
                    .chain(d.evidence.iter().map(String::as_str))
                    .chain(d.equipment.iter().map(String::as_str))
            }),
        );
        let mut class_docs: rustc_hash::FxHashMap<String, Vec<u32>> = Default::default();
        for (i, d) in docs.iter().enumerate() {
            for e in &d.equipment {
                let v = class_docs.entry(query::normalise(e)).or_default();
                if v.last() != Some(&(i as u32)) {
                    v.push(i as u32);
                }
            }
        }
        let mut seen = BTreeSet::new();
        let mut vocab = Vec::new();
        for d in &docs {
            for (list, defect) in [(&d.defects, true), (&d.symptoms, false)] {
                for label in list {
                    if seen.insert((label.clone(), defect)) {
                        let terms = query::english_symptom_terms(en, label);
                        if !terms.is_empty() {
                            vocab.push(VocabEntry {
                                label: label.clone(),
                                terms,
                                defect,
                            });
                        }
                    }
                }
            }
        }
        // Longer phrases first, so "coolant leak" is preferred over "leak" when both match.
        vocab.sort_by(|a, b| {
            b.terms
                .len()
                .cmp(&a.terms.len())
                .then(a.label.cmp(&b.label))
        });
        let mut vocab_by_first: rustc_hash::FxHashMap<String, Vec<usize>> = Default::default();
        for (i, v) in vocab.iter().enumerate() {
            vocab_by_first
                .entry(v.terms[0].clone())
                .or_default()
                .push(i);
        }
        let analyzer = QueryAnalyzer::new(
            lexicon,
            kb_words,
            docs.iter()
                .flat_map(|d| d.equipment.iter().map(String::as_str)),
            docs.iter()
                .flat_map(|d| d.symptoms.iter().chain(&d.defects).map(String::as_str)),
        );
        DiagnoseEngine {
            docs,
            index,
            analyzer,
            assets,
            class_docs,
            vocab_by_first,
            evidence,
            vocab,
            settings,
            built_at: std::time::SystemTime::now(),
        }
    }

    /// The lexicon in use.
    pub fn lexicon(&self) -> &Lexicon {
        &self.analyzer.lexicon
    }

    /// The asset register in use.
    pub fn assets(&self) -> &AssetRegister {
        &self.assets
    }

    /// When the engine was built from its knowledge.
    pub fn built_at(&self) -> std::time::SystemTime {
        self.built_at
    }

    /// The document with this id.
    pub fn document(&self, id: &str) -> Option<&Document> {
        self.docs.iter().find(|d| d.id == id)
    }

    /// The documents.
    pub fn documents(&self) -> &[Document] {
        &self.docs
    }

    /// Analyses a question (for tests, `eval` and explanations).
    pub fn analyze(&self, text: &str) -> Analysis {
        self.analyzer.analyze(text, &self.index)
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether the knowledge base is empty (never, once built from `kb::parse_all`).
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Ranked hits for a text (no asset), for tests and benchmarks.
    pub fn search(&self, text: &str, k: usize) -> Vec<(&Document, Hit)> {
        let a = self.analyze(text);
        self.index
            .search_terms(&a.terms, k, &[], 1.0)
            .into_iter()
            .map(|h| (&self.docs[h.doc], h))
            .collect()
    }

    /// Whether the question's terms cover one of document `doc`'s `evidence:` items: two of
    /// its terms at least and two thirds of them.
    fn reports_evidence(&self, doc: usize, terms: &[String]) -> bool {
        self.evidence[doc].iter().any(|item| {
            let matched = item.iter().filter(|t| terms.contains(t)).count();
            matched >= 2 && matched * 3 >= item.len() * 2
        })
    }

    /// The best relevance of document `doc` within one clause or two neighbouring clauses of
    /// the question, counting only windows where at least [`WINDOW_MIN_MATCHES`] of the window's
    /// terms occur in the document.
    fn window_relevance(&self, doc: usize, a: &query::Analysis, boost: f32) -> f64 {
        let mut clauses: Vec<u16> = a.term_clauses.clone();
        clauses.dedup();
        let mut best = 0.0f64;
        let mut window: Vec<&str> = Vec::with_capacity(a.terms.len());
        // A run-on clause (voice-to-text, no punctuation) has no clause breaks to cut it: fixed
        // runs of its terms stand in for clauses.
        let mut start = 0;
        while start < a.terms.len() {
            let c = a.term_clauses[start];
            let end = start
                + a.term_clauses[start..]
                    .iter()
                    .take_while(|&&x| x == c)
                    .count();
            if end - start > RUN_ON_TERMS {
                let mut i = start;
                while i < end {
                    let j = (i + RUN_WINDOW).min(end);
                    window.clear();
                    window.extend(a.terms[i..j].iter().map(String::as_str));
                    let (relevance, matched) = self.index.relevance_of(doc, &window, boost);
                    if matched >= RUN_WINDOW_MIN_MATCHES {
                        best = best.max(relevance as f64);
                    }
                    if j == end {
                        break;
                    }
                    i += RUN_WINDOW / 2;
                }
            }
            start = end;
        }
        if clauses.len() < 2 {
            return best;
        }
        for (i, &c) in clauses.iter().enumerate() {
            for span in [&clauses[i..=i], &clauses[i..(i + 2).min(clauses.len())]] {
                window.clear();
                window.extend(
                    a.terms
                        .iter()
                        .zip(&a.term_clauses)
                        .filter(|(_, tc)| span.contains(tc))
                        .map(|(t, _)| t.as_str()),
                );
                let (relevance, matched) = self.index.relevance_of(doc, &window, boost);
                if matched >= WINDOW_MIN_MATCHES {
                    best = best.max(relevance as f64);
                }
            }
            let _ = c;
        }
        best
    }

    fn vision(&self, q: &Question<'_>, stream: &[(u16, String)]) -> VisionAnalysis {
        let mut findings: Vec<Finding> = Vec::new();
        let (mut defects_found, mut symptoms_found) = (Vec::new(), Vec::new());
        let mut covered: Vec<&[String]> = Vec::new();
        // Candidates: the entries whose first term occurs in the question, in vocabulary order
        // (longer phrases first).
        let mut candidates: Vec<usize> = stream
            .iter()
            .filter_map(|(_, t)| self.vocab_by_first.get(t.as_str()))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        for v in candidates.into_iter().map(|i| &self.vocab[i]) {
            // Skip a phrase wholly inside a longer one already found ("leak" in "coolant leak").
            if covered.iter().any(|c| contains_run(c, &v.terms))
                || !matches_in_clause(stream, &v.terms)
            {
                continue;
            }
            covered.push(&v.terms);
            // A multi-word phrase matched in order is stronger evidence than a single word.
            let confidence = if v.terms.len() > 1 { 0.9 } else { 0.75 };
            findings.push(Finding {
                label: v.label.clone(),
                confidence,
                source: "description",
            });
            if v.defect {
                &mut defects_found
            } else {
                &mut symptoms_found
            }
            .push(v.label.clone());
        }
        for o in q.observed_defects {
            let label = o.label.trim().to_lowercase();
            if !defects_found.contains(&label) {
                defects_found.push(label.clone());
            }
            findings.push(Finding {
                label,
                confidence: o.confidence.clamp(0.0, 1.0),
                source: "camera",
            });
        }
        let confidence = if findings.is_empty() {
            0.0
        } else {
            findings.iter().map(|f| f.confidence).sum::<f64>() / findings.len() as f64
        };
        VisionAnalysis {
            defects_found,
            symptoms_found,
            findings,
            confidence: round3(confidence),
        }
    }

    /// The cited documents' text, as context for an upstream LLM (built only when one is used).
    pub fn passages(&self, answer: &Answer) -> Vec<String> {
        answer
            .cited_docs
            .iter()
            .map(|&i| {
                let d = &self.docs[i];
                let steps: Vec<String> = d
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(n, s)| format!("{}. {s}", n + 1))
                    .collect();
                format!(
                    "[{}] {}\n{}\nSteps:\n{}",
                    d.id,
                    d.title,
                    d.summary,
                    steps.join("\n")
                )
            })
            .collect()
    }

    /// The code of the language at `index` of the lexicon (`en`, `de`, ...).
    pub fn language_code(&self, index: usize) -> &str {
        &self.analyzer.lexicon.languages[index].code
    }

    /// Answers one question.
    pub fn diagnose(&self, q: &Question<'_>) -> Answer {
        self.diagnose_at(q, self.settings.min_relevance)
    }

    /// Answers one question with another refusal threshold (calibration).
    pub fn diagnose_at(&self, q: &Question<'_>, min_relevance: f64) -> Answer {
        let camera_labels: Vec<&str> = q
            .observed_defects
            .iter()
            .map(|o| o.label.as_str())
            .collect();
        let analysis = if camera_labels.is_empty() {
            self.analyze(q.problem_description)
        } else {
            self.analyze(&format!(
                "{}. {}",
                q.problem_description,
                camera_labels.join(". ")
            ))
        };
        let vision = self.vision(q, &analysis.symptoms);
        let asset = self.assets.resolve(q.equipment_id).cloned();
        let class_docs: &[u32] = asset
            .as_ref()
            .and_then(|a| self.class_docs.get(&query::normalise(&a.class)))
            .map_or(&[], Vec::as_slice);
        let hits = self.index.search_terms(
            &analysis.terms,
            self.settings.max_documents.max(2),
            class_docs,
            CLASS_BOOST,
        );
        let best = hits.first().copied();
        // A long message (context, roles, what was tried) dilutes the relevance over all its
        // words; the clause window that describes the fault carries it.
        let best_relevance = best.map_or(0.0, |h| {
            let full = h.relevance as f64;
            if self.settings.off.windows {
                return full;
            }
            let boost = if h.boosted { CLASS_BOOST } else { 1.0 };
            full.max(self.window_relevance(h.doc, &analysis, boost))
        });
        let lang = &self.analyzer.lexicon.languages[analysis.language];
        let foreign = text::foreign_script(q.problem_description);
        let evidence = best.is_some_and(|h| self.reports_evidence(h.doc, &analysis.terms));
        let refusal = match (&asset, &analysis.out_of_scope) {
            _ if foreign.is_some() => Some(Refusal::LanguageNotSupported(
                foreign.unwrap_or_default().to_string(),
            )),
            _ if lang.detect_only => Some(Refusal::LanguageNotSupported(lang.name.clone())),
            (Some(a), _) if class_docs.is_empty() => Some(Refusal::NoSopForClass(a.class.clone())),
            (_, Some(object)) => Some(Refusal::OutOfScope(object.clone())),
            // The asset register names the machine and an SOP covers its class: an uncovered
            // machine in the text is where it stands ("mot-8 at the oven exhaust").
            _ if !self.settings.off.machine_gate
                && analysis.uncovered.is_some()
                && class_docs.is_empty() =>
            {
                Some(Refusal::NoSopForMachine(
                    analysis.uncovered.clone().unwrap_or_default(),
                ))
            }
            // Not a fault report: no fault word, and either a phrase that asks for something else
            // leading the text ("what's the max clamp force", "who is on call"), or such a phrase
            // elsewhere or a question word opening the text ("what oil does gearbox 3 take") with
            // fewer than two symptom words, or nothing but equipment names ("press 12").
            _ if !self.settings.off.intent
                && !analysis.fault_word
                && ((analysis.non_repair.is_some()
                    && (analysis.non_repair_leads
                        || analysis.symptom_terms < INTENT_SYMPTOMS))
                    || (analysis.question_led
                        && analysis.symptom_terms < INTENT_SYMPTOMS_QUESTION)
                    || analysis.content_terms == 0) =>
            {
                Some(Refusal::NotAFaultReport)
            }
            // Nothing names a machine: the symptom words alone must carry more of the document.
            _ if !self.settings.off.unnamed
                && asset.is_none()
                && analysis.equipment_terms == 0
                && !evidence
                && best_relevance < UNNAMED_MIN_RELEVANCE.max(min_relevance) =>
            {
                Some(Refusal::NoDocument)
            }
            _ if best.is_some_and(|h| h.key_match && best_relevance >= min_relevance) => None,
            // Below the threshold, a consequence the first document lists nearly word for word
            // (two thirds of one `evidence:` item, two words at least) still supports it.
            _ if evidence
                && best
                    .is_some_and(|h| h.key_match && best_relevance >= EVIDENCE_MIN_RELEVANCE) =>
            {
                None
            }
            _ => Some(Refusal::NoDocument),
        };
        let supported = refusal.is_none();

        let cite_max = self.settings.max_documents;
        let mut guidance = Guidance {
            recommended_steps: Vec::with_capacity(self.settings.max_steps),
            cited_documents: Vec::with_capacity(cite_max),
            citations: Vec::with_capacity(cite_max),
            safety_notes: Vec::with_capacity(2 * cite_max),
        };
        let mut cited_docs = Vec::new();
        let mut confidence = 0.0;
        if let (true, Some(top)) = (supported, best) {
            let cited: Vec<Hit> = hits
                .iter()
                .copied()
                .take(self.settings.max_documents)
                .enumerate()
                .filter(|(i, h)| {
                    // The first by its best window (it decided the answer), the rest in full.
                    let relevance = if *i == 0 {
                        best_relevance
                    } else {
                        h.relevance as f64
                    };
                    let floor = if *i == 0 && evidence {
                        EVIDENCE_MIN_RELEVANCE.min(min_relevance)
                    } else {
                        min_relevance
                    };
                    h.key_match && relevance >= floor && h.score >= 0.6 * top.score
                })
                .map(|(_, h)| h)
                .collect();
            let per_doc = self.settings.max_steps.div_ceil(cited.len());
            let language = &self.analyzer.lexicon.languages[analysis.language].code;
            for h in &cited {
                let d = &self.docs[h.doc];
                // Quoted from the document in the question's language when it has one.
                let tr = d.translation(language);
                let (title, safety, steps) = match tr {
                    Some(t) => (&t.title, &t.safety, &t.steps),
                    None => (&d.title, &d.safety, &d.steps),
                };
                guidance.cited_documents.push(d.id.clone());
                guidance.citations.push(Citation {
                    document_id: d.id.clone(),
                    title: title.clone(),
                    relevance: round3(h.relevance as f64),
                });
                // Built with push_str: these run for every step of every answer.
                for s in safety.iter().take(2) {
                    let mut note = String::with_capacity(s.len() + d.id.len() + 3);
                    note.push_str(s);
                    note.push_str(" [");
                    note.push_str(&d.id);
                    note.push(']');
                    guidance.safety_notes.push(note);
                }
                for (n, s) in steps.iter().enumerate().take(per_doc) {
                    if guidance.recommended_steps.len() < self.settings.max_steps {
                        guidance
                            .recommended_steps
                            .push(step_line(q.equipment_id, s, &d.id, n + 1));
                    }
                }
                cited_docs.push(h.doc);
            }
            let second = hits.get(1).map_or(0.0, |h| h.score);
            let margin = ((top.score - second) / top.score) as f64;
            // Relevance carries the evidence; a clear winner adds up to 30 % on top.
            confidence = (best_relevance.min(1.0) * (0.7 + 0.3 * margin) / 0.7).min(0.99);
            // A question about something (question word first, no fault word) that still
            // reads as a report is as likely a request for facts as a fault: never confident.
            if analysis.question_led && !analysis.fault_word {
                confidence = confidence.min(QUESTION_CONFIDENCE_CAP);
            }
        }
        let report = self.report(
            q,
            &vision,
            &guidance,
            refusal.as_ref(),
            asset.as_ref(),
            best_relevance,
        );
        let input_tokens = approx_tokens(q.problem_description);
        let output_tokens = approx_tokens(&report)
            + guidance
                .recommended_steps
                .iter()
                .map(|s| approx_tokens(s))
                .sum::<u64>();
        Answer {
            vision,
            guidance,
            report,
            confidence: round3(confidence),
            supported,
            best_relevance: round3(best_relevance),
            evidence,
            cited_docs,
            ranked: hits.iter().map(|h| self.docs[h.doc].id.clone()).collect(),
            input_tokens,
            output_tokens,
            language: self.analyzer.lexicon.languages[analysis.language]
                .code
                .clone(),
            asset,
            refusal,
            rewrites: analysis.rewrites,
        }
    }

    fn report(
        &self,
        q: &Question<'_>,
        v: &VisionAnalysis,
        g: &Guidance,
        refusal: Option<&Refusal>,
        asset: Option<&Asset>,
        best: f64,
    ) -> String {
        use std::fmt::Write as _;
        // One buffer, written in place: this runs on every request.
        let steps_len: usize = g.recommended_steps.iter().map(|s| s.len() + 4).sum();
        let notes_len: usize = g.safety_notes.iter().map(|s| s.len() + 1).sum();
        let mut r =
            String::with_capacity(512 + q.problem_description.len() + steps_len + notes_len);
        let _ = write!(
            r,
            "Diagnostic report for equipment {} at plant {}. Reported problem: {}",
            q.equipment_id,
            q.plant_id,
            q.problem_description.trim()
        );
        if !r.ends_with('.') {
            r.push('.');
        }
        if let Some(a) = asset {
            r.push_str(" Asset: ");
            r.push_str(&a.class);
            for part in [&a.make, &a.model, &a.line, &a.location] {
                if !part.is_empty() {
                    r.push_str(", ");
                    r.push_str(part);
                }
            }
            r.push('.');
        }
        for (i, f) in v.defects_found.iter().chain(&v.symptoms_found).enumerate() {
            r.push_str(if i == 0 { " Recognised: " } else { ", " });
            r.push_str(f);
        }
        if !v.defects_found.is_empty() || !v.symptoms_found.is_empty() {
            r.push('.');
        }
        if let Some(refusal) = refusal {
            let _ = match refusal {
                Refusal::NoDocument => write!(
                    r,
                    " No SOP in the local knowledge base covers this problem (best relevance {best:.2}, threshold {:.2}).",
                    self.settings.min_relevance
                ),
                Refusal::OutOfScope(object) => write!(
                    r,
                    " This is about {object}, which is not plant equipment the local knowledge base covers."
                ),
                Refusal::NoSopForClass(class) => write!(
                    r,
                    " The asset register lists {} as {class}, and no SOP in the local knowledge base covers {class} equipment.",
                    q.equipment_id
                ),
                Refusal::NoSopForMachine(machine) => write!(
                    r,
                    " This is about {machine}: no SOP in the local knowledge base covers it."
                ),
                Refusal::NotAFaultReport => {
                    r.push_str(" This does not describe a fault: no repair procedure applies. Describe what the equipment does wrong (what you see, hear or smell) to get repair steps; for stock, schedules, orders or documents ask your supervisor or the maintenance office.");
                    return r;
                }
                Refusal::LanguageNotSupported(language) => write!(
                    r,
                    " The question is written in {language}, which this gateway does not understand yet. Please write it in one of the supported languages."
                ),
            };
            r.push_str(
                " No repair steps are suggested: make the equipment safe and escalate to maintenance engineering.",
            );
            return r;
        }
        r.push_str(" Matching procedures: ");
        for (i, c) in g.citations.iter().enumerate() {
            let _ = write!(
                r,
                "{}{} ({})",
                if i == 0 { "" } else { "; " },
                c.title,
                c.document_id
            );
        }
        r.push_str(". Recommended actions:");
        for (i, s) in g.recommended_steps.iter().enumerate() {
            r.push(' ');
            push_number(&mut r, i + 1);
            r.push_str(". ");
            r.push_str(s);
        }
        for (i, note) in g.safety_notes.iter().enumerate() {
            r.push_str(if i == 0 { " Safety: " } else { " " });
            r.push_str(note);
        }
        r.push_str(" Sources: ");
        for (i, d) in g.cited_documents.iter().enumerate() {
            if i > 0 {
                r.push_str(", ");
            }
            r.push_str(d);
        }
        r.push('.');
        r
    }
}

/// `"{equipment}: {step} [{doc} step {n}]"`, the form every recommended step takes.
fn step_line(equipment: &str, step: &str, doc: &str, n: usize) -> String {
    let mut line = String::with_capacity(equipment.len() + step.len() + doc.len() + 16);
    line.push_str(equipment);
    line.push_str(": ");
    line.push_str(step);
    line.push_str(" [");
    line.push_str(doc);
    line.push_str(" step ");
    push_number(&mut line, n);
    line.push(']');
    line
}

/// Appends `n` in decimal without going through `fmt` (step numbers: one or two digits).
fn push_number(s: &mut String, n: usize) {
    if n < 10 {
        s.push(char::from(b'0' + n as u8));
    } else {
        use std::fmt::Write as _;
        let _ = write!(s, "{n}");
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lines_number_one_and_two_digit_steps() {
        assert_eq!(
            step_line("press-12", "Bleed the line.", "SOP-HYD-001", 7),
            "press-12: Bleed the line. [SOP-HYD-001 step 7]"
        );
        assert_eq!(step_line("p", "x", "D", 12), "p: x [D step 12]");
    }

    fn engine() -> DiagnoseEngine {
        DiagnoseEngine::new(
            embedded_documents().expect("embedded KB parses"),
            EngineSettings {
                min_relevance: 0.25,
                max_documents: 2,
                max_steps: 10,
                off: Default::default(),
            },
        )
    }

    fn ask(e: &DiagnoseEngine, text: &str) -> Answer {
        e.diagnose(&Question {
            plant_id: "plant-7",
            equipment_id: "press-12",
            problem_description: text,
            observed_defects: &[],
        })
    }

    #[test]
    fn embedded_kb_is_large_enough() {
        assert!(engine().len() >= 30);
    }

    fn engine_with_assets() -> DiagnoseEngine {
        engine_without(Ablation::default())
    }

    /// The embedded knowledge with the parts in `off` switched off.
    fn engine_without(off: Ablation) -> DiagnoseEngine {
        DiagnoseEngine::build(
            Knowledge {
                docs: embedded_documents().expect("embedded KB parses"),
                lexicon: Lexicon::embedded(),
                assets: AssetRegister::embedded(),
            },
            EngineSettings {
                min_relevance: crate::config::DEFAULT_MIN_RELEVANCE,
                max_documents: 2,
                max_steps: 10,
                off,
            },
        )
    }

    fn ask_at(e: &DiagnoseEngine, equipment: &str, text: &str) -> Answer {
        e.diagnose(&Question {
            plant_id: "plant-7",
            equipment_id: equipment,
            problem_description: text,
            observed_defects: &[],
        })
    }

    /// Answer quality on the labelled set (`tests/fixtures/retrieval_eval.tsv`), both splits
    /// printed; the targets are checked on the held-out split, which no tuning looks at.
    /// `cargo test retrieval_quality -- --nocapture` shows the tables.
    #[test]
    fn retrieval_quality() {
        let e = engine_with_assets();
        let cases = eval::parse(include_str!("../../tests/fixtures/retrieval_eval.tsv")).unwrap();
        let count = |split: &str, subsets: &[&str]| {
            cases
                .iter()
                .filter(|c| c.split == split || split == "all")
                .filter(|c| subsets.is_empty() || subsets.contains(&c.subset.as_str()))
                .count()
        };
        assert!(count("all", &[]) >= 250, "labelled set too small");
        assert!(count("all", &["de", "es"]) >= 40);
        assert!(count("all", &["indirect"]) >= 40);
        assert!(count("all", &["typo", "shorthand"]) >= 30);
        assert!(count("all", &["near_miss"]) >= 40);
        assert!(count("heldout", &[]) * 5 >= count("all", &[]) - 5);
        let outcomes = eval::run(&e, &cases);
        let t = crate::config::DEFAULT_MIN_RELEVANCE;
        for split in ["dev", "heldout"] {
            println!("{}", eval::subset_table(&outcomes, split, t));
        }
        println!("{}", eval::sweep_table(&outcomes, "dev"));
        let held = eval::by_subset(&outcomes, "heldout", t);
        let rate = |subsets: &[&str]| {
            let mut f = eval::Figures::default();
            for s in subsets {
                if let Some(x) = held.get(*s) {
                    f.covered += x.covered;
                    f.right_first += x.right_first;
                    f.none += x.none;
                    f.none_answered += x.none_answered;
                }
            }
            f
        };
        let all = held["all"];
        HELD_OUT_FLOORS.check(
            all.right_first_rate(),
            rate(&["de", "es"]).right_first_rate(),
            rate(&["indirect"]).right_first_rate(),
            all.none_answered_rate(),
        );
    }

    /// Held-out figures of the first labelled set: its targets, and the regression floor this test
    /// enforces. That split (180 rows, written 2026-12-04) has been measured on every test run
    /// since, so it estimates nothing any more; it guards against regressions. With the clause
    /// windows and the SOP `evidence:` lines (2026-12-07) it answers 3 of its 36 out-of-scope
    /// questions (was 1), which the floor accepts; the new field set's held-out split is the
    /// estimate (docs/answer-quality.md).
    struct Targets {
        right_first: f64,
        foreign: f64,
        indirect: f64,
        none_answered: f64,
    }

    const HELD_OUT_TARGETS: Targets = Targets {
        right_first: 0.92,
        foreign: 0.85,
        indirect: 0.85,
        none_answered: 0.03,
    };

    const HELD_OUT_FLOORS: Targets = Targets {
        right_first: 0.95,
        foreign: 0.95,
        indirect: 0.95,
        none_answered: 0.09,
    };

    impl Targets {
        fn check(&self, right_first: f64, foreign: f64, indirect: f64, none_answered: f64) {
            let line = format!("held-out: right first {right_first:.3}, de/es {foreign:.3}, indirect {indirect:.3}, NONE answered {none_answered:.3}");
            println!("{line}");
            let t = &HELD_OUT_TARGETS;
            for (name, ok) in [
                ("right SOP first", right_first >= t.right_first),
                ("German/Spanish", foreign >= t.foreign),
                ("indirect", indirect >= t.indirect),
                ("out-of-scope answered", none_answered <= t.none_answered),
            ] {
                println!("  target {name}: {}", if ok { "met" } else { "MISSED" });
            }
            assert!(right_first >= self.right_first, "{line}");
            assert!(foreign >= self.foreign, "{line}");
            assert!(indirect >= self.indirect, "{line}");
            assert!(none_answered <= self.none_answered, "{line}");
        }
    }

    /// The field set's dev split (authors 1-3 of `tests/fixtures/field_eval.tsv`): floors at
    /// about the figures measured when the engine was tuned on it. Its held-out split (authors
    /// 4-5) is measured by hand at most twice (`copilot-edge eval ... --split heldout`) and never
    /// by a test.
    #[test]
    fn field_questions_dev_split() {
        let text = include_str!("../../tests/fixtures/field_eval.tsv");
        let cases = eval::parse(text).expect("field set parses");
        assert!(cases.len() >= 600, "field set too small");
        assert!(cases.iter().filter(|c| c.split == "heldout").count() >= 240);
        let dev: Vec<eval::Case> = cases.into_iter().filter(|c| c.split == "dev").collect();
        let e = engine_with_assets();
        let outcomes = eval::run(&e, &dev);
        let t = crate::config::DEFAULT_MIN_RELEVANCE;
        println!("{}", eval::family_table(&outcomes, "dev", t));
        let pick = |f: &dyn Fn(&str) -> bool| {
            eval::Figures::of(outcomes.iter().filter(|o| f(&o.case.subset)), t)
        };
        let all = pick(&|_| true);
        assert!(all.right_first_rate() >= 0.96, "{all:?}");
        assert!(all.none_answered_rate() <= 0.02, "{all:?}");
        assert!(
            all.non_repair_recognised * 100 >= 95 * all.non_repair,
            "{all:?}"
        );
        let english = pick(&|s| s.starts_with("en"));
        assert!(english.right_first_rate() >= 0.97, "{english:?}");
        let consequence = pick(&|s| s == "consequence");
        assert!(consequence.right_first_rate() >= 0.80, "{consequence:?}");
        for lang in ["de", "es", "fr", "it", "pt", "pl", "nl", "cs", "tr", "ro"] {
            let f = pick(&|s| s == lang);
            assert!(f.covered >= 10, "{lang}: {f:?}");
            assert!(f.right_first_rate() >= 0.80, "{lang}: {f:?}");
        }
    }

    /// Floors of the fourth field set's dev split (right SOP first, out of scope answered,
    /// non-repair recognised in %).
    const FOURTH_RIGHT: f64 = 0.96;
    const FOURTH_NONE: f64 = 0.03;
    const FOURTH_NON_REPAIR: usize = 95;

    /// The dev split of a later field set (`tests/fixtures/field_eval_N.tsv`, written after the
    /// engine was built, for the questions nobody here wrote): floors at the figures measured
    /// after tuning on it. Their held-out splits are measured by hand at most twice and never
    /// by a test.
    fn later_field_set_dev_split(
        text: &str,
        right_first: f64,
        none_answered: f64,
        non_repair: usize,
    ) {
        let cases = eval::parse(text).expect("field set parses");
        assert!(cases.iter().filter(|c| c.split == "heldout").count() >= 200);
        let dev: Vec<eval::Case> = cases.into_iter().filter(|c| c.split == "dev").collect();
        assert!(dev.len() >= 200, "field set too small");
        let e = engine_with_assets();
        let outcomes = eval::run(&e, &dev);
        let t = crate::config::DEFAULT_MIN_RELEVANCE;
        println!("{}", eval::family_table(&outcomes, "dev", t));
        let all = eval::Figures::of(outcomes.iter(), t);
        assert!(all.right_first_rate() >= right_first, "{all:?}");
        assert!(all.none_answered_rate() <= none_answered, "{all:?}");
        assert!(
            all.non_repair_recognised * 100 >= non_repair * all.non_repair,
            "{all:?}"
        );
    }

    /// Authors 6-7 of the second field set (held-out: authors 8-9).
    #[test]
    fn second_field_set_dev_split() {
        let text = include_str!("../../tests/fixtures/field_eval_2.tsv");
        later_field_set_dev_split(text, 0.93, 0.03, 90);
    }

    /// Authors 10-11 of the third field set (held-out: authors 12-13).
    #[test]
    fn third_field_set_dev_split() {
        let text = include_str!("../../tests/fixtures/field_eval_3.tsv");
        later_field_set_dev_split(text, 0.98, 0.04, 95);
    }

    /// Authors 14-16 of the fourth field set (held-out: authors 17-18).
    #[test]
    fn fourth_field_set_dev_split() {
        let text = include_str!("../../tests/fixtures/field_eval_4.tsv");
        later_field_set_dev_split(text, FOURTH_RIGHT, FOURTH_NONE, FOURTH_NON_REPAIR);
    }

    /// Authors 19-21 of the fifth field set (held-out: authors 22-23).
    #[test]
    fn fifth_field_set_dev_split() {
        let text = include_str!("../../tests/fixtures/field_eval_5.tsv");
        later_field_set_dev_split(text, 0.94, 0.03, 95);
    }

    #[test]
    fn question_words_tell_languages_apart() {
        let e = engine_with_assets();
        // Spanish and Portuguese share most glossary words here ("hidráulico", "prensa",
        // "central"); "quantos" is Portuguese only.
        let text = "Quantos litros de óleo hidráulico leva a central da prensa 3?";
        let a = e.analyze(text);
        assert_eq!(e.language_code(a.language), "pt", "{:?}", a.terms);
        assert!(a.question_led);
        let a = ask_at(&e, "", text);
        assert_eq!(a.refusal, Some(Refusal::NotAFaultReport), "{:?}", a.ranked);
        // An English word among another language's question words is no evidence for it:
        // German "was" in an English report.
        let a = e.analyze("the pump was leaking at the seal");
        assert_eq!(e.language_code(a.language), "en");
    }

    #[test]
    fn a_text_naming_no_machine_needs_more_relevance() {
        let e = engine_with_assets();
        // Only "kaputt" (broken) matches an SOP: no machine named, none from the register.
        let badge = "Wie bekomme ich einen neuen Spindschlüssel? Meiner ist kaputt.";
        let a = ask_at(&e, "", badge);
        assert_eq!(a.refusal, Some(Refusal::NoDocument), "{:?}", a.ranked);
        // A machine named in the text or resolved from the register: the usual bar.
        let a = ask_at(&e, "", "the pump is broken, leaking at the seal");
        assert!(a.supported, "{:?}", a.refusal);
        assert_eq!(a.ranked[0], "SOP-PMP-002");
        let a = ask_at(&e, "pump-3", "broken, leaking at the seal");
        assert!(a.supported, "{:?}", a.refusal);
        // Switched off (ablation), the badge question gets repair steps: the bar is what
        // refuses it.
        let off = engine_without(Ablation {
            unnamed: true,
            ..Ablation::default()
        });
        assert!(ask_at(&off, "", badge).supported);
    }

    #[test]
    fn words_the_pack_lists_are_not_spelling_mistakes() {
        let e = engine_with_assets();
        // "cubos" (cubes) is a word of the Portuguese machine name "cortadora de cubos": it is
        // not corrected to the glossary's "cabos" (cables).
        let a = e.analyze("os cubos estão saindo tortos da linha");
        assert!(
            !a.rewrites.iter().any(|r| r.starts_with("cubos")),
            "{:?}",
            a.rewrites
        );
        // "Ersatz" (spare) is not "Versatz" (offset, a fault): the question stays one about
        // ordering.
        let a = e.analyze("Wer hat die Ersatz-Dichtungen für pump-3 bestellt?");
        assert!(!a.fault_word, "{:?}", a.terms);
        // Corrections keep the first letter: "pails" is not "fails".
        let a = e.analyze("need 20 pails of grease for the autolube, can someone raise the PR");
        assert!(!a.fault_word, "{:?}", a.rewrites);
        let a = ask_at(
            &e,
            "",
            "need 20 pails of grease for the autolube, can someone raise the PR",
        );
        assert_eq!(a.refusal, Some(Refusal::NotAFaultReport), "{:?}", a.ranked);
        // In another language a word its pack does not know is no English typo: Italian
        // "acuto" (shrill) is not "auto".
        let a = e.analyze("il ventilatore fa un fischio acuto da due giorni");
        assert!(
            !a.rewrites.iter().any(|r| r.starts_with("acuto")),
            "{:?}",
            a.rewrites
        );
        // A typo that keeps its first letter is still corrected.
        let a = e.analyze("gearbx leaking oil");
        assert!(
            a.rewrites.iter().any(|r| r == "gearbx ≈ gearbox"),
            "{:?}",
            a.rewrites
        );
    }

    #[test]
    fn a_word_is_not_the_machine_that_shares_its_stem() {
        let e = engine_with_assets();
        // "granuladora" (granulator, no SOP) stems like "gránulos" (granules).
        let a = e.analyze("hay gránulos quemados en el suelo debajo de la extrusora");
        assert_eq!(a.uncovered, None, "{:?}", a.terms);
        let a = e.analyze("la granuladora hace un ruido muy fuerte");
        assert_eq!(a.uncovered.as_deref(), Some("granuladora"));
        // A shorter inflection that begins the name's word is the name ("cook" of "cooking").
        let a = e.analyze("the cook kettle on line 2 lost steam twice tonight");
        assert_eq!(
            a.uncovered.as_deref(),
            Some("cooking kettle"),
            "{:?}",
            a.terms
        );
    }

    #[test]
    fn a_short_word_is_not_a_longer_key_with_its_stem() {
        let e = engine_with_assets();
        // Turkish "iş" (work) stems like the key "ısındı" (overheated).
        let a = e.analyze("pompa iş bitince durmuyor, ses yapıyor");
        assert!(
            !a.terms.iter().any(|t| t.starts_with("overh")),
            "{:?}",
            a.terms
        );
        // The key's own word still reads.
        let a = e.analyze("motor ısındı, koku var");
        assert!(
            a.terms.iter().any(|t| t.starts_with("overh")),
            "{:?}",
            a.terms
        );
        // So does a short key whose entry a longer key with its stem took over ("yağ" beside
        // "yağlar").
        let a = e.analyze("pompa yağ kaçırıyor");
        assert!(a.terms.iter().any(|t| t == "oil"), "{:?}", a.terms);
    }

    #[test]
    fn equipment_words_are_head_words_and_openers_are_not_statements() {
        let e = engine_with_assets();
        // "temperature" (of "temperature controller") and "cooler" modifiers: the text says
        // something beyond naming a machine, so it is a report.
        let a = ask_at(
            &e,
            "hpu-1",
            "L'olio arriva a 75 gradi dopo un'ora, lo scambiatore sembra non raffreddare.",
        );
        assert!(a.supported, "{:?}", a.refusal);
        assert_eq!(a.ranked[0], "SOP-HYD-004");
        // A machine's full name is still only a name: no report, no steps.
        for bare in ["hydraulic press 12", "air compressor 3", "mig welder 2"] {
            let a = ask_at(&e, "", bare);
            assert_eq!(a.refusal, Some(Refusal::NotAFaultReport), "{bare}");
        }
        // "okay so ..." opens a voice message; it does not say the rest works.
        let a = e.analyze(
            "okay so the pillow block on the tail conveyor is running really hot and grinding",
        );
        assert!(a.terms.contains(&"grind".to_string()), "{:?}", a.terms);
        // Later in a clause a fine word still marks it ("the motor runs okay but ...").
        let a = e.analyze("the motor runs okay but the gearbox is whining");
        assert!(!a.terms.contains(&"run".to_string()), "{:?}", a.terms);
    }

    #[test]
    fn negation_and_fine_clauses_are_not_faults() {
        let e = engine_with_assets();
        let labels = |text: &str| {
            let a = ask_at(&e, "mot-1", text);
            a.vision.symptoms_found
        };
        assert!(labels("motor won't start after the weekend")
            .contains(&"motor will not start".to_string()));
        let fine = labels("the motor runs fine, gearbox is whining");
        assert!(
            !fine.contains(&"motor will not start".to_string()),
            "{fine:?}"
        );
        assert!(fine.contains(&"whining".to_string()), "{fine:?}");
        let a = ask_at(
            &e,
            "pump-7",
            "no leak at the seal but the pump rattles like gravel",
        );
        assert!(
            !a.vision.symptoms_found.iter().any(|s| s.contains("leak")),
            "{:?}",
            a.vision
        );
        assert_eq!(
            a.guidance.cited_documents.first().map(String::as_str),
            Some("SOP-PMP-001")
        );
        // "hotter than normal" is not a clause that says all is fine.
        let a = ask_at(&e, "gbx-2", "gearbox running hotter than normal");
        assert_eq!(
            a.guidance.cited_documents.first().map(String::as_str),
            Some("SOP-GBX-001")
        );
    }

    #[test]
    fn german_compounds_umlauts_and_spanish_accents() {
        let e = engine_with_assets();
        let a = e.analyze("Öltemperatur am Hydraulikaggregat zu hoch");
        let b = e.analyze("Oeltemperatur am Hydraulikaggregat zu hoch");
        assert_eq!(e.lexicon().languages[a.language].code, "de");
        assert_eq!(a.terms, b.terms);
        for want in ["oil", "temperatur", "hydraul"] {
            assert!(a.terms.iter().any(|t| t == want), "{want} in {:?}", a.terms);
        }
        let c = e.analyze("la presión de descarga de la bomba es muy baja");
        let d = e.analyze("la presion de descarga de la bomba es muy baja");
        assert_eq!(e.lexicon().languages[c.language].code, "es");
        assert_eq!(c.terms, d.terms);
        assert!(c.terms.iter().any(|t| t == "pump"), "{:?}", c.terms);
    }

    #[test]
    fn typos_and_shorthand_are_understood() {
        let e = engine_with_assets();
        let a = e.analyze("baering on the condveyor is squeeling");
        for want in ["bear", "conveyor"] {
            assert!(a.terms.iter().any(|t| t == want), "{want} in {:?}", a.terms);
        }
        let a = e.analyze("pump cav at low tank level");
        assert!(a.terms.iter().any(|t| t == "cavit"), "{:?}", a.terms);
    }

    #[test]
    fn asset_class_documents_come_first() {
        let e = engine_with_assets();
        let first = |eq: &str| {
            ask_at(&e, eq, "overheating and tripping after an hour")
                .guidance
                .cited_documents
                .first()
                .cloned()
        };
        assert_eq!(first("cnc-5").as_deref(), Some("SOP-CNC-001"));
        assert_eq!(first("gbx-2").as_deref(), Some("SOP-GBX-001"));
        assert_eq!(first("mot-3").as_deref(), Some("SOP-MOT-001"));
        let a = ask_at(&e, "press-12", "oil leak");
        assert_eq!(a.asset.as_ref().unwrap().make, "Schuler");
        assert!(a.report.contains("Schuler"), "{}", a.report);
    }

    #[test]
    fn known_asset_without_sop_says_so() {
        let e = engine_with_assets();
        let a = ask_at(
            &e,
            "forklift-2",
            "hydraulic oil leaking from the mast, hose wet",
        );
        assert_eq!(a.refusal, Some(Refusal::NoSopForClass("forklift".into())));
        assert!(!a.supported && a.guidance.recommended_steps.is_empty());
        assert!(
            a.report.contains("no SOP") && a.report.contains("forklift"),
            "{}",
            a.report
        );
        // Unknown ids behave as before.
        let a = ask_at(
            &e,
            "m-1042",
            "hydraulic press oil leak at the main line hose",
        );
        assert!(a.supported && a.asset.is_none());
    }

    #[test]
    fn out_of_scope_objects_are_refused() {
        let e = engine_with_assets();
        for q in [
            "the water cooler in the office is leaking on the floor",
            "aircon in the meeting room blows warm air, fan noisy",
            "company car makes a knocking noise from the engine",
        ] {
            let a = ask_at(&e, "bldg-a", q);
            assert!(
                matches!(a.refusal, Some(Refusal::OutOfScope(_))),
                "{q}: {:?}",
                a.refusal
            );
        }
        // Plant equipment named first keeps the question in scope.
        let a = ask_at(
            &e,
            "chl-1",
            "chiller trips on high head pressure, the office aircon is off too",
        );
        assert!(a.supported, "{:?}", a.refusal);
    }

    #[test]
    fn questions_that_are_not_fault_reports_get_their_own_status() {
        let e = engine_with_assets();
        for (eq, q) in [
            ("", "how many hydraulic presses do we have in hall A?"),
            ("comp-1", "who is on call for the compressors this weekend?"),
            ("press-12", "press 12"),
            ("pump-7", "wie viele Pumpen haben wir auf Lager?"),
        ] {
            let a = ask_at(&e, eq, q);
            assert_eq!(a.refusal, Some(Refusal::NotAFaultReport), "{q}");
            assert!(a.guidance.recommended_steps.is_empty() && !a.supported);
        }
        // A report that mentions the on-call engineer at the end is still a report.
        let a = ask_at(
            &e,
            "hpu-2",
            "oil temperature at 68 and climbing, cooler water valve open, press sluggish, on call not answering",
        );
        assert!(a.supported, "{:?}", a.refusal);
    }

    #[test]
    fn machines_without_a_sop_are_named_in_every_language() {
        let e = engine_with_assets();
        for q in [
            "the diesel generator won't start on its weekly test, cranks and dies",
            "la carretilla elevadora pierde aceite hidráulico",
            "Gabelstapler verliert Hydrauliköl",
        ] {
            let a = ask_at(&e, "", q);
            assert!(
                matches!(a.refusal, Some(Refusal::NoSopForMachine(_))),
                "{q}: {:?}",
                a.refusal
            );
        }
        // Covered equipment named first: the machine is context.
        let a = ask_at(
            &e,
            "comp-1",
            "compressor next to the generator room trips on high temperature",
        );
        assert!(a.supported, "{:?}", a.refusal);
        // The asset register names a covered machine: an uncovered one in the text is where it
        // stands, not what failed.
        let q = "curing oven exhaust: the motor runs hot, paint on the housing gone brown, burning smell";
        let a = ask_at(&e, "", q);
        assert!(
            matches!(a.refusal, Some(Refusal::NoSopForMachine(_))),
            "{:?}",
            a.refusal
        );
        let a = ask_at(&e, "mot-8", q);
        assert!(a.supported, "{:?}", a.refusal);
        assert_eq!(a.guidance.cited_documents[0], "SOP-MOT-001");
    }

    #[test]
    fn a_question_about_something_needs_more_than_two_symptom_words() {
        let e = engine_with_assets();
        // Opens with a question word, no fault word, two symptom words: asks, does not report.
        let a = ask_at(
            &e,
            "",
            "Is the shuttle bus from Kent Station still running at 21:30 for the night shift?",
        );
        assert_eq!(a.refusal, Some(Refusal::NotAFaultReport), "{:?}", a.ranked);
        // A question that names a fault is still a report.
        let a = ask_at(
            &e,
            "pump-7",
            "why is pump 7 cavitating with low discharge pressure?",
        );
        assert!(a.supported, "{:?}", a.refusal);
        // Answered, as it names enough symptoms, but never confidently.
        let a = ask_at(
            &e,
            "",
            "How come the chiller condenser pressure is high every afternoon with the fins dirty?",
        );
        assert!(a.supported, "{:?}", a.refusal);
        assert!(a.confidence <= QUESTION_CONFIDENCE_CAP, "{}", a.confidence);
        // Yes/no openers in the other packs.
        for q in [
            "Ist die Presse 12 nächste Woche für die Umrüstung frei?",
            "Kunnen we de compressor zaterdag uitzetten voor de verbouwing?",
        ] {
            let a = ask_at(&e, "", q);
            assert_eq!(
                a.refusal,
                Some(Refusal::NotAFaultReport),
                "{q}: {:?}",
                a.ranked
            );
        }
        let a = ask_at(
            &e,
            "press-12",
            "Ist normal, dass die Presse 12 Öl verliert und die Schläuche tropfen?",
        );
        assert!(a.supported, "{:?}", a.refusal);
    }

    #[test]
    fn a_reported_consequence_supports_its_sop_below_the_threshold() {
        let e = engine_with_assets();
        let q = |text| Question {
            plant_id: "plant-7",
            equipment_id: "",
            problem_description: text,
            observed_defects: &[],
        };
        // "electricity bill up on the compressors" is an evidence line of the leak survey.
        let text = "Facilities say the electricity bill is up on the compressors this quarter.";
        let a = e.diagnose(&q(text));
        assert!(a.evidence && a.supported, "{:?}", a.refusal);
        assert_eq!(a.guidance.cited_documents[0], "MAINT-CMP-001");
        // Still answered with a threshold above its relevance ...
        let strict = a.best_relevance + 0.05;
        assert!(a.best_relevance >= EVIDENCE_MIN_RELEVANCE);
        let b = e.diagnose_at(&q(text), strict);
        assert!(b.supported, "{:?}", b.refusal);
        assert_eq!(b.guidance.cited_documents[0], "MAINT-CMP-001");
        // ... where a question without such a consequence is refused.
        let plain = "the compressors use more power this quarter";
        let c = e.diagnose(&q(plain));
        assert!(!c.evidence, "{:?}", c.ranked);
        let d = e.diagnose_at(&q(plain), c.best_relevance + 0.05);
        assert!(!d.supported);
    }

    #[test]
    fn run_on_voice_text_is_read_in_runs_of_terms() {
        let e = engine_with_assets();
        // One clause, no punctuation: the fault sits in a few words of a long run.
        let q = "um yeah the pump by the syrup room its dripping where the shaft goes into the \
                 casing like constantly theres a puddle now can some one come have a look";
        let a = ask_at(&e, "", q);
        assert!(a.supported, "{:?} {}", a.refusal, a.best_relevance);
        assert_eq!(a.guidance.cited_documents[0], "SOP-PMP-002");
    }

    #[test]
    fn a_language_without_a_pack_is_named_not_answered() {
        let e = engine_with_assets();
        for (q, name) in [
            ("насос сильно вибрирует и течёт масло", "Cyrillic"),
            (
                "pumpen läcker olja och det är ett konstigt ljud från motorn hela tiden",
                "Svenska",
            ),
        ] {
            let a = ask_at(&e, "pump-7", q);
            match &a.refusal {
                Some(Refusal::LanguageNotSupported(l)) => assert!(l.contains(name), "{q}: {l}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        // The supported ones are understood.
        for q in [
            "la pompe fait un bruit de gravier et la pression de refoulement est basse",
            "pompa hałasuje jak żwir i ciśnienie tłoczenia jest niskie",
            "pompa yüksek sesle çalışıyor, basınç düşük, çakıl sesi var",
        ] {
            let a = ask_at(&e, "pump-7", q);
            assert_eq!(
                a.guidance.cited_documents.first().map(String::as_str),
                Some("SOP-PMP-001"),
                "{q}: {:?}",
                a.refusal
            );
        }
    }

    #[test]
    fn supported_answer_cites_every_step() {
        let a = ask(
            &engine(),
            "hydraulic press shows vibration above 5mm/s and coolant leak near the primary line",
        );
        assert!(a.supported);
        assert!(!a.guidance.recommended_steps.is_empty());
        for s in &a.guidance.recommended_steps {
            assert!(s.starts_with("press-12: "), "{s}");
            assert!(
                a.guidance
                    .cited_documents
                    .iter()
                    .any(|d| s.contains(&format!("[{d} step"))),
                "{s}"
            );
        }
        assert!(a.confidence > 0.3 && a.confidence < 1.0, "{}", a.confidence);
        assert!(
            a.vision
                .symptoms_found
                .iter()
                .any(|s| s.contains("vibration")),
            "{:?}",
            a.vision
        );
    }

    #[test]
    fn unknown_problem_is_flagged_not_invented() {
        let a = ask(&engine(), "reset of my email password fails");
        assert!(!a.supported);
        assert!(a.guidance.cited_documents.is_empty() && a.guidance.recommended_steps.is_empty());
        assert_eq!(a.confidence, 0.0);
        assert!(a.report.contains("No SOP"), "{}", a.report);
        // A question that is not a repair request says so instead.
        let a = ask(&engine(), "how do I reset my email password");
        assert_eq!(a.refusal, Some(Refusal::NotAFaultReport));
        assert!(
            a.report.contains("does not describe a fault"),
            "{}",
            a.report
        );
    }

    #[test]
    fn camera_observations_are_merged() {
        let obs = [Observation {
            label: "Micro-Fracture".into(),
            confidence: 0.8,
        }];
        let a = engine().diagnose(&Question {
            plant_id: "p",
            equipment_id: "e",
            problem_description: "press vibrates",
            observed_defects: &obs,
        });
        assert!(a
            .vision
            .defects_found
            .contains(&"micro-fracture".to_string()));
        assert!(a
            .vision
            .findings
            .iter()
            .any(|f| f.source == "camera" && f.confidence == 0.8));
    }
}
