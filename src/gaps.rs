//! Knowledge gaps: the questions no SOP answered and the answers technicians rated badly.
//!
//! Every refusal (no SOP, no SOP for the machine or its class, not a fault report, a language
//! the lexicon does not read, out of scope) and every rating of 1 or 2 stars becomes one
//! `knowledge_gap` event: a JSON log line (shipped through the spool like every other event, so
//! a central subscriber can collect the questions), a count in
//! `copilot_edge_knowledge_gaps_total{plant_id,equipment_class,reason}` (labels bounded: the plant
//! label is the metrics' bounded plant label, the class comes from the asset register, the reason
//! from a fixed list), and an entry in a short in-memory list that `/v1/status` shows to a
//! signed-in maintenance engineer. The question text is cut to [`MAX_QUESTION_CHARS`].

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Question text kept per gap (and per answer awaiting a rating), in characters.
pub const MAX_QUESTION_CHARS: usize = 160;

/// Gaps kept for the status page.
pub const RECENT: usize = 50;

/// The reason of a rating that marks a gap.
pub const LOW_RATING: &str = "low_rating";

/// Ratings at or below this mark a gap.
pub const LOW_RATING_MAX: u8 = 2;

/// Longest equipment class kept as a label value (the asset register's classes are operator
/// configuration, so their number is bounded by the register).
const MAX_CLASS_LEN: usize = 64;

/// Class label for equipment the asset register does not know.
pub const UNKNOWN_CLASS: &str = "unknown";

/// What a gap says about the question behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Question {
    /// The plant the question came from, as the request named it.
    pub plant_id: String,
    /// The equipment the question was about, as the request named it.
    pub equipment_id: String,
    /// From the asset register; [`UNKNOWN_CLASS`] when it does not list the equipment.
    pub equipment_class: String,
    /// The language the question was understood in (lexicon code, `en` for English).
    pub language: String,
    /// The problem description, cut to [`MAX_QUESTION_CHARS`].
    pub text: String,
}

impl Question {
    /// The gap-relevant part of a question (the text cut to [`MAX_QUESTION_CHARS`]).
    pub fn new(
        plant_id: &str,
        equipment_id: &str,
        equipment_class: Option<&str>,
        language: &str,
        text: &str,
    ) -> Question {
        Question {
            plant_id: plant_id.to_string(),
            equipment_id: equipment_id.to_string(),
            equipment_class: equipment_class
                .filter(|c| {
                    !c.is_empty() && c.len() <= MAX_CLASS_LEN && !c.contains(char::is_control)
                })
                .unwrap_or(UNKNOWN_CLASS)
                .to_string(),
            language: language.to_string(),
            text: cut(text, MAX_QUESTION_CHARS),
        }
    }
}

/// One gap, as the status page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// RFC 3339, UTC.
    pub at: String,
    /// The request id of the answer that was refused or rated.
    pub request_id: String,
    /// A refusal code (`no_matching_sop`, `out_of_scope`, ...) or [`LOW_RATING`].
    pub reason: &'static str,
    #[serde(flatten)]
    /// The question behind the gap (its fields appear flattened in the JSON).
    pub question: Question,
}

/// The recent gaps, newest last.
#[derive(Default)]
pub struct RecentGaps {
    list: Mutex<VecDeque<Gap>>,
    /// `logging.gap_question_text`: the `knowledge_gap` event carries the question.
    log_text: bool,
}

impl RecentGaps {
    /// An empty list; `log_text` = the events carry the question text.
    pub fn new(log_text: bool) -> RecentGaps {
        RecentGaps {
            list: Mutex::default(),
            log_text,
        }
    }

    /// Records a gap: the event, the counter (`plant_label` is the bounded plant label value),
    /// the list.
    pub fn record(
        &self,
        metrics: &crate::metrics::Metrics,
        plant_label: &str,
        reason: &'static str,
        request_id: &str,
        trace_id: &str,
        q: &Question,
    ) {
        // Without the text when the plant keeps questions (which can name people) on site.
        let question = self.log_text.then_some(q.text.as_str());
        tracing::info!(
            trace_id,
            request_id,
            reason,
            plant_id = %q.plant_id,
            equipment_id = %q.equipment_id,
            equipment_class = %q.equipment_class,
            language = %q.language,
            question,
            "knowledge_gap"
        );
        metrics
            .knowledge_gaps
            .with_label_values(&[plant_label, &q.equipment_class, reason])
            .inc();
        let gap = Gap {
            at: crate::logging::rfc3339(std::time::SystemTime::now()),
            request_id: request_id.to_string(),
            reason,
            question: q.clone(),
        };
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= RECENT {
            list.pop_front();
        }
        list.push_back(gap);
    }

    /// Up to `n` gaps, newest first.
    pub fn newest(&self, n: usize) -> Vec<Gap> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().rev().take(n).cloned().collect()
    }
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
fn cut(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_text_is_cut_and_an_unknown_class_is_named() {
        let long = "é".repeat(MAX_QUESTION_CHARS + 10);
        let q = Question::new("p", "e", None, "fr", &long);
        assert_eq!(q.text.chars().count(), MAX_QUESTION_CHARS + 1);
        assert!(q.text.ends_with('…'));
        assert_eq!(q.equipment_class, UNKNOWN_CLASS);
        let q = Question::new("p", "e", Some("bad\nclass"), "en", " short ");
        assert_eq!(
            (q.text.as_str(), q.equipment_class.as_str()),
            ("short", UNKNOWN_CLASS)
        );
        assert_eq!(
            Question::new("p", "e", Some("centrifugal pump"), "en", "x").equipment_class,
            "centrifugal pump"
        );
    }

    #[test]
    fn the_list_keeps_the_newest_gaps() {
        let m = crate::metrics::test_metrics();
        let g = RecentGaps::default();
        for i in 0..RECENT + 5 {
            let q = Question::new("p", &format!("e{i}"), Some("pump"), "en", "leak");
            g.record(&m, "p", "no_sop", &i.to_string(), "t", &q);
        }
        let newest = g.newest(3);
        assert_eq!(newest.len(), 3);
        assert_eq!(newest[0].request_id, (RECENT + 4).to_string());
        assert_eq!(g.newest(usize::MAX).len(), RECENT);
        assert_eq!(
            m.knowledge_gaps
                .with_label_values(&["p", "pump", "no_sop"])
                .get(),
            (RECENT + 5) as u64
        );
    }
}
