//! Ranked retrieval: a BM25 inverted index over the knowledge base, with field weights.
//!
//! Text is lower-cased, split on anything that is not a letter or digit, stripped of stop words
//! and of tokens containing digits (measurements such as `5mm` say nothing about *which* SOP),
//! and stemmed with the Snowball English stemmer, so "vibrates", "vibrating" and "vibration"
//! meet. Header fields (title, equipment, symptoms, defects) count [`KEY_FIELD_WEIGHT`] times.
//!
//! Scores are turned into a **relevance** in 0..1 by dividing by the score an ideal document
//! would reach (every query term present, saturated). Query words the knowledge base has never
//! seen still count in that ideal at the median idf: a question about a breakroom microwave then
//! scores low instead of matching on one incidental word. This is what makes "no SOP covers
//! this" possible without a language model.
//!
//! The index is built once and read concurrently (`&self` only); a query allocates one score
//! vector the size of the collection.

// Fx hashing: the keys are index terms and query words; lookups never insert, so there is
// nothing for crafted input to degrade.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use rust_stemmers::{Algorithm, Stemmer};

use super::kb::Document;

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// How much more a term in the title/equipment/symptoms/defects counts than one in the prose.
pub const KEY_FIELD_WEIGHT: u32 = 3;

const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as",
    "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
    "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
    "further", "get", "gets", "got", "had", "has", "have", "having", "he", "her", "here", "him",
    "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "keep", "keeps", "me",
    "more", "most", "my", "near", "no", "nor", "not", "now", "of", "off", "on", "once", "only",
    "or", "other", "our", "out", "over", "own", "same", "she", "should", "show", "shows", "so",
    "some", "still", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we",
    "were", "what", "when", "where", "which", "while", "who", "why", "will", "with", "would",
    "you", "your", "since", "seems", "seem", "today", "started", "start", "starts", "please",
    "help", "there's", "it's", "won't", "don't", "doesn't", "isn't",
];

/// Splits, filters and stems text into index terms.
pub struct Analyzer {
    stemmer: Stemmer,
    stop: HashSet<&'static str>,
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer {
            stemmer: Stemmer::create(Algorithm::English),
            stop: STOP_WORDS.iter().copied().collect(),
        }
    }
}

impl Analyzer {
    /// Terms of `text`, in order (duplicates kept).
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::with_capacity(16);
        let mut lower = String::with_capacity(48);
        for raw in text.split(|c: char| !c.is_alphanumeric()) {
            if raw.len() < 2 || raw.len() > 40 || raw.bytes().any(|b| b.is_ascii_digit()) {
                continue;
            }
            // One reused buffer for the lower-cased word; only the stem is allocated.
            lower.clear();
            if raw.is_ascii() {
                lower.extend(raw.bytes().map(|b| b.to_ascii_lowercase() as char));
            } else {
                lower.extend(raw.chars().flat_map(char::to_lowercase));
            }
            if self.stop.contains(lower.as_str()) {
                continue;
            }
            out.push(self.stemmer.stem(&lower).into_owned());
        }
        out
    }
}

/// One document's share of a posting list.
#[derive(Debug, Clone, Copy)]
struct Posting {
    doc: u32,
    /// Field-weighted term frequency.
    tf: u32,
    /// Whether the term occurs in a header field of that document.
    key: bool,
}

/// A ranked hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Index into the document list the index was built from.
    pub doc: usize,
    pub score: f32,
    /// Score divided by the ideal score for the query: 0..1.
    pub relevance: f32,
    /// The document matched at least one query term in a header field.
    pub key_match: bool,
}

/// The BM25 index.
pub struct Index {
    analyzer: Analyzer,
    terms: HashMap<String, u32>,
    postings: Vec<Vec<Posting>>,
    idf: Vec<f32>,
    doc_len: Vec<f32>,
    avg_len: f32,
    /// idf charged for query words the collection never saw.
    unknown_idf: f32,
}

impl Index {
    /// Builds the index over `docs`.
    pub fn build(docs: &[Document]) -> Index {
        let analyzer = Analyzer::default();
        let mut terms: HashMap<String, u32> = HashMap::default();
        let mut postings: Vec<Vec<Posting>> = Vec::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        for (i, d) in docs.iter().enumerate() {
            let mut tf: HashMap<u32, (u32, bool)> = HashMap::default();
            let mut len = 0u32;
            let key_text = format!(
                "{} {} {} {}",
                d.title,
                d.equipment.join(" "),
                d.symptoms.join(" "),
                d.defects.join(" ")
            );
            let body_text = format!("{} {}", d.summary, d.steps.join(" "));
            for (text, weight, key) in [
                (key_text.as_str(), KEY_FIELD_WEIGHT, true),
                (body_text.as_str(), 1, false),
            ] {
                for t in analyzer.terms(text) {
                    let next = terms.len() as u32;
                    let id = *terms.entry(t).or_insert(next);
                    if id as usize == postings.len() {
                        postings.push(Vec::new());
                    }
                    let e = tf.entry(id).or_insert((0, false));
                    e.0 += weight;
                    e.1 |= key;
                    len += weight;
                }
            }
            let mut entries: Vec<_> = tf.into_iter().collect();
            entries.sort_unstable_by_key(|(id, _)| *id);
            for (id, (tf, key)) in entries {
                postings[id as usize].push(Posting {
                    doc: i as u32,
                    tf,
                    key,
                });
            }
            doc_len.push(len as f32);
        }
        let n = docs.len().max(1) as f32;
        let idf: Vec<f32> = postings
            .iter()
            .map(|p| (1.0 + (n - p.len() as f32 + 0.5) / (p.len() as f32 + 0.5)).ln())
            .collect();
        let mut sorted = idf.clone();
        sorted.sort_by(f32::total_cmp);
        let unknown_idf = sorted.get(sorted.len() / 2).copied().unwrap_or(1.0);
        let avg_len = (doc_len.iter().sum::<f32>() / n).max(1.0);
        Index {
            analyzer,
            terms,
            postings,
            idf,
            doc_len,
            avg_len,
            unknown_idf,
        }
    }

    /// The analyzer, for callers that match vocabulary (vision analysis).
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Number of distinct terms.
    pub fn vocabulary_len(&self) -> usize {
        self.terms.len()
    }

    /// The best `k` documents for `query`, best first. Documents with no matching term are not
    /// returned at all.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        self.search_terms(&self.analyzer.terms(query), k)
    }

    /// [`Index::search`] for already analysed terms.
    pub fn search_terms(&self, terms: &[String], k: usize) -> Vec<Hit> {
        let mut q: Vec<&String> = terms.iter().collect();
        q.sort_unstable();
        q.dedup();
        let mut ideal = 0.0f32;
        let mut scores = vec![0.0f32; self.doc_len.len()];
        let mut key = vec![false; self.doc_len.len()];
        for t in q {
            let Some(&id) = self.terms.get(t.as_str()) else {
                ideal += self.unknown_idf * (K1 + 1.0);
                continue;
            };
            let idf = self.idf[id as usize];
            ideal += idf * (K1 + 1.0);
            for p in &self.postings[id as usize] {
                let d = p.doc as usize;
                let tf = p.tf as f32;
                let norm = K1 * (1.0 - B + B * self.doc_len[d] / self.avg_len);
                scores[d] += idf * tf * (K1 + 1.0) / (tf + norm);
                key[d] |= p.key;
            }
        }
        let mut hits: Vec<Hit> = scores
            .iter()
            .enumerate()
            .filter(|(_, s)| **s > 0.0)
            .map(|(doc, &score)| Hit {
                doc,
                score,
                relevance: if ideal > 0.0 {
                    (score / ideal).min(1.0)
                } else {
                    0.0
                },
                key_match: key[doc],
            })
            .collect();
        let k = k.min(hits.len());
        if k == 0 {
            return Vec::new();
        }
        hits.select_nth_unstable_by(k - 1, |a, b| {
            b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc))
        });
        hits.truncate(k);
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::kb::parse_document;

    fn doc(id: &str, title: &str, symptoms: &str, steps: &str) -> Document {
        parse_document("t", &format!("---\nid: {id}\ntitle: {title}\nequipment: x\nsymptoms: {symptoms}\ndefects: y\n---\n## Steps\n1. {steps}\n")).unwrap()
    }

    #[test]
    fn analyzer_stems_and_filters() {
        let a = Analyzer::default();
        assert_eq!(
            a.terms("The press VIBRATES; vibrating at 5mm/s"),
            vec!["press", "vibrat", "vibrat"]
        );
    }

    #[test]
    fn ranks_matching_document_first() {
        let docs = vec![
            doc(
                "A",
                "Pump cavitation",
                "noise, gravel sound",
                "Check suction pressure.",
            ),
            doc(
                "B",
                "Belt mistracking",
                "belt drifts sideways",
                "Adjust the tail pulley.",
            ),
        ];
        let idx = Index::build(&docs);
        let hits = idx.search("conveyor belt drifts to one side", 3);
        assert_eq!(hits[0].doc, 1);
        assert!(hits[0].key_match);
        assert!(hits[0].relevance > 0.3, "{hits:?}");
        assert!(idx.search("quarterly payroll spreadsheet", 3).is_empty());
    }

    #[test]
    fn unknown_words_lower_relevance() {
        let docs = vec![doc(
            "A",
            "Pump cavitation",
            "noise",
            "Check suction pressure.",
        )];
        let idx = Index::build(&docs);
        let focused = idx.search("pump noise", 1)[0].relevance;
        let diluted = idx.search("breakroom microwave fridge noise", 1)[0].relevance;
        assert!(diluted < focused / 2.0, "{focused} {diluted}");
    }
}
