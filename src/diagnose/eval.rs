//! Answer quality on a labelled question set (`copilot-edge eval FILE`, and the
//! `retrieval_quality` test on `tests/fixtures/retrieval_eval.tsv`).
//!
//! The file is tab-separated with a header: `split subset expected equipment_id query`, where
//! `split` is `dev` (may be looked at while tuning) or `heldout` (never looked at while tuning),
//! `expected` is the SOP id that should be cited first or `NONE`. Reports per subset: right SOP
//! first, right SOP in the top two of the ranking, covered questions refused, and NONE questions
//! answered; and a threshold sweep (right answers kept against wrong answers let through).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{DiagnoseEngine, Question, Refusal};

/// One labelled question.
#[derive(Debug, Clone)]
pub struct Case {
    /// `dev` (may be looked at while tuning) or `heldout` (never looked at while tuning).
    pub split: String,
    /// The question's group in the reports (e.g. a subset name containing `nonrepair`).
    pub subset: String,
    /// The SOP id that should be cited first, or `NONE` when no SOP covers the question.
    pub expected: String,
    /// The equipment id the question is asked for (may resolve in the asset register).
    pub equipment_id: String,
    /// The technician's question as typed.
    pub query: String,
}

/// Parses the labelled file.
pub fn parse(text: &str) -> Result<Vec<Case>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 5 {
            return Err(format!(
                "line {}: {} fields, want 5 (split subset expected equipment_id query)",
                n + 1,
                f.len()
            ));
        }
        if f[0] != "dev" && f[0] != "heldout" {
            return Err(format!("line {}: split must be dev or heldout", n + 1));
        }
        out.push(Case {
            split: f[0].into(),
            subset: f[1].into(),
            expected: f[2].into(),
            equipment_id: f[3].into(),
            query: f[4].into(),
        });
    }
    Ok(out)
}

/// What the engine did with one case, threshold-independent (scored at threshold 0).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The labelled question.
    pub case: Case,
    /// Ranked document ids (best first, up to two).
    pub ranked: Vec<String>,
    /// Relevance of the best document (its best clause window), 0..=1.
    pub best_relevance: f64,
    /// Whether the question reports one of the best document's `evidence:` items (answered
    /// down to [`super::EVIDENCE_MIN_RELEVANCE`] whatever the threshold).
    pub evidence: bool,
    /// Refusal that does not depend on the threshold (out of scope, no SOP for the class or
    /// the machine, not a fault report, language not supported), or no key-field match at all.
    pub hard_refusal: bool,
    /// The refusal's code when the answer was refused at threshold 0.
    pub refusal: Option<&'static str>,
    /// `confidence_score` as the service would give it (threshold-independent).
    pub confidence: f64,
    /// What the intent and machine checks saw (non-repair phrase, uncovered machine, fault
    /// word, symptom words), for the dev misses.
    pub why: String,
}

impl Outcome {
    fn covered(&self) -> bool {
        self.case.expected != "NONE"
    }
    fn answered_at(&self, t: f64) -> bool {
        !self.hard_refusal
            && !self.ranked.is_empty()
            && (self.best_relevance >= t
                || self.evidence && self.best_relevance >= super::EVIDENCE_MIN_RELEVANCE)
    }
    fn right_first_at(&self, t: f64) -> bool {
        self.answered_at(t) && self.ranked.first() == Some(&self.case.expected)
    }
    fn right_top2(&self) -> bool {
        !self.hard_refusal && self.ranked.iter().take(2).any(|d| *d == self.case.expected)
    }
}

/// Runs every case through `engine` (whose `min_relevance` is ignored: outcomes are scored at
/// threshold 0 and thresholds applied afterwards).
pub fn run(engine: &DiagnoseEngine, cases: &[Case]) -> Vec<Outcome> {
    cases
        .iter()
        .map(|c| {
            let a = engine.diagnose_at(
                &Question {
                    plant_id: "eval",
                    equipment_id: &c.equipment_id,
                    problem_description: &c.query,
                    observed_defects: &[],
                },
                0.0,
            );
            Outcome {
                case: c.clone(),
                ranked: a.ranked.iter().take(2).cloned().collect(),
                best_relevance: a.best_relevance,
                evidence: a.evidence,
                hard_refusal: a.refusal.is_some(),
                refusal: a.refusal.as_ref().map(Refusal::code),
                confidence: a.confidence,
                why: {
                    let an = engine.analyze(&c.query);
                    format!(
                        "language {}, cue {:?}, question {}, machine {:?}, fault word {}, symptom words {}, equipment words {}, terms {}, rewrites {}",
                        engine.language_code(an.language),
                        an.non_repair,
                        an.question_led,
                        an.uncovered,
                        an.fault_word,
                        an.symptom_terms,
                        an.equipment_terms,
                        an.terms.join(" "),
                        an.rewrites.join("; ")
                    )
                },
            }
        })
        .collect()
}

/// Figures for one group of outcomes at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Questions with an expected SOP.
    pub covered: usize,
    /// Questions labelled `NONE`.
    pub none: usize,
    /// Covered questions answered with the expected SOP first.
    pub right_first: usize,
    /// Covered questions with the expected SOP in the ranking's top two.
    pub right_top2: usize,
    /// Covered questions refused (no answer at the threshold).
    pub covered_refused: usize,
    /// Covered questions answered with another SOP first.
    pub covered_wrong: usize,
    /// `NONE` questions answered rather than refused.
    pub none_answered: usize,
    /// `NONE` questions of a non-repair subset (its name contains `nonrepair`).
    pub non_repair: usize,
    /// Of those, the ones refused as `not_a_fault_report`.
    pub non_repair_recognised: usize,
}

impl Figures {
    /// Computes the figures of `outcomes` at threshold `t`.
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>, t: f64) -> Figures {
        let mut f = Figures::default();
        for o in outcomes {
            if o.covered() {
                f.covered += 1;
                f.right_first += usize::from(o.right_first_at(t));
                f.right_top2 += usize::from(o.right_top2());
                if !o.answered_at(t) {
                    f.covered_refused += 1;
                } else if !o.right_first_at(t) {
                    f.covered_wrong += 1;
                }
            } else {
                f.none += 1;
                f.none_answered += usize::from(o.answered_at(t));
                if o.case.subset.contains("nonrepair") {
                    f.non_repair += 1;
                    f.non_repair_recognised +=
                        usize::from(o.refusal == Some(Refusal::NotAFaultReport.code()));
                }
            }
        }
        f
    }

    /// Right SOP first, as a share of covered questions.
    pub fn right_first_rate(&self) -> f64 {
        ratio(self.right_first, self.covered)
    }

    /// NONE questions answered, as a share of NONE questions.
    pub fn none_answered_rate(&self) -> f64 {
        ratio(self.none_answered, self.none)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "–".into()
    } else {
        format!("{:.0} % ({a}/{b})", 100.0 * a as f64 / b as f64)
    }
}

/// Per-subset figures of one split at threshold `t`, keyed by subset (plus `all`).
pub fn by_subset(outcomes: &[Outcome], split: &str, t: f64) -> BTreeMap<String, Figures> {
    let mine: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| split == "all" || o.case.split == split)
        .collect();
    let mut out = BTreeMap::new();
    let mut subsets: Vec<&str> = mine.iter().map(|o| o.case.subset.as_str()).collect();
    subsets.sort_unstable();
    subsets.dedup();
    for s in subsets {
        out.insert(
            s.to_string(),
            Figures::of(mine.iter().copied().filter(|o| o.case.subset == s), t),
        );
    }
    out.insert("all".into(), Figures::of(mine.iter().copied(), t));
    out
}

/// The per-subset table of one split, as Markdown.
pub fn subset_table(outcomes: &[Outcome], split: &str, t: f64) -> String {
    let mut s = format!(
        "split {split}, threshold {t:.2}\n\n| subset | questions | right SOP first | right SOP in top 2 | covered but refused | NONE answered |\n|---|---|---|---|---|---|\n"
    );
    for (name, f) in by_subset(outcomes, split, t) {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            f.covered + f.none,
            pct(f.right_first, f.covered),
            pct(f.right_top2, f.covered),
            pct(f.covered_refused, f.covered),
            pct(f.none_answered, f.none),
        );
    }
    s
}

/// The family a subset belongs to: `English` for `en-*` (and the older sets' English
/// subsets), the language code for a language, `consequence`, `out of scope` for `oos-*`.
pub fn family(subset: &str) -> String {
    match subset {
        s if s.starts_with("en") || ["clean", "shorthand", "typo"].contains(&s) => "English".into(),
        s if s.starts_with("oos") || s == "near_miss" || s == "no_sop_class" => {
            "out of scope".into()
        }
        "consequence" | "indirect" => "consequence".into(),
        s => s.to_string(),
    }
}

/// Per-family figures of one split at threshold `t` (English styles together, each language,
/// consequence-only, out of scope with the non-repair questions recognised), as Markdown.
pub fn family_table(outcomes: &[Outcome], split: &str, t: f64) -> String {
    let mut groups: BTreeMap<String, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes
        .iter()
        .filter(|o| split == "all" || o.case.split == split)
    {
        groups.entry(family(&o.case.subset)).or_default().push(o);
        groups.entry("all".into()).or_default().push(o);
    }
    let mut s = format!(
        "split {split} by family, threshold {t:.2}\n\n| family | questions | right SOP first | covered but refused | NONE answered | non-repair recognised |\n|---|---|---|---|---|---|\n"
    );
    for (name, list) in &groups {
        let f = Figures::of(list.iter().copied(), t);
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            f.covered + f.none,
            pct(f.right_first, f.covered),
            pct(f.covered_refused, f.covered),
            pct(f.none_answered, f.none),
            pct(f.non_repair_recognised, f.non_repair),
        );
    }
    s
}

/// Confidence bands of one split: how many answers fall in each, the share whose first SOP is
/// right (a NONE question answered counts as wrong), and the NONE questions among them.
pub fn reliability_table(outcomes: &[Outcome], split: &str, t: f64) -> String {
    let bands = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01)];
    let mut s = format!(
        "split {split}: reliability of confidence_score (answers at threshold {t:.2})\n\n| confidence | answers | first SOP right | NONE questions answered |\n|---|---|---|---|\n"
    );
    for (lo, hi) in bands {
        let inside: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| split == "all" || o.case.split == split)
            .filter(|o| o.answered_at(t) && o.confidence >= lo && o.confidence < hi)
            .collect();
        let right = inside.iter().filter(|o| o.right_first_at(t)).count();
        let none = inside.iter().filter(|o| !o.covered()).count();
        let _ = writeln!(
            s,
            "| {lo:.1}–{:.1} | {} | {} | {none} |",
            hi.min(1.0),
            inside.len(),
            pct(right, inside.len()),
        );
    }
    s
}

/// The threshold sweep of one split, as Markdown.
pub fn sweep_table(outcomes: &[Outcome], split: &str) -> String {
    let mut s = format!(
        "split {split}: refusal threshold sweep\n\n| threshold | right answers kept | covered refused | wrong SOP given | NONE answered |\n|---|---|---|---|---|\n"
    );
    for step in 0..=12 {
        let t = 0.05 * step as f64;
        let f = Figures::of(
            outcomes
                .iter()
                .filter(|o| split == "all" || o.case.split == split),
            t,
        );
        let _ = writeln!(
            s,
            "| {t:.2} | {} | {} | {} | {} |",
            pct(f.right_first, f.covered),
            pct(f.covered_refused, f.covered),
            pct(f.covered_wrong, f.covered),
            pct(f.none_answered, f.none),
        );
    }
    s
}

/// The misses of one split at threshold `t`, one line each (for tuning on `dev` only).
pub fn misses(outcomes: &[Outcome], split: &str, t: f64) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.case.split == split)
        .filter(|o| {
            if o.covered() {
                !o.right_first_at(t)
            } else {
                o.answered_at(t)
            }
        })
        .map(|o| {
            format!(
                "[{}] want {} got {:?} rel {:.2}{}: {} ({}) [{}]",
                o.case.subset,
                o.case.expected,
                o.ranked,
                o.best_relevance,
                o.refusal
                    .map(|r| format!(" refused: {r}"))
                    .unwrap_or_default(),
                o.case.query,
                o.case.equipment_id,
                o.why
            )
        })
        .collect()
}

/// Every outcome of one split as a tab-separated line (subset, expected, ranked, relevance,
/// confidence, refusal, what the checks saw, question), for analysis by script (`dev` only).
pub fn outcome_lines(outcomes: &[Outcome], split: &str) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.case.split == split)
        .map(|o| {
            format!(
                "{}\t{}\t{}\t{:.3}\t{:.3}\t{}\t{}, evidence {}\t{}",
                o.case.subset,
                o.case.expected,
                o.ranked.join(","),
                o.best_relevance,
                o.confidence,
                o.refusal.unwrap_or("-"),
                o.why,
                o.evidence,
                o.case.query
            )
        })
        .collect()
}
