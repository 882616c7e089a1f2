//! The GREEN / AMBER / RED verdict: each headline figure is judged against its target, and the
//! overall health is the worst verdict, with a reason for every figure that is not GREEN. Pure.
//! The rules are tabled in the module doc of [`crate::report`]; the thresholds are the constants
//! below, and the table-driven tests pin every boundary.

use std::fmt;

use super::fmt::{ms, pct, score, usd};
use super::model::{Feedback, Ratio, Report};

/// Uptime target and RED line.
pub const UPTIME_TARGET: f64 = 0.995;
/// Uptime below this is RED (AMBER from here to the target).
pub const UPTIME_RED: f64 = 0.99;
/// The latency SLA (P95, seconds) and the AMBER line below it.
pub const P95_SLA: f64 = 0.5;
/// P95 above this (and at most the SLA) is AMBER: within 10 % of the SLA, seconds.
pub const P95_AMBER: f64 = 0.45;
/// Error rate target and RED line.
pub const ERROR_TARGET: f64 = 0.03;
/// A 5xx share at or above this is RED.
pub const ERROR_RED: f64 = 0.045;
/// Hallucination rate target and RED line.
pub const HALLUCINATION_TARGET: f64 = 0.05;
/// A hallucination rate at or above this is RED.
pub const HALLUCINATION_RED: f64 = 0.075;
/// Average feedback target and RED line.
pub const FEEDBACK_TARGET: f64 = 4.0;
/// An average rating at or below this is RED.
pub const FEEDBACK_RED: f64 = 3.5;
/// Cost above budget × this is RED.
pub const COST_RED_FACTOR: f64 = 1.2;

/// A verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// The target is met.
    Green,
    /// A near miss, or a figure without data.
    Amber,
    /// A wide miss.
    Red,
}

impl Status {
    /// `GREEN`, `AMBER` or `RED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Green => "GREEN",
            Status::Amber => "AMBER",
            Status::Red => "RED",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A figure that has a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Figure {
    /// Share of the week the gateways were up.
    Uptime,
    /// P95 latency of the SLA agent.
    P95,
    /// 5xx share of API responses.
    Errors,
    /// Share of answers citing no document.
    Hallucinations,
    /// Average user rating.
    Feedback,
    /// Estimated LLM cost against the weekly budget.
    Cost,
}

/// One judged figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Its verdict.
    pub status: Status,
    /// Why, for AMBER and RED (empty for GREEN).
    pub reason: String,
}

/// The overall health and the verdict of each figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The worst verdict (one plant alone raises it to AMBER at most).
    pub overall: Status,
    /// Verdicts of the scope's figures (the cost is absent without a budget).
    pub figures: Vec<(Figure, Verdict)>,
    /// Every AMBER/RED reason, scope figures first, then plants, worst first within each.
    pub reasons: Vec<(Status, String)>,
}

impl Assessment {
    /// The verdict of one scope figure.
    pub fn status(&self, f: Figure) -> Option<Status> {
        self.figures
            .iter()
            .find(|(g, _)| *g == f)
            .map(|(_, v)| v.status)
    }
}

fn banded(green: bool, amber: bool) -> Status {
    if green {
        Status::Green
    } else if amber {
        Status::Amber
    } else {
        Status::Red
    }
}

/// Verdict on an uptime ratio (0..1).
pub fn uptime(r: f64) -> Status {
    banded(r >= UPTIME_TARGET, r >= UPTIME_RED)
}

/// Verdict on a P95 latency in seconds.
pub fn p95(seconds: f64) -> Status {
    banded(seconds <= P95_AMBER, seconds <= P95_SLA)
}

/// Verdict on a 5xx share (0..1).
pub fn error_rate(r: f64) -> Status {
    banded(r < ERROR_TARGET, r < ERROR_RED)
}

/// Verdict on a hallucination rate (0..1).
pub fn hallucination_rate(r: f64) -> Status {
    banded(r < HALLUCINATION_TARGET, r < HALLUCINATION_RED)
}

/// Verdict on an average rating (1..5).
pub fn feedback(avg: f64) -> Status {
    banded(avg > FEEDBACK_TARGET, avg > FEEDBACK_RED)
}

/// None when there is no budget.
pub fn cost(usd: f64, budget: f64) -> Option<Status> {
    (budget > 0.0).then(|| banded(usd <= budget, usd <= budget * COST_RED_FACTOR))
}

fn verdict(status: Status, amber: String, red: String) -> Verdict {
    let reason = match status {
        Status::Green => String::new(),
        Status::Amber => amber,
        Status::Red => red,
    };
    Verdict { status, reason }
}

fn no_data(what: &str) -> Verdict {
    Verdict {
        status: Status::Amber,
        reason: format!("{what}: no data for the week, the target cannot be confirmed"),
    }
}

fn judge_p95(v: Option<f64>) -> Verdict {
    match v {
        None => no_data("P95 latency"),
        Some(s) => verdict(
            p95(s),
            format!("P95 latency {} is within 10% of the {} SLA", ms(s), sla()),
            format!("P95 latency {} misses the {} SLA", ms(s), sla()),
        ),
    }
}

fn judge_rate(
    name: &str,
    v: Option<Ratio>,
    target: f64,
    red: f64,
    rule: fn(f64) -> Status,
) -> Verdict {
    match v {
        None => no_data(name),
        Some(r) => {
            let r = r.rate();
            verdict(
                rule(r),
                format!(
                    "{name} {} is not below the {} target",
                    pct(r),
                    pct_short(target)
                ),
                format!(
                    "{name} {} is at or above {} (target below {})",
                    pct(r),
                    pct_short(red),
                    pct_short(target)
                ),
            )
        }
    }
}

fn judge_feedback(v: Option<Feedback>) -> Verdict {
    match v {
        None => Verdict {
            status: Status::Amber,
            reason: "Average feedback: no ratings received in the week".to_string(),
        },
        Some(f) => verdict(
            feedback(f.average),
            format!(
                "Average feedback {} is not above the {:.1} target",
                score(f.average),
                FEEDBACK_TARGET
            ),
            format!(
                "Average feedback {} is at or below {:.1} (target above {:.1})",
                score(f.average),
                FEEDBACK_RED,
                FEEDBACK_TARGET
            ),
        ),
    }
}

/// The SLA as text: `500 ms`.
pub fn sla() -> String {
    format!("{} ms", P95_SLA * 1000.0)
}

/// `0.05` → `5%`, `0.045` → `4.5%` (for thresholds, which are round numbers).
pub fn pct_short(r: f64) -> String {
    let s = format!("{:.2}", r * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Judges the report.
pub fn assess(report: &Report) -> Assessment {
    let f = &report.figures;
    let mut figures = vec![
        (
            Figure::Uptime,
            match f.uptime {
                None => no_data("Uptime"),
                Some(u) => verdict(
                    uptime(u.ratio),
                    format!(
                        "Uptime {} is below the {} target",
                        pct(u.ratio),
                        pct_short(UPTIME_TARGET)
                    ),
                    format!(
                        "Uptime {} is below {} (target {})",
                        pct(u.ratio),
                        pct_short(UPTIME_RED),
                        pct_short(UPTIME_TARGET)
                    ),
                ),
            },
        ),
        (Figure::P95, judge_p95(f.p95_seconds)),
        (
            Figure::Errors,
            judge_rate("Error rate", f.errors, ERROR_TARGET, ERROR_RED, error_rate),
        ),
        (
            Figure::Hallucinations,
            judge_rate(
                "Hallucination rate",
                f.hallucinations,
                HALLUCINATION_TARGET,
                HALLUCINATION_RED,
                hallucination_rate,
            ),
        ),
        (Figure::Feedback, judge_feedback(f.feedback)),
    ];
    if let Some(usd_spent) = f.cost_usd {
        if let Some(status) = cost(usd_spent, report.budget_usd) {
            figures.push((
                Figure::Cost,
                verdict(
                    status,
                    format!(
                        "LLM cost {} is over the {} weekly budget",
                        usd(usd_spent),
                        usd(report.budget_usd)
                    ),
                    format!(
                        "LLM cost {} is more than 20% over the {} weekly budget",
                        usd(usd_spent),
                        usd(report.budget_usd)
                    ),
                ),
            ));
        }
    }
    let mut reasons: Vec<(Status, String)> = figures
        .iter()
        .filter(|(_, v)| v.status != Status::Green)
        .map(|(_, v)| (v.status, v.reason.clone()))
        .collect();
    reasons.sort_by(|a, b| b.0.cmp(&a.0));
    let mut plant_reasons = Vec::new();
    if report.plants.len() > 1 {
        for p in &report.plants {
            let checks = [
                judge_p95(p.p95_seconds),
                judge_rate(
                    "Hallucination rate",
                    p.hallucinations,
                    HALLUCINATION_TARGET,
                    HALLUCINATION_RED,
                    hallucination_rate,
                ),
                judge_feedback(p.feedback),
            ];
            for v in checks.into_iter().filter(|v| v.status != Status::Green) {
                // One plant alone raises the overall health to AMBER at most.
                plant_reasons.push((
                    v.status,
                    format!("{}: {} ({})", p.plant, lowercase_first(&v.reason), v.status),
                ));
            }
        }
        plant_reasons.sort_by(|a, b| b.0.cmp(&a.0));
    }
    let overall = figures
        .iter()
        .map(|(_, v)| v.status)
        .chain(plant_reasons.iter().map(|(s, _)| (*s).min(Status::Amber)))
        .max()
        .unwrap_or(Status::Green);
    reasons.extend(plant_reasons);
    Assessment {
        overall,
        figures,
        reasons,
    }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if !s.starts_with("P95") => f.to_lowercase().chain(c).collect(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::*;
    use crate::report::week::{Date, Week};

    #[test]
    fn figures_fall_in_green_amber_red_bands_at_their_bounds() {
        use Status::*;
        let cases: &[(&str, Status, Status)] = &[
            ("uptime 1.0", uptime(1.0), Green),
            ("uptime 0.995", uptime(0.995), Green),
            ("uptime 0.9949", uptime(0.9949), Amber),
            ("uptime 0.99", uptime(0.99), Amber),
            ("uptime 0.9899", uptime(0.9899), Red),
            ("p95 0.3", p95(0.3), Green),
            ("p95 0.45", p95(0.45), Green),
            ("p95 0.46", p95(0.46), Amber),
            ("p95 0.5", p95(0.5), Amber),
            ("p95 0.5001", p95(0.5001), Red),
            ("errors 0.0299", error_rate(0.0299), Green),
            ("errors 0.03", error_rate(0.03), Amber),
            ("errors 0.045", error_rate(0.045), Red),
            ("halluc 0.0333", hallucination_rate(1.0 / 30.0), Green),
            ("halluc 0.05", hallucination_rate(2016.0 / 40320.0), Amber),
            ("halluc 0.0749", hallucination_rate(0.0749), Amber),
            ("halluc 0.075", hallucination_rate(0.075), Red),
            ("feedback 4.01", feedback(4.01), Green),
            ("feedback 4.0", feedback(4.0), Amber),
            ("feedback 3.51", feedback(3.51), Amber),
            ("feedback 3.5", feedback(3.5), Red),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(cost(50.0, 50.0), Some(Green));
        assert_eq!(cost(60.0, 50.0), Some(Amber));
        assert_eq!(cost(60.01, 50.0), Some(Red));
        assert_eq!(cost(1e6, 0.0), None);
        assert_eq!(pct_short(0.995), "99.5%");
        assert_eq!(pct_short(0.045), "4.5%");
        assert_eq!(pct_short(0.05), "5%");
    }

    fn report() -> Report {
        let week = Week::containing(Date::parse("2026-11-09").unwrap());
        Report {
            week,
            plant: None,
            source: "http://prom".into(),
            budget_usd: 50.0,
            figures: Figures {
                uptime: Some(Uptime {
                    ratio: 0.999,
                    source: UptimeSource::Scrape,
                    gateways: 2,
                }),
                p95_seconds: Some(0.3),
                requests: 100.0,
                errors: Ratio::new(Some(1.0), Some(100.0)),
                hallucinations: Ratio::new(Some(1.0), Some(100.0)),
                feedback: Feedback::new(Some(450.0), Some(100.0)),
                tokens: vec![],
                cost_usd: Some(10.0),
            },
            plants: vec![],
            equipment: vec![],
            gaps: vec![],
            gap_examples_read: false,
            alerts: vec![],
            worst_hour: None,
            days: vec![],
        }
    }

    fn plant(name: &str, p95: f64, halluc: f64, fb: f64) -> PlantRow {
        PlantRow {
            plant: name.into(),
            requests: 100.0,
            p95_seconds: Some(p95),
            hallucinations: Ratio::new(Some(halluc * 100.0), Some(100.0)),
            feedback: Feedback::new(Some(fb * 10.0), Some(10.0)),
        }
    }

    #[test]
    fn all_green() {
        let a = assess(&report());
        assert_eq!(a.overall, Status::Green);
        assert!(a.reasons.is_empty(), "{:?}", a.reasons);
        assert_eq!(a.figures.len(), 6);
    }

    #[test]
    fn worst_figure_wins_and_reasons_are_listed() {
        let cases: Vec<(&str, Box<dyn Fn(&mut Report)>, Status, &str)> = vec![
            (
                "near-miss uptime",
                Box::new(|r| r.figures.uptime.as_mut().unwrap().ratio = 0.9911),
                Status::Amber,
                "Uptime 99.11% is below the 99.5% target",
            ),
            (
                "sla missed",
                Box::new(|r| r.figures.p95_seconds = Some(0.62)),
                Status::Red,
                "P95 latency 620.0 ms misses the 500 ms SLA",
            ),
            (
                "no ratings",
                Box::new(|r| r.figures.feedback = None),
                Status::Amber,
                "Average feedback: no ratings received in the week",
            ),
            (
                "no uptime data",
                Box::new(|r| r.figures.uptime = None),
                Status::Amber,
                "Uptime: no data for the week, the target cannot be confirmed",
            ),
            (
                "errors far off",
                Box::new(|r| r.figures.errors = Ratio::new(Some(6.0), Some(100.0))),
                Status::Red,
                "Error rate 6.00% is at or above 4.5% (target below 3%)",
            ),
            (
                "over budget",
                Box::new(|r| r.figures.cost_usd = Some(55.0)),
                Status::Amber,
                "LLM cost $55.00 is over the $50.00 weekly budget",
            ),
            (
                "no budget, no verdict",
                Box::new(|r| {
                    r.budget_usd = 0.0;
                    r.figures.cost_usd = Some(1e6)
                }),
                Status::Green,
                "",
            ),
            (
                "feedback low",
                Box::new(|r| r.figures.feedback = Feedback::new(Some(34.0), Some(10.0))),
                Status::Red,
                "Average feedback 3.40 is at or below 3.5 (target above 4.0)",
            ),
        ];
        for (name, change, want, reason) in cases {
            let mut r = report();
            change(&mut r);
            let a = assess(&r);
            assert_eq!(a.overall, want, "{name}");
            if reason.is_empty() {
                assert!(a.reasons.is_empty(), "{name}: {:?}", a.reasons);
            } else {
                assert_eq!(a.reasons, vec![(want, reason.to_string())], "{name}");
            }
        }
    }

    #[test]
    fn one_plant_raises_to_amber_at_most() {
        let mut r = report();
        r.plants = vec![
            plant("plant-3", 0.3, 0.01, 4.5),
            plant("plant-7", 0.9, 0.05, 4.5),
        ];
        let a = assess(&r);
        assert_eq!(a.overall, Status::Amber);
        assert_eq!(
            a.reasons,
            vec![
                (
                    Status::Red,
                    "plant-7: P95 latency 900.0 ms misses the 500 ms SLA (RED)".to_string()
                ),
                (
                    Status::Amber,
                    "plant-7: hallucination rate 5.00% is not below the 5% target (AMBER)"
                        .to_string()
                ),
            ]
        );
        // A single plant (or --plant) is judged only through the scope's own figures.
        r.plants.truncate(1);
        r.plants[0].p95_seconds = Some(0.9);
        assert_eq!(assess(&r).overall, Status::Green);
        // A RED scope figure stays RED, and comes first.
        r.plants = vec![plant("a", 0.3, 0.06, 4.5), plant("b", 0.3, 0.0, 4.5)];
        r.figures.p95_seconds = Some(0.7);
        let a = assess(&r);
        assert_eq!(a.overall, Status::Red);
        assert_eq!(a.reasons[0].0, Status::Red);
        assert!(a.reasons[1].1.starts_with("a: hallucination rate 6.00%"));
    }
}
