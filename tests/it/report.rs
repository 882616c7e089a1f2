//! `copilot-edge report` against a real Prometheus holding a whole synthetic week of the agent's
//! metrics with known values.
//!
//! The week of Mon 2026-11-09 (plus 2 h of samples on either side, at double rates, so that any
//! leak across the week's edges shows) is written as OpenMetrics with a sample every 5 minutes,
//! backfilled with `promtool tsdb create-blocks-from openmetrics`, and served by Prometheus from
//! that data directory. Two gateways: gw-1 (plant-7, down 3 h on Friday, one bad latency hour on
//! Wednesday) and gw-2 (plant-3). A second, sparse week (2026-10-26) has only requests and a
//! Pushgateway's `push_time_seconds` with a 6-hour push outage, for the uptime fallback.
//! Every expected figure is computed here from the same rate functions that generated the data,
//! mirroring PromQL (2.x closed ranges `[t-7d, t]`, `histogram_quantile`'s interpolation), and
//! compared exactly (HTML `data-value`) or within the stated rounding (Markdown).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::common::services::{prometheus_at, Service};
use crate::common::*;

/// Mon 2026-11-09 00:00:00 UTC.
const T0: i64 = 1_794_182_400;
/// Mon 2026-10-26 00:00:00 UTC: the sparse week with push data only.
const T1: i64 = T0 - 14 * 86_400;
const STEP: i64 = 300;
/// 5-minute steps in a week.
const N: i64 = 2016;
/// Steps of data before and after the week (2 h).
const PAD: i64 = 24;
/// Steps of the bad latency hour: increments j cover (t(j-1), t(j)], Wed 14:00–15:00.
const BAD: std::ops::RangeInclusive<i64> = 745..=756;
/// Sample indexes where gw-1's `up` is 0: Fri 02:00 to 05:00.
const DOWN: std::ops::Range<i64> = 1176..1212;
/// Latency buckets of the agent (`metrics::LATENCY_BUCKETS`) and +Inf.
const LE: [f64; 15] = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];
/// Plants and their gateways.
const PLANTS: [(&str, &str); 2] = [("plant-7", "gw-1"), ("plant-3", "gw-2")];

fn t(i: i64) -> i64 {
    T0 + i * STEP
}
fn in_week(j: i64) -> bool {
    (1..=N).contains(&j)
}
/// Outside the week everything runs at double rate.
fn factor(j: i64) -> f64 {
    if in_week(j) {
        1.0
    } else {
        2.0
    }
}
fn weekend(j: i64) -> bool {
    in_week(j) && (j - 1) / 288 >= 5
}

// --- the rates: increments of step j, per plant index (0 = plant-7, 1 = plant-3) -----------

fn rag_ok(p: usize, j: i64) -> f64 {
    let base = match (p, weekend(j)) {
        (0, false) => 23.0,
        (0, true) => 11.0,
        (_, false) => 15.0,
        (_, true) => 7.0,
    };
    base * factor(j)
}
fn rag_5xx(p: usize, j: i64) -> f64 {
    if p == 0 {
        factor(j)
    } else {
        0.0
    }
}
fn feedback_requests(p: usize, j: i64) -> f64 {
    if p == 0 {
        factor(j)
    } else {
        0.0
    }
}
fn requests(p: usize, j: i64) -> f64 {
    rag_ok(p, j) + rag_5xx(p, j) + feedback_requests(p, j)
}
/// Latency observations of a step: (bucket upper bound, count).
fn latency(p: usize, j: i64) -> Vec<(f64, f64)> {
    let obs: &[(f64, f64)] = match p {
        0 if BAD.contains(&j) => &[(1.0, 10.0), (2.5, 10.0)],
        0 => &[(0.2, 8.0), (0.3, 10.0), (0.4, 2.0)],
        _ => &[(0.1, 5.0), (0.2, 5.0)],
    };
    obs.iter().map(|(le, n)| (*le, n * factor(j))).collect()
}
fn bucket(p: usize, le: f64, j: i64) -> f64 {
    latency(p, j)
        .iter()
        .filter(|(b, _)| *b <= le)
        .map(|(_, n)| n)
        .sum()
}
fn answers(p: usize, j: i64) -> f64 {
    [20.0, 10.0][p] * factor(j)
}
fn hallucinations(p: usize, j: i64) -> f64 {
    [1.0, 0.0][p] * factor(j)
}
fn ratings(p: usize, j: i64) -> f64 {
    match p {
        0 => factor(j),
        _ => f64::from(u8::from(j.rem_euclid(2) == 0)) * factor(j),
    }
}
/// The feedback gauge at sample i (plant-7 improves from Thursday 12:00).
fn score(p: usize, i: i64) -> f64 {
    match p {
        0 if i < 3 * 288 + 144 => 4.4,
        0 => 4.6,
        _ => 3.9,
    }
}
fn tokens(p: usize, direction: &str, j: i64) -> f64 {
    let v = match (p, direction) {
        (0, "input") => 1100.0,
        (0, _) => 220.0,
        (_, "input") => 500.0,
        (_, _) => 100.0,
    };
    v * factor(j)
}
fn cost(p: usize, j: i64) -> f64 {
    [1.0 / 64.0, 1.0 / 128.0][p] * factor(j)
}
/// Equipment of each plant with its per-step rate.
fn equipment() -> Vec<(usize, String, f64)> {
    let mut v = Vec::new();
    for k in 1..=7 {
        v.push((0, format!("press-{k:02}"), k as f64));
    }
    for k in 1..=5 {
        v.push((1, format!("pump-{k:02}"), (2 * k - 1) as f64));
    }
    v
}

// --- OpenMetrics -----------------------------------------------------------------------------

/// Series grouped by metric name (OpenMetrics wants a family's samples together).
#[derive(Default)]
struct Om {
    families: BTreeMap<String, Vec<String>>,
}

impl Om {
    fn add(&mut self, name: &str, labels: &str, points: impl Iterator<Item = (i64, f64)>) {
        let lines = self.families.entry(name.to_string()).or_default();
        for (ts, v) in points {
            lines.push(format!("{name}{{{labels}}} {v} {ts}"));
        }
    }
    /// A counter starting at 1000 (far from 0, as after a long uptime) growing by `inc(j)`.
    fn counter(&mut self, name: &str, labels: &str, inc: impl Fn(i64) -> f64) {
        let mut v = 1000.0;
        let points = (-PAD..=N + PAD).map(|i| {
            if i > -PAD {
                v += inc(i);
            }
            (t(i), v)
        });
        let points: Vec<_> = points.collect();
        self.add(name, labels, points.into_iter());
    }
    fn gauge(&mut self, name: &str, labels: &str, f: impl Fn(i64) -> Option<f64>) {
        let points: Vec<_> = (-PAD..=N + PAD)
            .filter_map(|i| f(i).map(|v| (t(i), v)))
            .collect();
        self.add(name, labels, points.into_iter());
    }
    fn text(&self) -> String {
        let mut s = String::new();
        for lines in self.families.values() {
            for l in lines {
                s.push_str(l);
                s.push('\n');
            }
        }
        s.push_str("# EOF\n");
        s
    }
}

fn alert(om: &mut Om, labels: &str, samples: impl Iterator<Item = i64>) {
    let points: Vec<_> = samples.map(|i| (t(i), 1.0)).collect();
    om.add("ALERTS", labels, points.into_iter());
}

/// The synthetic data set.
fn openmetrics() -> String {
    let mut om = Om::default();
    for (p, (plant, gw)) in PLANTS.iter().enumerate() {
        let rag = format!("plant_id=\"{plant}\",agent_name=\"rag_agent\",gateway_id=\"{gw}\"");
        let req = |agent: &str, code: &str| {
            format!("plant_id=\"{plant}\",agent_name=\"{agent}\",status_code=\"{code}\",gateway_id=\"{gw}\"")
        };
        om.counter("copilot_requests_total", &req("rag_agent", "200"), |j| {
            rag_ok(p, j)
        });
        if p == 0 {
            om.counter("copilot_requests_total", &req("rag_agent", "500"), |j| {
                rag_5xx(p, j)
            });
            om.counter("copilot_requests_total", &req("feedback", "200"), |j| {
                feedback_requests(p, j)
            });
        }
        for le in LE {
            let le_s = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            om.counter(
                "copilot_latency_seconds_bucket",
                &format!("{rag},le=\"{le_s}\""),
                |j| bucket(p, le, j),
            );
        }
        om.counter("copilot_latency_seconds_count", &rag, |j| {
            bucket(p, f64::INFINITY, j)
        });
        om.counter("copilot_latency_seconds_sum", &rag, |j| {
            latency(p, j).iter().map(|(le, n)| le * n * 0.8).sum()
        });
        om.counter("copilot_answers_total", &rag, |j| answers(p, j));
        om.counter("copilot_hallucination_total", &rag, |j| {
            hallucinations(p, j)
        });
        om.counter("copilot_user_feedback_total", &rag, |j| ratings(p, j));
        om.gauge("copilot_user_feedback_score", &rag, |i| Some(score(p, i)));
        let llm =
            format!("plant_id=\"{plant}\",agent_name=\"llm_report_agent\",gateway_id=\"{gw}\"");
        for dir in ["input", "output"] {
            om.counter(
                "copilot_llm_token_usage_total",
                &format!("{llm},direction=\"{dir}\""),
                |j| tokens(p, dir, j),
            );
        }
        om.counter("copilot_llm_cost_usd_total", &llm, |j| cost(p, j));
        // HTTP: API handlers, plus /metrics and /health traffic (with 5xx) that must not count.
        let http = |handler: &str, method: &str, status: &str| {
            format!(
                "handler=\"{handler}\",method=\"{method}\",status=\"{status}\",gateway_id=\"{gw}\""
            )
        };
        om.counter(
            "http_requests_total",
            &http("/v1/diagnose", "POST", "2xx"),
            |j| rag_ok(p, j),
        );
        om.counter(
            "http_requests_total",
            &http("/metrics", "GET", "5xx"),
            factor,
        );
        om.counter("http_requests_total", &http("/health", "GET", "2xx"), |j| {
            2.0 * factor(j)
        });
        if p == 0 {
            om.counter(
                "http_requests_total",
                &http("/v1/diagnose", "POST", "5xx"),
                |j| rag_5xx(p, j),
            );
            om.counter(
                "http_requests_total",
                &http("/v1/feedback", "POST", "2xx"),
                |j| feedback_requests(p, j),
            );
        }
        om.gauge(
            "up",
            &format!("job=\"copilot-edge\",instance=\"{gw}.{plant}:9464\",gateway_id=\"{gw}\""),
            |i| {
                Some(if p == 0 && DOWN.contains(&i) {
                    0.0
                } else {
                    1.0
                })
            },
        );
    }
    for (p, eq, rate) in equipment() {
        let (plant, gw) = PLANTS[p];
        om.counter(
            "copilot_equipment_requests_total",
            &format!("plant_id=\"{plant}\",equipment_id=\"{eq}\",gateway_id=\"{gw}\""),
            move |j| rate * factor(j),
        );
    }
    // Knowledge gaps at plant-7: a question no SOP answers every 10 minutes, a low rating every
    // 20 (1,008 and 504 in the week).
    for (class, reason, inc) in [
        ("diesel generator", "no_sop_for_machine", 0.5),
        ("centrifugal pump", "low_rating", 0.25),
    ] {
        om.counter(
            "copilot_edge_knowledge_gaps_total",
            &format!("plant_id=\"plant-7\",equipment_class=\"{class}\",reason=\"{reason}\",gateway_id=\"gw-1\""),
            move |_| inc,
        );
    }
    let wed = 2 * 288;
    alert(
        &mut om,
        "alertname=\"HighRequestLatency\",alertstate=\"firing\",severity=\"warning\",team=\"ai_operations\",plant_id=\"plant-7\",gateway_id=\"gw-1\",agent_name=\"rag_agent\"",
        (wed + 14 * 12 + 2)..=(wed + 15 * 12 + 1),
    );
    alert(
        &mut om,
        "alertname=\"GatewayDown\",alertstate=\"firing\",severity=\"critical\",team=\"ai_operations\",gateway_id=\"gw-1\",job=\"copilot-edge\",instance=\"gw-1.plant-7:9464\"",
        (DOWN.start + 1)..DOWN.end,
    );
    alert(
        &mut om,
        "alertname=\"HighHallucinationRate\",alertstate=\"firing\",severity=\"warning\",team=\"product_management\",plant_id=\"plant-7\",gateway_id=\"gw-1\",agent_name=\"rag_agent\"",
        (288 + 108..288 + 114).chain(3 * 288 + 192..3 * 288 + 198),
    );
    // Sun 23:30 to Mon 00:30 across the week's start: only 30 minutes count.
    alert(
        &mut om,
        "alertname=\"LLMFallbackHigh\",alertstate=\"firing\",severity=\"warning\",team=\"ai_operations\",plant_id=\"plant-3\",gateway_id=\"gw-2\"",
        -6..6,
    );
    // Pending, and firing only from the week's end on: neither may appear.
    alert(
        &mut om,
        "alertname=\"HighErrorRate\",alertstate=\"pending\",severity=\"warning\",team=\"ai_operations\",plant_id=\"plant-3\",gateway_id=\"gw-2\"",
        100..104,
    );
    alert(
        &mut om,
        "alertname=\"TokenBudgetExceeded\",alertstate=\"firing\",severity=\"warning\",team=\"product_management\",plant_id=\"plant-7\",gateway_id=\"gw-1\"",
        N..N + 5,
    );

    // The sparse week: requests of plant-9 and a push gateway's push_time_seconds every minute.
    let mut v = 500.0;
    let req: Vec<(i64, f64)> = (-PAD..=N + PAD)
        .map(|i| {
            v += 5.0;
            (T1 + i * STEP, v)
        })
        .collect();
    om.add(
        "copilot_requests_total",
        "plant_id=\"plant-9\",agent_name=\"rag_agent\",status_code=\"200\",gateway_id=\"gw-9\"",
        req.into_iter(),
    );
    let pushes: Vec<(i64, f64)> = (T1 - 7200..=T1 + 7 * 86_400 + 7200)
        .step_by(60)
        .map(|s| (s, last_push(s) as f64))
        .collect();
    om.add(
        "push_time_seconds",
        "job=\"copilot-edge\",instance=\"\",gateway_id=\"gw-9\"",
        pushes.into_iter(),
    );
    om.text()
}

/// Push outage of the sparse week: Wed 2026-10-28 10:00 to 16:00.
const OUTAGE: std::ops::Range<i64> = T1 + 2 * 86_400 + 10 * 3600..T1 + 2 * 86_400 + 16 * 3600;

/// The time of the last push at or before `s` (pushes every 5 minutes, none during the outage).
fn last_push(s: i64) -> i64 {
    let p = s - s.rem_euclid(300);
    if OUTAGE.contains(&p) {
        OUTAGE.start - 300
    } else {
        p
    }
}

// --- expected values, mirroring PromQL -------------------------------------------------------

/// Σ of increments over steps `js` (the increase over a closed range whose edge samples exist).
fn sum(js: impl Iterator<Item = i64>, f: impl Fn(i64) -> f64) -> f64 {
    js.map(f).sum()
}
fn week() -> std::ops::RangeInclusive<i64> {
    1..=N
}

/// Prometheus' `histogram_quantile` (bucketQuantile) on cumulative buckets ordered by `le`.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().unwrap().1;
    let mut rank = q * total;
    let n = buckets.len();
    let b = (0..n - 1).find(|&i| buckets[i].1 >= rank).unwrap_or(n - 1);
    if b == n - 1 {
        return buckets[n - 2].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn p95(plants: &[usize], js: impl Iterator<Item = i64> + Clone) -> f64 {
    let buckets: Vec<(f64, f64)> = LE
        .iter()
        .map(|&le| {
            let c = plants
                .iter()
                .map(|&p| sum(js.clone(), |j| bucket(p, le, j)))
                .sum();
            (le, c)
        })
        .collect();
    histogram_quantile(0.95, &buckets)
}

/// Everything the report should say for a set of plants.
#[derive(Debug)]
struct Expected {
    uptime: f64,
    p95: f64,
    requests: f64,
    errors: (f64, f64),
    hallucinations: (f64, f64),
    feedback: (f64, f64),
    tokens_in: f64,
    tokens_out: f64,
    cost: f64,
}

fn expected(plants: &[usize]) -> Expected {
    let each = |f: &dyn Fn(usize, i64) -> f64| -> f64 {
        plants.iter().map(|&p| sum(week(), |j| f(p, j))).sum()
    };
    let uptime = plants
        .iter()
        .map(|&p| {
            let up = (0..=N).filter(|i| !(p == 0 && DOWN.contains(i))).count();
            up as f64 / (N + 1) as f64
        })
        .sum::<f64>()
        / plants.len() as f64;
    // Σ over series of avg_over_time(score[7d]) × increase(ratings[7d]).
    let weighted: f64 = plants
        .iter()
        .map(|&p| {
            let avg = (0..=N).map(|i| score(p, i)).sum::<f64>() / (N + 1) as f64;
            avg * sum(week(), |j| ratings(p, j))
        })
        .sum();
    let n_ratings = each(&ratings);
    Expected {
        uptime,
        p95: p95(plants, week()),
        requests: each(&requests),
        errors: (each(&rag_5xx), each(&requests)),
        hallucinations: (each(&hallucinations), each(&answers)),
        feedback: (weighted / n_ratings, n_ratings),
        tokens_in: each(&|p, j| tokens(p, "input", j)),
        tokens_out: each(&|p, j| tokens(p, "output", j)),
        cost: each(&cost),
    }
}

// --- parsing the output ------------------------------------------------------------------------

/// Cells of the Markdown table row whose first cell is `first`.
fn md_row(md: &str, first: &str) -> Vec<String> {
    let prefix = format!("| {first} |");
    let line = md
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{md}"));
    line.trim_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_string())
        .collect()
}

/// The leading number of a cell: `99.11% (…)` → 99.11, `$47.25` → 47.25, `69,120` → 69120.
fn num(cell: &str) -> f64 {
    let s: String = cell
        .trim_start_matches('$')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',' || *c == '-')
        .filter(|c| *c != ',')
        .collect();
    s.parse()
        .unwrap_or_else(|_| panic!("no number at the start of {cell:?}"))
}

/// `shown` is `exact` rounded to `decimals` (half a unit of the last digit, plus float noise).
fn assert_rounded(what: &str, shown: f64, exact: f64, decimals: i32) {
    let half = 0.5 * 10f64.powi(-decimals) + 1e-9 * exact.abs();
    assert!(
        (shown - exact).abs() <= half,
        "{what}: report shows {shown}, expected {exact} (to {decimals} decimals)"
    );
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

/// Checks the Markdown figures table against `e`; returns the overall status line's value.
fn check_markdown_figures(md: &str, e: &Expected) {
    let cell = |row: &str| md_row(md, row)[1].clone();
    assert_rounded("uptime %", num(&cell("Uptime")), e.uptime * 100.0, 2);
    assert_rounded(
        "p95 ms",
        num(&cell("P95 latency (rag_agent)")),
        e.p95 * 1000.0,
        1,
    );
    assert_rounded("requests", num(&cell("Requests")), e.requests, 0);
    let errors = cell("Error rate (5xx)");
    assert_rounded("error %", num(&errors), e.errors.0 / e.errors.1 * 100.0, 2);
    assert!(
        errors.contains(&format!("of {} API responses", fmt_count(e.errors.1))),
        "{errors}"
    );
    let h = cell("Hallucination rate");
    assert_rounded(
        "hallucination %",
        num(&h),
        e.hallucinations.0 / e.hallucinations.1 * 100.0,
        2,
    );
    assert!(h.contains(&format!(
        "({} of {} answers)",
        fmt_count(e.hallucinations.0),
        fmt_count(e.hallucinations.1)
    )));
    let fb = cell("Average feedback");
    assert_rounded("feedback", num(&fb), e.feedback.0, 2);
    assert!(
        fb.contains(&format!("({} ratings)", fmt_count(e.feedback.1))),
        "{fb}"
    );
    assert_rounded("tokens in", num(&cell("Tokens (input)")), e.tokens_in, 0);
    assert_rounded("tokens out", num(&cell("Tokens (output)")), e.tokens_out, 0);
    assert_rounded("cost", num(&cell("LLM cost (estimated)")), e.cost, 2);
}

fn fmt_count(v: f64) -> String {
    let d = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `data-value` of the HTML element whose opening tag contains `marker`.
fn data_value(html: &str, marker: &str) -> f64 {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the HTML"));
    let tag_end = at + html[at..].find('>').unwrap();
    let tag = &html[at..tag_end];
    let v = tag
        .split("data-value=\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no data-value in {tag}"));
    v[..v.find('"').unwrap()].parse().unwrap()
}

/// Tags balance (void elements and `/>` aside), and nothing loads from elsewhere.
fn check_html(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    let void = ["meta", "br", "hr", "img", "input", "link", "wbr"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    let mut tags = 0;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        let end = after.find('>').expect("a tag is closed");
        let tag = &after[..end];
        rest = &after[end + 1..];
        tags += 1;
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop();
            assert_eq!(open.as_deref(), Some(name.trim()), "closing </{name}>");
            continue;
        }
        let name = tag
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric()),
            "odd tag <{tag}>"
        );
        if tag.ends_with('/') || void.contains(&name.as_str()) {
            continue;
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert!(tags > 100, "suspiciously few tags: {tags}");
    for bad in [
        "src=", "href=", "url(", "@import", "<script", "<link", "<iframe",
    ] {
        assert!(!html.contains(bad), "external or active content: {bad}");
    }
    // The only http(s) text is the Prometheus source URL, shown as text.
    let urls = html.matches("http://").count() + html.matches("https://").count();
    assert_eq!(urls, 1, "expected only the source URL");
}

// --- Prometheus on the backfilled data ----------------------------------------------------------

/// Writes the data set and backfills it into `<dir>/data`.
fn backfill(dir: &Path) -> PathBuf {
    let om = dir.join("week.om");
    std::fs::write(&om, openmetrics()).unwrap();
    let data = dir.join("data");
    // Large blocks: promtool re-reads the input once per block, 2 h blocks would take ~10 s.
    let out = Command::new(need("promtool"))
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=8760h",
        ])
        .arg(&om)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Prometheus serving `data` (no scrapes), retention long enough for backfilled weeks.
fn prometheus_on(data: &Path, extra: &[&str]) -> Service {
    let mut args = vec!["--storage.tsdb.retention.time=3650d"];
    args.extend_from_slice(extra);
    prometheus_at(
        free_port(),
        TempDir::new("prom-report"),
        "global:\n  scrape_interval: 1m\n",
        data,
        &args,
    )
}

fn report(cwd: &Path, url: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["report", "--prometheus", url];
    args.extend_from_slice(extra);
    run_cli(&args, cwd)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn weekly_report_matches_the_data_put_in() {
    let started = Instant::now();
    let work = TempDir::new("report");
    let data = backfill(work.path());
    // A copy for the second Prometheus (a data directory belongs to one process).
    let data_small = work.path().join("data-small");
    copy_dir(&data, &data_small);
    let prom = prometheus_on(&data, &[]);
    let url = prom.url();
    let out = TempDir::new("report-out");

    // --- all plants, Markdown ---
    let md_path = out.path().join("weekly.md");
    // The agents' log lines as a central subscriber keeps them: example questions.
    let gaps_file = work.path().join("gaps.jsonl");
    let gap = |day: &str, q: &str| {
        format!("{{\"timestamp\":\"2026-11-{day}T08:00:00.000000Z\",\"level\":\"info\",\"event\":\"knowledge_gap\",\"reason\":\"no_sop_for_machine\",\"plant_id\":\"plant-7\",\"equipment_class\":\"diesel generator\",\"question\":\"{q}\"}}\n")
    };
    std::fs::write(
        &gaps_file,
        [
            gap("08", "last week's question"),
            gap("10", "the generator will not start on its weekly test"),
        ]
        .concat(),
    )
    .unwrap();
    let (code, stdout, stderr) = report(
        out.path(),
        &url,
        &[
            "--week-of",
            "2026-11-12",
            "--weekly-budget-usd",
            "50",
            "--gaps-file",
            gaps_file.to_str().unwrap(),
            "--out",
            md_path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(
        stdout.is_empty(),
        "--out writes nothing to stdout: {stdout}"
    );
    assert_eq!(
        files_in(out.path()),
        ["weekly.md"],
        "no temporary file left"
    );
    let md = std::fs::read_to_string(&md_path).unwrap();
    let all = expected(&[0, 1]);
    check_markdown_figures(&md, &all);
    // Sanity of the data design, so a silent change in it cannot hide a bug.
    assert_eq!(all.requests, 69_120.0);
    assert_eq!(all.cost, 47.25);
    assert!(
        md.contains("# Copilot edge weekly health report: week of 2026-11-09"),
        "{md}"
    );
    assert!(md.contains(
        "Week: Mon 2026-11-09 00:00 UTC to Mon 2026-11-16 00:00 UTC · Scope: all plants"
    ));
    assert_eq!(md_row(&md, "Uptime")[1], "99.11% (2 gateways; source: up)");
    assert_eq!(md_row(&md, "Uptime")[3], "AMBER");
    assert_eq!(md_row(&md, "P95 latency (rag_agent)")[3], "GREEN");
    assert_eq!(md_row(&md, "Error rate (5xx)")[3], "GREEN");
    assert_eq!(md_row(&md, "Hallucination rate")[3], "GREEN");
    assert_eq!(md_row(&md, "Average feedback")[3], "GREEN");
    assert_eq!(
        md_row(&md, "LLM cost (estimated)")[2],
        "≤ $50.00 (weekly budget)"
    );
    assert_eq!(md_row(&md, "LLM cost (estimated)")[3], "GREEN");
    // Overall: AMBER from uptime, plus plant-7's hallucination rate (exactly 5%) and plant-3's
    // feedback (3.90), each capped at AMBER.
    assert!(md.contains("## Overall health: AMBER"), "{md}");
    for reason in [
        "- **AMBER** Uptime 99.11% is below the 99.5% target",
        "- **AMBER** plant-7: hallucination rate 5.00% is not below the 5% target (AMBER)",
        "- **AMBER** plant-3: average feedback 3.90 is not above the 4.0 target (AMBER)",
    ] {
        assert!(md.contains(reason), "missing {reason:?} in\n{md}");
    }
    assert_eq!(
        md.matches("- **").count(),
        3,
        "exactly three reasons:\n{md}"
    );

    // Per plant.
    for (p, (plant, _)) in PLANTS.iter().enumerate() {
        let e = expected(&[p]);
        let row = md_row(&md, plant);
        assert_rounded(&format!("{plant} requests"), num(&row[1]), e.requests, 0);
        assert_rounded(&format!("{plant} p95"), num(&row[2]), e.p95 * 1000.0, 1);
        assert_rounded(
            &format!("{plant} hallucinations"),
            num(&row[3]),
            e.hallucinations.0 / e.hallucinations.1 * 100.0,
            2,
        );
        assert_rounded(&format!("{plant} feedback"), num(&row[4]), e.feedback.0, 2);
    }

    // Top 10 equipment: by requests, ties by plant then equipment.
    let mut eq: Vec<(f64, &str, String)> = equipment()
        .into_iter()
        .map(|(p, name, rate)| (rate * N as f64, PLANTS[p].0, name))
        .collect();
    eq.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(&b.2)));
    eq.truncate(10);
    for (i, (n, plant, name)) in eq.iter().enumerate() {
        let row = md_row(&md, &(i + 1).to_string());
        assert_eq!(
            (row[1].as_str(), row[2].as_str()),
            (*plant, name.as_str()),
            "rank {}",
            i + 1
        );
        assert_eq!(num(&row[3]), *n);
    }
    assert!(!md.contains("| 11 |"));
    assert!(
        !md.contains("press-01") && !md.contains("pump-01"),
        "the two least requested are out"
    );

    // Where SOPs are missing: ranked, counted from the store, the week's question from the file.
    let section = md
        .split("## Where SOPs are missing")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_else(|| panic!("no gaps section in\n{md}"));
    let gap_rows: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert_eq!(gap_rows.len(), 2, "{section}");
    assert_eq!(
        gap_rows[0][1..5],
        [
            "plant-7",
            "diesel generator",
            "no\\_sop\\_for\\_machine",
            "1,008"
        ],
        "{section}"
    );
    assert_eq!(
        gap_rows[0][5],
        "“the generator will not start on its weekly test”"
    );
    assert_eq!(
        gap_rows[1][1..6],
        ["plant-7", "centrifugal pump", "low\\_rating", "504", "—"]
    );

    // Alerts: the firing ones in the week, with how long; not the pending one, not the one that
    // fired only from the week's end on.
    let alerts: Vec<Vec<String>> = [
        "GatewayDown",
        "HighHallucinationRate",
        "HighRequestLatency",
        "LLMFallbackHigh",
    ]
    .iter()
    .map(|a| md_row(&md, a))
    .collect();
    let got: Vec<(&str, &str, &str, &str, &str)> = alerts
        .iter()
        .map(|r| {
            (
                r[0].as_str(),
                r[2].as_str(),
                r[4].as_str(),
                r[5].as_str(),
                r[6].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("GatewayDown", "—", "2h 55m", "1", "2026-11-13 02:05"),
            (
                "HighHallucinationRate",
                "plant-7",
                "1h",
                "2",
                "2026-11-10 09:00"
            ),
            (
                "HighRequestLatency",
                "plant-7",
                "1h",
                "1",
                "2026-11-11 14:10"
            ),
            ("LLMFallbackHigh", "plant-3", "30m", "1", "2026-11-09 00:00"),
        ]
    );
    let order: Vec<usize> = [
        "| GatewayDown |",
        "| HighHallucinationRate |",
        "| HighRequestLatency |",
        "| LLMFallbackHigh |",
    ]
    .iter()
    .map(|a| md.find(a).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "longest first");
    assert!(
        !md.contains("HighErrorRate") && !md.contains("TokenBudgetExceeded"),
        "{md}"
    );

    // Worst hour: Wednesday 14:00–15:00.
    let bad_p95 = p95(&[0, 1], BAD);
    let line = md
        .lines()
        .find(|l| l.starts_with("Wed 2026-11-11 14:00–15:00 UTC: P95 "))
        .unwrap_or_else(|| panic!("no worst hour line in\n{md}"));
    assert_rounded(
        "worst hour p95",
        num(line.split("P95 ").nth(1).unwrap()),
        bad_p95 * 1000.0,
        1,
    );
    assert!(bad_p95 > 0.5);
    assert!(
        line.ends_with("Hours above the SLA: 1 of 168 with traffic."),
        "{line}"
    );

    // Per day.
    let days = [
        "Mon 2026-11-09",
        "Tue 2026-11-10",
        "Wed 2026-11-11",
        "Thu 2026-11-12",
        "Fri 2026-11-13",
        "Sat 2026-11-14",
        "Sun 2026-11-15",
    ];
    for (d, label) in days.iter().enumerate() {
        let js = (d as i64 * 288 + 1)..=((d as i64 + 1) * 288);
        let row = md_row(&md, label);
        let want_req: f64 = [0, 1]
            .iter()
            .map(|&p| sum(js.clone(), |j| requests(p, j)))
            .sum();
        assert_eq!(num(&row[1]), want_req, "{label} requests");
        assert_rounded(
            &format!("{label} p95"),
            num(&row[2]),
            p95(&[0, 1], js) * 1000.0,
            1,
        );
    }

    // --- all plants, HTML: exact values ---
    let html_path = out.path().join("weekly.html");
    let (code, _, stderr) = report(
        out.path(),
        &url,
        &[
            "--week-of",
            "2026-11-09",
            "--weekly-budget-usd",
            "50",
            "--format",
            "html",
            "--out",
            html_path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    check_html(&html);
    assert_eq!(
        html.matches("<svg").count(),
        2,
        "requests and P95 per day charts"
    );
    assert_eq!(html.matches("class=\"bar\"").count(), 7);
    assert!(html.contains("data-overall=\"AMBER\""));
    let fig = |key: &str| data_value(&html, &format!("data-figure=\"{key}\""));
    assert_close("uptime", fig("uptime"), all.uptime);
    assert_close("p95", fig("p95_latency"), all.p95);
    assert_close("requests", fig("requests"), all.requests);
    assert_close("error rate", fig("error_rate"), all.errors.0 / all.errors.1);
    assert_close(
        "hallucination rate",
        fig("hallucination_rate"),
        all.hallucinations.0 / all.hallucinations.1,
    );
    assert_close("feedback", fig("feedback"), all.feedback.0);
    assert_close("tokens in", fig("tokens_input"), all.tokens_in);
    assert_close("tokens out", fig("tokens_output"), all.tokens_out);
    assert_close("cost", fig("cost_usd"), all.cost);
    assert_close("worst hour", data_value(&html, "data-worst-hour="), bad_p95);
    assert!(html.contains(&format!(
        "data-worst-hour=\"{}\"",
        T0 + 2 * 86_400 + 14 * 3600
    )));
    assert!(html.contains("data-alert=\"GatewayDown\" data-fired-seconds=\"10500\""));
    assert_eq!(files_in(out.path()), ["weekly.html", "weekly.md"]);

    // --- one plant: every figure restricted to plant-7 (and its gateway gw-1) ---
    let (code, md7, stderr) = report(
        out.path(),
        &url,
        &[
            "--week-of",
            "2026-11-15",
            "--plant",
            "plant-7",
            "--weekly-budget-usd",
            "50",
        ],
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    let e7 = expected(&[0]);
    check_markdown_figures(&md7, &e7);
    assert!(md7.contains("Scope: plant plant-7"));
    assert_eq!(md_row(&md7, "Uptime")[1], "98.22% (1 gateway; source: up)");
    assert!(md7.contains("## Overall health: RED"), "{md7}");
    assert!(
        md7.contains("- **RED** Uptime 98.22% is below 99% (target 99.5%)"),
        "{md7}"
    );
    assert!(
        md7.contains("- **RED** Error rate 4.64% is at or above 4.5% (target below 3%)"),
        "{md7}"
    );
    assert!(
        md7.contains("- **AMBER** Hallucination rate 5.00% is not below the 5% target"),
        "{md7}"
    );
    assert!(!md7.contains("plant-3") && !md7.contains("pump-"), "{md7}");
    assert!(
        md7.contains("| GatewayDown |"),
        "the gateway's alerts without plant_id count"
    );
    assert!(!md7.contains("LLMFallbackHigh"));
    assert_eq!(md_row(&md7, "1")[2], "press-07");

    // --- the uptime fallback: a week with push_time_seconds and no scrape ---
    let (code, md_push, stderr) = report(out.path(), &url, &["--week-of", "2026-10-26"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let steps: Vec<i64> = (T1..=T1 + 7 * 86_400).step_by(60).collect();
    let fresh = steps.iter().filter(|&&s| s - last_push(s) < 300).count();
    let push_uptime = fresh as f64 / steps.len() as f64;
    assert_eq!(steps.len() - fresh, 360, "6 hours without a fresh push");
    let up = md_row(&md_push, "Uptime");
    assert_rounded("push uptime", num(&up[1]), push_uptime * 100.0, 2);
    assert!(
        up[1].ends_with("(1 gateway; source: push freshness)"),
        "{up:?}"
    );
    assert_eq!(md_row(&md_push, "Requests")[1], fmt_count(5.0 * N as f64));
    assert_eq!(md_row(&md_push, "P95 latency (rag_agent)")[1], "no data");
    assert!(md_push.contains("No alert fired this week."));

    // --- a week without data: a clear error, exit 1, no file ---
    let none = out.path().join("none.md");
    let (code, stdout, stderr) = report(
        out.path(),
        &url,
        &["--week-of", "2026-10-07", "--out", none.to_str().unwrap()],
    );
    assert_eq!(code, 1, "stdout: {stdout}");
    assert!(
        stderr.contains("no data for the week of 2026-10-05 (2026-10-05T00:00:00Z to 2026-10-12T00:00:00Z): copilot_requests_total has no samples"),
        "{stderr}"
    );
    assert!(!none.exists());
    // A plant without data names the plant.
    let (code, _, stderr) = report(
        out.path(),
        &url,
        &["--week-of", "2026-11-09", "--plant", "plant-404"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("for plant_id=\"plant-404\""), "{stderr}");

    // --- not a Prometheus API (wrong path prefix): a clear error ---
    let (code, _, stderr) = report(
        out.path(),
        &format!("{url}/nope"),
        &["--week-of", "2026-11-09"],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("unexpected answer from") && stderr.contains("HTTP 404"),
        "{stderr}"
    );

    // --- Prometheus refuses a query: the query and Prometheus' message are shown, no file ---
    drop(prom);
    let small = prometheus_on(&data_small, &["--query.max-samples=500"]);
    let refused = out.path().join("refused.md");
    let (code, _, stderr) = report(
        out.path(),
        &small.url(),
        &[
            "--week-of",
            "2026-11-09",
            "--out",
            refused.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("refused the query `sum (increase(copilot_requests_total{}[7d]))`")
            && stderr.contains("too many samples"),
        "{stderr}"
    );
    assert!(!refused.exists());
    assert_eq!(files_in(out.path()), ["weekly.html", "weekly.md"]);

    if std::env::var("WRITE_SAMPLE_REPORT").as_deref() == Ok("1") {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-report.md");
        std::fs::write(&sample, &md).unwrap();
    }
    eprintln!("report test took {:?}", started.elapsed());
}

#[test]
fn report_errors_without_prometheus() {
    let out = TempDir::new("report-down");
    let port = free_port(); // bound then released: nothing listens there
    let url = format!("http://127.0.0.1:{port}");
    let target = out.path().join("r.md");
    let (code, stdout, stderr) = report(
        out.path(),
        &url,
        &["--week-of", "2026-11-09", "--out", target.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with(&format!("report: cannot reach Prometheus at {url}: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("Connection refused") || stderr.contains("connect"),
        "{stderr}"
    );
    assert!(
        files_in(out.path()).is_empty(),
        "no --out file, no temp file"
    );

    // Bad arguments are refused before any connection.
    let cases: &[(&[&str], &str)] = &[
        (
            &["--week-of", "2026-02-30"],
            "invalid --week-of \"2026-02-30\"",
        ),
        (&["--week-of", "2999-01-04"], "has not ended yet"),
        (&["--weekly-budget-usd=-1"], "invalid --weekly-budget-usd"),
        (&["--plant", ""], "invalid --plant"),
    ];
    for (args, want) in cases {
        let (code, _, stderr) = report(out.path(), &url, args);
        assert_eq!(code, 1, "{args:?}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = report(out.path(), "https://prom.example:9090", &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("invalid --prometheus URL \"https://prom.example:9090\""),
        "{stderr}"
    );
}
