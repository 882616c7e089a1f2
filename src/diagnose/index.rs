//! Ranked retrieval: a BM25 inverted index over the knowledge base, with field weights.
//!
//! Terms come from the caller's analyzer (the engine's English analysis: folded, stop words and
//! measurements dropped, Snowball-stemmed, so "vibrates", "vibrating" and "vibration" meet).
//! Header fields (title, equipment, symptoms, defects) count [`KEY_FIELD_WEIGHT`] times, the
//! `evidence:` header (consequences) [`EVIDENCE_WEIGHT`] times.
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
use rustc_hash::FxHashMap as HashMap;

use super::kb::Document;

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// How much more a term in the title/equipment/symptoms/defects counts than one in the prose.
pub const KEY_FIELD_WEIGHT: u32 = 3;
/// How much a term of the `evidence:` header (consequences in everyday words) counts: more than
/// the prose, less than the symptoms, since everyday words ("running", "floor") are less
/// specific. It is a key field: a consequence-only report can be answered from it. Chosen on the
/// dev split (2 against 1 and 3).
pub const EVIDENCE_WEIGHT: u32 = 2;

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
    /// BM25 score of the document for the query (the class boost applied); higher is better.
    pub score: f32,
    /// Score divided by the ideal score for the query, capped at 1.
    pub relevance: f32,
    /// The document matched at least one query term in a header field.
    pub key_match: bool,
    /// The document belongs to the asset's equipment class: ranked before every other document,
    /// its score and relevance raised by the boost factor.
    pub boosted: bool,
}

/// The BM25 index.
pub struct Index {
    terms: HashMap<String, u32>,
    postings: Vec<Vec<Posting>>,
    idf: Vec<f32>,
    doc_len: Vec<f32>,
    avg_len: f32,
    /// idf charged for query words the collection never saw.
    unknown_idf: f32,
}

impl Index {
    /// Builds the index over `docs`, with `analyze` turning text into index terms.
    pub fn build(docs: &[Document], analyze: impl Fn(&str) -> Vec<String>) -> Index {
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
                d.defects.join(" "),
            );
            let evidence_text = d.evidence.join(" ");
            let body_text = format!("{} {}", d.summary, d.steps.join(" "));
            for (text, weight, key) in [
                (key_text.as_str(), KEY_FIELD_WEIGHT, true),
                (evidence_text.as_str(), EVIDENCE_WEIGHT, true),
                (body_text.as_str(), 1, false),
            ] {
                for t in analyze(text) {
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
            terms,
            postings,
            idf,
            doc_len,
            avg_len,
            unknown_idf,
        }
    }

    /// Whether a term occurs anywhere in the collection.
    pub fn contains(&self, term: &str) -> bool {
        self.terms.contains_key(term)
    }

    /// Number of documents containing a term.
    pub fn doc_freq(&self, term: &str) -> usize {
        self.terms
            .get(term)
            .map_or(0, |&id| self.postings[id as usize].len())
    }

    /// Number of distinct terms.
    pub fn vocabulary_len(&self) -> usize {
        self.terms.len()
    }

    /// The relevance of one document for `terms` (score over the ideal score, as in
    /// [`Index::search_terms`], the score times `boost`), and how many distinct terms occur in it.
    pub fn relevance_of(&self, doc: usize, terms: &[&str], boost: f32) -> (f32, usize) {
        let mut q: Vec<&str> = terms.to_vec();
        q.sort_unstable();
        q.dedup();
        let (mut ideal, mut score, mut matched) = (0.0f32, 0.0f32, 0usize);
        for t in q {
            let Some(&id) = self.terms.get(t) else {
                ideal += self.unknown_idf * (K1 + 1.0);
                continue;
            };
            let idf = self.idf[id as usize];
            ideal += idf * (K1 + 1.0);
            if let Some(p) = self.postings[id as usize]
                .iter()
                .find(|p| p.doc as usize == doc)
            {
                let tf = p.tf as f32;
                let norm = K1 * (1.0 - B + B * self.doc_len[doc] / self.avg_len);
                score += idf * tf * (K1 + 1.0) / (tf + norm);
                matched += 1;
            }
        }
        if ideal > 0.0 {
            ((score * boost / ideal).min(1.0), matched)
        } else {
            (0.0, 0)
        }
    }

    /// The best `k` documents for the analysed `terms`, best first. Documents with no matching
    /// term are not returned at all. Documents listed in `boosted` (ascending indexes) rank as
    /// if their score were `boost` times higher; their relevance stays the unboosted one.
    pub fn search_terms(
        &self,
        terms: &[String],
        k: usize,
        boosted: &[u32],
        boost: f32,
    ) -> Vec<Hit> {
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
            .map(|(doc, &raw)| {
                let is_boosted = boosted.binary_search(&(doc as u32)).is_ok();
                let score = if is_boosted { raw * boost } else { raw };
                Hit {
                    doc,
                    score,
                    boosted: is_boosted,
                    relevance: if ideal > 0.0 {
                        (score / ideal).min(1.0)
                    } else {
                        0.0
                    },
                    key_match: key[doc],
                }
            })
            .collect();
        let k = k.min(hits.len());
        if k == 0 {
            return Vec::new();
        }
        hits.select_nth_unstable_by(k - 1, |a, b| {
            b.boosted
                .cmp(&a.boosted)
                .then(b.score.total_cmp(&a.score))
                .then(a.doc.cmp(&b.doc))
        });
        hits.truncate(k);
        hits.sort_by(|a, b| {
            b.boosted
                .cmp(&a.boosted)
                .then(b.score.total_cmp(&a.score))
                .then(a.doc.cmp(&b.doc))
        });
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

    /// A plain analyzer for these tests: lower-cased words, "to"/"one"/"side" dropped.
    fn terms(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 1 && !["to", "one", "side"].contains(w))
            .map(|w| w.to_lowercase().trim_end_matches('s').to_string())
            .collect()
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
        let idx = Index::build(&docs, terms);
        let hits = idx.search_terms(&terms("conveyor belt drifts to one side"), 3, &[], 1.0);
        assert_eq!(hits[0].doc, 1);
        assert!(hits[0].key_match);
        assert!(hits[0].relevance > 0.3, "{hits:?}");
        assert!(idx
            .search_terms(&terms("quarterly payroll spreadsheet"), 3, &[], 1.0)
            .is_empty());
        // A boosted document ranks first, its relevance raised by the same factor (capped at 1).
        let plain = idx.search_terms(&terms("pump belt"), 2, &[], 1.0);
        let boosted = idx.search_terms(&terms("pump belt"), 2, &[0], 1.5);
        assert_eq!(boosted[0].doc, 0);
        assert!(boosted[0].boosted);
        let p0 = plain.iter().find(|h| h.doc == 0).unwrap();
        assert!((p0.relevance * 1.5 - boosted[0].relevance).abs() < 1e-6);
    }

    #[test]
    fn unknown_words_lower_relevance() {
        let docs = vec![doc(
            "A",
            "Pump cavitation",
            "noise",
            "Check suction pressure.",
        )];
        let idx = Index::build(&docs, terms);
        let focused = idx.search_terms(&terms("pump noise"), 1, &[], 1.0)[0].relevance;
        let diluted =
            idx.search_terms(&terms("breakroom microwave fridge noise"), 1, &[], 1.0)[0].relevance;
        assert!(diluted < focused / 2.0, "{focused} {diluted}");
    }
}
