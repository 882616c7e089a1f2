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

pub mod index;
pub mod kb;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use self::index::{Hit, Index};
use self::kb::Document;

include!(concat!(env!("OUT_DIR"), "/embedded_kb.rs"));

/// The sample knowledge base compiled into the binary.
pub fn embedded_documents() -> Result<Vec<Document>, kb::KbError> {
    kb::parse_all(EMBEDDED_KB.iter().copied())
}

/// A defect reported by a camera system alongside the description.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    pub label: String,
    #[serde(default = "one")]
    pub confidence: f64,
}

fn one() -> f64 {
    1.0
}

/// What the engine needs from a request (validated by the caller).
#[derive(Debug, Clone)]
pub struct Question<'a> {
    pub plant_id: &'a str,
    pub equipment_id: &'a str,
    pub problem_description: &'a str,
    pub observed_defects: &'a [Observation],
}

/// A recognised defect or symptom.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub label: String,
    pub confidence: f64,
    /// `description` (matched in the text) or `camera` (sent by a vision system).
    pub source: &'static str,
}

/// `vision_analysis` of the response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VisionAnalysis {
    pub defects_found: Vec<String>,
    pub symptoms_found: Vec<String>,
    pub findings: Vec<Finding>,
    pub confidence: f64,
}

/// One cited document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Citation {
    pub document_id: String,
    pub title: String,
    pub relevance: f64,
}

/// `rag_guidance` of the response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Guidance {
    pub recommended_steps: Vec<String>,
    pub cited_documents: Vec<String>,
    pub citations: Vec<Citation>,
    pub safety_notes: Vec<String>,
}

/// The engine's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub vision: VisionAnalysis,
    pub guidance: Guidance,
    pub report: String,
    pub confidence: f64,
    /// False when no document supports the answer (the "I don't know" case).
    pub supported: bool,
    /// Best relevance seen, for logs.
    pub best_relevance: f64,
    /// The cited documents (indexes), for [`DiagnoseEngine::passages`].
    pub cited_docs: Vec<usize>,
    /// Approximate token counts of the question and the answer (≈ 4 characters per token).
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Engine settings (from `[engine]`).
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    pub min_relevance: f64,
    pub max_documents: usize,
    pub max_steps: usize,
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
    vocab: Vec<VocabEntry>,
    /// Vocabulary entries by their first term (indexes into `vocab`, ascending).
    vocab_by_first: rustc_hash::FxHashMap<String, Vec<usize>>,
    settings: EngineSettings,
}

/// Rough token estimate used when no LLM reports usage (OpenAI's rule of thumb).
pub fn approx_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn contains_run(hay: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

impl DiagnoseEngine {
    /// Builds the index and vocabulary.
    pub fn new(docs: Vec<Document>, settings: EngineSettings) -> DiagnoseEngine {
        let index = Index::build(&docs);
        let mut seen = BTreeSet::new();
        let mut vocab = Vec::new();
        for d in &docs {
            for (list, defect) in [(&d.defects, true), (&d.symptoms, false)] {
                for label in list {
                    if seen.insert((label.clone(), defect)) {
                        let terms = index.analyzer().terms(label);
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
        DiagnoseEngine {
            docs,
            index,
            vocab_by_first,
            vocab,
            settings,
        }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether the knowledge base is empty (never, once built from `kb::parse_all`).
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Ranked hits for a text, for tests and benchmarks.
    pub fn search(&self, text: &str, k: usize) -> Vec<(&Document, Hit)> {
        self.index
            .search(text, k)
            .into_iter()
            .map(|h| (&self.docs[h.doc], h))
            .collect()
    }

    fn vision(&self, q: &Question<'_>, terms: &[String]) -> VisionAnalysis {
        let mut findings: Vec<Finding> = Vec::new();
        let (mut defects_found, mut symptoms_found) = (Vec::new(), Vec::new());
        let mut covered: Vec<&[String]> = Vec::new();
        // Candidates: the entries whose first term occurs in the question, in vocabulary order
        // (longer phrases first).
        let mut candidates: Vec<usize> = terms
            .iter()
            .filter_map(|t| self.vocab_by_first.get(t.as_str()))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        for v in candidates.into_iter().map(|i| &self.vocab[i]) {
            // Skip a phrase wholly inside a longer one already found ("leak" in "coolant leak").
            if covered.iter().any(|c| contains_run(c, &v.terms)) || !contains_run(terms, &v.terms) {
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

    /// Answers one question.
    pub fn diagnose(&self, q: &Question<'_>) -> Answer {
        let camera_labels: Vec<&str> = q
            .observed_defects
            .iter()
            .map(|o| o.label.as_str())
            .collect();
        let terms = if camera_labels.is_empty() {
            self.index.analyzer().terms(q.problem_description)
        } else {
            self.index.analyzer().terms(&format!(
                "{} {}",
                q.problem_description,
                camera_labels.join(" ")
            ))
        };
        let vision = self.vision(q, &terms);
        let hits = self
            .index
            .search_terms(&terms, self.settings.max_documents.max(2));
        let best = hits.first().copied();
        let best_relevance = best.map_or(0.0, |h| h.relevance as f64);
        let supported =
            best.is_some_and(|h| h.key_match && h.relevance as f64 >= self.settings.min_relevance);

        let mut guidance = Guidance {
            recommended_steps: vec![],
            cited_documents: vec![],
            citations: vec![],
            safety_notes: vec![],
        };
        let mut cited_docs = Vec::new();
        let mut confidence = 0.0;
        if let (true, Some(top)) = (supported, best) {
            let cited: Vec<Hit> = hits
                .iter()
                .copied()
                .take(self.settings.max_documents)
                .filter(|h| {
                    h.key_match
                        && h.relevance as f64 >= self.settings.min_relevance
                        && h.score >= 0.6 * top.score
                })
                .collect();
            let per_doc = self.settings.max_steps.div_ceil(cited.len());
            for h in &cited {
                let d = &self.docs[h.doc];
                guidance.cited_documents.push(d.id.clone());
                guidance.citations.push(Citation {
                    document_id: d.id.clone(),
                    title: d.title.clone(),
                    relevance: round3(h.relevance as f64),
                });
                for s in d.safety.iter().take(2) {
                    guidance.safety_notes.push(format!("{s} [{}]", d.id));
                }
                for (n, s) in d.steps.iter().enumerate().take(per_doc) {
                    if guidance.recommended_steps.len() < self.settings.max_steps {
                        guidance.recommended_steps.push(format!(
                            "{}: {s} [{} step {}]",
                            q.equipment_id,
                            d.id,
                            n + 1
                        ));
                    }
                }
                cited_docs.push(h.doc);
            }
            let second = hits.get(1).map_or(0.0, |h| h.score);
            let margin = ((top.score - second) / top.score) as f64;
            // Relevance carries the evidence; a clear winner adds up to 30 % on top.
            confidence = (best_relevance.min(1.0) * (0.7 + 0.3 * margin) / 0.7).min(0.99);
        }
        let report = self.report(q, &vision, &guidance, supported, best_relevance);
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
            cited_docs,
            input_tokens,
            output_tokens,
        }
    }

    fn report(
        &self,
        q: &Question<'_>,
        v: &VisionAnalysis,
        g: &Guidance,
        supported: bool,
        best: f64,
    ) -> String {
        let mut r = format!(
            "Diagnostic report for equipment {} at plant {}. Reported problem: {}",
            q.equipment_id,
            q.plant_id,
            q.problem_description.trim()
        );
        if !r.ends_with('.') {
            r.push('.');
        }
        let found: Vec<&str> = v
            .defects_found
            .iter()
            .chain(&v.symptoms_found)
            .map(String::as_str)
            .collect();
        if !found.is_empty() {
            r.push_str(&format!(" Recognised: {}.", found.join(", ")));
        }
        if !supported {
            r.push_str(&format!(
                " No SOP in the local knowledge base covers this problem (best relevance {best:.2}, threshold {:.2}). \
                 No repair steps are suggested: make the equipment safe and escalate to maintenance engineering.",
                self.settings.min_relevance
            ));
            return r;
        }
        let titles: Vec<String> = g
            .citations
            .iter()
            .map(|c| format!("{} ({})", c.title, c.document_id))
            .collect();
        r.push_str(&format!(" Matching procedures: {}.", titles.join("; ")));
        r.push_str(" Recommended actions: ");
        r.push_str(
            &g.recommended_steps
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{}. {s}", i + 1))
                .collect::<Vec<_>>()
                .join(" "),
        );
        if !g.safety_notes.is_empty() {
            r.push_str(" Safety: ");
            r.push_str(&g.safety_notes.join(" "));
        }
        r.push_str(&format!(" Sources: {}.", g.cited_documents.join(", ")));
        r
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> DiagnoseEngine {
        DiagnoseEngine::new(
            embedded_documents().expect("embedded KB parses"),
            EngineSettings {
                min_relevance: 0.25,
                max_documents: 2,
                max_steps: 10,
            },
        )
    }

    fn ask<'a>(e: &DiagnoseEngine, text: &'a str) -> Answer {
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

    /// The labelled set: every covered question has its expected SOP as the top citation, and
    /// every `NONE` question is answered with "no SOP covers this".
    #[test]
    fn retrieval_quality_on_labelled_set() {
        let e = engine();
        let set = include_str!("../../tests/fixtures/retrieval_eval.tsv");
        let (mut covered, mut none, mut failures) = (0, 0, Vec::new());
        for line in set.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let (expected, query) = line.split_once('\t').expect("expected_id<TAB>query");
            let a = ask(&e, query);
            if expected == "NONE" {
                none += 1;
                if a.supported || !a.guidance.cited_documents.is_empty() {
                    failures.push(format!(
                        "NONE but cited {:?} (rel {}): {query}",
                        a.guidance.cited_documents, a.best_relevance
                    ));
                }
            } else {
                covered += 1;
                if a.guidance.cited_documents.first().map(String::as_str) != Some(expected) {
                    let top: Vec<_> = e
                        .search(query, 3)
                        .iter()
                        .map(|(d, h)| format!("{}:{:.2}", d.id, h.relevance))
                        .collect();
                    failures.push(format!(
                        "want {expected}, got {:?} top {top:?}: {query}",
                        a.guidance.cited_documents
                    ));
                }
            }
        }
        assert!(
            covered >= 20 && none >= 5,
            "labelled set too small: {covered} covered, {none} none"
        );
        assert!(
            failures.is_empty(),
            "{} of {} failed:\n{}",
            failures.len(),
            covered + none,
            failures.join("\n")
        );
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
        let a = ask(&engine(), "how do I reset my email password");
        assert!(!a.supported);
        assert!(a.guidance.cited_documents.is_empty() && a.guidance.recommended_steps.is_empty());
        assert_eq!(a.confidence, 0.0);
        assert!(a.report.contains("No SOP"));
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
