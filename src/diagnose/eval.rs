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
    pub split: String,
    pub subset: String,
    pub expected: String,
    pub equipment_id: String,
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
    pub case: Case,
    /// Ranked document ids (best first, up to two).
    pub ranked: Vec<String>,
    pub best_relevance: f64,
    /// Refusal that does not depend on the threshold (out of scope, no SOP for the class),
    /// or no key-field match at all.
    pub hard_refusal: bool,
}

impl Outcome {
    fn covered(&self) -> bool {
        self.case.expected != "NONE"
    }
    fn answered_at(&self, t: f64) -> bool {
        !self.hard_refusal && !self.ranked.is_empty() && self.best_relevance >= t
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
                hard_refusal: matches!(
                    a.refusal,
                    Some(Refusal::OutOfScope(_) | Refusal::NoSopForClass(_) | Refusal::NoDocument)
                ),
            }
        })
        .collect()
}

/// Figures for one group of outcomes at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub covered: usize,
    pub none: usize,
    pub right_first: usize,
    pub right_top2: usize,
    pub covered_refused: usize,
    pub covered_wrong: usize,
    pub none_answered: usize,
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
                "[{}] want {} got {:?} rel {:.2}{}: {} ({})",
                o.case.subset,
                o.case.expected,
                o.ranked,
                o.best_relevance,
                if o.hard_refusal { " refused" } else { "" },
                o.case.query,
                o.case.equipment_id
            )
        })
        .collect()
}
